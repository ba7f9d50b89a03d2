"""SPEC "DNS behaviour", item by item, against a real ``gslb serve`` process (dnspython client).

Each test is named after the SPEC sentence it covers.
"""

from __future__ import annotations

import select
import socket
import struct
import time

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import pytest
from harness import Gslb

ZONE = """
zone: gslb.example.com
serial: 42
ttl: 3600
soa:
  rname: hostmaster.gslb.example.com
  minimum: 60
ns: [ns1.gslb.example.com, ns2.gslb.example.com]
records:
  "@":
    MX: ["10 mail.gslb.example.com."]
    TXT: ["v=spf1 -all"]
  ns1: {A: 192.0.2.53, AAAA: "2001:db8::53"}
  ns2: {A: 192.0.2.54}
  mail: {A: 192.0.2.25}
  api:
    ttl: 60
    A: [192.0.2.80, 192.0.2.81]
    AAAA: ["2001:db8::80"]
  alias: {CNAME: chain}
  chain: {CNAME: api}
  docs: {CNAME: www}
  www: {pool: web}
  hashed: {pool: sticky}
  "*.cdn": {A: 192.0.2.99, TXT: ["wild"]}
  host.cdn: {A: 192.0.2.98}
  a.ent: {A: 192.0.2.7}
  "*.ent": {A: 192.0.2.66}
  sub: {NS: [ns.sub.gslb.example.com.]}
  ns.sub: {A: 192.0.2.100}
  kid: {NS: [ns.kid.gslb.example.com.]}
  ns.kid: {A: 192.0.2.101}
  big: {TXT: [%s]}

sites:
  fra: {location: [50.11, 8.68], addresses: [192.0.2.10, "2001:db8::10"]}
  iad: {location: [38.95, -77.45], addresses: [198.51.100.20, "2001:db8::20"]}

pools:
  web:
    policy: geo
    sites: [fra, iad]
    ttl: 30
    geo:
      "10.0.0.0/8": [iad]
      default: [fra]
  sticky:
    policy: hash
    sites: [fra, iad]
""" % ", ".join(f'"{"x" * 50} {i}"' for i in range(40))

ORIGIN = "gslb.example.com."

# a child zone served beside its parent (the parent delegates "kid" to it)
KID = """
zone: kid.gslb.example.com
ns: [ns.kid.gslb.example.com]
records:
  ns: {A: 192.0.2.101}
  www: {A: 192.0.2.102}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole module (the harness's Gslb; a process per test would be slow)."""
    srv = Gslb(tmp_path_factory.mktemp("dns"), {"gslb.example.com.yaml": ZONE, "kid.gslb.example.com.yaml": KID},
               {"checks": False, "tcp": {"idle_timeout": 1, "max_connections": 1024, "max_per_client": 4}})
    srv.start(wait_for=ORIGIN)
    yield srv
    srv.stop()


