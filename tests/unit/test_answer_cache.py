"""The answer cache: every cached reply equals the full path's reply, and only changes drop entries.

The equivalence tests run a generated corpus (names, letter case, types, EDNS sizes and DO, ECS
v4/v6 with every prefix length, no ECS, several packet sources, CNAME chains, wildcards,
referrals, NXDOMAIN, truncation) through ``QueryHandler.udp`` twice (computed, then from the
cache, with another query ID) and compares the second reply byte for byte with the full path
(``QueryHandler.handle``, which never reads the cache) for the same packet. With DNS Cookies on,
a second corpus adds COOKIE options of every kind (client cookie alone, valid server cookies young
and old, expired, from the future, made for another address, garbage, malformed).
"""

from __future__ import annotations

import random
from pathlib import Path
from types import MappingProxyType

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import pytest

from gslb.answercache import ENTRY_OVERHEAD, MAX_KEY, AnswerCache
from gslb.balancer import Balancer
from gslb.config import Acl
from gslb.cookies import CACHE_PERIOD, LIFETIME, REUSE, Cookies, address_bytes, server_cookie
from gslb.geo import GeoLocator
from gslb.handler import LivePools, QueryHandler, client_ip
from gslb.model import RegionResult, SiteStatus, StateView, ZoneSet
from gslb.stats import QueryStats
from gslb.zones import load_zone_file

ROOT = Path(__file__).resolve().parents[2]

SECOND = """
zone: second.test
ns: [ns1.second.test]
records:
  ns1: {A: 192.0.2.1}
  big:
    TXT: ["%s", "%s", "%s", "%s", "%s"]
  many:
    A: [%s]
  hop: {CNAME: www.gslb.example.com.}
  chain1: {CNAME: chain2}
  chain2: {CNAME: chain3}
  chain3: {CNAME: www}
  www: {pool: near}
  two: {pool: two}
  map: {pool: map}
  mx: {MX: ["10 api.gslb.example.com."]}
sites:
  a: {location: [50.0, 8.0], addresses: [192.0.2.100, "2001:db8::100"]}
  b: {location: [1.0, 103.0], addresses: [192.0.2.101]}
  c: {location: [40.0, -75.0], addresses: [192.0.2.102, "2001:db8::102"], weight: 0}
  d: {location: [-33.0, 151.0], addresses: [192.0.2.103, "2001:db8::103"], weight: 2}
pools:
  near: {policy: closest, sites: [a, b], ttl: 20}
  ll: {policy: least_load, sites: [a, b]}
  two: {policy: hash, sites: [a, d, c, b], answers: 2}
  map:
    policy: geo
    sites: [a, b, c, d]
    geo: {"81.2.69.0/24": [d, a], EU: [a, c], AS: [b, d], default: [c, d]}
""" % (tuple(c * 200 for c in "vwxyz") + (", ".join(f"198.18.{i // 250}.{i % 250 + 1}" for i in range(80)),))

NAMES = [
    "gslb.example.com.", "api.gslb.example.com.", "www.gslb.example.com.", "docs.gslb.example.com.",
    "x.cdn.gslb.example.com.", "a.b.cdn.gslb.example.com.", "eu.gslb.example.com.", "db.gslb.example.com.",
    "login.gslb.example.com.", "_sip._udp.gslb.example.com.", "sub.gslb.example.com.",
    "deep.sub.gslb.example.com.", "ns.sub.gslb.example.com.", "nope.gslb.example.com.", "ns1.gslb.example.com.",
    "second.test.", "big.second.test.", "many.second.test.", "hop.second.test.", "chain1.second.test.",
    "www.second.test.", "mx.second.test.", "nothere.second.test.", "example.net.",
    "two.second.test.", "map.second.test.",
]
TYPES = ["A", "AAAA", "MX", "TXT", "SRV", "NS", "SOA", "CAA", "ANY", "DS", "CNAME", "TYPE65000"]
HOSTS = ["127.0.0.1", "81.2.69.160", "203.0.113.9", "198.51.100.7", "2001:db8::1", "::ffff:81.2.69.160"]


