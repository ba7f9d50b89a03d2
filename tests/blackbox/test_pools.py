"""SPEC "Policies" and the ECS scope of pool answers, against a real ``gslb serve`` (dnspython + ECS).

Clients come from data/sample-city.csv (the sample database the harness serves with). Health checks
are off (``checks: false``), so every site counts as up and no test probes a non-loopback address.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import subprocess
import sys
import urllib.request

import dns.edns
import dns.flags
import dns.rcode
import dns.rdatatype
import maxminddb
import pytest
from harness import ROOT, Gslb

ORIGIN = "gslb.example.com."

# One site per continent (but Antarctica); addresses say which site answered.
SITES = {
    "gru": ("198.51.100.50", "2001:db8:ff::50"),
    "fra": ("192.0.2.10", "2001:db8:ff::10"),
    "iad": ("198.51.100.20", "2001:db8:ff::20"),
    "sin": ("203.0.113.30", "2001:db8:ff::30"),
    "syd": ("203.0.113.40", "2001:db8:ff::40"),
    "jnb": ("203.0.113.60", "2001:db8:ff::60"),
}
SITE_OF = {addr: site for site, addrs in SITES.items() for addr in addrs}

ZONE = f"""
zone: gslb.example.com
serial: 7
ttl: 3600
soa: {{minimum: 60}}
ns: [ns1.gslb.example.com]
records:
  ns1: {{A: 192.0.2.53}}
  www: {{pool: near}}
  two: {{pool: near2}}
  "*.cdn": {{pool: near}}
  docs: {{CNAME: www}}
  img: {{CNAME: pics.cdn}}
  v4only: {{pool: legacy}}
  sticky: {{pool: sticky}}
  map: {{pool: map}}
  primary: {{pool: primary}}
  shop: {{pool: shop}}
  rr: {{pool: rr}}
sites:
  gru: {{location: [-23.43, -46.47], addresses: [{SITES["gru"][0]}, "{SITES["gru"][1]}"]}}
  fra: {{location: [50.11, 8.68], addresses: [{SITES["fra"][0]}, "{SITES["fra"][1]}"], weight: 3}}
  iad: {{location: [38.95, -77.45], addresses: [{SITES["iad"][0]}, "{SITES["iad"][1]}"], weight: 1}}
  sin: {{location: [1.35, 103.82], addresses: [{SITES["sin"][0]}, "{SITES["sin"][1]}"]}}
  syd: {{location: [-33.87, 151.21], addresses: [{SITES["syd"][0]}, "{SITES["syd"][1]}"]}}
  jnb: {{location: [-26.2, 28.05], addresses: [{SITES["jnb"][0]}, "{SITES["jnb"][1]}"]}}
  old1: {{location: [50.11, 8.68], addresses: [192.0.2.201]}}
  old2: {{location: [38.95, -77.45], addresses: [192.0.2.202]}}
pools:
  near: {{policy: closest, sites: [gru, fra, iad, sin, syd, jnb], ttl: 30}}
  near2: {{policy: closest, sites: [gru, fra, iad, sin, syd, jnb], answers: 2}}
  legacy: {{policy: closest, sites: [old1, old2]}}
  sticky: {{policy: hash, sites: [gru, fra, iad, sin, syd, jnb]}}
  map:
    policy: geo
    sites: [gru, fra, iad, sin, syd, jnb]
    geo:
      "81.2.69.0/24": [sin]
      "2001:db8:2::/48": [syd]
      "5.9.128.0/17": [syd]
      GB: [iad]
      DE: [jnb]
      EU: [fra]
      OC: [syd, sin]
      default: [gru]
  primary: {{policy: failover, sites: [iad, fra]}}
  shop: {{policy: weighted, sites: [fra, iad]}}
  rr: {{policy: round_robin, sites: [fra, iad, sin]}}
