"""SPEC "Command line" and "Server file" against the real ``gslb`` command (subprocesses).

``gslb check`` output and exit codes, usage and start-up exit codes, ``gslb.yaml`` from the
working directory and flags that override it, listeners (repeated, IPv6, HTTP off), clean stops
on SIGTERM/SIGINT, and the README's run command answered by the real ``dig``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
import yaml
from harness import ROOT, Gslb, eventually, free_port

GEOIP = str(ROOT / "data" / "sample-city.mmdb")

ZONE = """\
zone: cli.test
serial: 7
ns: [ns1.cli.test]
records:
  ns1: {A: 192.0.2.53}
  www: {A: 192.0.2.80}
"""

OTHER = """\
zone: other.test
serial: 9
ns: [ns1.other.test]
records:
  ns1: {A: 192.0.2.54}
  www: {A: 198.51.100.80}
"""

ERROR_LINE = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+): (?P<rest>.+)$")


def gslb(*args: str, cwd: Path | str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gslb ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "gslb", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def free_port_v6() -> int:
    """A port free on ::1 for UDP and TCP."""
    return free_port("::1")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when both UDP and TCP ``host:port`` can be bound now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(family, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def tcp_listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def soa(port: int, qname: str, host: str = "127.0.0.1", tcp: bool = False) -> dns.message.Message:
    """One SOA query."""
    q = dns.message.make_query(qname, "SOA")
    if tcp:
        return dns.query.tcp(q, host, port=port, timeout=2.0)
    return dns.query.udp(q, host, port=port, timeout=2.0)


def http_get(url: str) -> tuple[int, dict]:
    """GET a JSON document: (status, body)."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Serve:
    """``gslb serve`` started with exactly the given argv and working directory (no implicit -c)."""

    def __init__(self, cwd: Path, args: list[str]) -> None:
        self.cwd = cwd
        self.log_file = cwd / "serve.log"
        self._log = open(self.log_file, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "gslb", "serve", *args], cwd=cwd,
                                     stdout=self._log, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def log(self) -> str:
        return self.log_file.read_text()

    def wait_serving(self, port: int, qname: str, timeout: float = 15.0, host: str = "127.0.0.1") -> "Serve":
        """Wait until the log says serving and ``qname`` SOA is answered on ``port``."""
        def serving() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gslb exited with {self.proc.returncode}:\n{self.log()}")
            if "gslb: serving" not in self.log():
                return False
            try:
                soa(port, qname, host=host)
                return True
            except (dns.exception.Timeout, OSError):
                return False

        try:
            eventually(serving, timeout=timeout, what=f"gslb serving {qname} on {host}:{port}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from None
        return self

    def wait_exit(self, timeout: float = 15.0) -> int:
        """The exit code of a process expected to stop by itself."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"gslb did not exit within {timeout}s:\n{self.log()}") from None

    def stop(self) -> None:
        """Make sure the process is gone (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def serve():
    """Factory ``serve(cwd, args) -> Serve``; every process is stopped after the test."""
    started: list[Serve] = []

    def start(cwd: Path, args: list[str]) -> Serve:
        s = Serve(cwd, args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def write_config(folder: Path, **values) -> Path:
    """A ``gslb.yaml`` in ``folder`` with the sample GeoIP database and the given values."""
    cfg = {"geoip": GEOIP, "checks": False}
    cfg.update(values)
    path = folder / "gslb.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def zones_folder(folder: Path, files: dict[str, str], name: str = "zones") -> Path:
    d = folder / name
    d.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (d / fname).write_text(text)
    return d


# ---------------------------------------------------------------------------------------------
# gslb check


def test_check_good_folder_exits_0(tmp_path):
    zones_folder(tmp_path, {"cli.yaml": ZONE, "other.yaml": OTHER})
    r = gslb("check", "--zones", "zones", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    assert r.stderr.strip() == ""


def test_check_repo_zones_folder_exits_0():
    # From the repo root with no flags: gslb.yaml when present, else zones/.
    r = gslb("check", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    r = gslb("check", "--zones", "zones", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


BAD_RECORDS = """\
zone: bad.test
ns: [ns1.bad.test]
records:
  ns1: {A: 192.0.2.1}
  www: {A: 192.0.2.300}
  v6: {AAAA: 192.0.2.1}
  alias: {CNAME: www, TXT: hello}
  far.example.net.: {A: 192.0.2.2}
  lb: {pool: nope}
"""

BAD_SITES = """\
zone: sites.test
ns: [ns1.sites.test, ns2.sites.test]
colour: blue
records:
  ns1: {A: 192.0.2.1}
sites:
  fra:
    location: [91, 8.68]
    addresses: [192.0.2.10]
    checks: [web]
checks:
  web: {type: http, interval: 2, timeout: 2}
pools:
  web: {policy: nearest, sites: [fra, nope]}
"""

BAD_YAML = """\
zone: yaml.test
ns: [ns1.yaml.test
records: {}
"""

# (file, line, field, message substring): every error of every file, in file order.
EXPECTED_ERRORS = [
    ("zones/a-records.yaml", 5, "records.www.A", "'192.0.2.300' is not an IPv4 address"),
    ("zones/a-records.yaml", 6, "records.v6.AAAA", "is an IPv4 address; put it under A"),
    ("zones/a-records.yaml", 7, "records.alias.CNAME", "a CNAME cannot be beside other data (also here: TXT)"),
    ("zones/a-records.yaml", 8, "records.far.example.net.", "is outside the zone 'bad.test.'"),
    ("zones/a-records.yaml", 9, "records.lb.pool", "unknown pool 'nope'"),
    ("zones/b-sites.yaml", 2, "ns", "name server 'ns2.sites.test.' is inside the zone but has no A/AAAA records"),
    ("zones/b-sites.yaml", 3, "colour", "unknown key 'colour'"),
    ("zones/b-sites.yaml", 8, "sites.fra.location", "latitude 91 is out of range -90..90"),
    ("zones/b-sites.yaml", 12, "checks.web.timeout", "timeout 2 must be less than interval 2"),
    ("zones/b-sites.yaml", 14, "pools.web.policy", "unknown policy 'nearest'"),
    ("zones/b-sites.yaml", 14, "pools.web.sites", "unknown site 'nope'"),
    ("zones/c-yaml.yaml", 3, None, "YAML syntax error"),
]


def test_check_prints_every_error_as_path_line_field_message(tmp_path):
    zones_folder(tmp_path, {"a-records.yaml": BAD_RECORDS, "b-sites.yaml": BAD_SITES,
                            "c-yaml.yaml": BAD_YAML, "d-good.yaml": ZONE})
    r = gslb("check", "--zones", "zones", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    error_lines = [ln for ln in lines if ERROR_LINE.match(ln) and ln.startswith("zones/")]
    # every line is either a located error or the closing summary
    assert all(ln in error_lines or ln.startswith("gslb check:") for ln in lines), lines
    for file, line, field, message in EXPECTED_ERRORS:
        prefix = f"{file}:{line}: " + (f"{field}: " if field else "")
        assert any(ln.startswith(prefix) and message in ln for ln in error_lines), (prefix, message, lines)
    # all errors of a file at once, and nothing about the good file
    assert len([ln for ln in error_lines if ln.startswith("zones/a-records.yaml:")]) == 5
    assert len([ln for ln in error_lines if ln.startswith("zones/b-sites.yaml:")]) == 6
    assert len([ln for ln in error_lines if ln.startswith("zones/c-yaml.yaml:")]) == 1
    assert not any("d-good.yaml" in ln for ln in lines)
    assert len(error_lines) == len(EXPECTED_ERRORS)


def test_check_same_zone_in_two_files(tmp_path):
    zones_folder(tmp_path, {"a.yaml": ZONE, "b.yaml": "# copy\n" + ZONE})
    r = gslb("check", "--zones", "zones", cwd=tmp_path)
    assert r.returncode == 1
    assert "zones/b.yaml:2: zone: zone cli.test is already declared in zones/a.yaml" in r.stderr


def test_check_missing_or_empty_zone_folder_exits_1(tmp_path):
    r = gslb("check", "--zones", "nowhere", cwd=tmp_path)
    assert r.returncode == 1
    assert "nowhere" in r.stderr
    (tmp_path / "empty").mkdir()
    r = gslb("check", "--zones", "empty", cwd=tmp_path)
    assert r.returncode == 1
    assert "no zone files" in r.stderr


def test_check_bad_server_file_exits_1(tmp_path):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    (tmp_path / "gslb.yaml").write_text("zones: zones\nlisten: ['127.0.0.1:99999']\nchecks: maybe\nfoo: 1\n")
    r = gslb("check", cwd=tmp_path)  # gslb.yaml picked up from the working directory
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert any(ln.startswith("gslb.yaml:2: listen") and "99999" in ln for ln in lines), lines
    assert any(ln.startswith("gslb.yaml:3: checks") for ln in lines), lines
    assert any(ln.startswith("gslb.yaml:4: foo") and "unknown key" in ln for ln in lines), lines


def test_check_uses_the_zones_folder_of_the_server_file(tmp_path):
    # zones: is relative to the server file, not to the working directory
    conf = tmp_path / "etc"
    conf.mkdir()
    zones_folder(conf, {"a.yaml": BAD_RECORDS}, name="myzones")
    (conf / "gslb.yaml").write_text("zones: myzones\n")
    r = gslb("check", "-c", "etc/gslb.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert "etc/myzones/a.yaml:5: records.www.A:" in r.stderr
    # --zones overrides the file
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    r = gslb("check", "-c", "etc/gslb.yaml", "--zones", "zones", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------
# Exit codes


@pytest.mark.parametrize("args", [
    ["serve", "--bogus"],
    ["check", "--listen", "127.0.0.1:5300"],
    ["explain", "www.cli.test"],            # --client is required
    ["frobnicate"],
    [],
    ["serve", "--workers", "many"],
])
def test_usage_errors_exit_2(tmp_path, args):
    r = gslb(*args, cwd=tmp_path)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "usage:" in r.stderr


@pytest.mark.parametrize("args,flag,message", [
    (["--listen", "127.0.0.1:abc"], "--listen", "port 'abc' is not a number 1..65535"),
    (["--listen", "127.0.0.1:70000"], "--listen", "port '70000' is not a number 1..65535"),
    (["--listen", "999.1.1.1:53"], "--listen", "'999.1.1.1' is not an address"),
    (["--state", "bogus://x"], "--state", "the scheme must be one of"),
    (["--http", "nonsense"], "--http", "'nonsense' is not an address"),
])
def test_bad_flag_values_exit_2_naming_the_flag(tmp_path, args, flag, message):
    # SPEC: 2 for usage errors; the same values in the server file stay start-up errors (exit 3)
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    r = gslb("serve", "--zones", "zones", "--geoip", GEOIP, "--no-checks", *args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{flag}: " in r.stderr and message in r.stderr, r.stderr
    assert "Unknown error" not in r.stderr


def test_bad_state_flag_of_checker_exits_2(tmp_path):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    r = gslb("checker", "--region", "eu", "--state", "bogus://x", "--zones", "zones", cwd=tmp_path)
    assert r.returncode == 2 and "--state: " in r.stderr, r.stdout + r.stderr


def test_bad_listen_in_the_server_file_stays_exit_3(tmp_path):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    write_config(tmp_path, zones="zones", listen=["999.1.1.1:53"], http=None)
    r = gslb("serve", cwd=tmp_path)
    assert r.returncode == 3 and "gslb.yaml" in r.stderr and "is not an address" in r.stderr, r.stderr
    r = gslb("check", cwd=tmp_path)
    assert r.returncode == 1 and "is not an address" in r.stderr, r.stderr


def test_serve_outside_the_repository_without_geoip_answers_dns(tmp_path, serve):
    # the built-in default data/sample-city.mmdb is relative to the cwd: missing there is one
    # warning and no database, not a failed start
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    port = free_port()
    s = serve(tmp_path, ["--zones", str(tmp_path / "zones"), "--no-checks", "--listen", f"127.0.0.1:{port}",
                         "--http", "off"]).wait_serving(port, "cli.test.")
    reply = soa(port, "cli.test.")
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0][0].serial == 7
    assert s.log().count("no GeoIP database at data/sample-city.mmdb: client locations unknown") == 1, s.log()
    s.stop()
    # gslb explain too
    r = gslb("explain", "www.cli.test", "--client", "192.0.2.1", "--zones", "zones", cwd=tmp_path)
    assert r.returncode == 0 and "192.0.2.80" in r.stdout, r.stdout + r.stderr


def test_missing_geoip_named_explicitly_exits_3(tmp_path):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    r = gslb("serve", "--zones", "zones", "--no-checks", "--http", "off", "--listen", f"127.0.0.1:{free_port()}",
             "--geoip", "data/sample-city.mmdb", cwd=tmp_path)
    assert r.returncode == 3 and "sample-city.mmdb" in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_country_centroid_table_is_in_the_package():
    # a non-editable install has no repository data/ folder: the table must come with the package
    import tomllib

    import gslb
    import gslb.geo

    table = Path(gslb.__file__).resolve().parent / "data" / "country-centroids.csv"
    assert gslb.geo.DEFAULT_CENTROIDS == table and table.is_file()
    assert len(gslb.geo.load_centroids(table)) > 200
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "data/*" in package_data["gslb"]


def test_check_and_explain_write_no_serial_state(tmp_path):
    zones_folder(tmp_path, {"cli.yaml": ZONE.replace("serial: 7", "serial: auto")})
    assert gslb("check", "--zones", "zones", cwd=tmp_path).returncode == 0
    r = gslb("explain", "www.cli.test", "--client", "192.0.2.1", "--zones", "zones", "--geoip", GEOIP, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path / "zones") == ["cli.yaml"]


def test_missing_server_file_given_with_c(tmp_path):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    r = gslb("check", "-c", "nope.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert "nope.yaml" in r.stderr
    r = gslb("serve", "-c", "nope.yaml", cwd=tmp_path)
    assert r.returncode == 3
    assert "nope.yaml" in r.stderr


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_port_in_use_exits_3(tmp_path, kind):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    port = free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    try:
        blocker.bind(("127.0.0.1", port))
        if kind == "tcp":
            blocker.listen()
        write_config(tmp_path, zones="zones", listen=[f"127.0.0.1:{port}"], http=None)
        r = gslb("serve", cwd=tmp_path)
    finally:
        blocker.close()
    assert r.returncode == 3, r.stdout + r.stderr
    assert str(port) in r.stdout + r.stderr


def test_http_port_in_use_exits_3(tmp_path):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    port, http_port = free_port(), free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", http_port))
        blocker.listen()
        write_config(tmp_path, zones="zones", listen=[f"127.0.0.1:{port}"], http=f"127.0.0.1:{http_port}")
        r = gslb("serve", cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert str(http_port) in r.stdout + r.stderr
    assert port_is_free(port)  # the DNS listeners it had bound are released


@pytest.mark.parametrize("content", [None, b"this is not a maxmind database\n" * 10])
def test_unreadable_geoip_database_exits_3(tmp_path, content):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    db = tmp_path / "broken.mmdb"
    if content is not None:
        db.write_bytes(content)
    write_config(tmp_path, zones="zones", listen=[f"127.0.0.1:{free_port()}"], http=None, geoip=str(db))
    r = gslb("serve", cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "broken.mmdb" in r.stdout + r.stderr


def test_invalid_server_file_exits_3_for_serve(tmp_path):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    (tmp_path / "gslb.yaml").write_text("zones: zones\nhttp: 127.0.0.1:notaport\nrate_limit: {slip: -1}\n")
    r = gslb("serve", cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert re.search(r"^gslb\.yaml:2: http", r.stderr, re.M), r.stderr
    assert re.search(r"^gslb\.yaml:3: rate_limit\.slip", r.stderr, re.M), r.stderr


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_serve_without_a_zones_folder_exits_3(tmp_path, kind):
    if kind == "file":
        (tmp_path / "zones").write_text(ZONE)
    port = free_port()
    write_config(tmp_path, zones="zones", listen=[f"127.0.0.1:{port}"], http=None)
    r = gslb("serve", cwd=tmp_path, timeout=20)
    assert r.returncode == 3, r.stdout + r.stderr
    expected = "does not exist" if kind == "missing" else "is not a folder"
    assert re.search(rf"cannot start: zones: .*{re.escape(str(tmp_path / 'zones'))} {expected}", r.stdout + r.stderr), \
        r.stdout + r.stderr
    assert port_is_free(port)


def test_serve_with_only_broken_zone_files_starts_and_reports_them(tmp_path, serve):
    zones_folder(tmp_path, {"bad.yaml": ZONE.replace("192.0.2.80", "192.0.2.800")})
    port, http_port = free_port(), free_port()
    write_config(tmp_path, zones="zones", listen=[f"127.0.0.1:{port}"], http=f"127.0.0.1:{http_port}")
    s = serve(tmp_path, []).wait_serving(port, "cli.test.")
    assert soa(port, "cli.test.").rcode() == dns.rcode.REFUSED  # nothing served, but running
    status, body = http_get(f"http://127.0.0.1:{http_port}/api/v1/status")
    assert status == 200
    [entry] = body["zones"]
    assert entry["zone"] is None and "bad.yaml:6: records.www.A:" in entry["error"], entry
    s.stop()


# ---------------------------------------------------------------------------------------------
# Server file and flags


def test_gslb_yaml_from_working_directory(tmp_path, serve):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    port, http_port = free_port(), free_port()
    write_config(tmp_path, zones="zones", listen=[f"127.0.0.1:{port}"], http=f"127.0.0.1:{http_port}")
    s = serve(tmp_path, []).wait_serving(port, "cli.test.")
    reply = soa(port, "cli.test.")
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0][0].serial == 7
    assert http_get(f"http://127.0.0.1:{http_port}/healthz") == (200, {"status": "ok"})
    s.stop()


def test_flags_override_the_server_file(tmp_path, serve):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    zones_folder(tmp_path, {"other.yaml": OTHER}, name="flagzones")
    file_port, file_http = free_port(), free_port()
    port, http_port = free_port(), free_port()
    write_config(tmp_path, zones="zones", listen=[f"127.0.0.1:{file_port}"], http=f"127.0.0.1:{file_http}")
    s = serve(tmp_path, ["--listen", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http_port}",
                         "--zones", "flagzones"]).wait_serving(port, "other.test.")
    assert soa(port, "other.test.").answer[0][0].serial == 9
    assert soa(port, "cli.test.").rcode() == dns.rcode.REFUSED  # the file's zones folder is not served
    assert http_get(f"http://127.0.0.1:{http_port}/healthz") == (200, {"status": "ok"})
    assert port_is_free(file_port)
    assert not tcp_listening(file_http)
    s.stop()


def test_geoip_and_region_flags_override_the_server_file(tmp_path, serve):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    (tmp_path / "broken.mmdb").write_bytes(b"not a database")
    port = free_port()
    write_config(tmp_path, zones="zones", listen=[f"127.0.0.1:{port}"], http=None,
                 geoip="broken.mmdb", region="file-region")
    assert gslb("serve", cwd=tmp_path).returncode == 3  # the file's database alone fails
    s = serve(tmp_path, ["--geoip", GEOIP, "--region", "eu-test"]).wait_serving(port, "cli.test.")
    assert "region eu-test" in s.log() and "file-region" not in s.log()
    s.stop()


CHECKED = """\
zone: checked.test
serial: 1
ns: [ns1.checked.test]
records:
  ns1: {A: 192.0.2.53}
  www: {pool: web}
sites:
  fra: {addresses: [192.0.2.10], checks: [dead]}
checks:
  dead: {type: tcp, target: 127.0.0.1, port: %d, interval: 1, timeout: 0.5, rise: 1, fall: 1}
pools:
  web: {policy: failover, sites: [fra], when_all_down: servfail}
"""


def test_no_checks_flag_overrides_checks_true(tmp_path, serve):
    # The only site's check probes a closed loopback port: with checks it is down (SERVFAIL),
    # with --no-checks it has no result and counts as up.
    dead = free_port()
    for flag, expected in (([], dns.rcode.SERVFAIL), (["--no-checks"], dns.rcode.NOERROR)):
        folder = tmp_path / ("off" if flag else "on")
        folder.mkdir()
        zones_folder(folder, {"checked.yaml": CHECKED % dead})
        port = free_port()
        write_config(folder, zones="zones", listen=[f"127.0.0.1:{port}"], http=None, checks=True)
        s = serve(folder, flag).wait_serving(port, "checked.test.")
        reply = dns.query.udp(dns.message.make_query("www.checked.test.", "A"), "127.0.0.1", port=port,
                              timeout=2.0)
        assert reply.rcode() == expected, (flag, reply)
        if expected == dns.rcode.NOERROR:
            assert [r.address for r in reply.answer[0]] == ["192.0.2.10"]
        s.stop()


def test_listen_repeated_and_ipv6(tmp_path, serve):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    port_a, port_b, port_v6 = free_port(), free_port(), free_port_v6()
    write_config(tmp_path, zones="zones", http=None)
    s = serve(tmp_path, ["--listen", f"127.0.0.1:{port_a}", "--listen", f"127.0.0.1:{port_b}",
                         "--listen", f"[::1]:{port_v6}"]).wait_serving(port_a, "cli.test.")
    for host, port in (("127.0.0.1", port_a), ("127.0.0.1", port_b), ("::1", port_v6)):
        for tcp in (False, True):
            reply = soa(port, "cli.test.", host=host, tcp=tcp)
            assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0][0].serial == 7, (host, port, tcp)
    s.stop()


def test_ipv6_listen_in_server_file(tmp_path, serve):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    port = free_port_v6()
    write_config(tmp_path, zones="zones", http=None, listen=[f"[::1]:{port}"])
    serve(tmp_path, []).wait_serving(port, "cli.test.", host="::1")
    for tcp in (False, True):
        assert soa(port, "cli.test.", host="::1", tcp=tcp).answer[0][0].serial == 7


def test_http_null_disables_http(tmp_path, serve):
    zones_folder(tmp_path, {"cli.yaml": ZONE})
    port, http_port = free_port(), free_port()
    write_config(tmp_path, zones="zones", listen=[f"127.0.0.1:{port}"], http=None)
    s = serve(tmp_path, []).wait_serving(port, "cli.test.")
    assert "http off" in s.log()
    assert not tcp_listening(http_port)
    s.stop()


def test_healthz_when_http_enabled(gslb_server):
    srv: Gslb = gslb_server({"cli.yaml": ZONE}, {"checks": False})
    status, body = http_get(srv.http + "/healthz")
    assert (status, body) == (200, {"status": "ok"})


# ---------------------------------------------------------------------------------------------
# Stopping


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_0(gslb_server, sig):
    srv: Gslb = gslb_server({"cli.yaml": ZONE}, {"checks": False}, wait_for="cli.test.")
    assert srv.proc is not None
    tcp = socket.create_connection(("127.0.0.1", srv.port))  # an open TCP client does not block the stop
    try:
        srv.signal(sig)
        code = srv.proc.wait(10)
    finally:
        tcp.close()
    assert code == 0, srv.log()
    assert "gslb: stopped" in srv.log()
    assert "Traceback" not in srv.log()
    assert port_is_free(srv.port)
    assert port_is_free(srv.http_port)


SLOW_CHECK = """\
zone: slow.test
ns: [ns1.slow.test]
records:
  ns1: {A: 192.0.2.53}
  www: {pool: web}
sites:
  fra: {addresses: [192.0.2.10], checks: [hang]}
checks:
  hang: {type: http, target: 127.0.0.1, port: %d, interval: 60, timeout: 30}
pools:
  web: {policy: failover, sites: [fra]}
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_first_check_round_stops_at_once(tmp_path, serve, sig):
    # The first round of checks waits up to the checks' timeout (30 s here, against a loopback
    # listener that never answers); a stop signal meanwhile must not wait for it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hang:
        hang.bind(("127.0.0.1", 0))
        hang.listen(16)
        zones_folder(tmp_path, {"slow.yaml": SLOW_CHECK % hang.getsockname()[1]})
        port = free_port()
        write_config(tmp_path, zones="zones", listen=[f"127.0.0.1:{port}"], http=None, checks=True)
        s = serve(tmp_path, [])
        def listening() -> bool:
            assert s.proc.poll() is None, s.log()
            return "DNS listening" in s.log()

        eventually(listening, timeout=15, what="DNS listening")
        s.proc.send_signal(sig)
        assert s.wait_exit(timeout=10) == 0, s.log()
    assert "Traceback" not in s.log()
    assert port_is_free(port)


# ---------------------------------------------------------------------------------------------
# The README's run command


def test_readme_run_command_answers_dig(tmp_path, serve):
    busy = [p for p in (5300, 8053) if not port_is_free(p)]
    assert not busy, (f"the README's default ports {busy} are busy on 127.0.0.1: stop whatever holds "
                      "them (another gslb serve?) to run this test")
    shutil.copytree(ROOT / "zones", tmp_path / "zones")
    # the data the defaults use (not data/bench/, the benchmark's caches and runs)
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("bench"))
    s = serve(tmp_path, []).wait_serving(5300, "gslb.example.com.", timeout=30)
    r = subprocess.run(["dig", "@127.0.0.1", "-p", "5300", "gslb.example.com", "SOA", "+norecurse",
                        "+time=2", "+tries=2"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "status: NOERROR" in r.stdout
    assert re.search(r"flags: qr aa", r.stdout), r.stdout
    assert re.search(r"^gslb\.example\.com\.\s+\d+\s+IN\s+SOA\s+ns1\.gslb\.example\.com\. "
                     r"hostmaster\.gslb\.example\.com\. \d+ 3600 600 1209600 60$", r.stdout, re.M), r.stdout
    assert http_get("http://127.0.0.1:8053/healthz") == (200, {"status": "ok"})
    s.stop()
    assert s.proc.returncode == 0
