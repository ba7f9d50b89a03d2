"""In-process DnsServer + QueryHandler over real sockets on loopback, queried with dnspython."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from gslb.config import Acl, TcpLimits
from gslb.answercache import AnswerCache
from gslb.dnsserver import DnsServer
from gslb.errors import StartupError
from gslb.handler import QueryHandler
from gslb.model import Pool, PoolAnswer, ZoneSet
from gslb.stats import QueryStats

from harness import eventually_async, make_zone

ZONE = make_zone("example.com", {
    "www": {"A": "192.0.2.1"},
    "lb": {"pool": "web"},
    "big": {"TXT": [f'"{"x" * 60} {i}"' for i in range(40)]},
}, pools={"web": Pool("web", "failover", ("fra",))})
ZONES = ZoneSet({ZONE.origin: ZONE})


class Pools:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def answer(self, zone, pool, rtype, client_ip, source_prefix):
        if self.fail:
            raise RuntimeError("balancer bug")
        return PoolAnswer("answer", ("192.0.2.10",) if rtype == "A" else (), 30, 0, ("fra",))


async def start(tcp: TcpLimits = TcpLimits(), acl: Acl = Acl(), pools=None, host="127.0.0.1"):
    stats = QueryStats()
    handler = QueryHandler(lambda: ZONES, pools or Pools(), stats, acl, AnswerCache())
    server = DnsServer(handler, tcp)
    await server.start([(host, 0)])
    return server, stats


def frame(message: dns.message.Message) -> bytes:
    wire = message.to_wire()
    return struct.pack("!H", len(wire)) + wire


async def read_frame(reader: asyncio.StreamReader) -> dns.message.Message:
    length = struct.unpack("!H", await reader.readexactly(2))[0]
    return dns.message.from_wire(await reader.readexactly(length))


async def shut(writer: asyncio.StreamWriter) -> None:
    """Close a client connection and wait until its socket is closed (none left for the GC to find
    after the test's event loop is gone)."""
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 2.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


async def test_udp_and_tcp_answer_on_same_port():
    server, stats = await start()
    try:
        host, port = server.addresses[0]
        q = dns.message.make_query("www.example.com.", "A")
        udp = await dns.asyncquery.udp(q, host, port=port, timeout=2)
        tcp = await dns.asyncquery.tcp(q, host, port=port, timeout=2)
        for reply in (udp, tcp):
            assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0][0].address == "192.0.2.1"
        assert stats.queries[("example.com", "A", "NOERROR")] == 2
    finally:
        await server.close()


async def test_ipv6_listener():
    if not socket.has_ipv6:
        pytest.fail("IPv6 loopback required")
    server, _ = await start(host="::1")
    try:
        _, port = server.addresses[0]
        reply = await dns.asyncquery.udp(dns.message.make_query("www.example.com.", "A"), "::1", port=port, timeout=2)
        assert reply.answer
    finally:
        await server.close()


async def test_udp_oversize_truncated_and_tcp_complete():
    server, _ = await start()
    try:
        host, port = server.addresses[0]
        q = dns.message.make_query("big.example.com.", "TXT")
        udp = await dns.asyncquery.udp(q, host, port=port, timeout=2, ignore_trailing=True)
        assert udp.flags & dns.flags.TC and not udp.answer
        tcp = await dns.asyncquery.tcp(q, host, port=port, timeout=2)
        assert len(tcp.answer[0]) == 40
    finally:
        await server.close()


async def test_tcp_pipelined_queries_answered_in_order():
    server, _ = await start()
    try:
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        queries = [dns.message.make_query(n, "A") for n in
                   ("www.example.com.", "lb.example.com.", "nope.example.com.", "www.example.com.")]
        writer.write(b"".join(frame(q) for q in queries))  # all at once, in one segment
        replies = [await asyncio.wait_for(read_frame(reader), 2) for _ in queries]
        assert [r.id for r in replies] == [q.id for q in queries]
        assert [r.rcode() for r in replies] == [0, 0, dns.rcode.NXDOMAIN, 0]
        await shut(writer)
    finally:
        await server.close()


async def test_tcp_query_split_across_segments():
    server, _ = await start()
    try:
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        data = frame(dns.message.make_query("www.example.com.", "A"))
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
        assert (await asyncio.wait_for(read_frame(reader), 2)).answer
        await shut(writer)
    finally:
        await server.close()


