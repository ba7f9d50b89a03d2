"""gslb.dnssec: keys, the zone file's dnssec: block, and signed replies validated by dnspython.

Every reply is built by the real path (parse_query -> resolve -> Signer.apply -> encode_response)
and read back with dnspython; each RRset of each section must carry an RRSIG that
``dns.dnssec.validate`` accepts with the zone's DNSKEY RRset, which itself must match the DS that
``gslb dnssec ds`` prints.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gslb.dnssec import (SIGNATURE_DEP, Signer, SigningError, covering_nsec, ds_text, generate_private_key,
                         key_tag, parse_duration, write_key_file)
from gslb.errors import ConfigErrors
from gslb.model import PoolAnswer, ZoneSet
from gslb.resolver import resolve
from gslb.wire import encode_response, parse_query
from gslb.zonefile import load_zone_file

NOW = 1_800_000_000.0

ZONE = """\
zone: example.com
ttl: 3600
ns: [ns1.example.com]
dnssec:
  algorithm: {algorithm}
  key_file: keys/example.com.key
  signature_validity: 7d
records:
  ns1: {{A: 192.0.2.53}}
  www: {{A: [192.0.2.1, 192.0.2.2], AAAA: "2001:db8::1", MX: "10 Mail.Example.com."}}
  alias: {{CNAME: www}}
  tolb: {{CNAME: lb}}
  lb: {{pool: web}}
  "*.cdn": {{pool: web}}
  "*.wild": {{TXT: "wild"}}
  "*.wc": {{CNAME: www}}
  sub: {{NS: ns.sub.example.com.}}
  ns.sub: {{A: 192.0.2.77}}
  kid: {{NS: ns1.example.com.}}
  secured: {{NS: ns1.example.com., DS: "12345 13 2 49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE49FD46E6C4B45C55D4AC69CB"}}
  a.b.deep: {{TXT: "deep"}}
sites:
  fra: {{location: [50.11, 8.68], addresses: [192.0.2.10, "2001:db8::10"]}}
  iad: {{location: [38.95, -77.45], addresses: [198.51.100.20]}}
pools:
  web: {{policy: closest, sites: [fra, iad]}}