"""

# (client address, its sample-database network, nearest site) for every continent, v4 and v6
NEAREST = [
    ("192.0.2.1", "192.0.2.0/26", "fra"),          # EU Frankfurt
    ("81.2.69.5", "81.2.69.0/24", "fra"),          # EU London
    ("194.85.1.2", "194.85.0.0/16", "fra"),        # EU Moscow
    ("198.51.100.7", "198.51.100.0/25", "iad"),    # NA Ashburn
    ("8.8.4.4", "8.8.4.0/24", "iad"),              # NA New York
    ("177.1.2.3", "177.0.0.0/14", "gru"),          # SA São Paulo
    ("181.1.2.3", "181.0.0.0/12", "gru"),          # SA Buenos Aires
    ("41.1.2.3", "41.0.0.0/11", "jnb"),            # AF Johannesburg
    ("41.90.1.1", "41.90.0.0/15", "jnb"),          # AF Nairobi
    ("49.128.0.1", "49.128.0.0/11", "sin"),        # AS Mumbai
    ("203.0.113.5", "203.0.113.0/25", "sin"),      # AS Singapore
    ("1.120.0.1", "1.120.0.0/13", "syd"),          # OC Sydney
    ("122.56.1.1", "122.56.0.0/13", "syd"),        # OC Auckland
    ("157.132.184.9", "157.132.184.0/24", "syd"),  # AN McMurdo
    ("2001:db8:1::1", "2001:db8:1::/48", "fra"),   # EU Frankfurt
    ("2a00:1a28::1", "2a00:1a28::/32", "fra"),     # EU Stockholm
    ("2001:db8:10::1", "2001:db8:10::/48", "iad"),  # NA Ashburn
    ("2604:a880::1", "2604:a880::/32", "iad"),     # NA New York
    ("2001:db8:20::1", "2001:db8:20::/48", "gru"),  # SA São Paulo
    ("2001:db8:30::1", "2001:db8:30::/48", "jnb"),  # AF Johannesburg
    ("2c0f:f248::1", "2c0f:f248::/32", "jnb"),     # AF Nairobi
    ("2001:db8:40::1", "2001:db8:40::/48", "sin"),  # AS Singapore
    ("2405:200::1", "2405:200::/32", "sin"),       # AS Mumbai
    ("2001:db8:50::1", "2001:db8:50::/48", "syd"),  # OC Sydney
    ("2001:db8:60::1", "2001:db8:60::/48", "syd"),  # AN McMurdo
    ("2001:db8:80:1::1", "2001:db8:80::/56", "fra"),  # EU Paris, a /56 inside one /48
    ("2001:db8:80:101::1", "2001:db8:80:100::/56", "fra"),  # EU Madrid, the next /56
]


TOKEN = "pools-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole module (HTTP on, with a token for site overrides)."""
    path = tmp_path_factory.mktemp("pools")
    (path / "token").write_text(TOKEN)
    srv = Gslb(path, {"gslb.example.com.yaml": ZONE}, {"checks": False, "api_token_file": str(path / "token"), "ecs_scope": "network"})
    srv.start(wait_for=ORIGIN)
    yield srv
    srv.stop()


