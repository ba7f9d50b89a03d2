"""The server's lifecycle: load, check, bind, serve, reload, stop.

``Server.serve()`` reads top to bottom: ``startup()`` (zones, GeoIP, state table, first round of
health checks, DNS listeners, HTTP), then it waits for a stop signal, then ``shutdown()``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from pathlib import Path
from typing import Any

from gslb.balancer import Balancer
from gslb.config import ServerConfig
from gslb.dnsserver import DnsServer
from gslb.errors import GslbError, StartupError
from gslb.geo import GeoLocator
from gslb.handler import QueryHandler
from gslb.metrics import CheckStats
from gslb.model import Pool, PoolAnswer, Zone
from gslb.state import MemoryBackend, SiteStateTable
from gslb.stats import QueryStats
from gslb.wire import Drop
from gslb.zones import ZoneStore

logger = logging.getLogger(__name__)

#: how often zone files are polled for changes (SPEC: applied within 2 s)
ZONE_POLL_SECONDS = 1.0


def make_backend(url: str) -> Any:
    """The state backend for a ``state:`` URL."""
    if url.startswith("memory:"):
        return MemoryBackend(url)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from gslb.redis_state import RedisBackend

        return RedisBackend(url)
    raise StartupError(f"state: unsupported URL {url!r}, expected memory:// or redis://HOST:PORT/DB")


def read_token(path: str | None) -> str | None:
    """The API token from its file (surrounding whitespace ignored), or None when not configured."""
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise StartupError(f"api_token_file: cannot read {path}: {exc.strerror}") from exc
    if not token:
        raise StartupError(f"api_token_file: {path} is empty")
    return token


class LivePools:
    """Answers pool names from the table's current view; the resolver's ``pools`` argument.

    Until ``ready`` is set (the first round of health checks has finished) pool names get no
    reply at all: resolvers retry a second later, which is better than an answer that sends
    clients to a dead site or a SERVFAIL they may cache.
    """

    __slots__ = ("balancer", "table", "stats", "ready")

    def __init__(self, balancer: Balancer, table: SiteStateTable, stats: QueryStats) -> None:
        self.balancer = balancer
        self.table = table
        self.stats = stats
        self.ready = False

    def answer(self, zone: Zone, pool: Pool, rtype: str, client_ip: str,
               source_prefix: int | None) -> PoolAnswer:
        """One pool answer for one client, counted per site."""
        if not self.ready:
            raise Drop("starting")
        result = self.balancer.answer(zone, pool, rtype, client_ip, source_prefix, self.table.view)
        if result.sites:
            self.stats.answered_sites(zone.key, pool.name, result.sites)
        return result


class Server:
    """One ``gslb serve`` process: the objects the DNS path and the HTTP API read."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = QueryStats()
        self.zone_store = ZoneStore(config.zones)
        self.table = SiteStateTable(make_backend(config.state))
        self.api_token = read_token(config.api_token_file)
        self.geo: GeoLocator | None = None
        self.balancer: Balancer | None = None
        self.monitor: Any = None
        self.dns: DnsServer | None = None
        self.pools: LivePools | None = None
        self.check_stats = CheckStats()
        self.http_runner: Any = None
        self.dns_ready = False
        self.reloads = {"ok": 0, "error": 0}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._reload_lock = asyncio.Lock()

    async def serve(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop cleanly."""
        # A stop during start-up (e.g. a first round of slow checks) stops at once, not after it.
        starting = asyncio.ensure_future(self.startup())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # start-up errors propagate (exit 3)
                await stopping
            else:
                logger.info("gslb: stop requested during start-up")
        finally:
            for task in (starting, stopping):
                task.cancel()
            await asyncio.gather(starting, stopping, return_exceptions=True)
            await self.shutdown()

    def stop(self) -> None:
        """Ask ``serve()`` to return."""
        self._stop.set()

    async def startup(self) -> None:
        """Load everything, bind DNS and HTTP, run the first health round, then answer pools."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        result = self.zone_store.reload(force=True)
        for error in result.get("errors", []):
            logger.error("zones: %s", error)
        if not len(self.zone_store.zones):
            logger.warning("zones: no zone loaded from %s", cfg.zones)
        self.geo = GeoLocator.open(cfg.geoip)
        regions = {name: loc for name, loc in cfg.regions.items()}
        self.balancer = Balancer(self.geo, regions, random.Random())
        zones = self.zone_store.zones
        self.table.configure(zones)
        await self.table.start()
        # Bind first: static names answer at once and a busy port fails fast (exit 3).
        self.pools = LivePools(self.balancer, self.table, self.stats)
        handler = QueryHandler(lambda: self.zone_store.zones, self.pools, self.stats, cfg.acl)
        self.dns = DnsServer(handler.handle, cfg.tcp)
        await self.dns.start(list(cfg.listen))
        self.dns_ready = True
        if cfg.http is not None:
            from gslb.http_api import create_app, start_http

            self.http_runner = await start_http(create_app(self), *cfg.http)
        if cfg.checks:
            from gslb.health.monitor import Monitor

            self.monitor = Monitor(self.table, cfg.region)
            self.monitor.add_observer(self.check_stats.on_probe)
            self.monitor.configure(zones)
            # SPEC: the first round runs before pool names are answered, bounded by the timeouts.
            timeout = max((c.timeout for z in zones for c in z.checks.values()), default=0.0) + 1.0
            await self.monitor.first_round(timeout)
            await self.monitor.start()
        self.pools.ready = True
        self._tasks.append(asyncio.create_task(self._watch_zones(), name="zone-watch"))
        listen = ", ".join(f"{h}:{p}" for h, p in cfg.listen)
        http = f"{cfg.http[0]}:{cfg.http[1]}" if cfg.http else "off"
        logger.info("gslb: serving %d zone(s) on %s (udp+tcp), http %s, state %s, region %s, checks %s",
                    len(zones), listen, http, cfg.state, cfg.region, "on" if cfg.checks else "off")

    async def shutdown(self) -> None:
        """Close listeners, cancel background tasks, stop checks and the table."""
        self.dns_ready = False
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.dns is not None:
            await self.dns.close()
        if self.http_runner is not None:
            from gslb.http_api import stop_http

            await stop_http(self.http_runner)
        if self.monitor is not None:
            await self.monitor.close()
        await self.table.close()
        logger.info("gslb: stopped")

    def _reload_soon(self) -> None:
        logger.info("gslb: SIGHUP, reloading")
        self._tasks.append(asyncio.create_task(self.reload(force=True), name="reload"))

    async def reload(self, force: bool = True) -> dict[str, Any]:
        """Re-read the zone files (all with ``force``, else only changed ones) and apply good ones."""
        async with self._reload_lock:
            before = self.zone_store.zones
            result = self.zone_store.reload(force=force)
            errors = [str(e) for e in result.get("errors", [])]
            for error in errors:
                logger.error("zones: %s (keeping the last good version)", error)
            zones = self.zone_store.zones
            if zones is not before:
                self.table.configure(zones)
                if self.monitor is not None:
                    self.monitor.configure(zones)
                for name in result.get("changed", []):
                    logger.info("zones: loaded %s", name)
            if errors:
                self.reloads["error"] += 1
            elif force or zones is not before:
                self.reloads["ok"] += 1
            return {"ok": not errors, "changed": list(result.get("changed", [])),
                    "removed": list(result.get("removed", [])), "errors": errors,
                    "zones": self.zone_store.status()}

    async def _watch_zones(self) -> None:
        while True:
            await asyncio.sleep(ZONE_POLL_SECONDS)
            try:
                await self.reload(force=False)
            except Exception:  # never let the watcher die
                logger.exception("zones: reload failed")

    def explain(self, name: str, qtype: str, client: str) -> dict[str, Any]:
        """The decision trace for ``name`` asked by ``client``, with the live site states."""
        from gslb.explain import explain

        assert self.balancer is not None
        return explain(self.zone_store.zones, self.balancer, self.table.view, name, qtype, client)


def run(config: ServerConfig) -> int:
    """Run a server until it is stopped; return the process exit code."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional
        runner = asyncio.run
    try:
        server = Server(config)
        runner(server.serve())
    except StartupError as exc:
        logger.error("gslb: cannot start: %s", exc)
        return 3
    except GslbError as exc:
        logger.error("gslb: %s", exc)
        return 3
    return 0
