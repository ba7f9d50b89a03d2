"""DNS Cookies (RFC 7873, RFC 9018 server cookies) against real ``gslb serve`` processes (dnspython).

Two servers share one ``secret_file`` (two anycast nodes): a server cookie from one is valid at the
other. ``max_nocookie_udp: 512`` makes the size cap visible: a 900-byte TXT answer is truncated
over UDP unless the query brings a valid server cookie.
"""

from __future__ import annotations

import json
import socket
import struct
import urllib.request

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from harness import Gslb, eventually

ZONE = """
zone: c.example
ns: [ns1.c.example]
records:
  ns1: {A: 192.0.2.53}
  api: {A: 192.0.2.80}
  big: {TXT: [%s]}
""" % ", ".join(f'"{"t" * 80} {i}"' for i in range(10))

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
CLIENT = bytes.fromhex("a1b2c3d4e5f60718")
SIZE_CAP = 512


def make_server(tmp_path_factory, name: str, cookies: dict) -> Gslb:
    workdir = tmp_path_factory.mktemp(name)
    (workdir / "cookie.hex").write_text(SECRET[:16] + "\n" + SECRET[16:] + "\n")
    return Gslb(workdir, {"c.example.yaml": ZONE}, {"checks": False, "cookies": cookies}).start(wait_for="c.example.")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """Two nodes sharing the secret file."""
    cookies = {"enabled": True, "secret_file": "cookie.hex", "max_nocookie_udp": SIZE_CAP}
    first = make_server(tmp_path_factory, "node1", cookies)
    try:
        second = make_server(tmp_path_factory, "node2", cookies)
    except Exception:
        first.stop()
        raise
    yield first, second
    first.stop()
    second.stop()


def ask(server: Gslb, qname: str, rdtype: str = "A", cookie: bytes | None = None) -> tuple[dns.message.Message, int]:
    """(reply, its size in bytes) for one UDP query with EDNS (payload 1232) and the COOKIE option."""
    options = None if cookie is None else [dns.edns.GenericOption(10, cookie)]
    q = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232, options=options)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(q.to_wire(), ("127.0.0.1", server.port))
        data = sock.recv(65535)
    return dns.message.from_wire(data), len(data)


def cookie_of(reply: dns.message.Message) -> bytes | None:
    found = [o.to_wire() for o in reply.options if o.otype == 10]
    assert len(found) <= 1
    return found[0] if found else None


def test_a_client_cookie_gets_a_16_byte_server_cookie_back(nodes):
    reply, _ = ask(nodes[0], "api.c.example.", cookie=CLIENT)
    cookie = cookie_of(reply)
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer
    assert cookie is not None and len(cookie) == 24 and cookie[:8] == CLIENT  # option length 24
    assert cookie[8] == 1 and cookie[9:12] == b"\x00\x00\x00"  # RFC 9018: version 1, reserved 0


def test_a_server_cookie_from_one_node_is_valid_at_another_with_the_same_secret(nodes):
    first, second = nodes
    reply, _ = ask(first, "api.c.example.", cookie=CLIENT)
    cookie = cookie_of(reply)
    # the big answer: truncated without a cookie and with a client cookie alone...
    for sent in (None, CLIENT):
        big, size = ask(second, "big.c.example.", "TXT", cookie=sent)
        assert big.flags & dns.flags.TC and size <= SIZE_CAP and not big.answer
    # ...and whole with the server cookie the first node gave: the second node accepts it
    big, size = ask(second, "big.c.example.", "TXT", cookie=cookie)
    assert not big.flags & dns.flags.TC and size > SIZE_CAP and len(big.answer[0]) == 10
    assert cookie_of(big) == cookie  # a young valid cookie is echoed as it is
    assert ask(first, "big.c.example.", "TXT", cookie=cookie)[0].answer  # and at the first node