@contextlib.contextmanager
def overridden(server, state: str, *sites: str):
    """Sites overridden to ``state`` over HTTP for the block; back to ``auto`` after it."""
    def put(site, value):
        req = urllib.request.Request(f"{server.http}/api/v1/sites/gslb.example.com/{site}/override",
                                     data=json.dumps({"state": value}).encode(), method="PUT",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
    try:
        for site in sites:
            put(site, state)
        yield
    finally:
        for site in sites:
            put(site, "auto")


def _ecs(reply) -> dns.edns.ECSOption:
    (option,) = [o for o in reply.options if isinstance(o, dns.edns.ECSOption)]
    return option


def _sites(reply) -> list[str]:
    """The sites whose addresses are in the answer, in answer order (CNAMEs skipped)."""
    out = []
    for rrset in reply.answer:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            for rdata in rrset:
                site = SITE_OF[rdata.address]
                if site not in out:
                    out.append(site)
    return out


def _family_prefix(ip: str) -> int:
    return 32 if ipaddress.ip_address(ip).version == 4 else 128


def _rtype(ip: str) -> str:
    return "A" if ipaddress.ip_address(ip).version == 4 else "AAAA"


# --- closest: each continent, v4 and v6, and the scope --------------------------------------

@pytest.mark.parametrize("ip,network,site", NEAREST, ids=[c[0] for c in NEAREST])
def test_closest_gives_the_nearest_site_and_scope_is_the_geoip_network(server, ip, network, site):
    full = _family_prefix(ip)
    for rtype in ("A", "AAAA"):
        reply = server.query("www." + ORIGIN, rtype, ecs=f"{ip}/{full}")
        assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
        assert _sites(reply) == [site], (rtype, reply)
        (rrset,) = reply.answer
        assert rrset.rdtype == dns.rdatatype.from_text(rtype) and rrset.ttl == 30
        option = _ecs(reply)
        assert option.srclen == full
        assert option.scopelen == ipaddress.ip_network(network).prefixlen


@pytest.mark.parametrize("ecs,scope,site", [
    ("81.2.69.0/24", 24, "fra"),       # a /24 network asked with its own /24
    ("192.0.2.0/28", 26, "fra"),       # a /26 network asked with /28
    ("192.0.2.0/24", 24, "fra"),       # a /26 network asked with /24: never more than the source
    ("198.51.100.0/22", 22, "iad"),    # a /25 network asked with /22
    ("177.1.2.0/24", 14, "gru"),       # a /14 network asked with /24
    ("81.2.0.0/16", 16, "gru"),        # 81.2.0.0 itself is unlocated; still never more than /16
    ("2001:db8:1::/56", 48, "fra"),    # a /48 network asked with /56
    ("2001:db8:1::/48", 48, "fra"),
    ("2a00:1a28:1::/48", 32, "fra"),   # a /32 network asked with /48
    ("2a00:1a28::/24", 24, "gru"),     # 2a00:1a00:: is unlocated; never more than /24
])
def test_scope_is_the_network_length_never_more_than_the_source_prefix(server, ecs, scope, site):
    reply = server.query("www." + ORIGIN, "A", ecs=ecs)
    assert _sites(reply) == [site]
    option = _ecs(reply)
    assert option.srclen == int(ecs.split("/")[1]) and option.scopelen == scope
    assert ipaddress.ip_address(option.address) == ipaddress.ip_network(ecs, strict=False).network_address


@pytest.mark.parametrize("ip,empty", [
    ("192.0.2.170", "192.0.2.160/27"),    # a gap inside TEST-NET-1
    ("203.0.113.245", "203.0.113.240/28"),  # a gap inside TEST-NET-3
])
def test_unlocated_addresses_get_sites_order_scope_is_the_empty_network(server, ip, empty):
    reply = server.query("www." + ORIGIN, "A", ecs=f"{ip}/32")
    assert _sites(reply) == ["gru"]  # first in `sites`
    assert _ecs(reply).scopelen == ipaddress.ip_network(empty).prefixlen
    two = server.query("two." + ORIGIN, "A", ecs=f"{ip}/32")
    assert _sites(two) == ["gru", "fra"]


@pytest.mark.parametrize("ip", ["10.20.30.40", "100.64.1.2", "2001:db8:9999::1", "2003::1"])
def test_unlocated_addresses_elsewhere_scope_from_the_database_tree(server, ip):
    """The empty network's length as the database itself reports it (never more than the source)."""
    with maxminddb.open_database(str(ROOT / "data" / "sample-city.mmdb")) as reader:
        record, prefix = reader.get_with_prefix_len(ip)
    assert record is None
    full = _family_prefix(ip)
    reply = server.query("www." + ORIGIN, _rtype(ip), ecs=f"{ip}/{full}")
    assert _sites(reply) == ["gru"]
    assert _ecs(reply).scopelen == prefix


def test_ecs_source_0_locates_by_packet_source_scope_0(server):
    # 127.0.0.1 is not in the database: sites order
    reply = server.query("www." + ORIGIN, "A", ecs="81.2.69.0/0")
    assert _sites(reply) == ["gru"]
    assert _ecs(reply).scopelen == 0 and _ecs(reply).srclen == 0
    v6 = server.query("www." + ORIGIN, "AAAA", ecs="::/0")
    assert _sites(v6) == ["gru"] and _ecs(v6).scopelen == 0


def test_without_ecs_located_by_packet_source_and_no_ecs_in_reply(server):
    reply = server.query("www." + ORIGIN, "A")
    assert _sites(reply) == ["gru"]
    assert not [o for o in reply.options if isinstance(o, dns.edns.ECSOption)]


# --- answers: N, families, NODATA -------------------------------------------------------------

def test_answers_2_gives_two_sites_addresses(server):
    reply = server.query("two." + ORIGIN, "A", ecs="81.2.69.5/32")
    (rrset,) = reply.answer
    assert {r.address for r in rrset} == {SITES["fra"][0], SITES["iad"][0]}
    v6 = server.query("two." + ORIGIN, "AAAA", ecs="2001:db8:50::/48")
    (rrset,) = v6.answer
    assert {r.address for r in rrset} == {SITES["syd"][1], SITES["sin"][1]}


def test_aaaa_comes_from_the_sites_v6_addresses(server):
    reply = server.query("www." + ORIGIN, "AAAA", ecs="198.51.100.7/32")  # v4 client, AAAA asked
    (rrset,) = reply.answer
    assert rrset.rdtype == dns.rdatatype.AAAA and [r.address for r in rrset] == [SITES["iad"][1]]


def test_pool_without_v6_gives_nodata_with_soa(server):
    reply = server.query("v4only." + ORIGIN, "AAAA", ecs="81.2.69.5/32")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert reply.answer == []
    (soa,) = reply.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == ORIGIN and soa.ttl == 60
    assert _ecs(reply).scopelen == 0  # no site of the pool has IPv6: the same for every client
    a = server.query("v4only." + ORIGIN, "A", ecs="81.2.69.5/32")
    assert [r.address for r in a.answer[0]] == ["192.0.2.201"]


# --- hash ---------------------------------------------------------------------------------------

def test_hash_scope_24_and_48_and_same_answer_within_a_subnet(server):
    for base in ("81.2.69", "10.1.2", "198.51.100", "203.0.113"):
        answers = set()
        for host, src in ((1, 32), (77, 32), (200, 28), (255, 32), (0, 24)):
            reply = server.query("sticky." + ORIGIN, "A", ecs=f"{base}.{host}/{src}")
            assert _ecs(reply).scopelen == min(24, src)
            answers.add(tuple(_sites(reply)))
        assert len(answers) == 1, base
    for net in ("2001:db8:1", "2a00:1a28:5", "2003:1:2"):
        answers = set()
        for host in ("::1", ":ffff::1", ":1234:5678::9"):
            reply = server.query("sticky." + ORIGIN, "AAAA", ecs=f"{net}{host}/128")
            assert _ecs(reply).scopelen == 48
            answers.add(tuple(_sites(reply)))
        assert len(answers) == 1, net


def test_hash_follows_weights_over_many_subnets(server):
    counts = collections.Counter(_sites(server.query("sticky." + ORIGIN, "A", ecs=f"10.{i // 256}.{i % 256}.0/24"))[0]
                                 for i in range(800))
    # weights fra 3, the five others 1: expected fra 300, each other 100 (hashing is deterministic)
    assert set(counts) == set(SITES)
    assert 240 <= counts["fra"] <= 360
    assert all(60 <= counts[s] <= 140 for s in SITES if s != "fra"), counts


def test_hash_only_the_clients_of_a_site_that_leaves_move(server):
    subnets = [f"172.{16 + i // 256}.{i % 256}.0/24" for i in range(300)]
    before = {net: _sites(server.query("sticky." + ORIGIN, "A", ecs=net))[0] for net in subnets}
    with overridden(server, "down", "iad"):
        after = {net: _sites(server.query("sticky." + ORIGIN, "A", ecs=net))[0] for net in subnets}
    back = {net: _sites(server.query("sticky." + ORIGIN, "A", ecs=net))[0] for net in subnets}
    assert back == before
    moved = {net for net in subnets if after[net] != before[net]}
    assert moved == {net for net in subnets if before[net] == "iad"} and moved
    assert "iad" not in after.values()


def test_failover_and_round_robin_skip_a_down_site(server):
    with overridden(server, "down", "iad"):
        assert _sites(server.query("primary." + ORIGIN, "A")) == ["fra"]
        seq = [_sites(server.query("rr." + ORIGIN, "A"))[0] for _ in range(6)]
        assert set(seq) == {"fra", "sin"} and seq[0::2] == [seq[0]] * 3 and seq[1::2] == [seq[1]] * 3
    assert _sites(server.query("primary." + ORIGIN, "A")) == ["iad"]


def test_closest_moves_to_the_next_nearest_site(server):
    with overridden(server, "down", "fra"):
        assert _sites(server.query("www." + ORIGIN, "A", ecs="81.2.69.5/32")) == ["iad"]
        # London: iad 5924 km, then jnb 9069 km (gru 9480 km)
        assert _sites(server.query("two." + ORIGIN, "A", ecs="81.2.69.5/32")) == ["iad", "jnb"]
    with overridden(server, "down", *SITES):  # when_all_down: all (fail open)
        assert _sites(server.query("www." + ORIGIN, "A", ecs="81.2.69.5/32")) == ["fra"]
    assert _sites(server.query("www." + ORIGIN, "A", ecs="81.2.69.5/32")) == ["fra"]


def test_hash_is_sticky_across_queries_and_spreads_subnets(server):
    first = {}
    for i in range(60):
        reply = server.query("sticky." + ORIGIN, "A", ecs=f"10.{i}.7.0/24")
        (site,) = _sites(reply)
        first[i] = site
    assert len(set(first.values())) >= 4  # 60 subnets over 6 equal sites
    for i in range(60):
        assert _sites(server.query("sticky." + ORIGIN, "A", ecs=f"10.{i}.7.9/32")) == [first[i]]


# --- geo ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("ecs,site,scope", [
    ("81.2.69.5/32", "sin", 24),         # CIDR beats its country GB and continent EU
    ("2001:db8:2::1/128", "syd", 48),    # v6 CIDR beats GB
    ("212.58.224.1/32", "iad", 19),      # country GB (Manchester)
    ("192.0.2.130/32", "iad", 27),       # country GB (London, in TEST-NET-1)
    ("5.9.1.1/32", "jnb", 17),           # country DE beats continent EU; 5.9.128.0/17 splits its /16
    ("5.9.200.1/32", "syd", 17),         # the CIDR inside the DE network
    ("5.9.1.0/24", "jnb", 17),
    ("2001:db8:70::1/128", "jnb", 48),   # DE without coordinates
    ("37.187.1.1/32", "fra", 16),        # continent EU (France)
    ("185.250.0.1/32", "fra", 22),       # continent only
    ("1.120.0.1/32", "syd", 13),         # continent OC, first of its list
    ("8.8.4.4/32", "gru", 24),           # default
    ("192.0.2.170/32", "gru", 27),       # unlocated: default
])
def test_geo_most_specific_match(server, ecs, site, scope):
    reply = server.query("map." + ORIGIN, "A", ecs=ecs)
    assert _sites(reply) == [site]
    assert _ecs(reply).scopelen == scope


