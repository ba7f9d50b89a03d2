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
