"""Health checks against a real ``gslb serve``: local backends flip, DNS answers follow.

Every check probes ``target: 127.0.0.1`` on the port of a backend from ``backends.py``; the site
addresses in the zone are documentation addresses that are only ever answered, never probed.
Outcomes are polled with generous deadlines; nothing asserts how fast something happened.
"""

from __future__ import annotations

import signal
import threading
import urllib.request
from typing import Any

import dns.exception
import pytest
from harness import (FALL, FRA, IAD, INTERVAL, ORIGIN, RISE, TIMEOUT, Gslb, answer, eventually, get_json,
                     site_entry, start_two_sites, two_site_zone)
from prometheus_client.parser import text_string_to_metric_families

#: interval x fall plus a generous margin for a loaded CI machine
DEADLINE = INTERVAL * FALL + 8.0


@pytest.mark.parametrize("failure, error", [
    ("failing_status", "status 503, expected 200"),
    ("failing_body", "body does not contain 'OK'"),
    ("refusing", "connect refused"),
    ("hanging", f"timeout after {TIMEOUT}s"),
    ("stalling_body", f"timeout after {TIMEOUT}s"),
])
def test_failover_follows_the_backend(gslb_server, backends, failure, error):
    fra, iad = backends(load=7), backends(load=3)
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port})
    assert answer(server) == {FRA}
    assert answer(server, "near") == {FRA}  # client without a location: sites order

    fra.set(failure)
    eventually(lambda: answer(server) == {IAD}, what=f"www moves to iad after fra {failure}")
    assert answer(server, "near") == {IAD}
    entry = site_entry(server, "fra")
    assert entry["state"] == "down"
    region = entry["regions"]["lab-1"]
    assert region["state"] == "down"
    # the error names the failing check and the probed address, then the readable reason
    assert region["error"] == f"c_fra 127.0.0.1: {error}"

    fra.set("healthy")
    eventually(lambda: answer(server) == {FRA}, what="www back on fra after rise")
    assert answer(server, "near") == {FRA}
    eventually(lambda: site_entry(server, "fra")["regions"]["lab-1"]["error"] is None, what="error cleared")


def test_status_shows_region_rtt_load_and_checked_at(gslb_server, backends):
    fra, iad = backends(load=7), backends(load=0.25)
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port})
    doc = get_json(server, "/api/v1/status")
    assert doc["region"] == "lab-1"
    sites = {s["site"]: s for s in doc["sites"]}
    assert set(sites) == {"fra", "iad"}
    for name, load in (("fra", 7), ("iad", 0.25)):
        assert sites[name]["state"] == "up"
        region = sites[name]["regions"]["lab-1"]
        assert region["state"] == "up"
        assert region["error"] is None
        assert region["load"] == load
        assert isinstance(region["rtt_ms"], (int, float)) and 0 <= region["rtt_ms"] < TIMEOUT * 1000
        assert region["checked_at"]
    pools = {p["pool"]: p for p in doc["pools"]}
    assert pools["web"]["up"] == 2 and pools["web"]["total"] == 2

    # a load change is read from the next responses
    fra.set("healthy", load=42)
    eventually(lambda: site_entry(server, "fra")["regions"]["lab-1"]["load"] == 42, what="load 42")


def test_tcp_check_refused_and_back(gslb_server, backends):
    fra, iad = backends(kind="tcp"), backends(kind="tcp")
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port}, {"fra": "tcp", "iad": "tcp"})
    assert answer(server) == {FRA}
    fra.set("refusing")
    eventually(lambda: answer(server) == {IAD}, what="tcp refused moves www to iad")
    assert site_entry(server, "fra")["regions"]["lab-1"]["error"] == "c_fra 127.0.0.1: connect refused"
    fra.set("healthy")
    eventually(lambda: answer(server) == {FRA}, what="tcp back")


@pytest.mark.parametrize("failure", ["refusing", "hanging", "failing_status"])
def test_site_down_at_start_is_never_in_the_first_answer(gslb_server, backends, failure):
    fra, iad = backends(), backends()
    fra.set(failure)
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port})
    # the very first answer the server gives already avoids fra
    assert answer(server) == {IAD}
    assert answer(server, "near") == {IAD}
    assert site_entry(server, "fra")["state"] == "down"
    fra.set("healthy")
    eventually(lambda: answer(server) == {FRA}, what="fra up after rise")


def test_all_down_fails_open(gslb_server, backends):
    fra, iad = backends(), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port})
    fra.set("failing_status")
    iad.set("refusing")
    eventually(lambda: {s["site"]: s["state"] for s in get_json(server, "/api/v1/status")["sites"]}
             == {"fra": "down", "iad": "down"}, what="both down")
    # when_all_down defaults to all: answer as if all were up (failover: first in order)
    assert answer(server) == {FRA}
    iad.set("healthy")
    eventually(lambda: answer(server) == {IAD}, what="iad up alone")


