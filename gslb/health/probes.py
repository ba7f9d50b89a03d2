"""One health probe of one address: http, https (certificates not validated) and tcp.

A probe never raises for a failing backend: it returns a ``ProbeResult`` whose ``error`` is a
short readable reason ("connect refused", "timeout after 3.0s", "status 503, expected 200").
The check's ``timeout`` bounds the whole probe (connect, TLS, headers and body), so a backend
that accepts and never answers fails after exactly that long. An http(s) probe passes only when
the whole response, or its first ``BODY_LIMIT`` bytes, arrived within it: headers followed by
a stalled body are a timeout, ``expect_body`` or not.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import re
import socket
import ssl
import time
from dataclasses import dataclass

import aiohttp

from gslb.model import Check

logger = logging.getLogger(__name__)

#: how much of a response body a probe reads (and ``expect_body`` is searched in); the rest is
#: not waited for
BODY_LIMIT = 64 * 1024

#: the longest error a probe reports (status pages, logs); longer ones end in "..."
ERROR_LIMIT = 200

_SPACE = re.compile(r"\s+")
#: aiohttp's parser errors point at the bad byte with a "^" on a line of its own
_CARET = re.compile(r"\s+\^+(?=\s|$)")

#: TLS without certificate or name validation (like Route 53's HTTPS checks); SNI is still sent
_NO_VERIFY: ssl.SSLContext | None = None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe: pass or fail, round-trip time, X-Load, and why it failed."""

    ok: bool
    rtt_ms: float | None = None
    load: float | None = None
    error: str | None = None


def _tls_context() -> ssl.SSLContext:
    """The shared non-validating client TLS context (built once)."""
    global _NO_VERIFY
    if _NO_VERIFY is None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _NO_VERIFY = ctx
    return _NO_VERIFY


def clean_error(text: str, limit: int = ERROR_LIMIT) -> str:
    """``text`` as one printable line: whitespace runs collapsed to one space, other unprintable
    characters replaced by ``?``, at most ``limit`` characters (cut ones end in ``...``)."""
    text = _SPACE.sub(" ", _CARET.sub("", text)).strip()
    text = "".join(c if c.isprintable() else "?" for c in text)
    if len(text) > limit:
        text = text[:limit - 3].rstrip() + "..."
    return text


def _is_ipv6(address: str) -> bool:
    """Whether ``address`` is an IPv6 literal (needs brackets in a URL)."""
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address)
    except ValueError:
        return False


def probe_url(check: Check, address: str) -> str:
    """The URL an http(s) check fetches from ``address``: ``scheme://ADDRESS:PORT/path``."""
    host = f"[{address}]" if _is_ipv6(address) else address
    path = check.path if check.path.startswith("/") else "/" + check.path
    return f"{check.type}://{host}:{check.port}{path}"


def host_header(check: Check, address: str) -> str:
    """The Host header: ``check.host`` (or the address), with the port when it is not the default."""
    host = check.host or (f"[{address}]" if _is_ipv6(address) else address)
    default = 443 if check.type == "https" else 80
    return host if check.port == default else f"{host}:{check.port}"


def parse_load(value: str | None) -> float | None:
    """An ``X-Load`` header value as a finite, non-negative float; None when missing or garbage."""
    if value is None:
        return None
    try:
        load = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(load) or load < 0:
        return None
    return load


def _expected(check: Check) -> str:
    """The accepted statuses as text, for error messages: ``200`` or ``200, 204`` or ``200-399``."""
    if check.expect_status is None:
        return "200-399"
    return ", ".join(str(s) for s in sorted(check.expect_status))


def _tls_reason(exc: BaseException) -> str:
    """``TLS error: wrong version number`` from an ssl error or aiohttp's wrapper of one."""
    inner = getattr(exc, "os_error", None) or getattr(exc, "certificate_error", None) or exc
    reason = getattr(inner, "reason", None)
    text = reason.lower().replace("_", " ") if isinstance(reason, str) and reason else str(inner)
    return f"TLS error: {text}"


