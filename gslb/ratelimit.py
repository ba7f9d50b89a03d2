"""Response rate limiting (RRL), as BIND's and Knot's: token buckets per (client network, answer).

An authoritative server answers anyone, so a flood of queries with a victim's address as their
forged source turns it into an amplifier (a 60-byte query, a 1 KB TXT reply). RRL bounds how
many identical replies one client network gets per second; real resolvers never come close.

Buckets. A reply is accounted to the bucket of (client network, identity):

- the client network is the packet's source address cut to ``ipv4_prefix`` (24) or
  ``ipv6_prefix`` (56) bits (never the ECS address: the forged source is what is being protected);
- the identity (:func:`identity`) is what the reply says, as BIND and Knot class it:
  a positive answer is its name and type (a name synthesised from a wildcard counts as
  ``*.ZONE``, so random names under a wildcard share one bucket); NODATA is the name; a referral
  is the delegation point; NXDOMAIN is the zone (BIND's "imputed name": a random-subdomain flood
  shares one bucket); every error (REFUSED, SERVFAIL, FORMERR, NOTIMP, ...) is one bucket per
  network (:data:`ERROR`).

Credit. Each bucket earns ``responses_per_second`` credits a second, up to
``responses_per_second * window`` (what a quiet client may build up; a new bucket starts full);
a reply spends one. A bucket is ``[credit, time of the last check, limited replies since the
last slip]``; a check adds ``(now - then) * rate`` (capped) and spends one credit when a whole
one is there. Credits are small numbers, so float rounding never accumulates (a bucket holding a
"time when the credit was zero" instead would sum rounding errors of the order of the clock's
magnitude, and refuse the last credit of a burst). Limited replies spend nothing (the allowed
rate stays exactly ``responses_per_second`` under any flood).

Slip. A limited reply is dropped, except every ``slip``-th of a bucket, which is sent truncated
(TC=1, the question, OPT when the query had EDNS, no records: ``gslb.wire.slipped``) so that a
real client whose address is being forged retries over TCP and still gets its answer. ``slip``
0: drop all; 1: truncate all. TCP is never limited (its source cannot be forged); the ``exempt``
networks are never limited.

Memory. At most ``max_buckets`` buckets. A new bucket beyond that evicts one of the
``EVICT_TRIES`` oldest (by creation): the first that has been idle for a window (its credit is
full again, so forgetting it changes nothing), else the least recently used of them; the others
go to the newest end. So a hit pays no reordering (no exact LRU list), and a bucket in constant
use, like a flooded one, stays; an evicted bucket that comes back starts full. A bucket
costs about :data:`BUCKET_BYTES` bytes (the ordered-dict slot, the (network, identity) key
tuple, the network int and a three-item list; identities are shared with the answer cache), so
the default table is at most about 20 MB. The client address -> network memo holds at most
``MAX_HOSTS`` addresses (cleared when full, as the ACL's). Per reply the check allocates only the
key tuple and the new float.

Time is passed in (``now``, monotonic seconds): the module has no clock.

Threads: :meth:`RateLimiter.check` takes no lock. With one UDP socket it is only ever called from
that socket's thread; with several listen addresses two threads may race on one bucket, which at
worst lets one extra reply through (each dict operation is atomic under the GIL; the evictions
tolerate an entry that another thread removed).
"""

from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict
from sys import intern
from typing import Hashable

from gslb.config import RateLimit
from gslb.model import ZoneSet
from gslb.wire import NOERROR, NXDOMAIN, Query, Response

#: the verdicts of :meth:`RateLimiter.check`
SEND, DROP, SLIP = 0, 1, 2

#: the identity of every error reply (one bucket per client network)
ERROR = "!error"

#: buckets one limiter keeps at most (module docstring: Memory)
DEFAULT_MAX_BUCKETS = 65536
#: bytes one bucket costs, measured with tracemalloc (tests/unit/test_ratelimit.py checks it):
#: key tuple 56, network int 28-36, list 72, float 24, ordered-dict slot ~100, address memo ~60
BUCKET_BYTES = 350
#: client addresses whose network is remembered (cleared when full)
MAX_HOSTS = 16384
#: buckets looked at per eviction for one that has been idle for a window
EVICT_TRIES = 4

#: the network key of an exempt client
_EXEMPT = object()


def identity(query: Query, response: Response, zones: ZoneSet) -> str:
    """What ``response`` is accounted as (module docstring): one string per kind of reply, interned
    (the cache entries of one answer share one object: a bucket lookup compares by identity, and
    its hash is computed once)."""
    return intern(_identity(query, response, zones))


def _identity(query: Query, response: Response, zones: ZoneSet) -> str:
    rcode = response.rcode
    if rcode == NXDOMAIN:
        return "nx " + response.zone  # the imputed name: every name that does not exist in the zone
    if rcode != NOERROR:
        return ERROR
    if not response.aa:  # the only NOERROR reply without AA: a referral
        authority = response.authority
        return "ref " + (authority[0].name if authority else response.zone)
    name = query.qname_lower
    zone = zones.find(name)
    if zone is not None and name not in zone.nodes and name not in zone.names and name != zone.origin:
        name = "*." + zone.origin  # synthesised from a wildcard: one bucket for every such name
    if not response.answer:
        return "nodata " + name
    return f"{name} {query.qtype}"


