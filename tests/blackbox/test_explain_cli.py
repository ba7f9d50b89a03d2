"""``gslb explain`` as a subprocess on the README's example zone gives what DNS gives the same client.

The DNS side is a real ``gslb serve`` with the same zone file (zones/example.yaml), asked with ECS
/32 (/128) for the client, since explain answers for the client's full address. Health checks are
off on both sides (every site counts as up), so nothing probes any address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.edns
import dns.rcode
import dns.rdatatype
import pytest
import yaml
from harness import ROOT, Gslb, eventually

ORIGIN = "gslb.example.com."
EXAMPLE = ROOT / "zones" / "example.yaml"

# (name, type, client): several pools of the example, every policy with a fixed answer for the client
CASES = [
    ("www", "A", "81.2.69.5"),          # closest: London -> fra
    ("www", "A", "8.8.4.4"),            # New York -> iad
    ("www", "A", "1.120.0.1"),          # Sydney -> syd
    ("www", "A", "177.1.2.3"),          # São Paulo -> gru
    ("www", "A", "49.128.0.1"),         # Mumbai -> sin
    ("www", "A", "192.0.2.170"),        # unlocated: sites order
    ("www", "AAAA", "2001:db8:50::1"),  # v6 client, v6 answer
    ("www", "AAAA", "2a00:1a28::1"),
    ("eu", "A", "192.0.2.5"),           # geo: CIDR
    ("eu", "A", "5.9.1.1"),             # geo: country DE
    ("eu", "A", "122.56.1.1"),          # geo: continent OC
    ("eu", "AAAA", "2001:db8:20::1"),   # geo: continent SA, v6
    ("eu", "A", "8.8.4.4"),             # geo: default
    ("db", "A", "41.1.2.3"),            # failover
    ("db", "AAAA", "2001:db8:40::1"),
    ("login", "A", "81.2.69.5"),        # hash
    ("login", "A", "203.0.113.7"),
    ("login", "AAAA", "2001:db8:41::9"),
    ("x.cdn", "A", "1.120.0.1"),        # wildcard -> pool web
    ("api", "A", "81.2.69.5"),          # static name: no pool
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with gslb.yaml: the repository's zones/ and sample database, checks off."""
    path = tmp_path_factory.mktemp("explain")
    (path / "gslb.yaml").write_text(yaml.safe_dump({
        "zones": str(ROOT / "zones"),
        "geoip": str(ROOT / "data" / "sample-city.mmdb"),
        "checks": False,
        "http": None,
    }))
    return path


TOKEN = "explain-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``gslb serve`` with the example zone (HTTP on, with a token for overrides)."""
    path = tmp_path_factory.mktemp("explain-dns")
    (path / "token").write_text(TOKEN + "\n")
    srv = Gslb(path, {"example.yaml": EXAMPLE.read_text()},
               {"checks": False, "api_token_file": str(path / "token"), "ecs_scope": "network"})
    srv.start(wait_for=ORIGIN)
    yield srv
    srv.stop()


