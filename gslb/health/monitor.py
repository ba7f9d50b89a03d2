"""The health monitor of one region: schedules every check of every site, applies rise/fall, and
folds each site's targets into one ``RegionResult`` for the site-state table.

A *target* is one (zone, site, check, address) to probe; with ``check.target`` set, the target
host replaces the site's addresses for that check. Targets are spread over their interval with
a random offset (no thundering herd at start-up or reload) and at most ``max_in_flight`` probes
run at once.

The first round (``first_round``, before pool names are answered) probes every target at once, up
to ``first_round_in_flight`` (default 1024, lowered to half the open-file limit), and waits as many
check timeouts as it needs waves of that size, so it ends within about the longest timeout. A
target whose probe is still unfinished when the wait ends is cancelled and counts as a failure
("no result in the first round"): it starts down, never as an unknown that answers like up. After
the first round each target is next due one interval (+-10 % jitter) after its first-round probe.

Rise/fall: the first result of a target decides at once (unknown -> up on a pass, -> down on a
failure). The SPEC runs the first round before pool names are answered so that a server never
starts by sending clients to a dead site; waiting for ``fall`` failures first would defeat that.
After that, ``rise`` passes in a row turn a down target up and ``fall`` failures in a row turn an
up target down.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
import resource
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal, Sequence

import aiohttp

from gslb import __version__
from gslb.health.probes import ProbeResult, probe
from gslb.model import Check, RegionResult, SiteKey, ZoneSet

logger = logging.getLogger(__name__)

#: (zone key, site name, check name, address)
TargetKey = tuple[str, str, str, str]
Prober = Callable[[Check, str, aiohttp.ClientSession], Awaitable[ProbeResult]]

#: staleness of a region's result: this many times the site's longest check interval
STALE_INTERVALS = 3.0

#: probes in flight at once during the first round (capped by the open-file limit)
FIRST_ROUND_IN_FLIGHT = 1024

#: seconds the scheduling loop waits after an unexpected error before it tries again
LOOP_RETRY = 1.0

#: the next probe after the first round: one interval later, times a factor drawn from this range
FIRST_ROUND_JITTER = (0.9, 1.1)


def open_file_cap(default: int = FIRST_ROUND_IN_FLIGHT) -> int:
    """Half the soft open-file limit (sockets of the first round), or ``default`` when unlimited."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return default
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return default
    return max(1, soft // 2)


@dataclass(frozen=True, slots=True)
class TargetState:
    """A target's state after rise/fall, with the current streak of passes or failures."""

    state: Literal["up", "down", "unknown"] = "unknown"
    passes: int = 0
    failures: int = 0


UNKNOWN = TargetState()


def next_state(prev: TargetState, ok: bool, rise: int, fall: int) -> TargetState:
    """Apply one probe result with rise/fall hysteresis (pure); the first result decides at once."""
    passes = prev.passes + 1 if ok else 0
    failures = 0 if ok else prev.failures + 1
    if prev.state == "unknown":
        return TargetState("up" if ok else "down", passes, failures)
    if prev.state == "up" and failures >= fall:
        return TargetState("down", passes, failures)
    if prev.state == "down" and passes >= rise:
        return TargetState("up", passes, failures)
    return TargetState(prev.state, passes, failures)


@dataclass(frozen=True, slots=True)
class Target:
    """One thing to probe: a check of a site at one address (or at the check's target host)."""

    zone: str
    site: str
    check_name: str
    address: str
    check: Check

    @property
    def key(self) -> TargetKey:
        """Identity across reloads: (zone key, site, check name, address)."""
        return (self.zone, self.site, self.check_name, self.address)

    @property
    def label(self) -> str:
        """``gslb.example.com/fra web 192.0.2.10``, for logs."""
        return f"{self.zone}/{self.site} {self.check_name} {self.address}"


def targets_of(zones: ZoneSet) -> dict[TargetKey, Target]:
    """Every target of every zone, in zone file order (pure)."""
    out: dict[TargetKey, Target] = {}
    for zone in zones:
        for site in zone.sites.values():
            for name in site.checks:
                check = zone.checks.get(name)
                if check is None:  # the zone validator rejects this; never probe nothing
                    continue
                addresses = (check.target,) if check.target else site.ipv4 + site.ipv6
                for address in addresses:
                    target = Target(zone.key, site.name, name, address, check)
                    out[target.key] = target
    return out


def fold_site(entries: Sequence[tuple[Target, TargetState, ProbeResult | None]],
              checked_at: float) -> RegionResult | None:
    """One site's RegionResult from all its targets (pure).

    Down as soon as any target is down; up when every target is up; None (nothing to report
    yet) while some target has no result and none is down. rtt is the mean of the targets'
    last rtt, load the highest X-Load, error the first failing target's last error prefixed
    with its check and address.
    """
    if not entries:
        return None
    states = [state.state for _, state, _ in entries]
    if "down" in states:
        verdict: Literal["up", "down"] = "down"
    elif "unknown" in states:
        return None
    else:
        verdict = "up"
    rtts = [r.rtt_ms for _, _, r in entries if r is not None and r.rtt_ms is not None]
    loads = [r.load for _, _, r in entries if r is not None and r.load is not None]
    error = None
    # the first down target's error; else (site up) the first target whose last probe failed
    for wanted in (("down",), ("up", "down")):
        for target, state, result in entries:
            if state.state in wanted and result is not None and not result.ok:
                error = f"{target.check_name} {target.address}: {result.error}"
                break
        if error is not None:
            break
    return RegionResult(
        state=verdict,
        checked_at=checked_at,
        rtt_ms=sum(rtts) / len(rtts) if rtts else None,
        load=max(loads) if loads else None,
        error=error,
        stale_after=STALE_INTERVALS * max(t.check.interval for t, _, _ in entries),
    )


@dataclass(slots=True, eq=False)
class _ScheduledTarget:
    """The mutable schedule and state of one target inside the monitor."""

    target: Target
    next_due: float
    state: TargetState = UNKNOWN
    #: sequence number of this target's valid entry in the monitor's due heap
    queued: int = -1
    task: asyncio.Task | None = None
    last: ProbeResult | None = None
    #: monotonic time the last probe got its slot and started (None: never)
    started: float | None = None


class Monitor:
    """Runs one region's checks and reports each site's folded result to the table."""

    def __init__(self, table, region: str, clock: Callable[[], float] = time.monotonic,
                 max_in_flight: int = 64, *, wall: Callable[[], float] = time.time,
                 prober: Prober = probe, rng: random.Random | None = None,
                 first_round_in_flight: int | None = None) -> None:
        self.table = table
        self.region = region
        self.clock = clock
        self.wall = wall
        self.prober = prober
        self.rng = rng or random.Random()
        self.max_in_flight = max_in_flight
        self._runs: dict[TargetKey, _ScheduledTarget] = {}
        #: (next_due, seq, run): an entry is valid while run.queued == seq and the run is current
        self._due: list[tuple[float, int, _ScheduledTarget]] = []
        self._seq = itertools.count()
        self._by_site: dict[SiteKey, list[TargetKey]] = {}
        #: per site: (state, error, monotonic time) of the last report
        self._reported: dict[SiteKey, tuple[str, str | None, float]] = {}
        self._sem = asyncio.Semaphore(max_in_flight)
        if first_round_in_flight is None:
            first_round_in_flight = min(FIRST_ROUND_IN_FLIGHT, open_file_cap())
        self.first_round_in_flight = max(max_in_flight, first_round_in_flight)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._observers: list[Callable[[Target, ProbeResult, TargetState], None]] = []

    # -- configuration

    def configure(self, zones: ZoneSet) -> None:
        """Take the targets of ``zones``: unchanged ones keep state and schedule, removed ones
        stop, new (or changed) ones start at a random offset within their interval."""
        wanted = targets_of(zones)
        now = self.clock()
        runs: dict[TargetKey, _ScheduledTarget] = {}
        for key, target in wanted.items():
            old = self._runs.get(key)
            if old is not None and old.target == target:
                runs[key] = old
            else:
                if old is not None and old.task is not None:
                    old.task.cancel()
                runs[key] = _ScheduledTarget(target, now + self.rng.uniform(0.0, target.check.interval))
        for key, old in self._runs.items():
            if key not in runs and old.task is not None:
                old.task.cancel()
        by_site: dict[SiteKey, list[TargetKey]] = {}
        for key in runs:
            by_site.setdefault((key[0], key[1]), []).append(key)
        changed = [site for site, keys in by_site.items() if self._by_site.get(site) != keys]
        self._reported = {s: r for s, r in self._reported.items() if s in by_site and s not in changed}
        self._runs = runs
        self._by_site = by_site
        self._requeue_all()
        logger.debug("health: %d target(s) in %d site(s), region %s", len(runs), len(by_site), self.region)
        self._wake.set()
        # a site that lost a target may now fold differently: report it again at once
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        for site in changed:
            self._spawn(self._fold(site))

    def targets(self) -> list[tuple[Target, TargetState, ProbeResult | None]]:
        """Every target with its state and last probe result (status pages, tests)."""
        return [(run.target, run.state, run.last) for run in self._runs.values()]

    def schedule(self) -> dict[TargetKey, float]:
        """When each target is due next (monotonic clock)."""
        return {key: run.next_due for key, run in self._runs.items()}

    def add_observer(self, callback: Callable[[Target, ProbeResult, TargetState], None]) -> None:
        """Call ``callback(target, result, new_state)`` after every probe (metrics)."""
        self._observers.append(callback)

    # -- lifecycle

    async def start(self) -> None:
        """Start the scheduling loop."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name=f"health-{self.region}")

    async def first_round(self, timeout: float | None = None) -> bool:
        """Probe every target once now, up to ``first_round_in_flight`` at once; return True when
        all finished within ``timeout``.

        The default timeout is the longest check timeout times the number of waves the limit
        needs (one up to ``first_round_in_flight`` targets), plus 1 s. A probe still unfinished
        then is cancelled and counts as a failure, so its target starts down (not unknown = up).
        Afterwards each target is next due one interval (with a small jitter) after its probe.
        """
        runs = list(self._runs.values())
        if not runs:
            return True
        if timeout is None:
            waves = math.ceil(len(runs) / self.first_round_in_flight)
            timeout = waves * max(r.target.check.timeout for r in runs) + 1.0
        sem = asyncio.Semaphore(self.first_round_in_flight)
        tasks = [run.task if run.task is not None else self._launch(run, sem) for run in runs]
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        now = self.clock()
        unfinished = [run for run in runs if run.task is not None and run.task in pending]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            logger.warning("health: first round: %d of %d probe(s) unfinished after %.1fs; "
                           "they count as failed", len(pending), len(tasks), timeout)
        sites: dict[SiteKey, None] = {}
        for run in unfinished:
            if self._runs.get(run.target.key) is not run:
                continue
            result = ProbeResult(False, None, None, f"no result in the first round ({timeout:.1f}s)")
            self._apply(run, result)
            sites[(run.target.zone, run.target.site)] = None
        for site in sites:
            await self._fold(site)
        lo, hi = FIRST_ROUND_JITTER
        for run in runs:
            started = run.started if run.started is not None else now
            run.next_due = started + run.target.check.interval * self.rng.uniform(lo, hi)
        self._requeue_all()
        self._wake.set()
        down = sum(1 for run in self._runs.values() if run.state.state == "down")
        logger.info("health: first round, region %s: %d target(s) probed, %d down, %d unfinished",
                    self.region, len(tasks), down, len(pending))
        return not pending

    async def close(self) -> None:
        """Cancel the loop and every probe, close the HTTP session."""
        tasks = list(self._tasks)
        if self._loop_task is not None:
            tasks.append(self._loop_task)
            self._loop_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- scheduling

    def probe_all(self) -> list[asyncio.Task]:
        """Probe every target now (those in flight are not started twice); return their tasks."""
        return [run.task if run.task is not None else self._launch(run) for run in self._runs.values()]

    def _queue(self, run: _ScheduledTarget) -> None:
        """(Re)enter ``run`` in the due heap at its ``next_due``; its older entry turns invalid."""
        seq = next(self._seq)
        run.queued = seq
        heapq.heappush(self._due, (run.next_due, seq, run))

    def _requeue_all(self) -> None:
        """Rebuild the due heap from the current runs (after a reconfiguration or first round)."""
        self._due = []
        for run in self._runs.values():
            run.queued = seq = next(self._seq)
            self._due.append((run.next_due, seq, run))
        heapq.heapify(self._due)

    def _valid(self, entry: tuple[float, int, _ScheduledTarget]) -> bool:
        """Whether a heap entry is its run's latest and the run is still configured."""
        _due, seq, run = entry
        return run.queued == seq and self._runs.get(run.target.key) is run

    def next_due(self) -> float | None:
        """When the earliest target is due (monotonic clock), None when there is none."""
        heap = self._due
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self) -> list[asyncio.Task]:
        """Launch every target due by now that is not already in flight; return the new tasks."""
        now = self.clock()
        launched = []
        heap = self._due
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._valid(entry):
                continue
            run = entry[2]
            interval = run.target.check.interval
            due = run.next_due + interval
            run.next_due = due if due > now else now + interval
            self._queue(run)
            if run.task is None:  # still in flight (queued behind the limit): skip this turn
                launched.append(self._launch(run))
        return launched

    async def _loop(self) -> None:
        """Launch due targets, then sleep until the next one is due or the targets change.

        An unexpected error is logged and the loop goes on: checks must never stop silently.
        """
        while True:
            try:
                self.run_due()
                self._wake.clear()
                due = self.next_due()
                delay = None if due is None else max(0.0, due - self.clock())
            except Exception:
                logger.exception("health: scheduling failed, region %s; retrying in %ss",
                                 self.region, LOOP_RETRY)
                self._wake.clear()
                delay = LOOP_RETRY
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    def _spawn(self, coro) -> asyncio.Task:
        """A tracked background task (cancelled by ``close``)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _launch(self, run: _ScheduledTarget, sem: asyncio.Semaphore | None = None) -> asyncio.Task:
        """Start one probe of ``run`` as a tracked task (within ``sem``, default the in-flight limit)."""
        task = self._spawn(self._probe(run, sem or self._sem))
        run.task = task

        def done(t: asyncio.Task, run: _ScheduledTarget = run) -> None:
            if run.task is t:
                run.task = None
        task.add_done_callback(done)
        return task

    def _get_session(self) -> aiohttp.ClientSession:
        """The shared client session (created on first use, inside the loop)."""
        if self._session is None:
            # no connector limit: the semaphores bound the probes, and a probe queued in the
            # connector would spend its timeout waiting for a connection
            connector = aiohttp.TCPConnector(limit=0, force_close=True)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # probes enforce check.timeout
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": f"gslb-health/{__version__}"},
            )
        return self._session

    async def _probe(self, run: _ScheduledTarget, sem: asyncio.Semaphore) -> None:
        """Probe one target (within ``sem``), apply rise/fall, fold its site."""
        target = run.target
        async with sem:
            if self._runs.get(target.key) is not run:
                return  # removed or changed while waiting for a slot
            run.started = self.clock()
            try:
                result = await self.prober(target.check, target.address, self._get_session())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a prober bug must not stop the checks
                logger.exception("health: %s: probe failed unexpectedly", target.label)
                result = ProbeResult(False, None, None, f"probe error: {exc.__class__.__name__}")
        if self._runs.get(target.key) is not run:
            return
        self._apply(run, result)
        await self._fold((target.zone, target.site))

    def _apply(self, run: _ScheduledTarget, result: ProbeResult) -> None:
        """Rise/fall one result into the target's state; log state changes."""
        check = run.target.check
        prev = run.state
        new = next_state(prev, result.ok, check.rise, check.fall)
        run.state = new
        run.last = result
        if new.state != prev.state:
            # a target's first "up" is routine (the first round logs a summary); the rest is news
            level = logging.DEBUG if prev.state == "unknown" and new.state == "up" else logging.INFO
            if new.state == "down":
                n = new.failures
                why = f"{n} failure{'s' if n != 1 else ''}, last: {result.error}"
            else:
                n = new.passes
                why = f"{n} pass{'es' if n != 1 else ''}"
            logger.log(level, "health: %s %s -> %s (%s)", run.target.label, prev.state, new.state, why)
        for callback in self._observers:
            try:
                callback(run.target, result, new)
            except Exception:
                logger.exception("health: observer %r failed", callback)

    async def _fold(self, site: SiteKey) -> None:
        """Fold the site's targets and report to the table when changed or a heartbeat is due."""
        keys = self._by_site.get(site)
        if not keys:
            return
        entries = [(self._runs[k].target, self._runs[k].state, self._runs[k].last) for k in keys]
        result = fold_site(entries, self.wall())
        if result is None:
            return
        now = self.clock()
        heartbeat = result.stale_after / STALE_INTERVALS / 2.0
        last = self._reported.get(site)
        if last is not None and last[:2] == (result.state, result.error) and now - last[2] < heartbeat:
            return
        self._reported[site] = (result.state, result.error, now)
        try:
            await self.table.report(site[0], site[1], self.region, result)
        except Exception:
            logger.exception("health: cannot report %s/%s", *site)
