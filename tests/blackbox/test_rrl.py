"""Response rate limiting, black-box: the real server with ``rate_limit`` set, flooded over UDP
with dnspython-built queries.

A flood of identical queries gets about ``rate x time + burst`` full answers (the bound uses the
flood's own measured duration), every second limited reply slipped (TC=1, the question, OPT, no
records: ``slip: 2``) and the others no reply at all; the same question over TCP is always
answered; an exempt address always gets the answer; ``/metrics`` and the status API count exactly
what the client saw. With ``workers: 2`` each process limits on its own. No fixed waits: the
server's counters say when every query was handled, and a sentinel query on the same socket says
when every reply has arrived (one UDP thread answers in order).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
from prometheus_client.parser import text_string_to_metric_families

from harness import eventually

RATE = 5
WINDOW = 1
BURST = RATE * WINDOW
FLOOD = 200

ZONE = """
zone: rrl.test
ns: [ns1.rrl.test]
records:
  ns1: {A: 192.0.2.53}
  www: {A: 192.0.2.1}
  big: {TXT: ["%s", "%s", "%s", "%s"]}
""" % tuple(c * 250 for c in "abcd") + "".join(f"  s{n}: {{A: 192.0.2.{n + 100}}}\n" for n in range(32))

CONFIG = {"checks": False, "rate_limit": {"responses_per_second": RATE, "window": WINDOW, "slip": 2,
                                          "exempt": ["127.0.0.2/32"]}}


def metrics(server) -> dict[str, float]:
    """Totals of the counters this test reads (TXT queries only: the flood's)."""
    with urllib.request.urlopen(server.http + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gslb_queries_total" and sample.labels["qtype"] != "TXT":
                continue
            if sample.name in ("gslb_queries_total", "gslb_rrl_dropped_total", "gslb_rrl_slipped_total"):
                out[sample.name] = out.get(sample.name, 0) + sample.value
    return out


def status(server) -> dict[str, Any]:
    with urllib.request.urlopen(server.http + "/api/v1/status", timeout=5) as resp:
        return json.loads(resp.read())


def big_query(ident: int) -> bytes:
    q = dns.message.make_query("big.rrl.test.", "TXT", use_edns=0, payload=4096)
    q.id = ident
    return q.to_wire()


def flood(server, socks: list[socket.socket], per_socket: int) -> tuple[dict[int, dns.message.Message], float, dict]:
    """Send ``per_socket`` identical queries from each socket, wait until the server has handled them
    all; return the replies by ID, the seconds from the first send until then, and the counter
    deltas."""
    before = metrics(server)
    total = per_socket * len(socks)
    start = time.monotonic()
    ident = 0
    for _ in range(per_socket):
        for sock in socks:
            ident += 1
            sock.sendto(big_query(ident), ("127.0.0.1", server.port))

    def handled() -> dict[str, float] | None:
        now = metrics(server)
        delta = {k: now.get(k, 0) - before.get(k, 0) for k in now}
        return delta if sum(delta.values()) >= total else None

    delta = eventually(handled, timeout=30, what=f"{total} queries handled")
    elapsed = time.monotonic() - start
    replies: dict[int, dns.message.Message] = {}
    for n, sock in enumerate(socks):
        # a sentinel (another question per socket: its own, full bucket) after the flood; one UDP
        # thread answers a socket's queries in order, so once it is here every reply has arrived
        sentinel = dns.message.make_query(f"s{n}.rrl.test.", "A")
        sentinel.id = 60000 + n
        sock.sendto(sentinel.to_wire(), ("127.0.0.1", server.port))
        sock.settimeout(10)
        while True:
            reply = dns.message.from_wire(sock.recv(65535))
            if reply.id == sentinel.id:
                assert reply.answer
                break
            assert reply.id not in replies
            replies[reply.id] = reply
    return replies, elapsed, delta


def classify(replies: dict[int, dns.message.Message]) -> tuple[int, int]:
    """(full answers, slipped replies); anything else fails."""
    full = slipped = 0
    for reply in replies.values():
        assert [(str(q.name), q.rdtype) for q in reply.question] == [("big.rrl.test.", dns.rdatatype.TXT)]
        assert reply.flags & dns.flags.QR and reply.edns == 0  # the OPT record is kept either way
        if reply.flags & dns.flags.TC:
            # slipped: header with TC=1, the question, OPT, no records
            assert not reply.answer and not reply.authority and not reply.additional
            slipped += 1
        else:
            assert len(reply.answer) == 1 and sum(len(s) for r in reply.answer[0] for s in r.strings) == 1000
            full += 1
    return full, slipped


def udp_socket(address: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def test_a_udp_flood_is_limited_with_slip_tcp_and_exempt_clients_are_not(gslb_server):
    server = gslb_server({"rrl.yaml": ZONE}, config=CONFIG)
    sock = udp_socket()
    try:
        replies, elapsed, delta = flood(server, [sock], FLOOD)
    finally:
        sock.close()
    full, slipped = classify(replies)
    limited = FLOOD - full
    # the burst (a window of credit), plus the rate over the flood's duration at most
    assert BURST <= full <= BURST + RATE * elapsed + 1, (full, elapsed)
    # slip 2: every second limited reply is sent truncated, the others get nothing
    assert slipped == limited // 2
    assert len(replies) == full + slipped
    # the counters say the same: limited replies are not counted as answered queries
    assert delta == {"gslb_queries_total": full, "gslb_rrl_slipped_total": slipped,
                     "gslb_rrl_dropped_total": limited - slipped}
    rl = status(server)["rate_limit"]
    assert (rl["responses_per_second"], rl["window"], rl["slip"]) == (RATE, WINDOW, 2)
    assert (rl["slipped"], rl["dropped"]) == (slipped, limited - slipped)

    # TCP is never limited (the bucket is empty now)
    q = dns.message.make_query("big.rrl.test.", "TXT")
    for _ in range(30):
        reply = dns.query.tcp(q, "127.0.0.1", port=server.port, timeout=5)
        assert not reply.flags & dns.flags.TC and len(reply.answer) == 1

    # an exempt address always gets the full answer (same /24 as the flooded client)
    q = dns.message.make_query("big.rrl.test.", "TXT", use_edns=0, payload=4096)
    for _ in range(30):
        reply = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=5, source="127.0.0.2")
        assert not reply.flags & dns.flags.TC and len(reply.answer) == 1
    after = metrics(server)
    assert after["gslb_rrl_dropped_total"] == limited - slipped
    assert after["gslb_rrl_slipped_total"] == slipped


def test_each_worker_process_limits(gslb_server):
    server = gslb_server({"rrl.yaml": ZONE}, config=dict(CONFIG, workers=2))
    # many source ports: the kernel spreads them over both processes
    socks = [udp_socket() for _ in range(16)]
    try:
        replies, elapsed, delta = flood(server, socks, 20)
    finally:
        for sock in socks:
            sock.close()
    full, slipped = classify(replies)
    # each process has its own buckets: two bursts and twice the rate at most, not 320 answers
    assert BURST <= full <= 2 * (BURST + RATE * elapsed + 1), (full, elapsed)
    assert delta["gslb_queries_total"] == full
    assert delta["gslb_rrl_slipped_total"] == slipped
    assert delta["gslb_rrl_dropped_total"] == 320 - full - slipped