def _address(host: str) -> tuple[int, int] | None:
    """(IP version, address as an int) of a socket address's host, or None when it is none."""
    if "%" in host:
        host = host.split("%", 1)[0]
    try:
        if ":" in host:
            if host.startswith("::ffff:") and "." in host:
                return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, host[7:]), "big")
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, host), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
    except OSError:
        return None


class RateLimiter:
    """The buckets of one process (module docstring); :meth:`check` per UDP reply."""

    __slots__ = ("config", "max_buckets", "buckets", "evicted", "_rate", "_cap", "_window", "_slip",
                 "_shift4", "_shift6", "_exempt", "_nets")

    def __init__(self, config: RateLimit, max_buckets: int = DEFAULT_MAX_BUCKETS) -> None:
        if config.responses_per_second <= 0:
            raise ValueError("responses_per_second must be > 0 (0 means no limiter)")
        self.config = config
        self.max_buckets = max(1, max_buckets)
        #: (network, identity) -> [credit, time of the last check, limited replies since the last slip]
        self.buckets: OrderedDict[tuple[object, Hashable], list] = OrderedDict()
        #: buckets dropped to stay within max_buckets
        self.evicted = 0
        self._rate = float(config.responses_per_second)
        self._cap = float(config.responses_per_second * config.window)
        self._window = float(config.window)
        self._slip = config.slip
        self._shift4 = 32 - config.ipv4_prefix
        self._shift6 = 128 - config.ipv6_prefix
        exempt = [ipaddress.ip_network(n, strict=False) for n in config.exempt]
        #: (version, network as int, prefix length)
        self._exempt = tuple((n.version, int(n.network_address), n.prefixlen) for n in exempt)
        self._nets: dict[str, object] = {}

    def network(self, host: str) -> object:
        """The bucket network of a client address (an int; the address itself when it does not
        parse), or the exempt marker."""
        address = _address(host)
        if address is None:
            return host
        version, value = address
        bits = 32 if version == 4 else 128
        for v, net, prefix in self._exempt:
            if v == version and value >> (bits - prefix) == net >> (bits - prefix):
                return _EXEMPT
        if version == 4:
            return value >> self._shift4
        return -1 - (value >> self._shift6)  # IPv6 networks are the negative keys

    def exempt(self, host: str) -> bool:
        """Whether replies to ``host`` are never limited."""
        return self.network(host) is _EXEMPT

    def check(self, host: str, identity: Hashable, now: float) -> int:
        """SEND, DROP or SLIP for one reply of ``identity`` to ``host`` at ``now`` (seconds)."""
        try:
            key = (self._nets[host], identity)
        except KeyError:
            key = (self._remember(host), identity)
        bucket = self.buckets.get(key)
        if bucket is None:
            return self._new(key, now)
        credit = bucket[0] + (now - bucket[1]) * self._rate
        if credit > self._cap:
            credit = self._cap  # window seconds' worth at most
        bucket[1] = now
        if credit >= 0.999999:  # a whole credit (the tolerance absorbs the rounding of the sum)
            bucket[0] = credit - 1.0
            return SEND
        bucket[0] = credit
        slip = self._slip
        if slip:
            limited = bucket[2] + 1
            if limited >= slip:
                bucket[2] = 0
                return SLIP
            bucket[2] = limited
        return DROP

    def _remember(self, host: str) -> object:
        """The network of ``host``, remembered (the memo starts over when full)."""
        net = self.network(host)
        nets = self._nets
        if len(nets) >= MAX_HOSTS:
            self._nets = nets = {}
        nets[host] = net
        return net

    def _new(self, key: tuple[object, Hashable], now: float) -> int:
        """The first reply of a bucket (or of an exempt client, which gets no bucket)."""
        if key[0] is _EXEMPT:
            return SEND
        buckets = self.buckets
        # a new bucket starts with the full window of credit, and this reply spends one
        buckets[key] = [self._cap - 1.0, now, 0]
        if len(buckets) > self.max_buckets:
            self._evict(now)
        return SEND

    def _evict(self, now: float) -> None:
        """Drop one bucket: of the EVICT_TRIES oldest, the first that has been idle for a window
        (its credit is full again: forgetting it changes nothing), else the least recently used
        of them; the others move to the newest end (so a hit pays no reordering, and a bucket in
        constant use, like a flooded one, stays)."""
        buckets = self.buckets
        window = self._window
        taken: list[tuple[tuple, list]] = []
        tries = min(EVICT_TRIES, len(buckets) - 1)  # never the bucket just made (the newest)
        if tries <= 0:
            return
        try:
            for _ in range(tries):
                item = buckets.popitem(last=False)
                if now - item[1][1] >= window:
                    break
                taken.append(item)
            else:
                taken.remove(min(taken, key=lambda kv: kv[1][1]))
        except KeyError:  # emptied by another thread meanwhile
            pass
        self.evicted += 1
        for key, bucket in taken:
            buckets[key] = bucket

    def __len__(self) -> int:
        return len(self.buckets)
