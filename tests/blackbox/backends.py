"""Local HTTP and TCP backends on 127.0.0.1 that a test flips between healthy and failing modes.

``Backend(kind="http")`` answers every request with ``status``/``body``/``X-Load`` in mode
``healthy``; ``failing_status`` answers 503; ``failing_body`` answers 200 with a body lacking the
expected text; ``refusing`` closes the listening socket (connections are refused) and ``hanging``
accepts connections and never answers; ``stalling_body`` sends the status line and headers, then
nothing more. ``fail_next(n, mode)`` answers the next ``n`` requests in a failing mode, then
healthy again (hysteresis tests). ``kind="tcp"`` accepts and closes connections (modes
``healthy`` and ``refusing``). Every backend runs in a daemon thread and is closed by ``stop()``.
"""

from __future__ import annotations

import socket
import threading
from typing import Literal

Mode = Literal["healthy", "failing_status", "failing_body", "refusing", "hanging", "stalling_body"]

MODES: tuple[str, ...] = ("healthy", "failing_status", "failing_body", "refusing", "hanging", "stalling_body")


class Backend:
    """One loopback backend whose behaviour a test switches with ``set()``."""

    def __init__(self, kind: Literal["http", "tcp"] = "http", body: str = "OK", load: float | None = None) -> None:
        self.kind = kind
        self.body = body
        self.load = load
        self.mode: str = "healthy"
        self.requests = 0
        #: requests answered by ``fail_next`` in a failing mode
        self.failed = 0
        self._fail_left = 0
        self._fail_mode = "failing_status"
        #: the request line and headers (lower-case names) of the last request
        self.last_request: tuple[str, dict[str, str]] | None = None
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self._listen()

    # -- control ---------------------------------------------------------------------------------

    def set(self, mode: str, load: float | None = ...) -> None:  # type: ignore[assignment]
        """Switch to ``mode`` (one of MODES); optionally change the X-Load value."""
        assert mode in MODES, mode
        if load is not ...:
            self.load = load
        with self._lock:
            previous, self.mode = self.mode, mode
        if mode == "refusing" and previous != "refusing":
            self._close_listener()
        elif mode != "refusing" and previous == "refusing":
            self._listen()
        if mode != "hanging":
            self._release_held()

    def fail_next(self, n: int, mode: str = "failing_status") -> None:
        """Answer the next ``n`` HTTP requests in ``mode`` (failing_status or failing_body), then healthy."""
        assert mode in ("failing_status", "failing_body"), mode
        with self._lock:
            self._fail_left, self._fail_mode = n, mode

    def stop(self) -> None:
        """Close the listener and every connection held open."""
        self._stopped = True
        self._close_listener()
        self._release_held()

    # -- internals -------------------------------------------------------------------------------

    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        self._thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        sock, self._listener = self._listener, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    def _release_held(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()

    def _accept_loop(self, sock: socket.socket) -> None:
        while not self._stopped:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            mode = self.mode
            if mode == "hanging":
                self._held.append(conn)
                return
        if self.kind == "tcp":
            conn.close()
            return
        try:
            conn.settimeout(2)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            with self._lock:
                self.requests += 1
                if self._fail_left > 0 and mode == "healthy":
                    self._fail_left -= 1
                    self.failed += 1
                    mode = self._fail_mode
            line, *headers = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            self.last_request = (line, {k.strip().lower(): v.strip() for k, _, v in
                                        (h.partition(":") for h in headers)})
            status, reason, body = 200, "OK", self.body
            if mode == "failing_status":
                status, reason, body = 503, "Service Unavailable", "unavailable"
            elif mode == "failing_body":
                body = "maintenance"
            payload = body.encode()
            head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(payload)}\r\n"
            if self.load is not None:
                head += f"X-Load: {self.load:g}\r\n"
            head += "Connection: close\r\n\r\n"
            if mode == "stalling_body":
                conn.sendall(head.encode())
                with self._lock:
                    self._held.append(conn)
                conn = None  # type: ignore[assignment]
                return
            conn.sendall(head.encode() + payload)
        except OSError:
            pass
        finally:
            if conn is not None:
                conn.close()
