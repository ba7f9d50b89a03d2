"""Probes against real local backends on 127.0.0.1 (and ::1): HTTP, HTTPS with SNI, TCP, hangs."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from harness import eventually_async, holds_for_async

from gslb.health.probes import BODY_LIMIT, host_header, parse_load, probe, probe_url
from gslb.model import Check


# -- helpers ---------------------------------------------------------------------------------

class Backend:
    """A local HTTP(S) backend whose answer the test sets; it records what it was asked."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b"OK"
        self.headers: dict[str, str] = {}
        self.requests: list[web.Request] = []
        self.hosts: list[str] = []
        self.paths: list[str] = []
        self.sni: list[str | None] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.hosts.append(request.headers.get("Host", ""))
        self.paths.append(request.path_qs)
        return web.Response(status=self.status, body=self.body, headers=self.headers)

    async def start(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> "Backend":
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0, ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Hang:
    """A TCP server that accepts and never answers (until the test stops it)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await self.release.wait()
        writer.close()

    async def start(self) -> "Hang":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.release.set()
        await asyncio.sleep(0)
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def refused_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name``: (cert file, key file)."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:  # fall back on the openssl command line
        openssl = shutil.which("openssl")
        assert openssl, "need the cryptography package or the openssl command"
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                              timeout=aiohttp.ClientTimeout(total=None))
    yield s
    await s.close()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = await Backend().start()
    yield b
    await b.stop()


@pytest.fixture
async def hang() -> AsyncIterator[Hang]:
    h = await Hang().start()
    yield h
    await h.stop()


def http(port: int, **kw) -> Check:
    return Check("web", "http", port, **kw)


# -- pure helpers ----------------------------------------------------------------------------

def test_url_and_host_header():
    assert probe_url(Check("w", "http", 8080, path="/healthz"), "192.0.2.1") == "http://192.0.2.1:8080/healthz"
    assert probe_url(Check("w", "https", 443), "2001:db8::1") == "https://[2001:db8::1]:443/"
    assert host_header(Check("w", "https", 443, host="www.example.com"), "192.0.2.1") == "www.example.com"
    assert host_header(Check("w", "http", 80), "2001:db8::1") == "[2001:db8::1]"
    assert host_header(Check("w", "http", 8080, host="www.example.com"), "192.0.2.1") == "www.example.com:8080"


@pytest.mark.parametrize("value, load", [
    ("0.75", 0.75), (" 12 ", 12.0), ("0", 0.0), (None, None), ("", None), ("high", None),
    ("nan", None), ("inf", None), ("-1", None),
])
def test_parse_load(value, load):
    assert parse_load(value) == load


# -- HTTP ------------------------------------------------------------------------------------

async def test_http_200_passes_with_rtt_and_host_header(backend, session):
    check = http(backend.port, path="/healthz?full=1", host="www.gslb.example.com", expect_body="OK")
    result = await probe(check, "127.0.0.1", session)
    assert result.ok and result.error is None
    assert result.rtt_ms is not None and result.rtt_ms >= 0
    assert result.load is None
    assert backend.paths == ["/healthz?full=1"]
    assert backend.hosts == [f"www.gslb.example.com:{backend.port}"]


async def test_http_without_host_uses_the_address(backend, session):
    assert (await probe(http(backend.port), "127.0.0.1", session)).ok
    assert backend.hosts == [f"127.0.0.1:{backend.port}"]


async def test_http_503_fails_with_the_status(backend, session):
    backend.status = 503
    result = await probe(http(backend.port, expect_status=frozenset({200})), "127.0.0.1", session)
    assert not result.ok
    assert result.error == "status 503, expected 200"
    result = await probe(http(backend.port), "127.0.0.1", session)
    assert result.error == "status 503, expected 200-399"


async def test_http_expected_status_list(backend, session):
    backend.status = 204
    backend.body = b""
    assert (await probe(http(backend.port, expect_status=frozenset({200, 204})), "127.0.0.1", session)).ok
    result = await probe(http(backend.port, expect_status=frozenset({200, 202})), "127.0.0.1", session)
    assert result.error == "status 204, expected 200, 202"


async def test_http_redirects_are_not_followed(backend, session):
    backend.status = 302
    backend.headers = {"Location": "/elsewhere"}
    assert (await probe(http(backend.port, path="/healthz"), "127.0.0.1", session)).ok
    assert backend.paths == ["/healthz"]
    result = await probe(http(backend.port, expect_status=frozenset({200})), "127.0.0.1", session)
    assert result.error == "status 302, expected 200"


async def test_http_body_mismatch(backend, session):
    backend.body = b"degraded"
    result = await probe(http(backend.port, expect_body="OK"), "127.0.0.1", session)
    assert not result.ok
    assert result.error == "body does not contain 'OK'"


async def test_http_body_is_searched_in_the_first_64k_only(backend, session):
    backend.body = b"x" * (BODY_LIMIT - 2) + b"OK" + b"y" * 1000
    assert (await probe(http(backend.port, expect_body="OK"), "127.0.0.1", session)).ok
    backend.body = b"x" * BODY_LIMIT + b"OK"
    result = await probe(http(backend.port, expect_body="OK"), "127.0.0.1", session)
    assert result.error == "body does not contain 'OK'"


async def test_http_x_load(backend, session):
    backend.headers = {"X-Load": "0.42"}
    assert (await probe(http(backend.port), "127.0.0.1", session)).load == 0.42
    backend.headers = {"X-Load": "lots"}
    result = await probe(http(backend.port), "127.0.0.1", session)
    assert result.ok and result.load is None


async def test_http_refused(session):
    result = await probe(http(refused_port()), "127.0.0.1", session)
    assert not result.ok
    assert result.error == "connect refused"
    assert result.rtt_ms is None


async def test_http_hang_times_out(hang, session):
    result = await probe(http(hang.port, timeout=0.3), "127.0.0.1", session)
    assert not result.ok
    assert result.error == "timeout after 0.3s"
    assert hang.writers  # it did connect: the timeout covers the whole request


async def test_unresolvable_target_is_an_address_error(session):
    result = await probe(http(80, timeout=2.0), "no-such-host.invalid", session)
    assert result.error == "DNS/address error"
    result = await probe(Check("db", "tcp", 80, timeout=2.0), "no-such-host.invalid", session)
    assert result.error == "DNS/address error"


async def test_http_over_ipv6_loopback(session):
    backend = await Backend().start(host="::1")
    try:
        result = await probe(http(backend.port), "::1", session)
        assert result.ok
        assert backend.hosts == [f"[::1]:{backend.port}"]
    finally:
        await backend.stop()


# -- HTTPS -----------------------------------------------------------------------------------

async def test_https_sends_sni_and_host_and_does_not_validate_the_certificate(tmp_path, session):
    cert, key = self_signed(tmp_path, "www.gslb.example.com")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    backend = Backend()

    def on_sni(sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        backend.sni.append(name)

    ctx.sni_callback = on_sni
    await backend.start(ssl_context=ctx)
    try:
        check = Check("web", "https", backend.port, host="www.gslb.example.com", expect_body="OK")
        result = await probe(check, "127.0.0.1", session)
        assert result.ok, result.error
        assert backend.sni == ["www.gslb.example.com"]
        assert backend.hosts == [f"www.gslb.example.com:{backend.port}"]
        # a name the certificate does not hold: still not validated (like Route 53)
        other = Check("web", "https", backend.port, host="other.example.net")
        assert (await probe(other, "127.0.0.1", session)).ok
        assert backend.sni[-1] == "other.example.net"
        # no host: no SNI for an IP address
        assert (await probe(Check("web", "https", backend.port), "127.0.0.1", session)).ok
        assert backend.sni[-1] is None
    finally:
        await backend.stop()


async def test_https_against_plain_http_is_a_tls_error(backend, session):
    result = await probe(Check("web", "https", backend.port, timeout=2.0), "127.0.0.1", session)
    assert not result.ok
    assert result.error is not None and result.error.startswith("TLS error: ")


async def test_https_handshake_hang_times_out(hang, session):
    result = await probe(Check("web", "https", hang.port, timeout=0.3), "127.0.0.1", session)
    assert result.error == "timeout after 0.3s"


# -- TCP -------------------------------------------------------------------------------------

async def test_tcp_connect_passes(session):
    accepted: list[asyncio.StreamWriter] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await probe(Check("db", "tcp", port), "127.0.0.1", session)
        assert result.ok and result.error is None and result.rtt_ms is not None
        await eventually_async(lambda: accepted, what="the connection accepted")
    finally:
        server.close()
        await server.wait_closed()


async def test_tcp_refused(session):
    result = await probe(Check("db", "tcp", refused_port()), "127.0.0.1", session)
    assert not result.ok and result.error == "connect refused"


# -- monitor + table + real backend ----------------------------------------------------------

async def test_monitor_drives_the_table_down_and_up_again(backend):
    import random

    from gslb.health.monitor import Monitor
    from gslb.model import Site, Soa, Zone, ZoneSet
    from gslb.state import MemoryBackend, SiteStateTable

    check = Check("web", "http", backend.port, path="/healthz", expect_body="OK",
                  interval=0.05, timeout=0.04, rise=2, fall=2)
    soa = Soa("ns1.z.test.", "h.z.test.", 1, 3600, 600, 86400, 60, 3600)
    zone = Zone(origin="z.test.", file="zones/z.yaml", serial=1, ttl=3600, soa=soa, ns=("ns1.z.test.",),
                nodes={}, sites={"fra": Site("fra", None, ("127.0.0.1",), (), ("web",))},
                checks={"web": check})
    zones = ZoneSet({zone.origin: zone})
    table = SiteStateTable(MemoryBackend())
    table.configure(zones)
    await table.start()
    monitor = Monitor(table, "local", rng=random.Random(3))
    monitor.configure(zones)

    async def wait_for(state: str) -> None:
        await eventually_async(lambda: table.view.site("z.test", "fra").state(0.5) == state,
                               what=f"site turned {state}")

    try:
        assert await monitor.first_round() is True
        status = table.view.site("z.test", "fra")
        assert status.state(0.5) == "up"
        assert status.regions["local"].rtt_ms is not None
        assert status.regions["local"].stale_after == pytest.approx(0.15)
        await monitor.start()
        backend.body = b"maintenance"
        await wait_for("down")
        error = table.view.site("z.test", "fra").regions["local"].error
        assert error == "web 127.0.0.1: body does not contain 'OK'"
        backend.body = b"OK"
        await wait_for("up")
        assert table.view.site("z.test", "fra").regions["local"].error is None
        # heartbeats keep a healthy result fresh well past stale_after
        await holds_for_async(lambda: "local" in table.view.site("z.test", "fra").regions, 0.3,
                              what="a fresh local result")
    finally:
        await monitor.close()
        await table.close()


class RawReply:
    """A TCP server that answers every connection with fixed bytes, then closes it."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.reply)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> "RawReply":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("reply", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-\x00Bad\x07: \x1b[31mred\r\n\tfolded\r\n\r\n",
    b"HTTP/1.1 999999999999 " + b"x" * 5000 + b"\r\n\r\n",
])
async def test_an_http_error_is_one_printable_line_of_bounded_length(session, reply):
    server = await RawReply(reply).start()
    try:
        result = await probe(http(server.port, timeout=2.0), "127.0.0.1", session)
    finally:
        await server.stop()
    assert result.ok is False
    error = result.error
    assert error and error.isprintable() and "\n" not in error and "\r" not in error
    assert "  " not in error and error == error.strip()
    assert len(error) <= 200
    assert error.startswith("bad HTTP response") or error.startswith("connection closed"), error


