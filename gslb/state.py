"""The site-state table: regional check results and operator overrides -> an immutable StateView.

- Writers: the health monitor (``report``) and the HTTP API (``set_override``).
- Readers: the DNS path reads ``table.view`` once per query (an attribute read, no call, no
  lock: one event loop); the view is replaced as a whole whenever anything changes, and its
  ``version`` grows, so per-(pool, client network, version) decision caches stay correct.
- Who holds what: the **backend owns** the results and overrides (process memory, or this
  node's copy of Redis: it merges other nodes' writes, keeps them through an outage and writes
  them back to a Redis that lost its data, so it must hold them), and it owns the
  ``OutageClock``. The table holds neither: it reads the backend's mappings in place (no copy)
  whenever it builds a view. The **view is a derived snapshot**: only the fresh results of the
  configured sites, aggregated, immutable, so the DNS path can read it from any thread without
  a lock while the next one is built. When the backend cannot be read, the table rebuilds from
  the current view (the last data it published), so a new site set is still published.
- The table aggregates (staleness, which sites exist, unchecked sites) and builds views. A result
  or override written through the table rebuilds only its site at once; backend callbacks,
  reloads and the expiry timer rebuild all. Quorum is per pool, so the view carries the fresh
  regional results and ``SiteStatus.state(quorum)`` decides.

Staleness runs on a "connected-time" clock (``OutageClock``, the rules are in its docstring): a
result expires ``stale_after`` seconds of *connected* time after ``checked_at``. While the
backend is unreachable the view is frozen (no expiry at all), and every completed outage pushes
the expiry of the results it overlapped by the overlap, so an outage never turns a known-down
site back up (SPEC: Health and the site-state table). Expiry is exact without per-query work: a
timer rebuilds the view at the next expiry.

Errors: ``set_override`` raises ``UnknownSite`` (names the zone's sites, or the zones) and
``ValueError`` from ``parse_override``, the one validator of override states (the HTTP API and
the Redis backend call it too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Protocol, get_args

from gslb.errors import GslbError
from gslb.model import Override, RegionResult, SiteKey, SiteState, SiteStatus, StateView, ZoneSet

__all__ = [
    "SiteKey", "OVERRIDES", "OVERRIDE_STATES", "DEFAULT_QUORUM", "CHANGES_KEPT", "OutageClock",
    "NEVER_DOWN", "UnknownSite", "parse_override", "StateBackend", "MemoryBackend", "SiteConfig",
    "Change", "sites_of", "expires_at", "build_sites", "SiteStateTable",
]

logger = logging.getLogger(__name__)

#: the override states (``model.Override``)
OVERRIDES: tuple[Override, ...] = get_args(Override)

#: the states ``set_override`` (and the HTTP API) accept; ``auto`` removes the override
OVERRIDE_STATES: tuple[str, ...] = (*OVERRIDES, "auto")

#: quorum used for the "recent changes" verdict of a site that is in no pool
DEFAULT_QUORUM = 0.5

#: how many verdict changes ``SiteStateTable.changes`` keeps (the status API lists fewer:
#: ``http_api.STATUS_CHANGES_LISTED``)
CHANGES_KEPT = 200

#: how many names an ``UnknownSite`` message lists before "and N more"
_LISTED = 20


def parse_override(value: object, *, removal: str | None = "auto") -> Override | None:
    """The one validator of an override state: one of ``OVERRIDES`` -> it, ``removal`` -> None.

    The HTTP API and ``SiteStateTable.set_override`` take ``"auto"`` for "no override" (the
    default); the Redis layout stores a removal as JSON null (``removal=None``). Anything else
    raises ValueError naming what is accepted, e.g. ``state: expected one of up, down, drain or
    auto, got 'maintenance'``.
    """
    for state in OVERRIDES:
        if value == state and isinstance(value, str):
            return state
    if value is None if removal is None else (isinstance(value, str) and value == removal):
        return None
    accepted = ", ".join(OVERRIDES) + (" or null" if removal is None else f" or {removal}")
    raise ValueError(f"state: expected one of {accepted}, got {value!r}")


class UnknownSite(GslbError, LookupError):
    """A zone or site the site-state table does not know (yet: a reload may be in progress).

    ``zone`` and ``site`` as asked; ``zone_known`` tells which of the two is unknown; ``known``
    lists what exists instead: the zone's sites when the zone is known, else the zones.
    """

    def __init__(self, zone: str, site: str, sites: Iterable[SiteKey]) -> None:
        keys = list(sites)
        self.zone = zone
        self.site = site
        self.zone_known = any(z == zone for z, _ in keys)
        if self.zone_known:
            self.known: tuple[str, ...] = tuple(sorted(s for z, s in keys if z == zone))
            text = f"zone {zone!r} has no site {site!r} (its sites: {_listing(self.known)})"
        else:
            self.known = tuple(sorted({z for z, _ in keys}))
            text = f"unknown zone {zone!r} (zones: {_listing(self.known)})"
        super().__init__(text)


def _listing(names: tuple[str, ...]) -> str:
    """``a, b, c`` (at most _LISTED names, then "and N more"; "none" when empty)."""
    if not names:
        return "none"
    shown = ", ".join(names[:_LISTED])
    return shown if len(names) <= _LISTED else f"{shown} and {len(names) - _LISTED} more"


def expires_at(result: RegionResult, outages: Iterable[tuple[float, float]]) -> float:
    """Wall time at which ``result`` turns stale: ``stale_after`` of connected time after checking.

    Every outage ``(start, end)`` that overlaps ``[checked_at, ...)`` pushes the expiry by the
    overlap: time during which the table was unreachable does not count.
    """
    expiry = result.checked_at + result.stale_after
    for start, end in outages:
        overlap = end - max(start, result.checked_at)
        if overlap > 0:
            expiry += overlap
    return expiry


@dataclass(frozen=True, slots=True)
class OutageClock:
    """How long the state backend has been unreachable: the one clock staleness is judged by.

    A pure value: times in, a new ``OutageClock`` out (no clock of its own, nothing changes in
    place). The backend owns one and replaces it at every connect and disconnect
    (``on_connect``/``on_disconnect``) and prunes it (``pruned``); the table reads it whenever it
    builds a view (``judged_at``, ``outages``, ``frozen``). The rules:

    1. An outage begins when a connection is *lost*. Not reaching the backend before the first
       connection is no outage: this node knew nothing shared that it could keep, and its own
       results age as usual (``on_disconnect`` on a clock never connected changes nothing).
    2. During an outage staleness is frozen at its start (``judged_at``): no result expires, so
       an outage never turns a known-down site back up (SPEC: Health and the site-state table).
    3. When the connection is back the outage is complete: it pushes the expiry of every result
       checked before it ended by the part of the outage after the check (``expires_at``), so
       staleness counts again from the reconnection and the connected time before the outage
       still counts.
    4. A completed outage is forgotten (``pruned``) once no known result was checked before it
       ended: it can push nothing any more. With no results at all every completed outage is
       forgotten (a result checked later cannot overlap it).
    """

    #: whether the backend was ever connected (rule 1)
    ever_connected: bool = False
    #: start of the current outage; None while connected (or never connected)
    down_since: float | None = None
    #: completed outages ``(start, end)``, oldest first
    outages: tuple[tuple[float, float], ...] = ()

    @property
    def frozen(self) -> bool:
        """Whether an outage is going on: staleness stands still, no expiry timer is needed."""
        return self.down_since is not None

    def on_connect(self, now: float) -> OutageClock:
        """The backend is reachable at ``now``: completes the current outage (rule 3)."""
        if self.down_since is None:
            return self if self.ever_connected else replace(self, ever_connected=True)
        return OutageClock(True, None, (*self.outages, (self.down_since, now)))

    def on_disconnect(self, now: float) -> OutageClock:
        """The backend became unreachable at ``now``: an outage begins, unless the backend was
        never connected (rule 1) or one is already going on."""
        if not self.ever_connected or self.down_since is not None:
            return self
        return replace(self, down_since=now)

    def judged_at(self, now: float) -> float:
        """The time staleness is judged at: ``now``, or the start of the current outage (rule 2)."""
        return self.down_since if self.down_since is not None else now

    def expires_at(self, result: RegionResult, now: float) -> float:
        """Wall time at which ``result`` turns stale, the current outage counted up to ``now``.

        ``now < clock.expires_at(r, now)`` exactly when ``r`` is fresh at ``judged_at(now)``.
        """
        outages = self.outages
        if self.down_since is not None:
            outages = (*outages, (self.down_since, max(now, self.down_since)))
        return expires_at(result, outages)

    def pruned(self, results: Mapping[SiteKey, Mapping[str, RegionResult]]) -> OutageClock:
        """Without the completed outages that no result in ``results`` was checked before (rule 4)."""
        if not self.outages:
            return self
        oldest = min((r.checked_at for regions in results.values() for r in regions.values()),
                     default=None)
        kept = () if oldest is None else tuple(o for o in self.outages if o[1] > oldest)
        return self if kept == self.outages else replace(self, outages=kept)


#: the clock of a backend that is always reachable (memory)
NEVER_DOWN = OutageClock(ever_connected=True)


class StateBackend(Protocol):
    """Where results and overrides live: process memory, or Redis shared by a cluster.

    The backend owns them (the table keeps no copy) and owns the ``OutageClock``.
    """

    url: str

    @property
    def connected(self) -> bool:
        """Whether the shared table is reachable now (always True in memory)."""

    @property
    def outage(self) -> OutageClock:
        """The outage clock: how long the backend has been unreachable (``OutageClock``'s rules)."""

    async def start(self, on_change: Callable[[], None]) -> None:
        """Connect (never raise for an unreachable store: retry with backoff in the background).

        ``on_change`` is called whenever results, overrides or the outage clock may have
        changed, including on connect/disconnect and after each full resynchronisation.
        """

    async def close(self) -> None:
        """Disconnect and stop background tasks."""

    async def put_result(self, key: SiteKey, region: str, result: RegionResult) -> None:
        """Store one region's result for a site (kept at least result.stale_after seconds)."""

    async def put_override(self, key: SiteKey, state: Override | None) -> None:
        """Store (or with None remove) an operator override; durable."""

    def results(self) -> Mapping[SiteKey, Mapping[str, RegionResult]]:
        """The latest results known to this node (last known when disconnected).

        The backend's own mapping, not a copy (the table reads it at every rebuild): read it,
        never change it, and do not keep it across an ``await``.
        """

    def overrides(self) -> Mapping[SiteKey, Override]:
        """The overrides known to this node (last known when disconnected); as ``results``, not a copy."""


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

    @property
    def outage(self) -> OutageClock:
        """Never down."""
        return NEVER_DOWN

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
        state = parse_override(state, removal=None)
        if state is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = state

    def results(self) -> Mapping[SiteKey, Mapping[str, RegionResult]]:
        """Every stored result (this backend's own mapping: read only)."""
        return self._results

    def overrides(self) -> Mapping[SiteKey, Override]:
        """Every override (this backend's own mapping: read only)."""
        return self._overrides


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


def build_sites(
    sites: Mapping[SiteKey, SiteConfig],
    results: Mapping[SiteKey, Mapping[str, RegionResult]],
    overrides: Mapping[SiteKey, Override],
    now: float,
    outages: tuple[tuple[float, float], ...] = (),
) -> tuple[dict[SiteKey, SiteStatus], float | None]:
    """Aggregate results and overrides of the configured sites at ``now`` (pure).

    ``now`` is the time staleness is judged at (``OutageClock.judged_at``) and ``outages`` the
    completed outages (``OutageClock.outages``). Returns the view's site map and the earliest
    future expiry among the fresh results (None when nothing will expire). Results and overrides
    of unconfigured sites are ignored.
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
    """Regional results + overrides of every configured site, published as ``.view``.

    Holds no results or overrides of its own: it reads the backend's (module docstring).
    """

    def __init__(self, backend: StateBackend, *, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock
        #: the current immutable snapshot; replaced as a whole on every change
        self.view = StateView()
        #: recent verdict changes, newest last
        self.changes: deque[Change] = deque(maxlen=CHANGES_KEPT)
        self._sites: dict[SiteKey, SiteConfig] = {}
        #: sites that had a verdict other than unknown (for "recent changes")
        self._seen: set[SiteKey] = set()
        self._listeners: list[Callable[[StateView, StateView], None]] = []
        self._timer: asyncio.TimerHandle | None = None
        #: wall time the expiry timer fires at (None: not armed)
        self._timer_at: float | None = None
        self._started = False

    # -- configuration and lifecycle

    def configure(self, zones: ZoneSet) -> None:
        """Take the set of sites from ``zones``; results of sites that stay are kept."""
        self._sites = sites_of(zones)
        self._seen &= set(self._sites)
        self._rebuild()  # always publishes the new site set (last known data if a read fails)

    async def start(self) -> None:
        """Start the backend (it calls back on every change) and build the first view."""
        self._started = True
        await self.backend.start(self._rebuild)
        self._rebuild()

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
        self._rebuild_site(key)

    async def set_override(self, zone: str, site: str, state: str) -> None:
        """Set an operator override (``up``, ``down``, ``drain``) or remove it (``auto``).

        Raises ValueError for an unknown state (``parse_override``), then ``UnknownSite`` for a
        zone or site the table does not know.
        """
        override = parse_override(state)
        key = (_zone_key(zone), site)
        if key not in self._sites:
            raise UnknownSite(key[0], site, self._sites)
        await self.backend.put_override(key, override)
        logger.info("state: override of %s/%s set to %s", key[0], site, state)
        self._rebuild_site(key)

    # -- view building

    def refresh(self) -> None:
        """Rebuild the view now (normally done by writes, backend callbacks and the expiry timer)."""
        self._rebuild()

    def connected_now(self) -> float:
        """The time staleness is judged at: now, or the start of the current outage (frozen)."""
        return self.backend.outage.judged_at(self.clock())

    def _read(self) -> tuple[Mapping[SiteKey, Mapping[str, RegionResult]], Mapping[SiteKey, Override]]:
        """The backend's results and overrides; when they cannot be read, the current view's
        (the last data published: its fresh results and its overrides)."""
        try:
            return self.backend.results(), self.backend.overrides()
        except Exception as exc:
            logger.warning("state: cannot read backend %s: %s", self.backend.url, exc)
        sites = self.view.sites
        return ({key: status.regions for key, status in sites.items()},
                {key: status.override for key, status in sites.items() if status.override is not None})

    def _rebuild(self) -> None:
        """Rebuild the whole view from the backend; publish it only when something changed."""
        results, overrides = self._read()
        outage = self.backend.outage
        sites, next_expiry = build_sites(self._sites, results, overrides,
                                         outage.judged_at(self.clock()), outage.outages)
        self._schedule(next_expiry, outage.frozen)
        old = self.view
        if dict(old.sites) == sites:
            return
        self._publish(old, StateView(version=old.version + 1, sites=MappingProxyType(sites)), sites)

    def _rebuild_site(self, key: SiteKey) -> None:
        """Rebuild one site after this table's own write to it; publish at once when it changed.

        The other sites are copied unchanged (their expiry is the timer's business).
        """
        results, overrides = self._read()
        outage = self.backend.outage
        one, expiry = build_sites({key: self._sites[key]}, results, overrides,
                                  outage.judged_at(self.clock()), outage.outages)
        if expiry is not None and not outage.frozen and (self._timer_at is None or expiry < self._timer_at):
            self._schedule(expiry, False)
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

    def _schedule(self, next_expiry: float | None, frozen: bool) -> None:
        """Arm the timer for the next expiry (none while the backend is unreachable: ``frozen``)."""
        self._cancel_timer()
        if next_expiry is None or frozen:
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