def test_a_cookie_made_for_another_address_is_not_valid(nodes):
    first, _ = nodes
    cookie = cookie_of(ask(first, "api.c.example.", cookie=CLIENT)[0])
    # the same bytes from another client address (127.0.0.2 is a loopback address too)
    q = dns.message.make_query("big.c.example.", "TXT", use_edns=0, payload=1232,
                               options=[dns.edns.GenericOption(10, cookie)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        reply = dns.query.udp(q, "127.0.0.1", port=first.port, timeout=2, sock=sock)
    assert reply.flags & dns.flags.TC
    assert cookie_of(reply)[:8] == CLIENT and cookie_of(reply) != cookie  # a fresh one for that address


@pytest.mark.parametrize("size", [0, 7, 12, 41])
def test_a_malformed_cookie_option_gets_formerr(nodes, size):
    reply, _ = ask(nodes[0], "api.c.example.", cookie=bytes(range(size)))
    assert reply.rcode() == dns.rcode.FORMERR and cookie_of(reply) is None


def test_tcp_answers_whole_without_a_cookie_and_returns_one(nodes):
    q = dns.message.make_query("big.c.example.", "TXT", use_edns=0, options=[dns.edns.GenericOption(10, CLIENT)])
    reply = dns.query.tcp(q, "127.0.0.1", port=nodes[0].port, timeout=2)
    assert not reply.flags & dns.flags.TC and len(reply.answer[0]) == 10 and cookie_of(reply)[:8] == CLIENT


def ping(server: Gslb, cookie: bytes) -> dns.message.Message:
    """A query with no question and a COOKIE option (RFC 7873 5.4)."""
    opt = struct.pack("!HH", 10, len(cookie)) + cookie
    data = struct.pack("!HHHHHH", 0x4242, 0, 0, 0, 0, 1) + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(opt)) + opt
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(data, ("127.0.0.1", server.port))
        return dns.message.from_wire(sock.recv(65535))


def test_a_cookie_ping_gets_noerror_and_badcookie_only_for_an_invalid_server_cookie(nodes):
    learnt = ping(nodes[0], CLIENT)
    assert learnt.rcode() == dns.rcode.NOERROR and not learnt.question and len(cookie_of(learnt)) == 24
    again = ping(nodes[1], cookie_of(learnt))
    assert again.rcode() == dns.rcode.NOERROR and cookie_of(again) == cookie_of(learnt)
    bad = ping(nodes[0], CLIENT + bytes(16))
    assert bad.rcode() == dns.rcode.BADCOOKIE and cookie_of(bad)[:8] == CLIENT
    # a normal query with the same invalid cookie is answered (gslb does not require cookies)
    reply, _ = ask(nodes[0], "api.c.example.", cookie=CLIENT + bytes(16))
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer and cookie_of(reply) != CLIENT + bytes(16)


def test_cookie_verdicts_are_counted_in_metrics(nodes):
    first = nodes[0]
    cookie = cookie_of(ask(first, "api.c.example.", cookie=CLIENT)[0])
    ask(first, "api.c.example.", cookie=cookie)

    def counts() -> dict[str, float]:
        with urllib.request.urlopen(first.http + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("gslb_dns_cookies_total{")}

    seen = eventually(lambda: counts() if {"valid", "client_only"} <= set(counts()) else None, what="cookie metrics")
    assert seen["valid"] >= 1 and seen["client_only"] >= 1


def test_cookies_disabled_no_cookie_option_in_replies(tmp_path_factory):
    server = make_server(tmp_path_factory, "off", {"enabled": False})
    try:
        reply, _ = ask(server, "api.c.example.", cookie=CLIENT)
        assert reply.answer and cookie_of(reply) is None
        malformed, _ = ask(server, "api.c.example.", cookie=bytes(3))  # not looked at: no FORMERR
        assert malformed.rcode() == dns.rcode.NOERROR and cookie_of(malformed) is None
    finally:
        server.stop()


def test_every_worker_process_shares_the_random_secret(tmp_path_factory):
    """No secret_file and two DNS processes: a cookie from either is valid at both."""
    workdir = tmp_path_factory.mktemp("workers")
    server = Gslb(workdir, {"c.example.yaml": ZONE},
                  {"checks": False, "workers": 2, "cookies": {"max_nocookie_udp": SIZE_CAP}}).start(wait_for="c.example.")
    try:
        cookie = cookie_of(ask(server, "api.c.example.", cookie=CLIENT)[0])
        # thirty source ports: the kernel spreads them over both processes (SO_REUSEPORT)
        for _ in range(30):
            big, _ = ask(server, "big.c.example.", "TXT", cookie=cookie)
            assert not big.flags & dns.flags.TC and big.answer and cookie_of(big) == cookie

        def workers() -> list[dict]:
            with urllib.request.urlopen(server.http + "/api/v1/status", timeout=5) as resp:
                return json.loads(resp.read())["workers"]

        eventually(lambda: len(workers()) == 2 and all(w["queries"] > 0 for w in workers()),
                   what="both processes answered")
    finally:
        server.stop()
