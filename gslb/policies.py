"""The nine pool policies of the SPEC: pure rankings of candidate sites.

A policy never looks at health itself: the balancer hands it the candidates that may serve
(up sites, else drained ones, else all of them under ``when_all_down: all``), each with its
state, load and regional results, plus the client context and an injected ``random.Random``.
The policy returns the candidates in its order; the balancer takes the first ``answers`` of
them. With ``explain=True`` a policy also returns a reason per site (the decision trace).

The ``geo`` map is compiled once per pool by :class:`GeoMap`: it yields the *tiers* of a
client (most specific matching rule first, ``default`` last) and the ECS scope for which the
match holds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import random
import socket
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from gslb.geo import distance_km
from gslb.model import Location, Pool, Site, SiteState, SiteStatus

logger = logging.getLogger(__name__)

Reasons = dict[str, str]

@dataclass(frozen=True, slots=True)
class Candidate:
    """One site as a policy sees it: its place in ``sites``, state, load and weight."""

    site: Site
    index: int
    state: SiteState
    status: SiteStatus
    load: float = 0.0
    #: the weight the policy uses (the site's, or 1 when every candidate has weight 0)
    weight: int = 1

    @property
    def name(self) -> str:
        """The site's name."""
        return self.site.name

    @property
    def load_per_weight(self) -> float:
        """Load divided by weight (weight 0 counts as 1)."""
        return self.load / (self.weight or 1)


@dataclass(frozen=True, slots=True)
class Context:
    """What a policy may know about the client and the deployment."""

    location: Location | None = None
    client_ip: str = ""
    #: the hashed subnet (/24 or /48) in packed form, and its text form
    subnet: bytes = b""
    subnet_text: str = ""
    #: round_robin: how many answers this pool has given (the balancer's counter)
    turn: int = 0
    #: checker regions with a location: ((name, (lat, lon)), ...)
    region_locations: tuple[tuple[str, tuple[float, float]], ...] = ()
    #: every configured checker region name
    regions: tuple[str, ...] = ()


class Policy:
    """Base of the policies: ``rank`` orders candidates; the class attributes drive caching and scope."""

    name: str = ""
    #: same inputs (client key, the pool's verdicts and held metrics) -> same order: the balancer may cache the order
    deterministic: bool = True
    #: the order depends on the client's GeoIP location (ECS scope = GeoIP network)
    uses_location: bool = False
    #: the order depends on the client's /24 or /48 (ECS scope = 24 or 48)
    uses_subnet: bool = False
    #: the order depends on the sites' loads (held with hysteresis by the balancer)
    reads_load: bool = False
    #: the order depends on the sites' check round-trip times (held with hysteresis by the balancer)
    reads_rtt: bool = False

    def depends_on_location(self, region_locations: Sequence[tuple[str, tuple[float, float]]]) -> bool:
        """Whether the order depends on the client's location, given the located checker regions."""
        return self.uses_location

    def rank(self, cands: Sequence[Candidate], ctx: Context, rng: random.Random,
             explain: bool = False) -> tuple[list[Candidate], Reasons | None]:
        """The candidates in this policy's order, and (with explain) a reason per site.

        ``cands`` come in ``sites`` order (ascending ``index``), except for ``geo`` (the matched
        list's order): policies rely on it instead of sorting again.
        """
        raise NotImplementedError


class Failover(Policy):
    """First up site in ``sites`` order."""

    name = "failover"

    def rank(self, cands: Sequence[Candidate], ctx: Context, rng: random.Random,
             explain: bool = False) -> tuple[list[Candidate], Reasons | None]:
        """Candidates in ``sites`` order (the order they come in)."""
        order = list(cands)
        reasons = {c.name: f"position {c.index + 1} in sites" for c in order} if explain else None
        return order, reasons


class Closest(Policy):
    """Nearest by great-circle distance to the client; unknown location: ``sites`` order."""

    name = "closest"
    uses_location = True

    def rank(self, cands: Sequence[Candidate], ctx: Context, rng: random.Random,
             explain: bool = False) -> tuple[list[Candidate], Reasons | None]:
        """Candidates by distance (sites without a location last, ties in ``sites`` order)."""
        here = ctx.location.latlon if ctx.location is not None else None
        if here is None:
            order = list(cands)
            reasons = ({c.name: f"client location unknown: position {c.index + 1} in sites"
                        for c in order} if explain else None)
            return order, reasons
        dist = {c.name: (distance_km(here, c.site.location) if c.site.location else math.inf)
                for c in cands}
        order = sorted(cands, key=lambda c: (dist[c.name], c.index))
        reasons = None
        if explain:
            reasons = {c.name: (f"{round(dist[c.name])} km from the client" if dist[c.name] != math.inf
                                else "site has no location") for c in order}
        return order, reasons


