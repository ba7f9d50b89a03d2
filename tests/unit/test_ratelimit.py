"""Response rate limiting: the buckets (refill, window cap, slip, networks, exempt, memory bound),
the identities (NXDOMAIN shares the zone's bucket, errors one per network, wildcards), and the
query handler (cache hits and computed replies limited, slipped replies, TCP never limited)."""

from __future__ import annotations

import gc
import random
import tracemalloc
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from gslb.answercache import AnswerCache
from gslb.balancer import Balancer
from gslb.config import Acl, RateLimit
from gslb.geo import GeoLocator
from gslb.handler import LivePools, QueryHandler
from gslb.model import StateView, ZoneSet
from gslb.ratelimit import BUCKET_BYTES, DROP, ERROR, SEND, SLIP, RateLimiter, identity
from gslb.resolver import resolve
from gslb.stats import QueryStats
from gslb.wire import parse_query
from gslb.zones import load_zone_file


def limiter(rate: int = 5, window: int = 1, slip: int = 2, **kw) -> RateLimiter:
    return RateLimiter(RateLimit(responses_per_second=rate, window=window, slip=slip, **kw))


def run(rl: RateLimiter, times, host: str = "192.0.2.1", ident: str = "www 1") -> list[int]:
    return [rl.check(host, ident, t) for t in times]


# -- the buckets


def test_a_new_bucket_has_the_full_window_of_credit_then_refills_at_the_rate():
    rl = limiter(rate=5, window=2, slip=0)
    # 10 credits (5/s x 2 s) at once, then nothing
    assert run(rl, [100.0] * 12) == [SEND] * 10 + [DROP] * 2
    # 0.2 s later one credit, 0.1 s later still none, 0.4 s later two
    assert run(rl, [100.2, 100.2]) == [SEND, DROP]
    assert run(rl, [100.3]) == [DROP]
    assert run(rl, [100.6, 100.6, 100.6]) == [SEND, SEND, DROP]


def test_credit_is_capped_at_the_window():
    rl = limiter(rate=4, window=3, slip=0)
    assert run(rl, [0.0] * 12) == [SEND] * 12
    assert run(rl, [0.0]) == [DROP]
    # an hour of silence earns 3 s of credit, not an hour's
    assert run(rl, [3600.0] * 13) == [SEND] * 12 + [DROP]


def test_a_steady_flood_gets_exactly_the_rate():
    rl = limiter(rate=10, window=1, slip=0)
    times = [i / 1000 for i in range(10_000)]  # 1000 queries a second for 10 s
    sent = run(rl, times).count(SEND)
    assert sent == 10 + 10 * 10 - 1 or sent == 10 + 10 * 10  # the burst, then 10 a second


def test_float_rounding_never_refuses_the_last_credit_of_a_burst():
    for rate in (1, 3, 5, 7, 10, 33, 1000):
        for now in (0.0, 12345.678, 1e6 + 0.1):
            rl = limiter(rate=rate, window=1, slip=0)
            assert run(rl, [now] * (rate + 1)) == [SEND] * rate + [DROP], (rate, now)


@pytest.mark.parametrize("slip,expected", [
    (0, [DROP] * 6),
    (1, [SLIP] * 6),
    (2, [DROP, SLIP] * 3),
    (3, [DROP, DROP, SLIP] * 2),
])
def test_slip_sequence(slip, expected):
    rl = limiter(rate=1, window=1, slip=slip)
    assert run(rl, [0.0] * 7) == [SEND] + expected


def test_limited_replies_spend_no_credit():
    rl = limiter(rate=2, window=1, slip=2)
    assert run(rl, [0.0] * 50) == [SEND, SEND] + [DROP, SLIP] * 24
    assert run(rl, [0.5]) == [SEND]  # half a second later: one credit, as without the flood


