"""Immutable values shared by the whole core: the zone model, client locations and site states.

Everything here is built once (by the loader, the GeoIP reader, the state table) and only read
afterwards: the per-query path never walks YAML or dicts of dicts, it walks these.

Naming conventions used everywhere:
- A *domain name* inside the model is absolute, lower-case and ends with a dot:
  ``"www.gslb.example.com."``.
- A *zone key* is the zone's name without the trailing dot: ``"gslb.example.com"`` (as in the
  HTTP API's ``{zone}`` and in the state table's keys).
- Record types are upper-case strings: ``"A"``, ``"AAAA"``, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping

from gslb.rdata import record_tail

if TYPE_CHECKING:
    from gslb.dnssec import Signing

#: Record types that may be written statically in a zone file.
STATIC_TYPES: tuple[str, ...] = ("A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA", "NS", "PTR", "DS")

#: The nine pool policies of the SPEC.
POLICY_NAMES: tuple[str, ...] = (
    "closest", "geo", "failover", "weighted", "round_robin", "hash", "least_load", "p2c", "fastest",
)

WhenAllDown = Literal["all", "servfail", "nodata"]
CheckType = Literal["http", "https", "tcp"]
SiteState = Literal["up", "down", "drain", "unknown"]
Override = Literal["up", "down", "drain"]
#: what a pool name answers (PoolAnswer.outcome)
PoolOutcome = Literal["answer", "nodata", "servfail", "starting"]

#: one site of the site-state table: (zone key, site name); the one definition
SiteKey = tuple[str, str]

_EMPTY: Mapping[Any, Any] = MappingProxyType({})  # the default of every mapping field


@dataclass(frozen=True, slots=True)
class Record:
    """One static resource record.

    ``rdata`` is the presentation form with every domain name made absolute (trailing dot),
    e.g. ``"10 mail.example.com."`` for MX, ``'"v=spf1 -all"'`` for TXT (quoted character
    strings), ``"192.0.2.1"`` for A.
    """

    name: str
    rtype: str
    ttl: int
    rdata: str
    #: derived: TYPE CLASS TTL RDLENGTH RDATA in wire form (gslb.rdata), encoded once here;
    #: ValueError at construction when the data cannot be encoded or breaks an RFC limit
    tail: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tail", record_tail(self.rtype, self.ttl, self.rdata))

    def renamed(self, owner: str) -> "Record":
        """The same record at another owner (wildcard synthesis), its wire data reused."""
        copy = object.__new__(Record)
        setattr_ = object.__setattr__
        setattr_(copy, "name", owner)
        setattr_(copy, "rtype", self.rtype)
        setattr_(copy, "ttl", self.ttl)
        setattr_(copy, "rdata", self.rdata)
        setattr_(copy, "tail", self.tail)
        return copy


@dataclass(frozen=True, slots=True)
class Soa:
    """The zone's SOA values (RFC 1035 3.3.13); ``ttl`` is the zone's default TTL."""

    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int
    ttl: int

    @property
    def negative_ttl(self) -> int:
        """TTL of the SOA in negative answers (RFC 2308 section 5): min(SOA TTL, minimum)."""
        return min(self.ttl, self.minimum)


@dataclass(frozen=True, slots=True)
class Node:
    """All data at one owner name.

    ``records`` maps a type to its records (apex SOA and NS included). ``pool`` names the pool
    that answers A and AAAA at this name; ``ttl`` is the per-name TTL written in the file (None
    when absent), which for a pool name overrides the pool's ``ttl``.
    """

    name: str
    records: Mapping[str, tuple[Record, ...]] = field(default_factory=lambda: _EMPTY)
    pool: str | None = None
    ttl: int | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Site:
    """A place that serves: its addresses, location, checks and weight."""

    name: str
    location: tuple[float, float] | None
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    checks: tuple[str, ...] = ()
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Check:
    """A health check definition (zone file ``checks:``)."""

    name: str
    type: CheckType
    port: int
    path: str = "/"
    host: str | None = None
    #: accepted HTTP statuses; None means 200-399
    expect_status: frozenset[int] | None = None
    expect_body: str | None = None
    interval: float = 10.0
    timeout: float = 3.0
    rise: int = 2
    fall: int = 3
    target: str | None = None

    def status_ok(self, status: int) -> bool:
        """Whether an HTTP status counts as a pass."""
        if self.expect_status is None:
            return 200 <= status <= 399
        return status in self.expect_status


@dataclass(frozen=True, slots=True)
class GeoRule:
    """One entry of a ``geo`` pool's map.

    ``kind`` is ``cidr`` (key a normalised network, e.g. ``"10.0.0.0/8"``), ``country``
    (ISO 3166 alpha-2, upper-case), ``continent`` (two-letter code, upper-case) or ``default``.
    """

    kind: Literal["cidr", "country", "continent", "default"]
    key: str
    sites: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pool:
    """A load-balanced set of sites and the policy that picks among them."""

    name: str
    policy: str
    sites: tuple[str, ...]
    answers: int = 1
    ttl: int = 30
    quorum: float = 0.5
    when_all_down: WhenAllDown = "all"
    geo: tuple[GeoRule, ...] = ()


@dataclass(frozen=True)
class Zone:
    """One loaded zone file, immutable; replaced as a whole on reload."""

    origin: str  # absolute, lower-case, trailing dot
    file: str
    serial: int
    ttl: int
    soa: Soa
    ns: tuple[str, ...]
    #: every owner name with data (apex and wildcards such as "*.cdn.gslb.example.com." included)
    nodes: Mapping[str, Node]
    sites: Mapping[str, Site] = field(default_factory=lambda: _EMPTY)
    checks: Mapping[str, Check] = field(default_factory=lambda: _EMPTY)
    pools: Mapping[str, Pool] = field(default_factory=lambda: _EMPTY)
    #: content digest of the file, used for serial "auto" and for "did it change"
    digest: str = ""
    #: every name that exists: nodes plus the empty non-terminals between them and the apex
    names: frozenset[str] = field(default=frozenset())
    #: delegation points: non-apex names that hold NS records
    cuts: frozenset[str] = field(default=frozenset())
    #: the file's modification time and bytes as loaded: a DNS worker process rebuilds the same
    #: zone from them (``gslb.workers``; with ``(digest, serial)`` the serial comes out the same)
    mtime: float = field(default=0.0, repr=False, compare=False)
    source: bytes = field(default=b"", repr=False, compare=False)
    #: the ``dnssec:`` block with its keys read (gslb.dnssec); None: the zone is not signed
    dnssec: "Signing | None" = field(default=None, repr=False, compare=False)
    #: derived: the zone's name without the trailing dot, as used in the API and the state table
    key: str = field(init=False, repr=False, compare=False)
    #: derived: the query path's per-zone cache (gslb.authority fills it; bounded there); not
    #: part of the zone's value, dropped with the zone on reload; (qname, qtype) -> authority.Lookup
    memo: dict[tuple[str, str], Any] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.origin[:-1])


class ZoneSet:
    """The zones being served, looked up by longest matching suffix. Immutable once built."""

    __slots__ = ("zones", "_by_origin")

    def __init__(self, zones: Mapping[str, Zone] | None = None) -> None:
        self.zones: Mapping[str, Zone] = MappingProxyType(dict(zones or {}))
        self._by_origin = self.zones

    def find(self, qname: str) -> Zone | None:
        """The zone that holds ``qname`` (absolute, lower-case), or None (REFUSED)."""
        name = qname
        by_origin = self._by_origin
        while True:
            zone = by_origin.get(name)
            if zone is not None:
                return zone
            dot = name.find(".")
            if dot < 0 or dot == len(name) - 1:
                return by_origin.get(".")
            name = name[dot + 1:]

    def by_key(self, key: str) -> Zone | None:
        """The zone named ``key`` (with or without the trailing dot, any case)."""
        key = key.lower()
        return self._by_origin.get(key if key.endswith(".") else key + ".")

    def __iter__(self) -> Iterator[Zone]:
        return iter(self.zones.values())

    def __len__(self) -> int:
        return len(self.zones)


@dataclass(frozen=True, slots=True)
class Location:
    """Where a client is, as far as the GeoIP database knows.

    ``network``/``prefixlen`` is the database network holding the address (for an address the
    database does not locate: the empty network around it); this is what the ECS scope of a
    location-dependent answer is bounded by.
    """

    ip: str
    network: str
    prefixlen: int
    latlon: tuple[float, float] | None = None
    country: str | None = None
    continent: str | None = None


@dataclass(frozen=True, slots=True)
class RegionResult:
    """One region's verdict for one site: all its checks folded together after rise/fall."""

    state: Literal["up", "down"]
    checked_at: float  # wall-clock seconds (time.time())
    rtt_ms: float | None = None
    load: float | None = None
    error: str | None = None
    #: seconds after checked_at when this result turns stale (3 x the longest check interval)
    stale_after: float = 30.0


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """The table's view of one site at one moment: fresh regional results and the override."""

    regions: Mapping[str, RegionResult] = field(default_factory=lambda: _EMPTY)
    override: Override | None = None
    #: True for a site with no checks at all (always up unless overridden)
    unchecked: bool = False

    def state(self, quorum: float) -> SiteState:
        """The verdict with a pool's quorum: up, down, drain, or unknown (no fresh result: counts as up)."""
        if self.override is not None:
            return self.override
        if self.unchecked:
            return "up"
        total = len(self.regions)
        if total == 0:
            return "unknown"
        ups = sum(1 for r in self.regions.values() if r.state == "up")
        return "up" if ups > quorum * total else "down"

    @property
    def load(self) -> float:
        """The site's load: the highest load any fresh region reported (0 when none did)."""
        loads = [r.load for r in self.regions.values() if r.load is not None]
        return max(loads) if loads else 0.0


