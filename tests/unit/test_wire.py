"""The wire codec: golden bytes, every FORMERR class, BADVERS, EDNS/ECS echo, TC sizes, 0x20."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import pytest

from gslb.model import Record
from gslb.resolver import Response
from gslb.wire import (BADVERS, NOTAUTH, Drop, FormErr, Reject, WireError, encode_response, formerr, parse_query,
                       question, servfail, type_number)

QUERY_HEX = "12340100000100000000000003777777076578616d706c6503636f6d0000010001"
REPLY_HEX = ("12348500000100010000000003777777076578616d706c6503636f6d0000010001"
             "c00c000100010000012c0004c0000201")


def wire_query(name="www.example.com.", rdtype="A", **kw) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()


def ecs_query(payload: bytes, name="www.example.com.") -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0, options=[dns.edns.GenericOption(8, payload)])
    return q.to_wire()


def answer(*records: Record, **kw) -> Response:
    return Response(0, True, tuple(records), **kw)


def roundtrip(data: bytes, response: Response, max_size: int = 65535) -> dns.message.Message:
    return dns.message.from_wire(encode_response(*parse_query(data), response, max_size))


def expect_formerr(data: bytes) -> dns.message.Message:
    with pytest.raises(FormErr) as info:
        parse_query(data)
    reply = dns.message.from_wire(info.value.reply)
    assert reply.rcode() == dns.rcode.FORMERR and reply.flags & dns.flags.QR
    assert reply.id == struct.unpack("!H", data[:2])[0]
    return reply


def test_golden_query_parse():
    ident, q = parse_query(bytes.fromhex(QUERY_HEX))
    assert (ident, q.opcode, q.rd, q.cd) == (0x1234, 0, True, False)
    assert (q.qname, q.qname_lower, q.qtype, q.qtype_name, q.qclass) == (
        "www.example.com.", "www.example.com.", 1, "A", 1)
    assert not q.edns and q.ecs is None and q.udp_limit == 512
    assert q.question == bytes.fromhex(QUERY_HEX)[12:]


def test_golden_reply_bytes():
    ident, q = parse_query(bytes.fromhex(QUERY_HEX))
    reply = encode_response(ident, q, answer(Record("www.example.com.", "A", 300, "192.0.2.1")), 512)
    assert reply.hex() == REPLY_HEX


def test_golden_nxdomain_with_soa_bytes():
    ident, q = parse_query(bytes.fromhex(QUERY_HEX))
    soa = Record("example.com.", "SOA", 60, "ns1.example.com. hostmaster.example.com. 1 3600 600 1209600 60")
    reply = encode_response(ident, q, Response(3, True, (), (soa,)), 512)
    assert reply.hex() == (
        "12348503000100000001000003777777076578616d706c6503636f6d0000010001"
        "c010000600010000003c003d"          # owner compressed to example.com. in the question
        "036e7331076578616d706c6503636f6d00"  # mname, uncompressed inside RDATA
        "0a686f73746d6173746572076578616d706c6503636f6d00"
        "00000001" "00000e10" "00000258" "00127500" "0000003c")


def test_case_of_question_echoed_0x20():
    data = wire_query("wWw.ExAmPlE.cOm.")
    ident, q = parse_query(data)
    assert q.qname == "wWw.ExAmPlE.cOm." and q.qname_lower == "www.example.com."
    reply = roundtrip(data, answer(Record("www.example.com.", "A", 300, "192.0.2.1")))
    assert reply.question[0].name.to_text() == "wWw.ExAmPlE.cOm."
    assert reply.answer[0].name.to_text() == "wWw.ExAmPlE.cOm."  # compressed onto the question


def test_flags_aa_ra_rd_cd():
    q = dns.message.make_query("www.example.com.", "A")
    q.flags |= dns.flags.CD
    q.flags &= ~dns.flags.RD
    reply = roundtrip(q.to_wire(), answer())
    # RFC 4035 3.1.6: an authoritative server clears CD; the answer is the same as without it
    assert reply.flags & dns.flags.AA and not reply.flags & dns.flags.CD
    assert not reply.flags & dns.flags.RA and not reply.flags & dns.flags.RD
    q.flags &= ~dns.flags.CD
    plain = roundtrip(q.to_wire(), answer())
    assert plain.flags == reply.flags and plain.answer == reply.answer
    reply = roundtrip(wire_query(), Response(5, False))
    assert not reply.flags & dns.flags.AA and reply.rcode() == dns.rcode.REFUSED


def test_short_packet_dropped():
    with pytest.raises(Drop):
        parse_query(b"\x12\x34\x01\x00")


def test_response_packet_dropped():
    data = bytearray(wire_query())
    data[2] |= 0x80
    with pytest.raises(Drop):
        parse_query(bytes(data))


def test_formerr_no_question():
    reply = expect_formerr(bytes.fromhex("123401000000000000000000"))
    assert not reply.question


def test_formerr_two_questions():
    data = bytearray(bytes.fromhex(QUERY_HEX))
    data[5] = 2
    data += bytes.fromhex(QUERY_HEX)[12:]
    expect_formerr(bytes(data))


def test_formerr_truncated_question():
    expect_formerr(bytes.fromhex(QUERY_HEX)[:-3])


def test_formerr_pointer_in_question():
    expect_formerr(bytes.fromhex("123401000001000000000000c00c00010001"))


def test_formerr_trailing_bytes():
    reply = expect_formerr(bytes.fromhex(QUERY_HEX) + b"\x00")
    assert reply.question[0].name.to_text() == "www.example.com."  # question echoed


def test_formerr_two_opt_records():
    data = bytearray(wire_query(use_edns=0))
    opt = data[-11:]
    data[11] = 2
    expect_formerr(bytes(data + opt))


def test_formerr_opt_owner_not_root():
    data = bytearray(bytes.fromhex(QUERY_HEX))
    data[11] = 1
    data += bytes.fromhex("0161" "00" "0029" "04d0" "00000000" "0000")
    expect_formerr(bytes(data))


@pytest.mark.parametrize("payload,why", [
    (bytes.fromhex("0003" "18" "00" "c00002"), "family"),          # family 3
    (bytes.fromhex("0001" "21" "00" "c0000201" "00"), "source"),   # /33 for IPv4
    (bytes.fromhex("0002" "81" "00") + bytes(17), "source"),       # /129 for IPv6
    (bytes.fromhex("0001" "18" "00" "c0000201"), "octets"),        # /24 with 4 octets
    (bytes.fromhex("0001" "18" "00" "c000"), "octets"),            # /24 with 2 octets
    (bytes.fromhex("0001" "17" "00" "c00003"), "bits"),            # /23 with the 24th bit set
    (bytes.fromhex("0001" "18" "10" "c00002"), "scope"),           # scope 16 in a query
    (bytes.fromhex("0001" "18"), "shorter"),                       # option too short
])
def test_formerr_malformed_ecs(payload, why):
    with pytest.raises(FormErr) as info:
        parse_query(ecs_query(payload))
    assert why in info.value.why
    reply = dns.message.from_wire(info.value.reply)
    assert reply.rcode() == dns.rcode.FORMERR and reply.edns == 0
    assert reply.question[0].name.to_text() == "www.example.com."


def test_formerr_two_ecs_options():
    opt = dns.edns.GenericOption(8, bytes.fromhex("00011800c00002"))
    data = dns.message.make_query("www.example.com.", "A", use_edns=0, options=[opt, opt]).to_wire()
    with pytest.raises(FormErr):
        parse_query(data)


def test_formerr_option_runs_past_opt():
    data = bytearray(wire_query(use_edns=0))
    data[-2:] = b"\x00\x04"
    data += b"\x00\x08\x00\x09"
    expect_formerr(bytes(data))


@pytest.mark.parametrize("opcode,rcode", [
    (dns.opcode.IQUERY, dns.rcode.NOTIMP),
    (dns.opcode.STATUS, dns.rcode.NOTIMP),
    (dns.opcode.UPDATE, dns.rcode.NOTIMP),
    (dns.opcode.NOTIFY, dns.rcode.REFUSED),
])
def test_other_opcodes(opcode, rcode):
    q = dns.message.make_query("example.com.", "SOA")
    q.set_opcode(opcode)
    with pytest.raises(Reject) as info:
        parse_query(q.to_wire())
    assert not isinstance(info.value, FormErr)
    reply = dns.message.from_wire(info.value.reply)
    assert reply.rcode() == rcode and reply.opcode() == opcode and reply.id == q.id


def test_badvers_for_edns_version_1():
    data = wire_query(use_edns=1)
    with pytest.raises(Reject) as info:
        parse_query(data)
    assert info.value.rcode == BADVERS
    reply = dns.message.from_wire(info.value.reply)
    assert reply.rcode() == dns.rcode.BADVERS and reply.edns == 0 and reply.payload == 1232


def test_edns_parsed_and_echoed():
    data = wire_query(use_edns=0, payload=4096, want_dnssec=True)
    ident, q = parse_query(data)
    assert q.edns and q.payload == 4096 and q.do and q.udp_limit == 1232
    reply = roundtrip(data, answer())
    assert reply.edns == 0 and reply.payload == 1232 and reply.ednsflags & dns.flags.DO
    assert reply.options == ()


def test_small_edns_payload_counts_as_512():
    assert parse_query(wire_query(use_edns=0, payload=100))[1].udp_limit == 512
    assert parse_query(wire_query(use_edns=0, payload=700))[1].udp_limit == 700


def test_ecs_parsed_and_echoed_with_scope():
    q = dns.message.make_query("www.example.com.", "A", use_edns=0,
                               options=[dns.edns.ECSOption("198.51.100.0", 22)])
    _, parsed = parse_query(q.to_wire())
    assert (parsed.ecs.family, parsed.ecs.address, parsed.ecs.source_prefix) == (1, "198.51.100.0", 22)
    reply = roundtrip(q.to_wire(), answer(ecs_scope=20))
    (option,) = reply.options
    assert isinstance(option, dns.edns.ECSOption)
    assert (option.address, option.srclen, option.scopelen) == ("198.51.100.0", 22, 20)


def test_ecs_ipv6_and_zero_prefix():
    q = dns.message.make_query("www.example.com.", "A", use_edns=0,
                               options=[dns.edns.ECSOption("2001:db8:1::", 48)])
    assert parse_query(q.to_wire())[1].ecs.address == "2001:db8:1::"
    _, zero = parse_query(ecs_query(bytes.fromhex("00010000")))
    assert zero.ecs.source_prefix == 0 and zero.ecs.address == "0.0.0.0"
    reply = roundtrip(ecs_query(bytes.fromhex("00010000")), answer(ecs_scope=0))
    assert reply.options[0].srclen == 0 and reply.options[0].scopelen == 0


def test_unknown_options_ignored():
    data = dns.message.make_query("www.example.com.", "A", use_edns=0,
                                  options=[dns.edns.GenericOption(10, bytes(8))]).to_wire()
    assert roundtrip(data, answer()).options == ()


def _big_answer(count: int = 40) -> Response:
    return answer(*(Record("www.example.com.", "TXT", 300, f'"{"x" * 40} {i}"') for i in range(count)))


@pytest.mark.parametrize("use_edns,payload,limit", [
    (False, 0, 512), (0, 4096, 1232), (0, 1232, 1232), (0, 800, 800), (0, 100, 512),
])
def test_truncation_sizes(use_edns, payload, limit):
    kw = {"use_edns": use_edns, "payload": payload} if use_edns is not False else {}
    data = wire_query("www.example.com.", "TXT", **kw)
    ident, q = parse_query(data)
    assert q.udp_limit == limit
    out = encode_response(ident, q, _big_answer(), q.udp_limit)
    assert len(out) <= limit
    reply = dns.message.from_wire(out)
    assert reply.flags & dns.flags.TC and not reply.answer
    assert reply.question[0].name.to_text() == "www.example.com."
    assert (reply.edns == 0) == (use_edns is not False)


def test_fits_within_limit_without_tc():
    data = wire_query("www.example.com.", "TXT", use_edns=0, payload=4096)
    ident, q = parse_query(data)
    out = encode_response(ident, q, _big_answer(20), q.udp_limit)
    assert len(out) <= 1232
    reply = dns.message.from_wire(out)
    assert not reply.flags & dns.flags.TC and len(reply.answer[0]) == 20


def test_tcp_size_fits_everything():
    ident, q = parse_query(wire_query("www.example.com.", "TXT"))
    reply = dns.message.from_wire(encode_response(ident, q, _big_answer(200), 65535))
    assert len(reply.answer[0]) == 200


def test_additional_dropped_without_tc_when_not_referral():
    ident, q = parse_query(wire_query("example.com.", "NS"))
    ns = Record("example.com.", "NS", 300, "ns1.example.com.")
    glue = tuple(Record("ns1.example.com.", "AAAA", 300, f"2001:db8::{i}") for i in range(40))
    reply = dns.message.from_wire(encode_response(ident, q, Response(0, True, (ns,), (), glue), 512))
    assert not reply.flags & dns.flags.TC and reply.answer
    assert 0 < len(reply.additional[0]) < 40


def test_referral_glue_that_does_not_fit_truncates():
    ident, q = parse_query(wire_query("a.sub.example.com.", "A"))
    ns = tuple(Record("sub.example.com.", "NS", 300, f"ns{i}.sub.example.com.") for i in range(4))
    glue = tuple(Record(f"ns{i}.sub.example.com.", "AAAA", 300, f"2001:db8::{j}")
                 for i in range(4) for j in range(10))
    reply = dns.message.from_wire(encode_response(ident, q, Response(0, False, (), ns, glue), 512))
    assert reply.flags & dns.flags.TC


def test_referral_after_cname_glue_that_does_not_fit_truncates():
    # issue 13: the referral a CNAME chain ends in needs its glue as much as a plain referral
    ident, q = parse_query(wire_query("alias.example.com.", "A"))
    cname = Record("alias.example.com.", "CNAME", 300, "a.sub.example.com.")
    ns = tuple(Record("sub.example.com.", "NS", 300, f"ns{i}.sub.example.com.") for i in range(4))
    glue = tuple(Record(f"ns{i}.sub.example.com.", "AAAA", 300, f"2001:db8::{j}")
                 for i in range(4) for j in range(10))
    reply = dns.message.from_wire(encode_response(ident, q, Response(0, True, (cname,), ns, glue), 512))
    assert reply.flags & dns.flags.TC and not reply.answer
    reply = dns.message.from_wire(encode_response(ident, q, Response(0, True, (cname,), ns, glue), 65535))
    assert not reply.flags & dns.flags.TC and reply.flags & dns.flags.AA
    assert len(reply.answer) == 1 and len(reply.authority[0]) == 4 and sum(len(r) for r in reply.additional) == 40


@pytest.mark.parametrize("rtype,rdata,text", [
    ("A", "192.0.2.1", "192.0.2.1"),
    ("AAAA", "2001:db8::1", "2001:db8::1"),
    ("CNAME", "www.example.net.", "www.example.net."),
    ("NS", "ns1.example.net.", "ns1.example.net."),
    ("PTR", "host.example.net.", "host.example.net."),
    ("MX", "10 mail.example.com.", "10 mail.example.com."),
    ("SRV", "0 5 5060 sip.example.com.", "0 5 5060 sip.example.com."),
    ("TXT", '"v=spf1 -all"', '"v=spf1 -all"'),
    ("TXT", '"a b" "c\\"d"', '"a b" "c\\"d"'),
    ("CAA", '0 issue "letsencrypt.org"', '0 issue "letsencrypt.org"'),
    ("SOA", "ns1.example.com. h.example.com. 7 3600 600 1209600 60",
     "ns1.example.com. h.example.com. 7 3600 600 1209600 60"),
    ("HINFO", '"RFC8482" ""', '"RFC8482" ""'),
])
def test_rdata_encoding(rtype, rdata, text):
    reply = roundtrip(wire_query("x.example.com.", rtype), answer(Record("x.example.com.", rtype, 60, rdata)))
    rrset = reply.answer[0]
    assert rrset.rdtype == dns.rdatatype.from_text(rtype) and rrset.ttl == 60
    assert rrset[0].to_text() == text


def test_long_txt_split_into_255_octet_strings():
    reply = roundtrip(wire_query("x.example.com.", "TXT"),
                      answer(Record("x.example.com.", "TXT", 60, '"' + "a" * 300 + '"')))
    assert [len(s) for s in reply.answer[0][0].strings] == [255, 45]


def test_owner_names_compressed():
    ident, q = parse_query(wire_query("www.example.com.", "A"))
    records = tuple(Record(f"h{i}.example.com.", "A", 60, "192.0.2.1") for i in range(3))
    out = encode_response(ident, q, answer(*records), 65535)
    assert out.count(b"example") == 1  # every later owner points back into the question


def test_odd_labels_escaped_and_echoed():
    data = wire_query(dns.name.Name([b"a.b", b"c d", b"example", b"com", b""]))
    ident, q = parse_query(data)
    assert q.qname == "a\\.b.c\\032d.example.com."
    assert roundtrip(data, Response(3, True)).question[0].name == dns.name.Name(
        [b"a.b", b"c d", b"example", b"com", b""])


def test_servfail_reply():
    ident, q = parse_query(wire_query(use_edns=0))
    reply = dns.message.from_wire(servfail(ident, q))
    assert reply.rcode() == dns.rcode.SERVFAIL and reply.edns == 0 and reply.question


def test_repeated_query_bytes_parse_with_their_own_id():
    first = dns.message.make_query("wWw.example.com.", "A", use_edns=0, options=[dns.edns.ECSOption("192.0.2.0", 24)])
    second = first.to_wire()
    second = b"\xbe\xef" + first.to_wire()[2:]
    (id_a, a), (id_b, b) = parse_query(first.to_wire()), parse_query(second)
    assert a is b and (id_a, id_b) == (first.id, 0xBEEF)  # one shared Query, the ID beside it
    assert (b.qname, b.qtype, b.ecs.address, b.payload) == ("wWw.example.com.", 1, "192.0.2.0", 1232)
    reply = dns.message.from_wire(encode_response(id_b, b, answer(), 512))
    assert reply.id == 0xBEEF
    with pytest.raises(AttributeError):
        b.qname = "changed."  # shared, so immutable


def test_errors_are_not_cached_across_ids():
    for ident in (b"\x00\x01", b"\x00\x02"):
        with pytest.raises(FormErr) as info:
            parse_query(ident + bytes.fromhex("01000000000000000000"))
        assert info.value.reply[:2] == ident


@pytest.mark.parametrize("opcode,rcode", [
    (dns.opcode.IQUERY, dns.rcode.NOTIMP),
    (dns.opcode.UPDATE, dns.rcode.NOTIMP),
    (dns.opcode.NOTIFY, dns.rcode.REFUSED),
])
def test_other_opcodes_echo_opt(opcode, rcode):
    q = dns.message.make_query("example.com.", "SOA", use_edns=0, want_dnssec=True)
    q.set_opcode(opcode)
    with pytest.raises(Reject) as info:
        parse_query(q.to_wire())
    reply = dns.message.from_wire(info.value.reply)
    assert reply.rcode() == rcode and reply.opcode() == opcode
    assert reply.edns == 0 and reply.payload == 1232 and reply.ednsflags & dns.flags.DO  # RFC 6891 7


def test_formerr_keeps_readable_opt():
    q = dns.message.make_query("www.example.com.", "A", use_edns=0)
    data = bytearray(q.to_wire())
    question = bytes(data[12:12 + 21])
    data[4:6] = b"\x00\x02"  # two questions, the OPT after them
    data[12 + 21:12 + 21] = question
    reply = expect_formerr(bytes(data))
    assert reply.edns == 0 and reply.payload == 1232
    data = bytearray(q.to_wire())
    data[4:6] = b"\x00\x00"  # no question, an OPT record
    reply = expect_formerr(bytes(data[:12]) + bytes(data[12 + 21:]))
    assert reply.edns == 0 and not reply.question
    reply = expect_formerr(q.to_wire() + b"\x00")  # trailing byte after the OPT
    assert reply.edns == 0


def test_badvers_keeps_opt():
    with pytest.raises(Reject) as info:
        parse_query(wire_query(use_edns=1))
    reply = dns.message.from_wire(info.value.reply)
    assert reply.rcode() == BADVERS and reply.edns == 0


@pytest.mark.parametrize("section", [6, 8])  # ANCOUNT, NSCOUNT
def test_formerr_opt_outside_additional_section(section):
    data = bytearray(wire_query())
    data[section:section + 2] = b"\x00\x01"
    data += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    assert expect_formerr(bytes(data)).edns == -1


KEYRING = dns.tsigkeyring.from_text({"gslb-key.example.": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"})


@pytest.mark.parametrize("use_edns", [False, 0])
def test_tsig_signed_query_gets_notauth_badkey(use_edns):
    q = dns.message.make_query("WwW.example.com.", "A", use_edns=use_edns)
    q.use_tsig(KEYRING, keyname="gslb-key.example.", algorithm="hmac-sha256")
    with pytest.raises(Reject) as info:
        parse_query(q.to_wire())
    assert info.value.rcode == NOTAUTH and info.value.qtype == "A"
    # dnspython understands the reply: the server does not know the key (RFC 8945 5.2.1)
    with pytest.raises(dns.tsig.PeerBadKey):
        dns.message.from_wire(info.value.reply, keyring=KEYRING, request_mac=q.mac)
    reply = dns.message.from_wire(info.value.reply, keyring=False)
    assert reply.id == q.id and reply.rcode() == dns.rcode.NOTAUTH and reply.flags & dns.flags.QR
    assert reply.question[0].name.to_text() == "WwW.example.com."
    assert reply.edns == (-1 if use_edns is False else 0)
    sent, got = q.tsig[0], reply.tsig[0]
    assert reply.keyname.to_text() == "gslb-key.example." and got.algorithm == sent.algorithm
    assert (got.time_signed, got.fudge, got.original_id) == (sent.time_signed, sent.fudge, sent.original_id)
    assert got.error == dns.rcode.BADKEY and got.mac == b"" and got.other == b""
    assert info.value.reply.endswith(b"\x00\x11\x00\x00")  # TSIG is the last record


def test_tsig_not_last_is_formerr():
    q = dns.message.make_query("www.example.com.", "A")
    q.use_tsig(KEYRING, keyname="gslb-key.example.")
    data = bytearray(q.to_wire())
    data[10:12] = struct.pack("!H", 2)
    data += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)  # an OPT after the TSIG
    expect_formerr(bytes(data))


def test_tsig_truncated_rdata_is_formerr():
    q = dns.message.make_query("www.example.com.", "A")
    q.use_tsig(KEYRING, keyname="gslb-key.example.")
    data = bytearray(q.to_wire())
    # cut the TSIG's RDATA short by 4 octets, RDLENGTH adjusted: other-len no longer ends it
    rdlen_at = len(data) - len(q.tsig[0].to_wire()) - 2
    rdlen = struct.unpack_from("!H", data, rdlen_at)[0]
    struct.pack_into("!H", data, rdlen_at, rdlen - 4)
    expect_formerr(bytes(data[:-4]))


def test_cname_chain_owners_keep_zone_case_under_0x20():
    data = wire_query("C1.T.TeSt.")
    chain = answer(Record("c1.t.test.", "CNAME", 60, "c2.t.test."), Record("c2.t.test.", "CNAME", 60, "c3.t.test."),
                   Record("c3.t.test.", "A", 60, "192.0.2.1"))
    reply = roundtrip(data, chain)
    assert [rr.name.to_text() for rr in reply.answer] == ["C1.T.TeSt.", "c2.t.test.", "c3.t.test."]
    soa = Record("t.test.", "SOA", 60, "ns1.t.test. h.t.test. 1 2 3 4 5")
    reply = roundtrip(wire_query("nope.T.test."), Response(3, True, (), (soa,)))
    assert reply.authority[0].name.to_text() == "t.test."  # the client wrote T: not compressed onto it
    wire = encode_response(*parse_query(wire_query("nope.t.TEST.")), Response(3, True, (), (soa,)), 512)
    assert dns.message.from_wire(wire).authority[0].name.to_text() == "t.test."
    # a suffix the client wrote in lower case is still a compression target
    wire = encode_response(*parse_query(wire_query("NOPE.t.test.")), Response(3, True, (), (soa,)), 512)
    assert wire[12 + 17:12 + 17 + 2] == struct.pack("!H", 0xC000 | (12 + 5))


def test_the_parsed_query_cache_is_bounded_in_bytes():
    """Issue 9 item 6: distinct queries with a big EDNS option are parsed but never kept, so the
    cache holds at most _PARSED_MAX keys of at most _PARSED_KEY bytes."""
    import gslb.wire as wire

    wire._PARSED.clear()
    for i in range(50):
        q = dns.message.make_query(f"n{i}.example.com.", "A", use_edns=0,
                                   options=[dns.edns.GenericOption(12, b"\0" * 1000)])
        assert parse_query(q.to_wire())[1].qname == f"n{i}.example.com."
    assert wire._PARSED == {}
    small = dns.message.make_query("www.example.com.", "A").to_wire()
    parse_query(small)
    assert list(wire._PARSED) == [small[2:]]
    for i in range(wire._PARSED_MAX + 10):
        parse_query(dns.message.make_query(f"a{i}.example.com.", "A").to_wire())
    assert len(wire._PARSED) <= wire._PARSED_MAX
    assert sum(len(k) for k in wire._PARSED) <= wire._PARSED_MAX * wire._PARSED_KEY
    wire._PARSED.clear()


# --- issue 9: error replies fitted to the client's limit; CD only for QUERY; COOKIE option ------

def long_name(size: int = 255) -> bytes:
    """A wire name of exactly ``size`` octets (63-octet labels, then the rest)."""
    out = b""
    left = size - 1
    while left > 0:
        label = min(63, left - 1)
        out += bytes([label]) + b"a" * label
        left -= label + 1
    return out + b"\x00"


def tsig_amplifier(edns_payload: int | None = None) -> bytes:
    """A 301-byte query (without EDNS) whose TSIG key and algorithm names point at a 255-octet question."""
    question = long_name() + struct.pack("!HH", 1, 1)
    rdata = b"\xc0\x0c" + b"\x00\x00\x5f\x00\x00\x00\x01\x2c" + b"\x00\x00" + b"\xab\xcd" + b"\x00\x00" + b"\x00\x00"
    tsig = b"\xc0\x0c" + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata
    opt = b"" if edns_payload is None else b"\x00" + struct.pack("!HHIH", 41, edns_payload, 0, 0)
    return struct.pack("!HHHHHH", 0xABCD, 0x0100, 1, 0, 0, 2 if opt else 1) + question + opt + tsig


def test_tsig_amplifier_is_301_bytes_and_its_full_reply_807():
    data = tsig_amplifier()
    assert len(data) == 301 and len(long_name()) == 255
    with pytest.raises(Reject) as info:
        parse_query(data)
    assert info.value.rcode == NOTAUTH and len(info.value.reply) == 807  # over TCP: all of it


@pytest.mark.parametrize("payload,limit", [(None, 512), (512, 512), (700, 700), (4096, 1232)])
def test_error_replies_never_exceed_the_clients_udp_limit(payload, limit):
    with pytest.raises(Reject) as info:
        parse_query(tsig_amplifier(payload))
    error = info.value
    assert error.udp_limit == limit
    data = error.build(error.udp_limit)
    assert len(data) <= limit
    reply = dns.message.from_wire(data, keyring=False)
    assert reply.rcode() == dns.rcode.NOTAUTH and reply.id == 0xABCD
    if len(error.reply) > limit:  # did not fit: TC, the TSIG left out, the question kept
        assert reply.flags & dns.flags.TC and reply.tsig is None and len(reply.question) == 1
    else:
        assert not reply.flags & dns.flags.TC and reply.tsig is not None


def test_a_reply_without_room_for_the_question_keeps_the_header():
    with pytest.raises(Reject) as info:
        parse_query(tsig_amplifier(1232))
    assert len(info.value.build(200)) == 12 + 11  # header and OPT; the 259-octet question dropped
    assert len(info.value.build(20)) == 12
    assert info.value.build(20)[2] & 0x02  # TC


@pytest.mark.parametrize("opcode,rcode", [(dns.opcode.STATUS, dns.rcode.NOTIMP), (dns.opcode.UPDATE, dns.rcode.NOTIMP),
                                          (15, dns.rcode.NOTIMP), (dns.opcode.NOTIFY, dns.rcode.REFUSED)])
def test_other_opcodes_copy_rd_but_not_cd(opcode, rcode):
    q = dns.message.make_query("example.com.", "SOA")
    data = bytearray(q.to_wire())
    data[2] = (data[2] & 0x87) | (opcode << 3) | 0x01  # RD
    data[3] |= 0x10  # CD
    with pytest.raises(Reject) as info:
        parse_query(bytes(data))
    reply = info.value.reply
    assert reply[3] & 0x0F == rcode and (reply[2] >> 3) & 0x0F == opcode
    assert reply[2] & 0x01 and not reply[3] & 0x10


def test_query_error_replies_clear_cd():
    q = dns.message.make_query("www.example.com.", "A", use_edns=1)
    q.flags |= dns.flags.CD
    with pytest.raises(Reject) as info:
        parse_query(q.to_wire())
    # BADVERS to a QUERY: RD kept, CD cleared (RFC 4035 3.1.6; Knot does the same)
    assert info.value.reply[2] & 0x01 and not info.value.reply[3] & 0x10
    ident, query = parse_query(wire_query(use_edns=0, flags=dns.flags.RD | dns.flags.CD))
    assert query.cd and query.rd
    assert servfail(ident, query)[2] & 0x01 and not servfail(ident, query)[3] & 0x10
    assert not formerr(ident, query)[3] & 0x10


def cookie_query(data: bytes, *more: bytes, name="www.example.com.", qdcount=1) -> bytes:
    options = [dns.edns.GenericOption(10, data)] + [dns.edns.GenericOption(10, m) for m in more]
    q = dns.message.make_query(name, "A", use_edns=0, options=options)
    wire = bytearray(q.to_wire())
    if qdcount == 0:
        end = 12 + len(dns.name.from_text(name).to_wire()) + 4
        del wire[12:end]
        wire[4:6] = b"\x00\x00"
    return bytes(wire)


def test_the_first_cookie_option_is_read_as_sent_later_ones_ignored():
    _, q = parse_query(cookie_query(bytes(range(8)), b"\x01" * 3))
    assert q.cookie == bytes(range(8))
    _, q = parse_query(cookie_query(b"\x07" * 5))  # any length: gslb.cookies judges it
    assert q.cookie == b"\x07" * 5
    assert parse_query(wire_query(use_edns=0))[1].cookie is None


def test_the_reply_cookie_goes_into_the_opt_record():
    ident, q = parse_query(cookie_query(bytes(8)))
    cookie = b"\x00\x0a\x00\x18" + bytes(range(24))
    reply = dns.message.from_wire(encode_response(ident, q, answer(), 1232, cookie))
    assert [(o.otype, o.to_wire()) for o in reply.options] == [(10, bytes(range(24)))]


def test_a_query_with_no_question_and_a_cookie_is_a_ping():
    with pytest.raises(FormErr) as info:
        parse_query(cookie_query(bytes(8), qdcount=0))
    assert info.value.ping and info.value.cookie == bytes(8)
    reply = dns.message.from_wire(info.value.reply)  # cookies off: a FORMERR as before
    assert reply.rcode() == dns.rcode.FORMERR and not reply.question
    pinged = dns.message.from_wire(info.value.build(512, b"\x00\x0a\x00\x08" + bytes(8), 0))
    assert pinged.rcode() == dns.rcode.NOERROR and pinged.options[0].otype == 10
    with pytest.raises(FormErr) as info:
        parse_query(wire_query()[:4] + b"\x00\x00" + wire_query()[6:12])  # no question, no cookie
    assert not info.value.ping


def test_a_truncated_answer_fits_even_a_limit_below_its_question():
    name = ".".join(["a" * 63] * 3) + "." + "b" * 61 + "."  # 255 octets
    ident, q = parse_query(wire_query(name, use_edns=0))
    big = Record(name, "TXT", 60, '"%s" "%s"' % ("x" * 200, "y" * 200))
    cookie = b"\x00\x0a\x00\x18" + bytes(24)
    assert len(encode_response(ident, q, answer(big), 512, cookie)) <= 512  # question and OPT kept
    reply = encode_response(ident, q, answer(big), 200, cookie)  # e.g. max_nocookie_udp: 200
    assert len(reply) <= 200 and reply[2] & 0x02  # TC, the 259-octet question left out
    message = dns.message.from_wire(reply)
    assert not message.question and message.options[0].otype == 10
    assert len(encode_response(ident, q, answer(big), 20, cookie)) == 12


# -- WireError: the one error for malformed input, in words

def test_formerr_is_a_wire_error_with_words():
    data = bytes.fromhex(QUERY_HEX)[:20]  # the question cut short
    reply = expect_formerr(data)
    assert reply.rcode() == dns.rcode.FORMERR
    with pytest.raises(WireError, match="^FORMERR: label runs past the end$"):
        parse_query(data)


@pytest.mark.parametrize("name,number", [("A", 1), ("AAAA", 28), ("NSEC3PARAM", 51), ("TYPE0", 0),
                                         ("TYPE65535", 65535), ("TYPE00001", 1), ("SOA", 6)])
def test_type_number(name, number):
    assert type_number(name) == number


@pytest.mark.parametrize("name", ["BOGUS", "TYPE65536", "TYPE99999", "TYPE-1", "TYPEx", "TYPE", "", "a",
                                  "forward", "reverse", "__CLASS__", "A A", "TYPE\u0661", "\u00c9", "X" * 1000])
def test_unknown_types_are_a_wire_error_never_dnslibs(name):
    with pytest.raises(WireError, match="^unknown query type ") as info:
        type_number(name)
    assert type(info.value) is WireError and isinstance(info.value, ValueError)
    assert len(str(info.value)) < 200  # a long input is cut in the message


def test_question_builds_the_wire_question():
    assert question("www.example.com", 1) == ("www.example.com.", bytes.fromhex(QUERY_HEX)[12:])
    assert question(".", 2) == (".", b"\x00\x00\x02\x00\x01")


@pytest.mark.parametrize("name,qtype,words", [
    ("a..b", 1, "invalid name 'a..b': an empty label"),
    (".a", 1, "invalid name '.a': an empty label"),
    ("x" * 64 + ".test", 1, "invalid name 'xxx"),
    (".".join(["x" * 60] * 5), 1, "at most 255"),
    ("\u00e9t\u00e9.test", 1, "not ASCII (write an IDN in its xn-- form)"),
    ("ok.test", 65536, "unknown query type 65536: not a 16-bit type number"),
    ("ok.test", -1, "unknown query type -1"),
])
def test_malformed_questions_are_a_wire_error(name, qtype, words):
    with pytest.raises(WireError) as info:
        question(name, qtype)
    assert words in str(info.value)


def test_random_mutations_of_a_query_raise_only_wire_errors_or_drop():
    """Every malformed packet is a FormErr (a WireError), a Reject or a Drop; nothing else leaks."""
    import random

    base = wire_query(use_edns=0, options=[dns.edns.GenericOption(8, b"\x00\x01\x18\x00\xc0\x00\x02")])
    rng = random.Random(10)
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            choice = rng.random()
            if choice < 0.5 and at < len(data):
                data[at] = rng.randrange(256)
            elif choice < 0.75:
                del data[at:]
            else:
                data.insert(at, rng.randrange(256))
        try:
            parse_query(bytes(data))
        except (Drop, Reject):
            pass
# -- written against the survivors of mutation testing (tools/mutation wire)


def test_ecs_full_length_prefixes_are_accepted_and_the_scope_capped_at_the_family_width():
    """A /32 (IPv4) or /128 (IPv6) source is legal (RFC 7871 6); an answer's scope never exceeds it."""
    for address, prefix in (("192.0.2.1", 32), ("2001:db8::1", 128)):
        q = dns.message.make_query("www.example.com.", "A", use_edns=0, options=[dns.edns.ECSOption(address, prefix)])
        assert parse_query(q.to_wire())[1].ecs.source_prefix == prefix
        (option,) = roundtrip(q.to_wire(), answer(ecs_scope=200)).options
        assert (option.address, option.srclen, option.scopelen) == (address, prefix, prefix)


def test_servfail_keeps_the_opt_with_do_and_the_cookie_only_for_edns_queries():
    q = dns.message.make_query("www.example.com.", "A", use_edns=0, want_dnssec=True)
    ident, query = parse_query(q.to_wire())
    cookie_option = struct.pack("!HH", 10, 24) + bytes(range(24))  # the encoded COOKIE option
    reply = dns.message.from_wire(servfail(ident, query, cookie=cookie_option))
    assert reply.rcode() == dns.rcode.SERVFAIL and reply.edns == 0 and reply.ednsflags & dns.flags.DO
    assert [(o.otype, o.client + o.server) for o in reply.options] == [(10, bytes(range(24)))]
    ident, plain = parse_query(wire_query())
    reply = dns.message.from_wire(servfail(ident, plain))
    assert reply.rcode() == dns.rcode.SERVFAIL and reply.edns == -1
