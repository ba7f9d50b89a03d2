"""The HTTP endpoint against a fake server object: every route, token rules, errors, /metrics."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gslb.config import ServerConfig
from gslb.http_api import build_status, create_app, iso_time
from gslb.metrics import CheckStats
from gslb.model import Pool, RegionResult, Site, SiteStatus, Soa, StateView, Zone, ZoneSet
from gslb.state import Change, sites_of
from gslb.stats import QueryStats
from gslb.status_cli import format_status

NOW = 1_800_000_000.0
TOKEN = "s3cret-token"


def make_zone(key: str, sites: dict[str, Site], pools: dict[str, Pool]) -> Zone:
    origin = key + "."
    soa = Soa(f"ns1.{origin}", f"hostmaster.{origin}", 7, 3600, 600, 1209600, 60, 3600)
    return Zone(origin=origin, file=f"/srv/zones/{key}.yaml", serial=7, ttl=3600, soa=soa,
                ns=(f"ns1.{origin}",), nodes={}, sites=sites, pools=pools)


class FakeZoneStore:
    def __init__(self, zones: list[Zone]) -> None:
        self.zones = ZoneSet({z.origin: z for z in zones})

    def status(self) -> list[dict[str, Any]]:
        return [{"zone": z.key, "serial": z.serial, "file": z.file, "loaded_at": iso_time(NOW), "error": None}
                for z in self.zones]


class FakeTable:
    def __init__(self, sites: dict[tuple[str, str], SiteStatus], zones: ZoneSet) -> None:
        self.view = StateView(1, sites)
        self.changes: deque = deque([Change(NOW - 60, "gslb.example.com", "iad", "up", "down")], maxlen=100)
        self.overrides: list[tuple[str, str, str]] = []
        self.quorums = {key: cfg.quorum for key, cfg in sites_of(zones).items()}

    def site_state(self, zone: str, site: str) -> tuple[SiteStatus, str]:
        status = self.view.site(zone, site)
        return status, status.state(self.quorums.get((zone, site), 0.5))

    async def set_override(self, zone: str, site: str, state: str) -> None:
        if state not in ("up", "down", "drain", "auto"):
            raise ValueError(f"bad state {state!r}")
        if zone != "gslb.example.com" or site not in ("fra", "iad", "sin"):
            raise KeyError(site)
        self.overrides.append((zone, site, state))
        key = (zone, site)
        status = self.view.sites.get(key, SiteStatus())
        sites = dict(self.view.sites)
        sites[key] = replace(status, override=None if state == "auto" else state)
        self.view = StateView(self.view.version + 1, sites)

    def backend_status(self) -> dict[str, Any]:
        return {"url": "memory://", "connected": True, "errors": 2}


class FakeServer:
    def __init__(self, token: str | None = TOKEN) -> None:
        sites = {
            "fra": Site("fra", (50.11, 8.68), ("192.0.2.10",), ("2001:db8::10",), ("web",), 100),
            "iad": Site("iad", (38.95, -77.45), ("198.51.100.20",), (), ("web",)),
            "sin": Site("sin", (1.35, 103.82), ("203.0.113.30",), (), ("web",)),
            "lab": Site("lab", None, ("192.0.2.99",), ()),
        }
        pools = {
            "web": Pool("web", "closest", ("fra", "iad", "sin"), quorum=0.5),
            "api": Pool("api", "failover", ("iad", "fra"), quorum=0.0),
        }
        zone = make_zone("gslb.example.com", sites, pools)
        other = make_zone("other.example.net", {"ams": Site("ams", (52.37, 4.9), ("192.0.2.50",), (), ("web",))}, {})
        self.zone_store = FakeZoneStore([zone, other])
        k = "gslb.example.com"
        self.table = FakeTable({
            (k, "fra"): SiteStatus({
                "eu-west": RegionResult("up", NOW - 5, rtt_ms=12.3456, load=3.0),
                "us-east": RegionResult("up", NOW - 4, rtt_ms=80.0),
            }),
            (k, "iad"): SiteStatus({
                "eu-west": RegionResult("down", NOW - 3, error="status 503, expected 200"),
                "us-east": RegionResult("up", NOW - 2, rtt_ms=2.0),
            }),
            (k, "sin"): SiteStatus({}, override="drain"),
            (k, "lab"): SiteStatus(unchecked=True),  # no checks (the table publishes every site)
        }, self.zone_store.zones)
        self.stats = QueryStats()
        self.stats.query(k, "A", "NOERROR", 0.0002)
        self.stats.query(k, "A", "NOERROR", 0.003)
        self.stats.query("", "A", "REFUSED", 0.00001)
        self.stats.answered_sites(k, "web", ("fra",))
        self.stats.dropped["acl"] += 4
        self.check_stats = CheckStats()
        self.check_stats.observe(k, "fra", "web", True, 0.02)
        self.check_stats.observe(k, "fra", "web", False, 3.0)
        self.config = ServerConfig(region="eu-west", regions={"eu-west": (53.35, -6.26), "us-east": None})
        self.api_token = token
        self.dns_ready = True
        self.reloads = {"ok": 3, "error": 1}
        self.explained: list[tuple[str, str, str]] = []
        self.reload_calls = 0

    def explain(self, name: str, qtype: str, client: str) -> dict[str, Any]:
        self.explained.append((name, qtype, client))
        return {"client": {"ip": client, "location": None, "country": None, "continent": None, "network": None},
                "pool": "web", "policy": "closest", "candidates": [], "answers": ["192.0.2.10"],
                "scope_prefix": 24, "ttl": 30, "rcode": "NOERROR"}

    async def reload(self) -> dict[str, Any]:
        self.reload_calls += 1
        return {"changed": ["gslb.example.com"], "errors": []}


@pytest.fixture
async def api():
    server = FakeServer()
    client = TestClient(TestServer(create_app(server), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, server
    finally:
        await client.close()


async def test_healthz(api):
    client, server = api
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    server.dns_ready = False
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert "error" in await resp.json()


async def test_status_document(api):
    client, _ = api
    resp = await client.get("/api/v1/status")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["zones"][0] == {"zone": "gslb.example.com", "serial": 7, "file": "/srv/zones/gslb.example.com.yaml",
                               "loaded_at": iso_time(NOW), "error": None}
    sites = {(s["zone"], s["site"]): s for s in doc["sites"]}
    assert set(sites) == {("gslb.example.com", s) for s in ("fra", "iad", "sin", "lab")} | {("other.example.net", "ams")}
    fra = sites[("gslb.example.com", "fra")]
    assert fra["state"] == "up" and fra["override"] is None
    assert fra["regions"]["eu-west"] == {"state": "up", "checked_at": iso_time(NOW - 5), "rtt_ms": 12.346,
                                         "load": 3.0, "error": None}
    assert fra["location"] == [50.11, 8.68] and fra["pools"] == ["web", "api"]
    assert fra["addresses"] == ["192.0.2.10", "2001:db8::10"]
    # iad: one of two regions up; its first pool (web) has quorum 0.5: 1 > 0.5*2 is false -> down
    iad = sites[("gslb.example.com", "iad")]
    assert iad["state"] == "down"
    assert iad["regions"]["eu-west"]["error"] == "status 503, expected 200"
    assert sites[("gslb.example.com", "sin")]["state"] == "drain"
    assert sites[("gslb.example.com", "sin")]["override"] == "drain"
    # no checks: always up
    assert sites[("gslb.example.com", "lab")]["state"] == "up"
    assert sites[("other.example.net", "ams")]["state"] == "unknown"  # no result yet
    pools = {(p["zone"], p["pool"]): p for p in doc["pools"]}
    assert pools[("gslb.example.com", "web")] == {"zone": "gslb.example.com", "pool": "web", "policy": "closest",
                                                  "up": 1, "total": 3, "sites": ["fra", "iad", "sin"]}
    # quorum 0.0 in pool api: iad (1 of 2 up) counts as up there
    assert pools[("gslb.example.com", "api")]["up"] == 2
    assert doc["state_backend"] == {"url": "memory://", "connected": True}
    assert doc["changes"] == [{"time": iso_time(NOW - 60), "zone": "gslb.example.com", "site": "iad",
                               "old": "up", "new": "down"}]
    assert doc["regions"] == {"eu-west": {"location": [53.35, -6.26]}, "us-east": {"location": None}}


def test_iso_time_is_utc_iso8601():
    assert iso_time(0.5) == "1970-01-01T00:00:00.500Z"
    assert iso_time(None) is None


async def test_explain(api):
    client, server = api
    resp = await client.get("/api/v1/explain", params={"name": "www.gslb.example.com", "type": "aaaa",
                                                       "client": "2001:DB8::1"})
    assert resp.status == 200
    assert (await resp.json())["answers"] == ["192.0.2.10"]
    assert server.explained == [("www.gslb.example.com", "AAAA", "2001:db8::1")]
    resp = await client.get("/api/v1/explain", params={"name": "www.gslb.example.com", "client": "192.0.2.1"})
    assert resp.status == 200 and server.explained[-1][1] == "A"


@pytest.mark.parametrize("params, message", [
    ({"client": "192.0.2.1"}, "name"),
    ({"name": "www.gslb.example.com"}, "client"),
    ({"name": "www.gslb.example.com", "client": "not-an-ip"}, "client"),
    ({"name": "www.gslb.example.com", "client": "192.0.2.1", "type": "BOGUS"}, "type"),
    ({"name": "bad name!", "client": "192.0.2.1"}, "name"),
])
async def test_explain_bad_parameters(api, params, message):
    client, server = api
    resp = await client.get("/api/v1/explain", params=params)
    assert resp.status == 400
    assert message in (await resp.json())["error"]
    assert server.explained == []


async def test_write_endpoints_need_the_token(api):
    client, server = api
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer ünïcode"}):
        resp = await client.post("/api/v1/reload", headers=headers)
        assert resp.status == 401, headers
        assert "error" in await resp.json()
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        resp = await client.put("/api/v1/sites/gslb.example.com/fra/override", json={"state": "down"},
                                headers=headers)
        assert resp.status == 401
    assert server.reload_calls == 0 and server.table.overrides == []


async def test_write_endpoints_without_configured_token_are_forbidden():
    server = FakeServer(token=None)
    async with TestClient(TestServer(create_app(server), host="127.0.0.1")) as client:
        resp = await client.post("/api/v1/reload", headers={"Authorization": "Bearer anything"})
        assert resp.status == 403
        assert "api_token_file" in (await resp.json())["error"]
        resp = await client.put("/api/v1/sites/gslb.example.com/fra/override", json={"state": "down"})
        assert resp.status == 403
    assert server.reload_calls == 0


async def test_reload(api):
    client, server = api
    resp = await client.post("/api/v1/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    assert await resp.json() == {"changed": ["gslb.example.com"], "errors": []}
    assert server.reload_calls == 1


async def test_override_sets_and_clears(api):
    client, server = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resp = await client.put("/api/v1/sites/gslb.example.com/fra/override", json={"state": "down"}, headers=auth)
    assert resp.status == 200
    assert await resp.json() == {"zone": "gslb.example.com", "site": "fra", "override": "down", "state": "down"}
    doc = await (await client.get("/api/v1/status")).json()
    fra = next(s for s in doc["sites"] if s["site"] == "fra")
    assert fra["state"] == "down" and fra["override"] == "down"
    resp = await client.put("/api/v1/sites/GSLB.example.com./fra/override", json={"state": "auto"}, headers=auth)
    assert resp.status == 200
    assert (await resp.json())["override"] is None
    assert server.table.overrides == [("gslb.example.com", "fra", "down"), ("gslb.example.com", "fra", "auto")]


@pytest.mark.parametrize("path, body, status", [
    ("/api/v1/sites/nope.example/fra/override", {"state": "down"}, 404),
    ("/api/v1/sites/gslb.example.com/nope/override", {"state": "down"}, 404),
    ("/api/v1/sites/gslb.example.com/fra/override", {"state": "maintenance"}, 400),
    ("/api/v1/sites/gslb.example.com/fra/override", {"state": 1}, 400),
    ("/api/v1/sites/gslb.example.com/fra/override", ["down"], 400),
    ("/api/v1/sites/gslb.example.com/fra/override", b"{not json", 400),
])
async def test_override_errors(api, path, body, status):
    client, server = api
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    resp = await client.put(path, headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)
    assert resp.status == status
    assert isinstance((await resp.json())["error"], str)
    assert server.table.overrides == []


async def test_table_key_error_is_404(api):
    # a site the zone has but the table does not know (e.g. mid-reload) -> 404 from set_override
    client, server = api
    resp = await client.put("/api/v1/sites/gslb.example.com/lab/override", json={"state": "down"},
                            headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 404


async def test_unknown_route_and_method_are_json(api):
    client, _ = api
    resp = await client.get("/api/v1/nothing")
    assert resp.status == 404 and "error" in await resp.json()
    resp = await client.get("/api/v1/reload")
    assert resp.status == 405 and "error" in await resp.json()
    assert "POST" in resp.headers["Allow"]


async def test_unexpected_exception_is_500_json_and_logged(api, caplog):
    client, server = api

    def broken(name, qtype, client_ip):
        raise RuntimeError("boom")

    server.explain = broken
    with caplog.at_level(logging.ERROR, logger="gslb.http_api"):
        resp = await client.get("/api/v1/explain", params={"name": "www.gslb.example.com", "client": "192.0.2.1"})
    assert resp.status == 500
    assert await resp.json() == {"error": "internal server error"}
    assert len([r for r in caplog.records if r.name == "gslb.http_api"]) == 1


async def test_dashboard_and_static_assets(api):
    client, _ = api
    resp = await client.get("/")
    assert resp.status == 200
    html = await resp.text()
    assert "static/dashboard.js" in html and "static/world.js" in html and "http" not in html.split("<body>")[0]
    for asset in ("dashboard.js", "dashboard.css", "world.js"):
        resp = await client.get(f"/static/{asset}")
        assert resp.status == 200, asset
    world = await (await client.get("/static/world.js")).text()
    assert world.startswith("// Generated") and "Germany" in world
    resp = await client.get("/static/../http_api.py")
    assert resp.status in (403, 404)


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams, family: str, name: str, **labels) -> float:
    for s in fams[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name} {labels}")


async def test_metrics(api):
    client, server = api
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    fams = families(await resp.text())
    k = "gslb.example.com"
    assert sample(fams, "gslb_queries", "gslb_queries_total", zone=k, qtype="A", rcode="NOERROR") == 2
    assert sample(fams, "gslb_queries", "gslb_queries_total", zone="", qtype="A", rcode="REFUSED") == 1
    assert fams["gslb_answer_latency_seconds"].type == "histogram"
    assert sample(fams, "gslb_answer_latency_seconds", "gslb_answer_latency_seconds_bucket", le="0.0001") == 1
    assert sample(fams, "gslb_answer_latency_seconds", "gslb_answer_latency_seconds_bucket", le="0.005") == 3
    assert sample(fams, "gslb_answer_latency_seconds", "gslb_answer_latency_seconds_bucket", le="+Inf") == 3
    assert sample(fams, "gslb_answer_latency_seconds", "gslb_answer_latency_seconds_count") == 3
    assert sample(fams, "gslb_answer_latency_seconds", "gslb_answer_latency_seconds_sum") == pytest.approx(0.00321)
    assert sample(fams, "gslb_pool_answers", "gslb_pool_answers_total", zone=k, pool="web", site="fra") == 1
    assert sample(fams, "gslb_check_results", "gslb_check_results_total", site="fra", check="web", result="pass") == 1
    assert sample(fams, "gslb_check_results", "gslb_check_results_total", site="fra", check="web", result="fail") == 1
    assert sample(fams, "gslb_check_duration_seconds", "gslb_check_duration_seconds_bucket", site="fra", le="0.025") == 1
    assert sample(fams, "gslb_check_duration_seconds", "gslb_check_duration_seconds_count", site="fra") == 2
    for site, state in (("fra", "up"), ("iad", "down"), ("sin", "drain"), ("lab", "up")):
        assert sample(fams, "gslb_site_state", "gslb_site_state", zone=k, site=site, state=state) == 1
        assert sum(s.value for s in fams["gslb_site_state"].samples
                   if s.labels["zone"] == k and s.labels["site"] == site) == 1
    assert sample(fams, "gslb_site_state", "gslb_site_state", zone="other.example.net", site="ams",
                  state="unknown") == 1
    assert sample(fams, "gslb_reloads", "gslb_reloads_total", result="ok") == 3
    assert sample(fams, "gslb_reloads", "gslb_reloads_total", result="error") == 1
    assert sample(fams, "gslb_state_backend_connected", "gslb_state_backend_connected") == 1
    assert sample(fams, "gslb_state_backend_errors", "gslb_state_backend_errors_total") == 2
    assert sample(fams, "gslb_dropped", "gslb_dropped_total", reason="acl") == 4
    # read at scrape time: a new query shows on the next scrape
    server.stats.query(k, "AAAA", "NOERROR", 0.001)
    fams = families(await (await client.get("/metrics")).text())
    assert sample(fams, "gslb_queries", "gslb_queries_total", zone=k, qtype="AAAA", rcode="NOERROR") == 1


def test_check_stats_as_monitor_observer():
    from gslb.health.monitor import Target
    from gslb.health.probes import ProbeResult
    from gslb.model import Check

    stats = CheckStats()
    target = Target("z", "fra", "web", "192.0.2.10", Check("web", "http", 80, timeout=2.0))
    stats.on_probe(target, ProbeResult(True, rtt_ms=30.0), None)
    stats.on_probe(target, ProbeResult(False, error="timeout after 2.0s"), None)
    stats.on_probe(target, ProbeResult(False, error="connect refused"), None)
    assert stats.results == {("z", "fra", "web", "pass"): 1, ("z", "fra", "web", "fail"): 2}
    assert sum(stats.duration_counts[("z", "fra", "web")]) == 2
    assert stats.duration_sums[("z", "fra", "web")] == pytest.approx(2.03)


def test_status_lists_state_change_objects():
    server = FakeServer()
    server.table.changes.append(Change(NOW, "gslb.example.com", "fra", "down", "up"))
    doc = build_status(server)
    assert doc["changes"][0] == {"time": iso_time(NOW), "zone": "gslb.example.com", "site": "fra",
                                 "old": "down", "new": "up"}
    assert doc["changes"][1]["site"] == "iad"


def test_check_stats_retain_keeps_only_existing_sites_and_checks():
    zone = make_zone("z", {"a": Site("a", None, ("192.0.2.1",), (), ("web",)),
                           "b": Site("b", None, ("192.0.2.2",), (), ("web", "tcp"))}, {})
    stats = CheckStats()
    for key in (("z", "a", "web"), ("z", "a", "gone"), ("z", "b", "tcp"), ("z", "c", "web"), ("y", "a", "web")):
        stats.observe(*key, True, 0.1)
        stats.observe(*key, False, None)
    stats.retain(ZoneSet({zone.origin: zone}))
    assert sorted(stats.results) == [("z", "a", "web", "fail"), ("z", "a", "web", "pass"),
                                     ("z", "b", "tcp", "fail"), ("z", "b", "tcp", "pass")]
    assert sorted(stats.duration_counts) == sorted(stats.duration_sums) == [("z", "a", "web"), ("z", "b", "tcp")]


def test_query_stats_retain_drops_removed_zones_pools_and_sites():
    zone = make_zone("z", {"a": Site("a", None, ("192.0.2.1",), ())},
                     {"web": Pool("web", "failover", ("a",))})
    stats = QueryStats()
    for name in ("z", "gone", ""):
        stats.query(name, "A", "NOERROR", 0.001)
    for key in (("z", "web", "a"), ("z", "web", "b"), ("z", "old", "a"), ("gone", "web", "a")):
        stats.answered_sites(key[0], key[1], (key[2],))
    stats.retain(ZoneSet({zone.origin: zone}))
    assert sorted(stats.queries) == [("", "A", "NOERROR"), ("z", "A", "NOERROR")]
    assert list(stats.site_answers) == [("z", "web", "a")]
    assert sum(stats.latency_counts) == 3  # the histogram has no zone label: kept whole


def test_format_status_table():
    server = FakeServer()
    text = format_status(build_status(server), "http://127.0.0.1:8053")
    lines = text.splitlines()
    fra = next(line for line in lines if " fra " in line)
    assert "up" in fra and "eu-west up 12.3ms" in fra
    iad = next(line for line in lines if " iad " in line)
    assert "down" in iad and "status 503, expected 200" in iad
    sin = next(line for line in lines if " sin " in line)
    assert sin.count("drain") == 2  # state and override
    assert any("web" in line and "1/3" in line for line in lines)
    assert "memory:// connected" in text
    assert "\033[" not in text
    coloured = format_status(build_status(server), colour=True)
    assert "\033[31mdown\033[0m" in coloured


def test_format_status_zone_rows_never_loaded_and_several_errors_stay_one_line_each():
    doc = {"zones": [
        {"zone": None, "serial": None, "file": "zones/a.yaml", "loaded_at": None,
         "error": "zones/a.yaml:2: serial: bad\nzones/a.yaml:5: records.x: bad\nzones/a.yaml:6: records.y: bad"},
        {"zone": None, "serial": None, "file": "zones/b.yaml", "loaded_at": None,
         "error": "zones/b.yaml:2: serial: bad\nzones/b.yaml:5: records.x: bad"},
        {"zone": "c.test", "serial": 0, "file": "zones/c.yaml", "loaded_at": "2026-01-01T00:00:00Z",
         "error": "zones/c.yaml:3: ns: bad"},
        {"zone": "d.test", "serial": 7, "file": "zones/d.yaml", "loaded_at": "2026-01-01T00:00:00Z", "error": None},
    ]}
    lines = format_status(doc).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ZONE"))
    table = lines[start:lines.index("", start)]
    assert len(table) == 5
    col = table[0].index("STATUS")
    assert [line[col:] for line in table[1:]] == [
        "zones/a.yaml:2: serial: bad (+2 more errors: gslb check)",
        "zones/b.yaml:2: serial: bad (+1 more error: gslb check)",
        "zones/c.yaml:3: ns: bad",
        "ok",
    ]
    assert [line.split()[:2] for line in table[1:]] == [["-", "-"], ["-", "-"], ["c.test", "0"], ["d.test", "7"]]


def test_format_status_shows_how_long_ago_each_region_was_checked():
    doc = build_status(FakeServer())
    fra = next(s for s in doc["sites"] if s["site"] == "fra")
    checked = fra["regions"]["eu-west"]["checked_at"]
    assert checked
    from datetime import datetime

    at = datetime.fromisoformat(checked).timestamp()
    line = next(x for x in format_status(doc, now=at + 4.4).splitlines() if " fra " in x)
    assert "eu-west up 12.3ms 4s ago" in line
    line = next(x for x in format_status(doc, now=at + 190).splitlines() if " fra " in x)
    assert "12.3ms 3m ago" in line
    assert " ago" not in format_status(doc)  # no clock given: no age


def test_status_url_from_the_server_file(tmp_path, monkeypatch):
    from gslb.status_cli import DEFAULT_URL, url_from_config

    assert url_from_config(None, str(tmp_path)) == DEFAULT_URL  # no gslb.yaml here
    (tmp_path / "gslb.yaml").write_text('http: "127.0.0.2:9999"\n')
    assert url_from_config(None, str(tmp_path)) == "http://127.0.0.2:9999"
    other = tmp_path / "other.yaml"
    for http, url in (('"0.0.0.0:8100"', "http://127.0.0.1:8100"), ('"[::]:8101"', "http://[::1]:8101"),
                      ('"[::1]:8102"', "http://[::1]:8102"), ('"localhost:8103"', "http://localhost:8103")):
        other.write_text(f"http: {http}\n")
        assert url_from_config(str(other)) == url
    other.write_text("http: null\n")
    with pytest.raises(ValueError, match="http: is off"):
        url_from_config(str(other))
    other.write_text("http: [1, 2]\nbogus: 1\n")
    with pytest.raises(ValueError, match="other.yaml"):
        url_from_config(str(other))


def test_gslb_status_reads_the_http_address_of_the_server_file(tmp_path, monkeypatch, capsys):
    import socket

    from gslb.cli import main

    with socket.socket() as s, socket.socket() as t:  # ports nothing listens on
        s.bind(("127.0.0.1", 0))
        t.bind(("127.0.0.1", 0))
        port, other = s.getsockname()[1], t.getsockname()[1]
    (tmp_path / "gslb.yaml").write_text(f'http: "127.0.0.1:{port}"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["status"]) == 1
    assert f"cannot reach http://127.0.0.1:{port}" in capsys.readouterr().err
    (tmp_path / "b.yaml").write_text(f'http: "127.0.0.1:{other}"\n')
    assert main(["status", "-c", str(tmp_path / "b.yaml")]) == 1
    assert f"cannot reach http://127.0.0.1:{other}" in capsys.readouterr().err
    assert main(["status", "--http", "127.0.0.1:1"]) == 1
    assert "cannot reach http://127.0.0.1:1" in capsys.readouterr().err


def test_world_map_data_is_compact_and_has_no_antimeridian_streaks():
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "gslb" / "static" / "world.js").read_text()
    data = json.loads(text[text.index("{"):text.rindex("}") + 1])
    assert data["width"] == 360 and data["height"] == data["latTop"] - data["latBottom"]
    names = {c["name"] for c in data["countries"]}
    assert {"Germany", "Russia", "Fiji", "Brazil", "Australia"} <= names and "Antarctica" not in names
    for country in data["countries"]:
        for ring in re.findall(r"M([^MZ]+)Z", country["d"]):
            points = [tuple(map(float, p.split())) for p in ring.split("L")]
            # a segment across most of the map is a polygon wrapped at +-180 degrees drawn wrongly
            assert all(abs(a[0] - b[0]) < 180 for a, b in zip(points, points[1:])), country["name"]


def test_build_world_map_unwraps_rings_across_the_antimeridian():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "build_world_map.py"
    spec = importlib.util.spec_from_file_location("build_world_map", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    ring = [(179.0, 10.0), (-179.0, 10.0), (-179.0, 11.0), (179.0, 11.0), (179.0, 10.0)]
    first, shifted = tool.unwrap(ring)
    assert [lon for lon, _ in first] == [179.0, 181.0, 181.0, 179.0, 179.0]
    assert [lon for lon, _ in shifted] == [-181.0, -179.0, -179.0, -181.0, -181.0]
    assert tool.unwrap([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]) == [[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]]
    assert tool.ring_path([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]) == "M180 84L181 84L181 83Z"
