"""DNS Cookies (RFC 7873) with interoperable server cookies (RFC 9018): pure functions of the
option's bytes, the client's address, the secret and the time (``now``, passed in).

A query's COOKIE option (code 10) holds the client's 8-byte Client Cookie, then, once the client
has learnt one, the Server Cookie it last got from us. Every reply to a query with a (well-formed)
COOKIE option carries the Client Cookie and a Server Cookie of ours:

    Version (1 octet) = 1 | Reserved (3) = 0 | Timestamp (4, seconds, serial arithmetic) |
    Hash (8) = SipHash-2-4(key=secret, Client Cookie | Version | Reserved | Timestamp | Client IP)

(RFC 9018 section 4). Every node that shares the 16-byte secret recognises the others' cookies
(anycast). A received Server Cookie is *valid* when it is 16 octets of version 1, its timestamp is
within the last hour and at most five minutes ahead (clock skew between nodes, RFC 9018 4.3), and
its hash matches for this client address. A valid cookie younger than ``REUSE`` seconds is echoed
as it is; an older one, an invalid one or none at all gets a fresh cookie stamped ``now``
(RFC 9018 4.3: a cookie older than half an hour is replaced; see ``REUSE`` for why a bit earlier).

Verdicts (:class:`Verdict`): ``VALID``; ``CLIENT_ONLY`` (a Client Cookie alone: the first contact);
``INVALID`` (a Server Cookie that is not one of ours, expired, or for another address);
``MALFORMED`` (an option length other than 8 or 16..40: FORMERR, RFC 7873 5.2.2).

gslb does not require cookies, so an invalid Server Cookie is answered like a missing one
(RFC 7873 5.2.3 and 5.2.4: normal answer, fresh cookie; no BADCOOKIE). BADCOOKIE is used only
where the RFC leaves no choice: a query with no question (the cookie "ping" of RFC 7873 5.4)
whose Server Cookie is invalid. What a valid cookie buys is size: a UDP reply to a query without one is at most
``max_nocookie_udp`` bytes (larger: TC=1), so a forged source address cannot reflect big answers.
"""

from __future__ import annotations

import hmac
import socket
import struct
import time
from enum import Enum
from typing import Callable

__all__ = ["OPTION_COOKIE", "Verdict", "Cookies", "siphash24", "siphash24_py", "server_cookie", "hash_matches",
           "parse_secret", "LIFETIME", "FUTURE", "REFRESH", "CACHE_PERIOD", "REUSE"]

#: EDNS option code of COOKIE (RFC 7873 section 4)
OPTION_COOKIE = 10
#: seconds a server cookie is accepted after its timestamp (RFC 9018 4.3: one hour)
LIFETIME = 3600
#: seconds a timestamp may lie ahead of our clock (RFC 9018 4.3: five minutes)
FUTURE = 300
#: a cookie older than this is replaced by a fresh one (RFC 9018 4.3: half an hour)
REFRESH = 1800
#: the answer cache drops every reply that carries a cookie this often (``gslb.handler``): a
#: cached reply is at most this much older than when it was computed
CACHE_PERIOD = 300
#: a valid cookie younger than this is echoed; the answer cache may serve that reply for up to
#: CACHE_PERIOD more seconds, so no reply ever carries a cookie older than REFRESH
REUSE = REFRESH - CACHE_PERIOD

_MASK = 0xFFFFFFFFFFFFFFFF
_U32 = struct.Struct("!I")
_LE64 = struct.Struct("<Q")
_LE64X2 = struct.Struct("<QQ")
_OPTION_HEAD = struct.Struct("!HH")
_VERSION_RESERVED = b"\x01\x00\x00\x00"


class Verdict(str, Enum):
    """What a query's COOKIE option is worth (module docstring)."""

    VALID = "valid"
    CLIENT_ONLY = "client_only"
    INVALID = "invalid"
    MALFORMED = "malformed"


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    """One SipRound of the four 64-bit state words."""
    v0 = (v0 + v1) & _MASK
    v1 = ((v1 << 13) | (v1 >> 51)) & _MASK
    v1 ^= v0
    v0 = ((v0 << 32) | (v0 >> 32)) & _MASK
    v2 = (v2 + v3) & _MASK
    v3 = ((v3 << 16) | (v3 >> 48)) & _MASK
    v3 ^= v2
    v0 = (v0 + v3) & _MASK
    v3 = ((v3 << 21) | (v3 >> 43)) & _MASK
    v3 ^= v0
    v2 = (v2 + v1) & _MASK
    v1 = ((v1 << 17) | (v1 >> 47)) & _MASK
    v1 ^= v2
    v2 = ((v2 << 32) | (v2 >> 32)) & _MASK
    return v0, v1, v2, v3


