"""The traffic map and plan core (gslb.trafficmap) over the netmap index: shares per country,
moves, query weights, the query window, the text form; and the per-country query counters."""

from __future__ import annotations

import bisect
import ipaddress
import random
from array import array
from pathlib import Path

import pytest

from gslb.balancer import Balancer
from gslb.geo import GeoLocator
from gslb.model import GeoRule, Pool, Site, Soa, Zone
from gslb.netmap import OPAQUE, FamilyRuns, NetworkIndex
from gslb.stats import QueryStats
from gslb.trafficmap import (
    MapEngine, _answer_function, _cidr_answer_function, TrafficWindow, country_rows, format_plan, location_answers, moves, per_country, plan_zone,
    spec_of, weigh_queries,
)
from gslb.zonefile import load_zone_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample-city.mmdb"

FRA = Site("fra", (50.11, 8.68), ("192.0.2.10",), ("2001:db8::10",))
IAD = Site("iad", (38.95, -77.45), ("198.51.100.20",), ("2001:db8::20",))
SIN = Site("sin", (1.35, 103.82), ("203.0.113.30",), ("2001:db8::30",))


def _zone(*pools: Pool, sites: tuple[Site, ...] = (FRA, IAD, SIN)) -> Zone:
    soa = Soa("ns1.t.example.", "h.t.example.", 1, 3600, 600, 86400, 60, 3600)
    return Zone("t.example.", "t.yaml", 1, 3600, soa, ("ns1.t.example.",), {},
                sites={s.name: s for s in sites}, pools={p.name: p for p in pools})


# Locations: Frankfurt (DE), Berlin (DE), Ashburn (US), Seattle (US), Singapore (SG), a gap
LOCS = [((50.11, 8.68), "DE", "EU"), ((52.52, 13.40), "DE", "EU"), ((39.0, -77.5), "US", "NA"),
        ((47.6, -122.3), "US", "NA"), ((1.3, 103.8), "SG", "AS"), (None, None, None)]


def _index(seed: int = 0) -> NetworkIndex:
    """Random runs over both families (IPv4 at full width, IPv6 with an opaque run)."""
    rng = random.Random(seed)
    starts4, ids4 = array("I", [0]), array("i", [5])
    for start in sorted(rng.sample(range(1, 1 << 32, 4096), 40)):
        starts4.append(start)
        ids4.append(rng.randrange(len(LOCS)))
    starts6 = [0, 1 << 96, 1 << 125]
    ids6 = array("i", [OPAQUE, 5, 0])
    for start in sorted(rng.sample(range((1 << 125) + 1, 1 << 126, 1 << 100), 20)):
        starts6.append(start)
        ids6.append(rng.randrange(len(LOCS)))
    starts6.append(1 << 126)
    ids6.append(5)
    return NetworkIndex({4: FamilyRuns(32, starts4, ids4), 6: FamilyRuns(128, starts6, ids6)}, list(LOCS))


def test_location_sizes_count_both_families_in_client_networks():
    idx = NetworkIndex({4: FamilyRuns(32, array("I", [0, 1 << 31]), array("i", [0, 1])),
                        6: FamilyRuns(128, [0, 1 << 96, 1 << 127], array("i", [OPAQUE, 1, 0]))},
                       [((1.0, 2.0), "DE", "EU"), ((3.0, 4.0), "US", "NA")])
    de, us = idx.location_sizes()
    # IPv4 in /24s, IPv6 in /48s; the opaque run (the IPv4 space inside IPv6) counts nowhere
    assert de == pytest.approx(2 ** 23 + 2 ** 47)
    assert us == pytest.approx(2 ** 23 + (2 ** 127 - 2 ** 96) / 2 ** 80)


@pytest.mark.parametrize("policy", ["closest", "failover", "weighted", "hash"])
@pytest.mark.parametrize("seed", range(5))
def test_shares_sum_to_one_per_country(policy, seed):
    idx = _index(seed)
    zone = _zone(Pool("p", policy, ("fra", "iad", "sin")))
    states = random.Random(seed).choice([{}, {"fra": "down"}, {"iad": "drain"}, {"fra": "down", "iad": "down"}])
    rows = country_rows(idx.locations, idx.location_sizes(), location_answers(idx, spec_of(zone, "p", states)))
    totals: dict[str, float] = {}
    for r in rows:
        totals[r["country"]] = totals.get(r["country"], 0.0) + r["share"]
        assert r["continent"] in ("EU", "NA", "AS")
    assert totals and all(t == pytest.approx(1.0) for t in totals.values())
    assert None not in totals  # unlocated space is not on the map


