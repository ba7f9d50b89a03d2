#!/usr/bin/env python3
"""Build a GeoIP2-City (or GeoIP2-Country) MaxMind DB from a readable CSV of networks.

Usage (from the repository root)::

    tools/build_geoip_db.py                      # data/sample-city.csv -> data/sample-city.mmdb
    tools/build_geoip_db.py --country --out /tmp/sample-country.mmdb
    tools/build_geoip_db.py --csv my.csv --out my.mmdb [--build-epoch 1767225600]

The CSV has a header row ``network,city,subdivision,country,continent,latitude,longitude``;
lines whose first field starts with ``#`` are comments. ``network`` is an IPv4 or IPv6 CIDR;
every other field may be empty except ``continent`` (AF AN AS EU NA OC SA). ``country`` is an
ISO 3166-1 alpha-2 code listed in ``data/country-centroids.csv`` (which also gives its English
name). Latitude and longitude come together or not at all. Networks must not overlap.

The database is an IPv6 tree (IPv4 networks under ``::/96``, aliased from ``::ffff:0:0/96`` and
``2002::/16`` as in MaxMind's own databases), with records shaped like MaxMind's City records
(``city.names.en``, ``subdivisions[].iso_code``, ``country.iso_code``/``names.en``,
``continent.code``/``names.en``, ``location.latitude``/``longitude``). ``--country`` writes a
GeoIP2-Country database from the same rows: continent and country only. The output is
deterministic: the same CSV and options give the same bytes (the build epoch is fixed, not
the clock). Exit status: 0 built, 1 errors in the input files (each printed as
``PATH:LINE: field: message``), 2 usage errors.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

if __name__ == "__main__":  # run under the project's venv (tools/_venv.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _venv
    _venv.use_project_venv(("mmdb_writer", "netaddr"))

from mmdb_writer import MMDBWriter  # noqa: E402
from netaddr import IPSet  # noqa: E402

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CSV = ROOT / "data" / "sample-city.csv"
DEFAULT_OUT = ROOT / "data" / "sample-city.mmdb"
DEFAULT_CENTROIDS = ROOT / "data" / "country-centroids.csv"
#: 2026-01-01T00:00:00Z: the build time written into the metadata (fixed for reproducibility)
DEFAULT_BUILD_EPOCH = 1767225600

HEADER = ("network", "city", "subdivision", "country", "continent", "latitude", "longitude")

#: continent codes as MaxMind uses them, with their English names
CONTINENTS: dict[str, str] = {
    "AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe",
    "NA": "North America", "OC": "Oceania", "SA": "South America",
}

#: IPv6 ranges that alias the IPv4 tree (IPv4-mapped, 6to4), as in MaxMind's databases
IPV4_ALIASES: tuple[ipaddress.IPv6Network, ...] = (
    ipaddress.IPv6Network("::ffff:0:0/96"),
    ipaddress.IPv6Network("2002::/16"),
)
_IPV4_SUBTREE = ipaddress.IPv6Network("::/96")


class BuildError(Exception):
    """Errors in the input files, one ``PATH:LINE: field: message`` per line."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True, slots=True)
class Row:
    """One network of the source CSV."""

    line: int
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    city: str | None
    subdivision: str | None
    country: str | None
    continent: str
    latlon: tuple[float, float] | None


def load_country_names(path: str | os.PathLike[str]) -> dict[str, str]:
    """ISO alpha-2 code -> English name, from the centroid table (``iso_code,name,...``)."""
    with open(path, newline="", encoding="utf-8") as f:
        return {row["iso_code"]: row["name"] for row in csv.DictReader(f)}


def _float_in(text: str, low: float, high: float) -> float:
    value = float(text)
    if not low <= value <= high:
        raise ValueError(f"{text} is out of range {low:g}..{high:g}")
    return value


def read_rows(path: str | os.PathLike[str], countries: dict[str, str]) -> list[Row]:
    """Parse and validate the CSV; raises BuildError listing every error found."""
    errors: list[tuple[int, str]] = []
    rows: list[Row] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise BuildError([f"{path}:1: header: expected {','.join(HEADER)}, got {','.join(header or [])}"])
        for fields in reader:
            line = reader.line_num
            if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
                continue

            def err(field: str, message: str) -> None:
                errors.append((line, f"{path}:{line}: {field}: {message}"))

            if len(fields) != len(HEADER):
                err("row", f"expected {len(HEADER)} fields, got {len(fields)}")
                continue
            net_s, city, sub, country, continent, lat_s, lon_s = (x.strip() for x in fields)
            try:
                network = ipaddress.ip_network(net_s, strict=True)
            except ValueError as e:
                err("network", f"expected a CIDR network with no host bits set, got {net_s!r} ({e})")
                continue
            if network.version == 6 and (network.overlaps(_IPV4_SUBTREE) or any(network.overlaps(a) for a in IPV4_ALIASES)):
                err("network", f"{network} overlaps the IPv4 part of the tree (::/96, ::ffff:0:0/96, 2002::/16): write the IPv4 network")
                continue
            if continent not in CONTINENTS:
                err("continent", f"expected one of {' '.join(CONTINENTS)}, got {continent!r}")
            if country and country not in countries:
                err("country", f"expected an ISO 3166-1 alpha-2 code of the centroid table, got {country!r}")
            if (city or sub) and not country:
                err("country", "a city or subdivision needs a country")
            latlon = None
            if lat_s or lon_s:
                try:
                    latlon = (_float_in(lat_s, -90, 90), _float_in(lon_s, -180, 180))
                except ValueError as e:
                    err("latitude/longitude", f"expected both, in degrees: {e}")
            rows.append(Row(line, network, city or None, sub or None, country or None, continent, latlon))

    # Overlaps: sort each family by start address; a row must begin after the previous one ends.
    ordered = sorted(rows, key=lambda r: (r.network.version, int(r.network.network_address)))
    for prev, row in zip(ordered, ordered[1:]):
        if row.network.version == prev.network.version and \
                int(row.network.network_address) <= int(prev.network.broadcast_address):
            errors.append((row.line, f"{path}:{row.line}: network: {row.network} overlaps {prev.network} (line {prev.line})"))
    if errors:
        raise BuildError([text for _, text in sorted(errors, key=lambda e: e[0])])
    return ordered


