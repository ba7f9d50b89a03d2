"""Interop: a real recursive resolver (Unbound) in front of gslb accepts every answer it gets.

Unbound is started on a free loopback port with a stub zone that points at the gslb process,
the ECS module enabled and allowed towards gslb, so client-dependent answers travel through it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from harness import eventually, free_port

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


class Unbound:
    """An unbound process with a stub zone towards gslb; stopped by ``stop()``."""

    def __init__(self, workdir: Path, gslb_port: int, zone: str = "interop.example",
                 modules: str = "subnetcache iterator", extra: str = "") -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "unbound.conf"
        conf.write_text(f"""
server:
  interface: 127.0.0.1
  port: {self.port}
  do-ip6: no
  do-not-query-localhost: no
  username: ""
  chroot: ""
  directory: "{workdir}"
  pidfile: "{workdir}/unbound.pid"
  use-syslog: no
  logfile: "{workdir}/unbound.log"
  verbosity: 1
  access-control: 127.0.0.0/8 allow
  module-config: "{modules}"
  send-client-subnet: 127.0.0.1
  max-client-subnet-ipv4: 32
  max-client-subnet-ipv6: 128
  client-subnet-always-forward: yes
  qname-minimisation: yes
  harden-glue: yes
  minimal-responses: no
{extra}
stub-zone:
  name: "{zone}"
  stub-addr: 127.0.0.1@{gslb_port}
""")
        self.log = workdir / "unbound.log"
        self.proc = subprocess.Popen([shutil.which("unbound") or "unbound", "-d", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            eventually(lambda: dns.query.udp(dns.message.make_query(f"ns1.{zone}", "A"), "127.0.0.1",
                                             port=self.port, timeout=0.3),
                       timeout=10, what="unbound answering", ignoring=(dns.exception.Timeout, OSError))
        except AssertionError:
            self.stop()
            raise RuntimeError("unbound did not start: " + (self.log.read_text() if self.log.exists() else "")) from None

    def query(self, qname: str, rdtype: str = "A", ecs: str | None = None, do: bool = False) -> dns.message.Message:
        options = []
        if ecs:
            addr, _, prefix = ecs.partition("/")
            options.append(dns.edns.ECSOption(addr, int(prefix)))
        q = dns.message.make_query(qname, rdtype, use_edns=0, options=options or None, want_dnssec=do)
        # like a stub resolver: UDP first, TCP when the reply is truncated
        return dns.query.udp_with_fallback(q, "127.0.0.1", port=self.port, timeout=5)[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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