class Geo(Policy):
    """The geo map's list for the client; the balancer passes the candidates in list order."""

    name = "geo"
    uses_location = True

    def rank(self, cands: Sequence[Candidate], ctx: Context, rng: random.Random,
             explain: bool = False) -> tuple[list[Candidate], Reasons | None]:
        """Candidates as given (the matched list's order)."""
        order = list(cands)
        reasons = ({c.name: f"position {i + 1} in the matched list" for i, c in enumerate(order)}
                   if explain else None)
        return order, reasons


def _weighted_order(cands: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    """A weighted draw without replacement: Efraimidis-Spirakis keys u^(1/w), sorted descending."""
    keyed = [(rng.random() ** (1.0 / (c.weight or 1)), c) for c in cands]
    keyed.sort(key=lambda kc: kc[0], reverse=True)
    return [c for _, c in keyed]


class Weighted(Policy):
    """At random, in proportion to ``weight`` (a weighted draw without replacement for ``answers`` > 1)."""

    name = "weighted"
    deterministic = False

    def rank(self, cands: Sequence[Candidate], ctx: Context, rng: random.Random,
             explain: bool = False) -> tuple[list[Candidate], Reasons | None]:
        """A random weighted order."""
        order = list(cands) if len(cands) <= 1 else _weighted_order(cands, rng)
        reasons = None
        if explain:
            total = sum(c.weight for c in cands) or 1
            reasons = {c.name: f"weight {c.weight} of {total} ({100.0 * c.weight / total:.1f}%): "
                               f"drawn {i + 1}" for i, c in enumerate(order)}
        return order, reasons


class RoundRobin(Policy):
    """The next up site in turn: answer k starts at candidate k mod n, then the others in turn."""

    name = "round_robin"
    deterministic = False

    def rank(self, cands: Sequence[Candidate], ctx: Context, rng: random.Random,
             explain: bool = False) -> tuple[list[Candidate], Reasons | None]:
        """The candidates (in ``sites`` order) rotated by the pool's turn counter."""
        n = len(cands)
        start = ctx.turn % n if n else 0
        order = [*cands[start:], *cands[:start]]
        reasons = ({c.name: f"turn {ctx.turn}: {i + 1} of {n} in rotation" for i, c in enumerate(order)}
                   if explain else None)
        return order, reasons


def hash_score(subnet: bytes, site: str, weight: int) -> float:
    """Weighted rendezvous score of a site for a subnet: -weight / ln(h), h uniform in (0, 1) from blake2b."""
    digest = hashlib.blake2b(subnet + b"\0" + site.encode(), digest_size=8).digest()
    h = (int.from_bytes(digest, "big") + 0.5) / 18446744073709551616.0  # 2**64: h in (0, 1)
    return -(weight or 1) / math.log(h)


class Hash(Policy):
    """Weighted rendezvous (highest random weight) hashing of the client's /24 or /48."""

    name = "hash"
    uses_subnet = True

    def rank(self, cands: Sequence[Candidate], ctx: Context, rng: random.Random,
             explain: bool = False) -> tuple[list[Candidate], Reasons | None]:
        """Candidates by descending rendezvous score for the client's subnet."""
        scores = {c.name: hash_score(ctx.subnet, c.name, c.weight) for c in cands}
        order = sorted(cands, key=lambda c: (-scores[c.name], c.index))
        reasons = ({c.name: f"rendezvous score {scores[c.name]:.4f} for {ctx.subnet_text} "
                            f"(weight {c.weight})" for c in order} if explain else None)
        return order, reasons


class LeastLoad(Policy):
    """Lowest load / weight; ties in ``sites`` order."""

    name = "least_load"
    reads_load = True

    def rank(self, cands: Sequence[Candidate], ctx: Context, rng: random.Random,
             explain: bool = False) -> tuple[list[Candidate], Reasons | None]:
        """Candidates by load per weight."""
        order = sorted(cands, key=lambda c: (c.load_per_weight, c.index))
        reasons = ({c.name: f"load {c.load:g} / weight {c.weight} = {c.load_per_weight:g}" for c in order}
                   if explain else None)
        return order, reasons


class PowerOfTwo(Policy):
    """Two distinct sites drawn by weight; the lower load / weight wins; the rest follow by load / weight."""

    name = "p2c"
    deterministic = False
    reads_load = True

    def rank(self, cands: Sequence[Candidate], ctx: Context, rng: random.Random,
             explain: bool = False) -> tuple[list[Candidate], Reasons | None]:
        """Winner of the two drawn first, then every other candidate by load per weight."""
        if len(cands) <= 1:
            order = list(cands)
            reasons = {c.name: "only candidate" for c in order} if explain else None
            return order, reasons
        first, second = _weighted_order(cands, rng)[:2]
        # ties go to the first drawn, so equal loads still spread by weight
        winner, loser = (second, first) if second.load_per_weight < first.load_per_weight else (first, second)
        rest = sorted((c for c in cands if c is not winner), key=lambda c: (c.load_per_weight, c.index))
        order = [winner, *rest]
        reasons = None
        if explain:
            reasons = {c.name: f"load/weight {c.load_per_weight:g}" for c in rest}
            reasons[winner.name] = (f"drawn with {loser.name}; load/weight {winner.load_per_weight:g} "
                                    f"vs {loser.load_per_weight:g}: wins")
            reasons[loser.name] = (f"drawn with {winner.name}; load/weight {loser.load_per_weight:g}: loses")
        return order, reasons


def nearest_region(latlon: tuple[float, float] | None,
                   region_locations: Sequence[tuple[str, tuple[float, float]]]) -> str | None:
    """The checker region nearest to a point (None without a point or located regions)."""
    if latlon is None or not region_locations:
        return None
    return min(region_locations, key=lambda r: distance_km(latlon, r[1]))[0]


def site_rtt(status: SiteStatus, region: str | None) -> float | None:
    """A site's round-trip time from ``region``; without one (or no result there): the mean over regions."""
    if region is not None:
        result = status.regions.get(region)
        if result is not None and result.rtt_ms is not None:
            return result.rtt_ms
    rtts = [r.rtt_ms for r in status.regions.values() if r.rtt_ms is not None]
    return sum(rtts) / len(rtts) if rtts else None


class Fastest(Policy):
    """Lowest check round-trip time from the checker region nearest the client, else the mean over regions."""

    name = "fastest"
    uses_location = True
    reads_rtt = True

    def depends_on_location(self, region_locations: Sequence[tuple[str, tuple[float, float]]]) -> bool:
        """Only through the nearest checker region: without a located region the client does not matter."""
        return bool(region_locations)

    def rank(self, cands: Sequence[Candidate], ctx: Context, rng: random.Random,
             explain: bool = False) -> tuple[list[Candidate], Reasons | None]:
        """Candidates by round-trip time; sites without one last, in ``sites`` order."""
        here = ctx.location.latlon if ctx.location is not None else None
        region = nearest_region(here, ctx.region_locations)
        rtt = {c.name: site_rtt(c.status, region) for c in cands}
        order = sorted(cands, key=lambda c: (rtt[c.name] is None, rtt[c.name] or 0.0, c.index))
        reasons = None
        if explain:
            src = f"from {region}" if region else "mean over regions"
            reasons = {c.name: (f"rtt {rtt[c.name]:.1f} ms {src}" if rtt[c.name] is not None
                                else "no rtt measured") for c in order}
        return order, reasons


#: the policy registry: SPEC name -> policy
POLICIES: dict[str, Policy] = {p.name: p for p in (
    Closest(), Geo(), Failover(), Weighted(), RoundRobin(), Hash(), LeastLoad(), PowerOfTwo(), Fastest(),
)}


_MAPPED = b"\0" * 10 + b"\xff\xff"


def client_address(ip: str) -> tuple[int, int, int]:
    """(address as int, IP version, offset) of a client: the one parse of its address per decision.

    An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is its IPv4 address with offset 96: a
    prefix length computed on the IPv4 address plus the offset is the same prefix in the
    query's (IPv6) family. Other addresses have offset 0. ``ip`` carries no zone suffix (the
    DNS transport and explain strip it).
    """
    if ":" in ip:
        packed = socket.inet_pton(socket.AF_INET6, ip)
        if packed[:12] == _MAPPED:
            return int.from_bytes(packed[12:], "big"), 4, 96
        return int.from_bytes(packed, "big"), 6, 0
    return int.from_bytes(socket.inet_aton(ip), "big"), 4, 0


def subnet_of(addr: int, version: int, offset: int) -> tuple[bytes, int]:
    """The hashed subnet of a parsed client (:func:`client_address`): packed /24 or /48, its length.

    A v4-mapped client hashes as its IPv4 /24; its length is given in the query's family
    (96 + 24 = 120) so that it can serve as the ECS scope. The pair is also the hash
    policy's decision-cache key (distinct for a v4-mapped client: the scopes differ).
    """
    if version == 4:
        return (addr >> 8).to_bytes(3, "big"), 24 + offset
    return (addr >> 80).to_bytes(6, "big"), 48


def subnet_text(packed: bytes, prefixlen: int) -> str:
    """A hashed subnet as text (``192.0.2.0/24``, ``::ffff:192.0.2.0/120``, ``2001:db8:1::/48``)."""
    if len(packed) == 3:
        v4 = f"{'.'.join(str(b) for b in packed)}.0"
        return f"::ffff:{v4}/120" if prefixlen == 120 else f"{v4}/24"
    return f"{ipaddress.IPv6Address(packed + bytes(10))}/48"


def client_subnet(ip: str) -> tuple[bytes, str, int]:
    """The hashed subnet of a client address: packed /24 or /48, its text, and its prefix length."""
    packed, prefixlen = subnet_of(*client_address(ip))
    return packed, subnet_text(packed, prefixlen), prefixlen


@dataclass(frozen=True, slots=True)
class GeoMatch:
    """The tiers of a geo pool for one client: (label, site names), most specific first."""

    tiers: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class GeoMap:
    """A pool's ``geo`` map compiled for lookups: CIDRs by family, countries, continents, default.

    Rules are tried from the most specific to the least: every CIDR holding the client (longest
    first), its country, its continent, then ``default`` (the pool's ``sites`` when the map has
    none). The first tier with an up site answers (Route 53 geolocation practice: an unhealthy
    smaller region falls back to the larger one); sites in no matching tier are never candidates.
    """

    #: (version, network int, prefixlen, label, sites), longest prefix first
    cidrs: tuple[tuple[int, int, int, str, tuple[str, ...]], ...]
    countries: Mapping[str, tuple[str, ...]]
    continents: Mapping[str, tuple[str, ...]]
    default: tuple[str, ...]
    _by_family: Mapping[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    @classmethod
    def from_pool(cls, pool: Pool) -> "GeoMap":
        """Compile a pool's rules (already validated by the zone loader)."""
        cidrs = []
        countries: dict[str, tuple[str, ...]] = {}
        continents: dict[str, tuple[str, ...]] = {}
        default = pool.sites
        for rule in pool.geo:
            if rule.kind == "cidr":
                net = ipaddress.ip_network(rule.key, strict=False)
                cidrs.append((net.version, int(net.network_address), net.prefixlen, str(net), rule.sites))
            elif rule.kind == "country":
                countries[rule.key.upper()] = rule.sites
            elif rule.kind == "continent":
                continents[rule.key.upper()] = rule.sites
            else:
                default = rule.sites
        cidrs.sort(key=lambda r: -r[2])
        by_family = {v: tuple((n, p) for (fv, n, p, _, _) in cidrs if fv == v) for v in (4, 6)}
        return cls(tuple(cidrs), countries, continents, default, by_family)

    def has_rules(self, version: int) -> bool:
        """Whether the map has a CIDR rule of IP version 4 or 6."""
        return bool(self._by_family.get(version))

    def match(self, location: Location | None, addr: int, version: int) -> GeoMatch:
        """The tiers for a client at ``addr`` (IP version 4 or 6) with a GeoIP location."""
        bits = 32 if version == 4 else 128
        tiers: list[tuple[str, tuple[str, ...]]] = []
        for fv, net, plen, label, sites in self.cidrs:
            if fv == version and (addr >> (bits - plen)) == (net >> (bits - plen)):
                tiers.append((label, sites))
        if location is not None:
            if location.country and location.country.upper() in self.countries:
                tiers.append((location.country.upper(), self.countries[location.country.upper()]))
            if location.continent and location.continent.upper() in self.continents:
                tiers.append((location.continent.upper(), self.continents[location.continent.upper()]))
        tiers.append(("default", self.default))
        return GeoMatch(tuple(tiers))

    def scope(self, addr: int, version: int, start: int) -> int:
        """The longest prefix any CIDR rule needs so that every client in addr/scope matches the same rules.

        ``start`` is the GeoIP network's length (country and continent are constant inside it);
        the scope grows while some rule lies strictly inside the client's network: to the rule's
        length when the client is in it, else just far enough to exclude it.
        """
        bits = 32 if version == 4 else 128
        rules = self._by_family.get(version, ())
        s = max(0, min(start, bits))
        changed = True
        while changed:
            changed = False
            for net, plen in rules:
                if plen <= s or (addr >> (bits - s)) != (net >> (bits - s)):
                    continue  # covers the whole network, or disjoint from it
                if (addr >> (bits - plen)) == (net >> (bits - plen)):
                    s = plen
                else:
                    s = bits - (addr ^ net).bit_length() + 1
                changed = True
        return s
