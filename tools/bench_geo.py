#!/usr/bin/env python3
"""Measure GeoLocator lookups per second with and without its caches.

Usage (from the repository root)::

    tools/bench_geo.py                       # the sample database
    tools/bench_geo.py --db GeoLite2-City.mmdb
    tools/bench_geo.py --synthetic 20000     # a temporary DB with MaxMind-sized records

Workloads: ``repeat`` (1000 clients asking again and again: the per-network cache), ``spread``
(a new address every time, inside the located networks: the per-network cache) and ``geoip2``
(``geoip2.database.Reader.city()`` model objects, for comparison).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # run under the project's venv (tools/_venv.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _venv
    _venv.use_project_venv((*_venv.GSLB, "maxminddb"))

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import geoip2.database  # noqa: E402
import geoip2.errors  # noqa: E402
import maxminddb  # noqa: E402

from gslb.geo import GeoLocator  # noqa: E402

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
LANGS = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")


def _networks(path: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The located networks of a database (maxminddb lists ::/96 as IPv4 and skips aliases)."""
    with maxminddb.open_database(path) as reader:
        return [ipaddress.ip_network(network) for network, _ in reader]


def _addresses(nets: list, count: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(count):
        net = rng.choice(nets)
        out.append(str(net.network_address + rng.randrange(net.num_addresses)))
    return out


def synthetic_db(path: str, count: int, rng: random.Random) -> None:
    """A GeoIP2-City-typed DB of ``count`` random IPv4 /20../28 networks with MaxMind-sized records."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City",
                        languages=list(LANGS), description="bench")
    for i in range(count):
        plen = rng.randint(20, 28)
        net = ipaddress.IPv4Network((rng.getrandbits(32) >> (32 - plen) << (32 - plen), plen))
        names = {lang: f"City {i} ({lang})" for lang in LANGS}
        writer.insert_network(IPSet([str(net)]), {
            "city": {"geoname_id": 100000 + i, "names": names},
            "continent": {"code": "EU", "geoname_id": 6255148, "names": {lang: "Europe" for lang in LANGS}},
            "country": {"geoname_id": 2921044, "iso_code": "DE", "names": {lang: "Germany" for lang in LANGS}},
            "registered_country": {"geoname_id": 2921044, "iso_code": "DE",
                                   "names": {lang: "Germany" for lang in LANGS}},
            "location": {"accuracy_radius": 20, "latitude": rng.uniform(-80, 80),
                         "longitude": rng.uniform(-179, 179), "time_zone": "Europe/Berlin"},
            "postal": {"code": f"{i % 100000:05d}"},
            "subdivisions": [{"geoname_id": 2905330, "iso_code": "HE", "names": {lang: "Hesse" for lang in LANGS}}],
        })
    writer.to_db_file(path)


def _rate(fn, ips: list[str], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        for ip in ips:
            fn(ip)
    return rounds * len(ips) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print lookups per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(ROOT / "data" / "sample-city.mmdb"))
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="benchmark a temporary DB of N networks with MaxMind-sized records")
    parser.add_argument("--lookups", type=int, default=200000)
    args = parser.parse_args(argv)
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db
        if args.synthetic:
            db = str(Path(tmp) / "synthetic.mmdb")
            synthetic_db(db, args.synthetic, rng)
        nets = _networks(db)
        repeat = _addresses(nets, 1000, rng)
        spread = _addresses(nets, args.lookups, rng)
        rounds = max(1, args.lookups // len(repeat))
        print(f"{db}: {len(nets)} networks, {args.lookups} lookups per workload")

        with GeoLocator.open(db, cache_size=0) as plain:
            print(f"  no cache        repeat {_rate(plain.locate, repeat, rounds):>12,.0f}/s"
                  f"   spread {_rate(plain.locate, spread, 1):>12,.0f}/s")
        with GeoLocator.open(db) as cached:
            _rate(cached.locate, repeat, 1)  # warm: every client asked once
            r = _rate(cached.locate, repeat, rounds)
            s = _rate(cached.locate, spread, 1)  # mostly network-cache hits (new addresses)
            print(f"  cached          repeat {r:>12,.0f}/s   spread {s:>12,.0f}/s")
        with geoip2.database.Reader(db) as reader:
            def city(ip: str) -> object:
                try:
                    return reader.city(ip)
                except geoip2.errors.AddressNotFoundError:
                    return None
            print(f"  geoip2 .city()  repeat {_rate(city, repeat, max(1, rounds // 4)):>12,.0f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
