"""Protocol corners of issue 13 against a real ``gslb serve`` (dnspython client), and the same
corner queries asked of Knot DNS serving the same zone: rcode, flags, EDNS and sections must match.

- RRSIG and NSEC at a CNAME owner are answered at the owner (RFC 4035 2.5, RFC 2181 10.1): in an
  unsigned zone NODATA (SOA), as Knot answers; every other type follows the CNAME;
- a CNAME chain whose target lies below a zone cut carries the referral after the chain (RFC 1034
  4.3.2 steps 3a -> 1 -> 3b): NS in authority, glue in additional, AA=1; with ECS too (scope 0),
  while a chain to a pool name keeps the ECS rule (the CNAME alone);
- CD is cleared in every reply (RFC 4035 3.1.6), nothing else changes, cached replies included.

Knot (the ``knot`` Debian package, tools/install_system_deps.sh) is started on a free loopback port
with its own run directory.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from harness import Gslb, eventually, free_port, stop_process

ORIGIN = "corner.test."

#: the zone both servers serve (gslb adds a pool name, never asked of Knot)
ZONE = """
zone: corner.test
serial: 1
ttl: 300
soa: {rname: hostmaster.corner.test, refresh: 3600, retry: 900, expire: 604800, minimum: 60}
ns: [ns1.corner.test, ns2.corner.test]
records:
  "@": {MX: ["10 mx.corner.test."], TXT: ["corner"]}
  ns1: {A: 192.0.2.51}
  ns2: {A: 192.0.2.52, AAAA: "2001:db8::52"}
  static: {A: 192.0.2.1, AAAA: "2001:db8::1", TXT: ["static"]}
  mx: {A: 192.0.2.25}
  alias: {CNAME: static}
  chain: {CNAME: alias}
  gone: {CNAME: missing}
  out: {CNAME: www.example.net.}
  tosub: {CNAME: host.sub}
  tocut: {CNAME: sub}
  chainsub: {CNAME: tosub}
  "*.wild": {CNAME: static}
  "*.wsub": {CNAME: host.sub}
  sub: {NS: [ns.sub, ns.elsewhere.example.]}
  ns.sub: {A: 192.0.2.53, AAAA: "2001:db8::53"}
  lb: {pool: web}
  tolb: {CNAME: lb}
sites:
  fra: {location: [50.11, 8.68], addresses: [192.0.2.10]}
  iad: {location: [38.95, -77.45], addresses: [198.51.100.20]}
pools:
  web: {policy: closest, sites: [fra, iad], ttl: 30}
"""

KNOT_ZONE = """$ORIGIN corner.test.
$TTL 300
@         SOA   ns1.corner.test. hostmaster.corner.test. 1 3600 900 604800 60
@         NS    ns1
@         NS    ns2
@         MX    10 mx
@         TXT   "corner"
ns1       A     192.0.2.51
ns2       A     192.0.2.52
ns2       AAAA  2001:db8::52
static    A     192.0.2.1
static    AAAA  2001:db8::1
static    TXT   "static"
mx        A     192.0.2.25
alias     CNAME static
chain     CNAME alias
gone      CNAME missing
out       CNAME www.example.net.
tosub     CNAME host.sub
tocut     CNAME sub
chainsub  CNAME tosub
*.wild    CNAME static
*.wsub    CNAME host.sub
sub       NS    ns.sub
sub       NS    ns.elsewhere.example.
ns.sub    A     192.0.2.53
ns.sub    AAAA  2001:db8::53
"""

#: (name relative to the zone, types): the corners, and plain neighbours of them
CORNERS: list[tuple[str, tuple[str, ...]]] = [
    ("alias", ("A", "AAAA", "TXT", "MX", "CNAME", "RRSIG", "NSEC", "ANY", "DS", "KEY", "SIG", "NSEC3")),
    ("chain", ("A", "CNAME", "RRSIG", "NSEC")),
    ("x.wild", ("A", "CNAME", "RRSIG", "NSEC", "TXT")),
    ("tosub", ("A", "AAAA", "MX", "TXT", "CNAME", "RRSIG", "NSEC", "DS", "NS", "SOA")),
    ("tocut", ("A", "NS", "DS", "SOA", "RRSIG")),
    ("chainsub", ("A", "AAAA", "RRSIG")),
    ("y.wsub", ("A", "RRSIG", "NSEC")),
    ("gone", ("A", "RRSIG")),
    ("out", ("A", "RRSIG", "NSEC")),
    ("sub", ("A", "NS", "DS", "RRSIG", "NSEC", "SOA")),
    ("host.sub", ("A", "RRSIG", "DS")),
    ("ns.sub", ("A",)),
    ("static", ("A", "AAAA", "RRSIG", "NSEC", "CNAME")),
    ("nope", ("A", "RRSIG", "NSEC")),
    ("@", ("SOA", "NS", "MX", "RRSIG", "NSEC")),
]

KNOT_CONF = """server:
    rundir: "{run}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{run}/db"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{run}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: corner.test
    file: corner.test.zone
