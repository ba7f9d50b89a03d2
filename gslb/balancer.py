"""Pool answers: client location, site states, the pool's policy, ECS scope, TTL and a decision cache.

One implementation serves DNS (:meth:`Balancer.answer`, fast) and the decision trace
(:meth:`Balancer.trace`, which only adds reasons and never advances the round-robin counter).

What a decision reads, per (zone key, pool name): the pool's *inputs*, i.e. each site's verdict
under the pool's quorum (up, down, drain, unknown), and, for the policies that rank by metrics,
the metrics held for ranking: the load for ``least_load`` and ``p2c``, the round-trip times for
``fastest``. A held metric follows the live one only when it moves by more than a band
(hysteresis: :data:`LOAD_BAND`, :data:`RTT_BAND`), so a probe result that reports a slightly
different load or RTT changes nothing. :meth:`Balancer.sync` is called with every new state view:
it rebuilds the inputs of the pools prepared so far and returns (and passes to ``on_change``) the
pools whose answers may have changed; only their decisions are dropped, and when the only change
is sites leaving (up to down or drain), the answer cache drops only the answers that held one of
them. A probe result that changes no verdict and moves no held metric beyond its band drops
nothing (SPEC targets: health churn is free).

Caching, per (zone key, pool name) and inputs: who may serve is computed once (except for
``geo``, whose tiers depend on the client); policies whose order does not depend on the client
either decide once (failover, least_load, fastest without located regions) or only draw per
query (weighted, round_robin, p2c); the others' decisions are cached per client key (GeoIP
network, CIDR-rule scope or hashed subnet) in a bounded two-generation cache. Its entries are
plain tuples of numbers and strings (the preparation's serial number and the index of the
decision among the preparation's distinct decisions), which CPython's garbage collector stops
tracking, so a large cache adds nothing to a collection's pause. A new Zone object for a key (a
reload) drops what the old one left behind. The client address comes without a zone suffix
(``%eth0``): the DNS transport and explain strip it.

Who may serve, for a pool (per tier of a ``geo`` map, most specific first):
1. the sites that are up (``unknown`` counts as up) in the first tier that has any;
2. else the drained sites (``drain`` is out unless every other site is down);
3. else the ``when_all_down`` rule: ``all`` ranks every site of the first tier as if it were
   up, ``servfail`` and ``nodata`` answer so.
Among those, sites of weight 0 are dropped while one of weight > 0 remains (Route 53 practice);
when every one has weight 0 they count as weight 1.

Addresses: the first ``answers`` sites of the order that have an address of the asked family,
each with all its addresses of that family (no site with one: an empty answer, NODATA).
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from gslb.geo import distance_km
from gslb.model import Location, Pool, PoolAnswer, PoolOutcome, Site, SiteStatus, Soa, StateView, Zone, ZoneSet
from gslb.netmap import CompactScopes, NetworkIndex, ScopeTable, build_table
from gslb.policies import (
    POLICIES, Candidate, Context, GeoMap, Policy, Reasons, client_address, nearest_region, site_rtt,
    subnet_of, subnet_text,
)

logger = logging.getLogger(__name__)

#: serial numbers of preparations
_SERIALS = itertools.count(1)

#: decisions kept per generation of the decision cache (two generations: at most twice this)
CACHE_LIMIT = 50_000

#: hysteresis of held loads (least_load, p2c): a site's held load follows the reported one only
#: when it moves by more than this fraction of the held value, or by more than LOAD_FLOOR
LOAD_BAND = 0.10
LOAD_FLOOR = 0.01
#: hysteresis of held round-trip times (fastest): more than this fraction, or more than RTT_FLOOR ms
RTT_BAND = 0.20
RTT_FLOOR = 2.0

_UP_STATES = frozenset(("up", "unknown"))

#: the policies whose answer depends on the client only through its location: their ECS scope is
#: widened by a merged scope table (gslb.netmap) once it is built for the pool's current inputs
MERGED_POLICIES = frozenset(("closest", "geo"))
#: merged scope tables a balancer keeps (by ScopeSpec): a site that flaps back finds its table
TABLES_KEPT = 4


class Locator(Protocol):
    """What the balancer needs from gslb.geo.GeoLocator."""

    def locate(self, ip: str) -> Location:
        """The client's location (network always set)."""


