"""SPEC "Reload" against a real ``gslb serve``: file changes, SIGHUP, POST /api/v1/reload,
broken edits keep the last good version, removed and added files, atomic swaps under load.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from harness import Gslb, eventually, holds_for

#: SPEC: a change is applied within 2 s; the tests poll with some slack

ZONE = """\
zone: reload.test
serial: auto
ns: [ns1.reload.test]
records:
  ns1: {A: 192.0.2.53}
  www: {A: %s}
"""

OTHER = """\
zone: other.test
serial: 5
ns: [ns1.other.test]
records:
  ns1: {A: 192.0.2.54}
  www: {A: 198.51.100.1}
"""


def write(path: Path, text: str) -> None:
    """Replace a file the way editors do: a new file renamed over the old one."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_unnoticed(path: Path, text: str) -> None:
    """Rewrite in place with the same inode, size and mtime: only a forced reload (not the file
    watch, which compares inode, mtime and size) sees it."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    with open(path, "r+b") as fh:
        fh.write(text.encode())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_ino == st.st_ino


def addresses(srv: Gslb, qname: str) -> list[str]:
    reply = srv.query(qname, "A")
    assert reply.rcode() == dns.rcode.NOERROR, reply
    return sorted(r.address for rrset in reply.answer for r in rrset if r.rdtype == dns.rdatatype.A)


def serial(srv: Gslb, zone: str) -> int:
    return srv.query(zone, "SOA").answer[0][0].serial


def http(srv: Gslb, method: str, path: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(srv.http + path, method=method, data=b"" if method == "POST" else None)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def zone_status(srv: Gslb, file_name: str) -> dict:
    status, body = http(srv, "GET", "/api/v1/status")
    assert status == 200
    entries = [z for z in body["zones"] if Path(z["file"]).name == file_name]
    assert len(entries) == 1, body["zones"]
    return entries[0]


def test_file_edit_applied_within_2s_and_serial_increases(gslb_server):
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"}, {"checks": False}, wait_for="reload.test.")
    path = srv.zones_dir / "reload.yaml"
    before = serial(srv, "reload.test.")
    assert addresses(srv, "www.reload.test.") == ["192.0.2.1"]
    path.write_text(ZONE % "192.0.2.2")  # an in-place edit
    eventually(lambda: addresses(srv, "www.reload.test.") == ["192.0.2.2"], what="the edit is served")
    assert serial(srv, "reload.test.") > before
    # and again: every change increases the serial
    second = serial(srv, "reload.test.")
    write(path, ZONE % "[192.0.2.3, 192.0.2.4]")
    eventually(lambda: addresses(srv, "www.reload.test.") == ["192.0.2.3", "192.0.2.4"], what="the second edit is served")
    assert serial(srv, "reload.test.") > second


def test_sighup_reloads(gslb_server):
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"}, {"checks": False}, wait_for="reload.test.")
    write_unnoticed(srv.zones_dir / "reload.yaml", ZONE % "192.0.2.9")
    srv.signal(signal.SIGHUP)
    eventually(lambda: addresses(srv, "www.reload.test.") == ["192.0.2.9"], what="SIGHUP applies the edit")
    assert "SIGHUP" in srv.log()
    assert srv.proc is not None and srv.proc.poll() is None  # SIGHUP does not stop the server


def test_post_reload_with_token(gslb_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  s3cret-token\n")
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"},
                            {"checks": False, "api_token_file": str(token_file)}, wait_for="reload.test.")
    write_unnoticed(srv.zones_dir / "reload.yaml", ZONE % "192.0.2.8")
    assert http(srv, "POST", "/api/v1/reload")[0] == 401
    assert http(srv, "POST", "/api/v1/reload", token="wrong")[0] == 401
    assert addresses(srv, "www.reload.test.") == ["192.0.2.1"]
    status, body = http(srv, "POST", "/api/v1/reload", token="s3cret-token")
    assert status == 200, body
    assert body["ok"] is True and body["errors"] == [] and "reload.test" in body["changed"]
    # the reload is done when the request answers
    assert addresses(srv, "www.reload.test.") == ["192.0.2.8"]


def test_post_reload_without_token_file_is_403(gslb_server):
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"}, {"checks": False}, wait_for="reload.test.")
    status, body = http(srv, "POST", "/api/v1/reload", token="anything")
    assert status == 403 and "error" in body


def test_broken_edit_keeps_last_good_version_then_fix_applies(gslb_server):
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1", "other.yaml": OTHER},
                            {"checks": False}, wait_for="reload.test.")
    path = srv.zones_dir / "reload.yaml"
    good_serial = serial(srv, "reload.test.")
    assert zone_status(srv, "reload.yaml")["error"] is None
    broken = (ZONE % "192.0.2.300") + "  bad: {AAAA: 192.0.2.7}\n"
    write(path, broken)
    eventually(lambda: zone_status(srv, "reload.yaml")["error"] is not None, what="the error shows in the status")
    error = zone_status(srv, "reload.yaml")["error"]
    assert "zones/reload.yaml:6: records.www.A:" in error and "192.0.2.300" in error, error
    assert "zones/reload.yaml:7: records.bad.AAAA:" in error, error
    entry = zone_status(srv, "reload.yaml")
    assert entry["zone"] == "reload.test" and entry["serial"] == good_serial
    # the log names the file and line
    eventually(lambda: re.search(r"zones/reload\.yaml:6: records\.www\.A", srv.log()) is not None, what="the log names PATH:LINE")
    # the last good version keeps serving, the other zone is unaffected
    assert addresses(srv, "www.reload.test.") == ["192.0.2.1"]
    assert serial(srv, "reload.test.") == good_serial
    assert addresses(srv, "www.other.test.") == ["198.51.100.1"]
    assert zone_status(srv, "other.yaml")["error"] is None
    # ... and still reloads on its own
    write(srv.zones_dir / "other.yaml", OTHER.replace("198.51.100.1", "198.51.100.2"))
    eventually(lambda: addresses(srv, "www.other.test.") == ["198.51.100.2"], what="the other zone reloads")
    assert addresses(srv, "www.reload.test.") == ["192.0.2.1"]
    # fixing the file applies it and clears the error
    write(path, ZONE % "192.0.2.5")
    eventually(lambda: addresses(srv, "www.reload.test.") == ["192.0.2.5"], what="the fix is served")
    assert zone_status(srv, "reload.yaml")["error"] is None
    assert serial(srv, "reload.test.") > good_serial


def test_broken_reload_reported_by_the_api(gslb_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("t0ken")
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"},
                            {"checks": False, "api_token_file": str(token_file)}, wait_for="reload.test.")
    write_unnoticed(srv.zones_dir / "reload.yaml", ZONE % "999.0.2.1")
    status, body = http(srv, "POST", "/api/v1/reload", token="t0ken")
    assert status == 200
    assert body["ok"] is False
    assert any("reload.yaml:6: records.www.A:" in e for e in body["errors"]), body
    assert addresses(srv, "www.reload.test.") == ["192.0.2.1"]


def test_deleted_file_stops_serving_and_new_file_serves(gslb_server):
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1", "other.yaml": OTHER},
                            {"checks": False}, wait_for="reload.test.")
    (srv.zones_dir / "reload.yaml").unlink()
    eventually(lambda: srv.query("www.reload.test.", "A").rcode() == dns.rcode.REFUSED, what="the deleted zone is refused")
    assert srv.query("reload.test.", "SOA").rcode() == dns.rcode.REFUSED
    assert addresses(srv, "www.other.test.") == ["198.51.100.1"]
    status, body = http(srv, "GET", "/api/v1/status")
    assert [z["zone"] for z in body["zones"]] == ["other.test"]
    write(srv.zones_dir / "new.yaml", ZONE.replace("reload.test", "new.test") % "192.0.2.77")
    eventually(lambda: srv.query("www.new.test.", "A").rcode() == dns.rcode.NOERROR, what="the new zone is served")
    assert addresses(srv, "www.new.test.") == ["192.0.2.77"]
    # files not ending in .yaml are ignored
    (srv.zones_dir / "notes.txt").write_text("zone: ignored.test\n")
    (srv.zones_dir / "editor-swap.yaml~").write_text(ZONE.replace("reload.test", "swap.test") % "192.0.2.1")
    write(srv.zones_dir / "other.yaml", OTHER.replace("198.51.100.1", "198.51.100.3"))
    eventually(lambda: addresses(srv, "www.other.test.") == ["198.51.100.3"], what="a later edit is served")
    assert srv.query("swap.test.", "SOA").rcode() == dns.rcode.REFUSED


ATOMIC = """\
zone: atom.test
serial: {v}
ns: [ns1.atom.test]
records:
  ns1: {{A: 192.0.2.53}}
  multi: {{A: [192.0.2.{v}, 198.51.100.{v}], TXT: ["version {v}"]}}
  alias: {{CNAME: t{v}}}
  t{v}: {{A: 203.0.113.{v}}}
