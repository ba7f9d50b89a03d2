"""Who is sent where, per country, and what a change would move: the traffic map and ``gslb plan`` (pure).

Both read the per-network engine (:mod:`gslb.netmap`): the GeoIP database's networks merged into
runs by location (:class:`gslb.netmap.NetworkIndex`) and each location's address space
(:meth:`NetworkIndex.location_sizes`: IPv4 and IPv6 together, an IPv4 /24 weighing as much as an
IPv6 /48). Per pool and inputs (a :class:`gslb.balancer.ScopeSpec`: the pool, its sites, their
verdicts) :func:`location_answers` asks the balancer once per distinct location what a client
there gets (the same decision code as DNS and ``explain``); the rest is arithmetic:

- :func:`country_rows`: per (country, answer), the share of the country's address space
  (``GET /api/v1/map``; the shares of a country sum to 1);
- :func:`moves`: per (country, from, to) with from != to, the share of the country's space that
  moves, and ``moved_share``, the fraction of all located space that moves (``gslb plan``,
  ``/api/v1/plan``);
- :func:`weigh_queries`: the same moves weighed by the queries counted per (pool, country)
  (``query_share`` per move, ``moved_query_share`` per pool);
- :class:`TrafficWindow`: the counters of the last hour from cumulative totals.

An answer is the tuple of the sites a client gets: the A answer's sites followed by any other site
of the AAAA answer; ``()`` when the pool answers no site (``when_all_down: servfail`` or
``nodata``). For the policies that draw or hash per client (``weighted``, ``round_robin``, ``p2c``,
``hash``), a location's answer is the set of sites the draw is among (who may serve, in pool
order): the map shows where a country's clients may go, the plan when that set changes.
Address space with no country in the database (unlocated, or a continent only) is left out.
A ``geo`` pool's CIDR rules cut the space they hold out of its locations (:class:`Pieces`): there
the rules answer, as DNS does.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from gslb.balancer import ScopeSpec, prepared_for_spec
from gslb.geo import distance_km
from gslb.model import Location, Site, Zone
from gslb.netmap import OPAQUE, SIZE_UNIT_BITS, NetworkIndex
from gslb.policies import POLICIES, GeoMap

Answer = tuple[str, ...]
#: a location as the index keeps it: (latlon, country, continent)
LocationKey = tuple[Any, Any, Any]

def spec_of(zone: Zone, pool_name: str, states: Mapping[str, str]) -> ScopeSpec:
    """The inputs of a pool with the given site verdicts (``up``, ``down``, ``drain``, ``unknown``;
    a site not in ``states`` is up)."""
    pool = zone.pools[pool_name]
    sites = tuple(zone.sites.get(name) or Site(name, None, (), ()) for name in pool.sites)
    return ScopeSpec(pool, sites, tuple(ScopeSpec.verdict(states.get(s.name, "up")) for s in sites))


def _answer_function(spec: ScopeSpec) -> tuple[Callable[[LocationKey], Answer], Callable[[LocationKey], Hashable]]:
    """(answer of a location, the part of the location that answer depends on) for a spec."""
    pool = spec.pool
    policy = POLICIES[pool.policy]
    prep, balancer = prepared_for_spec(spec)
    geomap, located = prep.geomap, prep.located

    if not policy.deterministic or policy.uses_subnet:
        # a draw or a hash per client: the sites it is among
        outcome, pick, _ = prep.eligible if prep.eligible is not None else ("answer", (), "")
        order = {name: i for i, name in enumerate(pool.sites)}
        fixed: Answer = tuple(sorted((c.name for c in pick), key=order.__getitem__)) if outcome == "answer" else ()
        return (lambda loc: fixed), (lambda loc: None)

    def answer_of(loc: LocationKey) -> Answer:
        key = balancer.located_answer(prep, Location("", "", 0, loc[0], loc[1], loc[2]))
        if key[0] != "answer":
            return ()
        sites = list(key[1][1])
        sites += [s for s in key[2][1] if s not in sites]
        return tuple(sites)

    if geomap is not None:
        return answer_of, (lambda loc: (loc[1], loc[2]))
    if located:
        return answer_of, _ranking_key(spec.sites)
    return answer_of, (lambda loc: None)


CidrRule = tuple[int, int, int]  # (IP version, network as an integer, prefix length)


def cidr_rules(spec: ScopeSpec | None) -> frozenset[CidrRule]:
    """The CIDR rules of a ``geo`` pool (none for other policies)."""
    if spec is None or spec.pool.policy != "geo":
        return frozenset()
    return frozenset((v, net, plen) for v, net, plen, _, _ in GeoMap.from_pool(spec.pool).cidrs)


def _cidr_answer_function(spec: ScopeSpec) -> Callable[[LocationKey, int, int], Answer]:
    """For a ``geo`` pool: the answer of a client at a location and address (its CIDR rules apply)."""
    prep, balancer = prepared_for_spec(spec)

    def answer_at(loc: LocationKey, addr: int, version: int) -> Answer:
        decision = balancer._decide(prep, Location("", "", 0, loc[0], loc[1], loc[2]), (addr, version, 0), "", 0,
                                    False, wide=False)
        if decision.outcome != "answer":
            return ()
        sites = list(decision.family("A")[1])
        sites += [s for s in decision.family("AAAA")[1] if s not in sites]
        return tuple(sites)

    return answer_at


class Pieces:
    """The located space inside CIDR rules, cut where the set of rules holding an address changes:
    per piece its location id, family, first address and size (client networks, as
    :meth:`NetworkIndex.location_sizes`); ``carved[lid]``, the part of each location's space in
    pieces. A ``geo`` pool answers a piece by its rules; any other pool as the piece's location."""

    def __init__(self, index: NetworkIndex, rules: frozenset[CidrRule]) -> None:
        self.lids: list[int] = []
        self.versions: list[int] = []
        self.addrs: list[int] = []
        self.sizes: list[float] = []
        self.carved: dict[int, float] = {}
        for version, bits in ((4, 32), (6, 128)):
            blocks = [(net, net + (1 << (bits - plen))) for v, net, plen in rules if v == version]
            if not blocks:
                continue
            runs = index.runs[version]
            starts, ids = runs.starts, runs.ids
            unit = float(1 << SIZE_UNIT_BITS[bits])
            bounds = sorted({b for block in blocks for b in block})
            for a, b in zip(bounds, bounds[1:], strict=False):
                if not any(lo <= a and b <= hi for lo, hi in blocks):
                    continue  # between rules
                i = bisect_right(starts, a) - 1
                while i < len(starts) and starts[i] < b:
                    end = starts[i + 1] if i + 1 < len(starts) else 1 << bits
                    lo, hi = max(a, starts[i]), min(b, end)
                    lid = ids[i]
                    if hi > lo and lid != OPAQUE:
                        size = (hi - lo) / unit
                        self.lids.append(lid)
                        self.versions.append(version)
                        self.addrs.append(a)
                        self.sizes.append(size)
                        self.carved[lid] = self.carved.get(lid, 0.0) + size
                    i += 1

    def extend(self, index: NetworkIndex, spec: ScopeSpec | None, answers: list[Answer]) -> tuple[
            list[LocationKey], list[float], list[Answer]]:
        """Locations, sizes and answers with the pieces as locations of their own."""
        locations = index.locations
        sizes = list(index.location_sizes())
        for lid, size in self.carved.items():
            sizes[lid] -= size
        if spec is not None and spec.pool.policy == "geo":
            answer_at = _cidr_answer_function(spec)
            memo: dict[tuple[int, int, Any, Any], Answer] = {}
            extra = []
            for lid, version, addr in zip(self.lids, self.versions, self.addrs, strict=True):
                loc = locations[lid]
                key = (version, addr, loc[1], loc[2])
                got = memo.get(key)
                if got is None:
                    got = memo[key] = answer_at(loc, addr, version)
                extra.append(got)
        else:
            extra = [answers[lid] for lid in self.lids]
        return ([*locations, *(locations[lid] for lid in self.lids)], sizes + self.sizes, answers + extra)