def test_ipv4_clients_share_a_bucket_per_prefix():
    rl = limiter(rate=2, window=1, slip=0)
    assert run(rl, [0.0] * 2, "192.0.2.1") == [SEND, SEND]
    assert run(rl, [0.0], "192.0.2.200") == [DROP]           # same /24
    assert run(rl, [0.0], "192.0.3.1") == [SEND]             # another /24
    assert run(rl, [0.0], "::ffff:192.0.2.9") == [DROP]      # IPv4-mapped: the same /24
    rl16 = limiter(rate=1, window=1, slip=0, ipv4_prefix=16)
    assert run(rl16, [0.0], "10.1.2.3") == [SEND]
    assert run(rl16, [0.0], "10.1.200.3") == [DROP]
    assert run(rl16, [0.0], "10.2.0.1") == [SEND]
    rl32 = limiter(rate=1, window=1, slip=0, ipv4_prefix=32)
    assert run(rl32, [0.0], "10.1.2.3") == [SEND] and run(rl32, [0.0], "10.1.2.4") == [SEND]
    rl0 = limiter(rate=1, window=1, slip=0, ipv4_prefix=0)
    assert run(rl0, [0.0], "10.1.2.3") == [SEND] and run(rl0, [0.0], "203.0.113.1") == [DROP]


def test_ipv6_clients_share_a_bucket_per_prefix():
    rl = limiter(rate=1, window=1, slip=0)
    assert run(rl, [0.0], "2001:db8:0:ff00::1") == [SEND]
    assert run(rl, [0.0], "2001:db8:0:ffab:1:2:3:4") == [DROP]   # same /56
    assert run(rl, [0.0], "2001:db8:0:1ff::1") == [SEND]         # another /56
    assert run(rl, [0.0], "2001:db8:0:ff00::1%eth0") == [DROP]  # a zone index is not part of it
    rl64 = limiter(rate=1, window=1, slip=0, ipv6_prefix=64)
    assert run(rl64, [0.0], "2001:db8::1") == [SEND] and run(rl64, [0.0], "2001:db8::2") == [DROP]
    assert run(rl64, [0.0], "2001:db8:0:1::1") == [SEND]
    rl128 = limiter(rate=1, window=1, slip=0, ipv6_prefix=128)
    assert run(rl128, [0.0], "2001:db8::1") == [SEND] and run(rl128, [0.0], "2001:db8::2") == [SEND]


def test_ipv4_and_ipv6_networks_never_collide():
    rl = limiter(rate=1, window=1, slip=0, ipv4_prefix=0, ipv6_prefix=0)
    assert run(rl, [0.0], "0.0.0.1") == [SEND]
    assert run(rl, [0.0], "::1") == [SEND]
    assert rl.network("0.0.0.1") != rl.network("::1")


def test_exempt_networks_are_never_limited():
    rl = limiter(rate=1, window=1, slip=0, exempt=("192.0.2.0/28", "2001:db8:1::/48", "198.51.100.7/32"))
    assert run(rl, [0.0] * 100, "192.0.2.15") == [SEND] * 100
    assert run(rl, [0.0] * 100, "2001:db8:1:2::3") == [SEND] * 100
    assert run(rl, [0.0] * 100, "198.51.100.7") == [SEND] * 100
    assert run(rl, [0.0] * 100, "::ffff:198.51.100.7") == [SEND] * 100
    assert rl.exempt("192.0.2.3") and not rl.exempt("192.0.2.16") and not rl.exempt("198.51.100.8")
    # the same /24 outside the exempt /28 is limited as usual
    assert run(rl, [0.0] * 2, "192.0.2.16") == [SEND, DROP]
    assert len(rl) == 1  # exempt clients hold no bucket


def test_answers_have_their_own_buckets():
    rl = limiter(rate=1, window=1, slip=0)
    assert run(rl, [0.0] * 2, ident="a 1") == [SEND, DROP]
    assert run(rl, [0.0] * 2, ident="b 1") == [SEND, DROP]
    assert run(rl, [0.0] * 2, ident=ERROR) == [SEND, DROP]


def test_an_address_that_does_not_parse_is_its_own_network():
    rl = limiter(rate=1, window=1, slip=0)
    assert run(rl, [0.0] * 2, "not-an-address") == [SEND, DROP]
    assert run(rl, [0.0], "192.0.2.1") == [SEND]


def test_memory_is_bounded_and_a_busy_bucket_stays():
    rl = RateLimiter(RateLimit(responses_per_second=1, window=1, slip=0), max_buckets=100)
    assert rl.check("192.0.2.1", "hot", 0.0) == SEND
    for i in range(1000):
        now = i * 0.0001
        assert rl.check(f"10.{i // 256}.{i % 256}.1", "x", now) == SEND
        assert rl.check("192.0.2.1", "hot", now) == DROP  # in constant use: never evicted
        assert len(rl) <= 100
    assert rl.evicted == 1000 - 99
    # an evicted bucket starts over, full
    assert rl.check("10.0.0.1", "x", 0.1) == SEND


