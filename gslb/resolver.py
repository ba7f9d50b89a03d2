"""Query -> Response for the served zones: CNAME chains, pool names, ANY, ECS rules (pure).

``resolve`` reads the zones and asks ``pools`` (the balancer) for the addresses of pool names;
it has no sockets, clocks or randomness of its own. Protocol-level errors (FORMERR, NOTIMP,
BADVERS) are decided by ``wire`` before a query gets here.
"""

from __future__ import annotations

import logging
from typing import Protocol

from gslb.authority import Lookup, Outcome, in_zone_addresses, lookup, negative_soa
from gslb.model import PoolAnswer, Pool, Record, Zone, ZoneSet
from gslb.wire import (CLASS_IN, NOERROR, NXDOMAIN, REFUSED, SERVFAIL, TYPE_ANY, TYPE_AXFR, TYPE_DS,
                       TYPE_IXFR, Deps, Query, Response)

logger = logging.getLogger(__name__)

#: CNAME hops followed inside served zones before the answer is returned as it stands
MAX_CHAIN = 8

#: RFC 8482: the one RRset an ANY query gets, the first of these types the name holds
_ANY_ORDER = ("A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA", "PTR", "NS", "SOA")


class Pools(Protocol):
    """Answers pool names (the balancer)."""

    def answer(self, zone: Zone, pool: Pool, rtype: str, client_ip: str,
               source_prefix: int | None) -> PoolAnswer:
        """The addresses of ``pool`` for this client."""


#: names outside every served zone, and other classes than IN (depends on the set of zones only)
REFUSED_RESPONSE = Response(REFUSED, False)


def resolve(query: Query, client_ip: str, zones: ZoneSet, pools: Pools) -> Response:
    """The response to ``query`` from the client at ``client_ip`` (the packet's source)."""
    if query.qclass != CLASS_IN:
        return REFUSED_RESPONSE  # CHAOS, HESIOD, ANY class: not served here
    qtype = query.qtype
    name = query.qname_lower
    zone = zones.find(name)
    if zone is None:
        return REFUSED_RESPONSE  # not ours; never recursion
    if qtype == TYPE_DS and name == zone.origin:
        zone = _parent_side(zones, zone)
    key = zone.key
    if qtype == TYPE_AXFR or qtype == TYPE_IXFR:
        return Response(REFUSED, False, zone=key, deps=(key,))  # zone transfers are not offered
    qtype_name = query.qtype_name
    is_any = qtype == TYPE_ANY
    answer: tuple[Record, ...] = ()  # the CNAMEs followed so far
    seen: set[str] | None = None
    # the zones read so far (the answer cache's dependencies); the statistics count the first
    deps: Deps = (zone.key,)
    for hop in range(MAX_CHAIN + 1):
        found = lookup(zone, name, qtype_name)
        outcome = found.outcome
        if outcome is Outcome.ANSWER:
            extra, holders = _additional(zones, zone, qtype_name, found.records)
            return Response(NOERROR, True, answer + found.records if answer else found.records, (),
                            extra, zone=key, deps=deps + holders if holders else deps)
        if outcome is Outcome.POOL:
            if answer and query.ecs is not None:
                # RFC 7871 7.2.1: the chain's target depends on the client; answer the CNAME
                # alone (scope 0), so the resolver asks for the target with ECS itself and
                # caches each part with its own scope.
                return Response(NOERROR, True, answer, zone=key, deps=deps)
            return _pool_answer(query, client_ip, zone, found, pools, answer, key, deps)
        if outcome is Outcome.CNAME:
            answer += found.records
            target = found.records[0].rdata.lower()
            if seen is None:
                seen = {name}
            if is_any or target in seen or hop == MAX_CHAIN:
                # minimal ANY; loop; too long
                return Response(NOERROR, True, answer, zone=key, deps=deps)
            seen.add(target)
            next_zone = zones.find(target)
            if next_zone is None:
                return Response(NOERROR, True, answer, zone=key, deps=deps)  # leaves our zones
            if qtype == TYPE_DS and target == next_zone.origin:
                next_zone = _parent_side(zones, next_zone)
            if next_zone is not zone:
                deps += (next_zone.key,)
            zone, name = next_zone, target
            continue
        if outcome is Outcome.NODATA:
            if is_any and found.node is not None:
                return _any(zone, found, key, deps)
            return Response(NOERROR, True, answer, found.authority, zone=key, deps=deps)
        if outcome is Outcome.NXDOMAIN:
            # RFC 6604: the RCODE describes the last name of the chain
            return Response(NXDOMAIN, True, answer, found.authority, zone=key, deps=deps)
        # REFERRAL: at the start, a referral (AA=0); after a CNAME, the chain so far followed by
        # the referral for its target (RFC 1034 4.3.2 steps 3a -> 1 -> 3b; AA=1, it belongs to
        # the first name: RFC 1035 4.1.1). A referral does not depend on the client, so it is
        # carried with ECS too (scope 0); only a pool at the end of a chain gets the ECS rule.
        return Response(NOERROR, bool(answer), answer, found.authority, found.additional, zone=key, deps=deps)
    raise AssertionError("unreachable")  # pragma: no cover


def _parent_side(zones: ZoneSet, zone: Zone) -> Zone:
    """The zone that answers DS at ``zone``'s apex: the closest served ancestor (RFC 4035 3.1.4.1), else ``zone``."""
    origin = zone.origin
    if origin == ".":
        return zone
    parent = zones.find(origin[origin.find(".") + 1:] or ".")
    return parent if parent is not None else zone