def _ranking_key(sites: Sequence[Site]) -> Callable[[LocationKey], Hashable]:
    """For ``closest``: a location's order of all the pool's sites by (distance, position), the
    policy's own sort key. Locations with the same order get the same answer under any verdicts
    (who may serve does not depend on the location, and the policy's order of any subset is this
    order's restriction), so the balancer decides once per order, not once per location."""
    where = [site.location for site in sites]
    positions = range(len(where))

    def key(loc: LocationKey) -> Hashable:
        here = loc[0]
        if here is None:
            return None
        dist = [distance_km(here, w) if w else math.inf for w in where]
        return tuple(sorted(positions, key=lambda i: (dist[i], i)))

    return key


def key_signature(spec: ScopeSpec) -> Hashable:
    """What :func:`location_keys` depends on: specs with the same signature share the keys."""
    policy = POLICIES[spec.pool.policy]
    if spec.pool.policy == "geo":
        return "geo"
    if policy.deterministic and not policy.uses_subnet and policy.depends_on_location(()):
        return ("closest", tuple(site.location for site in spec.sites))
    return None


def location_keys(index: NetworkIndex, spec: ScopeSpec) -> list[Hashable]:
    """Per location id, the part of the location the pool's answer depends on (for ``closest``
    the order of its sites by distance; for ``geo`` the country and continent; else nothing)."""
    _, relevant = _answer_function(spec)
    return [relevant(loc) for loc in index.locations]


