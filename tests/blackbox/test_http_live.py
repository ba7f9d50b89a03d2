"""The HTTP endpoint of a real ``gslb serve`` with live health checks on loopback backends.

Overrides and their token, reload keeping check results, /metrics parsed by prometheus-client,
the dashboard rendered by headless Chromium and ``gslb status`` against the running process.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from harness import FRA, IAD, ORIGIN, answer, eventually, get_json, site_entry, start_two_sites, two_site_zone

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "s3cret-token"
ZONE_KEY = "gslb.example.com"


def request(server, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """(status, JSON body) of one HTTP request; errors are answers too."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(server.http + path, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def override(server, site: str, state: str, token: str | None = TOKEN, zone: str = ZONE_KEY) -> tuple[int, Any]:
    """PUT an override of ``site``; (status, JSON body)."""
    return request(server, "PUT", f"/api/v1/sites/{zone}/{site}/override", {"state": state}, token)


@pytest.fixture
def token_config(tmp_path: Path) -> dict[str, Any]:
    """Server config with a token file (surrounding whitespace in it is ignored)."""
    path = tmp_path / "api-token"
    path.write_text(f"  {TOKEN}\n")
    return {"api_token_file": str(path)}


def test_override_needs_the_token(gslb_server, backends, token_config):
    fra, iad = backends(), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port}, **token_config)
    for token in (None, "wrong", TOKEN + "x", ""):
        status, body = override(server, "fra", "down", token=token)
        assert status == 401 and "error" in body, (token, status, body)
        status, body = request(server, "POST", "/api/v1/reload", token=token)
        assert status == 401 and "error" in body
    assert override(server, "nosuch", "down")[0] == 404
    assert override(server, "fra", "down", zone="other.example")[0] == 404
    status, body = override(server, "fra", "sideways")
    assert status == 400 and "error" in body
    assert request(server, "PUT", f"/api/v1/sites/{ZONE_KEY}/fra/override", b"not json", TOKEN)[0] == 400
    # nothing of that changed anything
    assert site_entry(server, "fra")["override"] is None
    assert answer(server) == {FRA}


def test_write_endpoints_forbidden_without_token_file(gslb_server, backends):
    fra, iad = backends(), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port})
    status, body = override(server, "fra", "down", token="anything")
    assert status == 403 and "error" in body
    assert override(server, "fra", "down", token=None)[0] == 403
    assert request(server, "POST", "/api/v1/reload", token="anything")[0] == 403
    assert answer(server) == {FRA}


def test_overrides_down_drain_up_auto(gslb_server, backends, token_config):
    fra, iad = backends(), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port}, **token_config)
    assert answer(server) == {FRA}

    # down: the answer moves at once (no polling)
    status, body = override(server, "fra", "down")
    assert status == 200 and body["override"] == "down" and body["state"] == "down"
    assert answer(server) == {IAD}
    assert answer(server, "near") == {IAD}
    entry = site_entry(server, "fra")
    assert entry["override"] == "down" and entry["state"] == "down"
    assert entry["regions"]["lab-1"]["state"] == "up"  # the checks still see it up

    # drain: out of answers while another site is up ...
    status, body = override(server, "fra", "drain")
    assert status == 200 and body["state"] == "drain"
    assert answer(server) == {IAD}
    assert site_entry(server, "fra")["state"] == "drain"
    # ... but back in when every other site is down
    iad.set("failing_status")
    eventually(lambda: site_entry(server, "iad")["state"] == "down", what="iad down by its check")
    assert answer(server) == {FRA}

    # up beats a failing check
    assert override(server, "iad", "up")[0] == 200
    assert override(server, "fra", "down")[0] == 200
    assert answer(server) == {IAD}
    assert site_entry(server, "iad")["state"] == "up"

    # auto: back to the checks (fra passes, iad fails)
    assert override(server, "fra", "auto")[1]["override"] is None
    assert override(server, "iad", "auto")[0] == 200
    assert answer(server) == {FRA}
    entries = {s["site"]: s for s in get_json(server, "/api/v1/status")["sites"]}
    assert entries["fra"]["override"] is None and entries["fra"]["state"] == "up"
    assert entries["iad"]["override"] is None and entries["iad"]["state"] == "down"
    iad.set("healthy")
    assert override(server, "fra", "down")[0] == 200
    eventually(lambda: answer(server) == {IAD}, what="iad back up by its check")