"""


class FakePools:
    """Answers by continent of the client: 10.x -> fra, else iad (answers that differ per client)."""

    def answer(self, zone, pool, rtype, client_ip, source_prefix):
        site = "fra" if client_ip.startswith("10.") else "iad"
        addresses = [a for a in zone.sites[site].ipv4] if rtype == "A" else list(zone.sites[site].ipv6)
        return PoolAnswer("answer", tuple(addresses), 30, 24 if source_prefix else 0, (site,), per_client=True)


def make(tmp_path: Path, algorithm: str = "ECDSAP256SHA256"):
    zones = tmp_path / "zones"
    (zones / "keys").mkdir(parents=True, exist_ok=True)
    key = zones / "keys" / "example.com.key"
    if not key.exists():
        write_key_file(str(key), generate_private_key(algorithm))
    (zones / "example.yaml").write_text(ZONE.format(algorithm=algorithm))
    return load_zone_file(str(zones / "example.yaml"))


@pytest.fixture(params=["ECDSAP256SHA256", "ED25519"])
def zone(request, tmp_path):
    return make(tmp_path, request.param)


def ask(zone, name, rdtype="A", do=True, ecs=None, signer=None, client="192.0.2.99", size=65535):
    options = [dns.edns.ECSOption(ecs, 24)] if ecs else None
    q = dns.message.make_query(name, rdtype, want_dnssec=do, use_edns=0, options=options)
    ident, query = parse_query(q.to_wire())
    zones = ZoneSet({zone.origin: zone})
    response = resolve(query, client, zones, FakePools())
    signer = signer or Signer(clock=lambda: NOW)
    signed = signer.apply(query, response, zones)
    wire = encode_response(ident - ident, query, signed or response, size)
    ask.wire = wire  # type: ignore[attr-defined]
    return dns.message.from_wire(wire), signed


def keyset(zone, signer=None):
    reply, _ = ask(zone, "example.com.", "DNSKEY", signer=signer)
    rrset = reply.find_rrset(reply.answer, dns.name.from_text("example.com."), dns.rdataclass.IN,
                             dns.rdatatype.DNSKEY)
    return {dns.name.from_text("example.com."): rrset}


def validate_all(reply, keys, now=NOW):
    """Every RRset of every section but glue-free referral NS and OPT is signed and valid."""
    checked = 0
    for section in (reply.answer, reply.authority, reply.additional):
        sigs = [r for r in section if r.rdtype == dns.rdatatype.RRSIG]
        for rrset in section:
            if rrset.rdtype in (dns.rdatatype.RRSIG, dns.rdatatype.OPT):
                continue
            if section is reply.authority and rrset.rdtype == dns.rdatatype.NS:
                continue  # a referral's NS belongs to the child: never signed
            if section is reply.additional and rrset.name.is_subdomain(dns.name.from_text("sub.example.com.")):
                continue  # glue
            sig = [s for s in sigs if s.name == rrset.name and s[0].type_covered == rrset.rdtype]
            assert sig, f"no RRSIG for {rrset}"
            dns.dnssec.validate(*_as_validators_read(rrset, sig[0]), keys, now=now)
            checked += 1
    return checked


def _as_validators_read(rrset, sig):
    """(rrset, rrsig) with the owner a validator reconstructs (RFC 4035 5.3.2) when the owner's
    first label is a literal '*' answered from another, shorter wildcard (e.g. *.www.cdn from
    *.cdn): RFC 4034 3.1.3 does not count that '*', so Labels (3) is less than the owner's count
    (4) and validators such as Unbound rebuild *.cdn; dnspython refuses a wild owner whose Labels
    is not its own count, so the test rebuilds the name here and validates that."""
    labels = sig[0].labels
    name = rrset.name
    if not name.is_wild() or labels == len(name) - 2:
        return rrset, sig
    owner = dns.name.from_text("*", name.split(labels + 1)[1])
    renamed = dns.rrset.from_rdata_list(owner, rrset.ttl, list(rrset))
    resig = dns.rrset.from_rdata_list(owner, sig.ttl, list(sig))
    return renamed, resig


def test_ds_matches_dnskey(zone):
    keys = keyset(zone)
    dnskey = keys[dns.name.from_text("example.com.")]
    assert len(dnskey) == 1 and dnskey[0].flags == 257
    dns.dnssec.validate(dnskey, keyset_sig(zone), keys, now=NOW)
    ds = dns.dnssec.make_ds("example.com.", dnskey[0], "SHA256")
    printed = ds_text("example.com.", zone.dnssec.active)
    assert printed.split()[-4:] == ds.to_text().upper().split()[-4:]
    assert key_tag(zone.dnssec.active.dnskey) == dns.dnssec.key_id(dnskey[0])


def keyset_sig(zone):
    reply, _ = ask(zone, "example.com.", "DNSKEY")
    return reply.find_rrset(reply.answer, dns.name.from_text("example.com."), dns.rdataclass.IN,
                            dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY)


@pytest.mark.parametrize("name,rdtype", [
    ("www.example.com.", "A"), ("www.example.com.", "AAAA"), ("www.example.com.", "MX"),
    ("example.com.", "SOA"), ("example.com.", "NS"), ("example.com.", "CDS"), ("example.com.", "CDNSKEY"),
    ("alias.example.com.", "A"), ("tolb.example.com.", "A"), ("lb.example.com.", "A"),
])
def test_positive_answers_validate(zone, name, rdtype):
    reply, _ = ask(zone, name, rdtype)
    assert reply.rcode() == 0 and reply.answer
    assert validate_all(reply, keyset(zone)) >= 1


def test_pool_answers_differ_per_client_and_each_validates(zone):
    keys = keyset(zone)
    eu, _ = ask(zone, "lb.example.com.", ecs="10.1.2.0")
    us, _ = ask(zone, "lb.example.com.", ecs="198.51.100.0")
    assert eu.answer[0] != us.answer[0]
    validate_all(eu, keys)
    validate_all(us, keys)


def test_wildcard_answer_labels_and_proof(zone):
    keys = keyset(zone)
    reply, _ = ask(zone, "x.y.cdn.example.com.", "A")
    sig = reply.find_rrset(reply.answer, dns.name.from_text("x.y.cdn.example.com."), dns.rdataclass.IN,
                           dns.rdatatype.RRSIG, dns.rdatatype.A)
    assert sig[0].labels == 3  # cdn.example.com: the wildcard's owner without "*"
    nsec = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC]
    assert len(nsec) == 1
    owner, nxt = nsec[0].name, nsec[0][0].next
    closer = dns.name.from_text("y.cdn.example.com.")
    assert owner < closer < nxt  # the next closer name does not exist
    assert owner.parent() == closer.parent() == nxt.parent()
    validate_all(reply, keys)


def test_nxdomain_is_compact_nodata_with_nxname(zone):
    reply, _ = ask(zone, "nothere.example.com.", "A")
    assert reply.rcode() == 0 and not reply.answer  # RFC 9824
    nsec = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC][0]
    assert nsec.name == dns.name.from_text("nothere.example.com.")
    assert nsec[0].next == dns.name.from_text("\\000.nothere.example.com.")
    assert set(nsec[0].windows[0][1]) and 128 in _types(nsec[0])
    assert validate_all(reply, keyset(zone)) == 2  # SOA and NSEC


def _types(nsec):
    out = set()
    for window, bits in nsec.windows:
        for i, byte in enumerate(bits):
            for j in range(8):
                if byte & (0x80 >> j):
                    out.add(window * 256 + i * 8 + j)
    return out


@pytest.mark.parametrize("name,rdtype,expect_in,expect_out", [
    ("www.example.com.", "TXT", {1, 28, 15, 46, 47}, {16}),
    ("lb.example.com.", "TXT", {1, 28}, {16}),
    ("example.com.", "TXT", {6, 2, 48, 59, 60}, {16}),
    ("deep.example.com.", "A", {46, 47}, {1, 128}),            # empty non-terminal
    ("q.wild.example.com.", "A", {16}, {1}),                  # wildcard NODATA
    ("sub.example.com.", "DS", {2}, {43, 1}),                  # no DS at the delegation
])
def test_nodata_proofs(zone, name, rdtype, expect_in, expect_out):
    reply, _ = ask(zone, name, rdtype)
    assert reply.rcode() == 0 and not reply.answer
    nsec = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC][0]
    assert nsec.name == dns.name.from_text(name)
    types = _types(nsec[0])
    assert expect_in <= types and not (expect_out & types)
    validate_all(reply, keyset(zone))


def test_referral_ns_unsigned_and_no_ds_proven(zone):
    reply, _ = ask(zone, "host.sub.example.com.", "A")
    assert not reply.flags & dns.flags.AA
    assert not [r for r in reply.authority if r.rdtype == dns.rdatatype.RRSIG
                and r[0].type_covered == dns.rdatatype.NS]
    nsec = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC][0]
    assert nsec.name == dns.name.from_text("sub.example.com.")
    assert _types(nsec[0]) == {2, 46, 47}
    assert validate_all(reply, keyset(zone)) == 1
    assert reply.additional  # glue, unsigned


def test_without_do_nothing_changes(zone, tmp_path):
    plain = load_zone_file(str(tmp_path / "zones" / "example.yaml"))
    object.__setattr__(plain, "dnssec", None)
    for name, rdtype in [("www.example.com.", "A"), ("nothere.example.com.", "A"), ("lb.example.com.", "A"),
                         ("x.cdn.example.com.", "A"), ("host.sub.example.com.", "A"), ("www.example.com.", "TXT")]:
        _, change = ask(zone, name, rdtype, do=False)
        signed = ask.wire  # type: ignore[attr-defined]
        ask(plain, name, rdtype, do=False)
        assert change is None
        assert signed == ask.wire  # type: ignore[attr-defined]


def test_signatures_cached_and_refreshed_before_a_quarter_is_left(zone):
    now = [NOW]
    signer = Signer(clock=lambda: now[0])
    ask(zone, "www.example.com.", signer=signer)
    ask(zone, "www.example.com.", signer=signer)
    assert signer.signed == 1
    reply, _ = ask(zone, "www.example.com.", signer=signer)
    sig = [r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG][0][0]
    assert sig.inception == NOW - 3600 and sig.expiration == NOW + 7 * 86400
    validity = 7 * 86400
    now[0] = NOW + validity * 3 / 4 - 1  # more than a quarter left: the same signature
    ask(zone, "www.example.com.", signer=signer)
    assert signer.signed == 1
    now[0] = NOW + validity * 3 / 4 + 1  # less than a quarter left: signed again
    reply, _ = ask(zone, "www.example.com.", signer=signer)
    assert signer.signed == 2
    sig = [r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG][0][0]
    assert sig.expiration == int(now[0]) + validity
    validate_all(reply, keyset(zone, signer), now=now[0])


def test_signature_cache_is_bounded(zone):
    signer = Signer(clock=lambda: NOW, max_entries=4)
    for i in range(10):
        ask(zone, f"n{i}.example.com.", signer=signer)
    assert len(signer._cache) <= 4


def test_signing_failure_raises(zone):
    class Broken:
        def sign(self, *args):
            raise ValueError("hardware key gone")

    active = zone.dnssec.active
    object.__setattr__(active, "private", Broken())
    with pytest.raises(SigningError, match="hardware key gone"):
        ask(zone, "www.example.com.")


def test_signed_reply_respects_udp_limit(zone):
    reply, _ = ask(zone, "www.example.com.", "MX", size=512)
    full, _ = ask(zone, "www.example.com.", "MX")
    assert len(full.to_wire()) > 0
    small, _ = ask(zone, "example.com.", "DNSKEY", size=100)
    assert small.flags & dns.flags.TC and not small.answer


# --- the zone file's dnssec: block ------------------------------------------------------------


def test_missing_key_is_a_zone_error(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "example.yaml").write_text(ZONE.format(algorithm="ECDSAP256SHA256"))
    with pytest.raises(ConfigErrors) as exc:
        load_zone_file(str(zones / "example.yaml"))
    text = str(exc.value)
    assert "example.yaml:6: dnssec.key_file: cannot read key file" in text
    assert "gslb dnssec keygen example.com" in text


@pytest.mark.parametrize("block,message", [
    ("  algorithm: RSASHA1\n", "dnssec.algorithm: unknown algorithm 'RSASHA1'"),
    ("  signature_validity: soon\n", "dnssec.signature_validity: expected a duration"),
    ("  signature_validity: 10m\n",
     "dnssec.signature_validity: signature_validity 10m (600 s) is out of range 1h..366d"),
    ("  colour: red\n", "dnssec.colour: unknown key 'colour'"),
])
def test_block_errors_are_located(tmp_path, block, message):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "z.yaml").write_text("zone: example.com\nns: [ns1.example.net.]\ndnssec:\n" + block)
    with pytest.raises(ConfigErrors) as exc:
        load_zone_file(str(zones / "z.yaml"))
    assert f"z.yaml:4: {message}" in str(exc.value)


def test_wrong_key_algorithm(tmp_path):
    zones = tmp_path / "zones"
    (zones / "keys").mkdir(parents=True)
    write_key_file(str(zones / "keys" / "example.com.key"), generate_private_key("ED25519"))
    (zones / "example.yaml").write_text(ZONE.format(algorithm="ECDSAP256SHA256"))
    with pytest.raises(ConfigErrors, match="is not an ECDSA P-256 key"):
        load_zone_file(str(zones / "example.yaml"))


def test_key_file_mode_and_never_overwritten(tmp_path):
    path = tmp_path / "k" / "z.key"
    write_key_file(str(path), generate_private_key("ECDSAP256SHA256"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_key_file(str(path), generate_private_key("ECDSAP256SHA256"))
    assert path.read_bytes() == before


def test_a_new_key_is_a_new_serial(tmp_path):
    first = make(tmp_path)
    os.rename(tmp_path / "zones/keys/example.com.key", tmp_path / "zones/keys/example.com.key.old")
    write_key_file(str(tmp_path / "zones/keys/example.com.key"), generate_private_key("ECDSAP256SHA256"))
    second = load_zone_file(str(tmp_path / "zones" / "example.yaml"), previous=first)
    assert second.digest != first.digest and second.serial > first.serial
    assert [k.role for k in second.dnssec.keys] == ["active", "old"]


def test_durations():
    assert parse_duration("7d") == 604800 and parse_duration("12h") == 43200 and parse_duration(3600) == 3600
    assert parse_duration("2w") == 1209600 and parse_duration("x") is None and parse_duration(True) is None


def test_covering_nsec_limits():
    assert covering_nsec("example.com.", 60).name.startswith("exampld")
    long_label = "a" * 63
    nsec = covering_nsec(f"{long_label}.example.com.", 60)
    assert nsec is not None
    assert covering_nsec("\\000.example.com.", 60) is None


def test_dependency_constant_is_distinct():
    assert SIGNATURE_DEP == ("#signatures",)


# --- through the query handler: the answer cache and failures ----------------------------------


def handler_for(zone):
    from gslb.answercache import AnswerCache
    from gslb.config import Acl
    from gslb.handler import QueryHandler
    from gslb.stats import QueryStats

    zones = ZoneSet({zone.origin: zone})
    handler = QueryHandler(lambda: zones, FakePools(), QueryStats(), Acl(), AnswerCache())
    handler.signer.clock = lambda: NOW
    return handler


def _wire(name, rdtype="A", do=True, ecs=None):
    options = [dns.edns.ECSOption(ecs, 24)] if ecs else None
    return dns.message.make_query(name, rdtype, want_dnssec=do, use_edns=0, options=options).to_wire()


def test_answer_cache_keys_do_apart_and_drops_signed_entries_on_schedule(zone):
    handler = handler_for(zone)
    plain_q, signed_q = _wire("www.example.com.", do=False), _wire("www.example.com.", do=True)
    assert plain_q[2:] != signed_q[2:]  # the OPT record's DO bit is part of the cache key
    plain = handler.udp(plain_q, "192.0.2.99")
    signed = handler.udp(signed_q, "192.0.2.99")
    assert not [r for r in dns.message.from_wire(plain).answer if r.rdtype == dns.rdatatype.RRSIG]
    assert [r for r in dns.message.from_wire(signed).answer if r.rdtype == dns.rdatatype.RRSIG]
    assert len(handler.cache) == 2
    # cache hits: the same bytes again, no new signature
    before = handler.signer.signed
    assert handler.udp(signed_q, "192.0.2.99")[2:] == signed[2:]
    assert handler.udp(plain_q, "192.0.2.99")[2:] == plain[2:]
    assert handler.signer.signed == before
    # every SIGNATURE_CACHE_PERIOD the signed entries go (gslb.handler.expire_signatures_every);
    # the unsigned ones stay
    handler.cache.invalidate((SIGNATURE_DEP,))
    assert handler.cache.lookup(signed_q[2:], "192.0.2.99") is None
    assert handler.cache.lookup(plain_q[2:], "192.0.2.99") is not None


def test_signing_failure_is_servfail_and_one_log_line(zone, caplog):
    class Broken:
        def sign(self, *args):
            raise ValueError("hardware key gone")

    handler = handler_for(zone)
    object.__setattr__(zone.dnssec.active, "private", Broken())
    with caplog.at_level("ERROR", logger="gslb.handler"):
        reply = dns.message.from_wire(handler.udp(_wire("www.example.com."), "192.0.2.99"))
    assert reply.rcode() == dns.rcode.SERVFAIL and not reply.answer
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "hardware key gone" in errors[0].getMessage() and not errors[0].exc_info
    assert len(handler.cache) == 0
    # without DO the zone still answers (nothing to sign)
    plain = dns.message.from_wire(handler.udp(_wire("www.example.com.", do=False), "192.0.2.99"))
    assert plain.rcode() == 0 and plain.answer


def test_compact_nxdomain_is_not_cached(zone):
    handler = handler_for(zone)
    handler.udp(_wire("random123.example.com."), "192.0.2.99")
    assert len(handler.cache) == 0


def test_apex_keys_without_do_unsigned(zone):
    handler = handler_for(zone)
    reply = dns.message.from_wire(handler.udp(_wire("example.com.", "DNSKEY", do=False), "192.0.2.99"))
    assert [r.rdtype for r in reply.answer] == [dns.rdatatype.DNSKEY]


def test_referral_to_a_signed_child_carries_its_signed_ds(zone):
    reply, _ = ask(zone, "www.secured.example.com.", "A")
    assert not reply.flags & dns.flags.AA
    ds = [r for r in reply.authority if r.rdtype == dns.rdatatype.DS]
    assert len(ds) == 1 and ds[0][0].key_tag == 12345
    assert not [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC]
    assert validate_all(reply, keyset(zone)) == 2  # the DS, and ns1's address (the parent's own data)
    answer, _ = ask(zone, "secured.example.com.", "DS")
    assert answer.flags & dns.flags.AA and answer.answer[0].rdtype == dns.rdatatype.DS
    validate_all(answer, keyset(zone))
    nodata, _ = ask(zone, "secured.example.com.", "TXT")  # a referral, whatever the type
    assert not nodata.flags & dns.flags.AA


@pytest.mark.parametrize("record,message", [
    ('  www: {A: 192.0.2.1, DS: "1 13 1 ' + "AB" * 20 + '"}\n',
     "records.www.DS: DS records belong at a delegation point"),
    ('  sub: {NS: ns.example.net., DS: "1 13 2 AB"}\n', "a digest of type 2 is 32 octets"),
    ('  sub: {NS: ns.example.net., DS: "x 13 2 AB"}\n', "must be \"KEYTAG ALGORITHM DIGESTTYPE DIGEST\""),
    ('  sub: {NS: ns.example.net., DS: "1 13 9 XYZ"}\n', "the digest must be hexadecimal"),
])
def test_ds_errors_are_located(tmp_path, record, message):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "z.yaml").write_text("zone: example.com\nns: [ns1.example.net.]\nrecords:\n" + record)
    with pytest.raises(ConfigErrors) as exc:
        load_zone_file(str(zones / "z.yaml"))
    assert "z.yaml:4: " in str(exc.value) and message in str(exc.value)


def test_wildcard_cname_chain_validates(zone):
    reply, _ = ask(zone, "x.wc.example.com.", "A")
    assert [r.rdtype for r in reply.answer if r.rdtype != dns.rdatatype.RRSIG] == [dns.rdatatype.CNAME,
                                                                                    dns.rdatatype.A]
    cname_sig = [r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG
                 and r[0].type_covered == dns.rdatatype.CNAME][0]
    assert cname_sig[0].labels == 3
    assert len([r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC]) == 1
    assert validate_all(reply, keyset(zone)) == 3


def test_nsec_query_answers_the_names_nsec(zone):
    reply, _ = ask(zone, "www.example.com.", "NSEC")
    assert reply.answer[0].rdtype == dns.rdatatype.NSEC and not reply.authority
    validate_all(reply, keyset(zone))
    missing, _ = ask(zone, "nothere.example.com.", "NSEC")
    assert not missing.answer and [r for r in missing.authority if r.rdtype == dns.rdatatype.NSEC]


# --- any question: the reply parses, fits, and everything in it validates ------------------------

_LABELS = st.sampled_from(["www", "lb", "alias", "tolb", "x", "cdn", "wild", "wc", "sub", "ns1", "ns", "deep",
                           "b", "a", "secured", "nothere", "*", "WwW"])
_TYPES = st.sampled_from(["A", "AAAA", "TXT", "MX", "NS", "SOA", "DS", "DNSKEY", "CDS", "CDNSKEY", "NSEC",
                          "CNAME", "ANY", "SRV", "HINFO", "TYPE65000"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(_LABELS, max_size=3), rdtype=_TYPES, ecs=st.sampled_from([None, "10.1.2.0", "8.8.8.0"]),
       payload=st.sampled_from([512, 1232, 4096]))
def test_any_signed_reply_fits_and_validates(tmp_path_factory, labels, rdtype, ecs, payload):
    zone = _PROPERTY_ZONE.get("zone")
    if zone is None:
        zone = _PROPERTY_ZONE["zone"] = make(tmp_path_factory.mktemp("prop"))
        _PROPERTY_ZONE["keys"] = keyset(zone)
    name = ".".join(labels + ["example.com."])
    options = [dns.edns.ECSOption(ecs, 24)] if ecs else None
    q = dns.message.make_query(name, rdtype, want_dnssec=True, use_edns=0, payload=payload, options=options)
    handler = handler_for(zone)
    wire = handler.udp(q.to_wire(), "192.0.2.99")
    assert wire is not None and len(wire) <= min(payload, 1232)
    reply = dns.message.from_wire(wire)
    if reply.flags & dns.flags.TC or reply.rcode() != dns.rcode.NOERROR:
        return
    validate_all(reply, _PROPERTY_ZONE["keys"])


_PROPERTY_ZONE: dict = {}


def test_longest_names_get_a_valid_denial(zone):
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 49]) + ".example.com."
    assert len(dns.name.from_text(name).to_wire()) == 255
    reply, _ = ask(zone, name, "A")
    nsec = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC][0]
    assert nsec.name == dns.name.from_text(name)
    validate_all(reply, keyset(zone))


def test_cname_into_a_delegation_keeps_the_child_ns_unsigned(zone):
    """RFC 1034 4.3.2 3a->1->3b: a CNAME whose target lies below a cut, with the referral after it
    (as the resolver builds it): the CNAME signed, the NS not, the absence of DS proven."""
    from gslb.model import Record
    from gslb.wire import Response

    q = dns.message.make_query("tosub.example.com.", "A", want_dnssec=True, use_edns=0)
    ident, query = parse_query(q.to_wire())
    raw_cname = Record("tosub.example.com.", "CNAME", 3600, "x.sub.example.com.")
    ns = zone.nodes["sub.example.com."].records["NS"]
    glue = zone.nodes["ns.sub.example.com."].records["A"]
    response = Response(0, True, (raw_cname,), ns, glue, zone="example.com", deps=("example.com",))
    zones = ZoneSet({zone.origin: zone})
    signed = Signer(clock=lambda: NOW).apply(query, response, zones)
    reply = dns.message.from_wire(encode_response(ident, query, signed, 65535))
    assert not [r for r in reply.authority if r.rdtype == dns.rdatatype.RRSIG and r[0].type_covered == 2]
    nsec = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC][0]
    assert nsec.name == dns.name.from_text("sub.example.com.") and _types(nsec[0]) == {2, 46, 47}
    assert validate_all(reply, keyset(zone)) == 2  # the CNAME and the NSEC


def test_cached_replies_go_long_before_their_signatures_expire():
    from gslb.dnssec import INCEPTION_OFFSET, MIN_VALIDITY, SIGNATURE_CACHE_PERIOD

    # a signature is renewed with a quarter of its validity left; a cached reply holding it is
    # dropped within SIGNATURE_CACHE_PERIOD: well before that quarter is used up
    assert SIGNATURE_CACHE_PERIOD * 2 <= MIN_VALIDITY / 4
    assert INCEPTION_OFFSET == 3600


async def test_expire_signatures_every_drops_signed_entries(zone):
    import asyncio

    from gslb.handler import expire_signatures_every
    from harness import eventually_async

    handler = handler_for(zone)
    query = _wire("www.example.com.")
    handler.udp(query, "192.0.2.99")
    assert handler.cache.lookup(query[2:], "192.0.2.99") is not None
    task = asyncio.create_task(expire_signatures_every(handler, period=0.01))
    try:
        await eventually_async(lambda: handler.cache.lookup(query[2:], "192.0.2.99") is None,
                               what="the signed reply dropped")
    finally:
        task.cancel()


def test_an_empty_block_takes_every_default(tmp_path):
    zones = tmp_path / "zones"
    (zones / "keys").mkdir(parents=True)
    write_key_file(str(zones / "keys" / "example.com.key"), generate_private_key("ECDSAP256SHA256"))
    (zones / "z.yaml").write_text("zone: example.com\nns: [ns1.example.net.]\ndnssec:\n")
    signing = load_zone_file(str(zones / "z.yaml")).dnssec
    assert signing.algorithm == "ECDSAP256SHA256" and signing.validity == 7 * 86400
    assert signing.key_file == str(zones / "keys" / "example.com.key")


def test_ds_of_a_signed_child_served_here_comes_from_its_keys(zone, tmp_path):
    zones_dir = Path(zone.file).parent
    write_key_file(str(zones_dir / "keys" / "kid.key"), generate_private_key("ED25519"))
    (zones_dir / "kid.yaml").write_text("zone: kid.example.com\nns: [ns1.example.com.]\n"
                                        "dnssec: {algorithm: ED25519, key_file: keys/kid.key}\n"
                                        "records:\n  www: {A: 192.0.2.8}\n")
    kid = load_zone_file(str(zones_dir / "kid.yaml"))
    zones = ZoneSet({zone.origin: zone, kid.origin: kid})
    q = dns.message.make_query("kid.example.com.", "DS", want_dnssec=True, use_edns=0)
    ident, query = parse_query(q.to_wire())
    response = resolve(query, "192.0.2.99", zones, FakePools())
    signed = Signer(clock=lambda: NOW).apply(query, response, zones)
    reply = dns.message.from_wire(encode_response(ident, query, signed, 65535))
    ds = reply.find_rrset(reply.answer, dns.name.from_text("kid.example.com."), dns.rdataclass.IN, dns.rdatatype.DS)
    assert [d.key_tag for d in ds] == [kid.dnssec.active.tag]
    validate_all(reply, keyset(zone))  # signed by the parent
    # and the child's DNSKEY matches it
    kq = dns.message.make_query("kid.example.com.", "DNSKEY", want_dnssec=True, use_edns=0)
    kident, kquery = parse_query(kq.to_wire())
    kresp = resolve(kquery, "192.0.2.99", zones, FakePools())
    kreply = dns.message.from_wire(encode_response(kident, kquery, Signer().apply(kquery, kresp, zones), 65535))
    dnskey = kreply.answer[0]
    assert dns.dnssec.make_ds("kid.example.com.", dnskey[0], "SHA256") == ds[0]


def test_an_explicit_nxname_query_is_formerr(zone):
    reply, _ = ask(zone, "www.example.com.", "TYPE128", do=False)
    assert reply.rcode() == dns.rcode.FORMERR and not reply.answer