def test_clean_error():
    from gslb.health.probes import clean_error

    assert clean_error("bad HTTP response: 400, message:\n  Invalid\r\n\t 'garbage'\n\n") == \
        "bad HTTP response: 400, message: Invalid 'garbage'"
    assert clean_error("a\x00b\x1b[1mc\x7f") == "a?b?[1mc?"
    long = clean_error("x" * 1000)
    assert len(long) == 200 and long.endswith("...")


# -- a response must arrive whole (issue 9, item 10) -------------------------------------------

class Stall:
    """A raw HTTP backend: answers 200 with ``Content-Length: length``, sends ``sent`` bytes of
    the body, then holds the connection open (until the test stops it)."""

    def __init__(self, length: int, sent: int) -> None:
        self.length, self.sent = length, sent
        self.release = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {self.length}\r\n\r\n".encode()
                     + b"x" * self.sent)
        await writer.drain()
        await self.release.wait()
        writer.close()

    async def start(self) -> "Stall":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.release.set()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("length, sent", [(100, 0), (100, 99), (BODY_LIMIT, BODY_LIMIT - 1)])
async def test_http_headers_then_a_stalled_body_is_a_timeout_without_expect_body(session, length, sent):
    stall = await Stall(length, sent).start()
    try:
        result = await probe(http(stall.port, timeout=0.3), "127.0.0.1", session)
    finally:
        await stall.stop()
    assert not result.ok
    assert result.error == "timeout after 0.3s"


async def test_http_body_beyond_the_first_64k_is_not_waited_for(session):
    # the first BODY_LIMIT bytes arrived: the rest (never sent here) does not count
    stall = await Stall(BODY_LIMIT * 4, BODY_LIMIT).start()
    try:
        result = await probe(http(stall.port, timeout=5.0), "127.0.0.1", session)
        assert result.ok and result.error is None
        result = await probe(http(stall.port, timeout=5.0, expect_body="x"), "127.0.0.1", session)
        assert result.ok
    finally:
        await stall.stop()


async def test_http_big_complete_body_passes(backend, session):
    backend.body = b"y" * (BODY_LIMIT * 3)
    result = await probe(http(backend.port), "127.0.0.1", session)
    assert result.ok and result.error is None