"""


def knotd_path() -> str:
    # Debian puts it in /usr/sbin, which is not on a normal user's PATH
    return shutil.which("knotd") or "/usr/sbin/knotd"


class Knot:
    """A knotd serving ``KNOT_ZONE`` on a free loopback port; stopped by ``stop()``."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "db").mkdir(exist_ok=True)
        (workdir / "corner.test.zone").write_text(KNOT_ZONE)
        conf = workdir / "knot.conf"
        conf.write_text(KNOT_CONF.format(run=workdir, port=self.port))
        self.log = workdir / "knot.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([knotd_path(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        try:
            eventually(lambda: ask(self.port, dns.message.make_query(ORIGIN, "SOA")).answer,
                       timeout=10, what="knotd answering", ignoring=(dns.exception.Timeout, OSError))
        except AssertionError:
            self.stop()
            raise RuntimeError("knotd did not start: " + self.log.read_text()) from None

    def stop(self) -> None:
        stop_process(self.proc, 5)


def ask(port: int, q: dns.message.Message, tcp: bool = False) -> dns.message.Message:
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3)


def make(name: str, rdtype: str, cd: bool = False, edns: bool = True, do: bool = False,
         ecs: str | None = None) -> dns.message.Message:
    qname = ORIGIN if name == "@" else f"{name}.{ORIGIN}" if not name.endswith(".") else name
    options: list[dns.edns.Option] | None = None
    if ecs is not None:
        address, prefix = ecs.split("/")
        options = [dns.edns.ECSOption(address, int(prefix))]
    q = dns.message.make_query(qname, rdtype, use_edns=0 if edns else None, want_dnssec=do, options=options)
    q.flags &= ~dns.flags.RD
    if cd:
        q.flags |= dns.flags.CD
    return q


def shape(reply: dns.message.Message) -> dict:
    """What the two servers must agree on: rcode, flags, EDNS, the answer's RRsets in order, the
    other sections as sets (RRsets with their TTLs and sorted data)."""
    def rrsets(section):
        return [(r.name.to_text().lower(), dns.rdatatype.to_text(r.rdtype), r.ttl,
                 tuple(sorted(rd.to_text().lower() for rd in r))) for r in section]
    return {
        "rcode": dns.rcode.to_text(reply.rcode()),
        "flags": dns.flags.to_text(reply.flags),
        "edns": (reply.edns, reply.payload if reply.edns >= 0 else None, dns.flags.edns_to_text(reply.ednsflags)),
        "answer": rrsets(reply.answer),
        "authority": sorted(rrsets(reply.authority)),
        "additional": sorted(rrsets(reply.additional)),
    }


@pytest.fixture
def server(gslb_server) -> Gslb:
    return gslb_server({"corner.yaml": ZONE}, config={"checks": False}, wait_for=ORIGIN.rstrip("."))


def texts(section) -> list[tuple[str, str, str]]:
    return sorted((r.name.to_text(), dns.rdatatype.to_text(r.rdtype), rd.to_text()) for r in section for rd in r)


SUB_REFERRAL = [("sub.corner.test.", "NS", "ns.elsewhere.example."), ("sub.corner.test.", "NS", "ns.sub.corner.test.")]
SUB_GLUE = [("ns.sub.corner.test.", "A", "192.0.2.53"), ("ns.sub.corner.test.", "AAAA", "2001:db8::53")]


# --- gslb alone ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tcp", [False, True])
def test_rrsig_and_nsec_at_a_cname_owner_are_nodata_at_the_owner(server, tcp):
    for name in ("alias", "chain", "x.wild", "tolb", "tosub"):
        for rdtype in ("RRSIG", "NSEC"):
            reply = ask(server.port, make(name, rdtype), tcp)
            assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA, (name, rdtype)
            assert not reply.answer and not reply.additional, (name, rdtype)
            assert [(r.name.to_text(), r.rdtype, r.ttl) for r in reply.authority] == [(ORIGIN, dns.rdatatype.SOA, 60)]
    # the CNAME type and everything else: the CNAME (and what it leads to)
    reply = ask(server.port, make("chain", "CNAME"), tcp)
    assert texts(reply.answer) == [("chain.corner.test.", "CNAME", "alias.corner.test.")]
    reply = ask(server.port, make("chain", "A"), tcp)
    assert [r.rdtype for r in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.CNAME, dns.rdatatype.A]


