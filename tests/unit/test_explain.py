"""explain(): the same answer DNS gives, with the decision trace, for the example zone."""

from __future__ import annotations

import ipaddress
import random
import struct
from pathlib import Path

import pytest

from gslb.balancer import Balancer
from gslb.explain import explain, format_text
from gslb.model import Location, SiteStatus, StateView, ZoneSet
from gslb.resolver import resolve
from gslb.wire import CLASS_IN, OPCODE_QUERY, Ecs, Query, WireError, name_to_wire, type_number
from gslb.zonefile import load_zone_file

ROOT = Path(__file__).resolve().parents[2]


class FakeLocator:
    kind = "city"
    TABLE = {
        "192.0.2.0/24": ((48.85, 2.35), "FR", "EU"),
        "198.51.100.0/22": ((40.71, -74.0), "US", "NA"),
        "203.0.113.0/24": ((-33.87, 151.21), "AU", "OC"),
        "100.64.0.0/16": ((52.52, 13.40), "DE", "EU"),
        "2001:db8::/32": ((1.29, 103.85), "SG", "AS"),
    }

    def locate(self, ip):
        addr = ipaddress.ip_address(ip)
        for net, (latlon, country, continent) in self.TABLE.items():
            n = ipaddress.ip_network(net)
            if addr in n:
                return Location(ip, net, n.prefixlen, latlon, country, continent)
        plen = 8 if addr.version == 4 else 16
        return Location(ip, str(ipaddress.ip_network(f"{ip}/{plen}", strict=False)), plen)


@pytest.fixture(scope="module")
def zones():
    zone = load_zone_file(str(ROOT / "zones" / "example.yaml"))
    return ZoneSet({zone.origin: zone})


def balancer():
    return Balancer(FakeLocator(), {"eu-west": (53.35, -6.26)}, random.Random(1))


class DnsPools:
    def __init__(self, b, view):
        self.b, self.view = b, view

    def answer(self, zone, pool, rtype, client_ip, source_prefix):
        return self.b.answer(zone, pool, rtype, client_ip, source_prefix, self.view)


def dns(zones, b, view, name, qtype, client):
    """What DNS answers for a query carrying ECS client/32 (or /128)."""
    ip = ipaddress.ip_address(client)
    number = type_number(qtype)
    ecs = Ecs(1 if ip.version == 4 else 2, client, ip.max_prefixlen, ip.packed)
    q = Query(OPCODE_QUERY, False, False, name, number, CLASS_IN,
              name_to_wire(name) + struct.pack("!HH", number, CLASS_IN), edns=True, payload=1232, ecs=ecs)
    return resolve(q, "127.0.0.1", zones, DnsPools(b, view))