"""


def test_atomic_swap_under_continuous_queries(gslb_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("atom")
    srv: Gslb = gslb_server({"atom.yaml": ATOMIC.format(v=1)},
                            {"checks": False, "api_token_file": str(token_file)}, wait_for="atom.test.")
    path = srv.zones_dir / "atom.yaml"
    stop = threading.Event()
    seen: set[int] = set()
    problems: list[str] = []
    counts = [0]

    def client(tcp: bool) -> None:
        while not stop.is_set():
            try:
                reply = srv.query("multi.atom.test.", "A", tcp=tcp)
                got = sorted(r.address for rrset in reply.answer for r in rrset)
                versions = {a.rsplit(".", 1)[1] for a in got}
                if reply.rcode() != dns.rcode.NOERROR or len(got) != 2 or len(versions) != 1:
                    problems.append(f"multi: {reply.rcode()} {got}")
                else:
                    seen.add(int(versions.pop()))
                reply = srv.query("alias.atom.test.", "A", tcp=tcp)
                chain = [(rrset.name.to_text(), r.to_text()) for rrset in reply.answer for r in rrset]
                cname = [c for c in chain if c[1].startswith("t")]
                final = [c for c in chain if c[1].startswith("203.0.113.")]
                if (reply.rcode() != dns.rcode.NOERROR or len(cname) != 1 or len(final) != 1
                        or cname[0][1] != f"t{final[0][1].rsplit('.', 1)[1]}.atom.test."):
                    problems.append(f"alias: {reply.rcode()} {chain}")
                counts[0] += 2
            except (dns.exception.DNSException, OSError) as exc:
                problems.append(f"query failed: {exc!r}")

    threads = [threading.Thread(target=client, args=(tcp,)) for tcp in (False, True, False)]
    for t in threads:
        t.start()
    try:
        for i in range(40):
            v = 2 if i % 2 == 0 else 1
            write(path, ATOMIC.format(v=v))
            status, body = http(srv, "POST", "/api/v1/reload", token="atom")
            assert status == 200 and body["ok"], body
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not problems, problems[:10]
    assert seen == {1, 2}
    assert counts[0] > 100
    # the last write (version 1) is what is served now
    assert addresses(srv, "multi.atom.test.") == ["192.0.2.1", "198.51.100.1"]


# ---------------------------------------------------------------------------------------------
# SIGHUP and POST /api/v1/reload also re-read the server file


def rewrite_config(srv: Gslb, **changes) -> None:
    """Change values in the running server's gslb.yaml (None removes a key)."""
    import yaml

    cfg = yaml.safe_load(srv.config_file.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    write(srv.config_file, yaml.safe_dump(cfg))


def no_reply(srv: Gslb, qname: str) -> bool:
    try:
        srv.query(qname, "SOA", timeout=0.3)
    except dns.exception.Timeout:
        return True
    return False


def test_reload_applies_token_and_acl_and_warns_about_restart_fields(gslb_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("one")
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"},
                            {"checks": False, "api_token_file": str(token_file)}, wait_for="reload.test.")
    token_file.write_text("two\n")
    rewrite_config(srv, acl={"deny": ["127.0.0.1/32"]}, listen=["127.0.0.1:1"], checks=True,
                   region="elsewhere")
    status, body = http(srv, "POST", "/api/v1/reload", token="one")
    assert status == 200 and body["ok"] is True and body["errors"] == [], body
    warned = " ".join(body["warnings"])
    for name in ("listen", "checks", "region"):
        assert f"{name} changed" in warned and "restart" in warned, body["warnings"]
    assert "listen changed" in srv.log() and "restart" in srv.log()
    # the token file was re-read
    assert http(srv, "POST", "/api/v1/reload", token="one")[0] == 401
    assert http(srv, "POST", "/api/v1/reload", token="two")[0] == 200
    # the new ACL drops our queries; the old listener is still the one in use
    assert no_reply(srv, "reload.test.")
    # SIGHUP does the same: lifting the deny answers again, on the port the process started with
    rewrite_config(srv, acl=None)
    srv.signal(signal.SIGHUP)
    eventually(lambda: not no_reply(srv, "reload.test."), what="the ACL change applies")
    assert addresses(srv, "www.reload.test.") == ["192.0.2.1"]
    assert srv.proc is not None and srv.proc.poll() is None


def test_broken_server_file_keeps_everything_and_reports_path_line(gslb_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("one")
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"},
                            {"checks": False, "api_token_file": str(token_file)}, wait_for="reload.test.")
    good = srv.config_file.read_text()
    token_file.write_text("two")
    write(srv.config_file, good + "acl: {deny: [127.0.0.1/32]}\ntcp: {max_connections: -4}\n")
    status, body = http(srv, "POST", "/api/v1/reload", token="one")
    assert status == 200 and body["ok"] is False, body
    assert any(re.search(r"gslb\.yaml:\d+: tcp\.max_connections", e) for e in body["errors"]), body["errors"]
    assert re.search(r"gslb\.yaml:\d+: tcp\.max_connections", srv.log())
    # nothing applied: the old token, no ACL
    assert http(srv, "POST", "/api/v1/reload", token="one")[0] == 200
    assert addresses(srv, "www.reload.test.") == ["192.0.2.1"]
    # an unreadable token file changes nothing either
    write(srv.config_file, good.replace(str(token_file), str(tmp_path / "missing")))
    status, body = http(srv, "POST", "/api/v1/reload", token="one")
    assert status == 200 and body["ok"] is False and "api_token_file" in body["errors"][0], body
    assert http(srv, "POST", "/api/v1/reload", token="one")[0] == 200
    # fixed: applied
    write(srv.config_file, good)
    status, body = http(srv, "POST", "/api/v1/reload", token="one")
    assert status == 200 and body["ok"] is True, body
    assert http(srv, "POST", "/api/v1/reload", token="two")[0] == 200


def test_reload_keeps_the_command_line_overrides(gslb_server, tmp_path):
    flagzones = tmp_path / "flagzones"
    flagzones.mkdir()
    (flagzones / "other.yaml").write_text(OTHER)
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"}, {"checks": False},
                            args=["--zones", str(flagzones)], wait_for="other.test.")
    assert srv.query("reload.test.", "SOA").rcode() == dns.rcode.REFUSED
    srv.signal(signal.SIGHUP)
    eventually(lambda: srv.log().count("SIGHUP") == 1 and "zones:" in srv.log(), what="the reload is done")
    holds_for(lambda: addresses(srv, "www.other.test.") == ["198.51.100.1"]
              and srv.query("reload.test.", "SOA").rcode() == dns.rcode.REFUSED
              and "zones changed" not in srv.log(), 0.3, what="the --zones folder still served")


