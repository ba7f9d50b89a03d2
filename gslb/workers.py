"""DNS worker processes: ``workers: N`` answers UDP from N processes on the same addresses.

The main process (``gslb serve``) is worker 0: it runs everything it runs with one worker (zones,
health checks, the site-state table, HTTP, TCP, UDP). With ``workers: N`` it also starts N - 1
worker processes (``python -m gslb.workers``) that only answer UDP. Every process binds its own
UDP socket on each listen address with ``SO_REUSEPORT``, so the kernel spreads queries over
them by the client's address and port (each socket has its own queue: no thundering herd, no
lock). TCP stays in the main process. There is one health monitor and one site-state table: the
main process's.

The main process keeps its workers in step over a Unix socket pair per worker, with
length-prefixed pickled messages (:func:`frame`):

- ``init``: everything a worker needs to answer (listen addresses, zones, state view, readiness,
  GeoIP database path and regions, ACL, rate limit, answer cache budget, log level, and the DNS
  Cookies secret and size cap: every process of a node makes and accepts the same server cookies);
- ``zones``: the zones that changed and the set of zone names (after a reload). A zone travels as
  its file's bytes, modification time, digest and serial (:func:`zone_spec`): the worker builds
  it with the same loader, in a thread, and gets the same zone. Pickling the built zone instead
  would hold the GIL of both processes for the whole (un)pickling of a big zone (a 100,000-record
  zone: a quarter of a second to seconds of silence per reload), while the loader lets the DNS
  threads run every millisecond (``gslb.zonefile.bulk_build``);
- ``view``: the site-state view, sent on every change, coalesced to the latest one per event
  loop turn (a burst of probe results is one message);
- ``ready``: pool names may be answered (the first round of health checks is done);
- ``geo``: another GeoIP database or other checker regions;
- ``acl``: another ACL;
- ``rate_limit``: another ``rate_limit`` (the worker starts new, empty buckets).

Response rate limiting (``gslb.ratelimit``) is per process: every worker keeps its own buckets,
with the full ``responses_per_second``. The kernel spreads one client's queries over the workers
by source address and port, so a flood from many source ports gets up to N times the rate in
all; a real resolver that sticks to one port is limited as with one process.

A worker acknowledges each view it applied (``view_applied``, its version: the status API's
``workers[].view``, so a client can tell when every process answers by a change). Workers send
``stats`` (their cumulative query counters) every ``STATS_INTERVAL`` seconds;
``/metrics`` adds them to the main process's own, and keeps the counts of a worker that died so
that counters never go down. A worker that exits is restarted (after 1 s, backing off to 30 s
while it keeps failing) and gets the current state in its ``init``. A worker exits by itself
when its socket to the main process closes (the main process is gone).

What scales: every worker answers from its own answer cache with no shared state on the query
path, so UDP throughput grows with the cores the kernel gives the sockets, until the load
generator, the NIC queues or the main process's fan-out (one pickled view per state change per
worker, a few kB) become the limit.
"""

from __future__ import annotations

import asyncio
import copyreg
import dataclasses
import gc
import logging
import os
import pickle
import random
import signal
import socket
import struct
import sys
import time
from types import MappingProxyType
from typing import Any, Callable

from gslb.config import Acl, RateLimit
from gslb.errors import GeoDatabaseError, StartupError
from gslb.model import StateView, Zone, ZoneSet
from gslb.stats import QueryStats

logger = logging.getLogger(__name__)

#: seconds between two stats messages of a worker
STATS_INTERVAL = 1.0
#: a worker that has not said ``ready`` this long after its start is restarted
START_TIMEOUT = 60.0
#: restart delays: the first, and the cap while a worker keeps failing
RESTART_DELAY = 1.0
RESTART_CAP = 30.0
#: the largest message (a zone set of a few hundred thousand records fits)
MAX_MESSAGE = 1 << 30

_LENGTH = struct.Struct("!I")



def _mapping_proxy(items: dict) -> MappingProxyType:
    return MappingProxyType(items)


# The model's read-only mappings are MappingProxyType views; pickle rebuilds them from a dict.
copyreg.pickle(MappingProxyType, lambda m: (_mapping_proxy, (dict(m),)))


def frame(kind: str, payload: Any) -> bytes:
    """One message: a 4-byte length, then the pickled (kind, payload)."""
    body = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> tuple[str, Any]:
    """The next message (IncompleteReadError at the end of the stream)."""
    size = _LENGTH.unpack(await reader.readexactly(4))[0]
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes is over the {MAX_MESSAGE} limit")
    return pickle.loads(await reader.readexactly(size))


# -- the main process's side ------------------------------------------------------------------


