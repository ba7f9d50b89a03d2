"""``gslb checker``: one region's health checks of every zone, written into the shared Redis table.

A checker answers no DNS. It loads the zones like ``gslb serve`` does (and reloads them when a
file changes, polled every second, or on SIGHUP), runs a ``Monitor`` for its region and reports
through a ``SiteStateTable`` over a ``RedisBackend``. When Redis is unreachable it keeps
checking; the backend keeps the latest result per site and publishes it once Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from gslb.config import ServerConfig
from gslb.redis_state import RedisBackend
from gslb.state import SiteStateTable
from gslb.zones import ZoneStore, reload_changed, watch

logger = logging.getLogger(__name__)


def _reload(store: ZoneStore, force: bool = False) -> bool:
    """Reload the zone files (changed ones once settled); log errors; True when the zones changed."""
    before = store.zones
    result = reload_changed(store, force=force)
    for error in result.get("errors", []):
        logger.error("zones: %s", error)
    return store.zones is not before


async def run_checker(config: ServerConfig, region: str, state_url: str, stop: asyncio.Event,
                      *, backend: Any = None) -> None:
    """Run the checks of ``region`` into the table at ``state_url`` until ``stop`` is set.

    ``backend`` replaces the RedisBackend built from ``state_url`` (tests).
    """
    store = ZoneStore(config.zones, max_file_bytes=config.max_zone_file_bytes)
    _reload(store, force=True)
    if not len(store.zones):
        logger.warning("zones: no zone loaded from %s; checking nothing until one appears", config.zones)
    table = SiteStateTable(backend if backend is not None else RedisBackend(state_url))
    table.configure(store.zones)
    # Imported here: the probes pull in aiohttp, which `gslb check` does not need.
    from gslb.health.monitor import Monitor

    monitor = Monitor(table, region)
    reload_now = asyncio.Event()
    loop = asyncio.get_running_loop()
    hup = False
    try:
        loop.add_signal_handler(signal.SIGHUP, reload_now.set)
        hup = True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP
        pass
    try:
        await table.start()
        status = table.backend_status()
        logger.info("checker: region %s, %d zone(s), %d site(s), state %s (%s)", region,
                    len(store.zones), sum(len(z.sites) for z in store.zones), status["url"],
                    "connected" if status["connected"] else "unreachable, retrying")
        monitor.configure(store.zones)
        await monitor.start()

        async def tick(forced: bool) -> None:
            if forced:
                logger.info("checker: SIGHUP, reloading zones")
            elif config.reload == "manual":
                return  # reload: manual: zone changes apply on SIGHUP only
            if _reload(store, force=forced):
                table.configure(store.zones)
                monitor.configure(store.zones)
                logger.info("checker: now checking %d zone(s), %d site(s)", len(store.zones),
                            sum(len(z.sites) for z in store.zones))

        await watch(tick, stop, wake=reload_now)
    finally:
        if hup:
            loop.remove_signal_handler(signal.SIGHUP)
        await monitor.close()
        await table.close()
        logger.info("checker: region %s stopped", region)