def udp_raw(srv, data: bytes, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", srv.port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def rrset(reply, name, rdtype, section="answer"):
    return reply.find_rrset(getattr(reply, section), dns.name.from_text(name), dns.rdataclass.IN,
                            dns.rdatatype.from_text(rdtype))


def addresses(reply) -> set[str]:
    return {r.address for rs in reply.answer if rs.rdtype in (1, 28) for r in rs}


# --- RFC 1034/1035 authoritative semantics ---------------------------------------------------

def test_aa_on_answers_from_served_zones(server):
    reply = server.query("api." + ORIGIN, "A")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert {r.address for r in rrset(reply, "api." + ORIGIN, "A")} == {"192.0.2.80", "192.0.2.81"}
    assert rrset(reply, "api." + ORIGIN, "A").ttl == 60
    pool = server.query("www." + ORIGIN, "A")
    assert pool.flags & dns.flags.AA and addresses(pool) == {"192.0.2.10"}


def test_nxdomain_with_soa_in_authority_and_negative_ttl(server):
    reply = server.query("nope." + ORIGIN, "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN and reply.flags & dns.flags.AA and not reply.answer
    soa = rrset(reply, ORIGIN, "SOA", "authority")
    assert soa.ttl == 60 and soa[0].serial == 42  # min(SOA TTL 3600, minimum 60)


def test_nodata_with_soa_in_authority_and_negative_ttl(server):
    reply = server.query("mail." + ORIGIN, "AAAA")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA and not reply.answer
    assert rrset(reply, ORIGIN, "SOA", "authority").ttl == 60


def test_refused_for_names_outside_served_zones(server):
    reply = server.query("www.example.net.", "A")
    assert reply.rcode() == dns.rcode.REFUSED and not reply.answer and not reply.flags & dns.flags.AA


def test_never_recursion_ra_0(server):
    for name in ("api." + ORIGIN, "www.example.net."):
        reply = server.query(name, "A")  # dnspython sets RD
        assert not reply.flags & dns.flags.RA and reply.flags & dns.flags.RD


def test_refused_for_notify(server):
    q = dns.message.make_query(ORIGIN, "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    q.flags |= dns.flags.AA
    reply = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2)
    assert reply.rcode() == dns.rcode.REFUSED and reply.opcode() == dns.opcode.NOTIFY


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.UPDATE])
def test_notimp_for_other_opcodes_than_query(server, opcode):
    q = dns.message.make_query(ORIGIN, "SOA")
    q.set_opcode(opcode)
    reply = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2)
    assert reply.rcode() == dns.rcode.NOTIMP


@pytest.mark.parametrize("data", [
    bytes.fromhex("abcd01000000000000000000"),                         # no question
    bytes.fromhex("abcd0100000100000000000003777777"),                 # question cut short
    dns.message.make_query("api." + ORIGIN, "A").to_wire() + b"junk",  # trailing bytes
])
def test_formerr_for_malformed_queries(server, data):
    reply = udp_raw(server, data)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.rcode() == dns.rcode.FORMERR
    assert message.id == struct.unpack("!H", data[:2])[0]


def test_no_reply_at_all_to_packets_with_qr_set(server):
    q = dns.message.make_query("api." + ORIGIN, "A")
    q.flags |= dns.flags.QR
    assert udp_raw(server, q.to_wire(), timeout=0.5) is None
    assert udp_raw(server, b"\x00\x01", timeout=0.5) is None  # nor to a short header
    assert server.query("api." + ORIGIN, "A").answer  # still serving


def test_question_echoed_with_client_letter_case(server):
    name = "ApI.GsLb.ExAmPlE.cOm."
    reply = server.query(name, "A")
    assert reply.question[0].name.to_text() == name
    assert reply.answer[0].name.to_text() == name  # answer owner follows the question


def test_cname_chains_inside_the_zone_followed(server):
    reply = server.query("alias." + ORIGIN, "A")
    assert [(rs.name.to_text(), dns.rdatatype.to_text(rs.rdtype)) for rs in reply.answer] == [
        ("alias." + ORIGIN, "CNAME"), ("chain." + ORIGIN, "CNAME"), ("api." + ORIGIN, "A")]


