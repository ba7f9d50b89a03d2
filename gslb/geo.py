"""Client location from a GeoIP2/GeoLite2 City or Country database, cached per database network.

``GeoLocator.open(path)`` opens any MaxMind DB whose records are shaped like MaxMind's City or
Country records (GeoIP2/GeoLite2 City, Country, Enterprise; DB-IP City/Country Lite). The
database is read with ``maxminddb`` (the reader under ``geoip2``; its C extension when
available), because building ``geoip2`` model objects per lookup costs far more than the lookup.

``locate(ip)`` answers a ``gslb.model.Location`` whose ``network``/``prefixlen`` is the database
network holding the address, or for an address the database does not locate the empty network
around it: every address in that network gets the same answer, which is what bounds the ECS
scope of location-dependent answers. Coordinates are the record's own (City databases), else the
country's approximate centroid from ``gslb/data/country-centroids.csv`` (Country databases, or City
records with a country but no coordinates); a record with only a continent has no coordinates.

Caching. The database never changes while open (a new file means a new locator), so results are
cached by database network, exactly: the first lookup of an address returns its network N/p; any
other address whose first p bits equal N's walks the same path of the search tree and gets the
same record. Networks are disjoint, so probing the prefix lengths seen so far (most common first)
finds the one cached network that may hold a new address, however long or short the networks are
(a /24 key would be wrong for a database with /26 or /27 networks inside one /24). The entries are
plain tuples of strings and numbers, which CPython's garbage collector stops tracking: a cache of
a hundred thousand networks adds nothing to a collection's pause. (Repeated clients are answered
from the DNS answer cache before they get here, so there is no per-address cache.)
"""

from __future__ import annotations

import csv
import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import Literal

import maxminddb

from gslb.errors import GeoDatabaseError
from gslb.model import Location

logger = logging.getLogger(__name__)

#: the country centroid table shipped with gslb (ISO alpha-2 -> approximate latitude, longitude)
#: (in the package: a symlink to the repository's data/ in a checkout, a copy in wheels)
DEFAULT_CENTROIDS = Path(__file__).resolve().parent / "data" / "country-centroids.csv"

#: mean Earth radius used by distance_km (IUGG), kilometres
EARTH_RADIUS_KM = 6371.0

GeoKind = Literal["city", "country", "none"]

#: networks cached per IP version: the cache starts over when twice this is reached
_DEFAULT_IP_CACHE = 32768
#: what the network cache holds per network: (prefixlen, network text, latlon, country, continent)
_Entry = tuple[int, str, tuple[float, float] | None, str | None, str | None]


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in km between two (latitude, longitude) points (haversine, R=6371)."""
    lat1, lon1 = math.radians(a[0]), math.radians(a[1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def load_centroids(path: str | os.PathLike[str]) -> dict[str, tuple[float, float]]:
    """Read a centroid table (CSV ``iso_code,name,latitude,longitude``); raises GeoDatabaseError."""
    centroids: dict[str, tuple[float, float]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row in reader:
                try:
                    lat, lon = float(row["latitude"]), float(row["longitude"])
                    code = row["iso_code"].strip().upper()
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise GeoDatabaseError(
                        f"{path}:{reader.line_num}: row: expected iso_code,name,latitude,longitude") from None
                if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                    raise GeoDatabaseError(f"{path}:{reader.line_num}: latitude/longitude: out of range")
                centroids[code] = (lat, lon)
    except OSError as e:
        raise GeoDatabaseError(f"{path}: cannot read the country centroid table: {e.strerror or e}") from None
    return centroids


def _kind_of(database_type: str) -> GeoKind | None:
    """City-like, Country-like or unusable, from the metadata's database_type."""
    t = database_type.lower()
    if "city" in t or "enterprise" in t:
        return "city"
    if "country" in t:
        return "country"
    return None


_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