def test_reload_keeps_check_results_and_drops_removed_sites(gslb_server, backends, token_config):
    fra, iad, sin = backends(), backends(), backends()
    ports = {"fra": fra.port, "iad": iad.port}
    server = start_two_sites(gslb_server, ports, **token_config)
    fra.set("failing_status")
    eventually(lambda: answer(server) == {IAD}, what="fra down")
    before = {s["site"]: s for s in get_json(server, "/api/v1/status")["sites"]}
    assert before["fra"]["state"] == "down"

    # add a site (with its own check) and change a record
    zone_file = server.zones_dir / "gslb.example.com.yaml"
    text = two_site_zone({**ports, "sin": sin.port})
    text = text.replace("ns1: {A: 192.0.2.53}", "ns1: {A: 192.0.2.54}")
    text = text.replace("sites:\n", "sites:\n  sin: {location: [1.35, 103.82], addresses: [203.0.113.30], "
                                    "checks: [c_sin]}\n", 1)
    text = text.replace("sites: [fra, iad], ttl: 5}", "sites: [fra, iad, sin], ttl: 5}")
    zone_file.write_text(text)
    status, result = request(server, "POST", "/api/v1/reload", token=TOKEN)
    assert status == 200 and result["ok"] is True, result
    assert not result["errors"]
    doc = get_json(server, "/api/v1/status")
    after = {s["site"]: s for s in doc["sites"]}
    assert set(after) == {"fra", "iad", "sin"}
    # right after the reload: no flap to "unknown", previous results are kept
    for name in ("fra", "iad"):
        assert after[name]["state"] == before[name]["state"], name
        assert after[name]["regions"]["lab-1"]["checked_at"], name
        assert after[name]["regions"]["lab-1"]["state"] == before[name]["regions"]["lab-1"]["state"]
    assert answer(server) == {IAD}
    msg = server.query(f"ns1.{ORIGIN}", "A")
    assert {rr.address for rrset in msg.answer for rr in rrset} == {"192.0.2.54"}
    eventually(lambda: site_entry(server, "sin")["regions"].get("lab-1", {}).get("state") == "up",
             what="the new site's check runs")

    # remove iad: it disappears from status and answers, fra still down from before
    text = text.replace(f"  iad: {{location: [38.95, -77.45], addresses: [{IAD}], checks: [c_iad]}}\n", "")
    text = text.replace("[fra, iad, sin]", "[fra, sin]").replace("[fra, iad]", "[fra, sin]")
    zone_file.write_text(text)
    status, result = request(server, "POST", "/api/v1/reload", token=TOKEN)
    assert status == 200 and result["ok"] is True, result
    # the removed site's check stops (allow one probe that was already in flight)
    # sin's check keeps running: four of its probes are four intervals in which iad is not probed
    probes, sin_probes = iad.requests, sin.requests

    def checks_ran_on_without_iad() -> bool:
        assert iad.requests <= probes + 1
        return sin.requests >= sin_probes + 4

    eventually(checks_ran_on_without_iad, what="four more probes of sin")
    doc = get_json(server, "/api/v1/status")
    sites = {s["site"]: s for s in doc["sites"]}
    assert set(sites) == {"fra", "sin"}
    assert sites["fra"]["state"] == "down"
    assert answer(server) == {"203.0.113.30"}
    # a broken edit is not applied: the last good version keeps serving, the error shows
    zone_file.write_text(text.replace("policy: failover", "policy: nonsense"))
    status, result = request(server, "POST", "/api/v1/reload", token=TOKEN)
    assert status == 200 and result["ok"] is False and result["errors"]
    assert answer(server) == {"203.0.113.30"}
    zone_doc = next(z for z in get_json(server, "/api/v1/status")["zones"] if z["zone"] == ZONE_KEY)
    assert zone_doc["error"]
    reloads = _metrics(server)["gslb_reloads"]
    assert _value(reloads, "gslb_reloads_total", result="ok") >= 2
    assert _value(reloads, "gslb_reloads_total", result="error") >= 1