def test_closest_splits_by_location_and_moves_follow_the_policy_order():
    # DE: Frankfurt and Berlin; with fra down both go to the next nearest, iad
    locs = [((50.11, 8.68), "DE", "EU"), ((52.52, 13.40), "DE", "EU"), ((1.3, 103.8), "SG", "AS")]
    idx = NetworkIndex({4: FamilyRuns(32, array("I", [0, 3 << 24, 4 << 24, 5 << 24]), array("i", [0, 1, 2, 0])),
                        6: FamilyRuns(128, [0], array("i", [OPAQUE]))}, locs)
    zone = _zone(Pool("web", "closest", ("fra", "iad", "sin")))
    engine = MapEngine(idx)
    rows = engine.map(spec_of(zone, "web", {}))
    de = [r for r in rows if r["country"] == "DE"]
    assert [(r["sites"], r["share"]) for r in de] == [(["fra"], pytest.approx(1.0))]  # Berlin is nearest fra too
    plan = engine.plan(spec_of(zone, "web", {}), spec_of(zone, "web", {"fra": "down"}))
    assert [(m["country"], m["from"], m["to"]) for m in plan["moves"]] == [("DE", ["fra"], ["iad"])]
    assert plan["moves"][0]["share"] == pytest.approx(1.0)
    sizes = idx.location_sizes()
    assert plan["moved_share"] == pytest.approx((sizes[0] + sizes[1]) / sum(sizes))
    # nothing changes: no move at all
    assert engine.plan(spec_of(zone, "web", {}), spec_of(zone, "web", {"sin": "unknown"})) == \
        {"moves": [], "moved_share": 0.0, "moved_share_by_continent": {}}
    assert plan["moved_share_by_continent"] == {"EU": pytest.approx(1.0)}


def test_a_country_split_between_answers_gets_one_move_per_pair():
    locs = [((50.11, 8.68), "RU", "EU"), ((43.1, 131.9), "RU", "EU")]  # Frankfurt-ish and Vladivostok
    idx = NetworkIndex({4: FamilyRuns(32, array("I", [0, 1 << 30]), array("i", [0, 1])),
                        6: FamilyRuns(128, [0], array("i", [OPAQUE]))}, locs)
    zone = _zone(Pool("web", "closest", ("fra", "iad", "sin")))
    engine = MapEngine(idx)
    rows = engine.map(spec_of(zone, "web", {}))
    assert {(tuple(r["sites"]), round(r["share"], 6)) for r in rows} == {(("fra",), 0.25), (("sin",), 0.75)}
    plan = engine.plan(spec_of(zone, "web", {}), spec_of(zone, "web", {"fra": "down", "sin": "down"}))
    assert [(m["from"], m["to"], round(m["share"], 6)) for m in plan["moves"]] == \
        [(["sin"], ["iad"], 0.75), (["fra"], ["iad"], 0.25)]


def test_drain_is_out_unless_every_other_site_is_down():
    idx = _index(1)
    zone = _zone(Pool("web", "failover", ("fra", "iad")))
    engine = MapEngine(idx)
    up = spec_of(zone, "web", {})
    assert {tuple(r["sites"]) for r in engine.map(spec_of(zone, "web", {"fra": "drain"}))} == {("iad",)}
    assert {tuple(r["sites"]) for r in engine.map(spec_of(zone, "web", {"fra": "drain", "iad": "down"}))} == {("fra",)}
    assert engine.plan(up, spec_of(zone, "web", {"fra": "drain", "iad": "down"}))["moves"] == []


def test_plan_zone_lists_added_and_removed_pools():
    idx = _index(2)
    before = _zone(Pool("a", "failover", ("fra", "iad")))
    after = _zone(Pool("b", "failover", ("iad",)))
    plan = plan_zone(MapEngine(idx), before, after, {}, {})
    assert [p["pool"] for p in plan["pools"]] == ["a", "b"]
    assert {(tuple(m["from"]), tuple(m["to"])) for m in plan["pools"][0]["moves"]} == {(("fra",), ())}
    assert {(tuple(m["from"]), tuple(m["to"])) for m in plan["pools"][1]["moves"]} == {((), ("iad",))}
    assert plan["pools"][0]["moved_share"] == pytest.approx(1.0)
    assert plan["zone"] == "t.example"