def test_http_check_sends_path_and_host(gslb_server, backends):
    fra, iad = backends(), backends()
    start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port})
    assert fra.last_request is not None
    line, headers = fra.last_request
    assert line.startswith("GET /health HTTP/1.")
    # the configured host, with the port as HTTP wants it for a non-default port (RFC 9110 7.2)
    assert headers["host"] == f"www.gslb.example.com:{fra.port}"


def test_least_load_follows_x_load(gslb_server, backends):
    fra, iad = backends(load=7), backends(load=3)
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port})
    assert answer(server, "light") == {IAD}
    fra.set("healthy", load=1)
    eventually(lambda: answer(server, "light") == {FRA}, what="least_load moves to fra")
    assert site_entry(server, "fra")["regions"]["lab-1"]["load"] == 1


def test_every_check_of_a_site_must_pass(gslb_server, backends):
    web, tcp, iad = backends(), backends(kind="tcp"), backends()
    zone = two_site_zone({"fra": web.port, "iad": iad.port}).replace(
        "checks: [c_fra]", "checks: [c_fra, c_fra_tcp]").replace(
        "checks:\n", f"checks:\n  c_fra_tcp: {{type: tcp, target: 127.0.0.1, port: {tcp.port}, "
                     f"interval: {INTERVAL}, timeout: {TIMEOUT}, rise: {RISE}, fall: {FALL}}}\n", 1)
    server = gslb_server({"gslb.example.com.yaml": zone}, config={"region": "lab-1"}, wait_for=ORIGIN)
    assert answer(server) == {FRA}
    tcp.set("refusing")
    eventually(lambda: answer(server) == {IAD}, what="fra down when its tcp check fails")
    error = site_entry(server, "fra")["regions"]["lab-1"]["error"]
    assert "c_fra_tcp" in error and "connect refused" in error
    tcp.set("healthy")
    eventually(lambda: answer(server) == {FRA}, what="fra back")


def test_first_round_covers_more_sites_than_the_in_flight_limit(gslb_server, backends):
    # 150 sites in one failover pool, the first 100 on a backend that accepts and never answers:
    # more targets than the 64 probes in flight of the regular schedule, yet the first answer
    # already skips every hanging site
    hang, ok = backends(), backends()
    hang.set("hanging")
    n, dead = 150, 100
    sites = "".join(f"  s{i}: {{addresses: [10.0.{i // 200}.{i % 200 + 1}], checks: [c{i}]}}\n" for i in range(n))
    checks = "".join(
        f"  c{i}: {{type: http, target: 127.0.0.1, port: {hang.port if i < dead else ok.port}, "
        f"interval: 5, timeout: 1, rise: 1, fall: 1}}\n" for i in range(n))
    pool = ", ".join(f"s{i}" for i in range(n))
    zone = (f"zone: gslb.example.com\nns: [ns1.gslb.example.com]\nrecords:\n  ns1: {{A: 192.0.2.53}}\n"
            f"  www: {{pool: web}}\nsites:\n{sites}checks:\n{checks}"
            f"pools:\n  web: {{policy: failover, sites: [{pool}], ttl: 5}}\n")
    server = gslb_server({"gslb.example.com.yaml": zone}, config={"region": "lab-1"}, wait_for=ORIGIN)
    assert answer(server) == {f"10.0.0.{dead + 1}"}
    states = {s["site"]: s["state"] for s in get_json(server, "/api/v1/status")["sites"]}
    assert sum(1 for i in range(dead) if states[f"s{i}"] == "down") == dead
    assert all(states[f"s{i}"] == "up" for i in range(dead, n))
    assert "unfinished after" not in server.log()


def start_fall3(gslb_server, backends):
    """fra and iad (fall 3, rise 2) on healthy backends; (server, fra backend)."""
    fra, iad = backends(), backends()
    zone = two_site_zone({"fra": fra.port, "iad": iad.port}).replace(f"fall: {FALL}\n", "fall: 3\n")
    assert zone.count("fall: 3\n") == 2
    server = gslb_server({"gslb.example.com.yaml": zone}, config={"region": "lab-1"}, wait_for=ORIGIN)
    assert answer(server) == {FRA}
    return server, fra


def fra_changes(server) -> list[dict[str, Any]]:
    """The recent state changes of site fra from /api/v1/status."""
    return [c for c in get_json(server, "/api/v1/status")["changes"] if c["site"] == "fra"]


def test_fewer_failures_than_fall_never_move_the_answer(gslb_server, backends):
    server, fra = start_fall3(gslb_server, backends)
    before = fra_changes(server)
    fra.fail_next(2)  # two failed probes in a row, then healthy again
    # poll until the two failures and three healthy probes after them were served; fra stays in
    # the answer and up at every look meanwhile
    mark: list[int] = []

    def probed_past_the_failures() -> bool:
        if not mark and fra.failed == 2:
            mark.append(fra.requests)
        assert answer(server) == {FRA}
        assert site_entry(server, "fra")["state"] == "up"
        return bool(mark) and fra.requests >= mark[0] + 3

    eventually(probed_past_the_failures, timeout=DEADLINE * 3,
               what="two failures and three healthy probes after them")
    assert answer(server) == {FRA}
    # gslb did see both failures, yet fra never changed state
    assert check_fails(server) >= 2
    assert fra_changes(server) == before