def test_reload_moves_to_another_zones_folder(gslb_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("t")
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"},
                            {"checks": False, "api_token_file": str(token_file)}, wait_for="reload.test.")
    rewrite_config(srv, zones=str(tmp_path / "nowhere"))
    status, body = http(srv, "POST", "/api/v1/reload", token="t")
    assert body["ok"] is False and "does not exist" in body["errors"][0], body
    assert addresses(srv, "www.reload.test.") == ["192.0.2.1"]
    other = tmp_path / "other-zones"
    other.mkdir()
    (other / "other.yaml").write_text(OTHER)
    rewrite_config(srv, zones=str(other))
    status, body = http(srv, "POST", "/api/v1/reload", token="t")
    assert body["ok"] is True and body["removed"] == ["reload.test"], body
    assert addresses(srv, "www.other.test.") == ["198.51.100.1"]
    assert srv.query("reload.test.", "SOA").rcode() == dns.rcode.REFUSED
    assert [z["zone"] for z in http(srv, "GET", "/api/v1/status")[1]["zones"]] == ["other.test"]


def build_mmdb(tmp_path: Path, name: str, country: str, continent: str) -> Path:
    """A GeoIP2 City database locating 192.0.2.0/24 in ``country``."""
    import subprocess
    import sys

    from harness import ROOT

    csv = tmp_path / f"{name}.csv"
    csv.write_text("network,city,subdivision,country,continent,latitude,longitude\n"
                   f"192.0.2.0/24,,,{country},{continent},10.0,10.0\n")
    out = tmp_path / f"{name}.mmdb"
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_geoip_db.py"), "--csv", str(csv),
                    "--out", str(out)], check=True, capture_output=True)
    return out