def located_addresses(rng: random.Random, family: int) -> str:
    if family == 4:
        base = rng.choice(["81.2.69", "192.0.2", "198.51.100", "203.0.113", "5.9.1", "10.1.2"])
        return f"{base}.{rng.randrange(256)}"
    return f"2001:db8:{rng.randrange(0x10000):x}::{rng.randrange(0x10000):x}"


def masked(address: str, prefix: int, family: int) -> str:
    import ipaddress

    net = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return str(net.network_address)


def corpus(seed: int = 7, count: int = 1500) -> list[bytes]:
    """Query packets: names in random letter case, types, EDNS/DO/sizes, ECS of every prefix length."""
    rng = random.Random(seed)
    out: list[bytes] = []
    ecs_cases = [(4, p) for p in range(33)] + [(6, p) for p in range(129)]
    for i in range(count):
        name = rng.choice(NAMES)
        name = "".join(c.upper() if rng.random() < 0.3 else c for c in name)
        rdtype = rng.choice(TYPES)
        edns = rng.random() < 0.8
        options = []
        if edns and (i < len(ecs_cases) or rng.random() < 0.5):
            family, prefix = ecs_cases[i] if i < len(ecs_cases) else rng.choice(ecs_cases)
            address = masked(located_addresses(rng, family), prefix, family)
            options.append(dns.edns.ECSOption(address, prefix))
        q = dns.message.make_query(name, rdtype, use_edns=0 if edns else None,
                                   payload=rng.choice([512, 600, 1232, 4096]) if edns else 512,
                                   options=options or None, want_dnssec=edns and rng.random() < 0.3)
        q.id = rng.randrange(65536)
        if rng.random() < 0.2:
            q.flags &= ~dns.flags.RD
        out.append(q.to_wire())
    return out


class Env:
    """A handler over the example zone and a second zone, with a GeoIP database and a view."""

    def __init__(self, tmp: Path, cookies: Cookies | None = None) -> None:
        (tmp / "second.yaml").write_text(SECOND)
        zones = [load_zone_file(str(ROOT / "zones" / "example.yaml")), load_zone_file(str(tmp / "second.yaml"))]
        self.zones = ZoneSet({z.origin: z for z in zones})
        self.geo = GeoLocator.open(str(ROOT / "data" / "sample-city.mmdb"))
        self.view = StateView()
        self.balancer = Balancer(self.geo, {}, random.Random(1))
        self.pools = LivePools(self.balancer, lambda: self.view)
        self.pools.ready = True
        self.stats = QueryStats()
        self.cache = AnswerCache()
        self.handler = QueryHandler(lambda: self.zones, self.pools, self.stats, Acl(), self.cache, cookies)
        self.pools.on_change = self.handler.pools_changed

    def set_view(self, sites: dict) -> None:
        """Publish a new view (as the table's listener does)."""
        self.view = StateView(self.view.version + 1, MappingProxyType(sites))
        self.pools.sync(self.view)

    def close(self) -> None:
        self.geo.close()


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


def with_id(packet: bytes, ident: int) -> bytes:
    return ident.to_bytes(2, "big") + packet[2:]


def check_corpus(env: Env, packets: list[bytes], hosts=HOSTS) -> int:
    """Each packet from each host: computed, then cached; the cached reply equals the full path's."""
    rng = random.Random(3)
    compared = 0
    for packet in packets:
        host = rng.choice(hosts)
        first = env.handler.udp(packet, host)
        again = with_id(packet, rng.randrange(65536))
        cached = env.handler.udp(again, host)
        full = env.handler.handle(again, host, False)
        assert cached == full, (dns.message.from_wire(packet), host)
        if first is not None:
            assert first[2:] == full[2:]
            compared += 1
        # the same bytes from another source: from the cache only where the source does not matter
        other = rng.choice(hosts)
        assert env.handler.udp(again, other) == env.handler.handle(again, other, False), (
            dns.message.from_wire(packet), host, other)
    return compared


def test_cached_replies_equal_the_full_path_over_a_generated_corpus(env):
    packets = corpus()
    assert check_corpus(env, packets) > 1000
    assert env.stats.fold() is None and env.stats.cache_hits > 1000  # the cache answered most of them
    # truncation was exercised: some replies have TC set (the big TXT and the 80 addresses)
    replies = [env.handler.handle(p, "127.0.0.1", False) for p in packets]
    assert any(r is not None and r[2] & 0x02 for r in replies)


