"""DNS listeners: UDP in blocking threads, TCP (RFC 7766) on the event loop, around one query handler.

The handler (``gslb.handler.QueryHandler``) does all the DNS work; this module only moves bytes:
``handler.udp(data, host) -> bytes | None`` per datagram (``host`` as the socket reports it; the
handler's answer cache keys per-client answers by it), ``handler.handle(data, host, True)`` per
TCP message.

UDP: one thread per socket loops on a blocking ``recvfrom`` and answers with ``sendto`` at once.
That is two system calls a query, the fewest there are: an event loop adds a readiness poll and
a read that finds nothing more per wake-up (measured: about a fifth more CPU per query at 20,000
queries a second, for a bare echo). The event loop keeps everything else (TCP, HTTP, health
checks, state); a cache hit takes no lock, so the two threads only meet on the GIL and, for a
computed answer, on the handler's lock. A reply that does not fit the socket's send buffer is
dropped (``MSG_DONTWAIT``): the client retries, as after any UDP loss. ``close`` shuts the
sockets down, which wakes the blocked ``recvfrom``, and joins the threads.

Tried and left out: napping 0.2 ms when the queue runs dry (so that, at a moderate rate, one
wake-up answers several datagrams) saved about a fifth of the CPU at a fixed 20,000 q/s, but cost
15-25 % of the throughput of a closed-loop client (a resolver or dnsperf waiting for its
answers) and added up to a quarter millisecond to replies: latency and throughput come first.

TCP connections carry 2-byte length-prefixed messages; several queries per connection are answered
in the order they arrived (the handler is synchronous, so pipelined queries are answered one
after the other), and the number of open connections is capped in total and per client address
(excess connections are closed at once, RFC 7766 section 6.2.2).

Timeouts (RFC 7766 section 6.2.3), both ``TcpLimits.idle_timeout``: a connection with no bytes
pending is closed ``idle_timeout`` after it opened or after its last complete query was
answered; a query must be complete within ``idle_timeout`` of its first byte. Partial data
never resets a timer, so a client trickling one byte at a time cannot hold a connection open
(at most 2 x ``idle_timeout`` without a complete query). A connection whose client does not
read its replies is aborted at the deadline rather than closed (a close would wait for the
unread replies to be flushed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from typing import Protocol, cast

from gslb.config import TcpLimits
from gslb.errors import StartupError
from gslb.handler import client_ip

logger = logging.getLogger(__name__)


class Handler(Protocol):
    """What the listeners call (``gslb.handler.QueryHandler``)."""

    def udp(self, data: bytes, host: str) -> bytes | None:
        """The reply to one datagram (None: no reply)."""

    def handle(self, data: bytes, host: str, tcp: bool) -> bytes | None:
        """The reply to one message (None: no reply)."""


#: the smallest valid DNS message (a header)
_MIN_MESSAGE = 12


class _UdpListener:
    """One UDP socket answered by one thread (module docstring)."""

    def __init__(self, sock: socket.socket, handler: Handler, name: str) -> None:
        self.sock = sock
        self._handler = handler
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        udp = self._handler.udp
        dontwait = socket.MSG_DONTWAIT
        while True:
            try:
                data, addr = recvfrom(65535)
            except OSError as exc:
                if self._stopping:
                    return
                logger.debug("UDP receive error: %s", exc)  # e.g. ICMP errors of earlier replies
                continue
            if self._stopping:
                return
            if not data:
                continue
            try:
                reply = udp(data, addr[0])
                if reply is not None:
                    sendto(reply, dontwait, addr)
            except (BlockingIOError, InterruptedError):
                pass  # the send buffer is full: dropped, the client retries
            except OSError as exc:
                logger.debug("UDP send to %s failed: %s", addr[0], exc)
            except Exception:  # never let one packet stop the listener
                logger.exception("UDP query from %s failed", addr[0])

    def stop(self) -> None:
        """Wake the thread (a shutdown ends its blocked recvfrom), wait for it, close the socket."""
        self._stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # ENOTCONN on an unconnected socket, but the receiver is woken all the same
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.sock.close()


def _udp_socket(host: str, port: int, family: int, reuse_port: bool) -> socket.socket:
    """A bound, blocking UDP socket with a large receive buffer."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        _grow_receive_buffer(sock)
    except BaseException:
        sock.close()
        raise
    return sock


