"""The query path glue: bytes in, bytes out (ACL, parse, resolve, encode, statistics)."""

from __future__ import annotations

import ipaddress
import logging
from time import perf_counter
from typing import Callable

from gslb.config import Acl
from gslb.model import ZoneSet
from gslb.resolver import Pools, resolve
from gslb.stats import QueryStats
from gslb.wire import RCODE_NAMES, Drop, FormErr, Reject, encode_response, parse_query, servfail

logger = logging.getLogger(__name__)

#: the largest DNS message (TCP)
TCP_MAX = 65535

#: query types counted by name; any other is counted as "other", so that random types sent by
#: a client cannot grow the statistics (and the /metrics label sets) without bound
_COUNTED_TYPES = frozenset({
    "A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA", "NS", "PTR", "SOA", "ANY", "DS", "DNSKEY",
    "HTTPS", "SVCB", "NAPTR", "HINFO", "AXFR", "IXFR", "TLSA", "SSHFP", "CDS", "CDNSKEY", "",
})


def _counted(qtype: str) -> str:
    return qtype if qtype in _COUNTED_TYPES else "other"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AclMatcher:
    """Whether a client address may query: in some ``allow`` network and in no ``deny`` one."""

    __slots__ = ("allow", "deny", "open", "_cache")

    def __init__(self, acl: Acl) -> None:
        self.allow: tuple[_Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in acl.allow)
        self.deny: tuple[_Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in acl.deny)
        # the default ACL lets everybody in: skip the per-query check entirely
        self.open = not self.deny and {str(n) for n in self.allow} >= {"0.0.0.0/0", "::/0"}
        self._cache: dict[str, bool] = {}

    def allowed(self, client_ip: str) -> bool:
        """The verdict for one address (cached per address, bounded)."""
        if self.open:
            return True
        verdict = self._cache.get(client_ip)
        if verdict is None:
            verdict = self._decide(client_ip)
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[client_ip] = verdict
        return verdict

    def _decide(self, client_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in n for n in self.deny if n.version == address.version):
            return False
        return any(address in n for n in self.allow if n.version == address.version)


class QueryHandler:
    """Turns one query packet into the reply packet (or None: no reply)."""

    def __init__(self, get_zones: Callable[[], ZoneSet], pools: Pools, stats: QueryStats, acl: Acl) -> None:
        self._get_zones = get_zones
        self._pools = pools
        self._stats = stats
        self._acl = AclMatcher(acl)

    def set_acl(self, acl: Acl) -> None:
        """Replace the ACL (on reload); the next query uses the new one."""
        self._acl = AclMatcher(acl)

    def handle(self, data: bytes, client_ip: str, tcp: bool) -> bytes | None:
        """The reply to ``data`` from ``client_ip``; None when nothing is to be sent."""
        start = perf_counter()
        stats = self._stats
        if not self._acl.allowed(client_ip):
            stats.dropped["acl"] += 1
            return None
        try:
            ident, query = parse_query(data)
        except Drop as e:
            stats.dropped[e.reason] += 1
            return None
        except FormErr as e:
            logger.debug("FORMERR to %s: %s", client_ip, e.why)
            stats.query("", _counted(e.qtype), "FORMERR", perf_counter() - start)
            return e.reply
        except Reject as e:
            stats.query("", _counted(e.qtype), RCODE_NAMES.get(e.rcode, str(e.rcode)), perf_counter() - start)
            return e.reply
        except Exception:  # a parser bug must not kill the listener
            logger.exception("cannot parse a query from %s", client_ip)
            stats.dropped["error"] += 1
            return None
        try:
            response = resolve(query, client_ip, self._get_zones(), self._pools)
            reply = encode_response(ident, query, response, TCP_MAX if tcp else query.udp_limit)
        except Drop as e:  # e.g. a pool name asked before the first round of health checks
            stats.dropped[e.reason] += 1
            return None
        except Exception:
            logger.exception("SERVFAIL for %s %s from %s", query.qname, query.qtype_name, client_ip)
            stats.query("", _counted(query.qtype_name), "SERVFAIL", perf_counter() - start)
            return servfail(ident, query)
        stats.query(response.zone, _counted(query.qtype_name), RCODE_NAMES.get(response.rcode, str(response.rcode)),
                    perf_counter() - start)
        return reply