def test_answers_that_depend_on_the_source_are_cached_per_source(env):
    q = dns.message.make_query("www.gslb.example.com.", "A").to_wire()
    london = env.handler.udp(q, "81.2.69.160")
    singapore = env.handler.udp(q, "203.0.113.9")
    assert london[2:] != singapore[2:]
    for _ in range(3):
        assert env.handler.udp(q, "81.2.69.160") == env.handler.handle(q, "81.2.69.160", False) == london
        assert env.handler.udp(q, "203.0.113.9") == singapore
    env.stats.fold()
    assert env.stats.cache_hits == 6


def test_random_policies_draw_per_query_and_are_never_cached(env):
    q = dns.message.make_query("shop.gslb.example.com.", "A").to_wire()
    seen = {env.handler.udp(q, "127.0.0.1")[2:] for _ in range(200)}
    env.stats.fold()
    assert env.stats.cache_hits == 0
    assert len(seen) > 1  # weighted: the order of the two answers varies


def up(t: float = 1000.0, **kw) -> SiteStatus:
    return SiteStatus(MappingProxyType({"local": RegionResult("up", t, **kw)}))


def down(t: float = 1000.0) -> SiteStatus:
    return SiteStatus(MappingProxyType({"local": RegionResult("down", t)}))


def test_a_verdict_change_drops_exactly_the_pools_that_list_the_site(env):
    london = dns.message.make_query("www.gslb.example.com.", "A").to_wire()  # closest: fra
    api = dns.message.make_query("api.gslb.example.com.", "A").to_wire()  # static
    second = dns.message.make_query("www.second.test.", "A").to_wire()  # another zone's pool
    before = env.handler.udp(london, "81.2.69.160")
    env.handler.udp(api, "81.2.69.160")
    env.handler.udp(second, "81.2.69.160")
    env.set_view({("gslb.example.com", "fra"): down()})
    after = env.handler.udp(london, "81.2.69.160")
    assert before[2:] != after[2:]  # fra is down: London now gets the next closest site
    assert after == env.handler.handle(london, "81.2.69.160", False)
    env.stats.fold()
    hits = env.stats.cache_hits
    env.handler.udp(api, "81.2.69.160")
    env.handler.udp(second, "81.2.69.160")
    env.stats.fold()
    assert env.stats.cache_hits == hits + 2  # the static name and the other zone's pool stayed cached


def test_probe_results_that_change_no_verdict_drop_nothing(env):
    q = dns.message.make_query("www.gslb.example.com.", "A", use_edns=0,
                               options=[dns.edns.ECSOption("81.2.69.0", 24)]).to_wire()
    env.set_view({("gslb.example.com", s): up(999.0) for s in ("fra", "iad", "sin", "syd", "gru")})
    env.handler.udp(q, "127.0.0.1")
    epoch = env.cache.epoch
    for t in range(50):  # fresh results every "second", same verdicts, RTT and load moving
        env.set_view({("gslb.example.com", s): up(1000.0 + t, rtt_ms=10 + t % 3, load=t)
                      for s in ("fra", "iad", "sin", "syd", "gru")})
        env.handler.udp(q, "127.0.0.1")
    assert env.cache.epoch == epoch
    env.stats.fold()
    assert env.stats.cache_hits == 50


def test_least_load_reranks_only_beyond_the_band(env):
    q = dns.message.make_query("x.second.test.", "A").to_wire()
    zone = env.zones.by_key("second.test")
    pool = zone.pools["ll"]

    def ask():
        return env.balancer.answer(zone, pool, "A", "127.0.0.1", None, env.view).sites

    env.set_view({("second.test", "a"): up(load=10.0), ("second.test", "b"): up(load=10.5)})
    assert ask() == ("a",)
    # b drops to 9.8, a rises to 10.4: both within 10 % of what is held: no re-rank
    env.set_view({("second.test", "a"): up(load=10.4), ("second.test", "b"): up(load=9.8)})
    assert ask() == ("a",)
    # b drops beyond the band: re-ranked
    env.set_view({("second.test", "a"): up(load=10.4), ("second.test", "b"): up(load=8.0)})
    assert ask() == ("b",)
    del q