def test_wildcard_synthesis_per_rfc4592(server):
    reply = server.query("x.y.cdn." + ORIGIN, "A")
    assert rrset(reply, "x.y.cdn." + ORIGIN, "A")[0].address == "192.0.2.99"
    # an existing name is never matched by the wildcard
    assert addresses(server.query("host.cdn." + ORIGIN, "A")) == {"192.0.2.98"}
    nodata = server.query("host.cdn." + ORIGIN, "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    # the wildcard's other types, NODATA for absent ones
    assert server.query("z.cdn." + ORIGIN, "TXT").answer
    assert not server.query("z.cdn." + ORIGIN, "MX").answer
    # an empty non-terminal exists: NODATA, and a wildcard below it matches only below it
    ent = server.query("ent." + ORIGIN, "A")
    assert ent.rcode() == dns.rcode.NOERROR and not ent.answer
    assert addresses(server.query("q.ent." + ORIGIN, "A")) == {"192.0.2.66"}


def test_referrals_with_glue_for_delegated_subzones(server):
    reply = server.query("www.sub." + ORIGIN, "A")
    assert reply.rcode() == dns.rcode.NOERROR and not reply.flags & dns.flags.AA and not reply.answer
    assert rrset(reply, "sub." + ORIGIN, "NS", "authority")[0].target.to_text() == "ns.sub." + ORIGIN
    assert rrset(reply, "ns.sub." + ORIGIN, "A", "additional")[0].address == "192.0.2.100"


def test_apex_ns_and_in_zone_glue_addresses(server):
    reply = server.query(ORIGIN, "NS")
    assert {r.target.to_text() for r in rrset(reply, ORIGIN, "NS")} == {"ns1." + ORIGIN, "ns2." + ORIGIN}
    assert rrset(reply, "ns1." + ORIGIN, "A", "additional")[0].address == "192.0.2.53"
    assert rrset(reply, "ns1." + ORIGIN, "AAAA", "additional")[0].address == "2001:db8::53"
    assert rrset(reply, "ns2." + ORIGIN, "A", "additional")[0].address == "192.0.2.54"


def test_apex_soa_mx_txt(server):
    soa = server.query(ORIGIN, "SOA")
    assert soa.flags & dns.flags.AA and rrset(soa, ORIGIN, "SOA")[0].serial == 42
    mx = server.query(ORIGIN, "MX")
    assert rrset(mx, "mail." + ORIGIN, "A", "additional")[0].address == "192.0.2.25"


# --- EDNS(0) ---------------------------------------------------------------------------------

def test_edns_opt_echoed_and_payload_1232_advertised(server):
    reply = server.query("api." + ORIGIN, "A", use_edns=0, payload=4096, want_dnssec=True)
    assert reply.edns == 0 and reply.payload == 1232 and reply.ednsflags & dns.flags.DO
    plain = server.query("api." + ORIGIN, "A", use_edns=False)
    assert plain.edns == -1  # no OPT without one in the query


def test_badvers_for_edns_version_above_0(server):
    reply = server.query("api." + ORIGIN, "A", use_edns=1)
    assert reply.rcode() == dns.rcode.BADVERS and reply.edns == 0 and not reply.answer


@pytest.mark.parametrize("use_edns,payload,limit", [(False, None, 512), (0, 4096, 1232), (0, 700, 700)])
def test_udp_reply_never_exceeds_min_of_client_size_and_1232_else_tc(server, use_edns, payload, limit):
    q = dns.message.make_query("big." + ORIGIN, "TXT", use_edns=use_edns, payload=payload or 1232)
    data = udp_raw(server, q.to_wire())
    assert data is not None and len(data) <= limit
    reply = dns.message.from_wire(data)
    assert reply.flags & dns.flags.TC and reply.question


def test_truncated_answer_complete_over_tcp(server):
    reply = server.query("big." + ORIGIN, "TXT", tcp=True)
    assert not reply.flags & dns.flags.TC and len(reply.answer[0]) == 40


# --- TCP (RFC 7766) --------------------------------------------------------------------------

def _frame(q: dns.message.Message) -> bytes:
    wire = q.to_wire()
    return struct.pack("!H", len(wire)) + wire


def _read_frame(sock: socket.socket) -> dns.message.Message:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf
    return dns.message.from_wire(exactly(struct.unpack("!H", exactly(2))[0]))


def test_tcp_length_prefix_several_queries_per_connection_answered_in_order(server):
    names = ["api." + ORIGIN, "nope." + ORIGIN, "www." + ORIGIN, ORIGIN]
    queries = [dns.message.make_query(n, "A") for n in names]
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"".join(_frame(q) for q in queries))  # pipelined
        replies = [_read_frame(sock) for _ in queries]
        assert [r.id for r in replies] == [q.id for q in queries]
        assert [r.rcode() for r in replies] == [0, dns.rcode.NXDOMAIN, 0, 0]
        sock.sendall(_frame(dns.message.make_query("api." + ORIGIN, "AAAA")))  # and later another
        assert _read_frame(sock).answer