UNKNOWN_SITE = SiteStatus()


@dataclass(frozen=True)
class StateView:
    """An immutable snapshot of the site-state table; ``version`` grows with every change.

    ``sites`` is keyed by (zone key, site name); a missing key means "no result yet".
    """

    version: int = 0
    sites: Mapping[SiteKey, SiteStatus] = field(default_factory=lambda: _EMPTY)

    def site(self, zone: str, site: str) -> SiteStatus:
        """The status of one site (UNKNOWN_SITE when the table has nothing on it)."""
        return self.sites.get((zone, site), UNKNOWN_SITE)


@dataclass(frozen=True, slots=True)
class PoolAnswer:
    """What a pool name answers for one client: the resolver turns it into A/AAAA records.

    ``outcome`` is ``answer`` (addresses may still be empty: NODATA), ``nodata`` or ``servfail``
    (the pool's when_all_down rule), or ``starting`` (pool names are not answered before the
    first round of health checks: no reply at all). ``scope_prefix`` is the ECS scope the answer
    holds for. ``per_client``: the answer depends on the client's address (location, CIDR rule
    or hashed subnet); ``cacheable``: the same inputs give the same answer (False for a random
    draw: weighted, round_robin, p2c).
    """

    outcome: PoolOutcome
    addresses: tuple[str, ...]
    ttl: int
    scope_prefix: int
    sites: tuple[str, ...] = ()
    per_client: bool = False
    cacheable: bool = True


def iso_time(ts: float | None) -> str | None:
    """Wall-clock seconds as ISO 8601 UTC with milliseconds (``2026-11-27T21:33:30.123Z``).

    The one time format of the status API and the zone store; never raises: None, or a time out
    of datetime's range (e.g. 1e300 from a peer), is None.
    """
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError, TypeError):
        return None
