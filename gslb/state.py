"""The site-state table: regional check results and operator overrides -> an immutable StateView.

- Writers: the health monitor (``report``) and the HTTP API (``set_override``).
- Readers: the DNS path reads ``table.view`` once per query (an attribute read, no call, no
  lock: one event loop); the view is replaced as a whole whenever anything changes, and its
  ``version`` grows, so per-(pool, client network, version) decision caches stay correct.
- Backends store and share results/overrides; the table aggregates (staleness, which sites
  exist, unchecked sites) and builds views. A result or override written through the table
  rebuilds only its site at once; backend callbacks, reloads and the expiry timer rebuild all. Quorum is per pool, so the view carries the fresh
  regional results and ``SiteStatus.state(quorum)`` decides.

Staleness runs on a "connected-time" clock: a result expires ``stale_after`` seconds of
*connected* time after ``checked_at``. While the backend is unreachable the view is frozen (no
expiry at all), and every completed outage pushes the expiry of the results it overlapped by
the overlap, so an outage never turns a known-down site back up (SPEC: Health and the
site-state table). Expiry is exact without per-query work: a timer rebuilds the view at the
next expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Protocol, cast, get_args

from gslb.model import Override, RegionResult, SiteState, SiteStatus, StateView, ZoneSet

logger = logging.getLogger(__name__)

#: key of one site in the table: (zone key, site name)
SiteKey = tuple[str, str]

#: the override states (``model.Override``)
OVERRIDES: tuple[str, ...] = get_args(Override)

#: the states ``set_override`` accepts; ``auto`` removes the override
OVERRIDE_STATES: tuple[str, ...] = (*OVERRIDES, "auto")

#: quorum used for the "recent changes" verdict of a site that is in no pool
DEFAULT_QUORUM = 0.5

#: how many verdict changes ``SiteStateTable.changes`` keeps
MAX_CHANGES = 200


class StateBackend(Protocol):
    """Where results and overrides live: process memory, or Redis shared by a cluster."""

    url: str

    @property
    def connected(self) -> bool:
        """Whether the shared table is reachable now (always True in memory)."""

    async def start(self, on_change: Callable[[], None]) -> None:
        """Connect (never raise for an unreachable store: retry with backoff in the background).

        ``on_change`` is called whenever results or overrides may have changed, including on
        connect/disconnect and after each full resynchronisation.
        """

    async def close(self) -> None:
        """Disconnect and stop background tasks."""

    async def put_result(self, key: SiteKey, region: str, result: RegionResult) -> None:
        """Store one region's result for a site (kept at least result.stale_after seconds)."""

    async def put_override(self, key: SiteKey, state: Override | None) -> None:
        """Store (or with None remove) an operator override; durable."""

    def results(self) -> dict[SiteKey, dict[str, RegionResult]]:
        """The latest results known to this node (last known when disconnected)."""

    def overrides(self) -> dict[SiteKey, Override]:
        """The overrides known to this node (last known when disconnected)."""


class MemoryBackend:
    """The single-node backend: results and overrides in this process's memory.

    The table rebuilds its view after its own writes, so ``put_*`` do not call ``on_change``.
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._results: dict[SiteKey, dict[str, RegionResult]] = {}
        self._overrides: dict[SiteKey, Override] = {}

    @property
    def connected(self) -> bool:
        """Always True: memory is always reachable."""
        return True

    async def start(self, on_change: Callable[[], None]) -> None:
        """Nothing to connect; tells the table once that data may be there."""
        on_change()

    async def close(self) -> None:
        """Nothing to release."""

    async def put_result(self, key: SiteKey, region: str, result: RegionResult) -> None:
        """Store one region's result for a site."""
        self._results.setdefault(key, {})[region] = result

    async def put_override(self, key: SiteKey, state: Override | None) -> None:
        """Store or remove an override (kept for the life of the process)."""
        if state is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = state

    def results(self) -> dict[SiteKey, dict[str, RegionResult]]:
        """A copy of every stored result."""
        return {key: dict(regions) for key, regions in self._results.items()}

    def overrides(self) -> dict[SiteKey, Override]:
        """A copy of every override."""
        return dict(self._overrides)


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """What the table needs to know about a configured site."""

    unchecked: bool
    #: quorum used to name its verdict in "recent changes" (its first pool's quorum)
    quorum: float = DEFAULT_QUORUM


