"""The query path glue: bytes in, bytes out (ACL, answer cache, parse, resolve, encode, statistics).

``QueryHandler.udp(data, host)`` is what the UDP transport calls per packet:

1. the ACL (skipped entirely when it lets everybody in);
2. the answer cache (``gslb.answercache``): a current entry for the query's bytes after the ID
   (or for those bytes and the client's address, when the answer depends on the packet's
   source) is the reply, with the query's ID put in front: no parse, no resolve, no encode;
3. else the full path (:meth:`QueryHandler.compute`): parse (``gslb.wire``), resolve
   (``gslb.resolver`` with the zones and the pools), encode, count; a cacheable reply is stored
   under the dependencies it was computed from;
4. response rate limiting (``gslb.ratelimit``, when ``rate_limit`` is on), on both the cache hit
   and the computed reply: the reply is sent, dropped or slipped (sent truncated). The cache
   entry carries the reply's rate-limit identity, so a hit is limited without a parse. Off, it
   costs the hit path one attribute test.

``QueryHandler.handle(data, client_ip, tcp)`` is the full path alone (TCP, tests, explain-like
callers), never rate limited. Every reply from the cache is byte for byte the reply the full
path gives (a test compares both over a generated corpus).

DNS Cookies (``gslb.cookies``, when enabled): the full path judges the query's COOKIE option,
puts the reply's in the OPT record, and caps a UDP reply to a query without a valid server
cookie at ``max_nocookie_udp`` bytes. A reply that carries a cookie depends on the client's
address and on the time, so it is cached under (query bytes, client address) (a hit: this
address sent these very cookie bytes before, and they were judged then) and depends on
``COOKIE_DEP``, which :func:`expire_cookies_every` bumps every ``CACHE_PERIOD`` seconds: a cached
reply never carries a server cookie more than that older than a computed one would. The cache
hit path is unchanged.

``ReadinessGate`` stands between the resolver and the balancer: until the first round of
health checks has finished it answers every pool name with the ``starting`` outcome (no reply
at all: resolvers retry a second later, which is better than sending clients to a dead site or a
SERVFAIL they may cache). It keeps the balancer in step with the site-state table: every new view
goes to ``Balancer.sync``, whose changed pools are dropped from the answer cache.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from time import monotonic, perf_counter
from typing import Any, Callable

from gslb.answercache import AnswerCache
from gslb.balancer import Balancer, PoolChange
from gslb.config import Acl, RateLimit
from gslb.cookies import CACHE_PERIOD, Cookies, Verdict
from gslb.dnssec import SIGNATURE_CACHE_PERIOD, SIGNATURE_DEP, Signer, SigningError
from gslb.model import Pool, PoolAnswer, StateView, Zone, ZoneSet
from gslb.ratelimit import DROP, ERROR, RateLimiter, identity
from gslb.resolver import Pools, resolve
from gslb.stats import QueryStats
from gslb.wire import (BADCOOKIE, NOERROR, NXDOMAIN, RCODE_NAMES, REFUSED, TCP_MAX, Drop, FormErr, Query, Reject,
                       encode_response, formerr, parse_query, servfail, slipped, with_tc)

logger = logging.getLogger(__name__)

#: the answer cache dependency of every reply that carries a server cookie (a 1-tuple: no zone
#: key, pool or site dependency looks like it)
COOKIE_DEP = ("#cookies",)

#: rcodes whose replies the answer cache does not keep (see QueryHandler.compute)
_NOT_STORED = frozenset((NXDOMAIN, REFUSED))

#: answer kinds (statistics slots) before the registry starts over (the cache is cleared with it);
#: a slot per client country of located pools: up to ~250 per (pool, answer, type)
MAX_SLOTS = 50000

#: query types counted by name; any other is counted as "other", so that random types sent by
#: a client cannot grow the statistics (and the /metrics label sets) without bound
_COUNTED_TYPES = frozenset({
    "A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA", "NS", "PTR", "SOA", "ANY", "DS", "DNSKEY",
    "HTTPS", "SVCB", "NAPTR", "HINFO", "AXFR", "IXFR", "TLSA", "SSHFP", "CDS", "CDNSKEY", "",
})


def _counted(qtype: str) -> str:
    return qtype if qtype in _COUNTED_TYPES else "other"


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(host: str) -> str:
    """A socket address's host as the client address: IPv4-mapped IPv6 in IPv4 form, no zone (``%eth0``)."""
    if "%" in host:
        host = host.split("%", 1)[0]
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