def _http(server, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.http + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def run_explain(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``gslb explain ARGS -c workdir/gslb.yaml`` as a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "gslb", "--log-level", "warning", "explain", *args,
         "-c", str(workdir / "gslb.yaml")],
        cwd=workdir, capture_output=True, text=True, timeout=30, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


@pytest.fixture(scope="module")
def traces(workdir):
    """The JSON trace of every case (run in parallel: each is its own process)."""
    def one(case):
        name, rtype, client = case
        proc = run_explain(workdir, f"{name}.{ORIGIN}", rtype, "--client", client, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(CASES, pool.map(one, CASES), strict=True))


def _ecs(reply) -> dns.edns.ECSOption:
    (option,) = [o for o in reply.options if isinstance(o, dns.edns.ECSOption)]
    return option


def _full(client: str) -> int:
    return 32 if ipaddress.ip_address(client).version == 4 else 128


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_explain_json_matches_dns_for_the_same_client(server, traces, case):
    name, rtype, client = case
    trace = traces[case]
    reply = server.query(f"{name}.{ORIGIN}", rtype, ecs=f"{client}/{_full(client)}")
    assert trace["rcode"] == dns.rcode.to_text(reply.rcode())
    assert trace["name"] == f"{name}.{ORIGIN}" and trace["type"] == rtype
    (rrset,) = reply.answer
    assert sorted(trace["answers"]) == sorted(r.to_text() for r in rrset)
    assert trace["ttl"] == rrset.ttl
    assert trace["scope_prefix"] == _ecs(reply).scopelen
    assert trace["client"]["ip"] == str(ipaddress.ip_address(client))
    chosen = [c["site"] for c in trace["candidates"] if c["chosen"]]
    if name == "api":
        assert trace["pool"] is None and chosen == []
    else:
        assert trace["pool"] and len(chosen) == 1


def test_explain_trace_of_closest_lists_every_site_by_distance(traces):
    trace = traces[("www", "A", "81.2.69.5")]
    assert trace["pool"] == "web" and trace["policy"] == "closest"
    assert trace["client"]["country"] == "GB" and trace["client"]["continent"] == "EU"
    assert trace["client"]["network"] == "81.2.69.0/24"
    sites = [c["site"] for c in trace["candidates"]]
    assert sorted(sites) == ["fra", "gru", "iad", "sin", "syd"] and sites[0] == "fra"
    distances = [c["distance_km"] for c in trace["candidates"]]
    assert distances == sorted(distances) and 500 < distances[0] < 800  # London-Frankfurt ~640 km
    assert trace["answers"] == ["192.0.2.10"] and trace["scope_prefix"] == 24 and trace["ttl"] == 30


def test_explain_unlocated_client_uses_sites_order(traces):
    trace = traces[("www", "A", "192.0.2.170")]
    assert trace["client"]["location"] is None
    assert [c["site"] for c in trace["candidates"]] == ["fra", "iad", "sin", "syd", "gru"]
    assert trace["answers"] == ["192.0.2.10"] and trace["scope_prefix"] == 27


def test_explain_weighted_pool_answers_two_of_its_sites(workdir, server):
    proc = run_explain(workdir, "shop." + ORIGIN, "A", "--client", "81.2.69.5", "--json")
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)
    sites = {"192.0.2.10", "198.51.100.20", "203.0.113.30"}
    assert len(trace["answers"]) == 2 and set(trace["answers"]) <= sites and trace["scope_prefix"] == 0
    reply = server.query("shop." + ORIGIN, "A", ecs="81.2.69.5/32")
    (rrset,) = reply.answer
    assert len(rrset) == 2 and {r.address for r in rrset} <= sites and _ecs(reply).scopelen == 0


def test_explain_follows_a_cname_to_the_pool_as_dns_does_for_the_target(workdir, server):
    proc = run_explain(workdir, "docs." + ORIGIN, "AAAA", "--client", "2001:db8:50::1", "--json")
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)
    assert trace["chain"] == [f"docs.{ORIGIN} CNAME www.{ORIGIN}"] and trace["pool"] == "web"
    # with ECS the DNS reply holds the CNAME alone (RFC 7871 7.2.1); the target gives the address
    cname = server.query("docs." + ORIGIN, "AAAA", ecs="2001:db8:50::1/128")
    assert [rs.rdtype for rs in cname.answer] == [dns.rdatatype.CNAME]
    target = server.query("www." + ORIGIN, "AAAA", ecs="2001:db8:50::1/128")
    assert trace["answers"] == [r.address for r in target.answer[0]] == ["2001:db8:40::40"]
    assert trace["scope_prefix"] == _ecs(target).scopelen == 48


def test_explain_text_form(workdir, traces):
    proc = run_explain(workdir, "www." + ORIGIN, "A", "--client", "81.2.69.5")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"www.{ORIGIN} A for client 81.2.69.5" in out
    assert "GB" in out and "81.2.69.0/24" in out
    assert "web (policy closest)" in out
    chosen = [line.split() for line in out.splitlines() if line.strip().startswith("*")]
    assert [row[1] for row in chosen] == ["fra"]
    assert "NOERROR: 192.0.2.10" in out and "ECS scope /24" in out and "ttl 30" in out


