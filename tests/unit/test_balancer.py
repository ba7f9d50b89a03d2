"""Balancer: states, when_all_down, drain, weight 0, answers, families, ECS scope, decision cache."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest

from gslb.balancer import Balancer
from gslb.model import (
    GeoRule, Location, Pool, RegionResult, Site, SiteStatus, Soa, StateView, Zone,
)


class FakeLocator:
    """GeoIP stand-in: longest matching network of a small table, else the empty network around it."""

    kind = "city"

    def __init__(self, table: dict[str, tuple]) -> None:
        self.table = [(ipaddress.ip_network(n), v) for n, v in table.items()]
        self.calls = 0

    def locate(self, ip: str) -> Location:
        self.calls += 1
        addr = ipaddress.ip_address(ip)
        best = None
        for net, v in self.table:
            if addr in net and (best is None or net.prefixlen > best[0].prefixlen):
                best = (net, v)
        if best is None:
            plen = 8 if addr.version == 4 else 16
            net = ipaddress.ip_network(f"{ip}/{plen}", strict=False)
            return Location(ip, str(net), plen)
        net, (latlon, country, continent) = best
        return Location(ip, str(net), net.prefixlen, latlon, country, continent)


GEO = FakeLocator({
    "192.0.2.0/24": ((48.85, 2.35), "FR", "EU"),        # Paris
    "198.51.100.0/22": ((40.71, -74.0), "US", "NA"),    # New York (a /22: scope 22)
    "203.0.113.0/24": ((35.68, 139.69), "JP", "AS"),    # Tokyo
    "100.64.0.0/16": ((52.52, 13.40), "DE", "EU"),      # Berlin
    "2001:db8::/32": ((-33.87, 151.21), "AU", "OC"),    # Sydney
})

SITES = {
    "fra": Site("fra", (50.11, 8.68), ("10.0.0.1", "10.0.0.2"), ("2001:db8:f::1",)),
    "iad": Site("iad", (38.95, -77.45), ("10.0.1.1",), ()),
    "sin": Site("sin", (1.35, 103.82), ("10.0.2.1",), ("2001:db8:5::1",)),
}


def zone(*pools: Pool, sites=SITES) -> Zone:
    soa = Soa("ns1.example.com.", "hostmaster.example.com.", 1, 3600, 600, 1209600, 60, 3600)
    return Zone("example.com.", "example.yaml", 1, 3600, soa, ("ns1.example.com.",), {},
                sites=dict(sites), pools={p.name: p for p in pools})


def view(version=1, **states) -> StateView:
    sites = {}
    for name, state in states.items():
        if state in ("up", "down", "drain"):
            sites[("example.com", name)] = SiteStatus(override=state)
        else:
            sites[("example.com", name)] = state
    return StateView(version, sites)


def bal(geo=GEO, regions=None, seed=1) -> Balancer:
    return Balancer(geo, regions or {}, random.Random(seed))


def ask(b, z, pool, ip="192.0.2.9", rtype="A", sp=None, v=None):
    return b.answer(z, z.pools[pool], rtype, ip, sp, v or view())


def pool(policy="failover", **kw) -> Pool:
    return Pool(kw.pop("name", "web"), policy, tuple(kw.pop("sites", ("fra", "iad", "sin"))), **kw)


def test_closest_answers_nearest_with_geo_scope_capped_by_source_prefix():
    z = zone(pool("closest"))
    b = bal()
    a = ask(b, z, "web", "192.0.2.9", sp=32)
    assert (a.outcome, a.addresses, a.sites, a.ttl, a.scope_prefix) == ("answer", ("10.0.0.1", "10.0.0.2"), ("fra",), 30, 24)
    a = ask(b, z, "web", "198.51.100.7", sp=24)
    assert a.addresses == ("10.0.1.1",) and a.scope_prefix == 22
    assert ask(b, z, "web", "198.51.100.0", sp=20).scope_prefix == 20
    assert ask(b, z, "web", "203.0.113.5", sp=32).sites == ("sin",)
    assert ask(b, z, "web", "203.0.113.5", sp=None).scope_prefix == 0
    # unknown location: sites order, scope = the empty network around the address
    a = ask(b, z, "web", "172.16.5.5", sp=32)
    assert a.sites == ("fra",) and a.scope_prefix == 8


def test_failover_skips_down_and_when_all_down_rules():
    b = bal()
    z = zone(pool("failover"), pool("failover", name="sf", when_all_down="servfail"),
             pool("failover", name="nd", when_all_down="nodata"))
    assert ask(b, z, "web", v=view(1, fra="down")).sites == ("iad",)
    assert ask(b, z, "web", v=view(2, fra="down", iad="down")).sites == ("sin",)
    all_down = view(3, fra="down", iad="down", sin="down")
    a = ask(b, z, "web", v=all_down)
    assert a.outcome == "answer" and a.sites == ("fra",)  # all: as if all were up
    a = ask(b, z, "sf", v=all_down, sp=24)
    assert (a.outcome, a.addresses, a.scope_prefix) == ("servfail", (), 0)
    assert ask(b, z, "nd", v=all_down).outcome == "nodata"


def test_unknown_counts_as_up_and_quorum_decides():
    b = bal()
    z = zone(pool("failover", quorum=0.5))
    split = SiteStatus(regions={"a": RegionResult("up", 0), "b": RegionResult("down", 0)})
    assert ask(b, z, "web", v=view(1, fra=split)).sites == ("iad",)  # 1 of 2 is not > 0.5
    z2 = zone(pool("failover", quorum=0.4))
    assert ask(b, z2, "web", v=view(1, fra=split)).sites == ("fra",)
    assert ask(b, z, "web", v=StateView(5, {})).sites == ("fra",)  # no result: unknown = up


def test_drain_is_out_unless_every_other_site_is_down():
    b = bal()
    z = zone(pool("failover"))
    assert ask(b, z, "web", v=view(1, fra="drain")).sites == ("iad",)
    assert ask(b, z, "web", v=view(2, fra="drain", iad="down", sin="down")).sites == ("fra",)
    assert ask(b, z, "web", v=view(3, fra="down", iad="drain", sin="down")).sites == ("iad",)


def test_weight_zero_is_a_backup():
    sites = dict(SITES, fra=Site("fra", (50.11, 8.68), ("10.0.0.1",), (), weight=0))
    b = bal()
    for policy in ("failover", "weighted", "closest", "hash", "least_load", "p2c", "round_robin"):
        z = zone(pool(policy), sites=sites)
        for i in range(30):
            assert ask(b, z, "web", f"192.0.2.{i}", v=view(1)).sites != ("fra",), policy
        assert ask(b, z, "web", v=view(2, iad="down", sin="down")).sites == ("fra",)


def test_answers_two_and_families():
    b = bal()
    z = zone(pool("failover", answers=2))
    a = ask(b, z, "web")
    assert a.sites == ("fra", "iad") and a.addresses == ("10.0.0.1", "10.0.0.2", "10.0.1.1")
    # AAAA: sites without an IPv6 address are skipped, the next ones of the order fill in
    a = ask(b, z, "web", rtype="AAAA")
    assert a.sites == ("fra", "sin") and a.addresses == ("2001:db8:f::1", "2001:db8:5::1")
    z1 = zone(pool("failover", sites=("iad",)))
    a = ask(b, z1, "web", rtype="AAAA")
    assert (a.outcome, a.addresses, a.sites) == ("answer", (), ())  # NODATA


@pytest.mark.parametrize("policy", ["closest", "hash", "failover"])
def test_nodata_for_a_family_no_site_has_does_not_depend_on_the_client(policy):
    b = bal()
    z = zone(pool(policy, sites=("iad",)))
    a = ask(b, z, "web", "192.0.2.9", rtype="AAAA", sp=32)
    assert (a.outcome, a.addresses, a.scope_prefix) == ("answer", (), 0)
    assert ask(b, z, "web", "192.0.2.9", rtype="A", sp=32).scope_prefix == (0 if policy == "failover" else 24)
    # geo: another client's tier may have the family, so the NODATA keeps the match's scope
    g = zone(pool("geo", sites=("iad", "fra"), geo=(GeoRule("continent", "EU", ("iad",)),
                                                     GeoRule("default", "default", ("fra",)))))
    assert ask(b, g, "web", "192.0.2.9", rtype="AAAA", sp=32).scope_prefix == 24


def test_round_robin_cycles_over_up_sites_per_pool():
    b = bal()
    z = zone(pool("round_robin"), pool("round_robin", name="other"))
    v = view(1, iad="down")
    got = [ask(b, z, "web", v=v).sites[0] for _ in range(6)]
    assert got == ["fra", "sin", "fra", "sin", "fra", "sin"]
    assert ask(b, z, "other", v=v).sites == ("fra",)  # its own counter
    got = [ask(b, z, "web", v=view(2)).sites[0] for _ in range(3)]
    assert sorted(got) == ["fra", "iad", "sin"]


def test_weighted_distribution_through_the_balancer():
    sites = {n: Site(n, None, (f"10.9.0.{i}",), (), weight=w)
             for i, (n, w) in enumerate((("a", 1), ("b", 3), ("c", 6)))}
    z = zone(pool("weighted", sites=("a", "b", "c")), sites=sites)
    b = bal(seed=11)
    n = 20_000
    counts = Counter(ask(b, z, "web").sites[0] for _ in range(n))
    chi = sum((counts[k] - n * p) ** 2 / (n * p) for k, p in (("a", .1), ("b", .3), ("c", .6)))
    assert chi < 13.8, counts


def test_hash_scope_and_stickiness():
    b = bal()
    z = zone(pool("hash"))
    a = ask(b, z, "web", "192.0.2.77", sp=32)
    assert a.scope_prefix == 24
    assert ask(b, z, "web", "192.0.2.1", sp=32).sites == a.sites
    assert ask(b, z, "web", "192.0.2.77", sp=16).scope_prefix == 16
    assert ask(b, z, "web", "2001:db8:1::1", rtype="AAAA", sp=56).scope_prefix == 48
    assert ask(b, z, "web", "192.0.2.77", sp=None).scope_prefix == 0


@pytest.mark.parametrize("policy", ["failover", "weighted", "round_robin", "least_load", "p2c"])
def test_client_independent_policies_have_scope_zero(policy):
    z = zone(pool(policy))
    assert ask(bal(), z, "web", "192.0.2.77", sp=24).scope_prefix == 0


def test_fastest_scope_and_choice():
    regions = {"eu-west": (53.35, -6.26), "us-east": (38.95, -77.45), "local": None}
    rr = lambda **r: SiteStatus(regions={k: RegionResult("up", 0, rtt_ms=v) for k, v in r.items()})  # noqa: E731
    v = view(1, fra=rr(**{"eu-west": 10, "us-east": 90}), iad=rr(**{"eu-west": 80, "us-east": 4}))
    b = bal(regions=regions)
    z = zone(pool("fastest"))
    a = ask(b, z, "web", "192.0.2.1", sp=32, v=v)
    assert a.sites == ("fra",) and a.scope_prefix == 24
    assert ask(b, z, "web", "198.51.100.1", sp=32, v=v).sites == ("iad",)


def test_least_load_reads_loads_from_the_view():
    ld = lambda x: SiteStatus(regions={"r": RegionResult("up", 0, load=x)})  # noqa: E731
    b = bal()
    z = zone(pool("least_load"))
    assert ask(b, z, "web", v=view(1, fra=ld(9), iad=ld(2), sin=ld(5))).sites == ("iad",)
    assert ask(b, z, "web", v=view(2, fra=ld(1), iad=ld(2), sin=ld(5))).sites == ("fra",)


GEO_POOL = pool("geo", geo=(
    GeoRule("cidr", "100.64.128.0/20", ("sin",)),
    GeoRule("country", "DE", ("fra",)),
    GeoRule("continent", "EU", ("iad", "fra")),
    GeoRule("default", "default", ("iad",)),
))


def test_geo_specificity_and_fallback_to_less_specific_rules():
    b = bal()
    z = zone(GEO_POOL)
    assert ask(b, z, "web", "100.64.1.1", sp=32).sites == ("fra",)        # DE
    assert ask(b, z, "web", "100.64.130.1", sp=32).sites == ("sin",)      # CIDR beats country
    assert ask(b, z, "web", "192.0.2.1", sp=32).sites == ("iad",)         # FR -> EU list, in list order
    assert ask(b, z, "web", "203.0.113.1", sp=32).sites == ("iad",)       # JP -> default
    # DE's list is down: the continent's list answers, then the default
    assert ask(b, z, "web", "100.64.1.1", v=view(2, fra="down")).sites == ("iad",)
    assert ask(b, z, "web", "203.0.113.1", v=view(3, iad="down")).sites == ("iad",)  # all down in tier: all
    # sin is in no list for JP: never a candidate, even when the default list is down
    t = b.trace(z, z.pools["web"], "A", "203.0.113.1", 32, view(4, iad="down"))
    assert t.answer.sites == ("iad",)
    assert "not in the matched geo lists" in {c.site: c for c in t.candidates}["sin"].reason


def test_geo_scope_accounts_for_nested_cidr_rules():
    b = bal()
    z = zone(GEO_POOL)
    # the GeoIP network is 100.64.0.0/16 but a /20 rule lies inside: outside it the answer holds for /17
    assert ask(b, z, "web", "100.64.1.1", sp=32).scope_prefix == 17
    assert ask(b, z, "web", "100.64.130.1", sp=32).scope_prefix == 20
    assert ask(b, z, "web", "100.64.130.1", sp=18).scope_prefix == 18
    assert ask(b, z, "web", "192.0.2.1", sp=32).scope_prefix == 24
    # cached per refined network: a client of the /20 does not get the /17's cached answer
    assert ask(b, z, "web", "100.64.200.1", sp=32).sites == ("fra",)
    assert ask(b, z, "web", "100.64.131.1", sp=32).sites == ("sin",)


def test_decision_cache_follows_view_version():
    b = bal()
    z = zone(pool("closest"))
    v1 = view(1)
    assert ask(b, z, "web", "192.0.2.1", v=v1).sites == ("fra",)
    # same version: cached decision (a table never changes a view without a new version)
    assert ask(b, z, "web", "192.0.2.1", v=view(1, fra="down")).sites == ("fra",)
    assert ask(b, z, "web", "192.0.2.1", v=view(2, fra="down")).sites == ("iad",)
    assert ask(b, z, "web", "192.0.2.1", v=view(3)).sites == ("fra",)


def test_decision_cache_is_per_zone_object_and_pool():
    b = bal()
    z1 = zone(pool("failover"))
    z2 = zone(pool("failover", sites=("sin", "fra")))
    assert ask(b, z1, "web").sites == ("fra",)
    assert ask(b, z2, "web").sites == ("sin",)
    assert ask(b, z1, "web").sites == ("fra",)


def test_trace_matches_answer_and_explains_every_site():
    b = bal()
    z = zone(pool("closest", answers=1))
    v = view(7, iad="down")
    t = b.trace(z, z.pools["web"], "A", "198.51.100.7", 32, v)
    assert t.answer == ask(b, z, "web", "198.51.100.7", sp=32, v=v)
    assert t.policy == "closest" and t.pool == "web" and t.location.country == "US"
    rows = {c.site: c for c in t.candidates}
    assert [c.site for c in t.candidates][0] == "fra"
    assert rows["fra"].chosen and not rows["sin"].chosen
    assert rows["iad"].state == "down" and rows["iad"].reason == "down"
    assert rows["fra"].distance_km == pytest.approx(6200, rel=0.05)
    assert "not needed" in rows["sin"].reason


def test_trace_does_not_advance_round_robin():
    b = bal()
    z = zone(pool("round_robin"))
    first = b.trace(z, z.pools["web"], "A", "192.0.2.1", None, view()).answer.sites
    assert ask(b, z, "web").sites == first == ("fra",)
    assert ask(b, z, "web").sites == ("iad",)


def test_trace_of_geo_names_the_matched_tier_and_outsiders():
    b = bal()
    z = zone(GEO_POOL)
    t = b.trace(z, z.pools["web"], "A", "192.0.2.1", 32, view())
    assert t.matched == "EU"
    rows = {c.site: c for c in t.candidates}
    assert rows["iad"].chosen
    assert "not in the matched geo lists" in rows["sin"].reason


def test_without_geo_database():
    b = bal(geo=None)
    z = zone(pool("closest"), pool("geo", name="g", geo=GEO_POOL.geo))
    a = ask(b, z, "web", "192.0.2.1", sp=32)
    assert a.sites == ("fra",) and a.scope_prefix == 0
    assert ask(b, z, "g", "100.64.130.1", sp=32).sites == ("sin",)
    assert ask(b, z, "g", "100.64.1.1", sp=32).sites == ("iad",)
    assert ask(b, z, "g", "100.64.1.1", sp=32).scope_prefix == 17


def test_closest_with_the_sample_database_for_every_continent():
    from pathlib import Path

    from gslb.geo import GeoLocator
    from gslb.zonefile import load_zone_file

    root = Path(__file__).resolve().parents[2]
    z = load_zone_file(str(root / "zones" / "example.yaml"))
    with GeoLocator.open(str(root / "data" / "sample-city.mmdb")) as geo:
        b = Balancer(geo, {}, random.Random(1))
        cases = {
            "192.0.2.1": ("fra", 26),        # Frankfurt
            "192.0.2.70": ("fra", 26),       # Paris
            "198.51.100.5": ("iad", 25),     # Ashburn
            "203.0.113.5": ("sin", 25),      # Singapore
            "203.0.113.130": ("syd", 26),    # Sydney
            "203.0.113.200": ("gru", 27),    # Sao Paulo
            "203.0.113.230": ("gru", 28),    # Johannesburg: Sao Paulo (7400 km) beats Frankfurt (8700)
        }
        for ip, (site, plen) in cases.items():
            a = b.answer(z, z.pools["web"], "A", ip, 32, StateView(1, {}))
            assert a.sites == (site,) and a.scope_prefix == plen, ip
        # unlocated: sites order, scope = the empty network around it, capped by the source
        a = b.answer(z, z.pools["web"], "A", "203.0.113.245", 32, StateView(1, {}))
        assert a.sites == ("fra",) and a.scope_prefix == geo.locate("203.0.113.245").prefixlen
        assert b.answer(z, z.pools["web"], "A", "203.0.113.130", 24, StateView(1, {})).scope_prefix == 24


def test_hash_through_the_balancer_moves_only_the_down_sites_clients():
    sites = {n: Site(n, None, (f"10.8.0.{i}",), ()) for i, n in enumerate("abcde")}
    z = zone(pool("hash", sites=tuple("abcde")), sites=sites)
    b = bal()
    clients = [f"10.{i >> 8}.{i & 255}.1" for i in range(3000)]
    before = {c: ask(b, z, "web", c, v=view(1)).sites for c in clients}
    after = {c: ask(b, z, "web", c, v=view(2, b="down")).sites for c in clients}
    moved = [c for c in clients if before[c] != after[c]]
    assert moved and all(before[c] == ("b",) for c in moved)
    assert len(moved) == sum(1 for c in clients if before[c] == ("b",))
    back = {c: ask(b, z, "web", c, v=view(3)).sites for c in clients}
    assert back == before


# --- audit fixes (issue 3) ----------------------------------------------------------------------

class MappedLocator(FakeLocator):
    """FakeLocator that, like gslb.geo, locates ::ffff:a.b.c.d as its IPv4 address (network in IPv6 form)."""

    def locate(self, ip: str) -> Location:
        mapped = ipaddress.ip_address(ip.split("%")[0])
        if mapped.version == 6 and mapped.ipv4_mapped is not None:
            loc = super().locate(str(mapped.ipv4_mapped))
            return Location(ip, f"::ffff:{loc.network.split('/')[0]}/{loc.prefixlen + 96}", loc.prefixlen + 96,
                            loc.latlon, loc.country, loc.continent)
        return super().locate(ip)


def test_round_robin_keeps_a_counter_per_family():
    sites = {n: Site(n, None, (f"10.9.0.{i}",), (f"2001:db8:9::{i}",)) for i, n in enumerate("abc", 1)}
    z = zone(pool("round_robin", sites=("a", "b", "c")), sites=sites)
    b = bal()
    # a client (or resolver) asking A then AAAA every time still sees every site for A
    got_a = []
    for _ in range(6):
        got_a.append(ask(b, z, "web", rtype="A").sites[0])
        ask(b, z, "web", rtype="AAAA")
    assert got_a == ["a", "b", "c", "a", "b", "c"]
    assert [ask(b, z, "web", rtype="AAAA").sites[0] for _ in range(3)] == ["a", "b", "c"]


@pytest.mark.parametrize("policy", ["hash", "geo", "closest"])
def test_link_local_client_with_a_zone_suffix_is_its_address(policy):
    # the zone suffix ("%eth0") is stripped where the address enters: the DNS transport (next
    # test) and explain (test_explain); the balancer gets the plain address and parses it once
    geo_rules = (GeoRule("cidr", "fe80::/64", ("sin",)), GeoRule("default", "default", ("iad",)))
    z = zone(pool(policy, geo=geo_rules if policy == "geo" else ()))
    b = bal()
    for rtype in ("A", "AAAA"):
        plain = ask(b, z, "web", "fe80::1", rtype=rtype, sp=128)
        t = b.trace(z, z.pools["web"], rtype, "fe80::1", 128, view())
        assert (t.answer.sites, t.answer.scope_prefix) == (plain.sites, plain.scope_prefix)
    if policy == "geo":
        assert plain.sites == ("sin",) and plain.scope_prefix == 64


def test_dns_transport_drops_the_zone_suffix_of_the_source_address():
    from gslb.handler import client_ip

    assert client_ip("fe80::1%lo") == "fe80::1"
    assert client_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_ip("192.0.2.1") == "192.0.2.1"


def test_sites_sharing_an_address_give_it_once():
    sites = {"a": Site("a", None, ("10.7.0.1", "10.7.0.2"), ("2001:db8:7::1",)),
             "b": Site("b", None, ("10.7.0.2", "10.7.0.3"), ("2001:db8:7::1",)),
             "c": Site("c", None, ("10.7.0.3",), ())}
    z = zone(pool("failover", sites=("a", "b", "c"), answers=3), sites=sites)
    a = ask(bal(), z, "web")
    assert a.addresses == ("10.7.0.1", "10.7.0.2", "10.7.0.3") and a.sites == ("a", "b", "c")
    assert ask(bal(), z, "web", rtype="AAAA").addresses == ("2001:db8:7::1",)


def _same_answer_in_scope(b, z, name, ip, source, rtype="A"):
    """The answer's scope, after checking that clients across addr/scope get the same sites."""
    a = ask(b, z, name, ip, rtype=rtype, sp=source)
    net = ipaddress.ip_network(f"{ip}/{a.scope_prefix}", strict=False)
    step = max(1, net.num_addresses // 37)
    for i in range(0, net.num_addresses, step):
        other = str(net.network_address + i)
        assert ask(b, z, name, other, rtype=rtype, sp=source).sites == a.sites, (ip, other)
    assert ask(b, z, name, str(net.broadcast_address), rtype=rtype, sp=source).sites == a.sites
    return a


def test_v4_mapped_client_hashes_as_its_ipv4_24_with_the_scope_in_ipv6():
    z = zone(pool("hash"))
    b = bal(geo=MappedLocator({}))
    for i in range(40):
        v4 = f"10.{i}.7.9"
        plain = ask(b, z, "web", v4, sp=32)
        mapped = _same_answer_in_scope(b, z, "web", f"::ffff:{v4}", 128)
        assert mapped.sites == plain.sites and mapped.scope_prefix == 120
    assert ask(b, z, "web", "::ffff:10.1.7.9", sp=112).scope_prefix == 112  # never more than the source
    # the v4 client's cached decision (scope 24) is not reused for the mapped one, nor the reverse
    assert ask(b, z, "web", "10.1.7.9", sp=32).scope_prefix == 24
    t = b.trace(z, z.pools["web"], "A", "::ffff:10.1.7.9", 128, view())
    assert t.subnet == "::ffff:10.1.7.0/120"


def test_v4_mapped_client_matches_ipv4_cidr_rules_with_the_scope_in_ipv6():
    geo = MappedLocator({
        "100.64.0.0/16": ((52.52, 13.40), "DE", "EU"), "192.0.2.0/24": ((48.85, 2.35), "FR", "EU"),
        "203.0.113.0/24": ((35.68, 139.69), "JP", "AS")})
    b = bal(geo=geo)
    z = zone(GEO_POOL)
    cases = {"100.64.130.1": ("sin", 20), "100.64.1.1": ("fra", 17), "192.0.2.1": ("iad", 24),
             "203.0.113.1": ("iad", 24)}
    for v4, (site, scope) in cases.items():
        plain = ask(b, z, "web", v4, sp=32)
        assert (plain.sites, plain.scope_prefix) == ((site,), scope)
        mapped = _same_answer_in_scope(b, z, "web", f"::ffff:{v4}", 128)
        assert (mapped.sites, mapped.scope_prefix) == ((site,), 96 + scope), v4
    assert ask(b, z, "web", "::ffff:100.64.130.1", sp=110).scope_prefix == 110
    # without a database: the CIDR rules alone
    nodb = bal(geo=None)
    a = ask(nodb, z, "web", "::ffff:100.64.130.1", sp=128)
    assert a.sites == ("sin",) and a.scope_prefix == 116
    assert ask(nodb, z, "web", "::ffff:100.64.1.1", sp=128).scope_prefix == 96 + 17
    # no CIDR rule and no location: everyone gets the default list, scope 0
    plain_geo = zone(pool("geo", geo=(GeoRule("country", "DE", ("fra",)), GeoRule("default", "default", ("iad",)))))
    a = ask(nodb, plain_geo, "web", "::ffff:100.64.1.1", sp=128)
    assert a.sites == ("iad",) and a.scope_prefix == 0


def test_v4_mapped_client_of_closest_is_scoped_by_its_ipv6_form_network():
    b = bal(geo=MappedLocator({"192.0.2.0/24": ((48.85, 2.35), "FR", "EU")}))
    z = zone(pool("closest"))
    a = _same_answer_in_scope(b, z, "web", "::ffff:192.0.2.9", 128)
    assert a.sites == ("fra",) and a.scope_prefix == 120


def test_fastest_without_located_regions_does_not_depend_on_the_client():
    rr = lambda **r: SiteStatus(regions={k: RegionResult("up", 0, rtt_ms=v) for k, v in r.items()})  # noqa: E731
    v = view(1, fra=rr(a=30, b=50), iad=rr(a=5, b=7))
    z = zone(pool("fastest"))
    for regions in ({}, {"a": None, "b": None}):
        b = bal(regions=regions)
        for ip in ("192.0.2.1", "198.51.100.1", "2001:db8::1"):
            a = ask(b, z, "web", ip, rtype="A", sp=32 if ":" not in ip else 128, v=v)
            assert a.sites == ("iad",) and a.scope_prefix == 0, (regions, ip)
    # with a located region the answer may depend on the client: the GeoIP network's scope
    assert ask(bal(regions={"a": (50.0, 8.0)}), z, "web", "192.0.2.1", sp=32, v=v).scope_prefix == 24


def test_reloads_keep_the_caches_bounded_by_the_pools_and_release_old_zones():
    import gc
    import weakref

    b = bal()
    names_ = ("rr", "close", "fail", "hash")
    policies = ("round_robin", "closest", "failover", "hash")
    refs = []
    for i in range(300):
        # every reload builds new Zone and Pool objects; a removed pool ("gone") leaves nothing behind
        pools = [pool(p, name=n) for n, p in zip(names_, policies, strict=True)]
        if i % 2 == 0:
            pools.append(pool("round_robin", name="gone"))
        z = zone(*pools)
        refs.append(weakref.ref(z))
        for n in (*names_, *(("gone",) if i % 2 == 0 else ())):
            for ip in ("192.0.2.1", "198.51.100.1"):
                for rtype in ("A", "AAAA"):
                    ask(b, z, n, ip, rtype=rtype)
        assert len(b._prepared) <= 5 and len(b._turns) <= 4 and len(b._young) + len(b._old) <= 2 * 2
    del z
    gc.collect()
    assert sum(r() is not None for r in refs) == 1  # only the last zone is still referenced
    # round_robin kept turning across reloads (its counter survives while the pool exists)
    assert b._turns[(refs[-1]().key, "rr", "A")] == 600


def test_client_free_policies_decide_once_per_view_version():
    b = bal()
    z = zone(pool("failover"), pool("weighted", name="w", answers=2))
    assert ask(b, z, "web", v=view(1)).sites == ("fra",)
    assert ask(b, z, "web", "203.0.113.5", v=view(1)).sites == ("fra",)
    assert ask(b, z, "web", v=view(2, fra="down")).sites == ("iad",)
    got = ask(b, z, "w", v=view(3, iad="down"))
    assert sorted(got.sites) == ["fra", "sin"] and got.scope_prefix == 0
    assert ask(b, z, "w", sp=24, v=view(4, fra="down", iad="down", sin="down")).outcome == "answer"
    z2 = zone(pool("weighted", name="w", when_all_down="servfail"))
    got = ask(b, z2, "w", sp=24, v=view(5, fra="down", iad="down", sin="down"))
    assert (got.outcome, got.addresses, got.scope_prefix) == ("servfail", (), 0)


def test_least_load_ranks_a_site_by_the_highest_load_of_its_regions():
    """A site's load is the highest any fresh region reports: fra, idle from one region but at 0.9
    from another, ranks after iad (0.5) and sin (0.7), though its lowest report is the lowest."""
    def loads(*xs):
        return SiteStatus(regions={f"r{i}": RegionResult("up", 0, load=x) for i, x in enumerate(xs)})
    b = bal()
    z = zone(pool("least_load", answers=3))
    got = ask(b, z, "web", v=view(1, fra=loads(0.1, 0.9), iad=loads(0.5, 0.5), sin=loads(0.7, None)))
    assert got.sites == ("iad", "sin", "fra")


def rtts(**r):
    return SiteStatus(regions={k: RegionResult("up", 0, rtt_ms=v) for k, v in r.items()})


def test_fastest_holds_round_trip_times_within_the_band():
    """An RTT moving by at most 20 % (or 2 ms) keeps the held one: no flapping between close sites."""
    b = bal()
    z = zone(pool("fastest", sites=("fra", "iad")))
    assert ask(b, z, "web", v=view(1, fra=rtts(r=10.0), iad=rtts(r=11.0))).sites == ("fra",)
    # fra 11.5 and iad 10.0: both within the band of what is held (10 and 11): fra stays first
    assert ask(b, z, "web", v=view(2, fra=rtts(r=11.5), iad=rtts(r=10.0))).sites == ("fra",)
    # fra 20: out of the band, re-ranked with iad's held 11
    assert ask(b, z, "web", v=view(3, fra=rtts(r=20.0), iad=rtts(r=10.0))).sites == ("iad",)
    # another set of regions is new data, not held: fra's mean (5) is the fastest now
    assert ask(b, z, "web", v=view(4, fra=rtts(r=20.0, s=-10.0), iad=rtts(r=10.0))).sites == ("fra",)


def test_a_load_exactly_at_the_band_edge_is_held():
    b = bal()
    z = zone(pool("least_load", sites=("fra", "iad")))
    assert ask(b, z, "web", v=view(1, fra=regions_load(10.0), iad=regions_load(10.5))).sites == ("fra",)
    # fra moves by exactly 10 % of the held 10: still within the band (more than 10 % moves it)
    assert ask(b, z, "web", v=view(2, fra=regions_load(11.0), iad=regions_load(10.5))).sites == ("fra",)
    assert ask(b, z, "web", v=view(3, fra=regions_load(11.01), iad=regions_load(10.5))).sites == ("iad",)


def regions_load(x):
    return SiteStatus(regions={"r": RegionResult("up", 0, load=x)})


@pytest.mark.parametrize("policy, status", [("least_load", regions_load), ("fastest", lambda x: rtts(r=x))])
def test_sync_names_the_sites_that_left_or_everything_when_metrics_moved(policy, status):
    """What the answer cache drops after a new view: only answers holding a site that left, unless a
    metric the policy reads moved beyond its band (then every answer of the pool)."""
    def down(x):
        return SiteStatus(regions=status(x).regions, override="down")
    b = bal()
    z = zone(pool(policy))
    key = ("example.com", "web")
    ask(b, z, "web", v=view(1, fra=status(10.0), iad=status(20.0), sin=status(30.0)))
    assert b.sync(view(2, fra=status(10.0), iad=status(20.0), sin=status(30.0))) == []
    assert b.sync(view(3, fra=status(10.0), iad=status(20.0), sin=down(30.0))) == [(key, ("sin",))]
    assert b.sync(view(4, fra=status(10.0), iad=status(20.0), sin=down(30.0))) == []
    assert b.sync(view(5, fra=status(50.0), iad=status(20.0), sin=down(30.0))) == [(key, None)]
    assert b.sync(view(6, fra=status(50.0), iad=status(20.0), sin=status(30.0))) == [(key, None)]  # came back
    # a site without IPv6 (iad) may have been the last one up for AAAA: its leaving changes anything
    assert b.sync(view(7, fra=status(50.0), iad=down(20.0), sin=status(30.0))) == [(key, None)]


def test_geo_decisions_of_neighbouring_cidr_rules_stay_apart():
    """Clients of two adjacent /16 rules share the GeoIP /8: each gets its own rule's sites, cached or not."""
    b = bal()
    z = zone(pool("geo", geo=(GeoRule("cidr", "10.0.0.0/16", ("fra",)), GeoRule("cidr", "10.1.0.0/16", ("sin",)),
                              GeoRule("default", "default", ("iad",)))))
    for _ in range(2):
        assert ask(b, z, "web", "10.0.2.3", sp=32).sites == ("fra",)
        assert ask(b, z, "web", "10.1.2.3", sp=32).sites == ("sin",)
        assert ask(b, z, "web", "10.2.2.3", sp=32).sites == ("iad",)
        assert ask(b, z, "web", "::ffff:10.1.2.3", rtype="AAAA", sp=128).scope_prefix == 96 + 16


def test_sync_looks_at_every_prepared_pool():
    b = bal()
    z = zone(pool("least_load", name="a", sites=("fra", "iad")), pool("least_load", name="b", sites=("sin", "fra")))
    loads = {"fra": regions_load(1.0), "iad": regions_load(2.0), "sin": regions_load(3.0)}
    ask(b, z, "a", v=view(1, **loads))
    ask(b, z, "b", v=view(1, **loads))
    # sin leaves: pool a (prepared first) does not have it, pool b does
    gone = SiteStatus(regions=loads["sin"].regions, override="down")
    assert b.sync(view(2, fra=loads["fra"], iad=loads["iad"], sin=gone)) == [(("example.com", "b"), ("sin",))]


def test_a_v4_mapped_client_of_a_map_with_ipv6_rules_gets_an_ipv6_scope():
    """No IPv4 rule and no location tell v4-mapped clients apart: scope 0, unless the map has IPv6
    rules, which the whole ::ffff:0:0/96 then lies outside of (scope 96)."""
    b = bal(geo=None)
    with_v6 = zone(pool("geo", geo=(GeoRule("cidr", "2001:db8::/32", ("fra",)), GeoRule("default", "default", ("iad",)))))
    assert ask(b, with_v6, "web", "::ffff:10.1.2.3", sp=128).scope_prefix == 96
    without = zone(pool("geo", geo=(GeoRule("country", "DE", ("fra",)), GeoRule("default", "default", ("iad",)))))
    assert ask(bal(geo=None), without, "web", "::ffff:10.1.2.3", sp=128).scope_prefix == 0
