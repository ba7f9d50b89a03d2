"""The site-state table: aggregation (pure), staleness, overrides, reloads, frozen outages."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Callable

import pytest

from harness import eventually_async

from gslb.model import Check, Pool, RegionResult, Site, Soa, Zone, ZoneSet
from gslb.state import (
    MemoryBackend,
    SiteConfig,
    SiteStateTable,
    build_sites,
    expires_at,
)

WEB = Check("web", "http", 80)


def make_zone(key: str, sites: dict[str, tuple[str, ...]], quorum: float = 0.5) -> Zone:
    """A zone whose sites have the given check names (empty: unchecked)."""
    soa = Soa("ns1." + key + ".", "h." + key + ".", 1, 3600, 600, 86400, 60, 3600)
    return Zone(
        origin=key + ".", file=f"zones/{key}.yaml", serial=1, ttl=3600, soa=soa,
        ns=("ns1." + key + ".",), nodes={},
        sites={name: Site(name, None, ("192.0.2.1",), (), checks) for name, checks in sites.items()},
        checks={"web": WEB},
        pools={"web": Pool("web", "failover", tuple(sites), quorum=quorum)},
    )


def zoneset(*zones: Zone) -> ZoneSet:
    return ZoneSet({z.origin: z for z in zones})


def up(at: float, stale: float = 30.0, **kw) -> RegionResult:
    return RegionResult("up", at, stale_after=stale, **kw)


def down(at: float, stale: float = 30.0, **kw) -> RegionResult:
    return RegionResult("down", at, stale_after=stale, **kw)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FlakyBackend(MemoryBackend):
    """A memory backend whose ``connected`` the test flips (a Redis outage)."""

    def __init__(self) -> None:
        super().__init__("redis://fake:6379/0")
        self.up = True
        self.on_change: Callable[[], None] | None = None

    @property
    def connected(self) -> bool:
        return self.up

    async def start(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        on_change()

    def flip(self, up: bool) -> None:
        self.up = up
        assert self.on_change is not None
        self.on_change()


# -- pure aggregation

SITES = {("z", "a"): SiteConfig(False), ("z", "b"): SiteConfig(False), ("z", "u"): SiteConfig(True)}


def test_build_sites_quorum_of_fresh_regions():
    results = {("z", "a"): {"eu": up(100), "us": down(100)}}
    sites, next_expiry = build_sites(SITES, results, {}, now=110)
    a = sites[("z", "a")]
    assert set(a.regions) == {"eu", "us"}
    assert a.state(0.5) == "down"  # 1 of 2 is not more than half
    assert a.state(0.4) == "up"
    assert next_expiry == 130


def test_build_sites_no_result_is_unknown_and_unchecked_is_up():
    sites, next_expiry = build_sites(SITES, {}, {}, now=0)
    assert sites[("z", "b")].state(0.5) == "unknown"
    assert sites[("z", "u")].state(0.5) == "up"
    assert next_expiry is None


def test_build_sites_drops_stale_results():
    results = {("z", "a"): {"eu": down(100, stale=30), "us": up(120, stale=30)}}
    sites, next_expiry = build_sites(SITES, results, {}, now=131)
    assert set(sites[("z", "a")].regions) == {"us"}
    assert sites[("z", "a")].state(0.5) == "up"
    assert next_expiry == 150
    sites, next_expiry = build_sites(SITES, results, {}, now=150)
    assert sites[("z", "a")].state(0.5) == "unknown"
    assert next_expiry is None


def test_build_sites_overrides_beat_checks_and_unchecked():
    results = {("z", "a"): {"eu": up(100)}, ("z", "b"): {"eu": down(100)}}
    overrides = {("z", "a"): "down", ("z", "b"): "up", ("z", "u"): "drain"}
    sites, _ = build_sites(SITES, results, overrides, now=100)
    assert sites[("z", "a")].state(0.5) == "down"
    assert sites[("z", "b")].state(0.5) == "up"
    assert sites[("z", "u")].state(0.5) == "drain"


def test_build_sites_ignores_unconfigured_sites():
    results = {("z", "gone"): {"eu": up(100)}, ("other", "a"): {"eu": up(100)}}
    sites, _ = build_sites(SITES, results, {("z", "gone"): "down"}, now=100)
    assert set(sites) == set(SITES)


def test_expiry_is_pushed_by_outages_it_overlaps():
    r = down(100, stale=30)
    assert expires_at(r, ()) == 130
    assert expires_at(r, [(50, 90)]) == 130  # before the result: no effect
    assert expires_at(r, [(110, 170)]) == 190
    assert expires_at(r, [(90, 120)]) == 150  # partly before checked_at
    assert expires_at(r, [(110, 120), (125, 135)]) == 150


# -- the table

async def test_report_publishes_a_new_view_and_versions_grow():
    clock = FakeClock(1000)
    table = SiteStateTable(MemoryBackend(), clock=clock)
    table.configure(zoneset(make_zone("gslb.example.com", {"fra": ("web",), "iad": ("web",)})))
    await table.start()
    v0 = table.view
    assert v0.site("gslb.example.com", "fra").state(0.5) == "unknown"
    await table.report("gslb.example.com", "fra", "local", down(1000))
    v1 = table.view
    assert v1 is not v0 and v1.version > v0.version
    assert v1.site("gslb.example.com", "fra").state(0.5) == "down"
    assert v0.site("gslb.example.com", "fra").state(0.5) == "unknown"  # old views never change
    await table.report("gslb.example.com.", "fra", "local", up(1001))  # trailing dot accepted
    assert table.view.version > v1.version
    assert table.view.site("gslb.example.com", "fra").state(0.5) == "up"
    await table.close()


async def test_nothing_changed_keeps_the_same_view():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    await table.report("z.test", "a", "local", up(1000))
    view = table.view
    table.refresh()
    await table.report("z.test", "a", "local", up(1000))
    assert table.view is view
    await table.close()


async def test_quorum_across_regions():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    await table.report("z.test", "a", "eu-west", up(1000))
    await table.report("z.test", "a", "us-east", down(1000))
    status = table.view.site("z.test", "a")
    assert status.state(0.5) == "down"
    assert status.state(0.4) == "up"
    await table.close()


async def test_stale_results_expire_on_a_timer():
    table = SiteStateTable(MemoryBackend())  # real wall clock
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    import time
    await table.report("z.test", "a", "local", down(time.time(), stale=0.05))
    assert table.view.site("z.test", "a").state(0.5) == "down"
    version = table.view.version
    await eventually_async(lambda: table.view.version != version, what="a new view once the result is stale")
    assert table.view.site("z.test", "a").state(0.5) == "unknown"
    assert table.view.site("z.test", "a").regions == {}
    await table.close()


async def test_overrides_up_down_drain_auto():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "plain": ()})))
    await table.start()
    await table.report("z.test", "a", "local", up(1000))
    await table.set_override("z.test", "a", "down")
    assert table.view.site("z.test", "a").state(0.5) == "down"
    assert table.view.site("z.test", "a").override == "down"
    await table.set_override("z.test", "a", "drain")
    assert table.view.site("z.test", "a").state(0.5) == "drain"
    await table.set_override("z.test", "a", "auto")
    assert table.view.site("z.test", "a").override is None
    assert table.view.site("z.test", "a").state(0.5) == "up"
    # a site without checks is always up, unless overridden
    assert table.view.site("z.test", "plain").state(0.5) == "up"
    await table.set_override("z.test", "plain", "down")
    assert table.view.site("z.test", "plain").state(0.5) == "down"
    await table.close()


async def test_override_errors():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    with pytest.raises(KeyError):
        await table.set_override("z.test", "nope", "down")
    with pytest.raises(KeyError):
        await table.set_override("other.test", "a", "down")
    with pytest.raises(ValueError, match="maintenance"):
        await table.set_override("z.test", "a", "maintenance")


async def test_reload_keeps_results_of_remaining_sites_and_drops_removed_zones():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    one = make_zone("one.test", {"a": ("web",), "b": ("web",)})
    two = make_zone("two.test", {"x": ("web",)})
    table.configure(zoneset(one, two))
    await table.start()
    await table.report("one.test", "a", "local", down(1000))
    await table.report("two.test", "x", "local", down(1000))
    table.configure(zoneset(make_zone("one.test", {"a": ("web",), "c": ()})))
    view = table.view
    assert view.site("one.test", "a").state(0.5) == "down"
    assert ("one.test", "b") not in view.sites
    assert ("two.test", "x") not in view.sites
    assert view.site("one.test", "c").unchecked
    # reports for sites that no longer exist are ignored
    await table.report("two.test", "x", "local", up(1000))
    assert ("two.test", "x") not in table.view.sites
    await table.close()


async def test_listeners_and_recent_changes():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "b": ("web",)})))
    await table.start()
    seen: list[tuple[int, int]] = []
    table.add_listener(lambda old, new: seen.append((old.version, new.version)))
    await table.report("z.test", "a", "local", up(1000))  # first verdict up: not a change to show
    await table.report("z.test", "a", "local", down(1001))
    await table.set_override("z.test", "a", "drain")
    await table.report("z.test", "b", "local", down(1001))  # first verdict down: shown
    assert seen and all(new > old for old, new in seen)
    changes = [(c.zone, c.site, c.old, c.new) for c in table.changes]
    assert changes == [("z.test", "a", "up", "down"), ("z.test", "a", "down", "drain"),
                       ("z.test", "b", "unknown", "down")]
    await table.close()


async def test_a_failing_listener_does_not_break_the_table():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))

    def boom(old, new):
        raise RuntimeError("boom")

    table.add_listener(boom)
    await table.start()
    await table.report("z.test", "a", "local", down(1000))
    assert table.view.site("z.test", "a").state(0.5) == "down"
    await table.close()


async def test_backend_status():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    assert table.backend_status() == {"url": "memory://", "connected": True, "errors": 0}


async def test_known_down_site_stays_down_during_an_outage_longer_than_stale_after():
    clock = FakeClock(1000)
    backend = FlakyBackend()
    table = SiteStateTable(backend, clock=clock)
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "b": ("web",)})))
    await table.start()
    await table.report("z.test", "a", "eu", down(1000, stale=30))
    await table.report("z.test", "b", "eu", up(1000, stale=30))
    clock.now = 1010
    backend.flip(False)
    assert table.backend_status() == {"url": "redis://fake:6379/0", "connected": False, "errors": 0}
    clock.now = 1500  # far longer than stale_after
    table.refresh()  # as the expiry timer or a backend callback would
    assert table.view.site("z.test", "a").state(0.5) == "down"
    assert table.view.site("z.test", "b").state(0.5) == "up"
    # reconnect: 10 s of connected time had passed, 20 s remain
    backend.flip(True)
    assert table.view.site("z.test", "a").state(0.5) == "down"
    clock.now = 1519
    table.refresh()
    assert table.view.site("z.test", "a").state(0.5) == "down"
    clock.now = 1520
    table.refresh()
    assert table.view.site("z.test", "a").state(0.5) == "unknown"
    await table.close()


async def test_results_reported_during_an_outage_are_shown():
    clock = FakeClock(1000)
    backend = FlakyBackend()
    table = SiteStateTable(backend, clock=clock)
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    backend.flip(False)
    clock.now = 1100
    await table.report("z.test", "a", "eu", down(1100, stale=30))
    assert table.view.site("z.test", "a").state(0.5) == "down"
    clock.now = 1200
    backend.flip(True)  # outage 1000..1200 overlaps 1100..1200: expiry 1230
    clock.now = 1229
    table.refresh()
    assert table.view.site("z.test", "a").state(0.5) == "down"
    clock.now = 1230
    table.refresh()
    assert table.view.site("z.test", "a").state(0.5) == "unknown"
    await table.close()


async def test_unreachable_at_start_is_no_outage():
    clock = FakeClock(1000)
    backend = FlakyBackend()
    backend.up = False  # e.g. Redis down when the node starts
    table = SiteStateTable(backend, clock=clock)
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    assert table.view.site("z.test", "a").state(0.5) == "unknown"  # counts as up
    await table.report("z.test", "a", "eu", down(1000, stale=30))
    clock.now = 1100
    backend.flip(True)
    # a result met at the first connection is not kept longer than its own stale_after
    assert table.view.site("z.test", "a").state(0.5) == "unknown"
    await table.close()


async def test_site_state_uses_the_first_pools_quorum_and_default_for_no_pool():
    zone = make_zone("z.test", {"a": ("web",), "b": ("web",)}, quorum=0.0)
    zone = dataclasses.replace(zone, pools={"web": Pool("web", "failover", ("a",), quorum=0.0)})
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(zone))
    await table.start()
    for site in ("a", "b"):
        await table.report("z.test", site, "eu", up(1000))
        await table.report("z.test", site, "us", down(1000))
    status, state = table.site_state("z.test.", "a")
    assert set(status.regions) == {"eu", "us"} and state == "up"  # quorum 0.0: 1 of 2 is enough
    assert table.site_state("z.test", "b")[1] == "down"  # in no pool: DEFAULT_QUORUM 0.5
    assert table.site_state("z.test", "nowhere")[1] == "unknown"
    await table.close()


class UnreadableBackend(MemoryBackend):
    """A memory backend whose reads fail when ``broken`` is set."""

    broken = False

    def results(self):
        if self.broken:
            raise ConnectionError("unreadable")
        return super().results()


async def test_configure_publishes_new_sites_even_when_the_backend_cannot_be_read():
    backend = UnreadableBackend()
    table = SiteStateTable(backend, clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    await table.report("z.test", "a", "local", down(1000))
    backend.broken = True
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "lab": ()})))
    assert table.site_state("z.test", "lab") == (table.view.site("z.test", "lab"), "up")
    assert table.view.site("z.test", "lab").unchecked
    assert table.site_state("z.test", "a")[1] == "down"  # last known data kept
    await table.close()


async def test_a_result_rebuilds_its_site_only_and_versions_grow_on_real_changes():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "b": ("web",)})))
    await table.start()
    await table.report("z.test", "b", "local", up(1000))
    b = table.view.sites[("z.test", "b")]
    version = table.view.version
    await table.report("z.test", "a", "local", down(1000))
    assert table.view.version == version + 1
    assert table.view.sites[("z.test", "b")] is b  # untouched
    await table.report("z.test", "a", "local", down(1000))
    assert table.view.version == version + 1  # the same result again: no new view
    await table.close()