@dataclasses.dataclass(slots=True, eq=False)
class _Worker:
    """One worker process as the main process sees it."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    pid: int | None = None
    ready: bool = False
    started: float = 0.0
    #: the last cumulative counters it reported
    stats: dict[str, Any] | None = None
    restarts: int = 0
    task: asyncio.Task[None] | None = None
    #: the version of the last state view it applied (``view_applied``)
    view: int | None = None


class WorkerPool:
    """Starts, feeds, watches and restarts the worker processes (module docstring).

    ``init()`` returns the current ``init`` payload (it is called for every start and restart,
    so a restarted worker gets the state of that moment).
    """

    def __init__(self, count: int, init: Callable[[], dict[str, Any]]) -> None:
        self.count = count
        self._init = init
        self._workers = [_Worker(i + 1) for i in range(count)]
        self._closing = False
        self._view: StateView | None = None
        self._view_pending = False
        #: counters of workers that exited, so totals never go down
        self.retired = QueryStats()
        #: called with (worker index, kind, payload) for a worker's messages other than ``stats``,
        #: and with ``started`` when a worker (re)starts
        self.on_message: Callable[[int, str, Any], None] | None = None

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every worker and wait until each answers (StartupError when one cannot start:
        at start-up a failing worker is not retried)."""
        for worker in self._workers:
            worker.task = asyncio.create_task(self._run(worker), name=f"dns-worker-{worker.index}")
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self._workers):
            for w in self._workers:
                if w.task is not None and w.task.done():
                    error = w.task.exception() if not w.task.cancelled() else None
                    raise StartupError(f"DNS worker {w.index} did not start: {error}")
            if time.monotonic() > deadline:
                raise StartupError(f"DNS workers did not start within {timeout:.0f}s")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after 5 s)."""
        self._closing = True
        for w in self._workers:
            if w.task is not None:
                w.task.cancel()
        await asyncio.gather(*(w.task for w in self._workers if w.task is not None), return_exceptions=True)
        for w in self._workers:
            await _stop(w)

    # -- fan-out

    def send(self, kind: str, payload: Any) -> None:
        """Send one message to every running worker."""
        data = frame(kind, payload)
        for w in self._workers:
            if w.writer is not None and w.ready and not w.writer.is_closing():
                w.writer.write(data)

    def send_to(self, index: int, kind: str, payload: Any) -> None:
        """Send one message to worker ``index`` (nothing when it is not running)."""
        w = self._workers[index - 1] if 0 < index <= len(self._workers) else None
        if w is not None and w.writer is not None and w.ready and not w.writer.is_closing():
            w.writer.write(frame(kind, payload))

    def send_view(self, view: StateView) -> None:
        """Send a new state view; views arriving within one event loop turn go out as the last one."""
        self._view = view
        if not self._view_pending:
            self._view_pending = True
            asyncio.get_running_loop().call_soon(self._flush_view)

    def _flush_view(self) -> None:
        self._view_pending = False
        if self._view is not None:
            self.send("view", self._view)

    # -- introspection

    def status(self) -> list[dict[str, Any]]:
        """One row per worker: index, pid, ready, restarts, queries answered (as last reported),
        the version of the state view it answers with."""
        return [{"worker": w.index, "pid": w.pid, "ready": w.ready, "restarts": w.restarts,
                 "queries": sum(w.stats["queries"].values()) if w.stats else 0, "view": w.view}
                for w in self._workers]

    def snapshots(self) -> list[dict[str, Any]]:
        """The last counters of every worker (running ones)."""
        return [w.stats for w in self._workers if w.stats is not None]

    # -- one worker's life

    async def _run(self, worker: _Worker) -> None:
        delay = RESTART_DELAY
        while not self._closing:
            started = time.monotonic()
            try:
                await self._spawn_and_serve(worker)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not worker.ready and not worker.restarts:
                    await _stop(worker)
                    raise  # the first start: start() reports it
                logger.error("DNS worker %d: %s", worker.index, exc)
            worker.ready = False
            worker.view = None
            if worker.stats is not None:
                self.retired.absorb(worker.stats)
                worker.stats = None
            await _stop(worker)
            if self._closing:
                return
            if time.monotonic() - started > 60:
                delay = RESTART_DELAY  # it ran for a while: a fresh failure
            worker.restarts += 1
            logger.warning("DNS worker %d stopped; restarting in %.0fs", worker.index, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_CAP)

    async def _spawn_and_serve(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gslb.workers", str(theirs.fileno()), str(worker.index),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        worker.pid = worker.proc.pid
        worker.started = time.monotonic()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=MAX_MESSAGE)
        worker.writer = writer
        payload = self._init()
        writer.write(frame("init", payload))
        # the view may have changed since init() was built: the next view message catches up
        early: list[tuple[str, Any]] = []  # a table asked for by a query answered before "ready"
        try:
            while True:
                kind, body = await asyncio.wait_for(read_message(reader), START_TIMEOUT)
                if kind in ("ready", "error"):
                    break
                early.append((kind, body))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            raise RuntimeError(f"DNS worker {worker.index} (pid {worker.pid}) did not start") from None
        if kind == "error":
            raise RuntimeError(f"DNS worker {worker.index}: {body}")
        worker.ready = True
        if self._view is not None:
            writer.write(frame("view", self._view))
        if self.on_message is not None:
            self.on_message(worker.index, "started", None)
            for kind, body in early:
                self.on_message(worker.index, kind, body)
        logger.info("DNS worker %d (pid %d) answering", worker.index, worker.pid)
        while True:
            try:
                kind, body = await read_message(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                code = await worker.proc.wait()
                raise RuntimeError(f"DNS worker {worker.index} (pid {worker.pid}) exited with {code}") from None
            if kind == "stats":
                worker.stats = body
            elif kind == "view_applied":
                worker.view = body
            elif self.on_message is not None:
                self.on_message(worker.index, kind, body)


async def _stop(worker: _Worker) -> None:
    """Close the worker's socket and make sure its process is gone."""
    if worker.writer is not None:
        worker.writer.close()
        worker.writer = None
    proc = worker.proc
    worker.proc = None
    if proc is None or proc.returncode is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 5.0)
    except ProcessLookupError:
        return
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