# --- policies that ignore the client ------------------------------------------------------------

@pytest.mark.parametrize("name", ["primary", "shop", "rr"])
def test_policies_that_ignore_the_client_scope_0(server, name):
    for ecs in ("81.2.69.5/32", "2001:db8:50::/48", "198.51.100.0/24"):
        assert _ecs(server.query(f"{name}.{ORIGIN}", "A", ecs=ecs)).scopelen == 0


def test_failover_first_site_in_order(server):
    for ecs in ("81.2.69.5/32", "1.120.0.1/32", "10.0.0.1/32"):
        assert _sites(server.query("primary." + ORIGIN, "A", ecs=ecs)) == ["iad"]


def test_round_robin_cycles(server):
    seq = [_sites(server.query("rr." + ORIGIN, "A"))[0] for _ in range(9)]
    assert set(seq[:3]) == {"fra", "iad", "sin"}
    assert seq[3:6] == seq[:3] and seq[6:9] == seq[:3]


def test_weighted_distribution_follows_weights(server):
    counts = collections.Counter(_sites(server.query("shop." + ORIGIN, "A", ecs="81.2.69.5/32"))[0]
                                 for _ in range(600))
    # weights 3:1 -> expected 450:150; sd ~ 10.6, so these bounds are > 7 sd wide
    assert set(counts) == {"fra", "iad"}
    assert 370 <= counts["fra"] <= 530