@dataclass(frozen=True, slots=True)
class Change:
    """One verdict change of a site, for the dashboard's "recent changes"."""

    at: float  # wall-clock seconds
    zone: str
    site: str
    old: SiteState
    new: SiteState


def sites_of(zones: ZoneSet) -> dict[SiteKey, SiteConfig]:
    """Every site of every zone with whether it is unchecked and its first pool's quorum."""
    sites: dict[SiteKey, SiteConfig] = {}
    for zone in zones:
        quorum: dict[str, float] = {}
        for pool in zone.pools.values():
            for name in pool.sites:
                quorum.setdefault(name, pool.quorum)
        for site in zone.sites.values():
            sites[(zone.key, site.name)] = SiteConfig(
                unchecked=not site.checks, quorum=quorum.get(site.name, DEFAULT_QUORUM))
    return sites


def expires_at(result: RegionResult, outages: Iterable[tuple[float, float]]) -> float:
    """Wall time at which ``result`` turns stale: ``stale_after`` of connected time after checking.

    Every completed outage ``(start, end)`` that overlaps ``[checked_at, ...)`` pushes the expiry
    by the overlap: time during which the table was unreachable does not count.
    """
    expiry = result.checked_at + result.stale_after
    for start, end in outages:
        overlap = end - max(start, result.checked_at)
        if overlap > 0:
            expiry += overlap
    return expiry


def build_sites(
    sites: Mapping[SiteKey, SiteConfig],
    results: Mapping[SiteKey, Mapping[str, RegionResult]],
    overrides: Mapping[SiteKey, Override],
    now: float,
    outages: tuple[tuple[float, float], ...] = (),
) -> tuple[dict[SiteKey, SiteStatus], float | None]:
    """Aggregate results and overrides of the configured sites at ``now`` (pure).

    Returns the view's site map and the earliest future expiry among the fresh results (None
    when nothing will expire). Results and overrides of unconfigured sites are ignored.
    """
    out: dict[SiteKey, SiteStatus] = {}
    next_expiry: float | None = None
    for key, cfg in sites.items():
        fresh: dict[str, RegionResult] = {}
        for region, result in (results.get(key) or {}).items():
            expiry = expires_at(result, outages)
            if now < expiry:
                fresh[region] = result
                if next_expiry is None or expiry < next_expiry:
                    next_expiry = expiry
        out[key] = SiteStatus(
            regions=MappingProxyType(dict(sorted(fresh.items()))),
            override=overrides.get(key),
            unchecked=cfg.unchecked,
        )
    return out, next_expiry


def _zone_key(zone: str) -> str:
    """A zone key as the table stores it: lower-case, no trailing dot."""
    zone = zone.lower()
    return zone[:-1] if zone.endswith(".") else zone