def _metrics(server) -> dict[str, list[Any]]:
    with urllib.request.urlopen(server.http + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {fam.name: fam.samples for fam in text_string_to_metric_families(text)}


def _value(samples: list[Any], name: str, **labels: str) -> float | None:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def test_metrics_from_the_live_process(gslb_server, backends, token_config):
    fra, iad = backends(), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port}, **token_config)
    for _ in range(3):
        answer(server)
    server.query(f"www.{ORIGIN}", "AAAA")
    server.query(f"nosuch.{ORIGIN}", "A")
    fra.set("failing_status")
    eventually(lambda: answer(server) == {IAD}, what="fra down")
    assert request(server, "POST", "/api/v1/reload", token=TOKEN)[0] == 200

    m = _metrics(server)
    queries = m["gslb_queries"]
    assert _value(queries, "gslb_queries_total", zone=ZONE_KEY, qtype="A", rcode="NOERROR") >= 4
    assert _value(queries, "gslb_queries_total", zone=ZONE_KEY, qtype="AAAA", rcode="NOERROR") == 1
    assert _value(queries, "gslb_queries_total", zone=ZONE_KEY, qtype="A", rcode="NXDOMAIN") == 1
    results = m["gslb_check_results"]
    assert _value(results, "gslb_check_results_total", zone=ZONE_KEY, site="fra", check="c_fra", result="pass") >= 1
    assert _value(results, "gslb_check_results_total", zone=ZONE_KEY, site="fra", check="c_fra", result="fail") >= 2
    assert _value(results, "gslb_check_results_total", zone=ZONE_KEY, site="iad", check="c_iad", result="pass") >= 2
    assert _value(m["gslb_check_duration_seconds"], "gslb_check_duration_seconds_count", site="iad") >= 2
    states = m["gslb_site_state"]
    assert _value(states, "gslb_site_state", zone=ZONE_KEY, site="fra", state="down") == 1
    assert _value(states, "gslb_site_state", zone=ZONE_KEY, site="fra", state="up") == 0
    assert _value(states, "gslb_site_state", zone=ZONE_KEY, site="iad", state="up") == 1
    assert _value(m["gslb_reloads"], "gslb_reloads_total", result="ok") >= 1
    assert _value(m["gslb_pool_answers"], "gslb_pool_answers_total", zone=ZONE_KEY, pool="web", site="iad") >= 1
    assert _value(m["gslb_answer_latency_seconds"], "gslb_answer_latency_seconds_count") >= 5


def _chromium_dom(tmp_path: Path, url: str) -> str:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--virtual-time-budget=4000", "--window-size=1400,1280", "--dump-dom", url],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_dashboard_and_status_command_show_live_states(gslb_server, backends, token_config, tmp_path):
    fra, iad = backends(), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port}, **token_config)
    iad.set("refusing")
    eventually(lambda: site_entry(server, "iad")["state"] == "down", what="iad down")
    expected = {"fra": "up", "iad": "down"}
    assert {s["site"]: s["state"] for s in get_json(server, "/api/v1/status")["sites"]} == expected

    dom = _chromium_dom(tmp_path, server.http + "/")
    assert 'data-loaded="true"' in dom, dom[:2000]
    for site, state in expected.items():
        pattern = rf'data-zone="{re.escape(ZONE_KEY)}" data-site="{site}" data-state="{state}"'
        assert len(re.findall(pattern, dom)) == 2, (site, state)  # map marker and table row
    assert "connect refused" in dom
    assert re.search(r"<th[^>]*>lab-1</th>", dom)  # the per-region results column

    out = subprocess.run([sys.executable, "-m", "gslb", "status", "--http", server.http],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for site, state in expected.items():
        assert re.search(rf"{re.escape(ZONE_KEY)} +{site} +{state}\b", out.stdout), (site, out.stdout)
    assert "lab-1" in out.stdout
    assert "connect refused" in out.stdout
    assert re.search(r"web +failover +1/2", out.stdout), out.stdout


def test_override_and_results_survive_file_watch_and_sighup_reloads(gslb_server, backends, token_config):
    fra, iad = backends(), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port}, **token_config)
    iad.set("failing_status")
    eventually(lambda: site_entry(server, "iad")["state"] == "down", what="iad down")
    assert override(server, "fra", "drain")[0] == 200
    checked = site_entry(server, "iad")["regions"]["lab-1"]["checked_at"]

    # an edit picked up by the file watcher (no API call)
    zone_file = server.zones_dir / "gslb.example.com.yaml"
    zone_file.write_text(zone_file.read_text().replace("ns1: {A: 192.0.2.53}", "ns1: {A: 192.0.2.55}"))
    eventually(lambda: {rr.address for rrset in server.query(f"ns1.{ORIGIN}", "A").answer for rr in rrset}
             == {"192.0.2.55"}, what="file watcher reload")
    fra_entry, iad_entry = site_entry(server, "fra"), site_entry(server, "iad")
    assert fra_entry["override"] == "drain" and fra_entry["state"] == "drain"
    assert iad_entry["state"] == "down" and iad_entry["regions"]["lab-1"]["checked_at"] >= checked
    assert answer(server) == {FRA}  # drained, but every other site is down

    # SIGHUP
    zone_file.write_text(zone_file.read_text().replace("192.0.2.55", "192.0.2.56"))
    server.signal(signal.SIGHUP)
    eventually(lambda: {rr.address for rrset in server.query(f"ns1.{ORIGIN}", "A").answer for rr in rrset}
             == {"192.0.2.56"}, what="SIGHUP reload")
    assert site_entry(server, "fra")["override"] == "drain"
    assert site_entry(server, "iad")["state"] == "down"
    iad.set("healthy")
    eventually(lambda: answer(server) == {IAD}, what="iad up, fra drained")