def test_weigh_queries_and_format():
    pool = {"pool": "web", "moved_share": 0.5, "moves": [
        {"country": "DE", "continent": "EU", "from": ["fra"], "to": ["iad"], "share": 1.0},
        {"country": "FR", "continent": "EU", "from": ["fra"], "to": ["iad"], "share": 0.5}]}
    assert "query_share" not in format_plan({"pools": [pool]})
    assert format_plan({"pools": [pool]}).splitlines()[0] == "web  DE (EU)  fra -> iad  100.0 %"
    weigh_queries(pool, {"DE": 30, "FR": 20, "US": 40, None: 10})
    assert pool["queries"] == 100
    assert pool["moves"][0]["query_share"] == pytest.approx(0.30)
    assert pool["moves"][1]["query_share"] == pytest.approx(0.10)
    # unknown-country queries move as the located space does
    assert pool["moved_query_share"] == pytest.approx(0.30 + 0.10 + 0.05)
    assert format_plan({"pools": [pool]}).splitlines() == [
        "web  DE (EU)  fra -> iad  100.0 %  (30.0 % of the last hour's queries)",
        "web  FR (EU)  fra -> iad  50.0 %  (10.0 % of the last hour's queries)"]
    assert format_plan({"pools": [{"pool": "x", "moves": [], "moved_share": 0.0}]}) == ""
    empty = {"pool": "x", "moves": [], "moved_share": 0.0}
    assert weigh_queries(empty, {}) == {"pool": "x", "moves": [], "moved_share": 0.0}


def test_traffic_window_keeps_the_last_hour():
    w = TrafficWindow(window=3600, step=60)
    key = ("z", "web", "DE")
    w.sample(0, {})
    assert w.recent(30, {key: 5}) == {key: 5}  # less than an hour: since start
    for minute in range(1, 121):
        w.sample(minute * 60, {key: minute * 10})
    # at t = 120 min, the window starts at the sample of minute 60
    assert w.recent(120 * 60, {key: 1200}) == {key: 600}
    w.sample(120 * 60 + 10, {key: 1300})  # within a step: not kept
    assert per_country({("z", "web", "DE"): 3, ("z", "web", None): 1, ("z", "api", "DE"): 9}, "z", "web") == \
        {"DE": 3, None: 1}


def test_the_sample_database_and_zone():
    with GeoLocator.open(SAMPLE) as geo:
        idx = NetworkIndex.build(geo)
    zone = load_zone_file(str(ROOT / "zones" / "example.yaml"))
    engine = MapEngine(idx)
    for pool in zone.pools:
        rows = engine.map(spec_of(zone, pool, {}))
        totals: dict[str, float] = {}
        for r in rows:
            totals[r["country"]] = totals.get(r["country"], 0.0) + r["share"]
        assert all(t == pytest.approx(1.0) for t in totals.values()), pool
    rows = engine.map(spec_of(zone, "web", {}))
    assert {"country": "DE", "continent": "EU", "sites": ["fra"], "share": pytest.approx(1.0)} in rows
    plan = plan_zone(engine, zone, zone, {}, {"fra": "down"})
    web = plan["pools"][0]
    assert {"country": "DE", "continent": "EU", "from": ["fra"], "to": ["iad"], "share": pytest.approx(1.0)} \
        in web["moves"]
    assert 0 < web["moved_share"] < 1


def test_query_stats_count_countries_of_cache_hits():
    stats = QueryStats()
    slot = stats.slot("z", "A", "NOERROR", ("z", "web"), ("fra",), "", "DE")
    other = stats.slot("z", "A", "NOERROR", ("z", "web"), ("fra",), "", None)
    assert slot != other
    stats.answered_sites("z", "web", ("fra",), "DE")
    stats.hits[slot] += 3
    stats.hits[other] += 2
    assert stats.countries == {("z", "web", "DE"): 4, ("z", "web", None): 2}
    total = QueryStats.total([stats, stats.snapshot()])
    assert total.countries[("z", "web", "DE")] == 8
    stats.retain([_zone(Pool("api", "failover", ("fra",)))])
    assert not stats.countries