# --- CNAMEs and wildcards leading to pools ------------------------------------------------------

def test_cname_to_pool_with_ecs_holds_the_cname_alone(server):
    reply = server.query("docs." + ORIGIN, "A", ecs="81.2.69.5/32")
    assert [rs.rdtype for rs in reply.answer] == [dns.rdatatype.CNAME]
    assert reply.answer[0][0].target.to_text() == "www." + ORIGIN
    # the resolver then asks the target with ECS and gets the client's answer
    assert _sites(server.query("www." + ORIGIN, "A", ecs="81.2.69.5/32")) == ["fra"]


def test_cname_to_pool_without_ecs_follows_the_chain(server):
    reply = server.query("docs." + ORIGIN, "AAAA")
    assert [rs.rdtype for rs in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.AAAA]
    assert _sites(reply) == ["gru"]  # located by 127.0.0.1: unknown, sites order


def test_cname_to_wildcard_pool(server):
    with_ecs = server.query("img." + ORIGIN, "A", ecs="1.120.0.1/32")
    assert [rs.rdtype for rs in with_ecs.answer] == [dns.rdatatype.CNAME]
    assert with_ecs.answer[0][0].target.to_text() == "pics.cdn." + ORIGIN
    without = server.query("img." + ORIGIN, "A")
    assert [rs.rdtype for rs in without.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert without.answer[1].name.to_text() == "pics.cdn." + ORIGIN


@pytest.mark.parametrize("ecs,site,scope", [
    ("1.120.0.1/32", "syd", 13),
    ("2001:db8:40::1/128", "sin", 48),
    ("81.2.69.0/24", "fra", 24),
])
def test_wildcard_name_answers_from_its_pool(server, ecs, site, scope):
    for rtype in ("A", "AAAA"):
        reply = server.query("anything.cdn." + ORIGIN, rtype, ecs=ecs)
        (rrset,) = reply.answer
        assert rrset.name.to_text() == "anything.cdn." + ORIGIN
        assert _sites(reply) == [site]
        assert _ecs(reply).scopelen == scope


# --- other databases: GeoIP2-Country (country centroids) and none at all ----------------------

COUNTRY_CLIENTS = [
    ("81.2.69.5", "fra"),        # GB
    ("8.8.4.4", "iad"),          # US
    ("177.1.2.3", "gru"),        # BR
    ("1.120.0.1", "syd"),        # AU
    ("41.1.2.3", "jnb"),         # ZA
    ("203.0.113.5", "sin"),      # SG
    ("2001:db8:50::1", "syd"),   # AU
    ("2a00:1a28::1", "fra"),     # SE
]


def test_country_database_locates_clients_at_country_centroids(tmp_path):
    db = tmp_path / "country.mmdb"
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_geoip_db.py"), "--country", "--out", str(db)],
                   check=True, capture_output=True, timeout=60)
    with maxminddb.open_database(str(db)) as reader:
        assert reader.metadata().database_type.endswith("Country")
        prefixes = {ip: reader.get_with_prefix_len(ip)[1] for ip, _ in COUNTRY_CLIENTS}
    srv = Gslb(tmp_path / "srv", {"gslb.example.com.yaml": ZONE}, {"checks": False, "http": None, "geoip": str(db), "ecs_scope": "network"})
    srv.start(wait_for=ORIGIN)
    try:
        for ip, site in COUNTRY_CLIENTS:
            full = _family_prefix(ip)
            reply = srv.query("www." + ORIGIN, _rtype(ip), ecs=f"{ip}/{full}")
            assert _sites(reply) == [site], ip
            assert _ecs(reply).scopelen == prefixes[ip], ip
    finally:
        srv.stop()


