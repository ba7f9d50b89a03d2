"""``gslb plan`` as a subprocess on the example zone and the sample GeoIP database: a site down moves
the countries it served to the next site of the policy's order (as ``gslb explain`` says for an
address there), a proposed zone with a new site moves the country next to it, no change prints
nothing; exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT

EXAMPLE = ROOT / "zones" / "example.yaml"
SAMPLE = ROOT / "data" / "sample-city.mmdb"
ZONE = "gslb.example.com"
#: Frankfurt, DE in the sample database (192.0.2.0/26)
DE_CLIENT = "192.0.2.5"
#: Warsaw, PL in the sample database
PL_CLIENT = "91.198.174.7"


def gslb(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gslb", *args, "--zones", str(ROOT / "zones"),
                           "--geoip", str(SAMPLE)], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def explain(tmp_path: Path, client: str, *down: str) -> dict:
    flags = [f for site in down for f in ("--down", site)]
    out = gslb(tmp_path, "explain", "www." + ZONE, "A", "--client", client, "--json", *flags)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_down_moves_a_country_to_the_next_site_of_the_policy_order(tmp_path):
    before = explain(tmp_path, DE_CLIENT)
    assert before["client"]["country"] == "DE" and before["policy"] == "closest"
    nearest, following = before["candidates"][0]["site"], before["candidates"][1]["site"]
    assert before["candidates"][0]["chosen"]
    out = gslb(tmp_path, "plan", ZONE, "--down", nearest)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    line = f"web  DE (EU)  {nearest} -> {following}  100.0 %"
    assert line in out.stdout.splitlines(), out.stdout
    # the move is what explain says the address gets once that site is down
    after = explain(tmp_path, DE_CLIENT, nearest)
    assert [c["site"] for c in after["candidates"] if c["chosen"]] == [following]


def test_json_output(tmp_path):
    out = gslb(tmp_path, "plan", ZONE, "--down", "fra", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["zone"] == ZONE
    pools = {p["pool"]: p for p in plan["pools"]}
    assert set(pools) == {"web", "regional", "primary", "shop", "sticky"}
    web = pools["web"]
    assert {"country": "DE", "continent": "EU", "from": ["fra"], "to": ["iad"], "share": 1.0} in web["moves"]
    assert 0 < web["moved_share"] < 1
    # failover: every located client of fra moves
    assert pools["primary"]["moved_share"] == pytest.approx(1.0)
    assert all(m["share"] <= 1.0 + 1e-9 for p in plan["pools"] for m in p["moves"])


def test_a_proposed_site_next_to_a_country_moves_it(tmp_path):
    text = EXAMPLE.read_text()
    text = text.replace("  gru:\n", "  waw:\n    location: [52.23, 21.01]   # Warsaw\n"
                        "    addresses: [192.0.2.60, \"2001:db8:60::60\"]\n  gru:\n", 1)
    text = text.replace("sites: [fra, iad, sin, syd, gru]   # order", "sites: [fra, iad, sin, syd, gru, waw]   # order", 1)
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text(text)
    where = explain(tmp_path, PL_CLIENT)
    assert where["client"]["country"] == "PL"
    served = [c["site"] for c in where["candidates"] if c["chosen"]][0]
    out = gslb(tmp_path, "plan", ZONE, str(proposed))
    assert out.returncode == 0, out.stderr
    assert f"web  PL (EU)  {served} -> waw  100.0 %" in out.stdout.splitlines(), out.stdout
    assert all(line.startswith("web  ") for line in out.stdout.splitlines())  # waw is only in pool web


def test_no_change_prints_nothing(tmp_path):
    # the zone as it is, and a proposed file identical to it
    for args in ((), (str(EXAMPLE),)):
        out = gslb(tmp_path, "plan", ZONE, *args)
        assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    out = gslb(tmp_path, "plan", ZONE, "--json")
    assert out.returncode == 0
    assert all(p["moves"] == [] and p["moved_share"] == 0 for p in json.loads(out.stdout)["pools"])


def test_a_drained_site_serves_when_every_other_site_is_down(tmp_path):
    out = gslb(tmp_path, "plan", ZONE, "--drain", "fra", "--down", "iad", "--down", "sin", "--down", "syd",
               "--down", "gru", "--json")
    assert out.returncode == 0, out.stderr
    web = json.loads(out.stdout)["pools"][0]
    assert web["pool"] == "web" and web["moves"]
    assert all(m["to"] == ["fra"] for m in web["moves"])
    assert not [m for m in web["moves"] if m["country"] == "DE"]  # fra's own clients stay


def test_drain_is_out_while_another_site_is_up(tmp_path):
    drained = gslb(tmp_path, "plan", ZONE, "--drain", "fra")
    down = gslb(tmp_path, "plan", ZONE, "--down", "fra")
    assert drained.returncode == down.returncode == 0
    assert drained.stdout == down.stdout != ""


def test_errors_and_exit_codes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("    location: [50.11, 8.68]     # Frankfurt",
                                               "    location: [91, 8.68]", 1))
    out = gslb(tmp_path, "plan", ZONE, str(bad))
    assert out.returncode == 1
    assert "bad.yaml:" in out.stderr and "sites.fra.location: latitude 91 is out of range -90..90" in out.stderr
    other = tmp_path / "other.yaml"
    other.write_text(EXAMPLE.read_text().replace("zone: gslb.example.com", "zone: other.example.com", 1))
    out = gslb(tmp_path, "plan", ZONE, str(other))
    assert out.returncode == 1 and "zone: expected gslb.example.com, got other.example.com" in out.stderr
    out = gslb(tmp_path, "plan", ZONE, str(tmp_path / "missing.yaml"))
    assert out.returncode == 1 and "missing.yaml" in out.stderr
    out = gslb(tmp_path, "plan", ZONE, "--down", "nowhere")
    assert out.returncode == 2 and "--down nowhere: no such site" in out.stderr
    out = gslb(tmp_path, "plan", "unknown.example")
    assert out.returncode == 2 and "no zone 'unknown.example'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "gslb", "plan"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2