@pytest.mark.parametrize("client,site_addr", [
    ("192.0.2.7", "192.0.2.10"),        # Paris -> fra
    ("198.51.100.9", "198.51.100.20"),  # New York -> iad
    ("203.0.113.200", "203.0.113.40"),  # Sydney -> syd
])
def test_explain_matches_dns_for_closest(zones, client, site_addr):
    view = StateView(1, {})
    b = balancer()
    got = explain(zones, b, view, "www.gslb.example.com", "A", client)
    resp = dns(zones, b, view, "www.gslb.example.com.", "A", client)
    assert got["answers"] == [r.rdata for r in resp.answer] == [site_addr]
    assert got["scope_prefix"] == resp.ecs_scope
    assert got["rcode"] == "NOERROR" and got["ttl"] == 30
    assert got["pool"] == "web" and got["policy"] == "closest"
    assert got["client"]["ip"] == client and got["client"]["network"] == next(
        n for n in FakeLocator.TABLE if ipaddress.ip_address(client) in ipaddress.ip_network(n))
    chosen = [c for c in got["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and got["candidates"][0]["chosen"]
    dists = [c["distance_km"] for c in got["candidates"]]
    assert dists == sorted(dists)
    assert set(got["candidates"][0]) == {"site", "state", "distance_km", "load", "rtt_ms", "chosen", "reason"}


def test_explain_with_a_down_site_and_geo_pool(zones):
    view = StateView(2, {("gslb.example.com", "fra"): SiteStatus(override="down")})
    b = balancer()
    got = explain(zones, b, view, "eu.gslb.example.com.", "A", "100.64.3.3")  # DE
    resp = dns(zones, b, view, "eu.gslb.example.com.", "A", "100.64.3.3")
    assert got["answers"] == [r.rdata for r in resp.answer]
    assert got["policy"] == "geo"
    assert got["matched"] == "default"  # DE's list (fra) is down: fall back to the default list
    rows = {c["site"]: c for c in got["candidates"]}
    assert rows["fra"]["state"] == "down" and not rows["fra"]["chosen"]
    assert rows["iad"]["chosen"]
    assert got["scope_prefix"] == resp.ecs_scope == 16


def test_explain_follows_cname_and_ipv6(zones):
    view = StateView(1, {})
    b = balancer()
    got = explain(zones, b, view, "docs.gslb.example.com", "AAAA", "2001:db8:77::1")
    assert got["chain"] and "CNAME" in got["chain"][0]
    assert got["answers"] == ["2001:db8:30::30"]  # Singapore client -> sin
    assert got["pool"] == "web" and got["scope_prefix"] == 32


def test_explain_of_a_static_name_and_errors(zones):
    b = balancer()
    got = explain(zones, b, StateView(1, {}), "api.gslb.example.com", "A", "192.0.2.1")
    assert got["pool"] is None and got["policy"] is None and got["candidates"] == []
    assert got["answers"] == ["192.0.2.80", "192.0.2.81"] and got["ttl"] == 60
    assert got["client"]["country"] == "FR"
    got = explain(zones, b, StateView(1, {}), "nope.gslb.example.com", "A", "192.0.2.1")
    assert got["rcode"] == "NXDOMAIN" and got["answers"] == [] and got["ttl"] == 60
    got = explain(zones, b, StateView(1, {}), "www.example.org", "A", "192.0.2.1")
    assert got["rcode"] == "REFUSED"
    with pytest.raises(ValueError):
        explain(zones, b, StateView(1, {}), "www.gslb.example.com", "A", "not-an-ip")
    with pytest.raises(ValueError):
        explain(zones, b, StateView(1, {}), "www.gslb.example.com", "BOGUS", "192.0.2.1")


@pytest.mark.parametrize("name,qtype,words", [
    ("www.gslb.example.com", "BOGUS", "unknown query type 'BOGUS'"),
    ("www.gslb.example.com", "TYPE70000", "unknown query type 'TYPE70000'"),
    ("www.gslb.example.com", "forward", "unknown query type 'FORWARD'"),
    ("www..gslb.example.com", "A", "invalid name 'www..gslb.example.com': an empty label"),
    ("\u00e9.gslb.example.com", "A", "not ASCII"),
    ("x" * 64 + ".gslb.example.com", "A", "expected 1..63"),
])
def test_explain_of_a_bad_question_raises_wires_error(zones, name, qtype, words):
    """explain lets exactly wire's WireError (a ValueError with words) through: the CLI and the
    HTTP API turn it into their usage error / 400."""
    with pytest.raises(WireError) as info:
        explain(zones, balancer(), StateView(1, {}), name, qtype, "192.0.2.1")
    assert words in str(info.value)


def test_explain_servfail_when_all_down(zones):
    view = StateView(3, {("gslb.example.com", s): SiteStatus(override="down") for s in ("fra", "iad")})
    got = explain(zones, balancer(), view, "db.gslb.example.com", "A", "192.0.2.1")
    assert got["rcode"] == "SERVFAIL" and got["answers"] == []
    assert all("when_all_down: servfail" in c["reason"] for c in got["candidates"])


def test_format_text(zones):
    got = explain(zones, balancer(), StateView(1, {}), "www.gslb.example.com", "A", "192.0.2.7")
    text = format_text(got)
    assert "www.gslb.example.com. A for client 192.0.2.7" in text
    assert "pool     web (policy closest)" in text
    assert "NOERROR: 192.0.2.10" in text and "ECS scope /24" in text
    assert "*  fra" in text and "   iad" in text
    static = format_text(explain(zones, balancer(), StateView(1, {}), "api.gslb.example.com", "A", "192.0.2.7"))
    assert "static answer" in static


def test_explain_link_local_client_with_a_zone_suffix(zones):
    b = balancer()
    plain = explain(zones, b, StateView(1, {}), "www.gslb.example.com", "AAAA", "fe80::1")
    for client in ("fe80::1%eth0", "fe80::1%lo"):
        got = explain(zones, b, StateView(1, {}), "www.gslb.example.com", "AAAA", client)
        assert got["client"]["ip"] == "fe80::1"
        assert (got["answers"], got["scope_prefix"]) == (plain["answers"], plain["scope_prefix"])
    # a hash pool hashes the address (no inet_pton error on the zone)
    for name in ("login", "eu"):  # hash, and geo with a CIDR rule: the address is unpacked
        got = explain(zones, b, StateView(1, {}), f"{name}.gslb.example.com", "A", "fe80::1%eth0")
        assert got["rcode"] == "NOERROR" and got["answers"] and got["client"]["ip"] == "fe80::1"


def test_explain_shows_a_v4_mapped_client_in_mixed_notation(zones):
    got = explain(zones, balancer(), StateView(1, {}), "www.gslb.example.com", "A", "::ffff:192.0.2.1")
    assert got["client"]["ip"] == "::ffff:192.0.2.1"
    assert "for client ::ffff:192.0.2.1" in format_text(got)