def test_tcp_idle_timeout_closes_connection(server):
    # the server file sets idle_timeout: 1 (default 10 s)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        start = time.monotonic()
        assert sock.recv(1) == b""
        assert 0.5 < time.monotonic() - start < 4


def test_tcp_cap_on_open_connections(server):
    # max_per_client: 4 in the server file; the fifth from the same address is closed at once
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=2) for _ in range(5)]
    try:
        # each socket is read until its reply or its close: no need to wait for the accepts first
        closed = 0
        for sock in socks:
            try:
                sock.sendall(_frame(dns.message.make_query("api." + ORIGIN, "A")))
                _read_frame(sock)
            except (ConnectionError, OSError):
                closed += 1
        assert closed == 1
    finally:
        for sock in socks:
            sock.close()


# --- EDNS Client Subnet (RFC 7871) -----------------------------------------------------------

def _ecs(reply) -> dns.edns.ECSOption:
    (option,) = [o for o in reply.options if isinstance(o, dns.edns.ECSOption)]
    return option


def test_ecs_client_located_by_option_address(server):
    inside = server.query("www." + ORIGIN, "A", ecs="10.1.2.0/24")
    assert addresses(inside) == {"198.51.100.20"}  # the 10.0.0.0/8 rule: iad
    option = _ecs(inside)
    assert option.address == "10.1.2.0" and option.srclen == 24 and option.scopelen <= 24
    outside = server.query("www." + ORIGIN, "A", ecs="192.0.2.0/24")
    assert addresses(outside) == {"192.0.2.10"}  # default: fra


def test_ecs_scope_is_the_prefix_the_answer_holds_for(server):
    reply = server.query("hashed." + ORIGIN, "A", ecs="198.51.100.0/24")
    assert _ecs(reply).scopelen == 24  # hash policy: the hashed /24
    v6 = server.query("hashed." + ORIGIN, "AAAA", ecs="2001:db8:1234::/56")
    assert _ecs(v6).scopelen == 48


def test_ecs_scope_0_for_answers_that_do_not_depend_on_the_client(server):
    reply = server.query("api." + ORIGIN, "A", ecs="198.51.100.0/24")
    option = _ecs(reply)
    assert option.srclen == 24 and option.scopelen == 0
    assert _ecs(server.query("nope." + ORIGIN, "A", ecs="198.51.100.0/24")).scopelen == 0


def test_ecs_source_prefix_0_answers_for_the_query_source_scope_0(server):
    reply = server.query("www." + ORIGIN, "A", ecs="10.0.0.0/0")
    assert addresses(reply) == {"192.0.2.10"}  # the packet's source 127.0.0.1: default rule
    assert _ecs(reply).scopelen == 0 and _ecs(reply).srclen == 0


@pytest.mark.parametrize("payload", [
    bytes.fromhex("0003" "18" "00" "c00002"),     # unknown family
    bytes.fromhex("0001" "21" "00" "c0000201"),   # source prefix longer than 32
    bytes.fromhex("0001" "18" "00" "c0000201"),   # more address octets than the prefix needs
    bytes.fromhex("0001" "17" "00" "c00003"),     # bits set beyond the source prefix
    bytes.fromhex("0001" "18" "08" "c00002"),     # non-zero scope in a query
])
def test_ecs_malformed_option_gets_formerr(server, payload):
    q = dns.message.make_query("api." + ORIGIN, "A", use_edns=0,
                               options=[dns.edns.GenericOption(8, payload)])
    reply = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2)
    assert reply.rcode() == dns.rcode.FORMERR


def test_ecs_cname_to_client_dependent_answer_holds_cname_alone(server):
    reply = server.query("docs." + ORIGIN, "A", ecs="10.1.2.0/24")
    assert [rs.rdtype for rs in reply.answer] == [dns.rdatatype.CNAME]
    assert reply.answer[0][0].target.to_text() == "www." + ORIGIN
    assert _ecs(reply).scopelen == 0


