"""Authoritative lookup of one name and type in one zone (RFC 1034 4.3.2, RFC 4592).

``lookup`` is pure: it walks the immutable ``Zone`` and returns a ``Lookup`` whose ``outcome``
says what kind of answer this is; the resolver turns it into a response (CNAME chains, pools,
ANY) and ``wire`` into bytes. Names are absolute and lower-case, types upper-case mnemonics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from gslb.model import Node, Record, Soa, Zone

logger = logging.getLogger(__name__)

#: ``Zone.memo`` keys of the per-zone constants (the lookups of existing names are keyed by
#: ``(qname, qtype)``, which these cannot collide with)
_NEGATIVE_SOA = ("", "negative SOA")
_NXDOMAIN = ("", "NXDOMAIN")
_EMPTY_NODATA = ("", "NODATA")
#: the types a query at a CNAME owner is answered for at that owner instead of by following the
#: CNAME: the DNSSEC records that RFC 4035 2.5 requires beside a CNAME (RFC 2181 10.1 allows only
#: DNSSEC data there). The CNAME type itself is found as the node's own RRset; ANY gets the CNAME
#: (RFC 8482, resolver). The old SIG/NXT/KEY of RFC 2181 are followed, as Knot does.
AT_CNAME_OWNER = frozenset({"RRSIG", "NSEC"})
#: lookups of existing names memoised per zone, at most (then no more are added: a flood of
#: random types cannot evict the hot entries, and a reload starts a fresh memo)
MEMO_MAX = 16384


class Outcome(Enum):
    """What kind of answer a lookup found."""

    #: records of the asked type at the name (``records``)
    ANSWER = "answer"
    #: a CNAME at the name (``records`` holds it); the resolver follows it
    CNAME = "cname"
    #: the name exists, without data of the asked type (SOA in ``authority``); also RRSIG and
    #: NSEC at a CNAME owner (``AT_CNAME_OWNER``: answered there, the CNAME not followed)
    NODATA = "nodata"
    #: the name does not exist (SOA in ``authority``)
    NXDOMAIN = "nxdomain"
    #: the name is at or below a delegation: NS in ``authority``, glue in ``additional``, AA=0
    REFERRAL = "referral"
    #: A/AAAA of a pool name: the balancer answers (``node``, ``pool``; ``owner`` is the qname)
    POOL = "pool"


@dataclass(frozen=True, slots=True)
class Lookup:
    """The result of one lookup; ``node`` is the node that matched (the wildcard's when synthesised)."""

    outcome: Outcome
    records: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    node: Node | None = None
    pool: str | None = None
    owner: str = ""
    wildcard: bool = False


@lru_cache(maxsize=1024)
def soa_record(origin: str, soa: Soa, ttl: int) -> Record:
    """The zone's SOA as a record with ``ttl``."""
    return Record(origin, "SOA", ttl,
                  f"{soa.mname} {soa.rname} {soa.serial} {soa.refresh} {soa.retry} {soa.expire} {soa.minimum}")


def negative_soa(zone: Zone) -> Record:
    """The SOA for NXDOMAIN/NODATA answers: TTL = min(SOA TTL, minimum) (RFC 2308 section 5)."""
    record = zone.memo.get(_NEGATIVE_SOA)
    if record is None:
        record = zone.memo[_NEGATIVE_SOA] = soa_record(zone.origin, zone.soa, zone.soa.negative_ttl)
    return record


def apex_records(zone: Zone, rtype: str) -> tuple[Record, ...]:
    """The apex SOA or NS RRset (from the apex node, else built from the zone's values)."""
    node = zone.nodes.get(zone.origin)
    if node is not None and node.records.get(rtype):
        return node.records[rtype]
    if rtype == "SOA":
        return (soa_record(zone.origin, zone.soa, zone.soa.ttl),)
    if rtype == "NS":
        return tuple(Record(zone.origin, "NS", zone.ttl, ns) for ns in zone.ns)
    return ()


def in_zone_addresses(zone: Zone, target: str) -> tuple[Record, ...]:
    """Static A and AAAA records of ``target`` when it is a name of ``zone`` (glue, additional data)."""
    node = zone.nodes.get(target)
    if node is None:
        return ()
    records = node.records
    a = records.get("A", ())
    aaaa = records.get("AAAA", ())
    return a + aaaa if aaaa else a


def _negative(zone: Zone, outcome: Outcome, node: Node | None = None) -> Lookup:
    return Lookup(outcome, authority=(negative_soa(zone),), node=node)


def _zone_constant(zone: Zone, key: tuple[str, str], outcome: Outcome) -> Lookup:
    """The zone's one NXDOMAIN (or empty non-terminal NODATA) lookup, built on first use."""
    found = zone.memo.get(key)
    if found is None:
        found = zone.memo[key] = _negative(zone, outcome)
    return found


def _referral(zone: Zone, cut: str) -> Lookup:
    node = zone.nodes[cut]
    ns = node.records.get("NS", ())
    glue: list[Record] = []
    for record in ns:
        target = record.rdata.lower()
        # glue: addresses of name servers inside this zone (below the cut they are only glue)
        if target == zone.origin or target.endswith("." + zone.origin):
            glue.extend(in_zone_addresses(zone, target))
    return Lookup(Outcome.REFERRAL, authority=ns, additional=tuple(glue), node=node, owner=cut)


def _find_cut(zone: Zone, qname: str) -> str | None:
    """The highest delegation point at or above ``qname`` (below the apex), if any."""
    origin = zone.origin
    if qname == origin:
        return None
    relative = qname[: -len(origin) - 1] if origin != "." else qname[:-1]
    name = origin
    cuts = zone.cuts
    for label in reversed(relative.split(".")):
        name = f"{label}.{name}" if name != "." else f"{label}."
        if name in cuts:
            return name
    return None


def _at_node(zone: Zone, node: Node, owner: str, qtype: str, wildcard: bool) -> Lookup:
    """The answer at an existing node (or at the wildcard node that synthesises ``owner``)."""
    if node.pool is not None and (qtype == "A" or qtype == "AAAA"):
        return Lookup(Outcome.POOL, node=node, pool=node.pool, owner=owner, wildcard=wildcard)
    records = node.records.get(qtype)
    if not records and owner == zone.origin and qtype in ("SOA", "NS"):
        records = apex_records(zone, qtype)
    if records:
        if wildcard:
            records = tuple(r.renamed(owner) for r in records)
        return Lookup(Outcome.ANSWER, records, node=node, owner=owner, wildcard=wildcard)
    cname = node.records.get("CNAME")
    if cname and qtype not in AT_CNAME_OWNER:
        if wildcard:
            cname = tuple(r.renamed(owner) for r in cname)
        return Lookup(Outcome.CNAME, cname, node=node, owner=owner, wildcard=wildcard)
    return Lookup(Outcome.NODATA, authority=(negative_soa(zone),), node=node, owner=owner, wildcard=wildcard)


def lookup(zone: Zone, qname: str, qtype: str) -> Lookup:
    """Look ``qname`` (absolute, lower-case, inside ``zone``) up for ``qtype`` (e.g. ``"A"``).

    The lookups of names that exist in the zone are memoised in ``zone.memo`` (they depend on
    the immutable zone only); names that do not exist (NXDOMAIN, wildcard synthesis) are not,
    so random names cannot fill the memo.
    """
    memo = zone.memo
    key = (qname, qtype)
    found: Lookup | None = memo.get(key)
    if found is not None:
        return found
    found = _lookup(zone, qname, qtype)
    if (qname in zone.nodes or qname in zone.names) and len(memo) < MEMO_MAX:
        memo[key] = found
    return found


def _lookup(zone: Zone, qname: str, qtype: str) -> Lookup:
    # 1. A delegation at or above the name: refer (RFC 1034 4.3.2 step 3b). We do not sign, so
    # the parent side has no DS: a DS query for the cut itself is answered here, as NODATA
    # from the parent zone (RFC 4035 3.1.4.1), instead of referring the resolver to the child.
    if zone.cuts:
        cut = _find_cut(zone, qname)
        if cut is not None:
            if qtype == "DS" and cut == qname:
                ds = zone.nodes[cut].records.get("DS")
                if ds:
                    return Lookup(Outcome.ANSWER, ds, node=zone.nodes[cut], owner=cut)
                return _negative(zone, Outcome.NODATA, zone.nodes.get(cut))
            return _referral(zone, cut)

    # 2. The name itself.
    node = zone.nodes.get(qname)
    if node is not None:
        return _at_node(zone, node, qname, qtype, False)
    if qname in zone.names or qname == zone.origin:
        # an empty non-terminal: it exists (no NXDOMAIN), and blocks wildcards (RFC 4592 2.2.2)
        return _zone_constant(zone, _EMPTY_NODATA, Outcome.NODATA)

    # 3. The wildcard at the closest encloser (RFC 4592 section 3.3.1).
    encloser = qname
    names = zone.names
    origin = zone.origin
    while encloser != origin:
        dot = encloser.find(".")
        if dot < 0 or dot == len(encloser) - 1:
            encloser = origin
            break
        encloser = encloser[dot + 1:]
        if encloser in names or encloser in zone.nodes:
            break
    source = f"*.{encloser}" if encloser != "." else "*."
    wild = zone.nodes.get(source)
    if wild is not None:
        return _at_node(zone, wild, qname, qtype, True)
    return _zone_constant(zone, _NXDOMAIN, Outcome.NXDOMAIN)
