"""DNSSEC end to end: a signed zone served by a real gslb, validated by Unbound and by delv.

The key is made with ``gslb dnssec keygen``, the trust anchor is what ``gslb dnssec ds`` prints.
Unbound (validator and ECS modules, a stub zone towards gslb) must set AD on every answer: static
and pool names asked for clients on several continents, denials, wildcards, a CNAME to a pool;
a delegation without DS must come back insecure (no AD), never SERVFAIL. ``delv`` checks the same
names with the DS as its only anchor, and the key rollover of the README is run step by step.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from harness import Gslb, eventually
from unboundd import Unbound

ZONE = """
zone: secure.example
ttl: 300
soa: {minimum: 30}
ns: [ns1.secure.example]
dnssec:
  algorithm: ECDSAP256SHA256
  key_file: keys/secure.example.key
  signature_validity: 7d
records:
  ns1: {A: 127.0.0.1}
  static: {A: [192.0.2.1, 192.0.2.2], AAAA: "2001:db8::1"}
  alias: {CNAME: static}
  tolb: {CNAME: www}
  "*.wild": {A: 192.0.2.9}
  www: {pool: web}
  sub: {NS: ns1.secure.example.}
  kid: {NS: ns1.secure.example.}
  big: {TXT: [%s]}
sites:
  fra: {location: [50.11, 8.68], addresses: [192.0.2.10, "2001:db8::10"]}
  iad: {location: [38.95, -77.45], addresses: [198.51.100.20, "2001:db8::20"]}
  sin: {location: [1.35, 103.82], addresses: [203.0.113.30, "2001:db8::30"]}
  syd: {location: [-33.87, 151.21], addresses: [203.0.113.40, "2001:db8::40"]}
pools:
  web: {policy: closest, sites: [fra, iad, sin, syd], ttl: 30}
""" % ", ".join(f'"{"x" * 200}{i}"' for i in range(6))

#: the delegated child, unsigned, served by the same gslb
CHILD = """
zone: sub.secure.example
ns: [ns1.secure.example.]
records:
  host: {A: 192.0.2.77}
"""

#: a signed child served by the same gslb: its DS comes from its keys
KID = """
zone: kid.secure.example
ns: [ns1.secure.example.]
dnssec: {algorithm: ED25519}
records:
  www: {A: 192.0.2.88}
