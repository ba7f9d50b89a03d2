"""The live traffic map and plan of a running server (``/api/v1/map``, ``/api/v1/plan``).

The per-network work (:mod:`gslb.trafficmap` over the GeoIP index) runs in the builder process
(:mod:`gslb.scopebuilder`, :meth:`ScopeService.job`), never in a DNS process: the event loop only
derives each pool's inputs from the live state view (a :class:`gslb.balancer.ScopeSpec`: the
pool as loaded, its sites, their verdicts under the pool's quorum) and awaits the result.

Maps are cached per (database generation, spec), that is per (zone version, verdicts): a map
asked again under the same inputs costs a dict lookup. Pools whose map was asked in the last
:data:`WATCH_SECONDS` are recomputed as soon as a state view changes their inputs (an override,
a failed check), so the dashboard's next poll (every second) finds the new map ready.

Query weights: the DNS processes count pool answers per (zone, pool, client country)
(:attr:`gslb.stats.QueryStats.countries`); a :class:`gslb.trafficmap.TrafficWindow` sampled every
minute gives the counts of the last hour (:data:`WINDOW_SECONDS`), which the plan weighs its
moves by.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Mapping

from gslb.balancer import ScopeSpec
from gslb.model import StateView, Zone, ZoneSet
from gslb.scopebuilder import ScopeService
from gslb.trafficmap import TrafficWindow, per_country, pool_names, spec_of, weigh_queries

logger = logging.getLogger(__name__)

#: the plan's query window (seconds) and the step of its samples
WINDOW_SECONDS = 3600.0
SAMPLE_SECONDS = 60.0
#: a pool whose map was asked this recently is recomputed when its inputs change
WATCH_SECONDS = 600.0
#: maps kept (by generation and spec)
KEPT_MAPS = 128


class MapError(Exception):
    """An unknown zone, pool or site (404), or a bad request (400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def pool_states(zone: Zone, pool: str, view: StateView) -> dict[str, str]:
    """The verdict of each site of a pool under its quorum, as the balancer sees it."""
    quorum = zone.pools[pool].quorum
    return {name: view.site(zone.key, name).state(quorum) for name in zone.pools[pool].sites}


class MapService:
    """Maps and plans against the live state (every method runs on the event loop).

    ``builder()`` returns the current builder service, ``zones()`` the served zones, ``view()``
    the current state view, ``counts()`` the cumulative (zone, pool, country) counters of every
    DNS process.
    """

    def __init__(self, builder: Callable[[], ScopeService], zones: Callable[[], ZoneSet],
                 view: Callable[[], StateView], counts: Callable[[], Mapping[tuple[str, str, str | None], int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._builder = builder
        self._zones = zones
        self._view = view
        self._counts = counts
        self._clock = clock
        self.window = TrafficWindow(WINDOW_SECONDS, SAMPLE_SECONDS)
        self._maps: dict[tuple[int, ScopeSpec], list[dict[str, Any]]] = {}
        self._pending: dict[tuple[int, ScopeSpec], asyncio.Future[list[dict[str, Any]]]] = {}
        self._watched: dict[tuple[str, str], float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _zone(self, name: str) -> Zone:
        zone = self._zones().by_key(name.strip().lower().rstrip("."))
        if zone is None:
            raise MapError(404, f"unknown zone {name!r}")
        return zone

    # -- the map ---------------------------------------------------------------------------------

    async def map(self, zone_name: str, pool: str) -> dict[str, Any]:
        """``GET /api/v1/map``: the pool's rows per (country, answer) under the live verdicts."""
        zone = self._zone(zone_name)
        if pool not in zone.pools:
            raise MapError(404, f"unknown pool {pool!r} in zone {zone.key}")
        self._watched[(zone.key, pool)] = self._clock()
        spec = spec_of(zone, pool, pool_states(zone, pool, self._view()))
        rows = await self._map_of(spec)
        return {"zone": zone.key, "pool": pool, "policy": zone.pools[pool].policy,
                "sites": list(zone.pools[pool].sites), "countries": rows}

    async def _map_of(self, spec: ScopeSpec) -> list[dict[str, Any]]:
        builder = self._builder()
        key = (builder.generation, spec)
        got = self._maps.get(key)
        if got is not None:
            return got
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(builder.job("map", spec))
            pending.add_done_callback(lambda f: self._done(key, f))
        try:
            return await asyncio.shield(pending)
        except RuntimeError as exc:
            raise MapError(503, f"traffic map: {exc}") from None

    def _done(self, key: tuple[int, ScopeSpec], future: asyncio.Future[list[dict[str, Any]]]) -> None:
        self._pending.pop(key, None)
        if future.cancelled() or future.exception() is not None:
            return
        if len(self._maps) >= KEPT_MAPS:
            del self._maps[next(iter(self._maps))]
        self._maps[key] = future.result()

    def view_changed(self) -> None:
        """A new state view: recompute the maps of watched pools whose inputs changed."""
        now = self._clock()
        zones = self._zones()
        view = self._view()
        for (zone_key, pool), when in list(self._watched.items()):
            zone = zones.by_key(zone_key)
            if now - when > WATCH_SECONDS or zone is None or pool not in zone.pools:
                del self._watched[(zone_key, pool)]
                continue
            spec = spec_of(zone, pool, pool_states(zone, pool, view))
            if (self._builder().generation, spec) not in self._maps:
                task = asyncio.ensure_future(self._map_of(spec))
                self._tasks.add(task)
                task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("map: %s", task.exception())

    # -- the plan --------------------------------------------------------------------------------

    async def plan(self, zone_name: str, down: list[str], drain: list[str],
                   proposed: Zone | None = None) -> dict[str, Any]:
        """``/api/v1/plan``: what changes from the live state to the live state with ``down`` and
        ``drain`` sites (and under the ``proposed`` zone, when given)."""
        zone = self._zone(zone_name)
        after = proposed if proposed is not None else zone
        if after.key != zone.key:
            raise MapError(400, f"the proposed zone is {after.key}, not {zone.key}")
        overrides: dict[str, str] = {}
        for site, state in [(s, "down") for s in down] + [(s, "drain") for s in drain]:
            if site not in zone.sites and site not in after.sites:
                raise MapError(404, f"unknown site {site!r} in zone {zone.key}")
            overrides[site] = state
        view = self._view()
        jobs = []
        for name in pool_names(zone, after):
            a = spec_of(zone, name, pool_states(zone, name, view)) if name in zone.pools else None
            b = None
            if name in after.pools:
                # the live verdicts by site name (a site the proposed zone adds: unknown, i.e. up)
                live = pool_states(after, name, view)
                live.update({s: st for s, st in overrides.items() if s in live})
                b = spec_of(after, name, live)
            jobs.append((name, a, b))
        try:
            pools = await self._builder().job("plan", jobs)
        except RuntimeError as exc:
            raise MapError(503, f"plan: {exc}") from None
        now = self._clock()
        counts = self.window.recent(now, self._counts())
        for pool in pools:
            weigh_queries(pool, per_country(counts, zone.key, pool["pool"]))
        return {"zone": zone.key, "pools": pools, "queries_window_seconds": int(WINDOW_SECONDS)}

    # -- the query window ------------------------------------------------------------------------

    async def sample_every(self, period: float = SAMPLE_SECONDS) -> None:
        """Sample the counters into the window every ``period`` seconds (a task; runs until cancelled)."""
        while True:
            self.window.sample(self._clock(), self._counts())
            await asyncio.sleep(period)

    async def close(self) -> None:
        """Cancel the recomputations in flight."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
