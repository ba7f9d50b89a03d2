"""The server's lifecycle: load, check, bind, serve, reload, stop.

``Server.serve()`` reads top to bottom: ``startup()`` (zones, GeoIP, state table, first round of
health checks, DNS listeners, HTTP), then it waits for a stop signal, then ``shutdown()``.

Reload (SIGHUP, ``POST /api/v1/reload``) re-reads the server file with the command line's flags
over it, then every zone file. What can change live is applied: ``api_token_file`` (the token is
re-read), ``acl``, ``rate_limit`` (with new, empty buckets), ``regions``, ``tcp`` limits, ``geoip`` (re-opened when its path or file
changed) and ``zones`` (another folder). ``listen``, ``http``, ``state``, ``checks``, ``workers``
and ``region`` need a restart: a change is logged as a warning and the running value stays. A
server file, token file or GeoIP database that cannot be used changes nothing: the errors are in
the reload result and the log. Every second the zone files and the GeoIP file are polled (a stat
each); a changed file is read once it has settled (:func:`gslb.filewatch.settled`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import random
import resource
import signal
import time
from pathlib import Path
from typing import Any, Callable, Coroutine
from urllib.parse import urlsplit

from gslb.balancer import Balancer, ScopeSpec
from gslb.config import DEFAULT_CONFIG_NAME, ServerConfig, check_state_url, load_server_config, usable_geoip
from gslb.dnsserver import DnsServer
from gslb.errors import ConfigErrors, GeoDatabaseError, GslbError, StartupError
from gslb.filewatch import FileWatch, Stamp, stamp_of, watch
from gslb.geo import GeoLocator
from gslb.answercache import AnswerCache
from gslb.cookies import Cookies
from gslb.handler import QueryHandler, ReadinessGate, expire_cookies_every, expire_signatures_every
from gslb import sdnotify
from gslb.metrics import CheckStats
from gslb.netmap import CompactScopes
from gslb.mapservice import MapService
from gslb.scopebuilder import ScopeService
from gslb.state import MemoryBackend, SiteStateTable
from gslb.stats import QueryStats
from gslb.workers import WorkerPool, changed_zones, init_payload
from gslb.zonestore import ZoneStore, check_zones_folder, reload_in_thread

logger = logging.getLogger(__name__)

#: server-file fields that only a restart applies
RESTART_FIELDS = ("listen", "http", "state", "checks", "workers", "region", "cookies", "ecs_scope")


#: open files kept for everything but TCP clients: listeners, HTTP clients, health probes (64 in
#: flight), zone and GeoIP files, worker pipes, logs
FD_RESERVE = 256


def fd_limit_plan(soft: int, hard: int, max_connections: int, reserve: int = FD_RESERVE
                  ) -> tuple[int, str | None]:
    """(the soft open-file limit to set, a warning or None) at start-up.

    The soft limit goes up to the hard one (``RLIM_INFINITY``: at least 1048576, Linux's usual
    ceiling); the warning says when ``max_connections`` TCP clients plus ``reserve`` cannot fit.
    """
    infinite = hard == resource.RLIM_INFINITY
    target = max(soft, 1 << 20) if infinite else max(soft, hard)
    need = max_connections + reserve
    if infinite or need <= target:
        return target, None
    return target, (f"tcp.max_connections {max_connections} plus {reserve} files for the rest need "
                    f"{need} open files, but the limit is {target} (hard limit {hard}): connections "
                    f"beyond about {max(target - reserve, 0)} fail; raise the hard limit (ulimit -Hn, "
                    f"systemd LimitNOFILE=) or lower tcp.max_connections")


def raise_fd_limit(max_connections: int) -> str | None:
    """Raise the soft open-file limit to the hard one; log and return a warning when the caps do not fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target, warning = fd_limit_plan(soft, hard, max_connections)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            logger.info("gslb: open file limit raised from %d to %d", soft, target)
        except (ValueError, OSError) as exc:
            logger.info("gslb: cannot raise the open file limit from %d to %d: %s", soft, target, exc)
            _, warning = fd_limit_plan(soft, soft, max_connections)
    if warning:
        logger.warning("gslb: %s", warning)
    return warning