def test_balancer_is_not_needed_per_location_for_client_free_policies():
    # one decision for every location: a failover pool asks the balancer once
    idx = _index(3)
    calls = []
    original = Balancer.located_answer

    def counting(self, prep, location):
        calls.append(location)
        return original(self, prep, location)

    Balancer.located_answer = counting  # type: ignore[method-assign]
    try:
        location_answers(idx, spec_of(_zone(Pool("p", "failover", ("fra", "iad"))), "p", {}))
        assert len(calls) == 1
        calls.clear()
        location_answers(idx, spec_of(_zone(Pool("p", "closest", ("fra", "iad"))), "p", {}))
        # closest: once per order of the sites by distance (fra first, iad first, location unknown)
        assert len(calls) == 3
    finally:
        Balancer.located_answer = original  # type: ignore[method-assign]


def test_moves_ignore_unlocated_space():
    locs = [(None, None, "EU"), ((1.0, 1.0), "DE", "EU")]
    rows, moved, by_continent = moves(locs, [10.0, 10.0], [("a",), ("a",)], [("b",), ("b",)])
    assert [(r["country"], r["share"]) for r in rows] == [("DE", 1.0)]
    assert moved == 1.0 and by_continent == {"EU": 1.0}


@pytest.mark.parametrize("policy", ["closest", "geo", "failover"])
@pytest.mark.parametrize("seed", range(6))
def test_answers_after_sites_leave_equal_a_fresh_computation(policy, seed):
    rng = random.Random(seed)
    idx = _index(seed)
    geo = (GeoRule("country", "DE", ("fra", "iad")), GeoRule("continent", "NA", ("iad", "sin")),
           GeoRule("default", "", ("sin", "fra")))
    zone = _zone(Pool("p", policy, ("fra", "iad", "sin"), geo=geo if policy == "geo" else ()))
    engine = MapEngine(idx)
    states: dict[str, str] = {}
    engine.answers(spec_of(zone, "p", states))
    for _ in range(4):
        site = rng.choice(["fra", "iad", "sin"])
        states[site] = rng.choice(["down", "drain", "up"])
        spec = spec_of(zone, "p", states)
        assert engine.answers(spec) == location_answers(idx, spec), states


@pytest.mark.parametrize("seed", range(8))
def test_closest_decided_once_per_order_equals_a_decision_per_location(seed):
    rng = random.Random(seed)
    sites = tuple(Site(f"s{i}", (rng.uniform(-60, 70), rng.uniform(-180, 180)) if rng.random() < 0.9 else None,
                       (f"192.0.2.{i}",), (f"2001:db8::{i}",)) for i in range(rng.randint(2, 6)))
    locs = [((rng.uniform(-60, 70), rng.uniform(-180, 180)) if rng.random() < 0.95 else None, "DE", "EU")
            for _ in range(300)]
    locs.append((sites[0].location, "DE", "EU"))  # a tie-prone spot: exactly at a site
    idx = NetworkIndex({4: FamilyRuns(32, array("I", [i << 20 for i in range(len(locs))]),
                                      array("i", range(len(locs)))),
                        6: FamilyRuns(128, [0], array("i", [OPAQUE]))}, locs)
    zone = _zone(Pool("p", "closest", tuple(s.name for s in sites), answers=rng.randint(1, 2)), sites=sites)
    states = {s.name: rng.choice(["up", "up", "down", "drain"]) for s in sites}
    spec = spec_of(zone, "p", states)
    answer_of, _ = _answer_function(spec)
    assert location_answers(idx, spec) == [answer_of(loc) for loc in locs]
    assert MapEngine(idx).answers(spec) == [answer_of(loc) for loc in locs]