class AclMatcher:
    """Whether a client address may query: in some ``allow`` network and in no ``deny`` one."""

    __slots__ = ("allow", "deny", "open", "_cache")

    def __init__(self, acl: Acl) -> None:
        self.allow: tuple[_Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in acl.allow)
        self.deny: tuple[_Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in acl.deny)
        # the default ACL lets everybody in: skip the per-query check entirely
        self.open = not self.deny and {str(n) for n in self.allow} >= {"0.0.0.0/0", "::/0"}
        self._cache: dict[str, bool] = {}

    def allowed(self, client_ip: str) -> bool:
        """The verdict for one address (cached per address, bounded)."""
        if self.open:
            return True
        verdict = self._cache.get(client_ip)
        if verdict is None:
            verdict = self._decide(client_ip)
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[client_ip] = verdict
        return verdict

    def _decide(self, client_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in n for n in self.deny if n.version == address.version):
            return False
        return any(address in n for n in self.allow if n.version == address.version)


#: the pool answer before the first round of health checks
STARTING = PoolAnswer("starting", (), 0, 0, cacheable=False)


class ReadinessGate:
    """Answers pool names from the balancer with the table's current view; the readiness gate.

    ``view()`` returns the current state view (the table's ``view`` attribute in the server, the
    last view received in a DNS worker process). ``on_change`` is called with the pools whose
    answers may have changed (``Balancer.sync``; the answer cache listens).
    """

    __slots__ = ("balancer", "view", "ready", "on_change")

    def __init__(self, balancer: Balancer, view: Callable[[], StateView]) -> None:
        self.balancer = balancer
        self.view = view
        self.ready = False
        self.on_change: Callable[[list[PoolChange]], None] | None = None
        balancer.on_change = self._changed

    def use(self, balancer: Balancer) -> None:
        """Answer with another balancer from now on (a new GeoIP database or new regions)."""
        balancer.on_change = self._changed
        balancer.sync(self.view())
        self.balancer = balancer

    def sync(self, view: StateView) -> None:
        """A new state view: only the pools whose verdicts (or held metrics) changed are dropped."""
        self.balancer.sync(view)

    def _changed(self, changes: list[PoolChange]) -> None:
        if self.on_change is not None:
            self.on_change(changes)

    def country(self, client_ip: str) -> str | None:
        """The client's country (None: unknown), for the per-country query counters."""
        geo = self.balancer.geo
        if geo is None:
            return None
        try:
            return geo.locate(client_ip).country
        except ValueError:
            return None

    def answer(self, zone: Zone, pool: Pool, rtype: str, client_ip: str,
               source_prefix: int | None) -> PoolAnswer:
        """One pool answer for one client (``starting`` before the first health round)."""
        if not self.ready:
            return STARTING
        return self.balancer.answer(zone, pool, rtype, client_ip, source_prefix, self.view())


