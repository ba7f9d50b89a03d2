"""The scope builder process and the main process's ScopeService: one build per spec, delivered to
every DNS process that wants it, kept for later requests, a new generation after a database change."""

from __future__ import annotations

import asyncio
import ipaddress
import random
from pathlib import Path

from harness import eventually_async

from gslb.balancer import ScopeSpec, scope_table_of
from gslb.geo import GeoLocator
from gslb.model import Pool, Site
from gslb.netmap import CompactScopes, NetworkIndex
from gslb.scopebuilder import ScopeService

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample-city.mmdb"
SITES = (Site("fra", (50.11, 8.68), ("192.0.2.10",), ()), Site("iad", (38.95, -77.45), ("198.51.100.20",), ()),
         Site("sin", (1.35, 103.82), ("203.0.113.30",), ()))
POOL = Pool("near", "closest", ("fra", "iad", "sin"))
PKEY = ("example.com", "near")


def _spec(*states: str) -> ScopeSpec:
    return ScopeSpec(POOL, SITES, states)


def test_one_build_per_spec_reaches_every_process_that_wants_it():
    async def main() -> None:
        main_got: list = []
        sent: list = []
        service = ScopeService(str(SAMPLE), lambda spec, table, stats: main_got.append((spec, table)),
                               lambda index, kind, payload: sent.append((index, kind, payload)))
        up = _spec("up", "up", "up")
        try:
            service.request(0, PKEY, up)
            service.request(1, PKEY, up)
            await eventually_async(lambda: main_got and sent, timeout=60, what="tables delivered")
            assert main_got[0][0] == up and sent == [(1, "scopes", (up, sent[0][2][1]))]
            # the same table as a build in this process, in the main process and in the worker's bytes
            index = NetworkIndex.build(GeoLocator.open(SAMPLE))
            local = scope_table_of(index, up)
            worker_table = CompactScopes.from_bytes(sent[0][2][1])
            rng = random.Random(1)
            for _ in range(300):
                addr = rng.randrange(1 << 32)
                assert main_got[0][1].scope(addr, 4) == worker_table.scope(addr, 4) == local.scope(addr, 4)
            assert service.last["pool"] == "near" and service.last["runs"] == local.size()
            # a kept spec is delivered at once, without a build
            service.request(2, PKEY, up)
            assert sent[-1][0] == 2 and sent[-1][2][0] == up
            # a new database (generation): kept tables are gone, the spec is built again
            service.reset(str(SAMPLE))
            down = _spec("down", "up", "up")
            service.request(0, PKEY, down)
            await eventually_async(lambda: len(main_got) == 2, timeout=60, what="the new generation's table")
            assert main_got[1][0] == down
            local_down = scope_table_of(index, down)
            assert main_got[1][1].size() == local_down.size() != local.size()
            for ip in ("192.0.2.9", "81.2.69.142", "198.51.100.9", "2001:db8::1"):
                addr, version = int(ipaddress.ip_address(ip)), 6 if ":" in ip else 4
                assert main_got[1][1].scope(addr, version) == local_down.scope(addr, version), ip
        finally:
            await service.close()

    asyncio.run(main())


def test_a_spec_no_process_wants_any_more_is_not_built():
    async def main() -> None:
        main_got: list = []
        service = ScopeService(str(SAMPLE), lambda spec, table, stats: main_got.append(spec))
        try:
            # the verdicts move on twice before the builder is free: only the latest wish is built
            service.request(0, PKEY, _spec("up", "up", "up"))
            service.request(0, PKEY, _spec("down", "up", "up"))
            service.request(0, PKEY, _spec("up", "down", "up"))
            await eventually_async(lambda: main_got, timeout=60, what="a table")
            await asyncio.sleep(0)  # let the service pick its next request, if it had one
            assert service._next() is None
            assert main_got[-1] == _spec("up", "down", "up")
            assert _spec("down", "up", "up") not in service._kept
        finally:
            await service.close()

    asyncio.run(main())