def _parse(ip: str) -> tuple[int, bytes]:
    """(IP version, packed address) of an address text; ValueError when it is not one.

    ``socket.inet_pton`` is about twenty times faster than ``ipaddress`` and as strict (no
    leading zeros, four parts). A link-local source may carry a zone ("fe80::1%eth0"): the zone
    does not locate anything and is dropped.
    """
    if "%" in ip:
        ip = ip.split("%", 1)[0]
    try:
        if ":" in ip:
            return 6, socket.inet_pton(socket.AF_INET6, ip)
        return 4, socket.inet_pton(socket.AF_INET, ip)
    except (OSError, TypeError):
        raise ValueError(f"{ip!r} is not an IPv4 or IPv6 address") from None


class GeoLocator:
    """Locates client addresses; ``kind`` is "city", "country" or "none" (no database)."""

    def __init__(self, reader: maxminddb.Reader | None = None, kind: GeoKind = "none",
                 path: str | None = None, centroids: dict[str, tuple[float, float]] | None = None,
                 database_type: str | None = None, build_epoch: int | None = None,
                 cache_size: int = _DEFAULT_IP_CACHE) -> None:
        self.kind: GeoKind = kind
        self.path = path
        self.database_type = database_type
        self.build_epoch = build_epoch
        self._reader = reader
        self._closed = False
        self._centroids = centroids or {}
        self._ipv4_only = reader is not None and reader.metadata().ip_version == 4
        # network cache: per IP version, key (network bits << 8 | prefixlen) -> entry
        self._nets: dict[int, dict[int, _Entry]] = {4: {}, 6: {}}
        self._plens: dict[int, list[int]] = {4: [], 6: []}
        self._plen_counts: dict[int, dict[int, int]] = {4: {}, 6: {}}
        self._net_limit = 2 * cache_size  # networks kept per IP version before starting over
        self._cached = cache_size > 0

    @classmethod
    def open(cls, path: str | None, centroids: str | os.PathLike[str] | None = None,
             cache_size: int = _DEFAULT_IP_CACHE) -> GeoLocator:
        """Open the database at ``path`` (None: no database, every location unknown).

        Raises GeoDatabaseError naming the path when the file is unreadable, not a MaxMind DB,
        or not a City/Country database. ``cache_size`` 0 disables caching (benchmarks).
        """
        if path is None:
            return cls(cache_size=cache_size)
        table = load_centroids(centroids if centroids is not None else DEFAULT_CENTROIDS)
        try:
            reader = maxminddb.open_database(os.fspath(path))
        except FileNotFoundError:
            raise GeoDatabaseError(f"{path}: GeoIP database not found") from None
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
            raise GeoDatabaseError(f"{path}: not a readable MaxMind DB (GeoIP2 .mmdb) file: {e}") from None
        meta = reader.metadata()
        kind = _kind_of(meta.database_type)
        if kind is None:
            reader.close()
            raise GeoDatabaseError(
                f"{path}: database type {meta.database_type!r} is not a GeoIP2/GeoLite2 City or Country database")
        logger.info("geo: opened %s (%s, %s locations, IPv%d tree, %d nodes)",
                    path, meta.database_type, kind, meta.ip_version, meta.node_count)
        return cls(reader, kind, str(path), table, meta.database_type, meta.build_epoch, cache_size)

    def close(self) -> None:
        """Release the database (the locator must not be used afterwards)."""
        if self._reader is not None and not self._closed:
            self._closed = True
            self._reader.close()

    def __enter__(self) -> GeoLocator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def locate(self, ip: str) -> Location:
        """Where ``ip`` is: the database network holding it and its coordinates, country, continent.

        Raises ValueError when ``ip`` is not an IP address. An IPv4-mapped IPv6 address
        (``::ffff:a.b.c.d``) is located as its IPv4 address; its network is reported in IPv6 form
        (``::ffff:a.b.c.0/120``) so that the prefix length is right for an IPv6 ECS option.
        """
        version, packed = _parse(ip)
        mapped = version == 6 and packed[:12] == _MAPPED_PREFIX
        if mapped:
            version, packed = 4, packed[12:]
        text = socket.inet_ntop(_AF[version], packed)
        if mapped:
            text = "::ffff:" + text
        if self._reader is None:
            return Location(text, "::/0" if mapped or version == 6 else "0.0.0.0/0", 0)
        if version == 6 and self._ipv4_only:
            # An IPv4-only database says nothing about any IPv6 address.
            return Location(text, "::/0", 0)
        plen, network, latlon, country, continent = self._entry(version, packed)
        if mapped:
            # e.g. "::ffff:81.2.69.0/120": the same network, as the IPv6 addresses it covers
            plen += 96
            network = f"::ffff:{network.split('/', 1)[0]}/{plen}"
        return Location(text, network, plen, latlon, country, continent)

    def _entry(self, version: int, packed: bytes) -> _Entry:
        """(prefixlen, network text, latlon, country, continent) of an address, from cache or DB."""
        bits = 32 if version == 4 else 128
        value = int.from_bytes(packed, "big")
        if self._cached:
            nets = self._nets[version]
            for plen in self._plens[version]:
                entry = nets.get((value >> (bits - plen)) << 8 | plen)
                if entry is not None:
                    return entry
        entry = self._lookup(version, packed, value)
        if self._cached:
            self._remember(version, bits, value, entry)
        return entry

    def _remember(self, version: int, bits: int, value: int, entry: _Entry) -> None:
        nets = self._nets[version]
        if len(nets) >= self._net_limit:
            nets.clear()
            self._plens[version] = []
            self._plen_counts[version] = {}
        plen = entry[0]
        nets[(value >> (bits - plen)) << 8 | plen] = entry
        counts = self._plen_counts[version]
        seen = counts.get(plen, 0)
        counts[plen] = seen + 1
        # Probe the most common prefix lengths first (ties: longer first, deterministic); the
        # order is brought up to date when a new length appears and every 1024 networks after.
        if not seen or len(nets) % 1024 == 0:
            self._plens[version] = sorted(counts, key=lambda p: (-counts[p], -p))

    def _lookup(self, version: int, packed: bytes, value: int) -> _Entry:
        """One database lookup (no cache)."""
        assert self._reader is not None
        family = _AF[version]
        record, plen = self._reader.get_with_prefix_len(socket.inet_ntop(family, packed))
        bits = 32 if version == 4 else 128
        plen = min(bits, max(0, plen))  # an IPv6 tree without IPv4 data could report odd IPv4 lengths
        host_bits = bits - plen
        start = (value >> host_bits << host_bits).to_bytes(bits // 8, "big")
        network = f"{socket.inet_ntop(family, start)}/{plen}"
        return (plen, network, *self.place_of(record))

    def place_of(self, record: object) -> tuple[tuple[float, float] | None, str | None, str | None]:
        """``(latlon, country, continent)`` of a database record (all None: not a record)."""
        if not isinstance(record, dict):
            return (None, None, None)
        country = _code(record.get("country"), "iso_code")
        continent = _code(record.get("continent"), "code")
        latlon = None
        if self.kind == "city":
            loc = record.get("location")
            if isinstance(loc, dict):
                lat, lon = loc.get("latitude"), loc.get("longitude")
                if isinstance(lat, (int, float)) and isinstance(lon, (int, float)):  # MaxMind: doubles
                    latlon = (float(lat), float(lon))
        if latlon is None and country is not None:
            latlon = self._centroids.get(country)
        return (latlon, country, continent)


def _code(sub: object, key: str) -> str | None:
    """A country or continent code, upper-case and interned (one string object per code)."""
    if isinstance(sub, dict):
        value = sub.get(key)
        if isinstance(value, str) and value:
            return sys.intern(value.upper())
    return None