class QueryHandler:
    """Turns one query packet into the reply packet (or None: no reply); see the module docstring.

    Threads: the UDP transport calls :meth:`udp` from its own threads, the event loop calls
    :meth:`handle` (TCP) and changes the data answers are computed from. A cache hit reads a
    few attributes and takes no lock (the cache's dicts and stamp lists are only ever replaced
    or grown, never shrunk in place, so a concurrent change can only turn a hit into a miss).
    Everything else (computing an answer, invalidating, swapping the balancer, reading the
    counters) happens under ``lock``; the server takes it around its changes (:meth:`locked`).
    """

    def __init__(self, get_zones: Callable[[], ZoneSet], pools: Pools, stats: QueryStats, acl: Acl,
                 cache: AnswerCache | None = None, cookies: Cookies | None = None,
                 rate_limit: RateLimit | None = None) -> None:
        self._get_zones = get_zones
        #: None: DNS Cookies off (COOKIE options ignored, no size cap)
        self.cookies = cookies
        self._pools = pools
        self._stats = stats
        self._acl = AclMatcher(acl)
        #: None: no answer cache (every query takes the full path)
        self.cache = cache
        #: None: UDP replies are not rate limited
        self.rrl: RateLimiter | None = None
        #: the clock of the rate limiter (monotonic seconds)
        self.clock: Callable[[], float] = monotonic
        if rate_limit is not None and rate_limit.enabled:
            self.rrl = RateLimiter(rate_limit)
        #: signs the replies of zones with ``dnssec:`` (a no-op while no zone has one)
        self.signer = Signer()
        #: held while an answer is computed and while the data it reads changes
        self.lock = threading.RLock()

    def locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` under the lock (the event loop's changes to the query path's data)."""
        with self.lock:
            return fn(*args)

    def set_acl(self, acl: Acl) -> None:
        """Replace the ACL (on reload); the next query uses the new one."""
        self._acl = AclMatcher(acl)

    def set_rate_limit(self, rate_limit: RateLimit) -> None:
        """Replace the rate limiter (on reload; the caller holds the lock): new, empty buckets.

        Turned on, the answer cache is cleared: its entries were stored without their rate-limit
        identity.
        """
        if not rate_limit.enabled:
            self.rrl = None
            return
        was_off = self.rrl is None
        self.rrl = RateLimiter(rate_limit)
        if was_off:
            self.clear_cache()

    # -- invalidation (callers hold the lock) ----------------------------------------------------

    def zones_changed(self, old: ZoneSet, new: ZoneSet) -> None:
        """A new zone set is being served: drop the answers of changed and removed zones.

        Call it after the new set is in place. When zones were added or removed, which zone holds
        a name can change for any name: everything is dropped.
        """
        cache = self.cache
        if cache is None:
            return
        if set(old.zones) != set(new.zones):
            cache.clear()
            return
        cache.invalidate([z.key for z in old if new.zones.get(z.origin) is not z])

    def pools_changed(self, changes: list[PoolChange]) -> None:
        """The answers of these pools may have changed (``Balancer.sync``): drop every answer of a
        pool, or only those that held a site that left."""
        if self.cache is None:
            return
        deps: list[object] = []
        for pool, left in changes:
            if left is None:
                deps.append(pool)
            else:
                deps.extend((pool[0], pool[1], site) for site in left)
        self.cache.invalidate(deps)

    def expire(self, dep: object) -> None:
        """Drop every cached reply that depends on ``dep`` (COOKIE_DEP, SIGNATURE_DEP: time-bound)."""
        if self.cache is not None:
            self.cache.invalidate((dep,))

    def expire_cookies(self) -> None:
        """Drop every cached reply that carries a server cookie (every CACHE_PERIOD seconds)."""
        self.expire(COOKIE_DEP)

    def clear_cache(self) -> None:
        """Drop every cached answer (a new GeoIP database, new regions)."""
        if self.cache is not None:
            self.cache.clear()

    def stats_snapshot(self) -> dict:
        """This process's counters as plain values (a consistent copy)."""
        with self.lock:
            return self._stats.snapshot()

    # -- the query path --------------------------------------------------------------------------

    def udp(self, data: bytes, host: str) -> bytes | None:
        """The reply to a UDP query from ``host`` (the socket address's host, as received)."""
        acl = self._acl
        if not acl.open and not acl.allowed(client_ip(host)):
            self._stats.dropped["acl"] += 1
            return None
        cache = self.cache
        if cache is not None:
            key: bytes | tuple[bytes, str]  # the query after its ID; or with the client's address
            key = data[2:]
            entries = cache.entries
            entry = entries.get(key)
            if entry is None:
                key = (key, host)
                entry = entries.get(key)
            if entry is not None:
                try:
                    if cache.stamps[entry[1]] == entry[2]:
                        rrl = self.rrl
                        if rrl is not None:
                            verdict = rrl.check(host, entry[4], self.clock())
                            if verdict:
                                return self._limited(verdict, data[:2] + entry[0], data)
                        self._stats.hits[entry[3]] += 1
                        entries.move_to_end(key)
                        return data[:2] + entry[0]
                except (IndexError, KeyError):  # the slots started over, or it was just evicted
                    pass
        with self.lock:
            return self.compute(data, host, False, limit=True)

    def handle(self, data: bytes, host: str, tcp: bool) -> bytes | None:
        """The reply to ``data`` by the full path (no answer cache); None when nothing is to be sent."""
        acl = self._acl
        if not acl.open and not acl.allowed(client_ip(host)):
            self._stats.dropped["acl"] += 1
            return None
        with self.lock:
            return self.compute(data, host, tcp, store=False)

    def compute(self, data: bytes, host: str, tcp: bool, store: bool = True, limit: bool = False) -> bytes | None:
        """Parse, resolve, encode and count (the ACL already passed); store a cacheable UDP reply
        in the answer cache when ``store``; rate limit the reply when ``limit`` (UDP)."""
        start = perf_counter()
        stats = self._stats
        client = client_ip(host)
        rrl = self.rrl if limit else None
        try:
            ident, query = parse_query(data)
        except Drop as e:
            stats.dropped[e.reason] += 1
            return None
        except FormErr as e:
            if e.ping and self.cookies is not None:
                return self._cookie_ping(e, client, tcp, start)
            logger.debug("FORMERR to %s: %s", client, e.why)
            reply = self._error_reply(e, client, tcp)
            if rrl is not None and (limited := rrl.check(host, ERROR, self.clock())):
                return self._limited(limited, reply, None)
            stats.query("", _counted(e.qtype), "FORMERR", perf_counter() - start)
            return reply
        except Reject as e:
            reply = self._error_reply(e, client, tcp)
            if rrl is not None and (limited := rrl.check(host, ERROR, self.clock())):
                return self._limited(limited, reply, None)
            stats.query("", _counted(e.qtype), RCODE_NAMES.get(e.rcode, str(e.rcode)), perf_counter() - start)
            return reply
        # parse_query raises nothing else (gslb.wire: malformed input is a FormErr); a bug that
        # did would be logged by the transport's own guard (gslb.dnsserver), never kill it
        cache = self.cache if store and not tcp else None
        if cache is not None:
            # stored by another thread meanwhile, or evicted and stored again: answered from it
            entry = cache.lookup(data[2:], host)
            if entry is not None:
                if rrl is not None and (limited := rrl.check(host, entry[4], self.clock())):
                    return self._limited(limited, data[:2] + entry[0], query)
                stats.hits[entry[3]] += 1
                return data[:2] + entry[0]
        epoch = cache.epoch if cache is not None else 0
        zones = self._get_zones()
        size = TCP_MAX if tcp else query.udp_limit
        cookie = b""
        cookie_verdict = ""
        storable = True
        if self.cookies is not None:
            judged, cookie, storable, size = self._judge_cookie(query.cookie, client, tcp, size)
            if judged is Verdict.MALFORMED:
                # RFC 7873 5.2.2: a COOKIE option of a length other than 8 or 16..40
                logger.debug("FORMERR to %s: malformed COOKIE option", client)
                stats.query("", _counted(query.qtype_name), "FORMERR", perf_counter() - start)
                return formerr(ident, query)
            cookie_verdict = judged.value if judged is not None else ""
        try:
            response = resolve(query, client, zones, self._pools)
            if response.drop is not None:
                stats.dropped[response.drop] += 1
                return None
            # DNSSEC (gslb.dnssec): the signed reply is sent; ``response`` stays the unsigned one
            # for the statistics, rate limiting and the cache's rules
            signed = self.signer.apply(query, response, zones) if response.zone else None
            reply = encode_response(ident, query, response if signed is None else signed, size, cookie)
        except Exception as exc:
            if isinstance(exc, SigningError):  # never an unsigned answer instead
                logger.error("SERVFAIL for %s %s from %s: %s", query.qname, query.qtype_name, client, exc)
            else:
                logger.exception("SERVFAIL for %s %s from %s", query.qname, query.qtype_name, client)
            reply = servfail(ident, query, cookie)
            if rrl is not None and (limited := rrl.check(host, ERROR, self.clock())):
                return self._limited(limited, reply, None)
            stats.query("", _counted(query.qtype_name), "SERVFAIL", perf_counter() - start)
            return reply
        qtype = _counted(query.qtype_name)
        rcode = RCODE_NAMES.get(response.rcode, str(response.rcode))
        pool = response.pool
        # with a limiter, every reply limited here or stored in the cache gets its identity
        rrl_id = identity(query, response, zones) \
            if self.rrl is not None and (rrl is not None or cache is not None) else None
        limited = rrl.check(host, rrl_id, self.clock()) if rrl is not None else 0
        # the client's country, for a pool answer that holds for one client network only (per
        # client, or for one ECS subnet): what a cached copy is counted under (gslb.trafficmap)
        country = None
        if pool is not None and (response.per_client or (query.ecs is not None and query.ecs.source_prefix)):
            country = _country(self._pools, query.ecs.address if query.ecs is not None and query.ecs.source_prefix
                               else client)
        if not limited:
            if pool is not None:
                stats.answered_sites(pool[0], pool[1], response.sites, country)
            stats.query(response.zone, qtype, rcode, perf_counter() - start)
        # NXDOMAIN and REFUSED are not stored: resolvers cache them themselves (RFC 2308), so a
        # repeat is rare, while a flood of random names would push every useful answer out
        if cache is not None and response.deps is not None and response.rcode not in _NOT_STORED and storable:
            if len(stats.hits) >= MAX_SLOTS or cache.full:
                # start both over: a new cache, so no entry points at a slot of the old registry
                stats.reset_slots()
                cache = self.cache = AnswerCache(cache.max_bytes)
            deps = response.deps
            per_client = response.per_client
            if signed is not None and query.do:
                # dropped every SIGNATURE_CACHE_PERIOD: no cached signature gets close to expiry
                deps = deps + (SIGNATURE_DEP,)
            if cookie:
                # the server cookie depends on the client's address and on the time
                deps = deps + (COOKIE_DEP,)
                per_client = True
            token = cache.token(deps)
            # nothing this answer read changed while it was computed (else: not stored)
            if cache.epoch == epoch:
                slot = stats.slot(response.zone, qtype, rcode, pool, response.sites, cookie_verdict, country)
                cache.put(data[2:], host if per_client else None, reply[2:], token, slot, rrl_id)
        if limited:
            return self._limited(limited, reply, query)
        return reply

    def _limited(self, verdict: int, reply: bytes, query: Query | bytes | None) -> bytes | None:
        """A reply the rate limiter holds back: None (dropped), or the truncated reply (slipped).

        ``query`` is the parsed query, or the query's bytes (parsed here, from the parser's memo:
        only slips need it), or None for a reply without records (an error: its TC bit is set).
        """
        stats = self._stats
        if verdict == DROP:
            stats.rrl_dropped += 1
            return None
        stats.rrl_slipped += 1
        if query is None:
            return with_tc(reply)
        if isinstance(query, bytes):
            query = parse_query(query)[1]
        return slipped(reply, query)

    def _judge_cookie(self, option: bytes | None, client: str, tcp: bool,
                      limit: int) -> tuple[Verdict | None, bytes, bool, int]:
        """A query's COOKIE option judged and counted (cookies on): (the verdict, None without an
        option; the reply's COOKIE option; whether the reply may be cached; the UDP size limit
        left: ``max_nocookie_udp`` without a valid server cookie, as no proof the source is real)."""
        cookies = self.cookies
        assert cookies is not None
        judged, cookie, storable = None, b"", True
        if option is not None:
            judged, cookie, storable = cookies.process(option, client)
            self._stats.cookie(judged.value)
        if not tcp and judged is not Verdict.VALID:
            limit = min(limit, cookies.max_nocookie_udp)
        return judged, cookie, storable, limit

    def _error_reply(self, error: Reject, client: str, tcp: bool) -> bytes:
        """An error reply fitted to the client's limit, with a COOKIE option when the query had one."""
        limit = TCP_MAX if tcp else error.udp_limit
        if self.cookies is None:
            return error.build(limit, b"")
        _, cookie, _, limit = self._judge_cookie(error.cookie, client, tcp, limit)
        return error.build(limit, cookie)

    def _cookie_ping(self, error: FormErr, client: str, tcp: bool, start: float) -> bytes:
        """A query with no question and a COOKIE option (RFC 7873 5.4): NOERROR with our cookie, or
        BADCOOKIE when it brought a server cookie that is not valid; FORMERR for a malformed option."""
        assert error.cookie is not None
        judged, cookie, _, limit = self._judge_cookie(error.cookie, client, tcp,
                                                       TCP_MAX if tcp else error.udp_limit)
        rcodes: dict[Verdict | None, int] = {Verdict.MALFORMED: error.rcode, Verdict.INVALID: BADCOOKIE}
        rcode = rcodes.get(judged, NOERROR)
        self._stats.query("", "", RCODE_NAMES[rcode], perf_counter() - start)
        return error.build(limit, cookie, rcode)


def _country(pools: Pools, client: str) -> str | None:
    """The client's country by the pools' locator (pools without one, e.g. in tests: None)."""
    country = getattr(pools, "country", None)
    return country(client) if country is not None else None


async def _expire_every(handler: QueryHandler, dep: object, period: float) -> None:
    """Drop the cached replies that depend on ``dep`` every ``period`` seconds (a task of the
    process's event loop; runs until cancelled)."""
    while True:
        await asyncio.sleep(period)
        handler.locked(handler.expire, dep)


async def expire_signatures_every(handler: QueryHandler, period: float = SIGNATURE_CACHE_PERIOD) -> None:
    """Drop the cached signed replies every ``period`` seconds: a cached reply's signatures are at
    most this much older than fresh ones."""
    await _expire_every(handler, SIGNATURE_DEP, period)


async def expire_cookies_every(handler: QueryHandler, period: float = CACHE_PERIOD) -> None:
    """Drop the cached replies that carry a server cookie every ``period`` seconds."""
    await _expire_every(handler, COOKIE_DEP, period)
