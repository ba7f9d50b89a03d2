"""Start and stop a real ``redis-server`` on a free loopback port in a temporary folder (tests only)."""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import sys
import subprocess
from pathlib import Path

from harness import eventually

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the test process dies, even when killed."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; ``stop()`` and ``start()`` again keep the port.

    ``persist=False`` (the default) runs without RDB/AOF, so a restart loses every key, the
    harshest case for the cluster code. ``persist=True`` turns on the append-only file.
    """

    def __init__(self, workdir: Path, *, persist: bool = False, password: str | None = None,
                 port: int | None = None, unixsocket: Path | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_tcp_port()
        self.persist = persist
        self.password = password
        #: also listen on this Unix socket (``unix_url``)
        self.unixsocket = unixsocket
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = workdir / "redis.log"

    @property
    def url(self) -> str:
        """redis:// URL of database 0 (with the password when one is set)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """unix:// URL of database 0 on ``unixsocket``."""
        assert self.unixsocket is not None
        return f"unix://{self.unixsocket}?db=0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Start the server and wait until it accepts connections and answers PING."""
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--daemonize", "no",
            "--logfile", str(self.log_file), "--protected-mode", "no",
            "--appendonly", "yes" if self.persist else "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.unixsocket is not None:
            args += ["--unixsocket", str(self.unixsocket), "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        proc = self.proc

        def answering() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}:\n{self.log()}")
            return self._ping()

        try:
            eventually(answering, timeout=timeout, interval=0.02, what="redis-server answering PING")
        except AssertionError:
            self.stop()
            raise RuntimeError(f"redis-server did not start within {timeout}s:\n{self.log()}") from None
        return self

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    if not s.recv(64).startswith(b"+OK"):
                        return False
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL); idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        """The server's log so far."""
        return self.log_file.read_text() if self.log_file.exists() else ""