def test_reload_that_changes_or_drops_a_check(gslb_server, backends, token_config):
    fra, iad, other = backends(), backends(), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port}, **token_config)
    zone_file = server.zones_dir / "gslb.example.com.yaml"
    # the check now probes a failing backend: fra goes down
    other.set("failing_status")
    zone_file.write_text(two_site_zone({"fra": other.port, "iad": iad.port}))
    assert request(server, "POST", "/api/v1/reload", token=TOKEN)[1]["ok"] is True
    eventually(lambda: answer(server) == {IAD}, what="changed check fails")
    # the new backend's 503 (a probe on a loaded machine may time out first: poll, do not look once)
    eventually(lambda: "status 503" in (site_entry(server, "fra")["regions"]["lab-1"]["error"] or ""),
               what="the changed check's error")
    # the site loses its checks: a site with no checks is always up
    zone_file.write_text(two_site_zone({"fra": other.port, "iad": iad.port}).replace(
        "addresses: [192.0.2.10], checks: [c_fra]", "addresses: [192.0.2.10]"))
    status, result = request(server, "POST", "/api/v1/reload", token=TOKEN)
    assert status == 200 and result["ok"] is True, result
    assert answer(server) == {FRA}
    assert site_entry(server, "fra")["state"] in ("up", "unknown")


def test_explain_and_healthz_use_live_states(gslb_server, backends, token_config):
    fra, iad = backends(load=5), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port}, **token_config)
    assert get_json(server, "/healthz") == {"status": "ok"}
    fra.set("refusing")
    eventually(lambda: answer(server) == {IAD}, what="fra down")
    trace = get_json(server, f"/api/v1/explain?name=www.{ZONE_KEY}&type=A&client=127.0.0.1")
    assert trace["pool"] == "web" and trace["policy"] == "failover"
    candidates = {c["site"]: c for c in trace["candidates"]}
    assert candidates["fra"]["state"] == "down" and not candidates["fra"]["chosen"]
    assert candidates["iad"]["chosen"]
    assert trace["answers"] == [IAD]
    # drain counts every other site as down when they are overridden down too
    fra.set("healthy")
    eventually(lambda: answer(server) == {FRA}, what="fra up")
    assert override(server, "iad", "down")[0] == 200
    assert override(server, "fra", "drain")[0] == 200
    assert answer(server) == {FRA}
    trace = get_json(server, f"/api/v1/explain?name=www.{ZONE_KEY}&type=A&client=127.0.0.1")
    assert {c["site"]: c["state"] for c in trace["candidates"]} == {"fra": "drain", "iad": "down"}
    assert trace["answers"] == [FRA]