class SiteStateTable:
    """Regional results + overrides of every configured site, published as ``.view``."""

    def __init__(self, backend: StateBackend, *, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock
        #: the current immutable snapshot; replaced as a whole on every change
        self.view = StateView()
        #: recent verdict changes, newest last
        self.changes: deque[Change] = deque(maxlen=MAX_CHANGES)
        self._sites: dict[SiteKey, SiteConfig] = {}
        #: sites that had a verdict other than unknown (for "recent changes")
        self._seen: set[SiteKey] = set()
        self._listeners: list[Callable[[StateView, StateView], None]] = []
        #: the backend's reachability as last seen (None: never asked yet)
        self._connected: bool | None = None
        self._outage_start: float | None = None
        self._outages: list[tuple[float, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        #: wall time the expiry timer fires at (None: not armed)
        self._timer_at: float | None = None
        self._started = False
        #: the backend's results and overrides as last read (kept up to date by this table's own
        #: writes, so one probe result rebuilds one site; used when a read fails)
        self._results: dict[SiteKey, dict[str, RegionResult]] = {}
        self._overrides: dict[SiteKey, Override] = {}

    # -- configuration and lifecycle

    def configure(self, zones: ZoneSet) -> None:
        """Take the set of sites from ``zones``; results of sites that stay are kept."""
        self._sites = sites_of(zones)
        self._seen &= set(self._sites)
        self._rebuild()  # always publishes the new site set (last known data if a read fails)

    async def start(self) -> None:
        """Start the backend (it calls back on every change) and build the first view."""
        self._started = True
        await self.backend.start(self._on_backend_change)
        self._on_backend_change()

    async def close(self) -> None:
        """Stop the expiry timer and close the backend."""
        self._started = False
        self._cancel_timer()
        await self.backend.close()

    def backend_status(self) -> dict[str, Any]:
        """``{"url", "connected", "errors"}`` for the status API and metrics."""
        return {"url": self.backend.url, "connected": bool(self.backend.connected),
                "errors": int(getattr(self.backend, "errors", 0))}

    def add_listener(self, callback: Callable[[StateView, StateView], None]) -> None:
        """Call ``callback(old_view, new_view)`` after every view change."""
        self._listeners.append(callback)

    def site_state(self, zone: str, site: str) -> tuple[SiteStatus, SiteState]:
        """A site's status in the current view and its overall verdict, judged with the quorum
        of the first pool that lists it (DEFAULT_QUORUM for a site in no pool)."""
        key = (_zone_key(zone), site)
        status = self.view.site(*key)
        cfg = self._sites.get(key)
        return status, status.state(cfg.quorum if cfg is not None else DEFAULT_QUORUM)

    # -- writers

    async def report(self, zone: str, site: str, region: str, result: RegionResult) -> None:
        """Store one region's result for a site and publish the new view (unknown sites: ignored)."""
        key = (_zone_key(zone), site)
        if key not in self._sites:
            logger.debug("state: result for unknown site %s/%s ignored", *key)
            return
        try:
            await self.backend.put_result(key, region, result)
        except Exception as exc:  # the backend keeps retrying on its own; checks go on
            logger.warning("state: cannot store result of %s/%s: %s", key[0], key[1], exc)
        else:
            self._results.setdefault(key, {})[region] = result
        self._rebuild_site(key)

    async def set_override(self, zone: str, site: str, state: str) -> None:
        """Set an operator override (``up``, ``down``, ``drain``) or remove it (``auto``).

        Raises KeyError for an unknown zone or site, ValueError for an unknown state.
        """
        if state not in OVERRIDE_STATES:
            raise ValueError(f"override: state {state!r} is not one of {', '.join(OVERRIDE_STATES)}")
        key = (_zone_key(zone), site)
        if key not in self._sites:
            raise KeyError(f"{key[0]}/{site}")
        override = None if state == "auto" else cast(Override, state)  # one of OVERRIDE_STATES: checked above
        await self.backend.put_override(key, override)
        logger.info("state: override of %s/%s set to %s", key[0], site, state)
        if override is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = override
        self._rebuild_site(key)

    # -- view building

    def refresh(self) -> None:
        """Rebuild the view now (normally done by writes, backend callbacks and the expiry timer)."""
        self._rebuild()

    def connected_now(self) -> float:
        """The time staleness is judged at: now, or the start of the current outage (frozen)."""
        return self._outage_start if self._outage_start is not None else self.clock()

    def _on_backend_change(self) -> None:
        """Backend callback: note connect/disconnect transitions, then rebuild."""
        connected = bool(self.backend.connected)
        if connected != self._connected:
            now = self.clock()
            if connected and self._outage_start is not None:
                start = self._outage_start
                self._outages.append((start, now))
                self._outage_start = None
                logger.info("state: backend %s reachable again after %.1fs; staleness resumes",
                            self.backend.url, now - start)
            elif not connected and self._connected:
                # Only an outage after a connection freezes anything: before the first one this
                # node knows nothing shared, and its own results stay fresh by its heartbeats.
                self._outage_start = now
                logger.warning("state: backend %s unreachable; keeping the last known states frozen",
                               self.backend.url)
            self._connected = connected
        self._rebuild()

    def _rebuild(self) -> None:
        """Rebuild the whole view from the backend; publish it only when something changed.

        When the backend cannot be read, the last data read (plus this table's own writes) is
        used, so a new site set is always published.
        """
        try:
            self._results = self.backend.results()
            self._overrides = self.backend.overrides()
        except Exception as exc:
            logger.warning("state: cannot read backend %s: %s", self.backend.url, exc)
        now = self.connected_now()
        sites, next_expiry = build_sites(self._sites, self._results, self._overrides, now,
                                         tuple(self._outages))
        self._prune_outages(self._results)
        self._schedule(next_expiry)
        old = self.view
        if dict(old.sites) == sites:
            return
        self._publish(old, StateView(version=old.version + 1, sites=MappingProxyType(sites)), sites)

    def _rebuild_site(self, key: SiteKey) -> None:
        """Rebuild one site after this table's own write to it; publish at once when it changed.

        The other sites are copied unchanged (their expiry is the timer's business).
        """
        now = self.connected_now()
        one, expiry = build_sites({key: self._sites[key]}, self._results, self._overrides, now,
                                  tuple(self._outages))
        if expiry is not None and self._outage_start is None and (
                self._timer_at is None or expiry < self._timer_at):
            self._schedule(expiry)
        old = self.view
        status = one[key]
        if old.sites.get(key) == status:
            return
        sites = dict(old.sites)
        sites[key] = status
        self._publish(old, StateView(version=old.version + 1, sites=MappingProxyType(sites)), one)

    def _publish(self, old: StateView, new: StateView, changed: Mapping[SiteKey, SiteStatus]) -> None:
        """Replace the view, note verdict changes among ``changed``, tell the listeners."""
        self.view = new
        self._note_changes(old, changed)
        for callback in self._listeners:
            try:
                callback(old, new)
            except Exception:
                logger.exception("state: listener %r failed", callback)

    def _note_changes(self, old: StateView, changed: Mapping[SiteKey, SiteStatus]) -> None:
        """Append verdict changes of the ``changed`` sites that ``old`` has too to ``changes``.

        A site's first verdict "up" after "unknown" (start-up, new site) is not a change worth
        showing: unknown already counted as up. A first verdict "down" is.
        """
        at = self.clock()
        for key, status in changed.items():
            before = old.sites.get(key)
            if before is None:
                continue
            quorum = self._sites[key].quorum
            was, now = before.state(quorum), status.state(quorum)
            if was == now:
                continue
            first = key not in self._seen
            self._seen.add(key)
            if first and was == "unknown" and now == "up":
                continue
            self.changes.append(Change(at, key[0], key[1], was, now))
            logger.info("state: %s/%s %s -> %s", key[0], key[1], was, now)

    def _prune_outages(self, results: Mapping[SiteKey, Mapping[str, RegionResult]]) -> None:
        """Forget outages that ended before the oldest stored result was checked."""
        if not self._outages:
            return
        oldest = min((r.checked_at for regions in results.values() for r in regions.values()),
                     default=None)
        if oldest is None:
            return
        self._outages = [o for o in self._outages if o[1] > oldest]

    def _schedule(self, next_expiry: float | None) -> None:
        """Arm the timer for the next expiry (none while the backend is unreachable)."""
        self._cancel_timer()
        if next_expiry is None or self._outage_start is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, next_expiry - self.clock()) + 0.001
        self._timer = loop.call_later(delay, self._rebuild)
        self._timer_at = next_expiry

    def _cancel_timer(self) -> None:
        """Disarm the expiry timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None
