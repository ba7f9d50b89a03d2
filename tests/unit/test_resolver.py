"""resolve(): CNAME chains, pools through a fake balancer, the ECS CNAME rule, ANY, REFUSED."""

from __future__ import annotations

import dns.edns
import dns.message
import pytest

from gslb.model import Pool, PoolAnswer, ZoneSet
from gslb.resolver import MAX_CHAIN, resolve
from gslb.wire import NOERROR, NXDOMAIN, REFUSED, SERVFAIL, parse_query

from harness import make_zone

WEB = Pool("web", "closest", ("fra", "iad"))
DOWN = Pool("down", "closest", ("fra",), when_all_down="servfail")
EMPTY = Pool("empty", "closest", ("fra",), when_all_down="nodata")

EXAMPLE = make_zone("example.com", {
    "ns1": {"A": "192.0.2.53", "AAAA": "2001:db8::53"},
    "www": {"A": "192.0.2.1", "TXT": '"www"', "MX": "10 mail.example.com."},
    "mail": {"A": "192.0.2.25"},
    "sip": {"SRV": "0 5 5060 mail.example.com."},
    "alias": {"CNAME": "www.example.com."},
    "alias2": {"CNAME": "alias.example.com."},
    "out": {"CNAME": "www.elsewhere.net."},
    "cross": {"CNAME": "host.example.org."},
    "gone": {"CNAME": "missing.example.com."},
    "loop1": {"CNAME": "loop2.example.com."},
    "loop2": {"CNAME": "loop1.example.com."},
    "lb": {"pool": "web", "TXT": '"pooled"'},
    "lbttl": {"pool": "web", "ttl": 5},
    "tolb": {"CNAME": "lb.example.com."},
    "dead": {"pool": "down"},
    "empty": {"pool": "empty"},
    "*.cdn": {"pool": "web"},
    "sub": {"NS": "ns.sub.example.com."},
    "ns.sub": {"A": "192.0.2.77"},
    "tosub": {"CNAME": "x.sub.example.com."},
}, pools={"web": WEB, "down": DOWN, "empty": EMPTY})
OTHER = make_zone("example.org", {"host": {"AAAA": "2001:db8::1"}})
ZONES = ZoneSet({EXAMPLE.origin: EXAMPLE, OTHER.origin: OTHER})