# -- the worker's side -----------------------------------------------------------------------


class WorkerState:
    """What a worker answers with: zones, a state view, the balancer, the handler and the cache."""

    def __init__(self, init: dict[str, Any],
                 ask_scopes: Callable[[tuple[str, str], Any], None] | None = None) -> None:
        from gslb.answercache import AnswerCache
        from gslb.balancer import Balancer
        from gslb.geo import GeoLocator
        from gslb.handler import QueryHandler, ReadinessGate

        self.zones = ZoneSet({z.origin: z for z in (build_zone(spec) for spec in init["zones"])})
        self.view: StateView = init["view"]
        self.geo = GeoLocator.open(init["geoip"]) if init["geoip"] else GeoLocator.open(None)
        self._regions = dict(init["regions"])
        self.stats = QueryStats()
        #: merged ECS scopes: tables asked of the main process (its builder process builds them)
        self._ask = ask_scopes if init.get("merge_scopes", True) else None
        self.pools = ReadinessGate(Balancer(self.geo, self._regions, random.Random(), self._ask), lambda: self.view)
        self.pools.ready = init["ready"]
        cookies = None
        if init.get("cookies") is not None:
            from gslb.cookies import Cookies

            secret, max_nocookie_udp = init["cookies"]
            cookies = Cookies(secret, max_nocookie_udp)
        self.handler = QueryHandler(lambda: self.zones, self.pools, self.stats, init["acl"],
                                    AnswerCache(init.get("cache_bytes") or 64 * 1024 * 1024), cookies=cookies,
                                    rate_limit=init.get("rate_limit"))
        self.pools.on_change = self.handler.pools_changed

    def apply(self, kind: str, body: Any) -> None:
        """One message from the main process."""
        if kind == "view":
            self.view = body
            self.pools.sync(body)
        elif kind == "zones":
            changed, origins = body  # built zones (see _worker_main)
            zones = {o: z for o, z in self.zones.zones.items() if o in origins}
            zones.update({z.origin: z for z in changed})
            old, self.zones = self.zones, ZoneSet(zones)
            self.handler.zones_changed(old, self.zones)
            self.pools.balancer.retain(self.zones)
        elif kind == "ready":
            self.pools.ready = bool(body)
        elif kind == "geo":
            from gslb.balancer import Balancer
            from gslb.geo import GeoLocator

            path, regions = body
            old_geo = self.geo
            try:
                self.geo = GeoLocator.open(path) if path else GeoLocator.open(None)
            except GeoDatabaseError as exc:
                logger.error("worker: %s (keeping the database opened before)", exc)
                return
            self._regions = dict(regions)
            self.pools.use(Balancer(self.geo, self._regions, random.Random(), self._ask))
            self.handler.clear_cache()
            old_geo.close()
        elif kind == "scopes":
            spec, table = body  # decoded by the listener, outside the lock
            self.pools.balancer.install_table(spec, table)
        elif kind == "acl":
            self.handler.set_acl(body)
        elif kind == "rate_limit":
            self.handler.set_rate_limit(body)
        else:
            logger.warning("worker: unknown message %r ignored", kind)