def test_without_ecs_the_cname_chain_is_followed(server):
    reply = server.query("docs." + ORIGIN, "A")
    assert [rs.rdtype for rs in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert addresses(reply) == {"192.0.2.10"}


# --- ANY, zone transfers ---------------------------------------------------------------------

def test_any_gets_a_minimal_answer_rfc8482(server):
    reply = server.query(ORIGIN, "ANY")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert len(reply.answer) == 1  # one RRset, never everything
    pool = server.query("www." + ORIGIN, "ANY")
    assert pool.answer[0].rdtype == dns.rdatatype.HINFO and pool.answer[0][0].cpu == b"RFC8482"


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
def test_axfr_and_ixfr_refused(server, rdtype):
    q = dns.message.make_query(ORIGIN, rdtype)
    reply = dns.query.tcp(q, "127.0.0.1", port=server.port, timeout=2)
    assert reply.rcode() == dns.rcode.REFUSED and not reply.answer


# --- audit follow-ups: EDNS on error replies, TSIG, OPT placement, DS at a cut, TCP deadline ---


@pytest.mark.parametrize("opcode,rcode", [(dns.opcode.NOTIFY, dns.rcode.REFUSED),
                                          (dns.opcode.UPDATE, dns.rcode.NOTIMP)])
def test_opt_echoed_on_refused_notify_and_notimp(server, opcode, rcode):
    q = dns.message.make_query(ORIGIN, "SOA", use_edns=0, payload=4096)
    q.set_opcode(opcode)
    reply = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2)
    assert reply.rcode() == rcode and reply.edns == 0 and reply.payload == 1232


def test_opt_echoed_on_formerr_when_readable(server):
    q = dns.message.make_query("api." + ORIGIN, "A", use_edns=0)
    data = bytearray(q.to_wire())
    end = 12 + len(dns.name.from_text("api." + ORIGIN).to_wire()) + 4
    data[4:6] = b"\x00\x02"
    data[end:end] = data[12:end]  # the question twice, then the OPT
    message = dns.message.from_wire(udp_raw(server, bytes(data)))
    assert message.rcode() == dns.rcode.FORMERR and message.edns == 0


@pytest.mark.parametrize("count_at", [6, 8])  # ANCOUNT, NSCOUNT
def test_opt_outside_additional_section_is_formerr(server, count_at):
    data = bytearray(dns.message.make_query("api." + ORIGIN, "A").to_wire())
    data[count_at:count_at + 2] = b"\x00\x01"
    data += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    message = dns.message.from_wire(udp_raw(server, bytes(data)))
    assert message.rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("tcp", [False, True])
