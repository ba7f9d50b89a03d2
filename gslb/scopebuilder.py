"""Merged ECS scope tables built in a process of their own, shipped to the DNS processes.

Building a pool's table (:func:`gslb.balancer.scope_table_of`) walks every run of the GeoIP
database: seconds of Python for GeoLite2 City, after an index of ~48 MB built once per
database. Done in a DNS process it would compete with its UDP thread for the GIL on every
verdict change, and every DNS process would hold its own index. So one *builder process*
(``python -m gslb.scopebuilder FD LOG_LEVEL``, started by the main process on the first request,
niced to 10; each table built in a forked child at nice 19) holds
the database index and builds the tables; the DNS processes only keep compact tables (run
starts and opaque flags, :class:`gslb.netmap.CompactScopes`).

The main process runs a :class:`ScopeService` on its event loop:

- a DNS process's balancer asks for the table of a :class:`gslb.balancer.ScopeSpec` (the
  pool, its sites and verdicts) when it prepares a ``closest`` or ``geo`` pool: the main
  process's own balancer directly, a DNS worker with a ``want_scopes`` message;
- the service remembers the latest spec each process wants per pool, and sends the builder one
  request at a time, for a spec some process still wants (a spec the verdicts have left is
  never built);
- a built table (bytes) is kept (the last :data:`KEPT` specs) and goes to every process that
  wants that spec (``scopes`` message to a worker; ``install`` in the main process, under the
  query path's lock), which installs it only where the pool's current inputs are exactly that
  spec (:meth:`gslb.balancer.Balancer.install_table`). Until then the pool answers with the
  GeoIP network's scope: always correct, never a stale wide one;
- a new GeoIP database (or new regions: new balancers everywhere) starts a new *generation*:
  kept tables are dropped, the builder reopens the database, replies of the old generation are
  ignored.

The builder and the service talk over a Unix socket pair with the workers' framing
(:func:`gslb.workers.frame`): ``geo (generation, path, reopen)`` and ``build (generation, spec)`` to
the builder, ``table (generation, spec, bytes, stats)`` or ``failed (generation, spec,
message)`` back. A builder that dies is started again on the next request (the spec it was
building is not retried until the next generation).

The same process computes the traffic map and plans (:mod:`gslb.trafficmap`, over the same index):
:meth:`ScopeService.job` sends ``job (generation, what, args)`` (``what``: ``map`` with a spec,
``plan`` with a list of (pool name, spec before, spec after)) and awaits ``done (generation,
result)`` or ``job_failed (generation, message)``. Jobs go before table builds (an operator is
waiting) and never depend on a generation: a reset only makes the next ones use the new database.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import os
import resource
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable

from gslb.balancer import ScopeSpec, scope_table_of
from gslb.netmap import CompactScopes, NetworkIndex, in_forks

logger = logging.getLogger("gslb.scopebuilder")  # also when run as __main__

#: the builder's niceness, for the index and the map and plan jobs: when the cores are busy it
#: gets about a tenth of one (CFS weights 110 against 1024 per busy DNS process), enough for an
#: operator's map to follow an override within a second on saturated cores (at 19, about 1.5 %,
#: it took 5 s)
NICE = 10
#: the niceness of a scope table build (a forked child of the builder, while the builder goes on
#: with jobs): a build is never urgent (the per-network scope serves meanwhile), so it takes only
#: CPU time nobody else wants: about 1.5 % of a busy core, not 10 %
BUILD_NICE = 19

#: built tables the service keeps (by spec): a site that flaps back gets its table at once
KEPT = 16

PKey = tuple[str, str]


class ScopeService:
    """The main process's side (module docstring); every method runs on the event loop.

    ``install(spec, table, stats)`` puts a table into the main process's balancer;
    ``send_worker(index, kind, payload)`` sends a message to DNS worker ``index``.
    """

    def __init__(self, geoip: str | None, install: Callable[[ScopeSpec, CompactScopes, dict], None],
                 send_worker: Callable[[int, str, Any], None] | None = None) -> None:
        self.geoip = geoip
        self.generation = 1
        self._install = install
        self._send_worker = send_worker
        #: per requester (0: the main process, N: worker N): the spec it wants per pool
        self._wants: dict[int, dict[PKey, ScopeSpec]] = {}
        #: built tables (the bytes) by spec, the last KEPT
        self._kept: dict[ScopeSpec, tuple[bytes, dict]] = {}
        self._failed: set[ScopeSpec] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._closed = False
        #: the last table built: pool, runs, bytes, seconds, index seconds, builder peak RSS (MB)
        self.last: dict[str, Any] = {}
        #: map and plan jobs waiting for the builder: (what, args, future)
        self._jobs: collections.deque[tuple[str, Any, asyncio.Future[Any]]] = collections.deque()

    # -- requests and deliveries -------------------------------------------------------------

    def request(self, requester: int, pkey: PKey, spec: ScopeSpec) -> None:
        """``requester`` wants the table of ``spec`` for pool ``pkey`` (replacing what it wanted before)."""
        if self._closed:
            return
        kept = self._kept.get(spec)
        if kept is not None:
            self._wants.get(requester, {}).pop(pkey, None)  # what it wanted before is left behind
            self._deliver(requester, spec, kept)
            return
        self._wants.setdefault(requester, {})[pkey] = spec
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="scope-builder")

    async def job(self, what: str, args: Any) -> Any:
        """The builder's result of a map or plan job (RuntimeError when the builder fails it or stops)."""
        if self._closed:
            raise RuntimeError("the builder process is stopping")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.append((what, args, future))
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="scope-builder")
        return await future

    def forget(self, requester: int) -> None:
        """A worker process (re)starts: what its previous life wanted no longer counts."""
        self._wants.pop(requester, None)

    def reset(self, geoip: str | None, reopen: bool = True) -> None:
        """A new GeoIP database (``reopen``: the builder opens the file again, even at the same
        path) or new regions (new balancers everywhere): a new generation."""
        self.generation += 1
        self.geoip = geoip
        self._kept.clear()
        self._failed.clear()
        self._wants.clear()
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(_frame("geo", (self.generation, geoip, reopen)))

    def _deliver(self, requester: int, spec: ScopeSpec, kept: tuple[bytes, dict]) -> None:
        data, stats = kept
        if requester == 0:
            self._install(spec, CompactScopes.from_bytes(data), stats)
        elif self._send_worker is not None:
            self._send_worker(requester, "scopes", (spec, data))

    def _arrived(self, spec: ScopeSpec, data: bytes, stats: dict) -> None:
        kept = (data, stats)
        if len(self._kept) >= KEPT:
            del self._kept[next(iter(self._kept))]
        self._kept[spec] = kept
        for requester, wants in list(self._wants.items()):
            done = [pkey for pkey, wanted in wants.items() if wanted == spec]
            for pkey in done:
                del wants[pkey]
            if done:
                self._deliver(requester, spec, self._kept[spec])

    def _next(self) -> ScopeSpec | None:
        for wants in self._wants.values():
            for spec in wants.values():
                if spec not in self._kept and spec not in self._failed:
                    return spec
        return None

    # -- the builder process -----------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            if self._jobs:
                await self._run_job(*self._jobs.popleft())
                continue
            spec = self._next()
            if spec is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            generation = self.generation
            try:
                await self._start()
                assert self._writer is not None and self._reader is not None
                self._writer.write(_frame("build", (generation, spec)))
                kind, body = await _read(self._reader)  # one request at a time: its reply
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
                if self._closed:
                    return
                logger.error("ecs: the scope builder process stopped (%s) while building pool %s; "
                             "it starts again on the next request", exc or "exited", spec.pool.name)
                self._failed.add(spec)
                await self._stop()
                continue
            except Exception:  # a bug (a reply that does not unpickle...): that pool keeps per-network scopes
                logger.exception("ecs: scope builder request for pool %s failed", spec.pool.name)
                self._failed.add(spec)
                await self._stop()
                continue
            if generation != self.generation:
                continue  # built from the database before a reset: dropped
            if kind == "failed":
                logger.error("ecs: cannot build the scope table of pool %s: %s", spec.pool.name, body[2])
                self._failed.add(spec)
                continue
            _, _, data, stats = body
            self.last = dict(stats, pool=spec.pool.name, bytes=len(data))
            self._arrived(spec, data, stats)

    async def _run_job(self, what: str, args: Any, future: asyncio.Future[Any]) -> None:
        if future.done():  # its caller went away
            return
        try:
            await self._start()
            assert self._writer is not None and self._reader is not None
            self._writer.write(_frame("job", (self.generation, what, args)))
            kind, body = await _read(self._reader)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            if not future.done():
                future.set_exception(RuntimeError(f"the builder process stopped ({exc or 'exited'})"))
            if not self._closed:
                logger.error("map: the builder process stopped (%s) during a %s job; it starts again on the "
                             "next request", exc or "exited", what)
                await self._stop()
            return
        if future.done():
            return
        if kind == "done":
            future.set_result(body[1])
        else:
            future.set_exception(RuntimeError(str(body[1])))

    async def _start(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gslb.scopebuilder", str(theirs.fileno()), str(logging.getLogger().level),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 30)
        self._writer.write(_frame("geo", (self.generation, self.geoip, True)))
        logger.info("ecs: scope builder process started (pid %d)", self._proc.pid)

    async def _stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            try:
                proc.terminate()
                await asyncio.wait_for(proc.wait(), 5.0)
            except ProcessLookupError:
                pass
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()

    async def close(self) -> None:
        """Stop the builder process."""
        self._closed = True
        self._wake.set()
        while self._jobs:
            future = self._jobs.popleft()[2]
            if not future.done():
                future.set_exception(RuntimeError("the builder process is stopping"))
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self._stop()


def _frame(kind: str, payload: Any) -> bytes:
    from gslb.workers import frame

    return frame(kind, payload)


async def _read(reader: asyncio.StreamReader) -> tuple[str, Any]:
    from gslb.workers import read_message

    return await read_message(reader)


# -- the builder process -------------------------------------------------------------------------


def _recv(f: Any) -> tuple[str, Any] | None:
    import pickle

    head = f.read(4)
    if len(head) < 4:
        return None
    size = struct.unpack("!I", head)[0]
    body = f.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


class _Database:
    """The database the builder serves (a new one per generation that changes it) and its index,
    once built: by the loop for a job (at the builder's niceness, an operator is waiting), or by a
    scope build's child (at :data:`BUILD_NICE`, sent back with its table)."""

    def __init__(self, geo: Any, path: str) -> None:
        self.geo = geo
        self.path = path
        self.index: NetworkIndex | None = None
        self.index_seconds = 0.0

    def keep(self, index: NetworkIndex, seconds: float, why: str) -> NetworkIndex:
        """Keep a built index (the first one built, when two were) and log its size."""
        if self.index is None:
            self.index, self.index_seconds = index, seconds
            logger.info("%s: network index of %s: %d + %d runs, %d locations in %.1f s", why, self.path,
                        len(index.runs[4].starts), len(index.runs[6].starts), len(index.locations), seconds)
        return self.index


def serve(fd: int) -> int:
    """The builder's loop: one message at a time, until the main process closes the socket; each
    scope table is built by a thread of its own (in a forked child), so jobs never wait for one."""
    from gslb.geo import GeoLocator
    from gslb.trafficmap import MapEngine
    from gslb.workers import frame

    sock = socket.socket(fileno=fd)
    rfile = sock.makefile("rb")
    sending = threading.Lock()  # replies come from this loop and from build threads

    def send(reply: bytes) -> None:
        with sending:
            sock.sendall(reply)

    db: _Database | None = None
    generation = 0
    engine: MapEngine | None = None
    while True:
        msg = _recv(rfile)
        if msg is None:
            return 0
        kind, body = msg
        if kind == "geo":
            generation, new_path, reopen = body
            if db is None or new_path != db.path or reopen:
                # no per-address cache: the builder looks every database record up once; the old
                # locator is left to a build still using it (its reply, of an older generation,
                # is ignored)
                db, engine = _Database(GeoLocator.open(new_path, cache_size=0), new_path), None
            continue
        if kind == "job":
            gen, what, args = body
            try:
                assert db is not None
                index = db.index
                if index is None:
                    t0 = time.perf_counter()
                    index = db.keep(build_index(db.geo), time.perf_counter() - t0, "map")
                if engine is None or engine.index is not index:
                    engine = MapEngine(index)
                if what == "map":
                    result: Any = engine.map(args)
                else:
                    result = [dict(pool=name, **engine.plan(a, b)) for name, a, b in args]
                reply = frame("done", (gen, result))
            except Exception as exc:  # a bug, a database that went away: this job fails, not the process
                logger.exception("map: cannot compute a %s job", what)
                reply = frame("job_failed", (gen, f"{type(exc).__name__}: {exc}"))
            send(reply)
            continue
        if kind != "build":
            continue
        gen, spec = body
        if gen != generation or db is None:
            continue  # an older generation's request (the main process ignores its reply)
        threading.Thread(target=_build_table, args=(db, gen, spec, send), daemon=True,
                         name=f"build {spec.pool.name}").start()


def _build_table(db: _Database, gen: int, spec: ScopeSpec, send: Callable[[bytes], None]) -> None:
    """Build one pool's table (and the index first, if there is none yet) in a forked child at
    :data:`BUILD_NICE`, and send the reply."""
    from gslb.workers import frame

    index = db.index

    def build(_: int) -> tuple[bytes, int, NetworkIndex | None, float]:
        t0 = time.perf_counter()
        built = NetworkIndex.build(db.geo) if index is None else None
        seconds = time.perf_counter() - t0
        use = index if index is not None else built
        assert use is not None
        table = scope_table_of(use, spec)
        return table.compact(), table.size(), built, seconds

    try:
        t0 = time.perf_counter()
        data, runs, built, index_seconds = in_forks(build, 1, here=False, nice=BUILD_NICE - NICE)[0]
        if built is not None:
            db.keep(built, index_seconds, "ecs")
        stats = {"runs": runs, "seconds": time.perf_counter() - t0 - index_seconds, "index_seconds": db.index_seconds,
                 "builder_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        reply = frame("table", (gen, spec, data, stats))
    except Exception as exc:  # a bug, a database that went away: that pool keeps per-network scopes
        logger.exception("ecs: cannot build the scope table of pool %s", spec.pool.name)
        reply = frame("failed", (gen, spec, f"{type(exc).__name__}: {exc}"))
    try:
        send(reply)
    except OSError:  # the main process is gone (the loop ends on its own)
        pass


def build_index(geo: Any) -> NetworkIndex:
    """The database's index; then the heap the build's temporary arrays left free goes back to the
    system (glibc keeps it otherwise: about 125 MB of RSS for GeoLite2 City, for the process's life)."""
    index = NetworkIndex.build(geo)
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass
    return index


def measure(path: str) -> int:
    """``python -m gslb.scopebuilder --measure DB``: what the builder and a DNS process pay for
    the benchmark's pool (closest of fra, iad, sin), all up and with fra down."""
    import tracemalloc

    from gslb.geo import GeoLocator
    from gslb.model import Pool, Site

    def rss() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    geo = GeoLocator.open(path, cache_size=0)
    before = rss()
    t0 = time.perf_counter()
    index = build_index(geo)
    print(f"index: {time.perf_counter() - t0:.1f} s, {len(index.runs[4].starts)} IPv4 + "
          f"{len(index.runs[6].starts)} IPv6 runs, {len(index.locations)} locations, "
          f"+{rss() - before:.0f} MB RSS in the builder process (the database file, mapped, is "
          f"{os.path.getsize(path) / 1e6:.0f} MB of it at most)")
    sites = (Site("fra", (50.11, 8.68), ("127.0.0.10",), ()), Site("iad", (38.95, -77.45), ("127.0.0.20",), ()),
             Site("sin", (1.35, 103.82), ("127.0.0.30",), ()))
    pool = Pool("www", "closest", ("fra", "iad", "sin"))
    for states in (("up", "up", "up"), ("down", "up", "up")):
        spec = ScopeSpec(pool, sites, states)
        t0 = time.perf_counter()
        table = scope_table_of(index, spec)
        built = time.perf_counter() - t0
        data = table.compact()
        t0 = time.perf_counter()
        CompactScopes.from_bytes(data)
        decoded = time.perf_counter() - t0
        tracemalloc.start()
        compact = CompactScopes.from_bytes(data)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        print(f"table {'/'.join(states)}: built in {built:.2f} s, {len(table.v4)} IPv4 + {len(table.v6)} IPv6 "
              f"runs, shipped {len(data) / 1024:.0f} kB, decoded in {decoded * 1000:.0f} ms, "
              f"{held / 1024 / 1024:.2f} MB in a DNS process ({compact.size()} runs)")
    print(f"builder peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m gslb.scopebuilder FD [LOG_LEVEL]`` (``--measure DB``: the costs, see :func:`measure`)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--measure":
        return measure(args[1])
    level = int(args[1]) if len(args) > 1 else logging.INFO  # the server's log level
    logging.basicConfig(level=level, format="%(asctime)s scopes %(levelname)s %(name)s: %(message)s")
    try:
        os.nice(NICE)  # the DNS processes (and everything else) come first when the cores are busy
    except OSError:  # pragma: no cover
        pass
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the main process decides
    return serve(int(args[0]))


if __name__ == "__main__":
    sys.exit(main())
