"""A new user's first hour (issue 10), each against the real program: the README's ``gslb check``
example is what ``gslb check`` prints; the log says when a broken zone file is fixed or removed,
and never claims a last good version that a brand-new file never had; ``gslb status`` keeps its
table aligned; a ``gslb.yaml`` created after a start without one is read on SIGHUP.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from harness import ROOT, eventually, free_port

README = (ROOT / "README.md").read_text()


def run_gslb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gslb", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_the_readme_check_example_is_what_gslb_check_prints(tmp_path):
    block = re.search(r"```\n\$ gslb check\n(.*?)```", README, re.S)
    assert block, "README shows no `$ gslb check` example"
    (tmp_path / "zones").mkdir()
    text = (ROOT / "zones" / "example.yaml").read_text()
    for old, new in (("www: {pool: web}", "www: {pool: webb}"),
                     ("location: [50.11, 8.68]", "location: [91, 8.68]")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / "zones" / "example.yaml").write_text(text)
    done = run_gslb("check", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout + done.stderr == block.group(1) or \
        sorted((done.stdout + done.stderr).splitlines()) == sorted(block.group(1).splitlines())


ZONE = """\
zone: %s
serial: %d
ns: [ns1.%s]
records:
  ns1: {A: 192.0.2.53}
"""

BROKEN = ZONE.replace("ns1: {A: 192.0.2.53}", "ns1: {A: 192.0.2.999}")


def write(path: Path, text: str) -> None:
    """As editors do: a new file renamed over the old one."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_the_log_says_what_happened_to_a_broken_file_fixed_or_removed(gslb_server):
    srv = gslb_server(zones={"good.yaml": ZONE % ("good.test", 3, "good.test")})
    zones = srv.zones_dir

    # a brand-new broken file never had a good version: it is "not served", not "kept"
    write(zones / "new.yaml", BROKEN % ("new.test", 1, "new.test"))
    eventually(lambda: "zones/new.yaml: not served" in srv.log(), what="not served logged")
    assert "last good version" not in srv.log()
    # fixed: said so, with the serial it serves
    write(zones / "new.yaml", ZONE % ("new.test", 4, "new.test"))
    eventually(lambda: "zones/new.yaml: fixed, serving serial 4" in srv.log(), what="fixed logged")
    assert srv.query("new.test", "SOA").answer[0][0].serial == 4
    # broken again: now it has a last good version, and keeps it
    write(zones / "new.yaml", BROKEN % ("new.test", 5, "new.test"))
    eventually(lambda: "new.test keeps serving serial 4 from its last good version" in srv.log(),
               what="kept logged")
    assert srv.query("new.test", "SOA").answer[0][0].serial == 4

    # a broken file that is removed
    write(zones / "other.yaml", BROKEN % ("other.test", 1, "other.test"))
    eventually(lambda: "zones/other.yaml: not served" in srv.log(), what="not served logged")
    (zones / "other.yaml").unlink()
    eventually(lambda: "zones/other.yaml: removed" in srv.log(), what="removal logged")


def test_gslb_status_shows_a_never_loaded_zone_aligned(gslb_server, tmp_path):
    two_errors = BROKEN.replace("serial: %d", "serial: -%d") % ("bad.test", 1, "bad.test")
    srv = gslb_server(zones={"good.yaml": ZONE % ("good.test", 3, "good.test"), "bad.yaml": two_errors})
    done = run_gslb("status", "--http", srv.http, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ZONE") and "SERIAL" in line)
    table = lines[header:lines.index("", header)]
    assert len(table) == 3, table  # header, the good zone, the bad file: one line each
    status_col = table[0].index("STATUS")
    bad = next(line for line in table if "zones/bad.yaml" in line)
    good = next(line for line in table if line.startswith("good.test"))
    assert good[status_col:] == "ok"
    assert bad[status_col:].startswith("zones/bad.yaml:")
    checked = run_gslb("check", cwd=srv.workdir)
    listed = [line for line in (checked.stdout + checked.stderr).splitlines()
              if line.startswith("zones/bad.yaml:")]
    assert len(listed) >= 2, listed
    assert bad[status_col:] == f"{listed[0]} (+{len(listed) - 1} more errors: gslb check)"
    assert "None" not in bad
    assert bad.split()[:2] == ["-", "-"]  # no zone, no serial


def test_a_gslb_yaml_created_after_a_start_without_one_is_read_on_sighup(tmp_path):
    """Started with no -c and no gslb.yaml, then the file appears: SIGHUP reads it (its token
    opens the write endpoints, which answered 403 without one); the log says what is read."""
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "a.yaml").write_text(ZONE % ("a.test", 1, "a.test"))
    port, http_port = free_port(), free_port()
    log = tmp_path / "gslb.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gslb", "serve", "--listen", f"127.0.0.1:{port}",
                                 "--http", f"127.0.0.1:{http_port}", "--geoip", "none", "--no-checks"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        eventually(lambda: "gslb: serving" in log.read_text() or proc.poll() is not None, what="serving")
        assert proc.poll() is None, log.read_text()
        assert f"no server file ({tmp_path / 'gslb.yaml'} does not exist)" in log.read_text()

        def reload_status(token: str) -> int:
            request = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/v1/reload", method="POST",
                                             headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    return reply.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert reload_status("s3cret") == 403  # no token configured
        proc.send_signal(signal.SIGHUP)
        eventually(lambda: "still no server file" in log.read_text(), what="SIGHUP without a file logged")

        (tmp_path / "token").write_text("s3cret\n")
        (tmp_path / "gslb.yaml").write_text("api_token_file: token\n")
        proc.send_signal(signal.SIGHUP)
        eventually(lambda: f"{tmp_path / 'gslb.yaml'} now exists: reading it" in log.read_text(),
                   what="the new file read")
        eventually(lambda: reload_status("s3cret") == 200, what="the token of the new file in use")
        assert reload_status("wrong") == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
