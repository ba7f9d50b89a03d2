"""Zone loader: round trips into the model, every validation error class, serial auto, ZoneStore."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from gslb.errors import ConfigErrors
from gslb.model import POLICY_NAMES, ZoneSet
import gslb.zones as zones_module
from gslb.zones import ZoneStore, check_directory, load_zone_file, settled

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
zone: example.org
ns: [ns1.example.org]
records:
  ns1: {A: 192.0.2.1}
"""

SITES = """\
sites:
  fra: {location: [50.11, 8.68], addresses: [192.0.2.10, "2001:db8::10"], checks: [web]}
  iad: {location: [38.95, -77.45], addresses: [198.51.100.20]}
checks:
  web: {type: http, path: /healthz}
"""


def write(tmp_path: Path, text: str, name: str = "z.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(tmp_path: Path, text: str):
    return load_zone_file(write(tmp_path, text))


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load(tmp_path, text)
    return [str(e) for e in info.value.errors]


def rdata(zone, name, rtype):
    return [r.rdata for r in zone.nodes[name].records[rtype]]


# ---------------------------------------------------------------------------------------------
# Round trips


def test_every_record_type_round_trips(tmp_path):
    zone = load(tmp_path, BASE + """\
  "@":
    MX: ["10 mail.example.net.", "20 mx2"]
    TXT: ["v=spf1 -all", ["part one", "part two"]]
    CAA: ['0 issue "letsencrypt.org"', "128 iodef mailto:ops@example.org"]
  api:
    ttl: 60
    A: [192.0.2.80, 192.0.2.81]
    AAAA: ["2001:DB8:0:0::80"]
  docs: {CNAME: api}
  ext: {CNAME: www.example.net.}
  _sip._tcp: {SRV: "10 5 5060 api"}
  80.2.0.192.in-addr: {PTR: api.example.org.}
  long: {TXT: "%s"}
  sub: {NS: [ns.sub, ns.example.net.]}
  ns.sub: {A: 192.0.2.53, AAAA: "2001:db8::53"}
""" % ("x" * 300))
    o = "example.org."
    assert zone.origin == o and zone.key == "example.org"
    assert rdata(zone, o, "MX") == ["10 mail.example.net.", "20 mx2.example.org."]
    assert rdata(zone, o, "TXT") == ['"v=spf1 -all"', '"part one" "part two"']
    assert rdata(zone, o, "CAA") == ['0 issue "letsencrypt.org"', '128 iodef "mailto:ops@example.org"']
    assert rdata(zone, "api." + o, "A") == ["192.0.2.80", "192.0.2.81"]
    assert rdata(zone, "api." + o, "AAAA") == ["2001:db8::80"]
    assert {r.ttl for r in zone.nodes["api." + o].records["A"]} == {60}
    assert zone.nodes["api." + o].ttl == 60
    assert rdata(zone, "docs." + o, "CNAME") == ["api.example.org."]
    assert rdata(zone, "ext." + o, "CNAME") == ["www.example.net."]
    assert rdata(zone, "_sip._tcp." + o, "SRV") == ["10 5 5060 api.example.org."]
    assert rdata(zone, "80.2.0.192.in-addr." + o, "PTR") == ["api.example.org."]
    txt = rdata(zone, "long." + o, "TXT")[0]
    assert txt == '"%s" "%s"' % ("x" * 255, "x" * 45)
    assert rdata(zone, "sub." + o, "NS") == ["ns.sub.example.org.", "ns.example.net."]
    assert zone.nodes["docs." + o].records["CNAME"][0].ttl == 3600


def test_apex_soa_ns_and_defaults(tmp_path):
    zone = load(tmp_path, BASE)
    apex = zone.nodes["example.org."]
    assert rdata(zone, "example.org.", "NS") == ["ns1.example.org."]
    soa = zone.soa
    assert (soa.mname, soa.rname) == ("ns1.example.org.", "hostmaster.example.org.")
    assert (soa.refresh, soa.retry, soa.expire, soa.minimum, soa.ttl) == (3600, 600, 1209600, 60, 3600)
    assert apex.records["SOA"][0].rdata == (
        f"ns1.example.org. hostmaster.example.org. {zone.serial} 3600 600 1209600 60")
    assert apex.records["SOA"][0].ttl == 3600 and zone.ttl == 3600
    assert zone.ns == ("ns1.example.org.",)


def test_soa_values_and_zone_ttl(tmp_path):
    zone = load(tmp_path, """\
zone: Example.ORG.
serial: 2024010101
ttl: 300
soa: {mname: ns2, rname: ops@example.org, refresh: 7200, retry: 900, expire: 604800, minimum: 30}
ns: [ns1.example.org., ns2]
records:
  ns1: {A: 192.0.2.1}
  ns2: {AAAA: "2001:db8::2"}
  www: {A: 192.0.2.2}
""")
    assert zone.origin == "example.org."
    assert zone.serial == 2024010101
    assert zone.soa.mname == "ns2.example.org." and zone.soa.rname == "ops.example.org."
    assert zone.soa.negative_ttl == 30 and zone.soa.ttl == 300
    assert zone.ns == ("ns1.example.org.", "ns2.example.org.")
    assert zone.nodes["www.example.org."].records["A"][0].ttl == 300


def test_wildcards_empty_non_terminals_and_cuts(tmp_path):
    zone = load(tmp_path, BASE + """\
  "*.cdn": {A: 192.0.2.9}
  a.b.c: {TXT: deep}
  sub: {NS: ns.sub}
  ns.sub: {A: 192.0.2.53}
  "*": {TXT: catch-all}
""")
    o = "example.org."
    assert "*.cdn." + o in zone.nodes
    assert "*." + o in zone.nodes
    assert {"cdn." + o, "b.c." + o, "c." + o} <= zone.names
    assert {"cdn." + o, "b.c." + o, "c." + o}.isdisjoint(zone.nodes)
    assert set(zone.nodes) <= zone.names and o in zone.names
    assert zone.cuts == frozenset({"sub." + o})


def test_sites_checks_pools_parsed(tmp_path):
    zone = load(tmp_path, BASE + """\
  www: {pool: web, ttl: 20}
  geo: {pool: g}
""" + SITES + """\
  tcp1: {type: tcp, port: 5432, interval: 2.5, timeout: 1, rise: 1, fall: 1, target: db.example.net}
  tls: {type: https, expect_status: [200, 204], expect_body: OK, host: www.example.org}
pools:
  web: {policy: closest, sites: [fra, iad], answers: 2, ttl: 15, quorum: 0, when_all_down: nodata}
  g:
    policy: geo
    geo:
      "10.0.0.0/8": [iad]
      "2001:db8::/32": [fra]
      DE: [fra]
      de-x: [fra]
""".replace("      de-x: [fra]\n", "      NO: [iad]\n      EU: [fra, iad]\n      country:NA: [iad]\n      default: [iad, fra]\n"))
    fra = zone.sites["fra"]
    assert fra.location == (50.11, 8.68) and fra.ipv4 == ("192.0.2.10",) and fra.ipv6 == ("2001:db8::10",)
    assert fra.checks == ("web",) and fra.weight == 1 and zone.sites["iad"].checks == ()
    web = zone.checks["web"]
    assert (web.type, web.port, web.path, web.interval, web.timeout, web.rise, web.fall) == (
        "http", 80, "/healthz", 10.0, 3.0, 2, 3)
    assert web.expect_status is None and web.status_ok(302) and not web.status_ok(500)
    tcp1 = zone.checks["tcp1"]
    assert (tcp1.type, tcp1.port, tcp1.interval, tcp1.timeout, tcp1.target) == ("tcp", 5432, 2.5, 1.0, "db.example.net")
    tls = zone.checks["tls"]
    assert tls.port == 443 and tls.expect_status == frozenset({200, 204}) and tls.expect_body == "OK"
    pool = zone.pools["web"]
    assert (pool.policy, pool.sites, pool.answers, pool.ttl, pool.quorum, pool.when_all_down) == (
        "closest", ("fra", "iad"), 2, 15, 0.0, "nodata")
    g = zone.pools["g"]
    assert g.sites == ("iad", "fra")  # no sites: list -> union of the geo lists, first-seen order
    assert [(r.kind, r.key, r.sites) for r in g.geo] == [
        ("cidr", "10.0.0.0/8", ("iad",)), ("cidr", "2001:db8::/32", ("fra",)),
        ("country", "DE", ("fra",)), ("country", "NO", ("iad",)), ("continent", "EU", ("fra", "iad")),
        ("country", "NA", ("iad",)), ("default", "default", ("iad", "fra"))]
    assert (g.answers, g.ttl, g.quorum, g.when_all_down) == (1, 30, 0.5, "all")
    www = zone.nodes["www.example.org."]
    assert www.pool == "web" and www.ttl == 20 and dict(www.records) == {}


def test_country_no_stays_a_string_regression(tmp_path):
    zone = load(tmp_path, BASE + SITES + """\
pools:
  g:
    policy: geo
    sites: [fra, iad]
    geo: {NO: [fra], no: [iad], default: [iad]}
""".replace("no: [iad], ", ""))
    assert zone.pools["g"].geo[0].kind == "country" and zone.pools["g"].geo[0].key == "NO"


def test_pool_name_without_a_family_is_fine(tmp_path):
    zone = load(tmp_path, BASE + "  v6: {pool: p}\n" + SITES + """\
pools:
  p: {policy: failover, sites: [iad]}
""")
    assert zone.sites["iad"].ipv6 == () and zone.nodes["v6.example.org."].pool == "p"


def test_every_policy_name_is_accepted(tmp_path):
    pools = "".join(f"  p_{name}: {{policy: {name}, sites: [fra, iad]"
                    + (", geo: {default: [fra]}" if name == "geo" else "") + "}\n"
                    for name in POLICY_NAMES)
    zone = load(tmp_path, BASE + SITES + "pools:\n" + pools)
    assert sorted(p.policy for p in zone.pools.values()) == sorted(POLICY_NAMES)


def test_example_zone_loads():
    zone = load_zone_file(str(ROOT / "zones" / "example.yaml"))
    assert zone.origin == "gslb.example.com."
    assert zone.cuts == frozenset({"sub.gslb.example.com."})
    assert zone.nodes["www.gslb.example.com."].pool == "web"
    assert "*.cdn.gslb.example.com." in zone.nodes
    assert set(zone.sites) == {"fra", "iad", "sin", "syd", "gru"}
    assert {p.policy for p in zone.pools.values()} >= {"closest", "geo", "failover", "weighted", "hash"}
    assert zone.checks["web"].interval == 10
    kinds = {r.kind for r in zone.pools["regional"].geo}
    assert kinds == {"cidr", "country", "continent", "default"}


# ---------------------------------------------------------------------------------------------
# Serial auto


def test_serial_auto_uses_mtime_and_keeps_or_increases(tmp_path):
    path = write(tmp_path, BASE)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    first = load_zone_file(path)
    assert first.serial == 1_700_000_000
    # same content, touched: same serial
    os.utime(path, (1_700_000_500, 1_700_000_500))
    assert load_zone_file(path, previous=first).serial == first.serial
    # changed content, mtime not later (clock skew, restore from backup): previous + 1
    Path(path).write_text(BASE + "  www: {A: 192.0.2.2}\n")
    os.utime(path, (1_600_000_000, 1_600_000_000))
    second = load_zone_file(path, previous=first)
    assert second.serial == first.serial + 1 and second.digest != first.digest
    # changed content with a later mtime: the mtime
    Path(path).write_text(BASE + "  www: {A: 192.0.2.3}\n")
    os.utime(path, (1_800_000_000, 1_800_000_000))
    assert load_zone_file(path, previous=second).serial == 1_800_000_000
    # a restart (no previous) after an edit still gives a larger serial: the mtime
    assert load_zone_file(path).serial == 1_800_000_000


def test_explicit_serial(tmp_path):
    assert load(tmp_path, "serial: 7\n" + BASE).serial == 7


def test_serial_zero_and_the_largest_are_allowed(tmp_path):
    # RFC 1982: a serial is any 32-bit unsigned number, 0 included
    assert load(tmp_path, "serial: 0\n" + BASE).serial == 0
    assert load(tmp_path, "serial: 4294967295\n" + BASE).serial == 4294967295


def test_cname_chains_without_a_loop_are_fine(tmp_path):
    zone = load(tmp_path, BASE + "  a: {CNAME: b}\n  b: {CNAME: c}\n  c: {A: 192.0.2.5}\n"
                "  d: {CNAME: nowhere}\n  e: {CNAME: a.example.net.}\n  '*.w': {CNAME: c}\n"
                "  f: {CNAME: x.w}\n")
    assert rdata(zone, "a.example.org.", "CNAME") == ["b.example.org."]


def test_one_error_per_cname_loop(tmp_path):
    errors = errors_of(tmp_path, BASE + "  l1: {CNAME: l2}\n  l2: {CNAME: l1}\n  in: {CNAME: l2}\n")
    assert len([e for e in errors if "CNAME loop" in e]) == 1, errors


# ---------------------------------------------------------------------------------------------
# Every error class: (text with "#<" on the offending line, field path, message substring)

POOLS = SITES + "pools:\n  web: {policy: closest, sites: [fra, iad]}\n"

ERROR_CASES = [
    # unknown keys
    ("unknown-top", BASE + "foo: 1  #<\n", "foo", "unknown key 'foo' (allowed: zone, serial, ttl, soa, ns, records"),
    ("unknown-record-key", BASE + "  www: {A: 192.0.2.2, MXX: x}  #<\n", "records.www.MXX", "unknown key 'MXX' (allowed: ttl, pool, A, AAAA"),
    ("lowercase-type", BASE + "  www: {a: 192.0.2.2}  #<\n", "records.www.a", "record types are upper-case: A"),
    ("soa-in-records", BASE + "  www: {SOA: x}  #<\n", "records.www.SOA", "the SOA comes from the top-level soa:"),
    ("unknown-soa-key", BASE + "soa: {serial: 1}  #<\n", "soa.serial", "unknown key 'serial' (allowed: mname, rname"),
    ("unknown-site-key", BASE + "sites:\n  fra: {addresses: [192.0.2.1], loc: [1, 2]}  #<\n", "sites.fra.loc", "unknown key 'loc' (allowed: location, addresses, checks, weight)"),
    ("unknown-check-key", BASE + "checks:\n  web: {type: http, url: /}  #<\n", "checks.web.url", "unknown key 'url'"),
    ("unknown-pool-key", (BASE + POOLS).replace("iad]}", "iad], fallback: x}  #<"), "pools.web.fallback", "unknown key 'fallback' (allowed: policy, sites"),
    # wrong types
    ("ttl-type", BASE + "  www: {ttl: ten, A: 192.0.2.2}  #<\n", "records.www.ttl", "expected an integer, got a string"),
    ("zone-ttl-bool", "ttl: true  #<\n" + BASE, "ttl", "expected an integer, got a boolean"),
    ("records-list", "zone: example.org\nns: [ns1.example.net.]\nrecords: [a, b]  #<\n", "records", "expected a mapping, got a list"),
    ("node-scalar", BASE + "  www: 192.0.2.1  #<\n", "records.www", "expected a mapping of record types, got a string"),
    ("site-scalar", BASE + "sites:\n  fra: 1  #<\n", "sites.fra", "expected a mapping, got an integer"),
    ("interval-type", BASE + "checks:\n  web: {interval: soon}  #<\n", "checks.web.interval", "expected a number, got a string"),
    ("a-list-in-list", BASE + "  www: {A: [[192.0.2.1]]}  #<\n", "records.www.A", "expected A data, got a list"),
    # addresses
    ("bad-ipv4", BASE + "  www: {A: 192.0.2.300}  #<\n", "records.www.A", "'192.0.2.300' is not an IPv4 address"),
    ("v6-under-a", BASE + "  www: {A: '2001:db8::1'}  #<\n", "records.www.A", "is an IPv6 address; put it under AAAA"),
    ("v4-under-aaaa", BASE + "  www: {AAAA: 192.0.2.1}  #<\n", "records.www.AAAA", "is an IPv4 address; put it under A"),
    ("bad-ipv6", BASE + "  www: {AAAA: '2001:db8::g'}  #<\n", "records.www.AAAA", "is not an IPv6 address"),
    ("bad-site-address", BASE + "sites:\n  fra:\n    addresses:\n      - 192.0.2.1\n      - 300.1.1.1  #<\n", "sites.fra.addresses", "'300.1.1.1' is not an IPv4 or IPv6 address"),
    ("site-without-address", BASE + "sites:\n  fra: {location: [1, 2]}  #<\n", "sites.fra.addresses", "a site needs at least one address"),
    # out of range
    ("ttl-negative", BASE + "  www: {ttl: -1, A: 192.0.2.2}  #<\n", "records.www.ttl", "ttl -1 is out of range 0..2147483647"),
    ("zone-ttl-big", "ttl: 2147483648  #<\n" + BASE, "ttl", "ttl 2147483648 is out of range 0..2147483647"),
    ("soa-minimum", BASE + "soa: {minimum: -5}  #<\n", "soa.minimum", "minimum -5 is out of range"),
    ("serial-negative", "serial: -1  #<\n" + BASE, "serial", "serial -1 is out of range 0..4294967295"),
    ("serial-big", "serial: 4294967296  #<\n" + BASE, "serial", "serial 4294967296 is out of range 0..4294967295"),
    ("serial-word", "serial: later  #<\n" + BASE, "serial", "expected an integer 0..4294967295 or 'auto'"),
    # CNAME loops (the line of the loop's first CNAME in the file)
    ("cname-loop", BASE + "  l1: {CNAME: l2}  #<\n  l2: {CNAME: l1.example.org.}\n", "records.l1.CNAME",
     "CNAME loop: l1.example.org. -> l2.example.org. -> l1.example.org."),
    ("cname-self", BASE + "  self: {CNAME: self}  #<\n", "records.self.CNAME",
     "CNAME loop: self.example.org. -> self.example.org."),
    ("cname-loop-tail", BASE + "  a: {CNAME: b}\n  b: {CNAME: c}  #<\n  c: {CNAME: d}\n  d: {CNAME: b}\n", "records.b.CNAME",
     "CNAME loop: b.example.org. -> c.example.org. -> d.example.org. -> b.example.org."),
    ("cname-loop-wildcard", BASE + "  '*.w': {CNAME: x.w}  #<\n", "records.*.w.CNAME",
     "CNAME loop: *.w.example.org. -> *.w.example.org."),
    ("latitude", BASE + "sites:\n  fra:\n    location: [91, 8.68]  #<\n    addresses: [192.0.2.1]\n", "sites.fra.location", "latitude 91 is out of range -90..90"),
    ("longitude", BASE + "sites:\n  fra:\n    location:\n      - 50\n      - -181  #<\n    addresses: [192.0.2.1]\n", "sites.fra.location", "longitude -181 is out of range -180..180"),
    ("location-shape", BASE + "sites:\n  fra: {location: [50], addresses: [192.0.2.1]}  #<\n", "sites.fra.location", "expected [latitude, longitude]"),
    ("weight-negative", BASE + "sites:\n  fra: {addresses: [192.0.2.1], weight: -1}  #<\n", "sites.fra.weight", "weight -1 is out of range 0..1000000"),
    ("port", BASE + "checks:\n  web: {type: http, port: 70000}  #<\n", "checks.web.port", "port 70000 is out of range 1..65535"),
    ("interval-zero", BASE + "checks:\n  web: {interval: 0}  #<\n", "checks.web.interval", "interval 0 is out of range > 0"),
    ("timeout-ge-interval", BASE + "checks:\n  web: {interval: 2, timeout: 2}  #<\n", "checks.web.timeout", "timeout 2 must be less than interval 2"),
    ("rise-zero", BASE + "checks:\n  web: {rise: 0}  #<\n", "checks.web.rise", "rise 0 is out of range 1..1000"),
    ("fall-zero", BASE + "checks:\n  web: {fall: 0}  #<\n", "checks.web.fall", "fall 0 is out of range 1..1000"),
    ("expect-status", BASE + "checks:\n  web: {expect_status: [200, 700]}  #<\n", "checks.web.expect_status", "expected an HTTP status 100..599, got 700"),
    ("check-path", BASE + "checks:\n  web: {path: healthz}  #<\n", "checks.web.path", "path 'healthz' must start with '/'"),
    ("quorum-one", (BASE + POOLS).replace("iad]}", "iad], quorum: 1}  #<"), "pools.web.quorum", "quorum 1 is out of range 0..1 (1 excluded)"),
    ("quorum-negative", (BASE + POOLS).replace("iad]}", "iad], quorum: -0.1}  #<"), "pools.web.quorum", "quorum -0.1 is out of range 0..1 (1 excluded)"),
    ("answers-zero", (BASE + POOLS).replace("iad]}", "iad], answers: 0}  #<"), "pools.web.answers", "answers 0 is out of range 1..1000"),
    ("pool-ttl", (BASE + POOLS).replace("iad]}", "iad], ttl: -3}  #<"), "pools.web.ttl", "ttl -3 is out of range"),
    ("when-all-down", (BASE + POOLS).replace("iad]}", "iad], when_all_down: refuse}  #<"), "pools.web.when_all_down", "unknown when_all_down rule 'refuse' (one of: all, servfail, nodata)"),
    # record data
    ("mx-no-pref", BASE + "  '@': {MX: ['mail.example.net.']}  #<\n", "records.@.MX", "must be \"PREFERENCE EXCHANGE\""),
    ("mx-pref-range", BASE + "  '@': {MX: ['70000 mail.example.net.']}  #<\n", "records.@.MX", "preference 0..65535"),
    ("srv-short", BASE + "  _sip._tcp: {SRV: '10 5 sip.example.net.'}  #<\n", "records._sip._tcp.SRV", "must be \"PRIORITY WEIGHT PORT TARGET\""),
    ("caa-flags", BASE + "  '@': {CAA: '0x issue letsencrypt.org'}  #<\n", "records.@.CAA", "CAA flags '0x' must be a number 0..255"),
    ("caa-tag", BASE + "  '@': {CAA: '0 is-sue letsencrypt.org'}  #<\n", "records.@.CAA", "CAA tag 'is-sue' must be 1-15 letters or digits"),
    ("caa-short", BASE + "  '@': {CAA: 'issue letsencrypt.org'}  #<\n", "records.@.CAA", "must be \"FLAGS TAG VALUE\""),
    ("empty-label", BASE + "  a..b: {A: 192.0.2.2}  #<\n", "records.a..b", "has an empty label"),
    ("bad-label", BASE + "  'foo bar': {A: 192.0.2.2}  #<\n", "records.foo bar", "has an invalid label 'foo bar'"),
    ("hyphen-label", BASE + "  -foo: {A: 192.0.2.2}  #<\n", "records.-foo", "has an invalid label '-foo'"),
    ("long-label", BASE + "  %s: {A: 192.0.2.2}  #<\n" % ("a" * 64), "records." + "a" * 64, "longer than 63"),
    ("mid-wildcard", BASE + "  a.*.b: {A: 192.0.2.2}  #<\n", "records.a.*.b", "may only have '*' as its whole first label"),
    ("cname-target-wildcard", BASE + "  www: {CNAME: '*.example.net.'}  #<\n", "records.www.CNAME", "may not be a wildcard"),
    ("cname-target-ip", BASE + "  www: {CNAME: 192.0.2.1}  #<\n", "records.www.CNAME", "is an IP address, not a domain name"),
    ("duplicate-value", BASE + "  www:\n    A:\n      - 192.0.2.2\n      - 192.0.2.02\n".replace("192.0.2.02", "192.0.2.2  #<"), "records.www.A", "duplicate value '192.0.2.2'"),
    ("empty-list", BASE + "  www: {A: []}  #<\n", "records.www.A", "needs at least one value"),
    ("txt-mapping", BASE + "  www: {TXT: {a: b}}  #<\n", "records.www.TXT", "expected a string, got a mapping"),
    # CNAME rules
    ("cname-beside-data", BASE + "  www: {CNAME: x.example.net., A: 192.0.2.2}  #<\n", "records.www.CNAME", "a CNAME cannot be beside other data (also here: A)"),
    ("cname-beside-pool", BASE + "  www: {CNAME: x.example.net., pool: web}  #<\n" + POOLS, "records.www.CNAME", "a CNAME cannot be beside other data (also here: pool)"),
    ("cname-at-apex", BASE + "  '@': {CNAME: x.example.net.}  #<\n", "records.@.CNAME", "a CNAME cannot be at the zone apex"),
    ("two-cnames", BASE + "  www: {CNAME: [a.example.net., b.example.net.]}  #<\n", "records.www.CNAME", "only one CNAME"),
    ("apex-ns-in-records", BASE + "  '@': {NS: ns9.example.net.}  #<\n", "records.@.NS", "the apex NS records come from the top-level ns:"),
    # names outside the zone
    ("outside-zone", BASE + "  www.example.net.: {A: 192.0.2.2}  #<\n", "records.www.example.net.", "name 'www.example.net.' is outside the zone 'example.org.'"),
    ("doubled-origin", BASE + "  www.example.org: {A: 192.0.2.2}  #<\n", "records.www.example.org", "is relative and would become 'www.example.org.example.org.'"),
    ("same-name-twice", BASE + "  www.example.org.: {A: 192.0.2.2}\n  www: {A: 192.0.2.3}  #<\n", "records.www", "is already defined at line 5"),
    # pools and references
    ("pool-beside-a", BASE + "  www: {pool: web, A: 192.0.2.2}  #<\n" + POOLS, "records.www.A", "a pool name answers A and AAAA from pool"),
    ("unknown-pool", BASE + "  www: {pool: nope}  #<\n" + POOLS, "records.www.pool", "unknown pool 'nope' (defined: web)"),
    ("unknown-site-in-pool", SITES + BASE + "pools:\n  web:\n    policy: failover\n    sites:\n      - fra\n      - nope  #<\n", "pools.web.sites", "unknown site 'nope'"),
    ("unknown-site-in-geo", BASE + SITES + "pools:\n  g:\n    policy: geo\n    geo:\n      DE: [fra, nope]  #<\n", "pools.g.geo.DE", "unknown site 'nope'"),
    ("geo-site-not-in-pool", BASE + SITES + "pools:\n  g:\n    policy: geo\n    sites: [fra]\n    geo:\n      DE: [iad]  #<\n", "pools.g.geo.DE", "site 'iad' is not in this pool's sites"),
    ("unknown-check-in-site", BASE + "sites:\n  fra: {addresses: [192.0.2.1], checks: [nope]}  #<\n", "sites.fra.checks", "unknown check 'nope' (defined: none)"),
    ("site-twice-in-pool", BASE + SITES + "pools:\n  web: {policy: failover, sites: [fra, fra]}  #<\n", "pools.web.sites", "site 'fra' is listed twice"),
    ("pool-without-sites", BASE + SITES + "pools:\n  web: {policy: failover}  #<\n", "pools.web.sites", "a pool needs sites"),
    ("unknown-policy", (BASE + POOLS).replace("closest", "nearest").replace("iad]}", "iad]}  #<"), "pools.web.policy", "unknown policy 'nearest' (one of: closest, geo, failover, weighted, round_robin, hash, least_load, p2c, fastest)"),
    ("missing-policy", BASE + SITES + "pools:\n  web: {sites: [fra]}  #<\n", "pools.web.policy", "missing policy (one of: closest, geo"),
    ("geo-without-policy-geo", (BASE + POOLS).replace("iad]}", "iad], geo: {DE: [fra]}}  #<"), "pools.web.geo", "a geo map needs policy geo (this pool's policy is closest)"),
    ("geo-policy-without-map", BASE + SITES + "pools:\n  g: {policy: geo, sites: [fra]}  #<\n", "pools.g.geo", "policy geo needs a geo map"),
    ("geo-uk", BASE + SITES + "pools:\n  g:\n    policy: geo\n    geo:\n      UK: [fra]  #<\n", "pools.g.geo.UK", "'UK' is not an ISO 3166 country code (did you mean GB?)"),
    ("geo-host-bits", BASE + SITES + "pools:\n  g:\n    policy: geo\n    geo:\n      10.0.0.1/8: [fra]  #<\n", "pools.g.geo.10.0.0.1/8", "has host bits set; did you mean 10.0.0.0/8?"),
    ("geo-bad-cidr", BASE + SITES + "pools:\n  g:\n    policy: geo\n    geo:\n      10.0.0.0/33: [fra]  #<\n", "pools.g.geo.10.0.0.0/33", "is not a network in CIDR form"),
    ("geo-word", BASE + SITES + "pools:\n  g:\n    policy: geo\n    geo:\n      europe: [fra]  #<\n", "pools.g.geo.europe", "is not a geo key: use a CIDR network, a 2-letter country code, a continent code (AF, AN, AS, EU, NA, OC, SA)"),
    ("geo-bad-continent", BASE + SITES + "pools:\n  g:\n    policy: geo\n    geo:\n      continent:XX: [fra]  #<\n", "pools.g.geo.continent:XX", "'XX' is not a continent code"),
    ("geo-same-key", BASE + SITES + "pools:\n  g:\n    policy: geo\n    geo:\n      DE: [fra]\n      country:de: [iad]  #<\n", "pools.g.geo.country:de", "same key as line"),
    ("closest-without-location", BASE + SITES.replace("{location: [38.95, -77.45], ", "{") + "pools:\n  web:\n    policy: closest\n    sites:\n      - fra\n      - iad  #<\n", "pools.web.sites", "policy closest needs a location for every site; site 'iad' has none"),
    # NS and glue
    ("apex-ns-without-glue", "zone: example.org\nns:\n  - ns1.example.org\n  - ns2.example.org  #<\nrecords:\n  ns1: {A: 192.0.2.1}\n", "ns", "name server 'ns2.example.org.' is inside the zone but has no A/AAAA records (glue)"),
    ("delegation-without-glue", BASE + "  sub: {NS: [ns.sub, ns.example.net.]}  #<\n", "records.sub.NS", "name server 'ns.sub.example.org.' is inside the zone but has no A/AAAA"),
    ("ns-target-cname", BASE + "  sub: {NS: alias}  #<\n  alias: {CNAME: ns1}\n", "records.sub.NS", "is a CNAME (RFC 2181 10.3)"),
    ("data-below-cut", BASE + "  sub: {NS: ns.example.net.}\n  www.sub: {TXT: hidden}  #<\n", "records.www.sub", "below the delegation 'sub.example.org.'"),
    ("data-at-cut", BASE + "  sub: {NS: ns.example.net., MX: '10 mx.example.net.'}  #<\n", "records.sub", "a delegation point holds only NS"),
    ("ns-ip", "zone: example.org\nns: [192.0.2.1]  #<\n", "ns[0]", "'192.0.2.1' is an IP address, not a host name"),
    ("ns-number", "zone: example.org\nns: 5  #<\n", "ns", "expected a host name, got an integer"),
    ("soa-mname-number", BASE + "soa: {mname: 5}  #<\n", "soa.mname", "expected a host name, got an integer"),
    ("soa-rname-dotted-local", BASE + "soa: {rname: first.last@example.org}  #<\n", "soa.rname", "a local part with dots is not supported"),
    ("missing-zone", "ns: [ns1.example.net.]  #<\n", "zone", "missing required key 'zone'"),
    ("missing-ns", "zone: example.org  #<\n", "ns", "missing required key 'ns'"),
    ("empty-ns", "zone: example.org\nns: []  #<\n", "ns", "needs at least one name server"),
    ("bad-zone-name", "zone: exa mple.org  #<\nns: [ns.example.net.]\n", "zone", "has an invalid label"),
    # checks
    ("tcp-without-port", BASE + "checks:\n  db: {type: tcp}  #<\n", "checks.db", "a tcp check needs a port"),
    ("tcp-with-path", BASE + "checks:\n  db: {type: tcp, port: 5432, path: /x}  #<\n", "checks.db.path", "path applies to http and https checks only"),
    ("check-type", BASE + "checks:\n  web: {type: icmp}  #<\n", "checks.web.type", "unknown check type 'icmp' (one of: http, https, tcp)"),
]


@pytest.mark.parametrize("text,path,message", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_error_classes(tmp_path, text, path, message):
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "#<" in ln)
    file = str(tmp_path / "z.yaml")
    errors = errors_of(tmp_path, text)
    expected = f"{file}:{line}: {path}: "
    assert any(e.startswith(expected) and message in e for e in errors), (expected, message, errors)


def test_structural_errors_without_field(tmp_path):
    file = str(tmp_path / "z.yaml")
    assert errors_of(tmp_path, "- a\n- b\n") == [
        f"{file}:1: the top level must be a mapping with zone:, ns:, records:, ..., got a list"]
    errors = errors_of(tmp_path, "zone: example.org\nns: [a.example.net.\nrecords: {}\n")
    assert len(errors) == 1 and errors[0].startswith(f"{file}:3: YAML syntax error")
    errors = errors_of(tmp_path, BASE + "  www: {A: 192.0.2.2}\n  www: {A: 192.0.2.3}\n")
    assert errors == [f"{file}:6: duplicate key 'www' (first at line 5)"]


def test_duplicate_pool_name(tmp_path):
    file = str(tmp_path / "z.yaml")
    errors = errors_of(tmp_path, BASE + POOLS + "  web: {policy: failover, sites: [fra]}\n")
    line = len((BASE + POOLS).splitlines()) + 1
    assert errors == [f"{file}:{line}: duplicate key 'web' (first at line {line - 1})"]


def test_all_errors_of_a_file_are_reported(tmp_path):
    errors = errors_of(tmp_path, BASE + """\
  www: {A: 192.0.2.300}
  ftp: {AAAA: 192.0.2.1}
sites:
  fra: {location: [91, 0], addresses: [192.0.2.1]}
""")
    assert len(errors) == 3
    assert [int(e.split(":")[1]) for e in errors] == [5, 6, 8]


def test_empty_and_unreadable_files(tmp_path):
    file = str(tmp_path / "z.yaml")
    assert errors_of(tmp_path, "") == [f"{file}: the top level must be a mapping with zone:, ns:, records:, ..., got null"]
    with pytest.raises(ConfigErrors) as info:
        load_zone_file(str(tmp_path / "missing.yaml"))
    assert "cannot read" in str(info.value)


# ---------------------------------------------------------------------------------------------
# ZoneStore and check_directory


def zone_text(name: str, extra: str = "") -> str:
    return f"zone: {name}\nns: [ns1.{name}]\nrecords:\n  ns1: {{A: 192.0.2.1}}\n{extra}"


def test_store_loads_keeps_last_good_and_reports(tmp_path):
    (tmp_path / "a.yaml").write_text(zone_text("a.example"))
    (tmp_path / "b.yaml").write_text(zone_text("b.example"))
    (tmp_path / "notes.txt").write_text("not a zone")
    (tmp_path / ".#a.yaml").write_text("editor lock file")
    store = ZoneStore(str(tmp_path))
    result = store.reload()
    assert sorted(result["changed"]) == ["a.example", "b.example"] and result["errors"] == []
    zones = store.zones
    assert isinstance(zones, ZoneSet) and len(zones) == 2
    assert zones.find("www.a.example.") is zones.by_key("a.example")

    # nothing changed: same object, nothing reported
    assert store.reload() == {"changed": [], "errors": [], "removed": []}
    assert store.zones is zones

    # a broken edit keeps the last good zone and reports the error with file:line
    good = zones.by_key("a.example")
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.999}\n"))
    os.utime(path, ns=(good_mtime := os.stat(path).st_mtime_ns + 10**9, good_mtime))
    result = store.reload()
    assert result["changed"] == [] and len(result["errors"]) == 1
    assert result["errors"][0].startswith(f"{path}:5: records.www.A: ")
    assert store.zones is zones and store.zones.by_key("a.example") is good
    status = {s["file"]: s for s in store.status()}
    assert status[str(path)]["zone"] == "a.example" and "192.0.2.999" in status[str(path)]["error"]
    assert status[str(tmp_path / "b.yaml")]["error"] is None
    assert set(status[str(path)]) == {"zone", "serial", "file", "loaded_at", "error"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", status[str(path)]["loaded_at"])  # as http_api

    # fixing it swaps in a new zone with a larger serial and clears the error
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    os.utime(path, ns=(good_mtime + 10**9, good_mtime + 10**9))
    result = store.reload()
    assert result == {"changed": ["a.example"], "errors": [], "removed": []}
    new = store.zones.by_key("a.example")
    assert store.zones is not zones and new.serial > good.serial and "www.a.example." in new.nodes
    assert store.zones.by_key("b.example") is zones.by_key("b.example")
    assert all(s["error"] is None for s in store.status())

    # deleting a file removes its zone
    (tmp_path / "b.yaml").unlink()
    result = store.reload()
    assert result["removed"] == ["b.example"] and store.zones.by_key("b.example") is None
    assert [s["zone"] for s in store.status()] == ["a.example"]


def test_store_force_rereads_unchanged_files(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    store.reload()
    zones = store.zones
    stat = os.stat(path)
    path.write_text(zone_text("a.example").replace("192.0.2.1", "192.0.2.7"))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.reload()["changed"] == []  # same mtime and size: not noticed ...
    assert store.reload(force=True)["changed"] == ["a.example"]  # ... unless forced
    assert store.zones is not zones


def test_store_same_zone_in_two_files(tmp_path):
    (tmp_path / "a.yaml").write_text(zone_text("a.example"))
    (tmp_path / "b.yaml").write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    result = store.reload()
    assert result["changed"] == ["a.example"]
    assert result["errors"] == [f"{tmp_path / 'b.yaml'}:1: zone: zone a.example is already declared in {tmp_path / 'a.yaml'}"]
    assert store.zones.by_key("a.example").file == str(tmp_path / "a.yaml")
    errors = [str(e) for e in check_directory(str(tmp_path))]
    assert errors == result["errors"]


def test_store_broken_file_that_never_loaded(tmp_path):
    (tmp_path / "a.yaml").write_text("zone: a.example\n")
    store = ZoneStore(str(tmp_path))
    result = store.reload()
    assert result["changed"] == [] and len(result["errors"]) == 1 and len(store.zones) == 0
    assert store.status() == [{"zone": None, "serial": None, "file": str(tmp_path / "a.yaml"),
                               "loaded_at": None, "error": result["errors"][0]}]


def test_store_missing_directory(tmp_path):
    store = ZoneStore(str(tmp_path / "nope"))
    result = store.reload()
    assert result["changed"] == [] and "cannot read the zones folder" in result["errors"][0]


def test_store_missing_directory_reported_once_per_change(tmp_path):
    # regression: the file watch logged the same folder error every second
    store = ZoneStore(str(tmp_path / "nope"))
    assert len(store.reload()["errors"]) == 1
    assert store.reload()["errors"] == []
    assert len(store.reload(force=True)["errors"]) == 1  # an explicit reload still reports it
    (tmp_path / "nope").mkdir()
    (tmp_path / "nope" / "a.yaml").write_text(zone_text("a.example"))
    assert store.reload() == {"changed": ["a.example"], "errors": [], "removed": []}
    (tmp_path / "nope" / "a.yaml").unlink()
    (tmp_path / "nope").rmdir()
    assert len(store.reload()["errors"]) == 1  # a new failure is reported again


def test_check_directory(tmp_path):
    assert "no zone files" in str(check_directory(str(tmp_path))[0])
    (tmp_path / "a.yaml").write_text(zone_text("a.example", "  www: {A: 1.2.3}\n  ftp: {AAAA: x}\n"))
    (tmp_path / "b.yaml").write_text("zone: b.example\n")
    errors = [str(e) for e in check_directory(str(tmp_path))]
    assert len(errors) == 3
    assert errors[0].startswith(f"{tmp_path / 'a.yaml'}:5: records.www.A: ")
    assert errors[2].startswith(f"{tmp_path / 'b.yaml'}:1: ns: missing required key 'ns'")
    assert check_directory(str(ROOT / "zones")) == []


def test_store_second_file_takes_over_when_the_first_is_deleted(tmp_path):
    (tmp_path / "a.yaml").write_text(zone_text("a.example"))
    (tmp_path / "b.yaml").write_text(zone_text("a.example", "  www: {A: 192.0.2.5}\n"))
    store = ZoneStore(str(tmp_path))
    assert len(store.reload()["errors"]) == 1
    (tmp_path / "a.yaml").unlink()
    result = store.reload()
    assert result["changed"] == ["a.example"] and result["errors"] == []
    zone = store.zones.by_key("a.example")
    assert zone.file == str(tmp_path / "b.yaml") and "www.a.example." in zone.nodes


def test_messages_show_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "zones").mkdir()
    path = tmp_path / "zones" / "z.yaml"
    path.write_text(BASE + "sites:\n  fra: {location: [91, 8.68], addresses: [192.0.2.1]}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigErrors) as info:
        load_zone_file(str(path))
    assert str(info.value) == "zones/z.yaml:6: sites.fra.location: latitude 91 is out of range -90..90"
    assert [str(e) for e in check_directory(str(tmp_path / "zones"))] == [str(info.value)]


def test_yaml_integer_owner_names_and_values_keep_their_text(tmp_path):
    zone = load(tmp_path, BASE + "  010: {TXT: 007}\n  42: {A: 192.0.2.42}\n")
    assert rdata(zone, "010.example.org.", "TXT") == ['"007"']
    assert "42.example.org." in zone.nodes


def test_store_sees_a_file_replaced_by_rename_with_the_same_mtime_and_size(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    store.reload()
    st = os.stat(path)
    new = tmp_path / ".a.yaml.tmp"
    new.write_text(zone_text("a.example").replace("192.0.2.1", "192.0.2.7"))  # same size
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, path)
    assert os.stat(path).st_ino != st.st_ino
    assert store.reload()["changed"] == ["a.example"]
    records = store.zones.by_key("a.example").nodes["ns1.a.example."].records["A"]
    assert [r.rdata for r in records] == ["192.0.2.7"]


def test_store_settle_waits_for_a_fresh_file_to_stop_changing(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    mtime = os.stat(path).st_mtime_ns
    store = ZoneStore(str(tmp_path))
    # just written: not read at the first poll, nor at the next before SETTLE_SECONDS passed,
    # read once unchanged at the previous poll and SETTLE_SECONDS old
    assert store.reload(settle=True, now_ns=mtime + 100_000_000) == {"changed": [], "errors": [], "removed": []}
    assert len(store.zones) == 0
    assert store.reload(settle=True, now_ns=mtime + 999_000_000)["changed"] == []
    assert store.reload(settle=True, now_ns=mtime + 10**9)["changed"] == ["a.example"]
    # a file still growing between polls waits; its errors are not reported meanwhile
    path.write_text("zone: a.example\nns: [ns1")  # half written
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    assert store.reload(settle=True, now_ns=mtime + 10**9 + 1000)["errors"] == []
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    os.utime(path, ns=(mtime + 2 * 10**9, mtime + 2 * 10**9))
    assert store.reload(settle=True, now_ns=mtime + 2 * 10**9 + 1000) == {"changed": [], "errors": [], "removed": []}
    result = store.reload(settle=True, now_ns=mtime + 3 * 10**9)  # stable for one poll and 1 s old
    assert result == {"changed": ["a.example"], "errors": [], "removed": []}
    # a change whose mtime is old already still waits for a second poll (a writer that paused
    # at a point that is valid YAML is not read at once)
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.10}\n"))
    os.utime(path, ns=(mtime + 3 * 10**9, mtime + 3 * 10**9))
    assert store.reload(settle=True, now_ns=mtime + 5 * 10**9)["changed"] == []
    assert store.reload(settle=True, now_ns=mtime + 6 * 10**9)["changed"] == ["a.example"]
    # a forced reload never waits
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.11}\n"))
    assert store.reload(force=True, settle=True, now_ns=0)["changed"] == ["a.example"]


def test_settled():
    stamp = (1, 10**9, 5)
    # both: seen unchanged at the previous poll, and the mtime SETTLE_SECONDS (1 s) old
    assert settled(stamp, stamp, 2 * 10**9)
    assert not settled(stamp, stamp, 2 * 10**9 - 1)  # unchanged, but written less than 1 s ago
    assert not settled(stamp, None, 10**12)  # old, but not seen at the previous poll
    assert not settled(stamp, (1, 10**9, 4), 10**12)  # it changed since the previous poll
    assert not settled(stamp, (2, 10**9, 5), 10**12)  # replaced by another file


# ---------------------------------------------------------------------------------------------
# Serial auto across restarts: the folder's .gslb-serials.json (gslb serve only)


def _serial_of(folder: Path, key: str = "a.example", serial_state: bool = True) -> int:
    store = ZoneStore(str(folder), serial_state=serial_state)  # a new store: a restart
    store.reload(force=True)
    return store.zones.by_key(key).serial


def _set_mtime(path: Path, t: int) -> None:
    os.utime(path, (t, t))


def test_serial_state_restored_older_file_still_increases_after_a_restart(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    _set_mtime(path, 1_700_000_000)
    old_copy = path.read_text()
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    _set_mtime(path, 1_800_000_000)
    assert _serial_of(tmp_path) == 1_800_000_000
    state = json.loads((tmp_path / ".gslb-serials.json").read_text())
    assert state["version"] == 1 and state["files"]["a.yaml"]["serial"] == 1_800_000_000
    # a backup with its old mtime comes back (cp -p, rsync -t, tar x), then a restart
    path.write_text(old_copy)
    _set_mtime(path, 1_700_000_000)
    assert _serial_of(tmp_path) == 1_800_000_001
    # the same content touched: the recorded serial, also after another restart
    _set_mtime(path, 1_750_000_000)
    assert _serial_of(tmp_path) == 1_800_000_001
    # a later edit with a later mtime: the mtime
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.10}\n"))
    _set_mtime(path, 1_900_000_000)
    assert _serial_of(tmp_path) == 1_900_000_000
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_serial_state_several_edits_within_one_second(tmp_path):
    path = tmp_path / "a.yaml"
    serials = []
    for i in range(3):
        path.write_text(zone_text("a.example", f"  www: {{A: 192.0.2.{i + 1}}}\n"))
        _set_mtime(path, 1_700_000_000)
        serials.append(_serial_of(tmp_path))
    assert serials == [1_700_000_000, 1_700_000_001, 1_700_000_002]


def test_serial_state_live_reload_records_too(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    _set_mtime(path, 1_700_000_000)
    store = ZoneStore(str(tmp_path), serial_state=True)
    store.reload()
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    _set_mtime(path, 1_600_000_000)
    store.reload()
    assert store.zones.by_key("a.example").serial == 1_700_000_001
    assert _serial_of(tmp_path) == 1_700_000_001


def test_serial_state_only_when_asked(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    _set_mtime(path, 1_700_000_000)
    assert _serial_of(tmp_path, serial_state=False) == 1_700_000_000
    assert check_directory(str(tmp_path)) == []
    assert os.listdir(tmp_path) == ["a.yaml"]  # neither the store without it nor check writes


def test_serial_state_corrupt_file_is_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    _set_mtime(path, 1_700_000_000)
    for bad in ("{not json", '{"version": 1, "files": {"a.yaml": {"digest": 1, "serial": "x"}}}', "[]"):
        (tmp_path / ".gslb-serials.json").write_text(bad)
        caplog.clear()
        with caplog.at_level("WARNING", logger="gslb.zones"):
            assert _serial_of(tmp_path) == 1_700_000_000
        assert any("ignoring the serial state file" in r.getMessage() for r in caplog.records), bad
    # and it was replaced by a good one
    assert json.loads((tmp_path / ".gslb-serials.json").read_text())["files"]["a.yaml"]["serial"] == 1_700_000_000
    assert check_directory(str(tmp_path)) == []  # a dotfile is never a zone file


def test_serial_state_unwritable_folder_warns_once(tmp_path, caplog, monkeypatch):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    _set_mtime(path, 1_700_000_000)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(zones_module, "write_serial_state", refuse)
    store = ZoneStore(str(tmp_path), serial_state=True)
    with caplog.at_level("WARNING", logger="gslb.zones"):
        store.reload()
        for i in range(3):
            path.write_text(zone_text("a.example", f"  www: {{A: 192.0.2.{i + 1}}}\n"))
            _set_mtime(path, 1_700_000_000)
            store.reload(force=True)  # same size and mtime: the watch would not see it
    warnings = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1 and "Permission denied" in warnings[0]
    assert store.zones.by_key("a.example").serial == 1_700_000_003  # the in-process rule still holds


def test_range_text_is_worded_one_way():
    from gslb.yamlsafe import range_text

    assert range_text(1, 10) == "1..10"
    assert range_text(-90, 90) == "-90..90"
    assert range_text(0, None) == ">= 0"
    assert range_text(0.0, None, lo_open=True) == "> 0"
    assert range_text(0, 1.0, hi_open=True) == "0..1 (1 excluded)"


def test_check_zones_folder_names_the_setting(tmp_path):
    from gslb.zones import check_zones_folder

    assert check_zones_folder(str(tmp_path)) is None
    assert check_zones_folder(str(tmp_path / "nope")) == f"zones: the folder {tmp_path / 'nope'} does not exist"
    (tmp_path / "f").write_text("")
    assert check_zones_folder(str(tmp_path / "f"), "--zones") == f"--zones: {tmp_path / 'f'} is not a folder"


async def test_watch_ticks_wakes_survives_errors_and_stops():
    import asyncio

    from gslb.zones import watch

    stop, wake = asyncio.Event(), asyncio.Event()
    calls: list[bool] = []

    async def tick(forced: bool) -> None:
        calls.append(forced)
        if len(calls) == 1:
            raise RuntimeError("a bug in one tick")  # logged; the watch goes on
        if len(calls) == 2:
            wake.set()
        if len(calls) == 3:
            stop.set()

    await asyncio.wait_for(watch(tick, stop, wake=wake, interval=0.01), 5)
    assert calls == [False, False, True] and not wake.is_set()


def test_reload_changed_waits_for_a_file_to_settle(tmp_path):
    from gslb.zones import reload_changed

    store = ZoneStore(str(tmp_path))
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example", ""))
    assert reload_changed(store)["changed"] == []  # just written: maybe still being written
    old = time.time() - 2
    os.utime(path, (old, old))  # as if written 2 s ago: settled at the next poll
    assert reload_changed(store)["changed"] == []  # changed (mtime) since the last poll
    assert reload_changed(store)["changed"] == ["a.example"]  # unchanged since the last poll, old
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    assert reload_changed(store, force=True)["changed"] == ["a.example"]  # forced: read at once


# ---------------------------------------------------------------------------------------------
# Fast loading: libyaml or not, big files, reloads read off the event loop


def big_zone_text(records: int) -> str:
    """A generated zone of ``records`` owner names (mostly ``hN: {A: ...}``, with lists, AAAA,
    TXT, MX and CNAMEs mixed in): the generator of ``tools/bench_zone_load.py``."""
    name = "gslb_bench_zone_load"
    module = sys.modules.get(name)
    if module is None:
        loader = importlib.machinery.SourceFileLoader(name, str(ROOT / "tools" / "bench_zone_load.py"))
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
        sys.modules[name] = module  # its dataclasses look their module up while the class is built
        loader.exec_module(module)
    return module.zone_text(records, "big.example")


def zone_corpus() -> dict[str, str]:
    """Good and bad zone files: every error class, the example zone, generated ones, broken ones."""
    corpus = {name: text for name, text, *_ in ERROR_CASES}
    corpus["example"] = (ROOT / "zones" / "example.yaml").read_text()
    corpus["sites-pools"] = BASE + POOLS
    big = big_zone_text(600)
    corpus["generated"] = big
    lines = big.splitlines()
    for i, bad in enumerate(["  x: {A: 1.2.3.4", "  y: [a, b", "  z: {A: 300.1.1.1}", "  h5: {A: 192.0.2.9}",
                             "\tt: tab", "  w: {CNAME: h1, A: 1.2.3.4}", "  &a s: {A: 1.2.3.4}", "  u: !!str 5",
                             "  k: {TXT: yes, A: 010}", "  '010': {A: 1.2.3.4}", "  d: {A: 1.2.3.4, A: 1.2.3.5}",
                             "  o: {A: 0x10}", "  e: {}", "  i: {CNAME: '2001:db8::1'}"]):
        corpus[f"generated-{i}"] = "\n".join(lines[:40 + 37 * i] + [bad] + lines[40 + 37 * i:]) + "\n"
    return corpus


def load_outcome(path: Path, text: str) -> object:
    path.write_text(text)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    try:
        return load_zone_file(str(path))
    except ConfigErrors as exc:
        return [str(e) for e in exc.errors]


def test_libyaml_and_pure_loaders_give_identical_zones_and_errors(tmp_path, monkeypatch):
    import gslb.yamlsafe as yamlsafe

    corpus = zone_corpus()
    fast = {name: load_outcome(tmp_path / "z.yaml", text) for name, text in corpus.items()}
    monkeypatch.setattr(yamlsafe, "LIBYAML", False)
    pure = {name: load_outcome(tmp_path / "z.yaml", text) for name, text in corpus.items()}
    assert fast == pure
    assert sum(1 for v in fast.values() if isinstance(v, list)) > len(ERROR_CASES)  # errors were compared


def test_big_files_load_the_same_under_bulk_build(tmp_path, monkeypatch):
    import gc

    text = big_zone_text(10003)
    assert len(text.encode()) >= zones_module.BULK_BYTES
    path = tmp_path / "big.yaml"
    enabled = gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        bulk = load_outcome(path, text)
        assert gc.isenabled() == enabled and (not enabled or gc.get_freeze_count() > frozen)
    finally:
        gc.unfreeze()
    monkeypatch.setattr(zones_module, "BULK_BYTES", 1 << 60)
    assert load_outcome(path, text) == bulk
    assert len(bulk.nodes) == 10000 + 3  # and ns1, mail, the apex


def test_bulk_build_pauses_the_collector_and_nests():
    import gc

    assert gc.isenabled()
    try:
        with zones_module.bulk_build():
            assert not gc.isenabled()
            with zones_module.bulk_build():
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        gc.unfreeze()
        gc.disable()  # someone else's pause: left alone, nothing frozen
        with zones_module.bulk_build():
            pass
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()
        gc.unfreeze()


def test_relative_names_in_one_match_equal_the_long_way(monkeypatch):
    from gslb.yamlsafe import Errors

    texts = ["www", "a.b", "*.cdn", "*", "_sip._udp", "x-y", "-x", "x-", "WWW", " www ", "@", ".", "a.", "a..b",
             "example.org", "www.example.org", "a" * 63, "a" * 64, ".".join(["a" * 60] * 4), "é", "a.*.b",
             "a_b", "10", "1.2.3.4", "b.c" * 80]

    def all_of(names: "zones_module._Names") -> list:
        return [(names.relative(t, 1, "p", owner=owner), names.relative(t, 1, "p", allow_root=True))
                for t in texts for owner in (True, False)] + [str(e) for e in names.err.items]

    fast = all_of(zones_module._Names(Errors("f"), "example.org."))
    monkeypatch.setattr(zones_module, "_PLAIN_RELATIVE", re.compile(r"(?!)"))
    assert all_of(zones_module._Names(Errors("f"), "example.org.")) == fast


def test_store_read_changes_nothing_until_apply(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    store.reload()
    zones, status = store.zones, store.status()
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    update = store.read(force=True)
    assert update.changed == ["a.example"]
    assert store.zones is zones and store.status() == status  # readers see the old version ...
    assert store.apply(update) == {"changed": ["a.example"], "errors": [], "removed": []}
    assert store.zones is not zones and "www.a.example." in store.zones.by_key("a.example").nodes  # ... then the new


def test_identical_content_is_not_parsed_again(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    first = load_zone_file(str(path))
    path.write_text(zone_text("a.example"))  # same content, new mtime
    assert load_zone_file(str(path), previous=first) is first


def test_replaced_zones_are_freed_at_a_later_read_once_unused(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    store.reload()
    old = store.zones.by_key("a.example")
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    store.reload(force=True)
    assert len(store._retired) == 1
    store.reload()
    assert len(store._retired) == 1  # still used (by ``old``)
    del old
    store.reload()
    assert store._retired == []


async def test_reload_in_thread_reads_off_the_event_loop(tmp_path, monkeypatch):
    import asyncio
    import threading

    from gslb.zones import reload_in_thread

    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    loop_thread = threading.current_thread()
    go = threading.Event()
    read = store.read

    def blocked_read(*args: object) -> object:
        assert threading.current_thread() is not loop_thread
        assert go.wait(30), "the event loop did not run while the files were read"
        return read(*args)

    monkeypatch.setattr(store, "read", blocked_read)
    reload = asyncio.ensure_future(reload_in_thread(store, force=True))
    await asyncio.sleep(0)
    assert not reload.done() and len(store.zones) == 0
    go.set()  # only a running event loop gets here while the read waits
    assert (await reload)["changed"] == ["a.example"]
    assert store.zones.by_key("a.example") is not None


def test_data_the_wire_format_cannot_hold_is_a_located_error(tmp_path):
    file = str(tmp_path / "z.yaml")
    long_txt = "x" * 70000  # 70000 octets in 275 character-strings: RDATA over 65535
    errors = errors_of(tmp_path, BASE + f"  www: {{A: 192.0.2.300}}\n  txt: {{TXT: {long_txt}}}\n")
    assert errors == [f"{file}:5: records.www.A: '192.0.2.300' is not an IPv4 address",
                      f"{file}:6: records.txt.TXT: TXT data is 70275 octets in wire form, at most 65535"]


def test_bulk_build_shortens_the_switch_interval_meanwhile():
    import sys

    before = sys.getswitchinterval()
    try:
        with zones_module.bulk_build():
            assert sys.getswitchinterval() == min(before, zones_module.BULK_SWITCH_INTERVAL)
        assert sys.getswitchinterval() == before
    finally:
        import gc

        gc.unfreeze()


# ---------------------------------------------------------------------------------------------
# Hostile files (issue 9): RRsets too big for a message, control characters, size limit, links


def test_an_rrset_that_cannot_fit_a_message_is_a_located_error(tmp_path):
    file = str(tmp_path / "z.yaml")
    # each record fits (30001 octets of RDATA), three together do not fit a 65535-octet message
    many = ", ".join(repr("y" * 30000 + str(i)) for i in range(3))
    two = ", ".join(repr("y" * 30000 + str(i)) for i in range(2))
    errors = errors_of(tmp_path, BASE + f"  many:\n    TXT: [{many}]\n  ok: {{TXT: [{two}]}}\n")
    assert len(errors) == 1
    assert errors[0].startswith(f"{file}:6: records.many.TXT: the 3 TXT record(s) need ")
    assert errors[0].endswith("octets in a reply (header, question, records), more than the 65535 "
                              "a DNS message can hold")
    # the biggest single TXT record whose reply fits, and the smallest one whose does not
    name_wire = len("one.example.org.") + 1
    fits = 65535 - 12 - name_wire - 4 - 2 - 10  # header, question, owner pointer, fixed fields
    octets = fits - (fits + 255) // 256  # each character-string adds a length octet
    zone = load(tmp_path, BASE + f"  one: {{TXT: {'z' * octets}}}\n")
    record = zone.nodes["one.example.org."].records["TXT"][0]
    assert zones_module.rrset_message_size("one.example.org.", (record,)) == 65535
    errors = errors_of(tmp_path, BASE + f"  one: {{TXT: {'z' * (octets + 1)}}}\n")
    assert errors == [f"{file}:5: records.one.TXT: the 1 TXT record(s) need 65536 octets in a reply "
                      "(header, question, records), more than the 65535 a DNS message can hold"]


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\ufffe"])
@pytest.mark.parametrize("pure", [False, True])
def test_a_control_character_is_one_located_error(tmp_path, monkeypatch, char, pure):
    if pure:
        monkeypatch.setattr("gslb.yamlsafe.LIBYAML", False)
    file = str(tmp_path / "z.yaml")
    errors = errors_of(tmp_path, BASE + f"  www: {{TXT: \"a{char}b\"}}\n")
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{file}:5: the control character U+{ord(char):04X} is not allowed in YAML")
    # the escape the message suggests loads
    zone = load(tmp_path, BASE + '  www: {TXT: "a\\x01b"}\n')
    assert rdata(zone, "www.example.org.", "TXT") == ['"a\\001b"']


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "z.yaml"
    path.write_text(BASE + "  big: {TXT: " + "x" * 5000 + "}\n")
    size = path.stat().st_size
    opened = []
    real_open = open

    def spy(file, mode="r", *args, **kw):
        handle = real_open(file, mode, *args, **kw)
        if str(file) == str(path):
            real_read = handle.read
            handle.read = lambda n=-1: opened.append(n) or real_read(n)  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr("builtins.open", spy)
    with pytest.raises(ConfigErrors) as info:
        load_zone_file(str(path), max_bytes=4096)
    assert [str(e) for e in info.value.errors] == [
        f"{path}: file is {size} bytes, larger than the limit 4096 (max_zone_file_bytes in the server file)"]
    assert opened == []  # refused on its size: nothing read
    assert load_zone_file(str(path), max_bytes=size).origin == "example.org."
    monkeypatch.setattr(zones_module, "MAX_ZONE_FILE_BYTES", size - 1)  # the default limit
    with pytest.raises(ConfigErrors):
        load_zone_file(str(path))


def test_the_store_applies_its_size_limit_and_keeps_the_last_good_version(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path), max_file_bytes=2048)
    assert store.reload()["changed"] == ["a.example"]
    path.write_text(zone_text("a.example", "  big: {TXT: " + "x" * 3000 + "}\n"))
    result = store.reload()
    assert result["changed"] == [] and len(result["errors"]) == 1
    assert "larger than the limit 2048" in result["errors"][0]
    assert store.zones.by_key("a.example") is not None
    [entry] = store.status()
    assert entry["zone"] == "a.example" and "larger than the limit 2048" in entry["error"]
    errors = check_directory(str(tmp_path), max_file_bytes=2048)
    assert [e.message for e in errors] == [
        f"file is {path.stat().st_size} bytes, larger than the limit 2048 (max_zone_file_bytes in the server file)"]


def test_dangling_and_looping_links_are_located_errors(tmp_path):
    (tmp_path / "a.yaml").write_text(zone_text("a.example"))
    os.symlink(tmp_path / "nowhere.yaml", tmp_path / "dangling.yaml")
    os.symlink(tmp_path / "loop2.yaml", tmp_path / "loop1.yaml")
    os.symlink(tmp_path / "loop1.yaml", tmp_path / "loop2.yaml")
    store = ZoneStore(str(tmp_path))
    result = store.reload()
    assert result["changed"] == ["a.example"]
    assert result["errors"] == [
        f"{tmp_path}/dangling.yaml: cannot read: No such file or directory "
        f"(a symbolic link to {tmp_path}/nowhere.yaml, which does not exist)",
        f"{tmp_path}/loop1.yaml: cannot read: Too many levels of symbolic links "
        f"(a symbolic link to {tmp_path}/loop2.yaml that loops)",
        f"{tmp_path}/loop2.yaml: cannot read: Too many levels of symbolic links "
        f"(a symbolic link to {tmp_path}/loop1.yaml that loops)",
    ]
    status = {os.path.basename(e["file"]): e for e in store.status()}
    assert status["dangling.yaml"]["zone"] is None and "does not exist" in status["dangling.yaml"]["error"]
    assert "loops" in status["loop1.yaml"]["error"]
    # reported once, not at every poll; again with a forced reload
    assert store.reload()["errors"] == []
    assert len(store.reload(force=True)["errors"]) == 3
    assert [e.message.split(" (")[0] for e in check_directory(str(tmp_path))] == [
        "cannot read: No such file or directory", "cannot read: Too many levels of symbolic links",
        "cannot read: Too many levels of symbolic links"]
    # the target appears: the link loads
    (tmp_path / "nowhere.yaml").write_text(zone_text("b.example"))
    os.rename(tmp_path / "nowhere.yaml", tmp_path / "target.yml")  # not a *.yaml: only via the link
    os.unlink(tmp_path / "dangling.yaml")
    os.symlink(tmp_path / "target.yml", tmp_path / "dangling.yaml")
    result = store.reload()
    assert result["changed"] == ["b.example"]
    assert {os.path.basename(e["file"]): e["error"] for e in store.status()}["dangling.yaml"] is None


def test_a_link_that_breaks_keeps_its_zone_last_good_version(tmp_path):
    target = tmp_path / "real.yml"
    target.write_text(zone_text("a.example"))
    os.symlink(target, tmp_path / "a.yaml")
    store = ZoneStore(str(tmp_path))
    assert store.reload()["changed"] == ["a.example"]
    target.unlink()
    result = store.reload()
    assert len(result["errors"]) == 1 and "which does not exist" in result["errors"][0]
    assert result["removed"] == [] and store.zones.by_key("a.example") is not None
    [entry] = store.status()
    assert entry["zone"] == "a.example" and "which does not exist" in entry["error"]


def test_changed_on_disk_lists_what_a_reload_would_read(tmp_path):
    (tmp_path / "a.yaml").write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    assert store.changed_on_disk() == [str(tmp_path / "a.yaml")]
    store.reload(force=True)
    assert store.changed_on_disk() == []
    (tmp_path / "b.yaml").write_text(zone_text("b.example"))
    (tmp_path / "a.yaml").write_text(zone_text("a.example", "  www: {A: 192.0.2.2}\n"))
    assert store.changed_on_disk() == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    store.reload(force=True)
    (tmp_path / "b.yaml").unlink()
    assert store.changed_on_disk() == [str(tmp_path / "b.yaml")]
