"""Authoritative lookups (RFC 1034 4.3.2, RFC 4592) on zones built by hand."""

from __future__ import annotations


import pytest

from gslb.authority import Outcome, lookup
from gslb.model import Pool, Record
from harness import make_zone




ZONE = make_zone("example.com", {
    "ns1": {"A": "192.0.2.53", "AAAA": "2001:db8::53"},
    "www": {"A": ["192.0.2.1", "192.0.2.2"], "TXT": '"hello"'},
    "alias": {"CNAME": "www.example.com."},
    "lb": {"pool": "web", "TXT": '"pooled"'},
    "*.cdn": {"pool": "web"},
    "*.wild": {"A": "192.0.2.9", "MX": "10 mail.example.com."},
    "deep.ent.example.com.": {"A": "192.0.2.10"},
    "sub": {"NS": ["ns.sub.example.com.", "ns.other.net."]},
    "ns.sub": {"A": "192.0.2.77"},
})


def test_answer_at_existing_name():
    found = lookup(ZONE, "www.example.com.", "A")
    assert found.outcome is Outcome.ANSWER
    assert [r.rdata for r in found.records] == ["192.0.2.1", "192.0.2.2"]


def test_apex_soa_and_ns():
    assert lookup(ZONE, "example.com.", "SOA").records[0].rtype == "SOA"
    assert [r.rdata for r in lookup(ZONE, "example.com.", "NS").records] == ["ns1.example.com."]


def test_nodata_carries_soa_with_negative_ttl():
    found = lookup(ZONE, "www.example.com.", "AAAA")
    assert found.outcome is Outcome.NODATA
    (soa,) = found.authority
    assert soa.rtype == "SOA" and soa.name == "example.com." and soa.ttl == 60


def test_negative_ttl_is_min_of_soa_ttl_and_minimum():
    zone = make_zone("example.org", {}, ttl=30, minimum=300)
    assert lookup(zone, "nope.example.org.", "A").authority[0].ttl == 30


def test_nxdomain_carries_soa():
    found = lookup(ZONE, "nope.example.com.", "A")
    assert found.outcome is Outcome.NXDOMAIN
    assert found.authority[0].rtype == "SOA"


def test_empty_non_terminal_is_nodata():
    assert lookup(ZONE, "ent.example.com.", "A").outcome is Outcome.NODATA


def test_cname_at_name():
    found = lookup(ZONE, "alias.example.com.", "A")
    assert found.outcome is Outcome.CNAME
    assert found.records[0].rdata == "www.example.com."
    assert lookup(ZONE, "alias.example.com.", "CNAME").outcome is Outcome.ANSWER


def test_pool_name_answers_a_and_aaaa_from_pool():
    for qtype in ("A", "AAAA"):
        found = lookup(ZONE, "lb.example.com.", qtype)
        assert found.outcome is Outcome.POOL and found.pool == "web" and found.owner == "lb.example.com."


def test_pool_name_static_records_and_nodata():
    assert lookup(ZONE, "lb.example.com.", "TXT").outcome is Outcome.ANSWER
    assert lookup(ZONE, "lb.example.com.", "MX").outcome is Outcome.NODATA


def test_wildcard_pool():
    found = lookup(ZONE, "a.b.cdn.example.com.", "AAAA")
    assert found.outcome is Outcome.POOL and found.owner == "a.b.cdn.example.com." and found.wildcard


def test_wildcard_synthesis_rewrites_owner():
    found = lookup(ZONE, "x.wild.example.com.", "MX")
    assert found.outcome is Outcome.ANSWER
    assert found.records == (Record("x.wild.example.com.", "MX", 3600, "10 mail.example.com."),)
    assert lookup(ZONE, "x.wild.example.com.", "TXT").outcome is Outcome.NODATA


def test_referral_at_and_below_cut():
    for name in ("sub.example.com.", "a.b.sub.example.com.", "ns.sub.example.com."):
        found = lookup(ZONE, name, "A")
        assert found.outcome is Outcome.REFERRAL
        assert [r.rdata for r in found.authority] == ["ns.sub.example.com.", "ns.other.net."]
        assert [r.rdata for r in found.additional] == ["192.0.2.77"]  # in-zone glue only


def test_ds_at_cut_is_answered_by_parent():
    assert lookup(ZONE, "sub.example.com.", "DS").outcome is Outcome.NODATA
    assert lookup(ZONE, "x.sub.example.com.", "DS").outcome is Outcome.REFERRAL


# RFC 4592 section 2.2.1: the example zone and its table of queries.
RFC4592 = make_zone("example", {
    "*": {"TXT": '"this is a wildcard"', "MX": "10 host1.example."},
    "sub.*": {"TXT": '"this is not a wildcard"'},
    "host1": {"A": "192.0.2.1"},
    "_ssh._tcp.host1": {"SRV": "0 0 22 host1.example."},
    "_ssh._tcp.host2": {"SRV": "0 0 22 host2.example."},
    "subdel": {"NS": ["ns.example.com.", "ns.example.net."]},
}, ns=("ns.example.com.", "ns.example.net."))


@pytest.mark.parametrize("qname,qtype,outcome", [
    # "The following responses would be synthesized from one of the wildcards":
    ("host3.example.", "MX", Outcome.ANSWER),
    ("host3.example.", "A", Outcome.NODATA),
    ("foo.bar.example.", "TXT", Outcome.ANSWER),
    # "The following responses would not be synthesized":
    ("host1.example.", "MX", Outcome.NODATA),        # host1 exists
    ("sub.*.example.", "MX", Outcome.NODATA),        # the name exists
    ("_telnet._tcp.host1.example.", "SRV", Outcome.NXDOMAIN),  # _tcp.host1 is an ENT: encloser
    ("host.subdel.example.", "A", Outcome.REFERRAL),  # below a cut
    ("ghost.*.example.", "MX", Outcome.NXDOMAIN),     # encloser *.example has no wildcard child
])
def test_rfc4592_examples(qname, qtype, outcome):
    assert lookup(RFC4592, qname, qtype).outcome is outcome


def test_rfc4592_synthesised_owner():
    found = lookup(RFC4592, "foo.bar.example.", "TXT")
    assert found.records[0].name == "foo.bar.example." and found.records[0].rdata == '"this is a wildcard"'


def test_wildcard_does_not_match_existing_name_of_other_type():
    # host1 exists: its missing types are NODATA, never the wildcard's data
    assert lookup(RFC4592, "host1.example.", "TXT").outcome is Outcome.NODATA



def test_zone_key_and_lookups_of_existing_names_memoised():
    zone = make_zone("memo.example", {"www": {"A": "192.0.2.1"}, "a.b": {"A": "192.0.2.2"}})
    assert zone.key == "memo.example"
    first = lookup(zone, "www.memo.example.", "A")
    assert lookup(zone, "www.memo.example.", "A") is first  # built once per zone
    assert lookup(zone, "b.memo.example.", "A").outcome is Outcome.NODATA  # empty non-terminal
    nx = [lookup(zone, "r0.memo.example.", "A")]
    before = len(zone.memo)
    nx += [lookup(zone, f"r{i}.memo.example.", "A") for i in range(1, 50)]
    # random names share the zone's one NXDOMAIN lookup and never grow the memo
    assert all(found is nx[0] and found.outcome is Outcome.NXDOMAIN for found in nx)
    assert len(zone.memo) == before
    assert nx[0].authority[0].ttl == 60 and nx[0].authority[0].rtype == "SOA"
