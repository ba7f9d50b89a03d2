"""The metrics the alert rules read (contrib/prometheus/gslb-rules.yml): pools' sites up, checker
regions' freshness, rejected zone files; read by the collector at scrape time."""

from __future__ import annotations

from types import MappingProxyType, SimpleNamespace
from typing import Any

from harness import make_zone
from prometheus_client.parser import text_string_to_metric_families

from gslb.metrics import make_registry, render
from gslb.model import Pool, RegionResult, SiteStatus, StateView, ZoneSet
from gslb.stats import QueryStats


class FakeTable:
    def __init__(self) -> None:
        self.view = StateView()

    def backend_status(self) -> dict[str, Any]:
        return {"url": "memory://", "connected": True, "errors": 0}

    def site_state(self, zone: str, site: str) -> tuple[SiteStatus, str]:
        status = self.view.site(zone, site)
        return status, status.state(0.5)


def server(status: list[dict[str, Any]]) -> SimpleNamespace:
    pools = {"web": Pool(name="web", policy="failover", sites=("fra", "iad"))}
    zone = make_zone("gslb.test", {"www": {"pool": "web"}}, pools=pools)
    zones = ZoneSet({zone.key: zone})
    store = SimpleNamespace(zones=zones, status=lambda: status)
    return SimpleNamespace(zone_store=store, table=FakeTable(), stats=None, reloads={},
                           config=SimpleNamespace(regions={"us-east": (38.9, -77.4)}),
                           query_stats=QueryStats)


def samples(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = render(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def view(**regions: RegionResult) -> StateView:
    status = SiteStatus(regions=MappingProxyType(regions))
    return StateView(version=1, sites=MappingProxyType({("gslb.test", "fra"): status, ("gslb.test", "iad"): status}))


def test_pool_sites_up_and_total():
    srv = server([])
    reg = make_registry(srv)
    s = samples(reg)
    key = (("pool", "web"), ("zone", "gslb.test"))
    assert s[("gslb_pool_sites", key)] == 2
    assert s[("gslb_pool_sites_up", key)] == 2  # unknown counts as up
    srv.table.view = view(eu=RegionResult(state="down", checked_at=1000.0))
    assert samples(reg)[("gslb_pool_sites_up", key)] == 0


def test_a_region_that_goes_stale_stays_listed_with_zero_fresh_results():
    srv = server([])
    reg = make_registry(srv)
    s = samples(reg)
    # a configured region that never reported: listed, 0 fresh, no time
    assert s[("gslb_region_fresh_results", (("region", "us-east"),))] == 0
    assert s[("gslb_region_last_result_timestamp_seconds", (("region", "us-east"),))] == 0
    srv.table.view = view(eu=RegionResult(state="up", checked_at=1000.0))
    s = samples(reg)
    assert s[("gslb_region_fresh_results", (("region", "eu"),))] == 2
    assert s[("gslb_region_last_result_timestamp_seconds", (("region", "eu"),))] == 1000.0
    srv.table.view = StateView(version=2)  # every result of eu went stale
    s = samples(reg)
    assert s[("gslb_region_fresh_results", (("region", "eu"),))] == 0
    assert s[("gslb_region_last_result_timestamp_seconds", (("region", "eu"),))] == 1000.0


def test_rejected_zone_files():
    srv = server([{"file": "/z/a.yaml", "error": None}, {"file": "/z/b.yaml", "error": "b.yaml:3: ttl: ..."}])
    s = samples(make_registry(srv))
    assert s[("gslb_zone_file_rejected", (("file", "/z/a.yaml"),))] == 0
    assert s[("gslb_zone_file_rejected", (("file", "/z/b.yaml"),))] == 1