def make_record(row: Row, countries: dict[str, str], country_db: bool = False) -> dict[str, Any]:
    """The MaxMind-shaped record of one row (City layout, or Country layout when ``country_db``)."""
    record: dict[str, Any] = {"continent": {"code": row.continent, "names": {"en": CONTINENTS[row.continent]}}}
    if row.country:
        record["country"] = {"iso_code": row.country, "names": {"en": countries[row.country]}}
    if country_db:
        return record
    if row.subdivision:
        record["subdivisions"] = [{"iso_code": row.subdivision}]
    if row.city:
        record["city"] = {"names": {"en": row.city}}
    if row.latlon:
        record["location"] = {"latitude": row.latlon[0], "longitude": row.latlon[1]}
    return record


class _Writer(MMDBWriter):
    """MMDBWriter with a fixed build epoch instead of the clock (reproducible output)."""

    def __init__(self, build_epoch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._build_epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        meta["build_epoch"] = self._build_epoch
        return meta


def _bits(network: ipaddress.IPv6Network) -> list[int]:
    value = int(network.network_address)
    return [(value >> (127 - i)) & 1 for i in range(network.prefixlen)]


def _alias_ipv4(writer: MMDBWriter) -> None:
    """Point ::ffff:0:0/96 and 2002::/16 at the IPv4 subtree (::/96), sharing its nodes."""
    node: Any = writer.tree
    for _ in range(96):
        node = node.left
        if node is None or not hasattr(node, "left"):
            return  # no IPv4 data at all
    ipv4_root = node
    for alias in IPV4_ALIASES:
        bits = _bits(alias)
        parent: Any = writer.tree
        for bit in bits[:-1]:
            parent = parent.get_or_create(bit)
        parent[bits[-1]] = ipv4_root


def build(rows: Sequence[Row], out: str | os.PathLike[str], countries: dict[str, str],
          country_db: bool = False, build_epoch: int = DEFAULT_BUILD_EPOCH) -> None:
    """Write the database for ``rows`` to ``out`` (atomically: a temporary file, then rename)."""
    kind = "Country" if country_db else "City"
    writer = _Writer(
        build_epoch,
        ip_version=6,
        ipv4_compatible=True,
        database_type=f"GeoIP2-{kind}",
        languages=["en"],
        description={"en": f"gslb sample GeoIP2 {kind} database (made-up data, see data/README.md)"},
    )
    for row in rows:
        writer.insert_network(IPSet([str(row.network)]), make_record(row, countries, country_db))
    _alias_ipv4(writer)
    tmp = f"{os.fspath(out)}.tmp{os.getpid()}"
    try:
        writer.to_db_file(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description="Build a GeoIP2 City/Country mmdb from a CSV.")
    parser.add_argument("--csv", default=str(DEFAULT_CSV), help="source CSV (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output mmdb (default: data/sample-city.mmdb)")
    parser.add_argument("--centroids", default=str(DEFAULT_CENTROIDS),
                        help="country table: iso_code,name,latitude,longitude (default: %(default)s)")
    parser.add_argument("--country", action="store_true", help="write a GeoIP2-Country database")
    parser.add_argument("--build-epoch", type=int, default=DEFAULT_BUILD_EPOCH,
                        help="build time written into the metadata (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.out is None:
        if args.country:
            parser.error("--country needs --out (the default output is the City database)")
        args.out = str(DEFAULT_OUT)
    try:
        countries = load_country_names(args.centroids)
        rows = read_rows(args.csv, countries)
    except OSError as e:
        print(f"{e.filename}: cannot read: {e.strerror}", file=sys.stderr)
        return 1
    except BuildError as e:
        print(e, file=sys.stderr)
        return 1
    build(rows, args.out, countries, country_db=args.country, build_epoch=args.build_epoch)
    print(f"{args.out}: {len(rows)} networks, GeoIP2-{'Country' if args.country else 'City'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
