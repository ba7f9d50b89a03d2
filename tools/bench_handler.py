#!/usr/bin/env python3
"""Per-query cost of gslb's query path, in process: bytes in -> bytes out, no sockets.

Builds the same objects ``gslb serve`` builds (zone store, GeoIP, state table, balancer,
QueryHandler with its answer cache) over the example zone and the sample database, then times
prepared packets through ``handler.udp()`` (what the UDP threads call: answer cache first) and
through ``handler.handle()`` (the full path: parse, resolve, encode; what a cache miss costs).
Scenarios: a static name; a pool name asked for one client again and again; a pool name asked by
many different clients (GeoIP, decision and answer cache misses on the first round); NXDOMAIN
(never stored); a weighted pool (a random draw per query: never stored); DNS Cookies (on, as by
default): a resolver sending its client cookie and a valid server cookie again and again (as BIND
does), and many client cookies (every one judged and answered with a fresh server cookie). Prints, per scenario,
the first ``udp`` timing (cold caches), the median of the other ``--repeat`` ``udp`` timings
(warm: answer cache hits where the answer is cacheable) and of the full path, in microseconds per
query, and the single-core queries per second the warm figure implies (no socket costs).

    tools/bench_handler.py [--queries 20000] [--repeat 5] [--rate-limit N]

``--rate-limit N`` turns response rate limiting on at N replies a second (every packet comes from
127.0.0.1: a large N limits nothing and measures the limiter's cost).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run under the project's venv (tools/_venv.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _venv
    _venv.use_project_venv((*_venv.GSLB, "dns"))

import dns.edns  # noqa: E402
import dns.message  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gslb.answercache import AnswerCache  # noqa: E402
from gslb.balancer import Balancer  # noqa: E402
from gslb.config import Acl, RateLimit  # noqa: E402
from gslb.cookies import Cookies, address_bytes, server_cookie  # noqa: E402
from gslb.geo import GeoLocator  # noqa: E402
from gslb.handler import LivePools, QueryHandler  # noqa: E402
from gslb.state import MemoryBackend, SiteStateTable  # noqa: E402
from gslb.stats import QueryStats  # noqa: E402
from gslb.zones import ZoneStore  # noqa: E402


def packet(name: str, rdtype: str, ecs: str | None = None, qid: int = 1, cookie: bytes | None = None) -> bytes:
    """One query in wire format (EDNS, optional ECS and COOKIE option)."""
    options: list[dns.edns.Option] = []
    if ecs:
        addr, _, prefix = ecs.partition("/")
        options.append(dns.edns.ECSOption(addr, int(prefix)))
    if cookie is not None:
        options.append(dns.edns.GenericOption(10, cookie))
    msg = dns.message.make_query(name, rdtype, use_edns=0, options=options or None)
    msg.id = qid
    return msg.to_wire()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rate-limit", type=int, default=0, metavar="N",
                    help="rate_limit: {responses_per_second: N} (default: off)")
    args = ap.parse_args()

    store = ZoneStore(str(ROOT / "zones"))
    store.reload(force=True)
    table = SiteStateTable(MemoryBackend())
    table.configure(store.zones)
    stats = QueryStats()
    balancer = Balancer(GeoLocator.open(str(ROOT / "data" / "sample-city.mmdb")), {}, random.Random(1))
    pools = LivePools(balancer, lambda: table.view)
    pools.ready = True
    secret = bytes(range(16))
    handler = QueryHandler(lambda: store.zones, pools, stats, Acl(), AnswerCache(), Cookies(secret),
                           RateLimit(responses_per_second=args.rate_limit))
    pools.on_change = handler.pools_changed

    rng = random.Random(7)
    n = args.queries
    many = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24" for _ in range(n)]
    client = bytes.fromhex("0123456789abcdef")
    valid = client + server_cookie(secret, client, address_bytes("127.0.0.1"), int(time.time()))
    scenarios = {
        "static A (EDNS)": [packet("api.gslb.example.com", "A", qid=i & 0xFFFF) for i in range(n)],
        "NXDOMAIN": [packet("nope.gslb.example.com", "A", qid=i & 0xFFFF) for i in range(n)],
        "pool closest, one client (ECS)": [packet("www.gslb.example.com", "A", "81.2.69.0/24", i & 0xFFFF)
                                           for i in range(n)],
        "pool closest, many clients (ECS)": [packet("www.gslb.example.com", "A", c, i & 0xFFFF)
                                             for i, c in enumerate(many)],
        "pool hash, many clients (ECS)": [packet("login.gslb.example.com", "A", c, i & 0xFFFF)
                                          for i, c in enumerate(many)],
        "pool weighted, answers 2": [packet("shop.gslb.example.com", "A", qid=i & 0xFFFF) for i in range(n)],
        "static A, valid cookie, one client": [packet("api.gslb.example.com", "A", qid=i & 0xFFFF, cookie=valid)
                                               for i in range(n)],
        "static A, client cookies, many": [packet("api.gslb.example.com", "A", qid=i & 0xFFFF,
                                                  cookie=rng.randbytes(8)) for i in range(n)],
    }
    print(f"{'scenario':36} {'cold us/q':>9} {'warm us/q':>9} {'full us/q':>9} {'warm qps (1 core)':>18}")
    for name, packets in scenarios.items():
        udp, handle = handler.udp, handler.handle
        timings = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            for p in packets:
                udp(p, "127.0.0.1")
            timings.append((time.perf_counter() - start) / len(packets))
        full = []
        for _ in range(max(2, args.repeat - 1)):
            start = time.perf_counter()
            for p in packets:
                handle(p, "127.0.0.1", False)
            full.append((time.perf_counter() - start) / len(packets))
        per = statistics.median(timings[1:] or timings)
        print(f"{name:36} {timings[0] * 1e6:9.2f} {per * 1e6:9.2f} {statistics.median(full) * 1e6:9.2f} "
              f"{1 / per:18,.0f}")
    if stats.rrl_dropped or stats.rrl_slipped:
        print(f"rate limited: {stats.rrl_dropped} dropped, {stats.rrl_slipped} slipped (raise --rate-limit "
              "to measure the cost alone)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