def zone_spec(zone: Zone) -> tuple:
    """How a zone travels to a worker: its file's bytes and what makes the build come out the
    same (a zone built in memory, without a file, travels as itself)."""
    if zone.source:
        return ("file", zone.file, zone.source, zone.mtime, zone.digest, zone.serial)
    return ("zone", dataclasses.replace(zone))  # a fresh copy: no query-path memo


def build_zone(spec: tuple) -> Zone:
    """The zone of a :func:`zone_spec` (raises ConfigErrors when the bytes do not load)."""
    if spec[0] == "zone":
        return spec[1]
    from gslb.zonefile import load_zone_bytes

    _, path, source, mtime, digest, serial = spec
    return load_zone_bytes(source, path, mtime, recorded=(digest, serial))


def init_payload(zones: ZoneSet, view: StateView, ready: bool, geoip: str | None,
                 regions: dict[str, Any], acl: Acl, listen: list[tuple[str, int]],
                 log_level: int, cache_bytes: int | None = None,
                 rate_limit: RateLimit | None = None,
                 cookies: tuple[bytes, int] | None = None, merge_scopes: bool = True) -> dict[str, Any]:
    """The ``init`` message's payload (``cookies``: the secret and ``max_nocookie_udp``, None when off)."""
    return {"zones": [zone_spec(z) for z in zones], "view": view, "ready": ready, "geoip": geoip,
            "regions": dict(regions), "acl": acl, "listen": list(listen), "log_level": log_level,
            "cache_bytes": cache_bytes, "rate_limit": rate_limit, "cookies": cookies,
            "merge_scopes": merge_scopes}


def changed_zones(old: ZoneSet, new: ZoneSet) -> tuple[list[tuple], list[str]]:
    """The ``zones`` message's payload: the zones that are new or changed, and every origin."""
    changed = [zone_spec(z) for o, z in new.zones.items() if old.zones.get(o) is not z]
    return changed, list(new.zones)


async def _worker_main(fd: int, index: int) -> int:
    from gslb.dnsserver import DnsServer
    from gslb.config import TcpLimits

    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_MESSAGE)
    try:
        kind, init = await read_message(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        return 1
    logging.getLogger().setLevel(init.get("log_level", logging.INFO))
    loop = asyncio.get_running_loop()

    def ask_scopes(pkey: tuple[str, str], spec: Any) -> None:
        # any thread (a UDP thread prepares a pool on its first query): the loop writes
        loop.call_soon_threadsafe(writer.write, frame("want_scopes", (pkey, spec)))

    try:
        state = await asyncio.to_thread(WorkerState, init, ask_scopes)
        server = DnsServer(state.handler, TcpLimits())
        await server.start(init["listen"], reuse_port=True, tcp=False)
    except (StartupError, GeoDatabaseError, OSError) as exc:
        writer.write(frame("error", str(exc)))
        await writer.drain()
        return 3
    gc.collect()
    gc.freeze()  # the zones and the database index never change: keep them out of collections
    writer.write(frame("ready", os.getpid()))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the main process decides

    async def report() -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            writer.write(frame("stats", state.handler.stats_snapshot()))

    zone_updates: asyncio.Queue[tuple] = asyncio.Queue()

    async def build_zones() -> None:
        """Zone updates in order, each built in a thread (views keep being applied meanwhile)."""
        while True:
            specs, origins = await zone_updates.get()
            try:
                built = await asyncio.to_thread(list, map(build_zone, specs))
                state.handler.locked(state.apply, "zones", (built, origins))
            except Exception:
                logger.exception("worker %d: cannot build the zones of a reload", index)
            gc.freeze()  # long-lived, as after a reload in the main process

    async def listen() -> None:
        while True:
            try:
                kind, body = await read_message(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the main process is gone
            if kind == "zones":
                zone_updates.put_nowait(body)
                continue
            if kind == "scopes":
                from gslb.netmap import CompactScopes

                body = (body[0], CompactScopes.from_bytes(body[1]))
            try:
                state.handler.locked(state.apply, kind, body)
            except Exception:
                logger.exception("worker %d: cannot apply %r", index, kind)
                continue
            if kind == "view":
                # the status API shows which view each process answers with
                writer.write(frame("view_applied", body.version))

    tasks = [asyncio.create_task(report()), asyncio.create_task(listen()), asyncio.create_task(stop.wait()),
             asyncio.create_task(build_zones())]
    from gslb.handler import expire_signatures_every

    tasks.append(asyncio.create_task(expire_signatures_every(state.handler)))
    if state.handler.cookies is not None:
        from gslb.handler import expire_cookies_every

        tasks.append(asyncio.create_task(expire_cookies_every(state.handler)))
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await server.close()
    state.geo.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process: ``python -m gslb.workers FD INDEX``."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker{args[1]} %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    return runner(_worker_main(int(args[0]), int(args[1])))


if __name__ == "__main__":
    sys.exit(main())