@dataclass(frozen=True, slots=True)
class CandidateTrace:
    """One site in a decision trace."""

    site: str
    state: str
    distance_km: float | None
    load: float
    rtt_ms: float | None
    chosen: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Trace:
    """The full decision for one pool, rtype and client (explain)."""

    pool: str
    policy: str
    location: Location | None
    subnet: str
    #: the geo tier that answered (e.g. "DE", "10.0.0.0/8", "default"); "" for other policies
    matched: str
    candidates: tuple[CandidateTrace, ...]
    answer: PoolAnswer


def _family(order: Sequence[Candidate], rtype: str, answers: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(addresses, sites) for A or AAAA: the first ``answers`` sites of ``order`` having that family."""
    addrs: list[str] = []
    sites: list[str] = []
    for c in order:
        fam = c.site.ipv6 if rtype == "AAAA" else c.site.ipv4
        if fam:
            # RFC 2181 5: no duplicate records in an RRset (two sites may share an address)
            addrs.extend(a for a in fam if a not in addrs)
            sites.append(c.site.name)
            if len(sites) >= answers:
                break
    return tuple(addrs), tuple(sites)


def _eligible(pool: Pool, tiers: Sequence[tuple[str, Sequence[Candidate]]],
              passed: dict[str, str] | None) -> tuple[PoolOutcome, tuple[Candidate, ...], str]:
    """Who may serve (module docstring rules): (outcome, candidates in tier order, tier label).

    ``outcome`` is "answer" or the pool's ``when_all_down`` rule; ``passed`` (explain) gets a
    reason for every weight-0 site left out.
    """
    pick: list[Candidate] = []
    tier_label = tiers[0][0]
    for label, cands in tiers:
        pick = [c for c in cands if c.state in _UP_STATES]
        if pick:
            tier_label = label
            break
    if not pick:
        for label, cands in tiers:
            pick = [c for c in cands if c.state == "drain"]
            if pick:
                tier_label = label
                break
    if not pick:
        if pool.when_all_down != "all":
            return pool.when_all_down, (), tier_label
        pick = list(tiers[0][1])
        tier_label = tiers[0][0]
    # weight 0: a backup, used only when no site of weight > 0 may serve
    if any(c.weight <= 0 for c in pick):
        positive = [c for c in pick if c.weight > 0]
        if positive:
            if passed is not None:
                for c in pick:
                    if c.weight <= 0:
                        passed[c.name] = "weight 0: used only when no weighted site is up"
            pick = positive
        else:
            pick = [Candidate(c.site, c.index, c.state, c.status, c.load, 1) for c in pick]
    return "answer", tuple(pick), tier_label


class _Decision:
    """A cached decision: the order of sites (or an all-down outcome) and per-family addresses."""

    __slots__ = ("outcome", "order", "scope", "answers", "_fam", "_answers", "tier", "reasons", "passed")

    def __init__(self, outcome: PoolOutcome, order: tuple[Candidate, ...], scope: int, answers: int,
                 tier: str = "", reasons: Reasons | None = None, passed: dict[str, str] | None = None) -> None:
        self.outcome = outcome
        self.order = order
        self.scope = scope
        self.answers = answers
        self.tier = tier
        self.reasons = reasons
        self.passed = passed
        self._fam: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._answers: dict[tuple[str, int | None], PoolAnswer] = {}

    def family(self, rtype: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(addresses, sites) for A or AAAA: the first ``answers`` sites having that family."""
        got = self._fam.get(rtype)
        if got is None:
            got = self._fam[rtype] = _family(self.order, rtype, self.answers)
        return got

    def pool_answer(self, pool: Pool, rtype: str, source_prefix: int | None, per_client: bool) -> PoolAnswer:
        """The PoolAnswer of this decision for a family and an ECS source prefix (memoised)."""
        key = (rtype, source_prefix)
        got = self._answers.get(key)
        if got is not None:
            return got
        scope = 0 if source_prefix is None else min(self.scope, source_prefix)
        if self.outcome != "answer":
            got = PoolAnswer(self.outcome, (), pool.ttl, scope, per_client=per_client)
        else:
            addrs, sites = self.family(rtype)
            if not addrs and not self.tier:
                # no site the policy could pick has this family: the same NODATA for every client
                scope = 0
            got = PoolAnswer("answer", addrs, pool.ttl, scope, sites, per_client=per_client)
        if len(self._answers) < 64:
            self._answers[key] = got
        return got


def _moved(held: float | None, live: float | None, band: float, floor: float) -> bool:
    """Whether a live metric left the band around the held one (a metric appearing or vanishing moves)."""
    if held is None or live is None:
        return held is not live
    return abs(live - held) > max(band * abs(held), floor)


def _held_load(previous: Candidate | None, live: float) -> float:
    """The load a policy ranks by: the previous one while the live load stays within the band."""
    if previous is not None and not _moved(previous.load, live, LOAD_BAND, LOAD_FLOOR):
        return previous.load
    return live


def _held_status(previous: Candidate | None, live: SiteStatus) -> SiteStatus:
    """The status ``fastest`` ranks by: the previous one while every region's RTT stays within the band."""
    if previous is None:
        return live
    held = previous.status
    if held.regions.keys() != live.regions.keys():
        return live
    for region, result in live.regions.items():
        if _moved(held.regions[region].rtt_ms, result.rtt_ms, RTT_BAND, RTT_FLOOR):
            return live
    return held


class _Prepared:
    """Per (zone, pool) and inputs: candidates with verdicts and held metrics, the geo map, who may serve.

    Built from a state view; ``previous`` (the same pool's preparation before this view) provides
    the held metrics. ``changes(other)`` tells what a rebuild changes in the answers.
    """

    __slots__ = ("zone", "pool", "policy", "located", "client_free", "cands", "by_name", "geomap",
                 "eligible", "decision", "serial", "decisions", "_interned", "table", "spec")

    def __init__(self, zone: Zone, pool: Pool, view: StateView, geomap: GeoMap | None, policy: Policy,
                 located: bool, previous: "_Prepared | None" = None) -> None:
        self.zone = zone
        self.pool = pool
        self.policy = policy
        #: the order depends on the client's location (Policy.depends_on_location, precomputed)
        self.located = located
        #: neither who may serve nor the order depend on the client (weighted, round_robin, p2c,
        #: failover, least_load, fastest without located regions): no location, no parse, scope 0
        self.client_free = geomap is None and not located and not policy.uses_subnet
        before = previous.by_name if previous is not None and previous.pool is pool else {}
        cands = []
        for i, name in enumerate(pool.sites):
            site = zone.sites.get(name) or Site(name, None, (), ())
            status = view.site(zone.key, name)
            old = before.get(name)
            if old is not None and old.site is not site:
                old = None
            state = status.state(pool.quorum)
            load = _held_load(old, status.load) if policy.reads_load else status.load
            if policy.reads_rtt:
                status = _held_status(old, status)
            cands.append(Candidate(site, i, state, status, load, site.weight))
        self.cands = tuple(cands)
        self.by_name: dict[str, Candidate] = {c.name: c for c in cands}
        self.geomap = geomap
        #: (outcome, candidates, tier label) when the tiers do not depend on the client (not geo)
        self.eligible = _eligible(pool, (("", self.cands),), None) if geomap is None else None
        #: client-free deterministic policies: the one decision of these inputs
        self.decision: _Decision | None = None
        #: unique per preparation (the decision cache's entries name it)
        self.serial = next(_SERIALS)
        #: the distinct decisions made under these inputs; the cache stores indexes into it
        self.decisions: list[_Decision] = []
        self._interned: dict[tuple[PoolOutcome, tuple[str, ...], int, str], int] = {}
        #: the merged scope table built for exactly these inputs (None: the per-network scope)
        self.table: ScopeTable | CompactScopes | None = None
        #: what that table depends on (set when one is wanted)
        self.spec: ScopeSpec | None = None

    def fresh_decisions(self) -> None:
        """Forget the decisions made so far (a scope table came): a new serial misses the cache."""
        self.serial = next(_SERIALS)
        self.decisions = []
        self._interned = {}
        self.decision = None

    def intern(self, decision: "_Decision") -> int:
        """The index of ``decision`` (or of an equal one made before) in ``decisions``."""
        key = (decision.outcome, tuple(c.name for c in decision.order), decision.scope, decision.tier)
        index = self._interned.get(key)
        if index is None:
            index = self._interned[key] = len(self.decisions)
            self.decisions.append(decision)
        return index

    def changes(self, other: "_Prepared") -> tuple[str, ...] | None:
        """What a rebuild for a newer view (``other``) changes in the answers.

        ``()``: nothing any answer depends on (same verdicts, up and unknown being the same
        verdict to a policy, same held metrics); a tuple of site names: only those sites left
        (up or unknown before, down or drain now), so only answers that held one of them
        change: removing a candidate never reorders the others (closest, geo, failover and
        hash rank each site on its own; who may serve only shrinks) and the sites in an answer
        stay up. That holds for sites with addresses of both families only: a site without IPv4
        (or IPv6) addresses is in no A (or AAAA) answer, yet if it was the last site up, its
        leaving lets drained sites (or weight-0 ones) answer, or the next geo tier. So then, as
        in every other case (a site came back, held metrics moved, the zone or pool changed):
        None, anything may change.
        """
        if other.zone is not self.zone or other.pool is not self.pool:
            return None
        reads_load, reads_rtt = self.policy.reads_load, self.policy.reads_rtt
        removed: list[str] = []
        for a, b in zip(self.cands, other.cands, strict=True):  # the same pool: the same sites
            if a.site is not b.site:
                return None
            if reads_load and a.load != b.load:
                return None
            if reads_rtt and a.status is not b.status:
                return None
            if a.state == b.state or (a.state in _UP_STATES and b.state in _UP_STATES):
                continue
            if a.state not in _UP_STATES:
                return None  # a site came back, or moved between down and drain
            if not (a.site.ipv4 and a.site.ipv6):
                # it may have been the last site up while an answer of the family it lacks came
                # from others (or was NODATA): its leaving can change answers without it
                return None
            removed.append(a.name)  # up or unknown -> down or drain
        return tuple(removed)


@dataclass(frozen=True, slots=True)
class ScopeSpec:
    """What the merged scope table of a ``closest`` or ``geo`` pool depends on, besides the GeoIP
    database: the pool, its sites as the zone defines them (in ``pool.sites`` order) and their
    verdicts (``unknown`` counts as ``up``: the policies treat both alike). Equal specs get equal
    tables, in any zone, process or reload; a spec travels to the builder process and back."""

    pool: Pool
    sites: tuple[Site, ...]
    states: tuple[str, ...]

    @staticmethod
    def verdict(state: str) -> str:
        """A site state as a spec holds it: ``unknown`` counts as ``up``."""
        return "up" if state in _UP_STATES else state

    @classmethod
    def of(cls, prep: _Prepared) -> "ScopeSpec":
        """The spec of a preparation's inputs."""
        return cls(prep.pool, tuple(c.site for c in prep.cands),
                   tuple(cls.verdict(c.state) for c in prep.cands))


_NO_SOA = Soa("invalid.", "invalid.", 0, 0, 0, 0, 0, 0)


def prepared_for_spec(spec: ScopeSpec) -> tuple[_Prepared, Balancer]:
    """The preparation of a pool under a spec's verdicts, and a balancer without a locator to
    decide with: what the scope tables (:func:`scope_table_of`) and the traffic map
    (``gslb.trafficmap``) ask each location's answer of."""
    pool = spec.pool
    zone = Zone("scope.invalid.", "", 0, 0, _NO_SOA, (), {}, sites={s.name: s for s in spec.sites},
                pools={pool.name: pool})
    # spec.states holds verdicts ("up", "down", "drain"): as overrides they are the state itself
    view = StateView(0, {(zone.key, site.name): SiteStatus(override=state)  # type: ignore[arg-type]
                         for site, state in zip(spec.sites, spec.states, strict=True)})
    policy = POLICIES[pool.policy]
    geomap = GeoMap.from_pool(pool) if pool.policy == "geo" else None
    prep = _Prepared(zone, pool, view, geomap, policy, policy.depends_on_location(()))
    return prep, Balancer(None, {}, random.Random(0))


def scope_table_of(index: NetworkIndex, spec: ScopeSpec) -> ScopeTable:
    """The merged scope table of ``spec`` over the networks of ``index`` (pure; the builder
    process runs it). Each location's answer key is what a client there gets from the pool, CIDR
    rules aside: its A and AAAA answer (or the all-down outcome)."""
    pool = spec.pool
    prep, balancer = prepared_for_spec(spec)

    def answer_of(loc: tuple[tuple[float, float] | None, str | None, str | None]) -> tuple[Any, ...]:
        latlon, country, continent = loc
        return balancer.located_answer(prep, Location("", "", 0, latlon, country, continent))

    # geo picks its tier by country and continent and keeps the list's order: the coordinates do
    # not matter (the property tests compare every answer with the full decision path)
    return build_table(index, answer_of, (lambda loc: loc[1:]) if pool.policy == "geo" else None)


class LocalScopes:
    """Scope tables built in this process, when :meth:`run` is called (tests and tools; the
    server builds them in its builder process, ``gslb.scopebuilder``). Pass it as a Balancer's
    ``scopes``: it collects the requests; ``run`` builds each (through the compact form the
    builder ships) and installs it."""

    def __init__(self, geo: object) -> None:
        self.geo = geo
        self.index: NetworkIndex | None = None
        self.requests: dict[ScopeSpec, tuple[str, str]] = {}
        #: tables built so far
        self.built = 0

    def __call__(self, pkey: tuple[str, str], spec: ScopeSpec) -> None:
        self.requests[spec] = pkey

    def table(self, spec: ScopeSpec) -> ScopeTable:
        """The full table of a spec (answers per run)."""
        if self.index is None:
            self.index = NetworkIndex.build(self.geo)
        self.built += 1
        return scope_table_of(self.index, spec)

    def run(self, balancer: "Balancer") -> int:
        """Build every table asked for and install it in ``balancer``; returns how many."""
        done = 0
        while self.requests:
            spec = next(iter(self.requests))
            del self.requests[spec]
            balancer.install_table(spec, CompactScopes.from_bytes(self.table(spec).compact()))
            done += 1
        return done


#: what changed in a pool's answers: ((zone key, pool name), None for everything or the sites that left)
PoolChange = tuple[tuple[str, str], "tuple[str, ...] | None"]


class Balancer:
    """Answers pool names: see the module docstring for the rules."""

    def __init__(self, geo: Locator | None, regions: Mapping[str, tuple[float, float] | None],
                 rng: random.Random,
                 scopes: Callable[[tuple[str, str], ScopeSpec], None] | None = None) -> None:
        self.geo = geo
        self.rng = rng
        self.regions = tuple(regions)
        self.region_locations = tuple((n, (loc[0], loc[1])) for n, loc in regions.items() if loc)
        #: Policy.depends_on_location per policy name, for these regions
        self._located = {name: p.depends_on_location(self.region_locations) for name, p in POLICIES.items()}
        #: the Context of client-free policies (turn 0; round_robin builds one with its turn)
        self._free_ctx = Context(None, "", b"", "", 0, self.region_locations, self.regions)
        #: decisions of deterministic client-dependent policies per (zone key, pool name, client
        #: key) -> (serial of the _Prepared they were made under, index in its decisions); two
        #: generations (young, old)
        self._young: dict[tuple[str, str, object], tuple[int, int]] = {}
        self._old: dict[tuple[str, str, object], tuple[int, int]] = {}
        #: per (zone key, pool name); an entry of a replaced Zone object is rebuilt on its next use
        self._prepared: dict[tuple[str, str], _Prepared] = {}
        #: the version of the last view the preparations were synced with
        self._synced: int | None = None
        #: round_robin counters per (zone key, pool name, A/AAAA): the only state mutated per query
        #: (one per family, so a client asking both does not always get the same A answer)
        self._turns: dict[tuple[str, str, str], int] = {}
        #: called with the pools whose answers may have changed (PoolChange; the answer cache listens)
        self.on_change: Callable[[list[PoolChange]], None] | None = None
        #: merged ECS scopes (closest, geo): asks for the table of a spec (the builder process,
        #: ``gslb.scopebuilder``; None: every scope is the GeoIP network's); the table comes back
        #: through :meth:`install_table`
        self.scopes = scopes if getattr(geo, "_reader", None) is not None else None
        #: tables installed so far, by spec (at most TABLES_KEPT)
        self._tables: dict[ScopeSpec, ScopeTable | CompactScopes] = {}

    # -- state changes -----------------------------------------------------------------------

    def sync(self, view: StateView) -> list[PoolChange]:
        """Take a new state view: rebuild the inputs of every prepared pool; return what changed.

        A pool whose verdicts and held metrics are unchanged keeps its preparation and its cached
        decisions. For each pool whose answers may change: ``((zone key, pool), sites)`` where
        ``sites`` are the sites that left (only answers holding one of them change, see
        ``_Prepared.changes``) or None (any answer may change). ``on_change`` (if set) is called
        with that list.
        """
        if view.version == self._synced:
            return []
        self._synced = view.version
        changed: list[PoolChange] = []
        for pkey, prep in list(self._prepared.items()):
            new = _Prepared(prep.zone, prep.pool, view, prep.geomap, prep.policy, prep.located, prep)
            change = prep.changes(new)
            if change == ():
                if any(a.state != b.state for a, b in zip(prep.cands, new.cands, strict=True)):
                    new.table, new.spec = prep.table, prep.spec  # up <-> unknown: the same answers, scopes
                    self._prepared[pkey] = new  # the states shown anew
                    if new.table is None:
                        self._want(pkey, new)
                continue
            self._prepared[pkey] = new  # no table yet: the per-network scope until one is built
            self._want(pkey, new)
            changed.append((pkey, change))
        if changed and self.on_change is not None:
            self.on_change(changed)
        return changed

    def retain(self, zones: ZoneSet) -> None:
        """Forget the pools of zones no longer served (after a reload)."""
        for pkey in [k for k, p in self._prepared.items() if zones.zones.get(p.zone.origin) is None]:
            del self._prepared[pkey]

    # -- the DNS path ------------------------------------------------------------------------

    def answer(self, zone: Zone, pool: Pool, rtype: str, client_ip: str, source_prefix: int | None,
               view: StateView) -> PoolAnswer:
        """The pool's answer for a client (A or AAAA, ``client_ip`` without a zone suffix)."""
        if view.version != self._synced:
            self.sync(view)
        prep = self._prepare(zone, pool, view)
        policy = prep.policy
        if prep.client_free:
            # only the policy's draw (if any) and the address picking run per query; scope 0
            if policy.deterministic:
                decision = prep.decision
                if decision is None:
                    decision = prep.decision = self._decide(prep, None, None, "", 0, False)
                return decision.pool_answer(pool, rtype, source_prefix, False)
            ctx = self._free_ctx
            if policy.name == "round_robin":
                tkey = (zone.key, pool.name, rtype)
                turn = self._turns.get(tkey, 0)
                self._turns[tkey] = turn + 1
                ctx = Context(None, "", b"", "", turn, self.region_locations, self.regions)
            assert prep.eligible is not None  # no geo map: _Prepared set it
            outcome, pick, _ = prep.eligible
            if outcome != "answer":
                return PoolAnswer(outcome, (), pool.ttl, 0)
            order, _ = policy.rank(pick, ctx, self.rng, False)
            addrs, sites = _family(order, rtype, pool.answers)
            return PoolAnswer("answer", addrs, pool.ttl, 0, sites, cacheable=False)
        location, key, parsed = self._client(prep, client_ip)
        ckey = (zone.key, pool.name, key)
        hit = self._young.get(ckey)
        if hit is None:
            hit = self._old.get(ckey)
        if hit is not None and hit[0] == prep.serial:
            decision = prep.decisions[hit[1]]
        else:
            decision = self._decide(prep, location, parsed, client_ip, 0, False)
            young = self._young
            if len(young) >= CACHE_LIMIT:
                self._old = young
                young = self._young = {}
            young[ckey] = (prep.serial, prep.intern(decision))
        return decision.pool_answer(pool, rtype, source_prefix, True)

    # -- the decision trace ------------------------------------------------------------------

    def trace(self, zone: Zone, pool: Pool, rtype: str, client_ip: str, source_prefix: int | None,
              view: StateView) -> Trace:
        """The same decision as :meth:`answer`, with a reason for every site (never cached)."""
        if view.version != self._synced:
            self.sync(view)
        prep = self._prepare(zone, pool, view)
        policy = prep.policy
        location = self.geo.locate(client_ip) if self.geo is not None else None
        parsed = client_address(client_ip) if prep.geomap is not None or policy.uses_subnet else None
        turn = self._turns.get((zone.key, pool.name, rtype), 0)
        decision = self._decide(prep, location, parsed, client_ip, turn, True)
        answer = decision.pool_answer(pool, rtype, source_prefix, not prep.client_free)
        chosen = set(answer.sites)
        here = location.latlon if location is not None else None
        region = nearest_region(here, self.region_locations)
        reasons, passed = decision.reasons, decision.passed
        assert reasons is not None and passed is not None  # explain: _decide gives both
        rows = []
        listed = [c.name for c in decision.order]
        listed += [c.name for c in prep.cands if c.name not in set(listed)]
        for name in listed:
            c = prep.by_name[name]
            dist = distance_km(here, c.site.location) if here and c.site.location else None
            if name in reasons:
                reason = reasons[name]
                if name not in chosen:
                    fam = c.site.ipv6 if rtype == "AAAA" else c.site.ipv4
                    reason += (f"; no {rtype} address" if not fam
                               else f"; not needed (answers: {pool.answers})")
                if decision.outcome == "answer" and c.state not in _UP_STATES and name in chosen:
                    reason += f" (state {c.state}: serving because no site is up)"
            else:
                reason = passed.get(name, "not a candidate")
            rows.append(CandidateTrace(name, c.state, None if dist is None else float(round(dist)),
                                       c.load, site_rtt(c.status, region), name in chosen, reason))
        subnet = subnet_text(*subnet_of(*parsed)) if policy.uses_subnet and parsed is not None else ""
        return Trace(pool.name, policy.name, location, subnet, decision.tier, tuple(rows), answer)

    # -- shared implementation ---------------------------------------------------------------

    def _prepare(self, zone: Zone, pool: Pool, view: StateView) -> _Prepared:
        """The candidates of a pool (built on first use of the zone and pool; kept current by ``sync``)."""
        pkey = (zone.key, pool.name)
        prep = self._prepared.get(pkey)
        if prep is not None and prep.zone is zone and prep.pool is pool:
            return prep
        if prep is not None and prep.zone is not zone:
            self._forget(zone)
        geomap = None
        if pool.policy == "geo":
            geomap = (prep.geomap if prep is not None and prep.pool is pool and prep.geomap is not None
                      else GeoMap.from_pool(pool))
        new = self._prepared[pkey] = _Prepared(zone, pool, view, geomap, POLICIES[pool.policy],
                                               self._located[pool.policy])
        self._want(pkey, new)
        return new

    # -- merged scope tables (gslb.netmap) ---------------------------------------------------

    def _want(self, pkey: tuple[str, str], prep: _Prepared) -> None:
        """Give ``prep`` the table of its spec, or ask for one (closest and geo, when merging)."""
        if self.scopes is None or prep.policy.name not in MERGED_POLICIES:
            return
        spec = prep.spec = ScopeSpec.of(prep)
        table = self._tables.get(spec)
        if table is not None:
            prep.table = table  # a new preparation: nothing was decided or cached under it yet
        else:
            self.scopes(pkey, spec)

    def install_table(self, spec: ScopeSpec, table: ScopeTable | CompactScopes) -> list[tuple[str, str]]:
        """A table built for ``spec``: the pools whose current inputs are exactly ``spec`` use it
        (caller holds the query path's lock); returns them.

        A table never reaches a preparation of other inputs (a table that comes after the
        verdicts moved on is only kept), so no stale wide scope is handed out. The pools'
        decisions and cached answers carry the narrower scopes: both are dropped.
        """
        if len(self._tables) >= TABLES_KEPT:
            del self._tables[next(iter(self._tables))]
        self._tables[spec] = table
        installed = []
        for pkey, prep in self._prepared.items():
            if prep.table is None and prep.spec is not None and prep.spec == spec:
                prep.table = table
                prep.fresh_decisions()
                installed.append(pkey)
        if installed and self.on_change is not None:
            self.on_change([(pkey, None) for pkey in installed])
        return installed

    def located_answer(self, prep: _Prepared, location: Location | None) -> tuple[Any, ...]:
        """What a client at ``location`` gets from the pool, CIDR rules aside: the table's answer key."""
        decision = self._decide(prep, location, (0, 0, 0), "", 0, False, wide=False)
        if decision.outcome != "answer":
            return (decision.outcome,)
        return ("answer", decision.family("A"), decision.family("AAAA"))

    def _forget(self, zone: Zone) -> None:
        """A new Zone object for ``zone.key`` (a reload): drop what the old one's pools left behind."""
        key = zone.key
        for pkey in [k for k, p in self._prepared.items() if k[0] == key and p.zone is not zone]:
            del self._prepared[pkey]
        for tkey in [k for k in self._turns if k[0] == key and k[1] not in zone.pools]:
            del self._turns[tkey]
        live = {p.serial for p in self._prepared.values()}
        for cache in (self._young, self._old):
            for ckey in [k for k, (serial, _) in cache.items() if k[0] == key and serial not in live]:
                del cache[ckey]

    def _client(self, prep: _Prepared,
                client_ip: str) -> tuple[Location | None, object, tuple[int, int, int] | None]:
        """The client's location (if the policy uses it), its cache key and parsed address (or None)."""
        if prep.located:
            location = self.geo.locate(client_ip) if self.geo is not None else None
            if prep.geomap is not None and prep.geomap.cidrs:
                # CIDR rules may split the GeoIP network: key by the network the match holds for
                parsed = client_address(client_ip)
                addr, version, offset = parsed
                start = location.prefixlen - offset if location is not None else 0
                scope = prep.geomap.scope(addr, version, start)
                bits = 32 if version == 4 else 128
                return location, (version, offset, addr >> (bits - scope), scope), parsed
            return location, (location.network if location is not None else None), None
        if prep.policy.uses_subnet:
            parsed = client_address(client_ip)
            return None, subnet_of(*parsed), parsed
        return None, None, None

    def _decide(self, prep: _Prepared, location: Location | None, parsed: tuple[int, int, int] | None,
                client_ip: str, turn: int, explain: bool, wide: bool = True) -> _Decision:
        """Who may serve, ranked by the policy; the ECS scope of the decision (uncapped).

        ``parsed`` is the client's :func:`client_address` (needed by ``geo`` and ``hash``; parsed
        here when the caller had no need for it).
        """
        pool = prep.pool
        policy = prep.policy
        subnet, subnet_len, text = b"", 0, ""
        if policy.uses_subnet:
            if parsed is None:
                parsed = client_address(client_ip)
            subnet, subnet_len = subnet_of(*parsed)
            if explain:
                text = subnet_text(subnet, subnet_len)
        passed: dict[str, str] | None = {} if explain else None
        # the tiers: geo rules most specific first, else the pool's sites
        scope = 0
        if prep.geomap is not None:
            if parsed is None:
                parsed = client_address(client_ip)
            # a v4-mapped client matches IPv4 rules; its scope is expressed in IPv6 (offset 96)
            addr, version, offset = parsed
            start = max(location.prefixlen - offset if location is not None else 0, 0)
            table = prep.table if wide else None
            if table is not None:
                # every address of the merged block gets the same answer, CIDR rules aside
                merged = table.scope(addr, version)
                if merged is not None and merged < start:
                    start = merged
            scope = prep.geomap.scope(addr, version, start)
            if offset and (scope or prep.geomap.has_rules(6)):
                scope += offset  # else: no rule and no location tells mapped clients apart: scope 0
            match = prep.geomap.match(location, addr, version)
            by_name = prep.by_name
            tiers = [(label, tuple(by_name[n] for n in names if n in by_name))
                     for label, names in match.tiers]
            outcome, pick, tier_label = _eligible(pool, tiers, passed)
        else:
            if prep.located:
                scope = location.prefixlen if location is not None else 0
                table = prep.table if wide else None
                if table is not None and scope:
                    addr, version, offset = parsed if parsed is not None else client_address(client_ip)
                    merged = table.scope(addr, version)
                    if merged is not None and merged + offset < scope:
                        scope = merged + offset
            elif policy.uses_subnet:
                scope = subnet_len
            tiers = [("", prep.cands)]
            outcome, pick, tier_label = (prep.eligible if not explain and prep.eligible is not None
                                         else _eligible(pool, tiers, passed))

        if outcome != "answer":
            if passed is not None:  # explain
                for c in prep.cands:
                    passed[c.name] = f"{c.state}: no site is up (when_all_down: {outcome})"
            return _Decision(outcome, (), scope, pool.answers, tier_label, {}, passed)
        ctx = Context(location, client_ip, subnet, text, turn, self.region_locations, self.regions)
        order, reasons = policy.rank(pick, ctx, self.rng, explain)
        if passed is not None:  # explain
            picked = {c.name for c in pick}
            tier_names = [label for label, _ in tiers]
            for label, cands in tiers:
                for c in cands:
                    if c.name in picked or c.name in passed:
                        continue
                    if c.state == "down":
                        passed[c.name] = "down"
                    elif c.state == "drain":
                        passed[c.name] = "drain: out while another site is up"
                    else:
                        passed[c.name] = f"in tier {label!r}, but tier {tier_label!r} answers"
            if prep.geomap is not None:
                for c in prep.cands:
                    passed.setdefault(c.name, f"not in the matched geo lists ({', '.join(tier_names)})")
        return _Decision("answer", tuple(order), scope, pool.answers, tier_label, reasons, passed)