def test_tsig_signed_query_gets_badkey(server, tcp):
    keyring = dns.tsigkeyring.from_text({"transfer.example.": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"})
    q = dns.message.make_query("api." + ORIGIN, "A", use_edns=0)
    q.use_tsig(keyring, keyname="transfer.example.")
    send = dns.query.tcp if tcp else dns.query.udp
    # dnspython checks the reply's TSIG and reports the server's BADKEY (RFC 8945 5.2.1)
    with pytest.raises(dns.tsig.PeerBadKey):
        send(q, "127.0.0.1", port=server.port, timeout=2)


def test_ds_at_a_served_child_answered_by_the_parent(server):
    reply = server.query("kid." + ORIGIN, "DS")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA and not reply.answer
    assert [rrset.name.to_text() for rrset in reply.authority] == [ORIGIN]  # the parent's SOA
    soa = server.query("kid." + ORIGIN, "SOA")  # other types: the child
    assert soa.flags & dns.flags.AA and soa.answer[0].name.to_text() == "kid." + ORIGIN


def test_tcp_trickled_query_does_not_hold_the_connection(server):
    # idle_timeout: 1 in the server file; one byte every 0.3 s would take 10+ s for the query;
    # the server closes the connection 1 s after the first byte
    data = _frame(dns.message.make_query("api." + ORIGIN, "A"))
    assert len(data) * 0.3 > 10
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        start = time.monotonic()
        closed = False
        for i in range(len(data)):
            try:
                sock.sendall(data[i:i + 1])
                time.sleep(0.3)
                if select.select([sock], [], [], 0)[0]:
                    closed = sock.recv(1) == b""
                    break
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed and time.monotonic() - start < 4


# --- issue 9 item 5: no UDP reply exceeds the client's limit, TSIG error replies included ------

def _long_question() -> bytes:
    """A 255-octet question name (three 63-octet labels and one of 61) with type A, class IN."""
    name = b"".join(bytes([63]) + b"a" * 63 for _ in range(3)) + bytes([61]) + b"b" * 61 + b"\x00"
    assert len(name) == 255
    return name + struct.pack("!HH", 1, 1)


def _tsig_amplifier(edns_payload: int | None = None) -> bytes:
    """A query whose TSIG key and algorithm names are pointers to the 255-octet question: 301 bytes without EDNS."""
    rdata = b"\xc0\x0c" + b"\x00\x00\x5f\x00\x00\x00\x01\x2c" + b"\x00\x00" + b"\x12\x34" + b"\x00\x00" + b"\x00\x00"
    tsig = b"\xc0\x0c" + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata
    opt = b"" if edns_payload is None else b"\x00" + struct.pack("!HHIH", 41, edns_payload, 0, 0)
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 2 if opt else 1) + _long_question() + opt + tsig


@pytest.mark.parametrize("payload,limit", [(None, 512), (512, 512), (600, 600)])
def test_tsig_error_reply_never_exceeds_the_clients_udp_limit(server, payload, limit):
    data = _tsig_amplifier(payload)
    if payload is None:
        assert len(data) == 301
    raw = udp_raw(server, data)
    assert raw is not None and len(raw) <= limit  # was 807 bytes without TC
    reply = dns.message.from_wire(raw, keyring=False)
    assert reply.rcode() == dns.rcode.NOTAUTH and reply.id == 0x1234
    assert reply.flags & dns.flags.TC and reply.tsig is None  # TSIG left out: the client retries over TCP
    assert len(reply.question) == 1


def test_tsig_error_reply_is_whole_over_tcp(server):
    data = _tsig_amplifier()
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(struct.pack("!H", len(data)) + data)
        size = struct.unpack("!H", _recv_exact(sock, 2))[0]
        raw = _recv_exact(sock, size)
    reply = dns.message.from_wire(raw, keyring=False)
    assert len(raw) == 807 and not reply.flags & dns.flags.TC
    assert reply.rcode() == dns.rcode.NOTAUTH and reply.tsig[0].error == dns.rcode.BADKEY


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


# --- issue 9 item 11: NOTIMP copies RD, not CD ---------------------------------------------------

@pytest.mark.parametrize("opcode,rcode", [(15, dns.rcode.NOTIMP), (dns.opcode.STATUS, dns.rcode.NOTIMP),
                                          (dns.opcode.UPDATE, dns.rcode.NOTIMP), (dns.opcode.NOTIFY, dns.rcode.REFUSED)])
def test_other_opcodes_copy_rd_but_not_cd(server, opcode, rcode):
    question = dns.name.from_text(ORIGIN).to_wire() + struct.pack("!HH", 6, 1)
    flags = (opcode << 11) | 0x0100 | 0x0010  # opcode, RD, CD
    raw = udp_raw(server, struct.pack("!HHHHHH", 0x7777, flags, 1, 0, 0, 0) + question)
    assert raw is not None
    (ident, got), rd, cd = struct.unpack("!HH", raw[:4]), raw[2] & 0x01, raw[3] & 0x10
    assert ident == 0x7777 and got & 0x8000 and (got >> 11) & 0xF == opcode and got & 0xF == rcode
    assert rd and not cd


def test_queries_still_copy_cd(server):
    q = dns.message.make_query("api." + ORIGIN, "A")
    q.flags |= dns.flags.CD
    reply = dns.message.from_wire(udp_raw(server, q.to_wire()))
    assert reply.flags & dns.flags.CD and reply.flags & dns.flags.RD and reply.answer