def siphash24_py(key: bytes, data: bytes) -> bytes:
    """SipHash-2-4 of ``data`` under the 16-byte ``key``: 8 bytes (the reference's little-endian
    output); pure Python, about 30 us for a cookie's 20 to 32 bytes (siphashc: 0.2 us)."""
    k0, k1 = _LE64X2.unpack(key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    size = len(data)
    tail = size & 7
    end = size - tail
    # the last word: the remaining bytes, the length's low byte on top
    last = int.from_bytes(data[end:], "little") | ((size & 0xFF) << 56)
    words = [int.from_bytes(data[i:i + 8], "little") for i in range(0, end, 8)]
    words.append(last)
    for m in words:
        v3 ^= m
        for _ in range(2):  # c = 2 compression rounds
            v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
    v2 ^= 0xFF
    for _ in range(4):  # d = 4 finalization rounds
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return _LE64.pack(v0 ^ v1 ^ v2 ^ v3)


try:
    from siphashc import siphash as _siphash_c

    def siphash24(key: bytes, data: bytes) -> bytes:
        """SipHash-2-4 of ``data`` under the 16-byte ``key``: 8 bytes (siphashc, the reference C code)."""
        return _LE64.pack(_siphash_c(key, data))
except ImportError:  # pragma: no cover - siphashc is a dependency; the same vectors test both
    siphash24 = siphash24_py


def address_bytes(client: str) -> bytes:
    """The client address as the hash takes it: 4 octets for IPv4, 16 for IPv6 (ValueError if neither)."""
    try:
        if ":" in client:
            return socket.inet_pton(socket.AF_INET6, client)
        return socket.inet_pton(socket.AF_INET, client)
    except OSError:
        raise ValueError(f"not an IP address: {client!r}") from None


def server_cookie(secret: bytes, client_cookie: bytes, address: bytes, timestamp: int) -> bytes:
    """Our 16-byte Server Cookie (version 1, reserved 0) for a client stamped ``timestamp``."""
    head = _VERSION_RESERVED + _U32.pack(timestamp & 0xFFFFFFFF)
    return head + siphash24(secret, client_cookie + head + address)


def hash_matches(secret: bytes, client_cookie: bytes, cookie: bytes, address: bytes) -> bool:
    """Whether a received 16-byte version-1 Server Cookie's hash is ours for this client (time not checked).

    The hash covers the reserved octets as received (RFC 9018 A.3 verifies one with 0x01abcdef).
    """
    if len(cookie) != 16 or cookie[0] != 1:
        return False
    return hmac.compare_digest(cookie[8:], siphash24(secret, client_cookie + cookie[:8] + address))


def cookie_age(now: int, timestamp: int) -> int:
    """``now - timestamp`` in seconds, in serial number arithmetic (RFC 1982; negative: ahead of us)."""
    delta = (now - timestamp) & 0xFFFFFFFF
    return delta - 0x100000000 if delta >= 0x80000000 else delta


def parse_secret(text: str) -> bytes:
    """The secret from a ``secret_file``'s text: 32 hex digits (16 bytes), whitespace ignored; ValueError else."""
    digits = "".join(text.split())
    if len(digits) != 32:
        raise ValueError(f"expected 32 hex digits (16 bytes), got {len(digits)} characters")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise ValueError("expected 32 hex digits (16 bytes), got a character that is not a hex digit") from None


class Cookies:
    """Cookie processing with one secret (every process of a node, and every node, shares it).

    ``clock`` gives the time in seconds (``time.time``; tests pass their own).
    """

    __slots__ = ("secret", "max_nocookie_udp", "clock")

    def __init__(self, secret: bytes, max_nocookie_udp: int = 1232,
                 clock: Callable[[], float] = time.time) -> None:
        if len(secret) != 16:
            raise ValueError("the cookie secret must be 16 bytes")
        self.secret = secret
        #: the largest UDP reply to a query without a valid server cookie
        self.max_nocookie_udp = max_nocookie_udp
        self.clock = clock

    def process(self, option: bytes, client: str, now: int | None = None) -> tuple[Verdict, bytes, bool]:
        """(verdict, the reply's COOKIE option with its code and length, storable).

        ``option`` is the query's COOKIE option data, ``client`` the client's address. ``storable``
        is False when the verdict would not hold CACHE_PERIOD seconds later (a valid cookie in its
        last minutes): such a reply is not kept in the answer cache. MALFORMED comes with no option.
        """
        size = len(option)
        if size != 8 and not 16 <= size <= 40:
            return Verdict.MALFORMED, b"", False
        if now is None:
            now = int(self.clock())
        client_cookie = option[:8]
        try:
            address = address_bytes(client)
        except ValueError:
            return Verdict.INVALID, b"", False
        verdict = Verdict.CLIENT_ONLY if size == 8 else Verdict.INVALID
        storable = True
        if size == 24:
            received = option[8:]
            age = cookie_age(now, _U32.unpack_from(received, 4)[0])
            if -FUTURE <= age <= LIFETIME and hash_matches(self.secret, client_cookie, received, address):
                verdict = Verdict.VALID
                storable = age <= LIFETIME - CACHE_PERIOD
                if age < REUSE and received[1:4] == b"\x00\x00\x00":
                    return verdict, _OPTION_HEAD.pack(OPTION_COOKIE, 24) + option, storable
        cookie = server_cookie(self.secret, client_cookie, address, now)
        return verdict, _OPTION_HEAD.pack(OPTION_COOKIE, 24) + client_cookie + cookie, storable
