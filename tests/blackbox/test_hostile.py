"""Hostile input against a real ``gslb serve`` (issue 9): HTTP requests that used to answer 500
or plain text, zone files with control bytes, oversized files, dangling and looping symbolic
links, big loads while DNS answers, ``reload: manual`` and the open-file limit.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from harness import Gslb, eventually

TOKEN = "s3cret-token"

ZONE = """\
zone: hostile.test
serial: 7
ns: [ns1.hostile.test]
records:
  ns1: {A: 192.0.2.53}
  www: {A: %s}
"""


def zone(address: str = "192.0.2.1") -> str:
    return ZONE % address


def a_of(server: Gslb, name: str = "www.hostile.test") -> set[str] | str:
    """The A addresses of ``name``, or the rcode text when there are none."""
    reply = server.query(name, "A")
    if reply.rcode() != dns.rcode.NOERROR:
        return dns.rcode.to_text(reply.rcode())
    return {rr.address for rrset in reply.answer for rr in rrset}


def raw_http(server: Gslb, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is on a new connection; (status, headers in lower case, body)."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(data)
        data = b""
        # until the server closes, or the whole body announced by Content-Length arrived (a
        # server that does not read a refused body lingers before it closes)
        while chunk := s.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = [line.split(b":", 1)[1] for line in head.lower().split(b"\r\n")
                      if line.startswith(b"content-length:")]
            if sep and length and len(body) >= int(length[0]):
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size_text, _, rest = rest.partition(b"\r\n")
            size = int(size_text, 16)
            if not size:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return int(status_line.split()[1]), headers, body


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def json_error(status_headers_body: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    """(status, the error text) of a JSON error answer; fails when it is not one."""
    status, headers, body = status_headers_body
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
    doc = json.loads(body)
    assert set(doc) == {"error"} and isinstance(doc["error"], str), doc
    return status, doc["error"]


@pytest.fixture
def server(gslb_server, tmp_path) -> Gslb:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    return gslb_server({"hostile.yaml": zone()}, config={"api_token_file": str(token), "checks": False})


def tracebacks(server: Gslb) -> int:
    return server.log().count("Traceback")


# -- HTTP (item 4) ---------------------------------------------------------------------------

def test_a_non_ascii_bearer_token_is_401_not_500(server):
    for value in (b"Bearer \xff", b"Bearer \xc3\xa9t\xc3\xa9", b"\xff\xfe"):
        data = request("POST", "/api/v1/reload").replace(b"Connection: close\r\n",
                                                         b"Connection: close\r\nAuthorization: " + value + b"\r\n")
        status, error = json_error(raw_http(server, data))
        assert status == 401, (value, status, error)
    assert tracebacks(server) == 0


def test_a_static_path_too_long_for_the_file_system_is_404(server):
    for path in ("/static/" + "a" * 256, "/static/" + "a/" * 3000 + "x", "/static/%00x", "/static/../../etc/passwd"):
        status, _ = json_error(raw_http(server, request("GET", path)))
        assert status in (403, 404), (path, status)
    assert tracebacks(server) == 0


@pytest.mark.parametrize("body, what", [
    (b"[" * 100_000, "100,000 ["),
    (b"[" * 60_000, "nested 60,000 deep, within the JSON body limit"),
    (b'{"state": ' + b"1" * 5000 + b"}", "5,000-digit integer"),
    (b'{"state": 1e999999}', "huge exponent"),
    (b'{"state": "\xff"}', "not UTF-8"),
    (b'{"state": "up"' + b" " * 200_000 + b"}", "larger than the body limit"),
])
def test_hostile_json_bodies_are_400(server, body, what):
    data = request("PUT", "/api/v1/sites/hostile.test/nosuch/override", body,
                   {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    status, error = json_error(raw_http(server, data))
    assert status in (400, 413), (what, status, error)
    assert tracebacks(server) == 0


def test_an_oversized_body_is_refused_before_it_is_read(server):
    # 2 MiB announced: refused at once with JSON (the client may not even send it)
    data = request("POST", "/api/v1/reload", b"", {"Authorization": f"Bearer {TOKEN}"}).replace(
        b"Content-Length: 0", b"Content-Length: 2097152")
    status, error = json_error(raw_http(server, data))
    assert status == 413 and "body" in error


def test_parser_level_400s_are_json_and_one_log_line(server):
    before = server.log().count("\n")
    cases = [
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line over 8190 bytes
        b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\nHost: x\r\n\r\n",  # a header field too long
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    ]
    for data in cases:
        status, error = json_error(raw_http(server, data))
        assert status == 400, (data[:40], status, error)
        assert error.startswith("bad request")
    eventually(lambda: server.log().count("http: bad request") >= len(cases), what="one log line per request")
    new_lines = server.log().splitlines()[before:]
    assert tracebacks(server) == 0
    assert len([line for line in new_lines if "bad request" in line]) == len(cases), new_lines
    assert all(len(line) < 400 for line in new_lines)
    assert not [line for line in new_lines if "UNKNOWN" in line]  # no second line from the access log


def test_the_api_still_works_after_the_hostile_requests(server):
    raw_http(server, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    raw_http(server, request("PUT", "/api/v1/sites/hostile.test/x/override", b"[" * 100_000,
                             {"Authorization": f"Bearer {TOKEN}"}))
    with urllib.request.urlopen(server.http + "/api/v1/status", timeout=5) as resp:
        assert json.loads(resp.read())["zones"][0]["zone"] == "hostile.test"


# -- zone files (items 1, 2, 3, 7, 9) --------------------------------------------------------

def status_of(server: Gslb) -> dict[str, Any]:
    with urllib.request.urlopen(server.http + "/api/v1/status", timeout=10) as resp:
        return json.loads(resp.read())


def zone_errors(server: Gslb) -> dict[str, str | None]:
    return {os.path.basename(z["file"]): z["error"] for z in status_of(server)["zones"]}


def post_reload(server: Gslb, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(server.http + "/api/v1/reload", method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def replace_file(path: Path, data: str | bytes) -> None:
    """Write a copy and rename it over ``path`` (the README's way to edit a zone file)."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


CONTROL = zone("192.0.2.9").replace("records:", "records:\n  bad: {TXT: \"a\x01b\"}", 1)


def test_a_control_byte_is_one_located_error_in_check(tmp_path):
    import subprocess
    import sys

    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "hostile.yaml").write_text(CONTROL)
    (zones / "nul.yaml").write_bytes(zone().replace("hostile.test", "nul.test").encode() + b"  x: \x00\n")
    proc = subprocess.run([sys.executable, "-m", "gslb", "check", "--zones", str(zones)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr and "ReaderError" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].endswith("hostile.yaml:5: the control character U+0001 is not allowed in YAML (only tab, "
                             "line breaks and printable characters; write it as an escape in a double-quoted "
                             "string, e.g. \"\\x01\")"), lines
    assert lines[1].endswith("nul.yaml:7: the control character U+0000 is not allowed in YAML (only tab, "
                             "line breaks and printable characters; write it as an escape in a double-quoted "
                             "string, e.g. \"\\x01\")"), lines
    assert lines[2] == "gslb check: 2 error(s)"


def test_a_control_byte_at_start_and_live_is_a_located_error(gslb_server, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    # at start: the server starts (as with any broken file) and reports it
    server = gslb_server({"hostile.yaml": CONTROL, "other.yaml": zone().replace("hostile.test", "other.test")},
                         config={"api_token_file": str(token), "checks": False}, wait_for="www.other.test")
    error = zone_errors(server)["hostile.yaml"]
    assert error is not None and error.endswith("hostile.yaml:5: the control character U+0001 is not allowed "
                                                "in YAML (only tab, line breaks and printable characters; write "
                                                "it as an escape in a double-quoted string, e.g. \"\\x01\")")
    assert a_of(server) == "REFUSED"  # no good version of it yet
    # fixed: served
    replace_file(server.zones_dir / "hostile.yaml", zone("192.0.2.7"))
    eventually(lambda: a_of(server) == {"192.0.2.7"}, what="the fixed file served")
    # broken live (the watch): the last good version stays, the error shows
    replace_file(server.zones_dir / "hostile.yaml", CONTROL)
    eventually(lambda: zone_errors(server)["hostile.yaml"], what="the error in /api/v1/status")
    assert "hostile.yaml:5: the control character U+0001" in zone_errors(server)["hostile.yaml"]
    assert a_of(server) == {"192.0.2.7"}
    # and through POST /api/v1/reload: 200 with the located error
    status, body = post_reload(server)
    assert status == 200 and body["ok"] is False
    assert [e for e in body["errors"] if "hostile.yaml:5: the control character U+0001" in e], body
    assert "Traceback" not in server.log()
    assert "hostile.yaml:5: the control character U+0001" in server.log()


def test_an_oversized_zone_file_is_refused_and_dns_goes_on(gslb_server, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    server = gslb_server({"hostile.yaml": zone()}, config={"api_token_file": str(token), "checks": False,
                                                          "max_zone_file_bytes": 100_000})
    # a 200 KB TXT value: refused by its size before it is read
    big = zone("192.0.2.8").replace("records:", "records:\n  big: {TXT: \"" + "x" * 200_000 + "\"}", 1)
    replace_file(server.zones_dir / "hostile.yaml", big)
    size = len(big.encode())
    eventually(lambda: zone_errors(server)["hostile.yaml"], what="the size error in /api/v1/status")
    assert zone_errors(server)["hostile.yaml"].endswith(
        f"hostile.yaml: file is {size} bytes, larger than the limit 100000 (max_zone_file_bytes in the server file)")
    assert a_of(server) == {"192.0.2.1"}  # the last good version
    status, body = post_reload(server)
    assert status == 200 and body["ok"] is False and "larger than the limit 100000" in body["errors"][0]


def test_a_txt_value_over_65535_octets_is_refused_at_its_line(gslb_server):
    server = gslb_server({"hostile.yaml": zone()}, config={"checks": False})
    text = zone("192.0.2.8").replace("records:", "records:\n  big: {TXT: \"" + "x" * 70_000 + "\"}", 1)
    replace_file(server.zones_dir / "hostile.yaml", text)
    eventually(lambda: zone_errors(server)["hostile.yaml"], what="the RDATA error")
    assert zone_errors(server)["hostile.yaml"].endswith(
        "hostile.yaml:5: records.big.TXT: TXT data is 70275 octets in wire form, at most 65535")
    assert a_of(server) == {"192.0.2.1"}


def _bench_module() -> Any:
    """tools/bench_zone_load.py as a module (its zone generator)."""
    import importlib.machinery
    import importlib.util
    import sys

    name = "gslb_bench_zone_load"
    module = sys.modules.get(name)
    if module is None:
        path = Path(__file__).resolve().parents[2] / "tools" / "bench_zone_load.py"
        loader = importlib.machinery.SourceFileLoader(name, str(path))
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
        sys.modules[name] = module  # its dataclasses look their module up while the class is built
        loader.exec_module(module)
    return module


def test_dns_answers_all_along_while_a_big_zone_loads(gslb_server, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    server = gslb_server({"hostile.yaml": zone()}, config={"api_token_file": str(token), "checks": False})
    text = _bench_module().zone_text(30_000, "big.test")
    answered, lost = [], []
    done = threading.Event()

    def probe() -> None:
        query = dns.message.make_query("www.hostile.test", "A")
        while not done.is_set():
            sent = time.monotonic()
            try:
                dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2.0)
                answered.append(sent)
            except dns.exception.Timeout:
                lost.append(sent)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        eventually(lambda: len(answered) >= 3, what="probes answered before the load")
        (server.zones_dir / "big.yaml").write_text(text)  # the file watch loads it
        eventually(lambda: a_of(server, "h5.big.test") == {"192.0.2.5"}, timeout=60, what="the big zone served")
        replace_file(server.zones_dir / "big.yaml", text.replace("192.0.2.5}", "192.0.2.6}", 1))
        start = time.monotonic()
        status, body = post_reload(server)  # a forced reload re-reads every file
        end = time.monotonic()
        assert status == 200 and body["ok"] is True, body
        assert a_of(server, "h5.big.test") == {"192.0.2.6"}
    finally:
        done.set()
        thread.join(5)
    assert lost == []  # no query went unanswered (2 s each) through two loads
    assert [t for t in answered if start <= t <= end] or end - start < 0.1, (start, end)


def test_dangling_and_looping_links_are_logged_and_in_status(gslb_server):
    server = gslb_server({"hostile.yaml": zone()}, config={"checks": False})
    folder = server.zones_dir
    os.symlink(folder / "gone.yaml.orig", folder / "dangling.yaml")
    os.symlink(folder / "loop-b.yaml", folder / "loop-a.yaml")
    os.symlink(folder / "loop-a.yaml", folder / "loop-b.yaml")
    eventually(lambda: len([e for e in zone_errors(server).values() if e]) == 3, what="three errors in status")
    errors = zone_errors(server)
    assert errors["dangling.yaml"].endswith(
        f"dangling.yaml: cannot read: No such file or directory (a symbolic link to {folder}/gone.yaml.orig, "
        "which does not exist)")
    assert errors["loop-a.yaml"].endswith(
        f"loop-a.yaml: cannot read: Too many levels of symbolic links (a symbolic link to {folder}/loop-b.yaml "
        "that loops)")
    assert errors["hostile.yaml"] is None
    log = server.log()
    assert log.count("dangling.yaml: cannot read") == 1  # once, not at every poll
    assert "loop-a.yaml: cannot read" in log and "loop-b.yaml: cannot read" in log
    # a link that breaks keeps its zone's last good version
    (folder / "real.yml").write_text(zone("192.0.2.3").replace("hostile.test", "linked.test"))
    os.symlink(folder / "real.yml", folder / "linked.yaml")
    eventually(lambda: a_of(server, "www.linked.test") == {"192.0.2.3"}, what="the linked zone served")
    (folder / "real.yml").unlink()
    eventually(lambda: zone_errors(server)["linked.yaml"], what="the broken link in status")
    assert a_of(server, "www.linked.test") == {"192.0.2.3"}
    assert "Traceback" not in server.log()


def test_reload_manual_applies_only_on_sighup_and_post(gslb_server, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    server = gslb_server({"hostile.yaml": zone()}, config={"api_token_file": str(token), "checks": False,
                                                          "reload": "manual"})
    path = server.zones_dir / "hostile.yaml"
    # rewritten in place, half written (valid YAML without www): the watch notices, applies nothing
    with open(path, "w") as fh:
        fh.write(zone("192.0.2.2").split("  www:")[0])
    def noticed() -> int:
        return server.log().count("hostile.yaml changed on disk; reload: manual")

    eventually(noticed, what="the watch noticed")
    assert a_of(server) == {"192.0.2.1"}
    seen = noticed()
    with open(path, "a") as fh:
        fh.write("  www: {A: 192.0.2.2}\n")
    eventually(lambda: noticed() > seen, what="the next version noticed")
    assert a_of(server) == {"192.0.2.1"}
    server.signal(signal.SIGHUP)
    eventually(lambda: a_of(server) == {"192.0.2.2"}, what="applied on SIGHUP")
    seen = noticed()
    replace_file(path, zone("192.0.2.4"))
    eventually(lambda: noticed() > seen, what="the renamed version noticed")
    assert a_of(server) == {"192.0.2.2"}
    status, body = post_reload(server)
    assert status == 200 and body["ok"] is True and body["changed"] == ["hostile.test"]
    assert a_of(server) == {"192.0.2.4"}
    # back to auto through the server file (applied by a reload): the watch applies changes again
    config = server.config_file.read_text().replace("reload: manual", "reload: auto")
    server.config_file.write_text(config)
    assert post_reload(server)[0] == 200
    replace_file(path, zone("192.0.2.5"))
    eventually(lambda: a_of(server) == {"192.0.2.5"}, what="applied by the watch after reload: auto")


# -- the open-file limit (item 8) ------------------------------------------------------------

def open_file_limit(server: Gslb) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc/PID/limits")


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(tmp_path):
    server = Gslb(tmp_path / "srv", {"hostile.yaml": zone()}, {"checks": False}, rlimit_nofile=(1024, 4096))
    try:
        server.start()
        assert open_file_limit(server) == 4096
        assert "open file limit raised from 1024 to 4096" in server.log()
        assert "tcp.max_connections" not in server.log()
    finally:
        server.stop()


def test_a_warning_when_max_connections_cannot_fit_the_limit(tmp_path):
    server = Gslb(tmp_path / "srv", {"hostile.yaml": zone()}, {"checks": False}, rlimit_nofile=(1024, 1024))
    try:
        server.start()
        assert open_file_limit(server) == 1024
        assert ("tcp.max_connections 1024 plus 256 files for the rest need 1280 open files, but the limit "
                "is 1024 (hard limit 1024)") in server.log()
        assert a_of(server) == {"192.0.2.1"}
    finally:
        server.stop()


def test_1100_tcp_connections_are_all_served_from_a_1024_soft_limit(tmp_path):
    import struct

    config = {"checks": False, "tcp": {"max_connections": 1100, "max_per_client": 1100, "idle_timeout": 60}}
    server = Gslb(tmp_path / "srv", {"hostile.yaml": zone()}, config, rlimit_nofile=(1024, 4096))
    conns: list[socket.socket] = []
    try:
        server.start()
        wire = dns.message.make_query("www.hostile.test", "A").to_wire()
        for _ in range(1100):
            conns.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        answered = 0
        for s in conns:  # every connection is accepted and answered
            s.sendall(struct.pack("!H", len(wire)) + wire)
        for s in conns:
            answered += dns.query.receive_tcp(s)[0].rcode() == dns.rcode.NOERROR
        assert answered == 1100
        assert "Too many open files" not in server.log()
    finally:
        for s in conns:
            s.close()
        server.stop()


# -- memory (item 6) -------------------------------------------------------------------------

def rss_bytes(server: Gslb) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/PID/status")


def test_distinct_queries_with_60k_padding_do_not_grow_memory(gslb_server):
    import struct

    server = gslb_server({"hostile.yaml": zone()}, config={"checks": False})
    # an OPT record (payload 1232) holding one 60,000-byte padding option (RFC 7830, code 12)
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 60_004) + struct.pack("!HH", 12, 60_000) + b"\0" * 60_000

    def ask_many(count: int, first: int) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            for i in range(first, first + count):
                wire = bytearray(dns.message.make_query(f"n{i}.hostile.test", "A").to_wire())
                wire[11] = 1  # ARCOUNT
                wire += opt
                s.sendall(struct.pack("!H", len(wire)) + wire)
                assert dns.query.receive_tcp(s)[0].rcode() == dns.rcode.NXDOMAIN

    ask_many(200, 0)  # warm up: the allocator's pools, the code paths
    before = rss_bytes(server)
    ask_many(2000, 1000)  # 2,000 distinct queries of ~60 KB: 120 MB if each were kept
    grown = rss_bytes(server) - before
    assert grown < 50 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB"