def test_a_zone_reload_drops_that_zones_answers_only(env, tmp_path):
    api = dns.message.make_query("api.gslb.example.com.", "A").to_wire()
    other = dns.message.make_query("ns1.second.test.", "A").to_wire()
    env.handler.udp(api, "127.0.0.1")
    env.handler.udp(other, "127.0.0.1")
    (tmp_path / "second.yaml").write_text(SECOND.replace("ns1: {A: 192.0.2.1}", "ns1: {A: 192.0.2.2}"))
    old = env.zones
    new_second = load_zone_file(str(tmp_path / "second.yaml"))
    env.zones = ZoneSet({**old.zones, new_second.origin: new_second})
    env.handler.zones_changed(old, env.zones)
    reply = dns.message.from_wire(env.handler.udp(other, "127.0.0.1"))
    assert reply.answer[0][0].address == "192.0.2.2"
    env.stats.fold()
    hits = env.stats.cache_hits
    env.handler.udp(api, "127.0.0.1")
    env.stats.fold()
    assert env.stats.cache_hits == hits + 1


# -- the cache itself ---------------------------------------------------------------------------


def test_entries_are_current_until_a_dependency_is_invalidated():
    cache = AnswerCache()
    token = cache.token(("z", ("z", "web")))
    cache.put(b"q1", None, b"reply", token, 0)
    assert cache.get(b"q1")[0] == b"reply"
    cache.invalidate([("z", "other")])
    assert cache.get(b"q1") is not None
    cache.invalidate([("z", "web")])
    assert cache.get(b"q1") is None
    # a token taken before a clear never matches again
    token = cache.token(("z",))
    cache.clear()
    cache.put(b"q2", None, b"r", token, 0)
    assert cache.get(b"q2") is None


def test_per_client_entries_replace_a_stale_entry_under_the_bytes_alone():
    cache = AnswerCache()
    token = cache.token(("z",))
    cache.put(b"q", None, b"shared", token, 0)
    cache.invalidate(["z"])
    token = cache.token(("z",))
    cache.put(b"q", "192.0.2.1", b"mine", token, 0)
    assert cache.lookup(b"q", "192.0.2.1")[0] == b"mine"
    assert cache.lookup(b"q", "192.0.2.2") is None


def test_the_cache_stays_within_its_byte_budget_and_keeps_what_is_asked():
    cache = AnswerCache(max_bytes=100_000)
    token = cache.token(("z",))
    hot = b"hot-query"
    cache.put(hot, None, b"x" * 50, token, 0)
    for i in range(20_000):
        cache.put(b"q%d" % i, None, b"y" * 100, token, 0)
        assert cache.bytes <= 100_000
        if i % 50 == 0:
            assert cache.get(hot) is not None  # asked often: never the least recently used
    # least recently used first out, one entry at a time: the newest entries are all there
    newest = [b"q%d" % i for i in range(20_000 - 100, 20_000)]
    assert all(cache.get(k) is not None for k in newest)
    assert cache.get(b"q0") is None
    assert len(cache) * (ENTRY_OVERHEAD + 100) <= 100_000 + ENTRY_OVERHEAD + 200
    assert cache.evicted > 19_000


def test_long_queries_are_not_stored():
    cache = AnswerCache()
    cache.put(b"x" * (MAX_KEY + 1), None, b"r", cache.token(()), 0)
    assert len(cache) == 0


def test_random_names_do_not_fill_the_cache(env):
    """A flood of names that do not exist (NXDOMAIN) or are not ours (REFUSED) is answered, not stored."""
    for i in range(500):
        for name in (f"r{i}.gslb.example.com.", f"r{i}.example.net."):
            reply = env.handler.udp(dns.message.make_query(name, "A").to_wire(), "127.0.0.1")
            assert dns.message.from_wire(reply).rcode() in (dns.rcode.NXDOMAIN, dns.rcode.REFUSED)
    assert len(env.cache) == 0
    env.handler.udp(dns.message.make_query("api.gslb.example.com.", "AAAA").to_wire(), "127.0.0.1")
    assert len(env.cache) == 1  # NODATA of a name that exists is stored