def location_answers(index: NetworkIndex, spec: ScopeSpec, keys: Sequence[Hashable] | None = None) -> list[Answer]:
    """The answer of every location id of ``index`` under ``spec`` (one decision per distinct
    key of :func:`location_keys`, which may be passed in: once in all for a policy that ignores
    the client)."""
    answer_of, relevant = _answer_function(spec)
    memo: dict[Hashable, Answer] = {}
    interned: dict[Answer, Answer] = {}
    out: list[Answer] = []
    for i, loc in enumerate(index.locations):
        key = relevant(loc) if keys is None else keys[i]
        got = memo.get(key)
        if got is None:
            got = answer_of(loc)
            got = memo[key] = interned.setdefault(got, got)
        out.append(got)
    return out


def _countries(locations: Sequence[LocationKey], sizes: Sequence[float]) -> tuple[dict[str, float], dict[str, str]]:
    """Per country: its located space, and its continent (the one of most of its space)."""
    total: dict[str, float] = {}
    by_continent: dict[tuple[str, str], float] = {}
    for loc, size in zip(locations, sizes, strict=True):
        country = loc[1]
        if country is None or size <= 0:
            continue
        total[country] = total.get(country, 0.0) + size
        ck = (country, loc[2] or "")
        by_continent[ck] = by_continent.get(ck, 0.0) + size
    continent: dict[str, str] = {}
    best: dict[str, float] = {}
    for (country, cont), size in by_continent.items():
        if size > best.get(country, -1.0):
            best[country], continent[country] = size, cont
    return total, continent


def country_rows(locations: Sequence[LocationKey], sizes: Sequence[float],
                 answers: Sequence[Answer]) -> list[dict[str, Any]]:
    """One row per (country, answer): ``country``, ``continent``, ``sites``, ``share`` (of the
    country's space; a country's shares sum to 1). By country, then largest share first."""
    total, continent = _countries(locations, sizes)
    space: dict[tuple[str, Answer], float] = {}
    for loc, size, answer in zip(locations, sizes, answers, strict=True):
        country = loc[1]
        if country is None or size <= 0:
            continue
        key = (country, answer)
        space[key] = space.get(key, 0.0) + size
    order = sorted(space.items(), key=lambda kv: (kv[0][0], -kv[1] / total[kv[0][0]], kv[0][1]))
    return [{"country": country, "continent": continent[country] or None, "sites": list(answer),
             "share": size / total[country]} for (country, answer), size in order]


def moves(locations: Sequence[LocationKey], sizes: Sequence[float], before: Sequence[Answer],
          after: Sequence[Answer]) -> tuple[list[dict[str, Any]], float, dict[str, float]]:
    """What changes from ``before`` to ``after`` (answers per location id): rows ``country``,
    ``continent``, ``from``, ``to``, ``share`` (of the country's space), one per (country, from,
    to); ``moved_share``, the fraction of all located space that moves; and per continent (of the
    countries) the fraction of its space that moves (only continents where some space moves)."""
    total, continent = _countries(locations, sizes)
    moved: dict[tuple[str, Answer, Answer], float] = {}
    for loc, size, a, b in zip(locations, sizes, before, after, strict=True):
        if a == b or loc[1] is None or size <= 0:
            continue
        key = (loc[1], a, b)
        moved[key] = moved.get(key, 0.0) + size
    order = sorted(moved.items(), key=lambda kv: (kv[0][0], -kv[1] / total[kv[0][0]], kv[0][1], kv[0][2]))
    rows = [{"country": country, "continent": continent[country] or None, "from": list(a), "to": list(b),
             "share": size / total[country]} for (country, a, b), size in order]
    everything = sum(total.values())
    cont_total: dict[str, float] = {}
    for country, size in total.items():
        cont_total[continent[country]] = cont_total.get(continent[country], 0.0) + size
    cont_moved: dict[str, float] = {}
    for (country, _, _), size in moved.items():
        cont_moved[continent[country]] = cont_moved.get(continent[country], 0.0) + size
    by_continent = {c: cont_moved[c] / cont_total[c] for c in sorted(cont_moved) if c}
    return rows, (sum(moved.values()) / everything if everything else 0.0), by_continent