class _TcpProtocol(asyncio.Protocol):
    """One TCP connection: length-framed queries, answered in order."""

    def __init__(self, server: "DnsServer") -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._client = ""
        self._counted = False
        self._paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # when the last complete query was answered (or the connection opened)
        self._last = 0.0
        # when the first byte of the query now in the buffer arrived (valid while the buffer is not empty)
        self._started = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # a stream server's transport
        peer = transport.get_extra_info("peername")
        self._client = client_ip(peer[0]) if peer else ""
        if not self._server._admit(self):
            transport.abort()  # over the cap: closed at once
            return
        self._counted = True
        loop = self._loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._timer = loop.call_later(self._server.limits.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        transport = self._transport
        loop = self._loop
        if transport is None or loop is None or transport.is_closing():
            return
        timeout = self._server.limits.idle_timeout
        # a partial query runs against its own deadline, an empty buffer against the idle one
        since = self._started if self._buffer else self._last
        left = since + timeout - loop.time()
        if left > 0:
            self._timer = loop.call_later(left, self._check_idle)
        elif transport.get_write_buffer_size():
            transport.abort()  # the client does not read: close() would wait for it forever
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._buffer and self._loop is not None:
            self._started = self._loop.time()  # the first byte of a new query
        self._buffer += data
        if not self._paused:
            self._process()

    def _process(self) -> None:
        buffer = self._buffer
        transport = self._transport
        if transport is None:
            return
        answered = False
        try:
            while len(buffer) >= 2 and not self._paused and not transport.is_closing():
                length = (buffer[0] << 8) | buffer[1]
                if length < _MIN_MESSAGE:
                    transport.close()  # a garbled frame: nothing after it can be trusted
                    return
                if len(buffer) < 2 + length:
                    break
                message = bytes(buffer[2:2 + length])
                del buffer[:2 + length]
                reply = self._server.handler.handle(message, self._client, True)
                if reply is None:
                    transport.close()  # dropped (response packet, ACL, garbage): end the stream
                    return
                transport.write(len(reply).to_bytes(2, "big") + reply)
                answered = True
            if answered and self._loop is not None:
                # a complete query answered: the idle timer restarts, and what is left in the
                # buffer (the start of the next query, or queries held back while paused)
                # counts from now
                self._last = self._started = self._loop.time()
        except Exception:
            logger.exception("TCP query from %s failed", self._client)
            transport.abort()

    def pause_writing(self) -> None:
        # the client does not read its replies: stop reading its queries until it does
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._process()

    def eof_received(self) -> bool:
        return False  # close once the replies are written

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted:
            self._counted = False
            self._server._release(self)
        self._transport = None

    def abort(self) -> None:
        """Drop the connection now (server shutdown)."""
        if self._transport is not None:
            self._transport.abort()


class DnsServer:
    """UDP and TCP listeners on a list of addresses, answering through the handler."""

    def __init__(self, handler: Handler, tcp: TcpLimits) -> None:
        self.handler = handler
        self.limits = tcp
        self._udp: list[_UdpListener] = []
        self._tcp: list[asyncio.base_events.Server] = []
        self._connections: set[_TcpProtocol] = set()
        self._per_client: dict[str, int] = {}
        #: (host, port) actually bound, in listen order (port 0 resolved)
        self.addresses: list[tuple[str, int]] = []

    async def start(self, listen: list[tuple[str, int]], reuse_port: bool = False, tcp: bool = True) -> None:
        """Bind UDP (and TCP unless ``tcp`` is False) on every address; StartupError names the
        address that failed.

        ``reuse_port``: the UDP sockets are opened with SO_REUSEPORT so that DNS worker
        processes can bind the same addresses (``gslb.workers``). The port is first bound
        without it, so a port another program holds still fails (exit 3), not shared silently.
        """
        loop = asyncio.get_running_loop()
        try:
            for host, port in listen:
                shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                try:
                    bound_port = port
                    if tcp:
                        server = await loop.create_server(
                            lambda: _TcpProtocol(self), host, port, family=family, reuse_address=True,
                            backlog=1024)
                        self._tcp.append(server)
                        bound_port = server.sockets[0].getsockname()[1]
                    if reuse_port and tcp:
                        _check_free(host, bound_port, family)
                    sock = _udp_socket(host, bound_port, family, reuse_port)
                except OSError as e:
                    why = os.strerror(e.errno) if e.errno else str(e)
                    raise StartupError(f"cannot listen on {shown} (UDP and TCP): {why}") from e
                listener = _UdpListener(sock, self.handler, f"dns-udp-{shown}")
                self._udp.append(listener)
                listener.start()
                self.addresses.append((host, bound_port))
                logger.info("DNS listening on %s (%s)", shown if port else f"{host}:{bound_port}",
                            "UDP and TCP" if tcp else "UDP")
        except BaseException:
            await self.close()
            raise

    def _admit(self, conn: _TcpProtocol) -> bool:
        limits = self.limits
        count = self._per_client.get(conn._client, 0)
        if len(self._connections) >= limits.max_connections or count >= limits.max_per_client:
            logger.debug("TCP connection from %s refused: over the connection cap", conn._client)
            return False
        self._connections.add(conn)
        self._per_client[conn._client] = count + 1
        return True

    def _release(self, conn: _TcpProtocol) -> None:
        self._connections.discard(conn)
        count = self._per_client.get(conn._client, 0) - 1
        if count > 0:
            self._per_client[conn._client] = count
        else:
            self._per_client.pop(conn._client, None)

    @property
    def tcp_connections(self) -> int:
        """How many TCP connections are open."""
        return len(self._connections)

    async def close(self) -> None:
        """Stop listening and drop open TCP connections."""
        for listener in self._udp:
            await asyncio.to_thread(listener.stop)
        self._udp.clear()
        for server in self._tcp:
            server.close()
        for conn in list(self._connections):
            conn.abort()
        for server in self._tcp:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except asyncio.TimeoutError:
                logger.warning("TCP listener did not close within 2 s")
        self._tcp.clear()
        await asyncio.sleep(0)  # let connection_lost callbacks run


def _check_free(host: str, port: int, family: int) -> None:
    """Raise OSError (EADDRINUSE) when a UDP socket without SO_REUSEPORT cannot bind the address."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, port))


def _grow_receive_buffer(sock: socket.socket | None) -> None:
    """Ask for a large UDP receive buffer so bursts are not dropped (best effort)."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    except OSError:
        pass
