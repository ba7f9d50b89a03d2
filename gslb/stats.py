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
    """Query, answer and latency counters of one process."""

    __slots__ = ("queries", "site_answers", "latency_counts", "latency_sum", "dropped")

    def __init__(self) -> None:
        #: (zone key or "", qtype name, rcode name) -> count
        self.queries: Counter[tuple[str, str, str]] = Counter()
        #: (zone key, pool, site) -> how many answers included the site
        self.site_answers: Counter[tuple[str, str, str]] = Counter()
        #: one count per LATENCY_BUCKETS entry plus the +Inf bucket (not cumulative)
        self.latency_counts: list[int] = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        #: packets dropped without a reply, by reason ("response", "short", "acl", ...)
        self.dropped: Counter[str] = Counter()

    def query(self, zone: str, qtype: str, rcode: str, seconds: float) -> None:
        """Count one answered query."""
        self.queries[(zone, qtype, rcode)] += 1
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def answered_sites(self, zone: str, pool: str, sites: tuple[str, ...]) -> None:
        """Count the sites that went into one pool answer."""
        for site in sites:
            self.site_answers[(zone, pool, site)] += 1

    def retain(self, zones: Iterable[Zone]) -> None:
        """Keep only the series of zones, pools and pool sites that ``zones`` still has (after a
        reload); queries outside every zone (zone "") are kept."""
        live = {zone.key for zone in zones}
        for key in [k for k in self.queries if k[0] and k[0] not in live]:
            del self.queries[key]
        answers = {(zone.key, pool.name, site) for zone in zones
                   for pool in zone.pools.values() for site in pool.sites}
        for key in [k for k in self.site_answers if k not in answers]:
            del self.site_answers[key]