def test_fall_failures_move_the_answer_and_rise_passes_bring_it_back(gslb_server, backends):
    server, fra = start_fall3(gslb_server, backends)
    fra.fail_next(3)
    eventually(lambda: answer(server) == {IAD}, what="www moves to iad after 3 failures")
    assert fra.failed == 3
    assert site_entry(server, "fra")["regions"]["lab-1"]["error"] == "c_fra 127.0.0.1: status 503, expected 200"
    eventually(lambda: answer(server) == {FRA}, what="www back on fra after rise")
    assert [(c["old"], c["new"]) for c in reversed(fra_changes(server))] == [("up", "down"), ("down", "up")]


def check_fails(server) -> float:
    """gslb_check_results_total{site="fra", result="fail"} from /metrics."""
    with urllib.request.urlopen(server.http + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) if fam.name == "gslb_check_results"
               for s in fam.samples if s.labels.get("site") == "fra" and s.labels.get("result") == "fail"
               and s.name.endswith("_total"))


def check_series(server) -> set[tuple[str, str]]:
    """The (site, check) pairs that have a gslb_check_results series in /metrics."""
    with urllib.request.urlopen(server.http + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.labels["site"], s.labels["check"]) for fam in text_string_to_metric_families(text)
            if fam.name == "gslb_check_results" for s in fam.samples}


def test_reload_drops_the_metrics_of_removed_sites_and_checks(gslb_server, backends):
    web, tcp, iad = backends(), backends(kind="tcp"), backends()
    zone = two_site_zone({"fra": web.port, "iad": iad.port}).replace(
        "checks: [c_fra]", "checks: [c_fra, c_fra_tcp]").replace(
        "checks:\n", f"checks:\n  c_fra_tcp: {{type: tcp, target: 127.0.0.1, port: {tcp.port}, "
                     f"interval: {INTERVAL}, timeout: {TIMEOUT}, rise: {RISE}, fall: {FALL}}}\n", 1)
    server = gslb_server({"gslb.example.com.yaml": zone}, config={"region": "lab-1"}, wait_for=ORIGIN)
    everything = {("fra", "c_fra"), ("fra", "c_fra_tcp"), ("iad", "c_iad")}
    eventually(lambda: check_series(server) == everything, what="a series per site and check")

    # drop site iad, and check c_fra_tcp from site fra (the check itself stays defined)
    smaller = zone.replace("checks: [c_fra, c_fra_tcp]", "checks: [c_fra]").replace(
        f"  iad: {{location: [38.95, -77.45], addresses: [{IAD}], checks: [c_iad]}}\n", "").replace(
        "sites: [fra, iad]", "sites: [fra]")
    assert "iad" not in smaller.split("checks:\n", 1)[0].split("sites:\n", 1)[1]
    (server.zones_dir / "gslb.example.com.yaml").write_text(smaller)
    server.signal(signal.SIGHUP)
    eventually(lambda: check_series(server) == {("fra", "c_fra")}, what="removed series dropped")
    assert answer(server) == {FRA}


def test_pool_names_get_no_reply_until_the_first_round_is_done(tmp_path, backends):
    fra, iad = backends(), backends()
    fra.set("hanging")  # the first round lasts the check timeout (2 s)
    zone = two_site_zone({"fra": fra.port, "iad": iad.port}).replace(
        f"interval: {INTERVAL}\n    timeout: {TIMEOUT}", "interval: 4\n    timeout: 2")
    server = Gslb(tmp_path / "srv", {"gslb.example.com.yaml": zone}, {"region": "lab-1"})
    starter = threading.Thread(target=server.start, kwargs={"wait_for": ORIGIN})
    starter.start()
    try:
        # once DNS answers static names, pool names are still held (no reply) ...
        eventually(lambda: _answers_soa(server), timeout=15, what="DNS bound")
        early = "gslb: serving" not in server.log()
        held = 0
        while "gslb: serving" not in server.log():
            try:
                msg = server.query(f"www.{ORIGIN}", "A", timeout=0.3)
            except dns.exception.Timeout:
                held += 1
                continue
            # a reply can only come once the round is done, and it avoids fra
            assert {rr.address for rrset in msg.answer for rr in rrset} == {IAD}
        if early:
            assert held >= 1
        starter.join(20)
        # ... and the first answer avoids the site that is down
        assert answer(server) == {IAD}
    finally:
        starter.join(20)
        server.stop()


def _answers_soa(server) -> bool:
    try:
        server.query(ORIGIN, "SOA", timeout=0.2)
        return True
    except (dns.exception.Timeout, OSError):
        return False
