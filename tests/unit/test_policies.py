"""The nine policies over hand-built candidates: pure, seeded, no sockets."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest

from gslb.model import GeoRule, Location, Pool, RegionResult, Site, SiteStatus
from gslb.policies import (
    POLICIES, Candidate, Context, GeoMap, client_address, client_subnet, distance_km, hash_score, nearest_region,
    site_rtt, subnet_of, subnet_text,
)
from gslb.model import POLICY_NAMES


def cand(name, index, weight=1, load=0.0, location=None, rtts=None, state="up"):
    regions = {r: RegionResult("up", 0.0, rtt_ms=v) for r, v in (rtts or {}).items()}
    status = SiteStatus(regions=regions)
    return Candidate(Site(name, location, ("192.0.2.%d" % (index + 1),), ()), index, state, status, load, weight)


def names(order):
    return [c.name for c in order]


def loc(lat, lon, country=None, continent=None, prefixlen=24):
    return Location("198.51.100.1", "198.51.100.0/24", prefixlen, (lat, lon), country, continent)


def test_registry_has_the_nine_spec_policies():
    # model.POLICY_NAMES is the zone loader's list: it must name exactly the registry's policies
    assert sorted(POLICIES) == sorted(POLICY_NAMES) and len(POLICY_NAMES) == len(set(POLICY_NAMES)) == 9
    for name, policy in POLICIES.items():
        assert policy.name == name


def test_failover_is_sites_order():
    # candidates come in sites order (the balancer's contract; up sites only, so indexes may skip)
    cands = [cand("a", 0), cand("c", 2), cand("d", 3)]
    order, reasons = POLICIES["failover"].rank(cands, Context(), random.Random(1), explain=True)
    assert names(order) == ["a", "c", "d"]
    assert reasons["a"] == "position 1 in sites" and reasons["c"] == "position 3 in sites"


FRA, IAD, SIN, GRU, SYD = (50.11, 8.68), (38.95, -77.45), (1.35, 103.82), (-23.55, -46.63), (-33.87, 151.21)


@pytest.mark.parametrize("client,first", [
    ((48.85, 2.35), "fra"),      # Paris
    ((40.71, -74.0), "iad"),     # New York
    ((35.68, 139.69), "sin"),    # Tokyo: Singapore is nearer than Sydney
    ((-34.6, -58.38), "gru"),    # Buenos Aires
    ((-37.81, 144.96), "syd"),   # Melbourne
    ((-1.29, 36.82), "fra"),     # Nairobi
])
def test_closest_orders_by_distance_for_each_continent(client, first):
    cands = [cand("fra", 0, location=FRA), cand("iad", 1, location=IAD), cand("sin", 2, location=SIN),
             cand("gru", 3, location=GRU), cand("syd", 4, location=SYD)]
    order, _ = POLICIES["closest"].rank(cands, Context(location=loc(*client)), random.Random(1))
    assert order[0].name == first
    dists = [distance_km(client, c.site.location) for c in order]
    assert dists == sorted(dists)


def test_closest_unknown_location_is_sites_order_and_unlocated_sites_last():
    cands = [cand("x", 0), cand("fra", 1, location=FRA), cand("sin", 2, location=SIN)]
    order, _ = POLICIES["closest"].rank(cands, Context(location=None), random.Random(1))
    assert names(order) == ["x", "fra", "sin"]
    unknown = Location("10.0.0.1", "10.0.0.0/8", 8)
    order, reasons = POLICIES["closest"].rank(cands, Context(location=unknown), random.Random(1), True)
    assert names(order) == ["x", "fra", "sin"]
    assert "unknown" in reasons["x"]
    order, reasons = POLICIES["closest"].rank(cands, Context(location=loc(48.85, 2.35)), random.Random(1), True)
    assert names(order) == ["fra", "sin", "x"]
    assert reasons["x"] == "site has no location"


def test_distance_is_great_circle():
    assert distance_km((0, 0), (0, 0)) == 0
    assert distance_km((0, 0), (0, 180)) == pytest.approx(20015, rel=0.01)
    assert distance_km(FRA, IAD) == pytest.approx(6530, rel=0.02)


def _chi_square(counts: Counter, expected: dict) -> float:
    return sum((counts[k] - e) ** 2 / e for k, e in expected.items())


def test_weighted_first_pick_is_in_proportion_to_weight():
    rng = random.Random(42)
    cands = [cand("a", 0, weight=1), cand("b", 1, weight=2), cand("c", 2, weight=7)]
    n = 30_000
    counts = Counter(POLICIES["weighted"].rank(cands, Context(), rng)[0][0].name for _ in range(n))
    expected = {"a": n * 0.1, "b": n * 0.2, "c": n * 0.7}
    # 2 degrees of freedom: 13.8 is the 0.999 quantile
    assert _chi_square(counts, expected) < 13.8, counts


def test_weighted_order_is_a_permutation_and_second_place_follows_weights():
    rng = random.Random(7)
    cands = [cand("a", 0, weight=1), cand("b", 1, weight=1), cand("c", 2, weight=2)]
    second = Counter()
    n = 20_000
    for _ in range(n):
        order = POLICIES["weighted"].rank(cands, Context(), rng)[0]
        assert sorted(names(order)) == ["a", "b", "c"]
        if order[0].name == "c":
            second[order[1].name] += 1
    # given c first, a and b are equally likely second
    total = second["a"] + second["b"]
    assert abs(second["a"] - second["b"]) < 4 * (total ** 0.5)


def test_round_robin_cycles_over_given_sites():
    cands = [cand("a", 0), cand("c", 2), cand("d", 3)]
    firsts = [POLICIES["round_robin"].rank(cands, Context(turn=t), random.Random(0))[0][0].name
              for t in range(7)]
    assert firsts == ["a", "c", "d", "a", "c", "d", "a"]
    order = POLICIES["round_robin"].rank(cands, Context(turn=1), random.Random(0))[0]
    assert names(order) == ["c", "d", "a"]


def test_hash_score_is_stable_and_uses_blake2b_not_python_hash():
    assert hash_score(b"\xc0\x00\x02", "fra", 1) == hash_score(b"\xc0\x00\x02", "fra", 1)
    # a fixed value: the same in every process and release (PYTHONHASHSEED does not matter)
    assert hash_score(b"\xc0\x00\x02", "fra", 1) == pytest.approx(0.570590359828264, rel=1e-12)
    assert hash_score(b"\xc0\x00\x02", "fra", 2) == pytest.approx(2 * hash_score(b"\xc0\x00\x02", "fra", 1))


def _hash_first(cands, subnet: bytes) -> str:
    return POLICIES["hash"].rank(cands, Context(subnet=subnet), random.Random(0))[0][0].name


def test_hash_only_clients_of_a_leaving_site_move():
    five = [cand(n, i) for i, n in enumerate(["a", "b", "c", "d", "e"])]
    subnets = [bytes((10, i >> 8, i & 255)) for i in range(20_000)]
    before = {s: _hash_first(five, s) for s in subnets}
    counts = Counter(before.values())
    for name in "abcde":  # even spread: each near 4000
        assert 3600 < counts[name] < 4400, counts
    four = [c for c in five if c.name != "c"]
    after = {s: _hash_first(four, s) for s in subnets}
    moved = [s for s in subnets if before[s] != after[s]]
    assert moved and all(before[s] == "c" for s in moved)
    assert len(moved) == counts["c"]
    # and the moved clients spread over the other four
    spread = Counter(after[s] for s in moved)
    assert set(spread) == {"a", "b", "d", "e"}
    assert min(spread.values()) > len(moved) / 4 * 0.8


def test_hash_is_weighted():
    cands = [cand("a", 0, weight=1), cand("b", 1, weight=3)]
    counts = Counter(_hash_first(cands, bytes((172, i >> 8, i & 255))) for i in range(20_000))
    assert counts["b"] / 20_000 == pytest.approx(0.75, abs=0.02)


def test_client_subnet_v4_and_v6():
    assert client_subnet("192.0.2.77") == (bytes((192, 0, 2)), "192.0.2.0/24", 24)
    packed, text, plen = client_subnet("2001:db8:1:2::1")
    assert text == "2001:db8:1::/48" and plen == 48 and len(packed) == 6
    assert client_subnet("2001:db8:1:ffff::9")[0] == packed


def test_v4_mapped_and_zoned_clients_for_hash_and_cidr_rules():
    # a v4-mapped client hashes as its IPv4 /24; its length is in the query's family (96 + 24)
    assert client_subnet("::ffff:192.0.2.77") == (bytes((192, 0, 2)), "::ffff:192.0.2.0/120", 120)
    # the subnet is the hash policy's cache key: distinct for a v4-mapped client (scopes differ)
    assert subnet_of(*client_address("::ffff:192.0.2.77")) != subnet_of(*client_address("192.0.2.77"))
    assert subnet_of(*client_address("::ffff:192.0.2.77")) == (bytes((192, 0, 2)), 120)
    assert subnet_of(*client_address("2001:db8:1:2::1")) == (bytes.fromhex("20010db80001"), 48)
    assert subnet_text(bytes((192, 0, 2)), 24) == "192.0.2.0/24"
    assert client_address("::ffff:192.0.2.1") == (0xC0000201, 4, 96)
    assert client_address("192.0.2.1") == (0xC0000201, 4, 0)
    # a zone suffix is stripped where input enters (DNS transport, explain: their own tests)
    assert client_address("fe80::1") == (0xFE80 << 112 | 1, 6, 0)


def test_least_load_is_load_per_weight_with_ties_in_sites_order():
    cands = [cand("a", 0, weight=1, load=5), cand("b", 1, weight=10, load=20), cand("c", 2, weight=1, load=2),
             cand("d", 3, weight=1, load=2)]
    order, reasons = POLICIES["least_load"].rank(cands, Context(), random.Random(0), True)
    assert names(order) == ["b", "c", "d", "a"]
    assert reasons["b"] == "load 20 / weight 10 = 2"


def test_p2c_prefers_the_less_loaded_and_never_picks_the_most_loaded_of_three():
    rng = random.Random(3)
    cands = [cand("a", 0, load=10), cand("b", 1, load=50), cand("c", 2, load=90)]
    n = 30_000
    counts = Counter()
    for _ in range(n):
        order = POLICIES["p2c"].rank(cands, Context(), rng)[0]
        counts[order[0].name] += 1
        assert names(order[1:]) == sorted(names(order[1:]), key=lambda x: {"a": 10, "b": 50, "c": 90}[x])
    # with equal weights: a wins when drawn (2/3), b wins only against c (1/3), c never
    assert counts["c"] == 0
    assert counts["a"] / n == pytest.approx(2 / 3, abs=0.015)
    assert counts["b"] / n == pytest.approx(1 / 3, abs=0.015)


def test_p2c_equal_loads_spread_by_weight():
    rng = random.Random(5)
    cands = [cand("a", 0, weight=1), cand("b", 1, weight=3)]
    counts = Counter(POLICIES["p2c"].rank(cands, Context(), rng)[0][0].name for _ in range(20_000))
    assert counts["b"] / 20_000 == pytest.approx(0.75, abs=0.015)


def test_p2c_explains_the_duel():
    cands = [cand("a", 0, load=1), cand("b", 1, load=5)]
    order, reasons = POLICIES["p2c"].rank(cands, Context(), random.Random(1), True)
    assert order[0].name == "a"
    assert "wins" in reasons["a"] and "loses" in reasons["b"]


REGIONS = (("eu-west", (53.35, -6.26)), ("us-east", (38.95, -77.45)), ("ap-south", (1.35, 103.82)))


def test_nearest_region_and_site_rtt():
    assert nearest_region((48.85, 2.35), REGIONS) == "eu-west"
    assert nearest_region((40.7, -74.0), REGIONS) == "us-east"
    assert nearest_region(None, REGIONS) is None
    assert nearest_region((0, 0), ()) is None
    status = SiteStatus(regions={"eu-west": RegionResult("up", 0, rtt_ms=10), "us-east": RegionResult("up", 0, rtt_ms=30)})
    assert site_rtt(status, "eu-west") == 10
    assert site_rtt(status, None) == 20
    assert site_rtt(status, "ap-south") == 20  # no result from there: the mean
    assert site_rtt(SiteStatus(), None) is None


def test_fastest_uses_the_region_nearest_the_client():
    rtts = {
        "fra": {"eu-west": 20, "us-east": 90, "ap-south": 160},
        "iad": {"eu-west": 80, "us-east": 5, "ap-south": 200},
        "sin": {"eu-west": 170, "us-east": 210, "ap-south": 3},
    }
    cands = [cand(n, i, rtts=rtts[n]) for i, n in enumerate(rtts)] + [cand("new", 3)]
    for client, first in (((48.85, 2.35), "fra"), ((40.7, -74.0), "iad"), ((13.75, 100.5), "sin")):
        ctx = Context(location=loc(*client), region_locations=REGIONS)
        order, reasons = POLICIES["fastest"].rank(cands, ctx, random.Random(0), True)
        assert order[0].name == first
        assert order[-1].name == "new" and reasons["new"] == "no rtt measured"
    # no client location: the mean over all regions (fra 90, iad 95, sin 127.7)
    order, reasons = POLICIES["fastest"].rank(cands, Context(region_locations=REGIONS), random.Random(0), True)
    assert names(order) == ["fra", "iad", "sin", "new"]
    assert "mean over regions" in reasons["fra"]


def _geo_pool(*rules, sites=("fra", "iad", "sin")):
    return Pool("web", "geo", tuple(sites), geo=tuple(GeoRule(*r) for r in rules))


def test_geo_match_is_most_specific_first():
    gm = GeoMap.from_pool(_geo_pool(("cidr", "10.0.0.0/8", ("iad",)), ("cidr", "10.1.0.0/16", ("sin",)),
                                     ("country", "DE", ("fra",)), ("continent", "EU", ("fra", "iad")),
                                     ("default", "default", ("iad", "fra", "sin"))))
    de = Location("10.1.2.3", "10.1.0.0/16", 16, (50, 8), "DE", "EU")
    tiers = gm.match(de, int(ipaddress.ip_address("10.1.2.3")), 4).tiers
    assert [t[0] for t in tiers] == ["10.1.0.0/16", "10.0.0.0/8", "DE", "EU", "default"]
    fr = Location("192.0.2.1", "192.0.2.0/24", 24, (48, 2), "FR", "EU")
    tiers = gm.match(fr, int(ipaddress.ip_address("192.0.2.1")), 4).tiers
    assert tiers == (("EU", ("fra", "iad")), ("default", ("iad", "fra", "sin")))
    assert gm.match(None, 1, 4).tiers == (("default", ("iad", "fra", "sin")),)


def test_geo_without_default_falls_back_to_pool_sites():
    gm = GeoMap.from_pool(_geo_pool(("country", "DE", ("fra",))))
    assert gm.match(None, 1, 4).tiers == (("default", ("fra", "iad", "sin")),)


def test_geo_scope_never_wider_than_the_rules_allow():
    gm = GeoMap.from_pool(_geo_pool(("cidr", "10.1.0.0/16", ("sin",)), ("cidr", "10.1.128.0/24", ("iad",)),
                                     ("cidr", "2001:db8::/32", ("fra",))))
    a = lambda s: int(ipaddress.ip_address(s))  # noqa: E731
    assert gm.scope(a("10.1.2.3"), 4, 8) == 17       # inside /16, excluding the nested /24
    assert gm.scope(a("10.1.128.9"), 4, 8) == 24     # inside the nested /24
    assert gm.scope(a("10.2.0.1"), 4, 8) == 15       # outside: just enough to exclude 10.1/16
    assert gm.scope(a("10.1.2.3"), 4, 20) == 20      # the GeoIP network is already narrower
    assert gm.scope(a("192.0.2.1"), 4, 24) == 24     # no rule near
    assert gm.scope(a("2001:db8::1"), 6, 29) == 32
    # brute force: every address of 10.0.0.0/8 sampled matches the same rules as its scope network
    rng = random.Random(1)
    for _ in range(500):
        addr = a("10.0.0.0") + rng.randrange(1 << 24)
        s = gm.scope(addr, 4, 8)
        mine = gm.match(None, addr, 4).tiers
        for _ in range(5):
            other = (addr >> (32 - s) << (32 - s)) + rng.randrange(1 << (32 - s))
            assert gm.match(None, other, 4).tiers == mine


# -- written against the survivors of mutation testing (tools/mutation policies)


def test_weighted_two_sites_follow_their_weights():
    """Two candidates are drawn like three: by weight, not in sites order."""
    rng = random.Random(11)
    cands = [cand("a", 0, weight=1), cand("b", 1, weight=3)]
    n = 20_000
    counts = Counter(POLICIES["weighted"].rank(cands, Context(), rng)[0][0].name for _ in range(n))
    assert counts["b"] / n == pytest.approx(0.75, abs=0.015)


def test_p2c_orders_every_candidate_once_the_winner_first():
    cands = [cand("a", 0, load=40), cand("b", 1, load=10), cand("c", 2, load=30), cand("d", 3, load=20)]
    rng = random.Random(2)
    for _ in range(200):
        order = POLICIES["p2c"].rank(cands, Context(), rng)[0]
        assert sorted(names(order)) == ["a", "b", "c", "d"]
        rest = names(order[1:])
        assert rest == sorted(rest, key=lambda n: {"a": 40, "b": 10, "c": 30, "d": 20}[n])


def test_fastest_a_zero_round_trip_time_is_the_fastest():
    cands = [cand("slow", 0, rtts={"r": 0.5}), cand("zero", 1, rtts={"r": 0.0}), cand("none", 2)]
    order, _ = POLICIES["fastest"].rank(cands, Context(), random.Random(0))
    assert names(order) == ["zero", "slow", "none"]


def test_every_policy_gives_each_candidate_its_reason():
    """The reasons of the decision trace (``gslb explain``, GET /api/v1/explain), word for word."""
    rng = random.Random(1)
    three = [cand("a", 0, weight=1), cand("b", 1, weight=3), cand("c", 2, weight=4)]
    order, reasons = POLICIES["weighted"].rank(three, Context(), rng, True)
    assert reasons == {c.name: f"weight {c.weight} of 8 ({100 * c.weight / 8:.1f}%): drawn {i + 1}"
                       for i, c in enumerate(order)}
    order, reasons = POLICIES["round_robin"].rank(three, Context(turn=4), rng, True)
    assert names(order) == ["b", "c", "a"]
    assert reasons == {"b": "turn 4: 1 of 3 in rotation", "c": "turn 4: 2 of 3 in rotation",
                       "a": "turn 4: 3 of 3 in rotation"}
    order, reasons = POLICIES["geo"].rank(three[::-1], Context(), rng, True)
    assert reasons == {"c": "position 1 in the matched list", "b": "position 2 in the matched list",
                       "a": "position 3 in the matched list"}
    order, reasons = POLICIES["p2c"].rank(three[:1], Context(), rng, True)
    assert names(order) == ["a"] and reasons == {"a": "only candidate"}
    timed = [cand("x", 0, rtts={"eu": 12.34}), cand("y", 1)]
    _, reasons = POLICIES["fastest"].rank(timed, Context(region_locations=(("eu", (50.0, 8.0)),),
                                                         location=loc(48.85, 2.35)), rng, True)
    assert reasons == {"x": "rtt 12.3 ms from eu", "y": "no rtt measured"}
    _, reasons = POLICIES["fastest"].rank(timed, Context(), rng, True)
    assert reasons == {"x": "rtt 12.3 ms mean over regions", "y": "no rtt measured"}
    for name, policy in POLICIES.items():  # without explain: no reasons at all
        assert policy.rank(three, Context(turn=1, location=loc(48.85, 2.35)), rng)[1] is None, name


def test_geo_map_knows_the_families_of_its_cidr_rules():
    v6 = GeoMap.from_pool(_geo_pool(("cidr", "2001:db8::/32", ("fra",)), ("country", "DE", ("iad",))))
    assert v6.has_rules(6) and not v6.has_rules(4)
    v4 = GeoMap.from_pool(_geo_pool(("cidr", "10.0.0.0/8", ("fra",))))
    assert v4.has_rules(4) and not v4.has_rules(6)
    assert not GeoMap.from_pool(_geo_pool(("country", "DE", ("iad",)))).has_rules(4)


def test_geo_cidr_rules_match_their_network_only():
    gm = GeoMap.from_pool(_geo_pool(("cidr", "10.1.0.0/16", ("sin",)), ("cidr", "2001:db8::/32", ("fra",))))
    a = lambda s: int(ipaddress.ip_address(s))  # noqa: E731
    assert [t[0] for t in gm.match(None, a("10.1.255.255"), 4).tiers] == ["10.1.0.0/16", "default"]
    assert [t[0] for t in gm.match(None, a("10.0.255.255"), 4).tiers] == ["default"]  # differs in bit 16
    assert [t[0] for t in gm.match(None, a("2001:db8:ffff::1"), 6).tiers] == ["2001:db8::/32", "default"]
    assert [t[0] for t in gm.match(None, a("2001:db9::1"), 6).tiers] == ["default"]  # differs in bit 32


def test_geo_scope_looks_past_a_longer_rule_elsewhere():
    """Rules are tried longest first: one far from the client must not end the search."""
    gm = GeoMap.from_pool(_geo_pool(("cidr", "192.168.1.0/24", ("iad",)), ("cidr", "10.1.0.0/16", ("sin",)),
                                     ("cidr", "2001:db8::/32", ("fra",))))
    a = lambda s: int(ipaddress.ip_address(s))  # noqa: E731
    assert gm.scope(a("10.1.2.3"), 4, 8) == 16
    assert gm.scope(a("10.2.0.1"), 4, 8) == 15
    assert gm.scope(a("2001:db9::1"), 6, 16) == 32     # just enough to exclude 2001:db8::/32
    assert gm.scope(a("2001:dc8::1"), 6, 16) == 26
    assert gm.scope(a("192.0.2.1"), 4, 24) == 24