def client_country(srv: Gslb) -> str | None:
    status, body = http(srv, "GET", "/api/v1/explain?name=www.reload.test&type=A&client=192.0.2.10")
    assert status == 200, body
    return body["client"]["country"]


def test_geoip_file_replaced_is_reopened_and_a_broken_one_is_not_used(gslb_server, tmp_path):
    de = build_mmdb(tmp_path, "de", "DE", "EU")
    us = build_mmdb(tmp_path, "us", "US", "NA")
    live = tmp_path / "live.mmdb"
    live.write_bytes(de.read_bytes())
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"}, {"checks": False, "geoip": str(live)},
                            wait_for="reload.test.")
    assert client_country(srv) == "DE"
    # replaced by rename (how GeoIP updaters install a new database): seen by the 1 s poll
    os.replace(_copy(us, live), live)
    eventually(lambda: client_country(srv) == "US", what="the new database is used")
    # a broken database keeps the one in use and reports the error
    broken = live.with_name("broken.tmp")
    broken.write_bytes(b"not a maxmind database\n" * 20)
    os.replace(broken, live)
    eventually(lambda: "keeping the database opened before" in srv.log(), what="the error is logged")
    assert re.search(r"geoip: .*live\.mmdb: not a readable MaxMind DB", srv.log())
    assert client_country(srv) == "US"
    assert addresses(srv, "www.reload.test.") == ["192.0.2.1"]
    # and a forced reload says so too, changing nothing
    srv.signal(signal.SIGHUP)
    eventually(lambda: srv.log().count("keeping the running configuration") >= 1, what="SIGHUP reports it")
    assert client_country(srv) == "US"