class FakePools:
    """Answers pools like a balancer would, and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def answer(self, zone, pool, rtype, client_ip, source_prefix):
        self.calls.append((zone.key, pool.name, rtype, client_ip, source_prefix))
        if pool.name == "down":
            return PoolAnswer("servfail", (), 30, 0)
        if pool.name == "empty":
            return PoolAnswer("nodata", (), 30, 0)
        address = "192.0.2.10" if rtype == "A" else "2001:db8::10"
        scope = min(source_prefix, 20) if source_prefix else 0
        return PoolAnswer("answer", (address,), 30, scope, ("fra",))


def query(name: str, rdtype: str = "A", ecs: str | None = None, rdclass: str = "IN"):
    options = None
    if ecs is not None:
        addr, prefix = ecs.split("/")
        options = [dns.edns.ECSOption(addr, int(prefix))]
    wire = dns.message.make_query(name, rdtype, rdclass=rdclass, use_edns=0 if options else False,
                                  options=options).to_wire()
    return parse_query(wire)[1]


def run(name, rdtype="A", ecs=None, pools=None, client="203.0.113.9", **kw):
    return resolve(query(name, rdtype, ecs, **kw), client, ZONES, pools or FakePools())


def texts(records):
    return [(r.name, r.rtype, r.rdata) for r in records]


def test_static_answer_is_authoritative():
    response = run("www.example.com.")
    assert response.rcode == NOERROR and response.aa and response.ecs_scope == 0
    assert texts(response.answer) == [("www.example.com.", "A", "192.0.2.1")]
    assert response.zone == "example.com"


def test_name_outside_zones_refused():
    response = run("www.example.net.")
    assert response.rcode == REFUSED and not response.aa and not response.answer


def test_class_other_than_in_refused():
    assert run("www.example.com.", "A", rdclass="CH").rcode == REFUSED


@pytest.mark.parametrize("qtype", ["AXFR", "IXFR"])
def test_zone_transfer_refused(qtype):
    assert run("example.com.", qtype).rcode == REFUSED


def test_nxdomain_and_nodata():
    nx = run("nope.example.com.")
    assert nx.rcode == NXDOMAIN and nx.aa and nx.authority[0].rtype == "SOA" and nx.authority[0].ttl == 60
    nodata = run("www.example.com.", "AAAA")
    assert nodata.rcode == NOERROR and not nodata.answer and nodata.authority[0].rtype == "SOA"


def test_cname_chain_followed_in_zone():
    response = run("alias2.example.com.")
    assert texts(response.answer) == [
        ("alias2.example.com.", "CNAME", "alias.example.com."),
        ("alias.example.com.", "CNAME", "www.example.com."),
        ("www.example.com.", "A", "192.0.2.1"),
    ]


def test_cname_chain_into_other_served_zone():
    response = run("cross.example.com.", "AAAA")
    assert texts(response.answer)[-1] == ("host.example.org.", "AAAA", "2001:db8::1")


def test_cname_out_of_served_zones_stops():
    response = run("out.example.com.")
    assert response.rcode == NOERROR and texts(response.answer) == [
        ("out.example.com.", "CNAME", "www.elsewhere.net.")]


def test_cname_to_missing_name_is_nxdomain_with_cname():
    response = run("gone.example.com.")
    assert response.rcode == NXDOMAIN and len(response.answer) == 1 and response.authority


def test_cname_loop_is_safe():
    response = run("loop1.example.com.")
    assert response.rcode == NOERROR
    assert [r.name for r in response.answer] == ["loop1.example.com.", "loop2.example.com."]


def test_cname_chain_length_bounded():
    records = {f"c{i}": {"CNAME": f"c{i + 1}.long.test."} for i in range(20)}
    zone = make_zone("long.test", records)
    response = resolve(query("c0.long.test."), "192.0.2.1", ZoneSet({zone.origin: zone}), FakePools())
    assert len(response.answer) == MAX_CHAIN + 1


def test_cname_into_delegation_returns_chain():
    response = run("tosub.example.com.")
    assert response.aa and texts(response.answer) == [("tosub.example.com.", "CNAME", "x.sub.example.com.")]


def test_referral():
    response = run("www.sub.example.com.")
    assert response.rcode == NOERROR and not response.aa and not response.answer
    assert texts(response.authority) == [("sub.example.com.", "NS", "ns.sub.example.com.")]
    assert texts(response.additional) == [("ns.sub.example.com.", "A", "192.0.2.77")]


def test_pool_answer_without_ecs():
    pools = FakePools()
    response = run("lb.example.com.", pools=pools, client="203.0.113.9")
    assert texts(response.answer) == [("lb.example.com.", "A", "192.0.2.10")]
    assert response.answer[0].ttl == 30
    assert pools.calls == [("example.com", "web", "A", "203.0.113.9", None)]
    # the same balancer answer again: the same records (built and encoded once)
    assert run("lb.example.com.", pools=pools, client="203.0.113.9").answer is response.answer


def test_pool_node_ttl_overrides_pool_ttl():
    assert run("lbttl.example.com.", "AAAA").answer[0].ttl == 5


def test_pool_with_ecs_uses_subnet_and_scope():
    pools = FakePools()
    response = run("lb.example.com.", ecs="198.51.100.0/24", pools=pools)
    assert pools.calls == [("example.com", "web", "A", "198.51.100.0", 24)]
    assert response.ecs_scope == 20


def test_ecs_source_prefix_zero_uses_packet_source_scope_zero():
    pools = FakePools()
    response = run("lb.example.com.", ecs="0.0.0.0/0", pools=pools, client="203.0.113.9")
    assert pools.calls == [("example.com", "web", "A", "203.0.113.9", 0)]
    assert response.ecs_scope == 0


def test_wildcard_pool():
    response = run("x.y.cdn.example.com.", "AAAA")
    assert texts(response.answer) == [("x.y.cdn.example.com.", "AAAA", "2001:db8::10")]


def test_pool_static_records_and_nodata():
    assert texts(run("lb.example.com.", "TXT").answer) == [("lb.example.com.", "TXT", '"pooled"')]
    nodata = run("lb.example.com.", "MX")
    assert nodata.rcode == NOERROR and not nodata.answer and nodata.authority


def test_pool_servfail_and_nodata_outcomes():
    assert run("dead.example.com.").rcode == SERVFAIL
    empty = run("empty.example.com.")
    assert empty.rcode == NOERROR and not empty.answer and empty.authority[0].rtype == "SOA"


def test_cname_to_pool_followed_without_ecs():
    response = run("tolb.example.com.")
    assert texts(response.answer) == [
        ("tolb.example.com.", "CNAME", "lb.example.com."), ("lb.example.com.", "A", "192.0.2.10")]


def test_cname_to_pool_with_ecs_answers_cname_alone():
    pools = FakePools()
    response = run("tolb.example.com.", ecs="198.51.100.0/24", pools=pools)
    assert texts(response.answer) == [("tolb.example.com.", "CNAME", "lb.example.com.")]
    assert response.ecs_scope == 0 and pools.calls == []


def test_cname_to_static_with_ecs_followed():
    response = run("alias.example.com.", ecs="198.51.100.0/24")
    assert len(response.answer) == 2 and response.ecs_scope == 0


def test_any_is_minimal():
    response = run("www.example.com.", "ANY")
    assert response.rcode == NOERROR and {r.rtype for r in response.answer} == {"A"}


def test_any_at_pool_name_is_hinfo():
    response = run("empty.example.com.", "ANY")
    assert texts(response.answer) == [("empty.example.com.", "HINFO", '"RFC8482" ""')]


def test_any_at_cname_returns_cname_only():
    assert texts(run("alias.example.com.", "ANY").answer) == [("alias.example.com.", "CNAME", "www.example.com.")]


def test_any_missing_name_nxdomain():
    assert run("nope.example.com.", "ANY").rcode == NXDOMAIN


def test_apex_ns_gets_glue():
    response = run("example.com.", "NS")
    assert texts(response.additional) == [
        ("ns1.example.com.", "A", "192.0.2.53"), ("ns1.example.com.", "AAAA", "2001:db8::53")]


def test_mx_and_srv_targets_get_addresses():
    assert texts(run("www.example.com.", "MX").additional) == [("mail.example.com.", "A", "192.0.2.25")]
    assert texts(run("sip.example.com.", "SRV").additional) == [("mail.example.com.", "A", "192.0.2.25")]


def test_soa_query():
    response = run("example.com.", "SOA")
    assert response.answer[0].rtype == "SOA" and response.answer[0].ttl == 3600


# DS at a zone cut when both sides are served (RFC 4035 3.1.4.1): the parent answers.
PARENT = make_zone("test", {
    "sub": {"NS": "ns.sub.test."},
    "ns.sub": {"A": "192.0.2.88"},
    "tochild": {"CNAME": "sub.test."},
})
CHILD = make_zone("sub.test", {"www": {"A": "192.0.2.89"}}, ns=("ns.sub.test.",))
CUT = ZoneSet({PARENT.origin: PARENT, CHILD.origin: CHILD})


def test_ds_at_served_child_apex_answered_by_parent():
    response = resolve(query("sub.test.", "DS"), "192.0.2.1", CUT, FakePools())
    assert response.rcode == NOERROR and response.aa and not response.answer
    assert texts(response.authority) == [("test.", "SOA", PARENT.nodes["test."].records["SOA"][0].rdata)]
    assert response.zone == "test"


def test_ds_after_cname_to_child_apex_answered_by_parent():
    response = resolve(query("tochild.test.", "DS"), "192.0.2.1", CUT, FakePools())
    assert texts(response.answer) == [("tochild.test.", "CNAME", "sub.test.")]
    assert [r.name for r in response.authority] == ["test."]


def test_other_types_at_child_apex_answered_by_child():
    response = resolve(query("sub.test.", "SOA"), "192.0.2.1", CUT, FakePools())
    assert response.aa and [r.name for r in response.answer] == ["sub.test."]
    response = resolve(query("sub.test.", "NS"), "192.0.2.1", CUT, FakePools())
    assert response.aa and texts(response.answer) == [("sub.test.", "NS", "ns.sub.test.")]


def test_ds_at_apex_without_served_parent_answered_by_the_zone():
    response = resolve(query("sub.test.", "DS"), "192.0.2.1", ZoneSet({CHILD.origin: CHILD}), FakePools())
    assert response.rcode == NOERROR and response.aa and [r.name for r in response.authority] == ["sub.test."]
    response = resolve(query("test.", "DS"), "192.0.2.1", CUT, FakePools())
    assert response.rcode == NOERROR and [r.name for r in response.authority] == ["test."]