def test_eviction_prefers_a_bucket_idle_for_a_window():
    rl = RateLimiter(RateLimit(responses_per_second=1, window=1, slip=0), max_buckets=3)
    for host in ("10.0.1.1", "10.0.2.1", "10.0.3.1"):
        rl.check(host, "x", 0.0)
    rl.check("10.0.1.1", "x", 0.5)  # the oldest, but used since
    rl.check("10.0.4.1", "x", 1.2)  # 10.0.2.1 has been idle for a window: it goes
    kept = {key[0] for key in rl.buckets}
    assert kept == {rl.network(h) for h in ("10.0.1.1", "10.0.3.1", "10.0.4.1")}
    # none idle: the least recently used of the oldest goes
    rl.check("10.0.1.1", "x", 1.3)
    rl.check("10.0.3.1", "x", 1.4)
    rl.check("10.0.4.1", "x", 1.5)
    rl.check("10.0.5.1", "x", 1.6)
    assert {key[0] for key in rl.buckets} == {rl.network(h) for h in ("10.0.3.1", "10.0.4.1", "10.0.5.1")}
    assert rl.evicted == 2
    one = RateLimiter(RateLimit(responses_per_second=1, window=1), max_buckets=1)
    one.check("10.0.1.1", "x", 0.0)
    one.check("10.0.2.1", "x", 0.0)
    assert len(one) == 1 and one.check("10.0.2.1", "x", 0.0) == DROP  # the new one stayed (no credit left)


def test_bytes_per_bucket_within_the_documented_figure():
    rl = RateLimiter(RateLimit(responses_per_second=10, window=5), max_buckets=1 << 20)
    hosts = [f"10.{i // 256 % 256}.{i % 256}.1" if i < 32768 else f"2001:db8:{i:x}::1" for i in range(40000)]
    ident = "www.example.com. 1"
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, host in enumerate(hosts):
            rl.check(host, ident, i * 1e-6)
            rl.check(host, ident, i * 1e-6)  # each bucket updated once more (a float each)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(rl) == 40000
    per_bucket = used / 40000
    assert per_bucket <= BUCKET_BYTES, per_bucket


def test_the_limiter_wants_a_rate():
    with pytest.raises(ValueError):
        RateLimiter(RateLimit())


# -- identities

ZONE = """
zone: rrl.test
ns: [ns1.rrl.test]
records:
  ns1: {A: 192.0.2.53}
  www: {A: 192.0.2.1, AAAA: "2001:db8::1"}
  big: {TXT: ["%s", "%s", "%s", "%s"]}
  "*.w": {TXT: "wild"}
  alias: {CNAME: www}
  sub: {NS: [ns.sub]}
  ns.sub: {A: 203.0.113.53}
""" % tuple(c * 250 for c in "abcd")


@pytest.fixture
def zones(tmp_path):
    (tmp_path / "rrl.yaml").write_text(ZONE)
    zone = load_zone_file(str(tmp_path / "rrl.yaml"))
    return ZoneSet({zone.origin: zone})


def ident_of(zones, name: str, rdtype: str = "A") -> str:
    _, query = parse_query(dns.message.make_query(name, rdtype).to_wire())
    return identity(query, resolve(query, "192.0.2.1", zones, None), zones)


def test_identities(zones):
    assert ident_of(zones, "www.rrl.test.") == "www.rrl.test. 1"
    assert ident_of(zones, "WWW.rrl.test.") == "www.rrl.test. 1"  # letter case (0x20) is one answer
    assert ident_of(zones, "www.rrl.test.", "AAAA") == "www.rrl.test. 28"
    assert ident_of(zones, "alias.rrl.test.") == "alias.rrl.test. 1"
    # NODATA: the name, whatever the type
    assert ident_of(zones, "www.rrl.test.", "MX") == ident_of(zones, "www.rrl.test.", "TXT") == "nodata www.rrl.test."
    # NXDOMAIN: the zone (the imputed name), so random names share one bucket
    assert ident_of(zones, "x1.rrl.test.") == ident_of(zones, "y2.z.rrl.test.", "TXT") == "nx rrl.test"
    # wildcard answers: one bucket for every name the wildcard synthesises
    assert ident_of(zones, "a.w.rrl.test.", "TXT") == ident_of(zones, "b.w.rrl.test.", "TXT") \
        == "*.rrl.test. 16"
    assert ident_of(zones, "a.w.rrl.test.", "A") == "nodata *.rrl.test."
    # a referral: the delegation point
    assert ident_of(zones, "deep.sub.rrl.test.") == ident_of(zones, "sub.rrl.test.", "MX") == "ref sub.rrl.test."
    # errors: one bucket per network
    assert ident_of(zones, "example.net.") == ERROR  # REFUSED
    assert ident_of(zones, "rrl.test.", "AXFR") == ERROR