def test_a_site_that_leaves_drops_only_the_answers_that_held_it(env):
    sites = ("fra", "iad", "sin", "syd", "gru")
    env.set_view({("gslb.example.com", s): up() for s in sites})
    london = dns.message.make_query("www.gslb.example.com.", "A", use_edns=0,
                                    options=[dns.edns.ECSOption("81.2.69.0", 24)]).to_wire()
    singapore = dns.message.make_query("www.gslb.example.com.", "A", use_edns=0,
                                       options=[dns.edns.ECSOption("203.0.113.0", 25)]).to_wire()
    first = {q: env.handler.udp(q, "127.0.0.1") for q in (london, singapore)}

    def hits() -> int:
        env.stats.fold()
        return env.stats.cache_hits

    before = hits()
    env.set_view({("gslb.example.com", s): (down() if s == "iad" else up()) for s in sites})
    assert env.handler.udp(london, "127.0.0.1") == first[london]
    assert env.handler.udp(singapore, "127.0.0.1") == first[singapore]
    assert hits() == before + 2  # neither answer held iad: both still from the cache
    env.set_view({("gslb.example.com", s): (down() if s in ("iad", "fra") else up()) for s in sites})
    moved = env.handler.udp(london, "127.0.0.1")
    assert moved[2:] != first[london][2:] and moved == env.handler.handle(london, "127.0.0.1", False)
    assert env.handler.udp(singapore, "127.0.0.1") == first[singapore]
    assert hits() == before + 3  # London held fra: recomputed; Singapore did not
    env.set_view({("gslb.example.com", s): up() for s in sites})  # back up: the pool's answers go
    assert env.handler.udp(singapore, "127.0.0.1") == first[singapore]
    assert env.handler.udp(london, "127.0.0.1") == first[london]
    assert hits() == before + 3


def test_cached_replies_equal_the_full_path_through_random_verdict_changes(env):
    """Sites of every pool go down, drain, come back, in random order; after each change every
    cached reply still equals the full path's."""
    rng = random.Random(5)
    packets = corpus(seed=11, count=400)
    states = {"up": up, "down": down,
              "drain": lambda: SiteStatus(MappingProxyType({"local": RegionResult("up", 1000.0)}), override="drain"),
              "unknown": SiteStatus}
    sites = [("gslb.example.com", s) for s in ("fra", "iad", "sin", "syd", "gru")] + \
        [("second.test", s) for s in ("a", "b", "c", "d")]
    current = {key: up() for key in sites}
    env.set_view(dict(current))
    for step in range(40):
        for packet in packets[step * 10 % 400:step * 10 % 400 + 40]:
            env.handler.udp(packet, rng.choice(HOSTS))  # fill the cache under this view
        key = rng.choice(sites)
        current[key] = states[rng.choice(list(states))]()
        env.set_view(dict(current))
        for packet in packets:
            host = rng.choice(HOSTS)
            assert env.handler.udp(packet, host) == env.handler.handle(packet, host, False), (
                step, key, dns.message.from_wire(packet))
    env.stats.fold()
    assert env.stats.cache_hits > 5000


# --- DNS Cookies -----------------------------------------------------------------------------

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
NOW = 1_700_000_000
COOKIE_KINDS = ["client", "young", "old", "ending", "expired", "future", "other-host", "garbage", "malformed",
                "none"]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cookie_env(tmp_path):
    clock = Clock(NOW)
    e = Env(tmp_path, Cookies(SECRET, 600, clock))
    e.clock = clock
    yield e
    e.close()


def cookie_option(rng: random.Random, kind: str, host: str) -> bytes | None:
    """The COOKIE option data of one kind, for a query from ``host``."""
    client = bytes(rng.randrange(256) for _ in range(8))
    address = address_bytes(client_ip(host))
    age = {"young": rng.randrange(0, REUSE), "old": rng.randrange(REUSE, LIFETIME - CACHE_PERIOD),
           "ending": rng.randrange(LIFETIME - CACHE_PERIOD + 1, LIFETIME + 1),
           "expired": rng.randrange(LIFETIME + 1, 10 * LIFETIME), "future": -rng.randrange(0, 600)}.get(kind)
    if kind == "none":
        return None
    if kind == "client":
        return client
    if kind == "malformed":
        return bytes(rng.choice([0, 5, 9, 15, 41]))
    if kind == "garbage":
        return client + bytes(rng.randrange(256) for _ in range(rng.choice([8, 16, 32])))
    if kind == "other-host":
        return client + server_cookie(SECRET, client, address_bytes("192.0.2.99"), NOW - 10)
    return client + server_cookie(SECRET, client, address, NOW - age)


