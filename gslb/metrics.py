"""Prometheus metrics: a custom collector that reads gslb's plain counters at scrape time.

Nothing on the DNS path or in the health monitor touches prometheus-client: the DNS path bumps
``QueryStats`` (gslb/stats.py) and the monitor bumps ``CheckStats`` (below); the collector turns
both, the site-state table and the reload counters into metric families when /metrics is read.
The collector lives in its own ``CollectorRegistry`` (never the process-global one), so several
servers in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import Counter
from typing import Any, Iterator, get_args

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gslb.model import SiteState
from gslb.stats import LATENCY_BUCKETS

logger = logging.getLogger(__name__)

#: upper bounds (seconds) of the check-duration histogram buckets
CHECK_DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: the states a site can be in, one series each in gslb_site_state
SITE_STATES: tuple[str, ...] = get_args(SiteState)


class CheckStats:
    """Health-check counters of one process, bumped by the monitor (one call per probe)."""

    __slots__ = ("results", "duration_counts", "duration_sums")

    def __init__(self) -> None:
        #: (zone key, site, check, result) -> count; result is "pass" or "fail"
        self.results: Counter[tuple[str, str, str, str]] = Counter()
        #: (zone key, site, check) -> one count per CHECK_DURATION_BUCKETS entry plus +Inf (not cumulative)
        self.duration_counts: dict[tuple[str, str, str], list[int]] = {}
        #: (zone key, site, check) -> total seconds
        self.duration_sums: dict[tuple[str, str, str], float] = {}

    def observe(self, zone: str, site: str, check: str, passed: bool, seconds: float | None) -> None:
        """Count one probe of ``check`` on ``site`` that took ``seconds`` (None: duration unknown)."""
        self.results[(zone, site, check, "pass" if passed else "fail")] += 1
        if seconds is None:
            return
        key = (zone, site, check)
        counts = self.duration_counts.get(key)
        if counts is None:
            counts = self.duration_counts[key] = [0] * (len(CHECK_DURATION_BUCKETS) + 1)
            self.duration_sums[key] = 0.0
        counts[bisect_left(CHECK_DURATION_BUCKETS, seconds)] += 1
        self.duration_sums[key] += seconds

    def on_probe(self, target: Any, result: Any, state: Any = None) -> None:
        """Monitor observer (``Monitor.add_observer(check_stats.on_probe)``): count one probe.

        ``target`` has ``zone``, ``site``, ``check_name`` and ``check.timeout``; ``result`` has
        ``ok``, ``rtt_ms`` and ``error``. A probe that timed out counts the check's timeout as its
        duration; other failures without a round-trip time count no duration.
        """
        seconds: float | None = None
        if result.rtt_ms is not None:
            seconds = result.rtt_ms / 1000.0
        elif (result.error or "").startswith("timeout"):
            seconds = float(target.check.timeout)
        self.observe(target.zone, target.site, target.check_name, bool(result.ok), seconds)

    def retain(self, zones: Any) -> None:
        """Keep only the series of (zone, site, check) that ``zones`` still has (after a reload):
        a removed zone or site, or a check no longer used by a site, drops its series."""
        keep = {(zone.key, site.name, check) for zone in zones
                for site in zone.sites.values() for check in site.checks}
        for key in [k for k in self.results if k[:3] not in keep]:
            del self.results[key]
        for key in [k for k in self.duration_counts if k not in keep]:
            del self.duration_counts[key]
            del self.duration_sums[key]


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, int]]:
    """Prometheus histogram buckets (cumulative, with +Inf) from per-bucket counts."""
    out: list[tuple[str, int]] = []
    total = 0
    for bound, count in zip(bounds, counts):
        total += count
        out.append((repr(float(bound)), total))
    total += counts[-1]
    out.append(("+Inf", total))
    return out


class GslbCollector(Collector):
    """Reads the server's counters and state at scrape time (see the module docstring)."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        """Yield every gslb metric family."""
        server = self._server
        # every DNS process's counters (gslb.workers), or the one process's
        totals = getattr(server, "query_stats", None)
        stats = totals() if callable(totals) else server.stats

        queries = CounterMetricFamily(
            "gslb_queries", "DNS queries answered, by zone, query type and rcode",
            labels=["zone", "qtype", "rcode"])
        for (zone, qtype, rcode), n in sorted(stats.queries.items()):
            queries.add_metric([zone, qtype, rcode], n)
        yield queries

        latency = HistogramMetricFamily(
            "gslb_answer_latency_seconds", "Time from a query's arrival to its answer being ready")
        latency.add_metric([], _cumulative(LATENCY_BUCKETS, list(stats.latency_counts)),
                           sum_value=stats.latency_sum)
        yield latency

        answers = CounterMetricFamily(
            "gslb_pool_answers", "Pool answers that included a site", labels=["zone", "pool", "site"])
        for (zone, pool, site), n in sorted(stats.site_answers.items()):
            answers.add_metric([zone, pool, site], n)
        yield answers

        yield CounterMetricFamily(
            "gslb_answer_cache_hits", "DNS queries answered from the answer cache (also counted in gslb_queries)",
            value=stats.cache_hits)

        yield CounterMetricFamily(
            "gslb_rrl_dropped", "UDP replies the response rate limiter dropped (not in gslb_queries)",
            value=getattr(stats, "rrl_dropped", 0))
        yield CounterMetricFamily(
            "gslb_rrl_slipped", "UDP replies the response rate limiter sent truncated (TC=1, no records) "
            "instead of the answer (not in gslb_queries)", value=getattr(stats, "rrl_slipped", 0))

        dropped = CounterMetricFamily(
            "gslb_dropped", "Packets dropped without a reply, by reason", labels=["reason"])
        for reason, n in sorted(stats.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped

        cookies = CounterMetricFamily(
            "gslb_dns_cookies", "DNS queries with a COOKIE option, by verdict (valid, client_only, invalid, "
            "malformed)", labels=["verdict"])
        for verdict, n in sorted(stats.cookies.items()):
            cookies.add_metric([verdict], n)
        yield cookies

        yield from self._checks(getattr(server, "check_stats", None))
        yield from self._sites()

        reloads = CounterMetricFamily(
            "gslb_reloads", "Configuration and zone reloads, by result", labels=["result"])
        counts = getattr(server, "reloads", None) or {}
        for result in ("ok", "error"):
            reloads.add_metric([result], counts.get(result, 0))
        yield reloads

        backend = server.table.backend_status()
        yield GaugeMetricFamily(
            "gslb_state_backend_connected", "Whether the site-state table's backend is reachable (1) or not (0)",
            value=1 if backend.get("connected") else 0)
        yield CounterMetricFamily(
            "gslb_state_backend_errors", "Errors talking to the site-state table's backend",
            value=backend.get("errors", 0))

    def _checks(self, check_stats: CheckStats | None) -> Iterator[Metric]:
        results = CounterMetricFamily(
            "gslb_check_results", "Health-check probes, by result (pass or fail)",
            labels=["zone", "site", "check", "result"])
        durations = HistogramMetricFamily(
            "gslb_check_duration_seconds", "Health-check probe durations", labels=["zone", "site", "check"])
        if check_stats is not None:
            for (zone, site, check, result), n in sorted(check_stats.results.items()):
                results.add_metric([zone, site, check, result], n)
            for key, counts in sorted(check_stats.duration_counts.items()):
                durations.add_metric(list(key), _cumulative(CHECK_DURATION_BUCKETS, counts),
                                     sum_value=check_stats.duration_sums[key])
        yield results
        yield durations

    def _sites(self) -> Iterator[Metric]:
        zones = self._server.zone_store.zones
        table = self._server.table
        family = GaugeMetricFamily(
            "gslb_site_state", "Current state of each site (1 for the state it is in, 0 for the others)",
            labels=["zone", "site", "state"])
        for zone in zones:
            for name in sorted(zone.sites):
                current = table.site_state(zone.key, name)[1]
                for state in SITE_STATES:
                    family.add_metric([zone.key, name, state], 1 if state == current else 0)
        yield family


def make_registry(server: Any) -> CollectorRegistry:
    """A fresh registry holding one GslbCollector for ``server``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GslbCollector(server))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(registry)
