"""Prometheus alert rules and the Grafana dashboard (contrib/): checked by promtool, and every
metric they query is one a real ``gslb serve`` exports on /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from typing import Any

import yaml
from harness import ORIGIN, ROOT, answer, eventually, start_two_sites
from prometheus_client.parser import text_string_to_metric_families

RULES = ROOT / "contrib" / "prometheus" / "gslb-rules.yml"
RULES_TEST = ROOT / "contrib" / "prometheus" / "gslb-rules-test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "gslb.json"
PROMTOOL = shutil.which("promtool") or "promtool"
METRIC = re.compile(r"\bgslb_[a-z0-9_]+\b")
ALERTS = {"GslbSiteDown", "GslbPoolAllSitesDown", "GslbRegionChecksStale", "GslbStateBackendDisconnected",
          "GslbZoneFileRejected", "GslbServfailRate"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120,
                          cwd=RULES.parent)


def test_promtool_check_rules():
    done = _promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_promtool_test_rules():
    done = _promtool("test", "rules", RULES_TEST.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_promtool_unit_test():
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert alerts == ALERTS
    tests = yaml.safe_load(RULES_TEST.read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
              if t.get("exp_alerts")}
    assert tested == ALERTS


def rule_queries() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    for var in doc["templating"]["list"]:
        if isinstance(var.get("query"), dict):
            out.append(var["query"]["query"])
    return out


#: Grafana's variables, replaced by what they stand for at query time
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}


def test_dashboard_queries_are_promql_that_promtool_accepts(tmp_path):
    # each panel query as a recording rule, so promtool's parser checks it
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    rules = []
    for panel in doc["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, expr
            rules.append({"record": f"gslb_dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def scrape(server: Any) -> str:
    with urllib.request.urlopen(server.http + "/metrics", timeout=5) as resp:
        return resp.read().decode()


def exported_names(text: str) -> set[str]:
    """The series names a query may use: every sample name, and for families without samples
    yet the names their type gives them (counter NAME_total, histogram NAME_bucket/_sum/_count)."""
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        names.update(s.name for s in fam.samples)
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "histogram":
            names.update(fam.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(fam.name)
    return names


def value(text: str, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_rules_and_dashboard_query_only_exported_metrics(gslb_server, backends):
    fra, iad = backends(), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port},
                             regions={"lab-1": {"location": [50.0, 8.0]}, "lab-2": {"location": [40.0, -70.0]}})
    answer(server)  # a pool answer, so every family has samples
    text = scrape(server)
    exported = exported_names(text)
    used = {m for q in rule_queries() + dashboard_queries() for m in METRIC.findall(q)}
    assert used, "no gslb metric found in the queries"
    assert used <= exported, f"queried but not exported: {sorted(used - exported)}"
    # the dashboard covers every alert's metric
    assert {m for q in rule_queries() for m in METRIC.findall(q)} <= {m for q in dashboard_queries()
                                                                     for m in METRIC.findall(q)}


def test_alert_metrics_follow_the_server(gslb_server, backends):
    fra, iad = backends(), backends()
    server = start_two_sites(gslb_server, {"fra": fra.port, "iad": iad.port},
                             regions={"lab-1": {"location": [50.0, 8.0]}, "lab-2": {"location": [40.0, -70.0]}})
    text = scrape(server)
    zone = ORIGIN.rstrip(".")
    assert value(text, "gslb_pool_sites", zone=zone, pool="web") == 2
    assert value(text, "gslb_pool_sites_up", zone=zone, pool="web") == 2
    assert value(text, "gslb_region_fresh_results", region="lab-1") == 2
    assert value(text, "gslb_region_fresh_results", region="lab-2") == 0  # configured, never reported
    assert value(text, "gslb_region_last_result_timestamp_seconds", region="lab-2") == 0
    assert (value(text, "gslb_region_last_result_timestamp_seconds", region="lab-1") or 0) > 0
    assert value(text, "gslb_state_backend_connected") == 1
    zone_file = str(server.zones_dir / "gslb.example.com.yaml")
    assert value(text, "gslb_zone_file_rejected", file=zone_file) == 0

    fra.set("refusing")
    iad.set("refusing")
    eventually(lambda: value(scrape(server), "gslb_pool_sites_up", zone=zone, pool="web") == 0,
               what="pool web has no site up")
    text = scrape(server)
    assert value(text, "gslb_site_state", zone=zone, site="fra", state="down") == 1

    good = (server.zones_dir / "gslb.example.com.yaml").read_text()
    (server.zones_dir / "gslb.example.com.yaml").write_text(good + "\nbogus_field: 1\n")
    eventually(lambda: value(scrape(server), "gslb_zone_file_rejected", file=zone_file) == 1,
               what="the broken zone file counted as rejected")
    (server.zones_dir / "gslb.example.com.yaml").write_text(good)
    eventually(lambda: value(scrape(server), "gslb_zone_file_rejected", file=zone_file) == 0,
               what="the fixed zone file no longer rejected")