def weigh_queries(pool_plan: dict[str, Any], queries: Mapping[str | None, int]) -> dict[str, Any]:
    """Add the query shares to one pool's plan (``moves``, ``moved_share``), from the queries
    counted per country (None: queries whose country is not known, e.g. answers cached for every
    client of a policy that ignores the client: they move as the whole located space does).

    Each move gets ``query_share`` (the fraction of the pool's queries that moves with it); the
    pool gets ``queries`` and ``moved_query_share``. Without queries, nothing is added.
    """
    total = sum(queries.values())
    if not total:
        return pool_plan
    moved = queries.get(None, 0) * pool_plan["moved_share"]
    for move in pool_plan["moves"]:
        q = queries.get(move["country"], 0) * move["share"]
        move["query_share"] = q / total
        moved += q
    pool_plan["queries"] = total
    pool_plan["moved_query_share"] = moved / total
    return pool_plan


class MapEngine:
    """The map and plan of pools over one database's index, keeping the answers of the last
    :data:`KEPT_ANSWERS` specs (a map refresh after a verdict flaps back costs nothing)."""

    def __init__(self, index: NetworkIndex) -> None:
        self.index = index
        self._answers: dict[ScopeSpec, list[Answer]] = {}
        self._keys: dict[Hashable, list[Hashable]] = {}
        self._pieces: dict[frozenset[CidrRule], Pieces] = {}

    def keys(self, spec: ScopeSpec) -> list[Hashable] | None:
        """:func:`location_keys` of a spec, kept per :func:`key_signature` (closest: computed once
        per set of site locations, whatever the verdicts); None when they cost nothing."""
        signature = key_signature(spec)
        if signature is None:
            return None
        got = self._keys.get(signature)
        if got is None:
            if len(self._keys) >= KEPT_ANSWERS:
                del self._keys[next(iter(self._keys))]
            got = self._keys[signature] = location_keys(self.index, spec)
        return got

    def answers(self, spec: ScopeSpec | None) -> list[Answer]:
        """The answer per location id (a pool that does not exist: no site anywhere)."""
        if spec is None:
            return [()] * len(self.index.locations)
        got = self._answers.pop(spec, None)
        if got is None:
            got = self._after_leaving(spec)
            if got is None:
                got = location_answers(self.index, spec, self.keys(spec))
            if len(self._answers) >= KEPT_ANSWERS:
                del self._answers[next(iter(self._answers))]
        self._answers[spec] = got
        return got

    def _after_leaving(self, spec: ScopeSpec) -> list[Answer] | None:
        """The answers of ``spec`` from those of a kept spec it differs from only by sites that
        left (up -> down or drain): only the locations whose answer held one of them are decided
        again (the balancer's rule: removing a candidate never reorders the others; see
        ``_Prepared.changes``, which also names the exception, a site lacking one family). None
        when no kept spec is such."""
        for old, answers in reversed(self._answers.items()):
            if old.pool != spec.pool or old.sites != spec.sites:
                continue
            left = set()
            for site, a, b in zip(spec.sites, old.states, spec.states, strict=True):
                if a == b:
                    continue
                if a != "up" or b not in ("down", "drain") or not (site.ipv4 and site.ipv6):
                    break
                left.add(site.name)
            else:
                if not left:
                    return list(answers)
                answer_of, relevant = _answer_function(spec)
                keys = self.keys(spec)
                memo: dict[Hashable, Answer] = {}
                out = list(answers)
                for i, loc in enumerate(self.index.locations):
                    if not left.isdisjoint(answers[i]):
                        key = relevant(loc) if keys is None else keys[i]
                        got = memo.get(key)
                        if got is None:
                            got = memo[key] = answer_of(loc)
                        out[i] = got
                return out
        return None

    def pieces(self, rules: frozenset[CidrRule]) -> Pieces:
        """The :class:`Pieces` of a set of CIDR rules (kept per set)."""
        got = self._pieces.get(rules)
        if got is None:
            if len(self._pieces) >= KEPT_ANSWERS:
                del self._pieces[next(iter(self._pieces))]
            got = self._pieces[rules] = Pieces(self.index, rules)
        return got

    def map(self, spec: ScopeSpec) -> list[dict[str, Any]]:
        """:func:`country_rows` of a pool (a ``geo`` pool's CIDR rules cut their space out)."""
        rules = cidr_rules(spec)
        if not rules:
            return country_rows(self.index.locations, self.index.location_sizes(), self.answers(spec))
        locations, sizes, answers = self.pieces(rules).extend(self.index, spec, self.answers(spec))
        return country_rows(locations, sizes, answers)

    def plan(self, before: ScopeSpec | None, after: ScopeSpec | None) -> dict[str, Any]:
        """:func:`moves` of a pool between two specs: ``{"moves", "moved_share", "moved_share_by_continent"}``."""
        if before == after:
            return {"moves": [], "moved_share": 0.0, "moved_share_by_continent": {}}
        rules = cidr_rules(before) | cidr_rules(after)
        if not rules:
            rows, moved, by_continent = moves(self.index.locations, self.index.location_sizes(),
                                              self.answers(before), self.answers(after))
        else:
            pieces = self.pieces(rules)
            locations, sizes, a = pieces.extend(self.index, before, self.answers(before))
            _, _, b = pieces.extend(self.index, after, self.answers(after))
            rows, moved, by_continent = moves(locations, sizes, a, b)
        return {"moves": rows, "moved_share": moved, "moved_share_by_continent": by_continent}