async def test_tcp_idle_timeout_closes_connection():
    server, _ = await start(TcpLimits(idle_timeout=0.3))
    try:
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        writer.write(frame(dns.message.make_query("www.example.com.", "A")))
        assert (await asyncio.wait_for(read_frame(reader), 2)).answer
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await closed_by_peer(reader, 3)
        assert 0.2 <= loop.time() - t0 < 2.5
        await shut(writer)
    finally:
        await server.close()


async def test_tcp_trickled_query_closed_at_its_deadline():
    # one byte every 0.1 s: the query would take 3+ s, its deadline is 0.5 s after its first byte
    server, _ = await start(TcpLimits(idle_timeout=0.5))
    try:
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        data = frame(dns.message.make_query("www.example.com.", "A"))
        assert len(data) * 0.1 > 3

        async def trickle() -> None:
            for i in range(len(data)):
                writer.write(data[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(trickle())
        try:
            assert await closed_by_peer(reader, 2.0)  # not answered, not kept open
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        assert server.tcp_connections == 0
        await shut(writer)
    finally:
        await server.close()


async def test_tcp_idle_timer_restarts_on_answered_queries():
    # complete queries every 0.2 s keep a connection with a 0.5 s idle timeout open for 1.2 s,
    # and a query split in two parts 0.2 s apart is still answered
    server, _ = await start(TcpLimits(idle_timeout=0.5))
    try:
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        for _ in range(6):
            writer.write(frame(dns.message.make_query("www.example.com.", "A")))
            assert (await asyncio.wait_for(read_frame(reader), 2)).answer
            await asyncio.sleep(0.2)
        data = frame(dns.message.make_query("www.example.com.", "A"))
        writer.write(data[:10])
        await asyncio.sleep(0.2)
        writer.write(data[10:])
        assert (await asyncio.wait_for(read_frame(reader), 2)).answer
        assert server.tcp_connections == 1
        assert await closed_by_peer(reader, 2.0)  # and then idle: closed
        await shut(writer)
    finally:
        await server.close()


async def test_tcp_client_that_does_not_read_is_aborted_at_the_deadline():
    # pipelined queries for a big answer, never read: the server stops reading (paused) and,
    # at the deadline, drops the connection instead of waiting for the replies to be read
    server, _ = await start(TcpLimits(idle_timeout=0.3))
    try:
        sock = socket.create_connection(server.addresses[0])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        query = frame(dns.message.make_query("big.example.com.", "TXT"))
        loop = asyncio.get_running_loop()
        await eventually_async(lambda: server.tcp_connections == 1, what="the connection accepted")

        async def flood() -> None:
            for _ in range(50000):
                await loop.sock_sendall(sock, query)

        try:
            await asyncio.wait_for(flood(), 5)  # blocks once the server stops reading
        except (ConnectionResetError, BrokenPipeError, asyncio.TimeoutError):
            pass
        await eventually_async(lambda: server.tcp_connections == 0, what="the connection dropped")
        sock.close()
    finally:
        await server.close()


async def test_tcp_cap_per_client():
    server, _ = await start(TcpLimits(max_per_client=2, max_connections=100))
    try:
        conns = [await asyncio.open_connection(*server.addresses[0]) for _ in range(3)]
        assert await closed_by_peer(conns[2][0])
        for reader, writer in conns[:2]:
            writer.write(frame(dns.message.make_query("www.example.com.", "A")))
            assert (await asyncio.wait_for(read_frame(reader), 2)).answer
        assert server.tcp_connections == 2
        for _, writer in conns:
            await shut(writer)
        # once they are gone, new connections are accepted again
        await eventually_async(lambda: server.tcp_connections == 0, what="the connections closed")
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        writer.write(frame(dns.message.make_query("www.example.com.", "A")))
        assert (await asyncio.wait_for(read_frame(reader), 2)).answer
        await shut(writer)
    finally:
        await server.close()


async def test_tcp_cap_in_total():
    server, _ = await start(TcpLimits(max_per_client=10, max_connections=1))
    try:
        first = await asyncio.open_connection(*server.addresses[0])
        second = await asyncio.open_connection(*server.addresses[0])
        assert await closed_by_peer(second[0])
        first[1].write(frame(dns.message.make_query("www.example.com.", "A")))
        assert (await asyncio.wait_for(read_frame(first[0]), 2)).answer
        await shut(first[1])
        await shut(second[1])
    finally:
        await server.close()


@pytest.mark.parametrize("garbage", [
    b"\x00\x03abc",                     # a frame too short to be a message
    b"\x00\x00",                        # an empty frame
    b"\x00\x0c" + bytes.fromhex("123481000000000000000000"),  # a response (QR=1)
])
async def test_tcp_garbage_frame_closes_connection(garbage):
    server, _ = await start()
    try:
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        writer.write(garbage)
        assert await closed_by_peer(reader)
        await shut(writer)
        # the listener is unaffected
        host, port = server.addresses[0]
        reply = await dns.asyncquery.tcp(dns.message.make_query("www.example.com.", "A"), host,
                                         port=port, timeout=2)
        assert reply.answer
    finally:
        await server.close()


async def test_tcp_malformed_query_gets_formerr_and_connection_stays():
    server, _ = await start()
    try:
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        bad = bytes.fromhex("abcd01000000000000000000")  # no question
        writer.write(struct.pack("!H", len(bad)) + bad)
        assert (await asyncio.wait_for(read_frame(reader), 2)).rcode() == dns.rcode.FORMERR
        writer.write(frame(dns.message.make_query("www.example.com.", "A")))
        assert (await asyncio.wait_for(read_frame(reader), 2)).answer
        await shut(writer)
    finally:
        await server.close()


async def test_udp_garbage_and_responses_get_no_reply():
    server, stats = await start()
    try:
        host, port = server.addresses[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            for junk in (b"\x01", bytes.fromhex("123481000000000000000000")):
                s.sendto(junk, (host, port))
                with pytest.raises(socket.timeout):
                    await asyncio.to_thread(s.recvfrom, 4096)
        assert stats.dropped["short"] == 1 and stats.dropped["response"] == 1
        # still serving
        assert (await dns.asyncquery.udp(dns.message.make_query("www.example.com.", "A"), host,
                                         port=port, timeout=2)).answer
    finally:
        await server.close()


async def test_acl_denied_client_gets_no_reply():
    server, stats = await start(acl=Acl(allow=("0.0.0.0/0",), deny=("127.0.0.0/8",)))
    try:
        host, port = server.addresses[0]
        with pytest.raises(dns.exception.Timeout):
            await dns.asyncquery.udp(dns.message.make_query("www.example.com.", "A"), host, port=port, timeout=0.3)
        assert stats.dropped["acl"] == 1
    finally:
        await server.close()


async def test_exception_in_resolve_is_servfail(caplog):
    server, stats = await start(pools=Pools(fail=True))
    try:
        host, port = server.addresses[0]
        reply = await dns.asyncquery.udp(dns.message.make_query("lb.example.com.", "A"), host, port=port, timeout=2)
        assert reply.rcode() == dns.rcode.SERVFAIL and reply.question
        assert "balancer bug" in caplog.text
        assert stats.queries[("", "A", "SERVFAIL")] == 1
        # and the server keeps answering
        assert (await dns.asyncquery.udp(dns.message.make_query("www.example.com.", "A"), host,
                                         port=port, timeout=2)).answer
    finally:
        await server.close()


async def test_bind_failure_names_address():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = DnsServer(QueryHandler(lambda: ZONES, Pools(), QueryStats(), Acl()), TcpLimits())
        with pytest.raises(StartupError, match=f"127.0.0.1:{port}"):
            await server.start([("127.0.0.1", port)])
        await server.close()


async def test_close_drops_open_connections():
    server, _ = await start()
    reader, writer = await asyncio.open_connection(*server.addresses[0])
    await eventually_async(lambda: server.tcp_connections == 1, what="the connection accepted")
    await server.close()
    assert await closed_by_peer(reader)
    await shut(writer)
    assert server.tcp_connections == 0


def test_handler_counts_unusual_types_as_other():
    stats = QueryStats()
    handler = QueryHandler(lambda: ZONES, Pools(), stats, Acl())
    reply = handler.handle(dns.message.make_query("www.example.com.", 65000).to_wire(), "192.0.2.1", False)
    assert dns.message.from_wire(reply).rcode() == dns.rcode.NOERROR
    assert stats.queries[("example.com", "other", "NOERROR")] == 1


def test_handler_acl_allow_list():
    handler = QueryHandler(lambda: ZONES, Pools(), QueryStats(), Acl(allow=("192.0.2.0/24", "2001:db8::/32"), deny=("192.0.2.128/25",)))
    q = dns.message.make_query("www.example.com.", "A").to_wire()
    assert handler.handle(q, "192.0.2.1", False) is not None
    assert handler.handle(q, "2001:db8::1", True) is not None
    assert handler.handle(q, "192.0.2.200", False) is None  # denied beats allowed
    assert handler.handle(q, "198.51.100.1", False) is None  # not allowed