def cookie_corpus(seed: int = 11, count: int = 900) -> list[tuple[bytes, str]]:
    """(packet, source) pairs: corpus-like questions with COOKIE options made for their source."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        host = rng.choice(HOSTS)
        name = "".join(c.upper() if rng.random() < 0.3 else c for c in rng.choice(NAMES))
        kind = COOKIE_KINDS[i % len(COOKIE_KINDS)]
        options = []
        data = cookie_option(rng, kind, host)
        if data is not None:
            options.append(dns.edns.GenericOption(10, data))
        if rng.random() < 0.3:
            family = rng.choice([4, 6])
            prefix = rng.randrange(33 if family == 4 else 129)
            options.append(dns.edns.ECSOption(masked(located_addresses(rng, family), prefix, family), prefix))
            rng.shuffle(options)
        q = dns.message.make_query(name, rng.choice(TYPES), use_edns=0, payload=rng.choice([512, 1232, 4096]),
                                   options=options or None, want_dnssec=rng.random() < 0.3)
        q.id = rng.randrange(65536)
        out.append((q.to_wire(), host))
    return out


def test_cached_cookie_replies_equal_the_full_path(cookie_env):
    env = cookie_env
    rng = random.Random(5)
    compared = 0
    for packet, host in cookie_corpus():
        first = env.handler.udp(packet, host)
        again = with_id(packet, rng.randrange(65536))
        cached = env.handler.udp(again, host)
        full = env.handler.handle(again, host, False)
        assert cached == full, (dns.message.from_wire(packet), host)
        if first is not None:
            assert first[2:] == full[2:]
            compared += 1
        other = rng.choice(HOSTS)  # the same cookie bytes from elsewhere: judged for that address
        assert env.handler.udp(again, other) == env.handler.handle(again, other, False), (
            dns.message.from_wire(packet), host, other)
    assert compared > 800
    env.stats.fold()
    assert env.stats.cache_hits > 300
    assert set(env.stats.cookies) == {"valid", "client_only", "invalid", "malformed"}


def test_a_valid_cookie_lifts_the_nocookie_size_cap(cookie_env):
    env = cookie_env
    host = "198.51.100.7"
    client = bytes(range(8))

    def ask(data: bytes | None) -> dns.message.Message:
        options = None if data is None else [dns.edns.GenericOption(10, data)]
        q = dns.message.make_query("big.second.test.", "TXT", use_edns=0, payload=1232, options=options)
        return dns.message.from_wire(env.handler.udp(q.to_wire(), host))

    assert ask(None).flags & dns.flags.TC  # about 1 kB: over max_nocookie_udp (600)
    learnt = ask(client)
    assert learnt.flags & dns.flags.TC
    cookie = learnt.options[0].to_wire()
    assert cookie[:8] == client and len(cookie) == 24
    full = ask(cookie)
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 5
    assert full.options[0].to_wire() == cookie  # young: echoed
    env.stats.fold()
    assert env.stats.cookies["valid"] == 1 and env.stats.cookies["client_only"] == 1


def test_cached_cookie_replies_are_dropped_every_cache_period(cookie_env):
    env = cookie_env
    q = dns.message.make_query("api.gslb.example.com.", "A", use_edns=0,
                               options=[dns.edns.GenericOption(10, bytes(8))]).to_wire()
    first = env.handler.udp(q, "127.0.0.1")
    env.clock.now += 100
    assert env.handler.udp(q, "127.0.0.1") == first  # from the cache: the cookie made 100 s ago
    assert env.handler.handle(q, "127.0.0.1", False) != first  # the full path stamps now
    env.handler.expire_cookies()  # what expire_cookies_every does each CACHE_PERIOD
    assert env.handler.udp(q, "127.0.0.1") == env.handler.handle(q, "127.0.0.1", False) != first