@pytest.mark.parametrize("seed", range(10))
def test_geo_cidr_rules_cut_their_space_as_dns_answers_it(seed):
    # 4096 located addresses in runs of random locations; random (nested) CIDR rules; every address
    # decided on its own by the balancer must add up to the engine's map and plan
    rng = random.Random(seed)
    starts, ids = array("I", [0]), array("i", [rng.randrange(5)])
    for start in sorted(rng.sample(range(1, 4096), 12)):
        starts.append(start)
        ids.append(rng.randrange(5))
    starts.append(4096)
    ids.append(5)  # the gap: the rest of the space
    idx = NetworkIndex({4: FamilyRuns(32, starts, ids), 6: FamilyRuns(128, [0], array("i", [OPAQUE]))}, list(LOCS))

    def rules() -> tuple[GeoRule, ...]:
        out = []
        for _ in range(rng.randint(1, 4)):
            plen = rng.randint(21, 30)
            net = rng.randrange(0, 4096) >> (32 - plen) << (32 - plen)
            out.append(GeoRule("cidr", f"{ipaddress.IPv4Address(net)}/{plen}", (rng.choice(["fra", "iad", "sin"]),)))
        return (*out, GeoRule("country", "DE", ("fra", "iad")), GeoRule("default", "", ("sin", "iad")))

    zone_a = _zone(Pool("p", "geo", ("fra", "iad", "sin"), geo=rules()))
    zone_b = _zone(Pool("p", "geo", ("fra", "iad", "sin"), geo=rules()))
    specs = [spec_of(zone_a, "p", {}), spec_of(zone_b, "p", {rng.choice(["fra", "iad"]): "down"})]

    def brute(spec):
        answer_at = _cidr_answer_function(spec)
        out = []
        for addr in range(4096):
            i = bisect.bisect_right(starts, addr) - 1
            out.append((LOCS[ids[i]], answer_at(LOCS[ids[i]], addr, 4)))
        return out

    engine = MapEngine(idx)
    a, b = brute(specs[0]), brute(specs[1])
    space: dict[tuple, float] = {}
    total: dict[str, float] = {}
    moved: dict[tuple, float] = {}
    for (loc, x), (_, y) in zip(a, b, strict=True):
        if loc[1] is None:
            continue
        space[(loc[1], x)] = space.get((loc[1], x), 0.0) + 1
        total[loc[1]] = total.get(loc[1], 0.0) + 1
        if x != y:
            moved[(loc[1], x, y)] = moved.get((loc[1], x, y), 0.0) + 1
    got = {(r["country"], tuple(r["sites"])): r["share"] for r in engine.map(specs[0])}
    assert got == pytest.approx({k: n / total[k[0]] for k, n in space.items()})
    plan = engine.plan(specs[0], specs[1])
    got = {(m["country"], tuple(m["from"]), tuple(m["to"])): m["share"] for m in plan["moves"]}
    assert got == pytest.approx({k: n / total[k[0]] for k, n in moved.items()})


def test_the_sample_zone_geo_cidr_rule_matches_explain():
    # regional: "192.0.2.0/24": [iad] holds Frankfurt's 192.0.2.0/26 (DE), the rest of DE gets fra
    with GeoLocator.open(SAMPLE) as geo:
        idx = NetworkIndex.build(geo)
        de = geo.locate("192.0.2.5")
    assert de.country == "DE"
    zone = load_zone_file(str(ROOT / "zones" / "example.yaml"))
    rows = {tuple(r["sites"]): r["share"] for r in MapEngine(idx).map(spec_of(zone, "regional", {}))
            if r["country"] == "DE"}
    assert set(rows) == {("fra",), ("iad",)} and sum(rows.values()) == pytest.approx(1.0)
    assert 0 < rows[("iad",)] < 0.5


def test_small_shares_keep_two_significant_digits():
    pool = {"pool": "eu", "moved_share": 0.0, "moves": [
        {"country": "DE", "continent": "EU", "from": ["iad"], "to": ["fra"], "share": 0.000061},
        {"country": "FR", "continent": None, "from": [], "to": ["fra", "iad"], "share": 0.5}]}
    assert format_plan({"pools": [pool]}).splitlines() == [
        "eu  DE (EU)  iad -> fra  0.0061 %", "eu  FR  (none) -> fra,iad  50.0 %"]


def test_sites_leaving_are_recomputed_incrementally_across_pickling():
    # the builder process gets every spec unpickled: equal, not identical, objects
    import pickle

    idx = _index(4)
    zone = _zone(Pool("p", "closest", ("fra", "iad", "sin")))
    engine = MapEngine(idx)
    engine.answers(pickle.loads(pickle.dumps(spec_of(zone, "p", {}))))
    calls = []
    original = engine._after_leaving

    def spy(spec):
        got = original(spec)
        calls.append(got is not None)
        return got

    engine._after_leaving = spy  # type: ignore[method-assign]
    spec = pickle.loads(pickle.dumps(spec_of(zone, "p", {"fra": "down"})))
    assert engine.answers(spec) == location_answers(idx, spec)
    assert calls == [True]
