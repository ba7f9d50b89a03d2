"""Interop: a real recursive resolver (Unbound) in front of gslb accepts every answer it gets.

Unbound is started on a free loopback port with a stub zone that points at the gslb process,
the ECS module enabled and allowed towards gslb, so client-dependent answers travel through it.
"""

from __future__ import annotations


import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from unboundd import Unbound

ZONE = """
zone: interop.example
ttl: 300
soa: {minimum: 30}
ns: [ns1.interop.example]
records:
  ns1: {A: 127.0.0.1}
  static: {A: [192.0.2.1, 192.0.2.2]}
  alias: {CNAME: static}
  "*.wild": {A: 192.0.2.9}
  big:
    TXT: [%s]
  www: {pool: web}
sites:
  fra: {location: [50.11, 8.68], addresses: [192.0.2.10]}
  iad: {location: [38.95, -77.45], addresses: [198.51.100.20]}
  sin: {location: [1.35, 103.82], addresses: [203.0.113.30]}
  syd: {location: [-33.87, 151.21], addresses: [203.0.113.40]}
pools:
  web: {policy: closest, sites: [fra, iad, sin, syd], ttl: 30}
""" % ", ".join(f'"{"x" * 200}{i}"' for i in range(12))


@pytest.fixture
def stack(gslb_server, tmp_path):
    server = gslb_server({"interop.yaml": ZONE}, config={"checks": False}, wait_for="interop.example")
    resolver = Unbound(tmp_path / "unbound", server.port)
    yield server, resolver
    resolver.stop()


def _addresses(msg: dns.message.Message) -> set[str]:
    return {r.address for rrset in msg.answer for r in rrset if hasattr(r, "address")}


def test_static_cname_wildcard_and_negative_answers_pass_through_unbound(stack):
    _, unbound = stack
    assert _addresses(unbound.query("static.interop.example")) == {"192.0.2.1", "192.0.2.2"}
    alias = unbound.query("alias.interop.example")
    assert _addresses(alias) == {"192.0.2.1", "192.0.2.2"}
    assert _addresses(unbound.query("a.b.wild.interop.example")) == {"192.0.2.9"}
    nx = unbound.query("nope.interop.example")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    nodata = unbound.query("static.interop.example", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer


def test_oversize_answer_is_truncated_and_unbound_retries_over_tcp(stack):
    server, unbound = stack
    direct = server.query("big.interop.example", "TXT")
    assert direct.flags & dns.flags.TC
    through = unbound.query("big.interop.example", "TXT")
    assert through.rcode() == dns.rcode.NOERROR
    assert sum(len(rrset) for rrset in through.answer) == 12


def test_client_subnet_answers_travel_through_unbound(stack):
    server, unbound = stack
    # Whatever gslb answers a client directly, Unbound must hand the same client the same answer.
    clients = ["81.2.69.160/32", "8.8.8.0/24", "203.0.113.7/32", "1.1.1.0/24", "200.160.0.0/24"]
    seen = set()
    for client in clients:
        direct = _addresses(server.query("www.interop.example", ecs=client))
        via = _addresses(unbound.query("www.interop.example", ecs=client))
        assert via == direct, client
        seen.add(frozenset(direct))
    assert all(len(s) == 1 for s in seen)