#: specs whose answers a MapEngine keeps
KEPT_ANSWERS = 32


def plan_zone(engine: MapEngine, before: Zone, after: Zone, before_states: Mapping[str, str],
              after_states: Mapping[str, str]) -> dict[str, Any]:
    """The plan of a zone: every pool of ``before`` (then those only ``after`` has) compared."""
    pools = []
    for name in pool_names(before, after):
        a = spec_of(before, name, before_states) if name in before.pools else None
        b = spec_of(after, name, after_states) if name in after.pools else None
        pools.append(dict(pool=name, **engine.plan(a, b)))
    return {"zone": before.key, "pools": pools}


def _sites_text(sites: Sequence[str]) -> str:
    return ",".join(sites) if sites else "(none)"


def _percent(share: float) -> str:
    """``100.0 %``; a share too small for one decimal keeps two significant digits (``0.0061 %``)."""
    percent = share * 100
    return f"{percent:.2g} %" if 0 < percent < 0.05 else f"{percent:.1f} %"


def format_plan(result: dict[str, Any]) -> str:
    """The terminal form of a plan: one line per move (``web  DE (EU)  fra -> iad  100.0 %``), with
    the share of the window's queries appended when there were any; "" when nothing moves."""
    lines = []
    for pool in result["pools"]:
        for m in pool["moves"]:
            where = f"{m['country']} ({m['continent']})" if m.get("continent") else m["country"]
            line = f"{pool['pool']}  {where}  {_sites_text(m['from'])} -> {_sites_text(m['to'])}  " \
                   f"{_percent(m['share'])}"
            if "query_share" in m:
                line += f"  ({_percent(m['query_share'])} of the last hour's queries)"
            lines.append(line)
    return "\n".join(lines)


class TrafficWindow:
    """The per-(zone, pool, country) query counters of the last ``window`` seconds, from cumulative
    totals sampled every ``step`` seconds (the caller passes the clock's time in).

    ``sample(now, totals)`` keeps one sample per step; ``recent(now, totals)`` is ``totals`` minus
    the oldest sample not older than the window (or the oldest kept, while the server has run less
    than a window: then it covers the time since start).
    """

    def __init__(self, window: float = 3600.0, step: float = 60.0) -> None:
        self.window = window
        self.step = step
        self._samples: deque[tuple[float, dict[tuple[str, str, str | None], int]]] = deque()

    def sample(self, now: float, totals: Mapping[tuple[str, str, str | None], int]) -> None:
        """Remember ``totals`` (at most one sample per step)."""
        if self._samples and now - self._samples[-1][0] < self.step:
            return
        self._samples.append((now, dict(totals)))
        while len(self._samples) > 1 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def recent(self, now: float, totals: Mapping[tuple[str, str, str | None], int]) -> dict[tuple[str, str, str | None], int]:
        """The counts of the window ending ``now``."""
        base: Mapping[tuple[str, str, str | None], int] = {}
        for when, sample in self._samples:
            if now - when <= self.window:
                base = sample
                break
        out = {}
        for key, n in totals.items():
            d = n - base.get(key, 0)
            if d > 0:
                out[key] = d
        return out


def per_country(counts: Mapping[tuple[str, str, str | None], int], zone_key: str,
                pool: str) -> dict[str | None, int]:
    """One pool's counts per country from (zone key, pool, country) counts."""
    return {c: n for (z, p, c), n in counts.items() if z == zone_key and p == pool}


def pool_names(before: Zone, after: Zone) -> Iterable[str]:
    """The pools a plan lists: the zone's, then those only the proposed zone has."""
    yield from before.pools
    yield from (name for name in after.pools if name not in before.pools)