# -- the query handler


class Env:
    def __init__(self, zones: ZoneSet, rate_limit: RateLimit, cache: bool = True) -> None:
        self.zones = zones
        self.geo = GeoLocator.open(None)
        self.pools = LivePools(Balancer(self.geo, {}, random.Random(1)), lambda: StateView())
        self.pools.ready = True
        self.stats = QueryStats()
        self.handler = QueryHandler(lambda: self.zones, self.pools, self.stats, Acl(),
                                    AnswerCache() if cache else None, rate_limit=rate_limit)
        self.now = 1000.0
        self.handler.clock = lambda: self.now

    def udp(self, name: str, rdtype: str = "A", host: str = "192.0.2.1", **kw) -> dns.message.Message | None:
        q = dns.message.make_query(name, rdtype, **kw)
        q.id = random.randrange(65536)
        reply = self.handler.udp(q.to_wire(), host)
        if reply is None:
            return None
        r = dns.message.from_wire(reply)
        assert r.id == q.id
        return r


def full(r) -> bool:
    return r is not None and not r.flags & dns.flags.TC and bool(r.answer)


def slip_of(r, name: str) -> bool:
    """A slipped reply: TC=1, the question, no records."""
    return (r is not None and bool(r.flags & dns.flags.TC) and bool(r.flags & dns.flags.QR)
            and not r.answer and not r.authority and not r.additional
            and [str(q.name) for q in r.question] == [name])


@pytest.mark.parametrize("cache", [True, False])
def test_handler_limits_cache_hits_and_computed_replies(zones, cache):
    env = Env(zones, RateLimit(responses_per_second=5, window=1, slip=2), cache=cache)
    replies = [env.udp("big.rrl.test.", "TXT", use_edns=0, payload=4096) for _ in range(25)]
    assert all(full(r) for r in replies[:5])
    limited = replies[5:]
    assert [r is None for r in limited] == [True, False] * 10
    assert all(slip_of(r, "big.rrl.test.") for r in limited[1::2])
    # the slipped reply keeps the rcode and AA and has an OPT record (EDNS queries)
    slipped = limited[1]
    assert slipped.rcode() == dns.rcode.NOERROR and slipped.flags & dns.flags.AA and slipped.edns == 0
    assert (env.stats.rrl_dropped, env.stats.rrl_slipped) == (10, 10)
    # limited replies are not counted as answered queries
    assert sum(env.stats.queries.values()) == 5
    if cache:
        assert env.stats.cache_hits == 4
    # credit comes back with time
    env.now += 0.2
    assert full(env.udp("big.rrl.test.", "TXT", use_edns=0, payload=4096))
    assert env.udp("big.rrl.test.", "TXT", use_edns=0, payload=4096) is None


def test_slipped_reply_without_edns_has_no_opt(zones):
    env = Env(zones, RateLimit(responses_per_second=1, window=1, slip=1))
    assert full(env.udp("www.rrl.test."))
    r = env.udp("www.rrl.test.")
    assert slip_of(r, "www.rrl.test.") and r.edns == -1


def test_nxdomain_floods_share_the_zone_bucket_and_errors_the_network_bucket(zones):
    env = Env(zones, RateLimit(responses_per_second=3, window=1, slip=0))
    replies = [env.udp(f"r{i}.rrl.test.") for i in range(20)]
    assert sum(r is not None for r in replies) == 3
    assert all(r.rcode() == dns.rcode.NXDOMAIN for r in replies if r is not None)
    # other answers are not affected
    assert full(env.udp("www.rrl.test."))
    # REFUSED (outside the zones) and NOTIMP share the network's error bucket
    refused = [env.udp("example.net.") for _ in range(2)]
    q = dns.message.make_query("www.rrl.test.", "A")
    q.set_opcode(2)  # STATUS: NOTIMP
    notimp = [env.handler.udp(q.to_wire(), "192.0.2.7") for _ in range(3)]
    assert [r is not None for r in refused] == [True, True]
    assert [r is not None for r in notimp] == [True, False, False]
    # another /24 has its own buckets
    assert env.udp("example.net.", host="192.0.3.1") is not None