def make_backend(url: str) -> Any:
    """The state backend for a ``state:`` URL (checked by :func:`gslb.config.check_state_url`)."""
    problem = check_state_url(url)
    if problem is not None:
        raise StartupError(f"state: {problem}")
    if urlsplit(url).scheme == "memory":
        return MemoryBackend(url)
    from gslb.redis_state import RedisBackend

    return RedisBackend(url)


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


class Server:
    """One ``gslb serve`` process: the objects the DNS path and the HTTP API read."""

    def __init__(self, config: ServerConfig, overrides: dict[str, Any] | None = None) -> None:
        self.config = config
        #: the command line's flags, put over the server file again on every reload
        self.overrides = dict(overrides or {})
        #: started without a server file (no -c, no gslb.yaml in the working directory): the
        #: gslb.yaml a reload reads once it exists there; None when a file was given or found
        self.default_file = None if config.file is not None else os.path.join(os.getcwd(), DEFAULT_CONFIG_NAME)
        self.stats = QueryStats()
        self.zone_store = ZoneStore(config.zones, serial_state=True, max_file_bytes=config.max_zone_file_bytes)
        self.table = SiteStateTable(make_backend(config.state))
        self.api_token = read_token(config.api_token_file)
        self.geo: GeoLocator | None = None
        self.balancer: Balancer | None = None
        self.monitor: Any = None
        self.dns: DnsServer | None = None
        self.pools: ReadinessGate | None = None
        self.handler: QueryHandler | None = None
        #: DNS Cookies (None when ``cookies.enabled`` is false); its secret reaches every worker
        self.cookies: Cookies | None = None
        self.check_stats = CheckStats()
        #: the DNS worker processes (``workers:`` above 1), else None
        self.workers: WorkerPool | None = None
        #: merged ECS scopes (``ecs_scope: merged``): the builder process's service
        self.scopes: ScopeService | None = None
        #: the builder process's service for the traffic map and plans (the same as ``scopes``
        #: when that is on; the process starts on the first request)
        self.builder: ScopeService | None = None
        #: ``/api/v1/map`` and ``/api/v1/plan`` (gslb.mapservice)
        self.maps: MapService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.http_runner: Any = None
        self.dns_ready = False
        self.reloads = {"ok": 0, "error": 0}
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        self._hup_queued = False
        #: READY=1 went to systemd ($NOTIFY_SOCKET); reloads then send RELOADING=1 and READY=1
        self._notified_ready = False
        #: the GeoIP file: the version in use, a changed one seen at the last poll, one that failed
        self._geo_watch = FileWatch(config.geoip or "")

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
        problem = check_zones_folder(cfg.zones)
        if problem is not None:
            raise StartupError(problem)
        raise_fd_limit(cfg.tcp.max_connections)
        result = self.zone_store.reload(force=True)
        for error in result.get("errors", []):
            logger.error("zones: %s", error)
        if not len(self.zone_store.zones):
            logger.warning("zones: no zone loaded from %s", cfg.zones)
        self._geo_watch = FileWatch(cfg.geoip or "", stamp_of(cfg.geoip))
        self.geo = GeoLocator.open(usable_geoip(cfg))  # a missing built-in default: no database
        regions = {name: loc for name, loc in cfg.regions.items()}
        self._loop = asyncio.get_running_loop()
        if cfg.ecs_scope == "merged":
            self.scopes = ScopeService(self.geo.path if self.geo is not None else None, self._install_scopes,
                                       self._send_scopes)
        self.builder = self.scopes or ScopeService(self.geo.path if self.geo is not None else None,
                                                   lambda *_: None)
        self.maps = MapService(self._builder, lambda: self.zone_store.zones, lambda: self.table.view,
                               lambda: self.query_stats().countries)
        self.balancer = self._new_balancer(self.geo, regions)
        zones = self.zone_store.zones
        self.table.configure(zones)
        await self.table.start()
        # Bind first: static names answer at once and a busy port fails fast (exit 3).
        table = self.table
        pools = self.pools = ReadinessGate(self.balancer, lambda: table.view)
        if cfg.cookies.enabled:
            # no secret_file: a random secret for this run (shared with the workers, not with other nodes)
            self.cookies = Cookies(cfg.cookies.secret or os.urandom(16), cfg.cookies.max_nocookie_udp)
        handler = self.handler = QueryHandler(lambda: self.zone_store.zones, pools, self.stats, cfg.acl,
                                              AnswerCache(), cookies=self.cookies, rate_limit=cfg.rate_limit)
        _log_rate_limit(cfg.rate_limit, cfg.workers)
        if self.cookies is not None:
            self._spawn(expire_cookies_every(handler), "cookie-expiry")
        self._spawn(expire_signatures_every(handler), "signature-expiry")
        # every new view reaches the balancer at once; it drops the answers of the pools whose
        # verdicts changed (and only those) from the answer cache
        pools.on_change = handler.pools_changed
        table.add_listener(lambda old, new: handler.locked(pools.sync, new))
        maps = self.maps
        table.add_listener(lambda old, new: maps.view_changed())
        self._spawn(maps.sample_every(), "traffic-window")
        self.dns = DnsServer(handler, cfg.tcp)
        await self.dns.start(list(cfg.listen), reuse_port=cfg.workers > 1)
        if cfg.workers > 1:
            workers = self.workers = WorkerPool(cfg.workers - 1, self._worker_init)
            workers.on_message = self._worker_message
            table.add_listener(lambda old, new: workers.send_view(new))
            await workers.start()
        self.dns_ready = True
        if cfg.http is not None:
            from gslb.http_api import create_app, start_http

            self.http_runner = await start_http(create_app(self), *cfg.http)
        if cfg.checks:
            from gslb.health.monitor import Monitor

            self.monitor = Monitor(self.table, cfg.region)
            self.monitor.add_observer(self.check_stats.on_probe)
            self.monitor.configure(zones)
            # SPEC: the first round runs before pool names are answered, bounded by the timeouts
            # (first_round sizes its wait by the longest timeout and the number of targets).
            await self.monitor.first_round()
            await self.monitor.start()
        self.pools.ready = True
        if self.workers is not None:
            self.workers.send("ready", True)
        # Everything loaded so far (modules, zones, the GeoIP index) lives as long as the process:
        # out of every future collection, so a full collection's pause stays short.
        gc.collect()
        gc.freeze()
        self._spawn(self._watch_zones(), "zone-watch")
        if self.default_file is not None:
            logger.info("config: no server file (%s does not exist): defaults and flags; SIGHUP or "
                        "POST /api/v1/reload reads it once it exists", self.default_file)
        else:
            logger.info("config: server file %s (re-read on SIGHUP or POST /api/v1/reload)", cfg.file)
        listen = ", ".join(f"{h}:{p}" for h, p in cfg.listen)
        http = f"{cfg.http[0]}:{cfg.http[1]}" if cfg.http else "off"
        logger.info("gslb: serving %d zone(s) on %s (udp+tcp), http %s, state %s, region %s, checks %s",
                    len(zones), listen, http, self.table.backend.url, cfg.region, "on" if cfg.checks else "off")
        # systemd (Type=notify): ready only now, with the listeners bound and pool names answered
        self._notified_ready = sdnotify.notify(f"READY=1\nSTATUS=serving {len(zones)} zone(s) on {listen}")

    async def shutdown(self) -> None:
        """Close listeners, cancel background tasks, stop checks and the table."""
        sdnotify.notify("STOPPING=1")
        self.dns_ready = False
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self.workers is not None:
            await self.workers.close()
        if self.maps is not None:
            await self.maps.close()
        if self.builder is not None:
            await self.builder.close()
        if self.dns is not None:
            await self.dns.close()
        if self.http_runner is not None:
            from gslb.http_api import stop_http

            await stop_http(self.http_runner)
        if self.monitor is not None:
            await self.monitor.close()
        await self.table.close()
        if self.geo is not None:
            self.geo.close()
        logger.info("gslb: stopped")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """A background task, forgotten when done (shutdown cancels those still running)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _reload_soon(self) -> None:
        """SIGHUP: one reload; signals arriving while one waits for its turn join it."""
        if self._hup_queued:
            logger.info("gslb: SIGHUP, a reload is already queued")
            return
        logger.info("gslb: SIGHUP, reloading")
        self._hup_queued = True
        self._spawn(self._reload_from_signal(), "reload")

    async def _reload_from_signal(self) -> None:
        # systemd: `systemctl reload` waits for READY=1 (a SIGHUP during start-up: no READY early)
        notified = self._notified_ready and sdnotify.notify(sdnotify.reloading())
        try:
            await self.reload(force=True, on_start=self._hup_started)
        except Exception:  # the reload's own errors are in its result; this is a bug
            logger.exception("gslb: reload failed")
        finally:
            if notified:
                sdnotify.notify("READY=1")

    def _hup_started(self) -> None:
        self._hup_queued = False  # a SIGHUP from now on sees the files after this reload read them

    async def reload(self, force: bool = True, on_start: Any = None) -> dict[str, Any]:
        """Re-read the server file and every zone file (``force``), or the changed files only.

        Returns ok, changed, removed, errors (``PATH:LINE: ...``), warnings and zones (status).
        """
        async with self._reload_lock:
            if on_start is not None:
                on_start()
            errors: list[str] = []
            warnings: list[str] = []
            store = self.zone_store
            if force:
                errors, store = self._reload_config(warnings)
            else:
                geo_error = self._poll_geoip()
                if geo_error:
                    errors.append(geo_error)
            before = self.zone_store.zones
            # Read and built in a worker thread: DNS goes on answering; applied here, on the loop.
            result = await reload_in_thread(store, force=force or store is not self.zone_store)
            zone_errors = [str(e) for e in result.get("errors", [])]
            for error in zone_errors:
                logger.error("zones: %s", error)  # what is served instead: logged by the store
            removed = list(result.get("removed", []))
            if store is not self.zone_store:
                kept = {z.key for z in store.zones}
                removed += [z.key for z in before if z.key not in kept and z.key not in removed]
                self.zone_store = store
            errors += zone_errors
            zones = self.zone_store.zones
            if zones is not before:
                gc.freeze()  # the new zones are long-lived: keep them out of collections too
                if self.handler is not None:
                    self.handler.locked(self._zones_changed, before, zones)
                if self.workers is not None:
                    self.workers.send("zones", changed_zones(before, zones))
                self.table.configure(zones)
                if self.monitor is not None:
                    self.monitor.configure(zones)
                self.check_stats.retain(zones)  # removed sites' and checks' series go
                self.stats.retain(zones)  # and removed zones', pools' and sites' query series
                for name in result.get("changed", []):
                    logger.info("zones: loaded %s", name)
            if errors:
                self.reloads["error"] += 1
            elif force or zones is not before:
                self.reloads["ok"] += 1
            return {"ok": not errors, "changed": list(result.get("changed", [])),
                    "removed": removed, "errors": errors, "warnings": warnings,
                    "zones": self.zone_store.status()}

    def _reload_config(self, warnings: list[str]) -> tuple[list[str], ZoneStore]:
        """Re-read the server file and apply what can change live; all or nothing.

        Returns the errors (nothing was applied when there are any) and the zone store to use.
        """
        old = self.config
        path = old.file
        if path is None and self.default_file is not None:
            if os.path.isfile(self.default_file):
                path = self.default_file
                logger.info("config: %s now exists: reading it", path)
            else:
                logger.info("config: still no server file (%s does not exist): defaults and flags",
                            self.default_file)
        try:
            new = load_server_config(path, self.overrides)
        except ConfigErrors as exc:
            messages = [str(e) for e in exc.errors]
            for message in messages:
                logger.error("config: %s (keeping the running configuration)", message)
            return messages, self.zone_store
        errors: list[str] = []
        # Prepare everything first, apply only when nothing failed.
        token = self.api_token
        try:
            token = read_token(new.api_token_file)
        except StartupError as exc:
            errors.append(str(exc))
        store = self.zone_store
        if new.zones != old.zones:
            problem = check_zones_folder(new.zones)
            if problem is not None:
                errors.append(problem)
            else:
                store = ZoneStore(new.zones, serial_state=True, max_file_bytes=new.max_zone_file_bytes)
        geo: GeoLocator | None = None
        geo_stamp = stamp_of(new.geoip)
        if new.geoip != old.geoip or geo_stamp != self._geo_watch.stamp:
            try:
                geo = GeoLocator.open(new.geoip)
            except GeoDatabaseError as exc:
                errors.append(f"geoip: {exc}")
        if errors:
            for error in errors:
                logger.error("config: %s (keeping the running configuration)", error)
            if geo is not None:
                geo.close()
            return errors, self.zone_store
        # Apply.
        where = new.file or "the command line"
        for name in RESTART_FIELDS:
            if getattr(new, name) != getattr(old, name):
                msg = (f"{name} changed in {where} but only a restart applies it; "
                       f"still using {_shown(getattr(old, name))}")
                logger.warning("config: %s", msg)
                warnings.append(msg)
        live = dataclasses.replace(new, **{name: getattr(old, name) for name in RESTART_FIELDS})
        self.api_token = token
        if new.acl != old.acl and self.handler is not None:
            self.handler.set_acl(new.acl)
            if self.workers is not None:
                self.workers.send("acl", new.acl)
            logger.info("config: acl applied (allow %s; deny %s)", ", ".join(new.acl.allow),
                        ", ".join(new.acl.deny) or "none")
        if new.rate_limit != old.rate_limit and self.handler is not None:
            self.handler.locked(self.handler.set_rate_limit, new.rate_limit)
            if self.workers is not None:
                self.workers.send("rate_limit", new.rate_limit)
            logger.info("config: rate_limit applied")
            _log_rate_limit(new.rate_limit, old.workers)
        if new.tcp != old.tcp and self.dns is not None:
            self.dns.limits = new.tcp  # read when a connection opens and by its idle timer
            logger.info("config: tcp limits applied")
            if new.tcp.max_connections > old.tcp.max_connections:
                raise_fd_limit(new.tcp.max_connections)
        if geo is not None:
            self._geo_watch = FileWatch(new.geoip or "", geo_stamp)
        if geo is not None or dict(new.regions) != dict(old.regions):
            self._use_geo(geo if geo is not None else self.geo, new.regions)
            if dict(new.regions) != dict(old.regions):
                logger.info("config: regions applied (%s)", ", ".join(new.regions) or "none")
        if store is not self.zone_store:
            logger.info("config: zones folder is now %s", new.zones)
        store.max_file_bytes = new.max_zone_file_bytes  # before this reload reads the files
        if new.reload != old.reload:
            logger.info("config: reload: %s applied", new.reload)
        self.config = live
        return [], store

    def _zones_changed(self, before: Any, zones: Any) -> None:
        """A new zone set is in place: drop its changed answers and forget removed pools (under the lock)."""
        assert self.handler is not None
        self.handler.zones_changed(before, zones)
        if self.balancer is not None:
            self.balancer.retain(zones)

    def _use_geo(self, geo: GeoLocator | None, regions: Any) -> None:
        """Answer pools with ``geo`` and ``regions`` from the next query on (a new Balancer)."""
        if self.builder is not None:
            # before the workers hear of it: tables of the new generation reach them after "geo"
            self.builder.reset(geo.path if geo is not None else None, reopen=geo is not self.geo)
        if self.handler is None:
            self._swap_geo(geo, regions)
        else:
            self.handler.locked(self._swap_geo, geo, regions)
        if self.workers is not None:
            self.workers.send("geo", (geo.path if geo is not None else None, dict(regions)))

    def _new_balancer(self, geo: GeoLocator | None, regions: dict[str, Any]) -> Balancer:
        return Balancer(geo, regions, random.Random(), self._ask_scopes if self.scopes is not None else None)

    def _builder(self) -> ScopeService:
        assert self.builder is not None
        return self.builder

    def _ask_scopes(self, pkey: tuple[str, str], spec: ScopeSpec) -> None:
        """The main process's balancer wants a table (any thread: the UDP threads prepare pools too)."""
        assert self._loop is not None and self.scopes is not None
        self._loop.call_soon_threadsafe(self.scopes.request, 0, pkey, spec)

    def _install_scopes(self, spec: ScopeSpec, table: CompactScopes, stats: dict[str, Any]) -> None:
        """A table the main process's balancer asked for (on the event loop)."""
        assert self.handler is not None and self.pools is not None
        installed = self.handler.locked(self.pools.balancer.install_table, spec, table)
        for zone, pool in installed:
            logger.info("ecs: scope table of pool %s/%s: %d runs, %d kB, built in %.2f s by the builder process "
                        "(peak %.0f MB)", zone, pool, table.size(), table.nbytes // 1024, stats.get("seconds", 0.0),
                        stats.get("builder_rss_mb", 0.0))

    def _send_scopes(self, index: int, kind: str, payload: Any) -> None:
        if self.workers is not None:
            self.workers.send_to(index, kind, payload)

    def _worker_message(self, index: int, kind: str, body: Any) -> None:
        """A DNS worker's message other than its counters."""
        if self.scopes is None:
            return
        if kind == "want_scopes":
            self.scopes.request(index, *body)
        elif kind == "started":
            self.scopes.forget(index)

    def _swap_geo(self, geo: GeoLocator | None, regions: Any) -> None:
        old_geo = self.geo
        balancer = self._new_balancer(geo, {name: loc for name, loc in regions.items()})
        self.geo = geo
        self.balancer = balancer
        if self.pools is not None:
            self.pools.use(balancer)
        if self.handler is not None:
            self.handler.clear_cache()
        if old_geo is not None and old_geo is not geo:
            old_geo.close()

    def _poll_geoip(self) -> str | None:
        """The 1 s poll of the GeoIP file: re-open it once a change settled; the error, if any."""
        path = self.config.geoip
        if not path or self.balancer is None:
            return None
        stamp = stamp_of(path)
        if not self._geo_watch.due(stamp, time.time_ns()) or stamp is None:
            # A vanished file (no stamp) keeps the open database (it is mapped); a later copy is
            # seen. A broken file is reported once; SIGHUP retries it.
            return None
        try:
            geo = GeoLocator.open(path)
        except GeoDatabaseError as exc:
            self._geo_watch.mark_failed(stamp)
            msg = f"geoip: {exc}"
            logger.error("%s (keeping the database opened before)", msg)
            return msg
        self._geo_watch.mark_loaded(stamp)
        self._use_geo(geo, self.config.regions)
        logger.info("geo: %s changed, now in use", path)
        return None

    async def _watch_zones(self) -> None:
        """The 1 s poll of the zone files and the GeoIP file (:func:`gslb.filewatch.watch`).

        With ``reload: manual`` it applies nothing: it logs, once per version, that a file changed.
        """
        noticed: dict[str, Stamp | None] = {}

        async def tick(forced: bool) -> Any:
            if self.config.reload == "manual":
                self._notice_changes(noticed)
                return None
            noticed.clear()
            return await self.reload(force=False)

        await watch(tick, self._stop)

    def _notice_changes(self, noticed: dict[str, Stamp | None]) -> None:
        """``reload: manual``: log each zone or GeoIP file version changed on disk once."""
        changed = self.zone_store.changed_on_disk()
        geo = self.config.geoip
        if geo and stamp_of(geo) not in (self._geo_watch.stamp, None):
            changed.append(geo)
        for path in list(noticed):
            if path not in changed:
                del noticed[path]
        for path in changed:
            stamp = stamp_of(path)
            if path in noticed and noticed[path] == stamp:
                continue
            noticed[path] = stamp
            logger.info("zones: %s changed on disk; reload: manual, so it applies on SIGHUP or "
                        "POST /api/v1/reload", path)

    def _worker_init(self) -> dict[str, Any]:
        """What a DNS worker process starts from: the state of this moment."""
        assert self.dns is not None and self.pools is not None
        return init_payload(self.zone_store.zones, self.table.view, self.pools.ready,
                            self.geo.path if self.geo is not None else None, dict(self.config.regions),
                            self.config.acl, self.dns.addresses, logging.getLogger().level,
                            rate_limit=self.config.rate_limit,
                            cookies=(self.cookies.secret, self.cookies.max_nocookie_udp) if self.cookies else None,
                            merge_scopes=self.config.ecs_scope == "merged")

    def query_stats(self) -> QueryStats:
        """The query counters of every DNS process (this one, the workers, the workers that exited)."""
        own = self.handler.stats_snapshot() if self.handler is not None else self.stats.snapshot()
        if self.workers is None:
            return QueryStats.total([own])
        return QueryStats.total([own, self.workers.retired, *self.workers.snapshots()])

    def dns_processes(self) -> list[dict[str, Any]]:
        """The DNS processes for the status API: this one (worker 0) and the worker processes,
        each with the queries it answered and the version of the state view it answers with."""
        own = self.handler.stats_snapshot() if self.handler is not None else self.stats.snapshot()
        rows = [{"worker": 0, "pid": os.getpid(), "ready": bool(self.dns_ready), "restarts": 0,
                 "queries": sum(own["queries"].values()), "view": self.table.view.version}]
        if self.workers is not None:
            rows += self.workers.status()
        return rows

    def explain(self, name: str, qtype: str, client: str) -> dict[str, Any]:
        """The decision trace for ``name`` asked by ``client``, with the live site states."""
        from gslb.explain import explain

        assert self.balancer is not None
        if self.handler is None:
            return explain(self.zone_store.zones, self.balancer, self.table.view, name, qtype, client)
        with self.handler.lock:  # the balancer's caches are shared with the DNS threads
            return explain(self.zone_store.zones, self.balancer, self.table.view, name, qtype, client)


def _log_rate_limit(rl: Any, workers: int) -> None:
    if not rl.enabled:
        return
    per = f" per DNS process ({workers} processes)" if workers > 1 else ""
    logger.info("rrl: UDP replies limited to %d/s per (client /%d or /%d, answer)%s, window %ds, slip %d%s",
                rl.responses_per_second, rl.ipv4_prefix, rl.ipv6_prefix, per, rl.window, rl.slip,
                f", exempt {', '.join(rl.exempt)}" if rl.exempt else "")


def _shown(value: Any) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ", ".join(f"{h}:{p}" for h, p in value)
    if isinstance(value, tuple) and len(value) == 2:
        return f"{value[0]}:{value[1]}"
    return str(value)


def run(config: ServerConfig, overrides: dict[str, Any] | None = None) -> int:
    """Run a server until it is stopped; return the process exit code.

    ``overrides`` are the command line's flags (as given to ``load_server_config``): a reload
    puts them over the re-read server file again.
    """
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional
        runner = asyncio.run
    try:
        server = Server(config, overrides)
        runner(server.serve())
    except StartupError as exc:
        logger.error("gslb: cannot start: %s", exc)
        return 3
    except GslbError as exc:
        logger.error("gslb: %s", exc)
        return 3
    return 0