#: the response to a pool name asked before the first round of health checks: no reply
NOT_READY = Response(NOERROR, False, deps=None, drop="starting")


def _pool_answer(query: Query, client_ip: str, zone: Zone, found: Lookup, pools: Pools,
                 answer: tuple[Record, ...], key: str, deps: Deps) -> Response:
    """A/AAAA of a pool name from the balancer (after the CNAMEs in ``answer``, if any)."""
    ecs = query.ecs
    if ecs is None:
        client, source = client_ip, None
    elif ecs.source_prefix == 0:
        # RFC 7871 7.1.2: source prefix 0 means "do not use my subnet": answer for the
        # resolver's own address, scope 0
        client, source = client_ip, 0
    else:
        client, source = ecs.address, ecs.source_prefix
    pool = zone.pools.get(found.pool or "")
    if pool is None:
        logger.error("zone %s: name %s refers to unknown pool %r", key, found.owner, found.pool)
        return Response(SERVFAIL, False, zone=key, deps=deps)
    rtype = query.qtype_name
    result = pools.answer(zone, pool, rtype, client, source)
    if result.outcome == "starting":
        return NOT_READY
    scope = result.scope_prefix if source else 0
    # the answer depends on the pool's verdicts, and on each site in it staying up (a site that
    # leaves drops only the answers holding it: gslb.balancer); on the packet's source when the
    # client is not given by ECS (the ECS address is part of the query's bytes)
    pool_key = (zone.key, pool.name)
    pool_deps: Deps | None = deps + (pool_key,) + tuple((zone.key, pool.name, site) for site in result.sites) \
        if result.cacheable else None
    per_client = result.per_client and not source
    if result.outcome == "servfail":
        return Response(SERVFAIL, False, zone=key, ecs_scope=scope, deps=pool_deps, per_client=per_client)
    if result.outcome == "nodata" or not result.addresses:
        return Response(NOERROR, True, answer, (negative_soa(zone),), ecs_scope=scope, zone=key,
                        deps=pool_deps, per_client=per_client)
    node = found.node
    ttl = node.ttl if node is not None and node.ttl is not None else result.ttl
    records = pool_records(found.owner, rtype, ttl, result.addresses)
    return Response(NOERROR, True, answer + records if answer else records, ecs_scope=scope, zone=key,
                    deps=pool_deps, per_client=per_client, pool=pool_key, sites=result.sites)


#: the address records of pool answers by (owner, type, TTL, addresses): the balancer gives the
#: same few answers again and again, so their records (and their cached wire form) are reused
_POOL_RECORDS: dict[tuple[str, str, int, tuple[str, ...]], tuple[Record, ...]] = {}
_POOL_RECORDS_MAX = 8192


def pool_records(owner: str, rtype: str, ttl: int, addresses: tuple[str, ...]) -> tuple[Record, ...]:
    """The ``rtype`` records of ``addresses`` at ``owner`` (cached, bounded: cleared when full)."""
    key = (owner, rtype, ttl, addresses)
    records = _POOL_RECORDS.get(key)
    if records is None:
        if len(_POOL_RECORDS) >= _POOL_RECORDS_MAX:
            _POOL_RECORDS.clear()
        records = _POOL_RECORDS[key] = tuple(Record(owner, rtype, ttl, address) for address in addresses)
    return records


def _any(zone: Zone, found: Lookup, key: str, deps: Deps) -> Response:
    """RFC 8482 minimal answer to ANY at an existing name.

    The name's first RRset in ``_ANY_ORDER`` (one RRset, never all of them: ANY is an
    amplification vector and no client may rely on getting everything), or, for a name that
    only has a pool (whose addresses depend on the client and on health), the synthesised
    ``HINFO "RFC8482" ""`` of RFC 8482 section 4.2, as gdnsd does.
    """
    node = found.node
    assert node is not None
    owner = found.owner
    for rtype in _ANY_ORDER:
        records = node.records.get(rtype)
        if records:
            if found.wildcard:
                records = tuple(r.renamed(owner) for r in records)
            return Response(NOERROR, True, records, zone=key, deps=deps)
    if node.pool is not None:
        ttl = node.ttl if node.ttl is not None else zone.ttl
        return Response(NOERROR, True, (Record(owner, "HINFO", ttl, '"RFC8482" ""'),), zone=key, deps=deps)
    return Response(NOERROR, True, (), found.authority, zone=key, deps=deps)


def _additional(zones: ZoneSet, zone: Zone, qtype: str,
                records: tuple[Record, ...]) -> tuple[tuple[Record, ...], tuple[str, ...]]:
    """In-zone addresses of the targets of NS, MX and SRV answers (RFC 1035 3.3.9, 3.3.11; RFC 2782),
    and the keys of the other served zones they were read from."""
    if qtype == "NS":
        targets = [r.rdata for r in records]
    elif qtype == "MX":
        targets = [r.rdata.split()[1] for r in records]
    elif qtype == "SRV":
        targets = [r.rdata.split()[3] for r in records]
    else:
        return (), ()
    extra: list[Record] = []
    holders: list[str] = []
    for target in targets:
        target = target.lower()
        holder = zone if target == zone.origin or target.endswith("." + zone.origin) else zones.find(target)
        if holder is not None:
            extra.extend(in_zone_addresses(holder, target))
            if holder is not zone and holder.key not in holders:
                holders.append(holder.key)
    return tuple(extra), tuple(holders)