def _copy(src: Path, next_to: Path) -> Path:
    tmp = next_to.with_name("." + next_to.name + ".new")
    tmp.write_bytes(src.read_bytes())
    return tmp


def test_serial_auto_never_goes_down_across_restarts(gslb_server):
    """A file restored with an older mtime (cp -p, rsync -t, tar x) after a restart still gets a
    larger serial: ``gslb serve`` keeps the served serials in the zones folder's state file."""
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1"}, {"checks": False}, wait_for="reload.test.")
    path = srv.zones_dir / "reload.yaml"
    os.utime(path, (1_700_000_000, 1_700_000_000))
    srv.signal(signal.SIGHUP)  # same content, older mtime: the serial stays
    first = serial(srv, "reload.test.")
    write(path, ZONE % "192.0.2.2")
    eventually(lambda: addresses(srv, "www.reload.test.") == ["192.0.2.2"], what="the edit is served")
    second = serial(srv, "reload.test.")
    assert second > first
    state = json.loads((srv.zones_dir / ".gslb-serials.json").read_text())
    assert state["files"]["reload.yaml"]["serial"] == second
    assert srv.stop() == 0
    # the old version comes back from a backup with its old mtime; then a restart
    path.write_text(ZONE % "192.0.2.1")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    srv.start(wait_for="reload.test.")
    assert addresses(srv, "www.reload.test.") == ["192.0.2.1"]
    assert serial(srv, "reload.test.") == second + 1
    # touched only, then a restart: the same serial
    assert srv.stop() == 0
    os.utime(path, (1_750_000_000, 1_750_000_000))
    srv.start(wait_for="reload.test.")
    assert serial(srv, "reload.test.") == second + 1


def big_zone(records: int, ns_address: str) -> str:
    """A zone file of ``records`` static names (a few MB), to keep a reload busy for a while."""
    return (f"zone: big.test\nns: [ns1.big.test]\nrecords:\n  ns1: {{A: {ns_address}}}\n"
            + "".join(f"  h{i}: {{A: 192.0.{2 + (i >> 8) % 200}.{i & 255}}}\n" for i in range(records)))


def test_dns_answers_while_a_big_zone_is_reloaded(gslb_server, tmp_path):
    """Zone files are read and built off the event loop: other names are answered meanwhile.

    Checked by answers arriving over TCP (answered on the event loop) while the reload request is
    still pending, not by durations: a reload on the event loop answers nothing until it is done.
    """
    token_file = tmp_path / "token"
    token_file.write_text("big")
    srv: Gslb = gslb_server({"reload.yaml": ZONE % "192.0.2.1", "big.yaml": big_zone(60000, "192.0.2.53")},
                            {"checks": False, "api_token_file": str(token_file)}, wait_for="reload.test.")
    assert addresses(srv, "ns1.big.test.") == ["192.0.2.53"]
    write_unnoticed(srv.zones_dir / "big.yaml", big_zone(60000, "192.0.2.54"))  # only a forced reload sees it
    reply: dict = {}

    def post() -> None:
        req = urllib.request.Request(srv.http + "/api/v1/reload", method="POST", data=b"",
                                     headers={"Authorization": "Bearer big"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            reply.update(json.loads(resp.read()))

    def answered() -> bool:  # over TCP, which the event loop answers (UDP has threads of its own)
        reply = srv.query("www.reload.test.", "A", tcp=True, timeout=60)
        return [r.address for rrset in reply.answer for r in rrset] == ["192.0.2.1"]

    reloading = threading.Thread(target=post)
    reloading.start()
    answered_meanwhile = 0
    while reloading.is_alive():
        if answered() and reloading.is_alive():
            answered_meanwhile += 1
    reloading.join()
    assert reply["ok"] and reply["changed"] == ["big.test"], reply
    assert addresses(srv, "ns1.big.test.") == ["192.0.2.54"]
    assert answered_meanwhile >= 20, answered_meanwhile