@pytest.mark.parametrize("tcp", [False, True])
def test_cname_into_a_zone_cut_carries_the_referral(server, tcp):
    for name, chain in (("tosub", [("tosub.corner.test.", "CNAME", "host.sub.corner.test.")]),
                        ("tocut", [("tocut.corner.test.", "CNAME", "sub.corner.test.")]),
                        ("a.wsub", [("a.wsub.corner.test.", "CNAME", "host.sub.corner.test.")]),
                        ("chainsub", [("chainsub.corner.test.", "CNAME", "tosub.corner.test."),
                                      ("tosub.corner.test.", "CNAME", "host.sub.corner.test.")])):
        for rdtype in ("A", "AAAA", "MX"):
            reply = ask(server.port, make(name, rdtype), tcp)
            assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA, (name, rdtype)
            assert texts(reply.answer) == chain, (name, rdtype)
            assert texts(reply.authority) == SUB_REFERRAL and texts(reply.additional) == SUB_GLUE, (name, rdtype)


def test_referral_after_cname_with_ecs_scope_0_while_a_pool_target_keeps_the_cname_alone(server):
    reply = ask(server.port, make("tosub", "A", ecs="81.2.69.0/24"))
    assert texts(reply.authority) == SUB_REFERRAL and texts(reply.additional) == SUB_GLUE
    (ecs,) = [o for o in reply.options if isinstance(o, dns.edns.ECSOption)]
    assert ecs.scopelen == 0
    reply = ask(server.port, make("tolb", "A", ecs="81.2.69.0/24"))
    assert texts(reply.answer) == [("tolb.corner.test.", "CNAME", "lb.corner.test.")] and not reply.authority
    reply = ask(server.port, make("tolb", "A"))
    assert [r.rdtype for r in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]


def test_cd_is_cleared_and_changes_nothing_else_cached_or_not(server):
    for name, rdtype in (("static", "A"), ("chain", "A"), ("tosub", "A"), ("x.sub", "A"), ("nope", "A"),
                         ("alias", "RRSIG"), ("lb", "A"), ("www.example.net.", "A")):
        for edns, do in ((False, False), (True, False), (True, True)):
            plain = ask(server.port, make(name, rdtype, edns=edns, do=do))
            for attempt in range(2):  # computed, then (where cacheable) from the answer cache
                for tcp in (False, True):
                    reply = ask(server.port, make(name, rdtype, cd=True, edns=edns, do=do), tcp)
                    assert not reply.flags & dns.flags.CD, (name, rdtype, edns, do, attempt, tcp)
                    assert shape(reply) == shape(plain), (name, rdtype, edns, do, attempt, tcp)


# --- gslb and Knot on the same zone --------------------------------------------------------------

@pytest.fixture
def knot(tmp_path):
    peer = Knot(tmp_path / "knot")
    yield peer
    peer.stop()


def corner_queries() -> list[tuple[str, str, bool, bool, bool]]:
    """(name, type, CD, EDNS, DO) for every corner: each type with CD off and on, EDNS on; a few
    without EDNS and with DO."""
    out = []
    for name, types in CORNERS:
        for rdtype in types:
            out.append((name, rdtype, False, True, False))
            out.append((name, rdtype, True, True, False))
        out.append((name, types[0], False, False, False))
        out.append((name, types[0], True, True, True))
    return out


def test_corner_queries_answered_as_knot_answers_them(server, knot):
    queries = corner_queries()
    assert len(queries) > 150
    mismatches = []
    for name, rdtype, cd, edns, do in queries:
        for tcp in (False, True):
            ours = shape(ask(server.port, make(name, rdtype, cd, edns, do), tcp))
            theirs = shape(ask(knot.port, make(name, rdtype, cd, edns, do), tcp))
            if ours != theirs:
                mismatches.append(((name, rdtype, "cd" if cd else "", "edns" if edns else "", "do" if do else "",
                                    "tcp" if tcp else "udp"), ours, theirs))
    assert not mismatches, "\n".join(f"{q}\n  gslb: {o}\n  knot: {t}" for q, o, t in mismatches)