@pytest.mark.parametrize("name,client,down,answer", [
    ("www", "81.2.69.5", ["fra"], "198.51.100.20"),                     # London: next nearest iad
    ("www", "81.2.69.5", ["gslb.example.com/fra"], "198.51.100.20"),    # ZONE/SITE form
    ("www", "81.2.69.5", ["fra", "iad"], "198.51.100.50"),              # then gru
    ("www", "1.120.0.1", ["syd"], "203.0.113.30"),                      # Sydney: then sin
    ("db", "41.1.2.3", ["fra"], "198.51.100.20"),                       # failover to iad
    ("eu", "5.9.1.1", ["fra"], "198.51.100.20"),    # geo: DE's list [fra] down: next match, default [fra, iad]
])
def test_explain_down_moves_the_answer_to_the_next_site(workdir, name, client, down, answer):
    args = [f"{name}.{ORIGIN}", "A", "--client", client, "--json"]
    for site in down:
        args += ["--down", site]
    proc = run_explain(workdir, *args)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)
    assert trace["answers"] == [answer]
    states = {c["site"]: c["state"] for c in trace["candidates"]}
    for site in down:
        assert states[site.rpartition("/")[2]] == "down"


@pytest.mark.parametrize("args", [
    ["www." + ORIGIN, "--client", "1.2.3.999"],           # bad IP
    ["www." + ORIGIN, "--client", "not-an-ip"],
    ["www." + ORIGIN, "A", "--client", "1.2.3.4", "--down", "nosuch"],  # unknown site
    ["www." + ORIGIN, "BOGUS", "--client", "1.2.3.4"],    # unknown type
    ["www." + ORIGIN],                                     # --client missing
])
def test_explain_usage_errors_exit_2(workdir, args):
    proc = run_explain(workdir, *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip()


def test_explain_missing_files_exit_1(tmp_path):
    missing = subprocess.run(
        [sys.executable, "-m", "gslb", "explain", "www." + ORIGIN, "--client", "1.2.3.4",
         "-c", str(tmp_path / "nope.yaml")], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "nope.yaml" in missing.stderr
    (tmp_path / "gslb.yaml").write_text(yaml.safe_dump({
        "zones": str(tmp_path / "no-zones"), "geoip": str(ROOT / "data" / "sample-city.mmdb")}))
    no_zones = subprocess.run(
        [sys.executable, "-m", "gslb", "explain", "www." + ORIGIN, "--client", "1.2.3.4",
         "-c", str(tmp_path / "gslb.yaml")], capture_output=True, text=True, timeout=30)
    assert no_zones.returncode == 1 and "no-zones" in no_zones.stderr and no_zones.stdout == ""


@pytest.mark.parametrize("name,rtype,client,down,rcode", [
    ("www", "A", "81.2.69.5", ["fra"], "NOERROR"),
    ("www", "AAAA", "2001:db8:50::1", ["syd", "sin"], "NOERROR"),
    ("eu", "A", "5.9.1.1", ["fra"], "NOERROR"),
    ("db", "A", "41.1.2.3", ["fra", "iad"], "SERVFAIL"),   # when_all_down: servfail
    ("login", "A", "81.2.69.5", ["fra", "iad", "sin"], "NOERROR"),
])
def test_explain_down_matches_dns_with_the_sites_overridden_down(workdir, server, name, rtype, client, down, rcode):
    args = [f"{name}.{ORIGIN}", rtype, "--client", client, "--json"]
    for site in down:
        args += ["--down", site]
    proc = run_explain(workdir, *args)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)
    assert trace["rcode"] == rcode
    try:
        for site in down:
            _http(server, "PUT", f"/api/v1/sites/gslb.example.com/{site}/override", {"state": "down"})
        def served_as_traced():
            reply = server.query(f"{name}.{ORIGIN}", rtype, ecs=f"{client}/{_full(client)}")
            got = sorted(r.to_text() for rrset in reply.answer for r in rrset)
            return reply if (dns.rcode.to_text(reply.rcode()), got) == (rcode, sorted(trace["answers"])) else None

        reply = eventually(served_as_traced, timeout=3,
                           what=f"{name} {rtype} for {client}: {rcode} {trace['answers']} as traced")
        if rcode == "NOERROR":
            assert trace["scope_prefix"] == _ecs(reply).scopelen
        # the HTTP endpoint gives the same trace as the command (one implementation)
        query = urllib.parse.urlencode({"name": f"{name}.{ORIGIN}", "type": rtype, "client": client})
        live = _http(server, "GET", f"/api/v1/explain?{query}")
        assert (live["rcode"], sorted(live["answers"])) == (rcode, sorted(trace["answers"]))
        assert [(c["site"], c["state"], c["chosen"]) for c in live["candidates"]] \
            == [(c["site"], c["state"], c["chosen"]) for c in trace["candidates"]]
    finally:
        for site in down:
            _http(server, "PUT", f"/api/v1/sites/gslb.example.com/{site}/override", {"state": "auto"})


# --- audit fixes (issue 3) ----------------------------------------------------------------------

def _gslb(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``gslb ARGS`` as a subprocess, without --log-level (the command's default)."""
    return subprocess.run([sys.executable, "-m", "gslb", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=30, env={k: v for k, v in os.environ.items() if k != "GSLB_LOG_LEVEL"})


def test_explain_and_check_log_no_info_lines_by_default(workdir):
    proc = _gslb(workdir, "explain", "www." + ORIGIN, "--client", "81.2.69.5", "-c", str(workdir / "gslb.yaml"))
    assert proc.returncode == 0 and "www." in proc.stdout
    assert " INFO " not in proc.stderr, proc.stderr
    proc = _gslb(workdir, "check", "-c", str(workdir / "gslb.yaml"))
    assert proc.returncode == 0 and " INFO " not in proc.stderr, proc.stderr


def test_explain_geoip_none_runs_without_a_database(workdir):
    proc = run_explain(workdir, "www." + ORIGIN, "--client", "81.2.69.5", "--geoip", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["client"]["location"] is None and got["client"]["country"] is None
    assert got["answers"] and got["scope_prefix"] == 0  # closest without a location: sites order, any client
    with_db = json.loads(run_explain(workdir, "www." + ORIGIN, "--client", "81.2.69.5", "--json").stdout)
    assert with_db["client"]["country"] == "GB"


def test_explain_link_local_client_with_a_zone_suffix(workdir, server):
    for name in ("www", "login", "eu"):  # closest, hash, geo with a CIDR rule
        proc = run_explain(workdir, f"{name}.{ORIGIN}", "A", "--client", "fe80::1%eth0", "--json")
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        assert got["client"]["ip"] == "fe80::1" and got["rcode"] == "NOERROR" and got["answers"]
        live = _http(server, "GET", f"/api/v1/explain?name={name}.{ORIGIN}&type=A&client=fe80::1%25eth0")
        assert live["client"]["ip"] == "fe80::1" and live["answers"] == got["answers"]


def test_explain_v4_mapped_client_matches_dns_with_mapped_ecs(workdir, server):
    proc = run_explain(workdir, "login." + ORIGIN, "A", "--client", "::ffff:81.2.69.5", "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["client"]["ip"] == "::ffff:81.2.69.5"
    assert got["subnet"] == "::ffff:81.2.69.0/120" and got["scope_prefix"] == 120
    reply = server.query("login." + ORIGIN, "A", ecs="::ffff:81.2.69.5/128")
    assert sorted(r.address for rr in reply.answer for r in rr) == sorted(got["answers"])
    assert _ecs(reply).scopelen == 120
    text = run_explain(workdir, "login." + ORIGIN, "A", "--client", "::ffff:81.2.69.5")
    assert "for client ::ffff:81.2.69.5" in text.stdout