def _os_error(exc: BaseException | None) -> str:
    """A readable reason for a connection-level OS error."""
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, socket.gaierror):
        return "DNS/address error"
    if isinstance(exc, ssl.SSLError):
        return _tls_reason(exc)
    if isinstance(exc, OSError):
        if exc.errno is not None and exc.strerror:
            return f"connect error: {exc.strerror}"
        # asyncio joins per-address failures into one OSError("Multiple exceptions: ...")
        if "refused" in str(exc).lower():
            return "connect refused"
        return f"connect error: {exc}"
    return f"connect error: {exc}"


async def _http(check: Check, address: str, session: aiohttp.ClientSession, started: float) -> ProbeResult:
    """GET the check's URL and judge status, body and X-Load."""
    kwargs: dict = {"allow_redirects": False, "headers": {"Host": host_header(check, address)}}
    if check.type == "https":
        kwargs["ssl"] = _tls_context()
        if check.host:
            kwargs["server_hostname"] = check.host
    async with session.get(probe_url(check, address), **kwargs) as resp:
        load = parse_load(resp.headers.get("X-Load"))
        if not check.status_ok(resp.status):
            rtt = (time.perf_counter() - started) * 1000.0
            return ProbeResult(False, rtt, load, f"status {resp.status}, expected {_expected(check)}")
        # The whole response (its first BODY_LIMIT bytes) must arrive within the timeout: a
        # backend that sends headers and then hangs is down, whether or not a body is expected.
        body = bytearray()
        while len(body) < BODY_LIMIT:
            chunk = await resp.content.read(BODY_LIMIT - len(body))
            if not chunk:
                break
            body += chunk
        if check.expect_body is not None:
            if check.expect_body.encode("utf-8") not in body[:BODY_LIMIT]:
                rtt = (time.perf_counter() - started) * 1000.0
                return ProbeResult(False, rtt, load, f"body does not contain {check.expect_body!r}")
        rtt = (time.perf_counter() - started) * 1000.0
        return ProbeResult(True, rtt, load, None)


async def _tcp(check: Check, address: str) -> ProbeResult:
    """Connect, then close: a pass when the handshake completes."""
    started = time.perf_counter()
    _reader, writer = await asyncio.open_connection(address, check.port)
    rtt = (time.perf_counter() - started) * 1000.0
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return ProbeResult(True, rtt, None, None)


async def probe(check: Check, address: str, session: aiohttp.ClientSession) -> ProbeResult:
    """Probe ``address`` (an IP, or the check's ``target`` host) once; never raises for a bad backend.

    The error, if any, is one printable line of at most ``ERROR_LIMIT`` characters (``clean_error``).
    """
    result = await _probe(check, address, session)
    if result.error is not None:
        error = clean_error(result.error)
        if error != result.error:
            result = ProbeResult(result.ok, result.rtt_ms, result.load, error)
    return result


async def _probe(check: Check, address: str, session: aiohttp.ClientSession) -> ProbeResult:
    """One probe; errors as raised (``probe`` cleans them)."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(check.timeout):
            if check.type == "tcp":
                return await _tcp(check, address)
            return await _http(check, address, session, started)
    except TimeoutError:
        return ProbeResult(False, None, None, f"timeout after {float(check.timeout)}s")
    except aiohttp.ClientConnectorDNSError:
        return ProbeResult(False, None, None, "DNS/address error")
    except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
        return ProbeResult(False, None, None, _tls_reason(exc))
    except aiohttp.ClientConnectorError as exc:
        return ProbeResult(False, None, None, _os_error(exc.os_error))
    except aiohttp.ServerDisconnectedError:
        return ProbeResult(False, None, None, "connection closed without a response")
    except aiohttp.InvalidURL:
        return ProbeResult(False, None, None, "DNS/address error")
    except aiohttp.ClientResponseError as exc:
        return ProbeResult(False, None, None, f"bad HTTP response: {exc.message}")
    except aiohttp.ClientPayloadError as exc:
        return ProbeResult(False, None, None, f"bad HTTP body: {exc}")
    except aiohttp.ClientError as exc:
        return ProbeResult(False, None, None, f"HTTP error: {exc.__class__.__name__}: {exc}")
    except ssl.SSLError as exc:
        return ProbeResult(False, None, None, _tls_reason(exc))
    except (ValueError, UnicodeError):  # an address the resolver cannot even parse
        return ProbeResult(False, None, None, "DNS/address error")
    except OSError as exc:
        return ProbeResult(False, None, None, _os_error(exc))
