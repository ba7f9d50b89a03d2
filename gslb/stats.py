"""Plain counters that the DNS path bumps; the /metrics collector reads them at scrape time.

Counting with dict increments instead of prometheus-client label lookups keeps the per-query
cost to a few hundred nanoseconds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Iterable

from gslb.model import Zone

#: upper bounds (seconds) of the answer-latency histogram buckets
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)


class QueryStats:
    """Query, answer and latency counters of one process.

    Answers served from the answer cache are counted with one list increment: each cache entry
    carries a *slot* (:meth:`slot`), an index standing for (zone, qtype, rcode, pool, sites, cookie
verdict, country), and
    ``hits[slot]`` grows per answer. Reading ``queries`` or ``site_answers`` folds the hits into
    the counters first. The latency histogram covers the answers that were computed; answers from
    the cache are counted in ``cache_hits`` (their cost is a dict probe, not worth two clock reads).
    """

    __slots__ = ("_queries", "_site_answers", "_countries", "latency_counts", "latency_sum", "dropped", "hits",
                 "cache_hits", "rrl_dropped", "rrl_slipped", "_cookies", "_slots", "_slot_keys", "_folded")

    def __init__(self) -> None:
        #: (zone key or "", qtype name, rcode name) -> count
        self._queries: Counter[tuple[str, str, str]] = Counter()
        #: (zone key, pool, site) -> how many answers included the site
        self._site_answers: Counter[tuple[str, str, str]] = Counter()
        #: (zone key, pool, country or None) -> pool answers given to clients of that country
        #: (None: not known, e.g. one cached answer for every client of a policy that ignores
        #: the client); at most one series per country (~250) per pool
        self._countries: Counter[tuple[str, str, str | None]] = Counter()
        #: one count per LATENCY_BUCKETS entry plus the +Inf bucket (not cumulative)
        self.latency_counts: list[int] = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        #: packets dropped without a reply, by reason ("response", "short", "acl", ...)
        self.dropped: Counter[str] = Counter()
        #: answers from the answer cache per slot, not yet folded into the counters
        self.hits: list[int] = []
        #: answers from the answer cache, in total
        self.cache_hits = 0
        #: UDP replies the rate limiter dropped, and sent truncated instead (gslb.ratelimit); not
        #: counted in ``queries``
        self.rrl_dropped = 0
        self.rrl_slipped = 0
        #: queries with a COOKIE option by verdict (``gslb.cookies.Verdict`` values)
        self._cookies: Counter[str] = Counter()
        self._slots: dict[tuple, int] = {}
        self._slot_keys: list[tuple] = []
        #: per slot, the hits already added to the counters
        self._folded: list[int] = []

    @property
    def queries(self) -> Counter[tuple[str, str, str]]:
        """(zone key or "", qtype name, rcode name) -> answered queries (cache hits included)."""
        self.fold()
        return self._queries

    @property
    def site_answers(self) -> Counter[tuple[str, str, str]]:
        """(zone key, pool, site) -> how many answers included the site (cache hits included)."""
        self.fold()
        return self._site_answers

    @property
    def countries(self) -> Counter[tuple[str, str, str | None]]:
        """(zone key, pool, country or None) -> pool answers (cache hits included): the traffic
        ``gslb plan``'s query shares weigh by (``gslb.trafficmap``)."""
        self.fold()
        return self._countries

    @property
    def cookies(self) -> Counter[str]:
        """Verdict ("valid", "client_only", "invalid", "malformed") -> queries with a COOKIE option
        (cache hits included)."""
        self.fold()
        return self._cookies

    def cookie(self, verdict: str) -> None:
        """Count one query's COOKIE option verdict (answers computed, not from the cache)."""
        self._cookies[verdict] += 1

    def query(self, zone: str, qtype: str, rcode: str, seconds: float) -> None:
        """Count one answered query."""
        self._queries[(zone, qtype, rcode)] += 1
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def answered_sites(self, zone: str, pool: str, sites: tuple[str, ...], country: str | None = None) -> None:
        """Count the sites that went into one pool answer, and the client's country."""
        for site in sites:
            self._site_answers[(zone, pool, site)] += 1
        self._countries[(zone, pool, country)] += 1

    def slot(self, zone: str, qtype: str, rcode: str, pool: tuple[str, str] | None,
             sites: tuple[str, ...], cookie: str = "", country: str | None = None) -> int:
        """The slot standing for one kind of answer (the answer cache stores it with the reply);
        ``cookie``: the COOKIE verdict of the query ("" without one); ``country``: the client's,
        for a pool answer that holds for the clients of one network only (else None)."""
        key = (zone, qtype, rcode, pool, sites, cookie, country)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = len(self._slot_keys)
            self._slot_keys.append(key)
            self.hits.append(0)
            self._folded.append(0)
        return slot

    def reset_slots(self) -> None:
        """Start the slot registry over (after a fold; the answer cache must start over with it)."""
        self.fold()
        self._slots = {}
        self._slot_keys = []
        self.hits = []
        self._folded = []

    def fold(self) -> None:
        """Add the answers counted per slot since the last fold to the counters (done before every
        read). ``hits`` only grows (the UDP threads increment it without a lock); what was folded
        is remembered per slot instead of zeroing it, so no concurrent increment is lost."""
        hits = self.hits
        folded = self._folded
        keys = self._slot_keys
        for slot in range(len(folded)):
            n = hits[slot]
            new = n - folded[slot]
            if new:
                folded[slot] = n
                zone, qtype, rcode, pool, sites, cookie, country = keys[slot]
                self._queries[(zone, qtype, rcode)] += new
                self.cache_hits += new
                if cookie:
                    self._cookies[cookie] += new
                if pool is not None:
                    for site in sites:
                        self._site_answers[(pool[0], pool[1], site)] += new
                    self._countries[(pool[0], pool[1], country)] += new

    def snapshot(self) -> dict:
        """The cumulative counters as plain values (what a DNS worker process reports)."""
        self.fold()
        return {"queries": dict(self._queries), "site_answers": dict(self._site_answers),
                "countries": dict(self._countries),
                "latency_counts": list(self.latency_counts), "latency_sum": self.latency_sum,
                "dropped": dict(self.dropped), "cache_hits": self.cache_hits,
                "rrl_dropped": self.rrl_dropped, "rrl_slipped": self.rrl_slipped, "cookies": dict(self._cookies)}

    def absorb(self, snapshot: dict) -> None:
        """Add another process's counters (a :meth:`snapshot`) to these."""
        self.fold()
        self._queries.update(snapshot["queries"])
        self._site_answers.update(snapshot["site_answers"])
        self._countries.update(snapshot.get("countries", {}))
        for i, n in enumerate(snapshot["latency_counts"][:len(self.latency_counts)]):
            self.latency_counts[i] += n
        self.latency_sum += snapshot["latency_sum"]
        self.dropped.update(snapshot["dropped"])
        self.cache_hits += snapshot["cache_hits"]
        self.rrl_dropped += snapshot.get("rrl_dropped", 0)
        self.rrl_slipped += snapshot.get("rrl_slipped", 0)
        self._cookies.update(snapshot.get("cookies", {}))

    @classmethod
    def total(cls, parts: Iterable["QueryStats | dict"]) -> "QueryStats":
        """A new QueryStats holding the sum of ``parts`` (QueryStats objects or snapshots)."""
        out = cls()
        for part in parts:
            out.absorb(part.snapshot() if isinstance(part, QueryStats) else part)
        return out

    def retain(self, zones: Iterable[Zone]) -> None:
        """Keep only the series of zones, pools and pool sites that ``zones`` still has (after a
        reload); queries outside every zone (zone "") are kept."""
        self.fold()
        live = {zone.key for zone in zones}
        for key in [k for k in self._queries if k[0] and k[0] not in live]:
            del self._queries[key]
        answers = {(zone.key, pool.name, site) for zone in zones
                   for pool in zone.pools.values() for site in pool.sites}
        for key in [k for k in self._site_answers if k not in answers]:
            del self._site_answers[key]
        pools = {(zone.key, name) for zone in zones for name in zone.pools}
        for ckey in [k for k in self._countries if k[:2] not in pools]:
            del self._countries[ckey]