"""

#: clients on several continents (the sample GeoIP database locates them)
CLIENTS = ["81.2.69.160/32", "8.8.8.0/24", "1.1.1.0/24", "200.160.0.0/24", "203.0.113.7/32"]


def gslb_cli(server: Gslb, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gslb", "dnssec", *args, "-c", str(server.config_file)],
                          capture_output=True, text=True, cwd=server.workdir, timeout=60)


def ds_records(server: Gslb) -> list[str]:
    """The DS lines ``gslb dnssec ds`` prints (without comments): ``owner ttl IN DS tag alg type digest``."""
    out = gslb_cli(server, "ds", "secure.example")
    assert out.returncode == 0, out.stderr
    return [line.split(";")[0].strip() for line in out.stdout.splitlines() if not line.startswith(";")]


def anchors(ds_lines: list[str]) -> tuple[str, str]:
    """(unbound trust-anchor lines, delv trust-anchors clause) for these DS records."""
    unbound = "\n".join(f'  trust-anchor: "{line}"' for line in ds_lines)
    entries = []
    for line in ds_lines:
        owner, _, _, _, tag, alg, dtype, digest = line.split()
        entries.append(f'"{owner}" static-ds {tag} {alg} {dtype} "{digest}";')
    return unbound, "trust-anchors {\n" + "\n".join(entries) + "\n};\n"


@pytest.fixture
def signed(tmp_path):
    server = Gslb(tmp_path / "gslb", {"secure.yaml": ZONE, "child.yaml": CHILD, "kid.yaml": KID}, {"checks": False})
    made = gslb_cli(server, "keygen", "secure.example")
    assert made.returncode == 0, made.stderr
    assert gslb_cli(server, "keygen", "kid.secure.example").returncode == 0
    again = gslb_cli(server, "keygen", "secure.example")
    assert again.returncode == 1 and "never overwritten" in again.stderr
    server.start(wait_for="secure.example")
    yield server
    server.stop()


@pytest.fixture
def validating(signed, tmp_path):
    trust, _ = anchors(ds_records(signed))
    resolver = Unbound(tmp_path / "unbound", signed.port, zone="secure.example",
                       modules="subnetcache validator iterator", extra=trust + "\n  val-log-level: 2")
    yield signed, resolver
    resolver.stop()


def _addresses(msg: dns.message.Message) -> set[str]:
    return {r.address for rrset in msg.answer for r in rrset if hasattr(r, "address")}


def _secure(msg: dns.message.Message, log: Path) -> None:
    assert msg.rcode() == dns.rcode.NOERROR, f"{msg}\n{log.read_text()[-3000:]}"
    assert msg.flags & dns.flags.AD, f"not validated:\n{msg}\n{log.read_text()[-3000:]}"


def test_unbound_validates_every_kind_of_answer(validating):
    server, unbound = validating
    for rdtype in ("A", "AAAA"):
        reply = unbound.query("static.secure.example", rdtype, do=True)
        _secure(reply, unbound.log)
        assert _addresses(reply)
    reply = unbound.query("alias.secure.example", do=True)
    _secure(reply, unbound.log)
    assert _addresses(reply) == {"192.0.2.1", "192.0.2.2"}
    reply = unbound.query("a.b.wild.secure.example", do=True)
    _secure(reply, unbound.log)
    assert _addresses(reply) == {"192.0.2.9"}
    # a signed reply too big for UDP: TC=1 as for unsigned ones, Unbound retries over TCP
    assert server.query("big.secure.example", "TXT", want_dnssec=True).flags & dns.flags.TC
    reply = unbound.query("big.secure.example", "TXT", do=True)
    _secure(reply, unbound.log)
    assert sum(len(rrset) for rrset in reply.answer if rrset.rdtype == dns.rdatatype.TXT) == 6
    for name, rdtype in (("nope.secure.example", "A"), ("static.secure.example", "TXT"),
                         ("x.wild.secure.example", "TXT")):
        reply = unbound.query(name, rdtype, do=True)
        _secure(reply, unbound.log)  # compact denial: NOERROR, proven by a signed NSEC
        assert not reply.answer


def test_unbound_validates_pool_answers_for_clients_on_every_continent(validating):
    server, unbound = validating
    seen = set()
    for rdtype in ("A", "AAAA"):
        for client in CLIENTS:
            direct = _addresses(server.query("www.secure.example", rdtype, ecs=client))
            via = unbound.query("www.secure.example", rdtype, ecs=client, do=True)
            _secure(via, unbound.log)
            assert _addresses(via) == direct, client
            seen.add(frozenset(direct))
            chained = unbound.query("tolb.secure.example", rdtype, ecs=client, do=True)
            _secure(chained, unbound.log)
            assert _addresses(chained) == direct, client
    assert len(seen) >= 4  # the answers really differ per client


def test_delegation_without_ds_is_insecure_not_bogus(validating):
    server, unbound = validating
    reply = unbound.query("host.sub.secure.example", do=True)
    assert reply.rcode() == dns.rcode.NOERROR, unbound.log.read_text()[-3000:]
    assert _addresses(reply) == {"192.0.2.77"}
    assert not reply.flags & dns.flags.AD
    ds = unbound.query("sub.secure.example", "DS", do=True)
    _secure(ds, unbound.log)
    assert not ds.answer


def test_signed_child_served_here_is_secure(validating):
    server, unbound = validating
    reply = unbound.query("www.kid.secure.example", do=True)
    _secure(reply, unbound.log)
    assert _addresses(reply) == {"192.0.2.88"}


def delv(server: Gslb, anchor_file: Path, name: str, rdtype: str = "A") -> str:
    out = subprocess.run([shutil.which("delv") or "delv", "@127.0.0.1", "-p", str(server.port), "-a", str(anchor_file),
                          "+root=secure.example", name, rdtype], capture_output=True, text=True, timeout=30)
    return out.stdout + out.stderr


def test_delv_validates_with_the_ds_as_anchor(signed, tmp_path):
    anchor = tmp_path / "anchors.conf"
    anchor.write_text(anchors(ds_records(signed))[1])
    for name, rdtype in (("static.secure.example", "A"), ("static.secure.example", "AAAA"),
                         ("www.secure.example", "A"), ("tolb.secure.example", "A"), ("q.wild.secure.example", "A"),
                         ("nope.secure.example", "A"), ("static.secure.example", "MX"),
                         ("secure.example", "DNSKEY"), ("secure.example", "CDS")):
        text = delv(signed, anchor, name, rdtype)
        assert "fully validated" in text and "resolution failed: no valid" not in text, (name, rdtype, text)


def test_key_rollover_step_by_step(signed, tmp_path):
    def keys() -> set[int]:
        reply = signed.query("secure.example", "DNSKEY", want_dnssec=True, tcp=True)
        return {dns.dnssec.key_id(r) for rrset in reply.answer if rrset.rdtype == dns.rdatatype.DNSKEY for r in rrset}

    def signer() -> set[int]:
        reply = signed.query("static.secure.example", "A", want_dnssec=True)
        return {r.key_tag for rrset in reply.answer if rrset.rdtype == dns.rdatatype.RRSIG for r in rrset}

    def validates(ds_lines: list[str]) -> bool:
        anchor = tmp_path / "anchor.conf"
        anchor.write_text(anchors(ds_lines)[1])
        return "fully validated" in delv(signed, anchor, "static.secure.example")

    old_ds = ds_records(signed)
    assert len(old_ds) == 1
    old_tag = int(old_ds[0].split()[4])
    assert validates(old_ds)

    # 1. a new key is published (not signing): the DNSKEY set holds both, the old DS still works
    step = gslb_cli(signed, "keygen", "secure.example", "--next")
    assert step.returncode == 0, step.stderr
    both = ds_records(signed)
    assert len(both) == 2
    new_tag = int([line for line in both if line not in old_ds][0].split()[4])
    eventually(lambda: keys() == {old_tag, new_tag}, timeout=20, what="the next key published")
    assert signer() == {old_tag}
    assert validates(old_ds)

    # 2. the parent holds both DS; the new key signs from now on
    step = gslb_cli(signed, "rollover", "secure.example")
    assert step.returncode == 0, step.stderr
    eventually(lambda: signer() == {new_tag}, timeout=20, what="the new key signing")
    assert keys() == {old_tag, new_tag}
    assert validates(both)
    new_ds = [line for line in both if line not in old_ds]
    assert validates(new_ds)

    # 3. the old DS is gone from the parent; the old key is removed
    step = gslb_cli(signed, "retire", "secure.example")
    assert step.returncode == 0, step.stderr
    eventually(lambda: keys() == {new_tag}, timeout=20, what="the old key removed")
    assert validates(new_ds)
    assert not validates(old_ds)
    assert ds_records(signed) == new_ds


def test_zone_without_readable_key_is_not_served_until_keygen(tmp_path):
    from harness import get_json

    server = Gslb(tmp_path / "gslb", {"secure.yaml": ZONE, "child.yaml": CHILD}, {"checks": False})
    server.start(wait_for="sub.secure.example")
    try:
        reply = server.query("static.secure.example", want_dnssec=True)
        assert reply.rcode() == dns.rcode.REFUSED  # never served unsigned
        status = {z["file"].rsplit("/", 1)[-1]: z for z in get_json(server, "/api/v1/status")["zones"]}
        assert "cannot read key file" in status["secure.yaml"]["error"]
        assert "gslb dnssec keygen secure.example" in server.log()
        made = gslb_cli(server, "keygen", "secure.example")
        assert made.returncode == 0, made.stderr
        # keygen touched the zone file: the running server loads the zone, signed
        eventually(lambda: any(r.rdtype == dns.rdatatype.RRSIG
                               for r in server.query("static.secure.example", want_dnssec=True).answer),
                   timeout=20, what="the zone served signed after keygen")
    finally:
        server.stop()


def test_worker_processes_sign_with_the_same_key(tmp_path):
    server = Gslb(tmp_path / "gslb", {"secure.yaml": ZONE, "child.yaml": CHILD}, {"checks": False, "workers": 2})
    assert gslb_cli(server, "keygen", "secure.example").returncode == 0
    server.start(wait_for="secure.example")
    try:
        tag = int(ds_records(server)[0].split()[4])
        # each query from a new socket: SO_REUSEPORT spreads them over both processes
        for _ in range(20):
            reply = server.query("www.secure.example", want_dnssec=True, ecs="8.8.8.0/24")
            sigs = [r for rrset in reply.answer if rrset.rdtype == dns.rdatatype.RRSIG for r in rrset]
            assert [s.key_tag for s in sigs] == [tag]
    finally:
        server.stop()


def test_delv_validates_ed25519(tmp_path):
    zone = ZONE.replace("algorithm: ECDSAP256SHA256", "algorithm: ED25519")
    server = Gslb(tmp_path / "gslb", {"secure.yaml": zone, "child.yaml": CHILD}, {"checks": False})
    assert gslb_cli(server, "keygen", "secure.example").returncode == 0
    server.start(wait_for="secure.example")
    try:
        ds = ds_records(server)
        assert ds[0].split()[5] == "15"
        anchor = tmp_path / "anchors.conf"
        anchor.write_text(anchors(ds)[1])
        for name, rdtype in (("www.secure.example", "AAAA"), ("nope.secure.example", "A"),
                             ("q.wild.secure.example", "A")):
            text = delv(server, anchor, name, rdtype)
            assert "fully validated" in text, (name, rdtype, text)
    finally:
        server.stop()
