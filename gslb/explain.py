"""The decision trace of a name for a client: ``gslb explain`` and ``GET /api/v1/explain`` share it.

The trace goes through the DNS code itself: ``gslb.resolver.resolve`` answers a query for the
name with a ``pools`` object that asks the balancer for its full trace and records it. So the
answer, rcode and TTL are exactly what DNS gives the same client, CNAMEs and wildcards included.

The query is resolved as if it came from the client without ECS (so a CNAME chain that leads to
a pool is followed, as it is for a resolver that sends no ECS), and the balancer is told the
client's full address is its ECS source (/32 or /128), so ``scope_prefix`` is the scope a
resolver sending the client's full address would get back.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from gslb.balancer import Balancer, Trace
from gslb.model import Pool, PoolAnswer, StateView, Zone, ZoneSet
from gslb.resolver import resolve
from gslb.wire import CLASS_IN, OPCODE_QUERY, RCODE_NAMES, Query, question, type_number

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _TracingPools:
    """The resolver's ``pools``: answers from ``Balancer.trace`` and keeps the first trace."""

    balancer: Balancer
    view: StateView
    source_prefix: int
    trace: Trace | None = None

    def answer(self, zone: Zone, pool: Pool, rtype: str, client_ip: str,
               source_prefix: int | None) -> PoolAnswer:
        """The balancer's answer for the client, with its trace recorded."""
        trace = self.balancer.trace(zone, pool, rtype, client_ip, self.source_prefix, self.view)
        if self.trace is None:
            self.trace = trace
        return trace.answer


def _query(name: str, qtype: str) -> Query:
    """A plain IN query for (name, qtype) as wire.parse_query would build it.

    Raises ``WireError`` (a ValueError, in wire's words: ``unknown query type 'FOO': ...`` or
    ``invalid name 'a..b': ...``) when it cannot be asked; nothing else.
    """
    number = type_number(qtype.upper())
    qname, section = question(name.strip(), number)
    return Query(OPCODE_QUERY, False, False, qname, number, CLASS_IN, section)


def client_text(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as text; a v4-mapped IPv6 address as ``::ffff:192.0.2.1`` (not ``::ffff:c000:201``)."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def explain(zones: ZoneSet, balancer: Balancer, view: StateView, name: str, qtype: str,
            client_ip: str) -> dict[str, Any]:
    """The SPEC's explain JSON for ``name``/``qtype`` asked by ``client_ip`` (ValueError on bad input)."""
    try:
        # a link-local address may carry a zone ("fe80::1%eth0"): it locates nothing, drop it
        ip = ipaddress.ip_address(client_ip.strip().split("%", 1)[0])
    except ValueError:
        raise ValueError(f"invalid client address {client_ip!r}") from None
    client = client_text(ip)
    query = _query(name, qtype)
    pools = _TracingPools(balancer, view, 32 if ip.version == 4 else 128)
    response = resolve(query, client, zones, pools)
    trace = pools.trace

    location = trace.location if trace is not None else None
    if location is None and balancer.geo is not None:
        location = balancer.geo.locate(client)
    asked = query.qtype_name
    answers = [r.rdata for r in response.answer if r.rtype == asked or asked == "ANY"]
    ttl = None
    for record in (*[r for r in response.answer if r.rtype == asked], *response.answer, *response.authority):
        ttl = record.ttl
        break
    result: dict[str, Any] = {
        "name": query.qname,
        "type": asked,
        "client": {
            "ip": client,
            "location": list(location.latlon) if location is not None and location.latlon else None,
            "country": location.country if location is not None else None,
            "continent": location.continent if location is not None else None,
            "network": location.network if location is not None else None,
        },
        "pool": trace.pool if trace is not None else None,
        "policy": trace.policy if trace is not None else None,
        "matched": (trace.matched or None) if trace is not None else None,
        "subnet": (trace.subnet or None) if trace is not None else None,
        "candidates": [
            {"site": c.site, "state": c.state, "distance_km": c.distance_km, "load": c.load,
             "rtt_ms": c.rtt_ms, "chosen": c.chosen, "reason": c.reason}
            for c in (trace.candidates if trace is not None else ())
        ],
        "answers": answers,
        "chain": [f"{r.name} {r.rtype} {r.rdata}" for r in response.answer if r.rtype == "CNAME"],
        "scope_prefix": trace.answer.scope_prefix if trace is not None else 0,
        "ttl": ttl,
        "rcode": RCODE_NAMES.get(response.rcode, str(response.rcode)),
    }
    return result


def format_text(result: dict[str, Any]) -> str:
    """A readable terminal rendering of an explain result."""
    c = result["client"]
    where = ", ".join(x for x in (c.get("country"), c.get("continent")) if x) or "unknown"
    latlon = c.get("location")
    lines = [f"{result.get('name', '')} {result.get('type', '')} for client {c['ip']}",
             f"  client   {where}" + (f" at {latlon[0]:.2f}, {latlon[1]:.2f}" if latlon else "")
             + (f" (network {c['network']})" if c.get("network") else "")]
    for link in result.get("chain") or ():
        lines.append(f"  chain    {link}")
    if result.get("pool"):
        extra = ""
        if result.get("matched"):
            extra = f", matched {result['matched']}"
        elif result.get("subnet"):
            extra = f", subnet {result['subnet']}"
        lines.append(f"  pool     {result['pool']} (policy {result['policy']}{extra})")
        rows = [("", "site", "state", "km", "load", "rtt ms", "reason")]
        for cand in result["candidates"]:
            rows.append(("*" if cand["chosen"] else " ", cand["site"], cand["state"],
                         "-" if cand["distance_km"] is None else f"{cand['distance_km']:.0f}",
                         f"{cand['load']:g}",
                         "-" if cand["rtt_ms"] is None else f"{cand['rtt_ms']:.1f}",
                         cand["reason"]))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        for r in rows:
            cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]),
                     r[3].rjust(widths[3]), r[4].rjust(widths[4]), r[5].rjust(widths[5]), r[6]]
            lines.append("    " + "  ".join(cells).rstrip())
    else:
        lines.append("  pool     none (static answer)")
    answers = ", ".join(result["answers"]) or "(none)"
    lines.append(f"  answer   {result['rcode']}: {answers}")
    ttl = result.get("ttl")
    lines.append(f"  ttl {ttl if ttl is not None else '-'}, ECS scope /{result['scope_prefix']}")
    return "\n".join(lines)