def test_without_a_database_every_client_is_unlocated(tmp_path):
    srv = Gslb(tmp_path / "srv", {"gslb.example.com.yaml": ZONE}, {"checks": False, "http": None, "geoip": None})
    srv.start(wait_for=ORIGIN)
    try:
        for ip in ("81.2.69.5", "1.120.0.1", "2001:db8:50::1"):
            reply = srv.query("www." + ORIGIN, "A", ecs=f"{ip}/{_family_prefix(ip)}")
            assert _sites(reply) == ["gru"] and _ecs(reply).scopelen == 0, ip
        # policies that do not need a location are unaffected
        assert _ecs(srv.query("sticky." + ORIGIN, "A", ecs="81.2.69.5/32")).scopelen == 24
        assert _sites(srv.query("map." + ORIGIN, "A", ecs="81.2.69.5/32")) == ["sin"]  # CIDR rule
        assert _sites(srv.query("map." + ORIGIN, "A", ecs="5.9.1.1/32")) == ["gru"]   # default
    finally:
        srv.stop()


# --- IPv4-mapped ECS clients (::ffff:a.b.c.d) ----------------------------------------------------

@pytest.mark.parametrize("v4,name,scope", [
    ("81.2.69.5", "map", 24),        # IPv4 CIDR rule 81.2.69.0/24 (sin)
    ("5.9.200.1", "map", 17),        # the /17 rule inside the DE network
    ("5.9.1.1", "map", 17),          # DE, outside that rule
    ("8.8.4.4", "map", 24),          # default
    ("81.2.69.5", "sticky", 24),     # hash on the IPv4 /24
    ("10.1.2.3", "sticky", 24),
    ("81.2.69.5", "www", 24),        # closest: the GeoIP network
])
def test_v4_mapped_ecs_client_answers_as_its_ipv4_with_the_scope_in_ipv6(server, v4, name, scope):
    plain = server.query(f"{name}.{ORIGIN}", "A", ecs=f"{v4}/32")
    assert _ecs(plain).scopelen == scope
    mapped = server.query(f"{name}.{ORIGIN}", "A", ecs=f"::ffff:{v4}/128")
    assert _sites(mapped) == _sites(plain)
    assert _ecs(mapped).scopelen == 96 + scope
    # every client inside the scope gets the same answer
    net = ipaddress.ip_network(f"::ffff:{v4}/{96 + scope}", strict=False)
    for other in (net.network_address, net.network_address + net.num_addresses // 3, net.broadcast_address):
        assert _sites(server.query(f"{name}.{ORIGIN}", "A", ecs=f"{other}/128")) == _sites(plain), other
    # never more than the source prefix
    assert _ecs(server.query(f"{name}.{ORIGIN}", "A", ecs=f"::ffff:{v4}/{96 + scope - 1}")).scopelen <= 96 + scope - 1