def test_error_replies_slip_with_tc(zones):
    env = Env(zones, RateLimit(responses_per_second=1, window=1, slip=1))
    assert env.udp("example.net.").rcode() == dns.rcode.REFUSED
    r = env.udp("example.net.")
    assert r.rcode() == dns.rcode.REFUSED and r.flags & dns.flags.TC and slip_of(r, "example.net.")


def test_tcp_and_the_full_path_are_never_limited(zones):
    env = Env(zones, RateLimit(responses_per_second=1, window=1, slip=0))
    q = dns.message.make_query("www.rrl.test.", "A").to_wire()
    assert env.handler.udp(q, "192.0.2.1") is not None
    assert env.handler.udp(q, "192.0.2.1") is None
    for _ in range(20):
        assert env.handler.handle(q, "192.0.2.1", True) is not None
    assert env.stats.rrl_dropped == 1


def test_exempt_clients_get_every_reply(zones):
    env = Env(zones, RateLimit(responses_per_second=1, window=1, slip=0, exempt=("192.0.2.128/25",)))
    assert all(full(env.udp("www.rrl.test.", host="192.0.2.200")) for _ in range(30))
    assert [full(env.udp("www.rrl.test.", host="192.0.2.1")) for _ in range(3)] == [True, False, False]


def test_off_by_default_and_turned_on_and_off_live(zones):
    env = Env(zones, RateLimit())
    assert env.handler.rrl is None
    assert all(full(env.udp("www.rrl.test.")) for _ in range(20))
    assert len(env.handler.cache) == 1
    # on: the cache's entries lack their identity, so it starts over
    env.handler.set_rate_limit(RateLimit(responses_per_second=2, window=1, slip=0))
    assert len(env.handler.cache) == 0
    assert [full(env.udp("www.rrl.test.")) for _ in range(4)] == [True, True, False, False]
    # another rate: new buckets, the cache stays
    env.handler.set_rate_limit(RateLimit(responses_per_second=3, window=1, slip=0))
    assert len(env.handler.cache) == 1
    assert [full(env.udp("www.rrl.test.")) for _ in range(4)] == [True, True, True, False]
    env.handler.set_rate_limit(RateLimit())
    assert env.handler.rrl is None and all(full(env.udp("www.rrl.test.")) for _ in range(10))


def test_stats_snapshot_and_absorb_carry_the_counters():
    a, b = QueryStats(), QueryStats()
    a.rrl_dropped, a.rrl_slipped = 3, 2
    b.rrl_dropped = 1
    total = QueryStats.total([a, b.snapshot(), {**QueryStats().snapshot()}])
    assert (total.rrl_dropped, total.rrl_slipped) == (4, 2)


@pytest.mark.parametrize("cache", [True, False])
def test_replies_that_carry_a_server_cookie_are_limited_too(zones, cache):
    """DNS Cookies and RRL together: cookie replies are cached per client address, and those
    hits are limited like any other; what is sent still carries the server cookie."""
    from gslb.cookies import Cookies

    env = Env(zones, RateLimit(responses_per_second=5, window=1, slip=2), cache=cache)
    env.handler.cookies = Cookies(bytes(range(16)))
    client_cookie = dns.edns.GenericOption(10, bytes(range(8)))
    replies = [env.udp("big.rrl.test.", "TXT", use_edns=0, payload=4096, options=[client_cookie])
               for _ in range(25)]
    assert all(full(r) for r in replies[:5])
    assert all([o.otype for o in r.options] == [10] and len(r.options[0].to_wire()) == 24 for r in replies[:5])
    assert [r is None for r in replies[5:]] == [True, False] * 10
    assert all(slip_of(r, "big.rrl.test.") for r in replies[5:] if r is not None)
    assert env.stats.rrl_dropped == 10 and env.stats.rrl_slipped == 10
