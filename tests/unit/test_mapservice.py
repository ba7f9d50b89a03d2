"""MapService (gslb.mapservice) with an in-process stand-in for the builder process: maps cached per
(generation, spec), recomputed when a watched pool's verdicts change, plans against the live
view, query weights from the window, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from harness import eventually_async

from gslb.geo import GeoLocator
from gslb.mapservice import MapError, MapService
from gslb.model import SiteStatus, StateView, ZoneSet
from gslb.netmap import NetworkIndex
from gslb.trafficmap import MapEngine
from gslb.zonefile import load_zone_file

ROOT = Path(__file__).resolve().parents[2]


class FakeBuilder:
    """ScopeService.job in-process (what the builder process runs), counting jobs."""

    def __init__(self, engine: MapEngine) -> None:
        self.engine = engine
        self.generation = 1
        self.jobs: list[str] = []

    async def job(self, what: str, args: Any) -> Any:
        self.jobs.append(what)
        await asyncio.sleep(0)
        if what == "map":
            return self.engine.map(args)
        return [dict(pool=name, **self.engine.plan(a, b)) for name, a, b in args]


@pytest.fixture(scope="module")
def engine():
    with GeoLocator.open(ROOT / "data" / "sample-city.mmdb") as geo:
        return MapEngine(NetworkIndex.build(geo))


@pytest.fixture
def setup(engine):
    zone = load_zone_file(str(ROOT / "zones" / "example.yaml"))
    state = {"view": StateView(1, {}), "counts": {}, "now": 0.0}
    builder = FakeBuilder(engine)
    service = MapService(lambda: builder, lambda: ZoneSet({zone.origin: zone}), lambda: state["view"],
                         lambda: state["counts"], clock=lambda: state["now"])
    return service, builder, state, zone


def _de(body: dict) -> list:
    return [r["sites"] for r in body["countries"] if r["country"] == "DE"]


async def test_map_is_cached_per_inputs_and_follows_the_view(setup):
    service, builder, state, zone = setup
    body = await service.map("gslb.example.com.", "web")
    assert body["pool"] == "web" and body["policy"] == "closest" and _de(body) == [["fra"]]
    await service.map("GSLB.example.com", "web")
    assert builder.jobs == ["map"]  # the second one from the cache
    state["view"] = StateView(2, {(zone.key, "fra"): SiteStatus(override="down")})
    service.view_changed()  # a watched pool: recomputed at once
    await eventually_async(lambda: builder.jobs == ["map", "map"], what="the map recomputed")
    assert _de(await service.map("gslb.example.com", "web")) == [["iad"]]
    assert builder.jobs == ["map", "map"]
    # unknown counts as up: the same inputs as the first map
    state["view"] = StateView(3, {(zone.key, "fra"): SiteStatus()})
    service.view_changed()
    assert _de(await service.map("gslb.example.com", "web")) == [["fra"]]
    assert builder.jobs == ["map", "map"]
    await service.close()


async def test_plan_against_the_live_view_with_query_weights(setup):
    service, builder, state, zone = setup
    state["view"] = StateView(2, {(zone.key, "sin"): SiteStatus(override="down")})
    service.window.sample(0.0, {})
    state["counts"] = {(zone.key, "web", "DE"): 30, (zone.key, "web", "US"): 60, (zone.key, "web", None): 10}
    state["now"] = 120.0
    plan = await service.plan("gslb.example.com", ["fra"], [])
    web = plan["pools"][0]
    de = [m for m in web["moves"] if m["country"] == "DE"][0]
    assert (de["from"], de["to"], de["query_share"]) == (["fra"], ["iad"], pytest.approx(0.3))
    assert web["queries"] == 100
    assert not [m for m in web["moves"] if m["from"] == ["sin"]]  # sin is down already
    assert plan["queries_window_seconds"] == 3600


async def test_errors(setup):
    service, _, _, zone = setup
    for call, status in ((service.map("nope.example", "web"), 404), (service.map("gslb.example.com", "nope"), 404),
                         (service.plan("nope.example", [], []), 404),
                         (service.plan("gslb.example.com", ["nowhere"], []), 404)):
        with pytest.raises(MapError) as info:
            await call
        assert info.value.status == status
    other = load_zone_file(str(ROOT / "zones" / "example.yaml"))
    object.__setattr__(other, "key", "other.example")
    with pytest.raises(MapError) as info:
        await service.plan("gslb.example.com", [], [], other)
    assert info.value.status == 400


async def test_a_failing_builder_is_a_503(setup):
    service, builder, _, _ = setup

    async def fail(what: str, args: Any) -> Any:
        raise RuntimeError("the builder process stopped (exited)")

    builder.job = fail  # type: ignore[method-assign]
    with pytest.raises(MapError) as info:
        await service.map("gslb.example.com", "web")
    assert info.value.status == 503 and "builder process stopped" in str(info.value)
    with pytest.raises(MapError) as info:
        await service.plan("gslb.example.com", [], [])
    assert info.value.status == 503
