"""Start a real ``gslb serve`` process for black-box tests and talk to it with dnspython."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` (127.0.0.1 or ::1) for both UDP and TCP."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = t.getsockname()[1]
            with socket.socket(family, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port on {host}")


class Gslb:
    """A running ``gslb serve`` in its own folder; stopped by ``stop()`` (or the fixture)."""

    def __init__(self, workdir: Path, zones: dict[str, str], config: dict[str, Any] | None = None,
                 args: list[str] | None = None, rlimit_nofile: tuple[int, int] | None = None) -> None:
        self.workdir = workdir
        self.zones_dir = workdir / "zones"
        self.zones_dir.mkdir(parents=True, exist_ok=True)
        for name, text in zones.items():
            (self.zones_dir / name).write_text(text)
        self.port = free_port()
        self.http_port = free_port()
        cfg: dict[str, Any] = {
            "listen": [f"127.0.0.1:{self.port}"],
            "http": f"127.0.0.1:{self.http_port}",
            "zones": "zones",
            "geoip": str(ROOT / "data" / "sample-city.mmdb"),
        }
        cfg.update(config or {})
        self.config_file = workdir / "gslb.yaml"
        self.config_file.write_text(yaml.safe_dump(cfg))
        self.args = args or []
        #: (soft, hard) open-file limit the server starts with; None: this process's
        self.rlimit_nofile = rlimit_nofile
        self.proc: subprocess.Popen[str] | None = None
        self.log_file = workdir / "gslb.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, wait_for: str | None = None, timeout: float = 15.0) -> "Gslb":
        """Start the server and wait until it answers DNS (and HTTP when enabled)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_file, "w")
        limits = self.rlimit_nofile
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gslb", "serve", "-c", str(self.config_file), *self.args],
            cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT, text=True, env=env,
            preexec_fn=None if limits is None else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits),
        )
        deadline = time.monotonic() + timeout
        qname = wait_for or "invalid."
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gslb exited with {self.proc.returncode}:\n{self.log()}")
            # "gslb: serving" is logged once the first round of health checks is done
            if "gslb: serving" in self.log():
                try:
                    dns.query.udp(dns.message.make_query(qname, "SOA"), "127.0.0.1", port=self.port,
                                  timeout=0.2)
                    return self
                except (dns.exception.Timeout, ConnectionRefusedError, OSError):
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gslb did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then wait; SIGKILL if it does not stop. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def query(self, qname: str, rdtype: str = "A", *, tcp: bool = False, ecs: str | None = None,
              payload: int | None = 1232, use_edns: bool | int = 0, timeout: float = 2.0,
              **kw: Any) -> dns.message.Message:
        """One query with dnspython; ``ecs="192.0.2.0/24"`` adds an ECS option."""
        options = []
        if ecs is not None:
            addr, _, prefix = ecs.partition("/")
            options.append(dns.edns.ECSOption(addr, int(prefix) if prefix else None))
        q = dns.message.make_query(qname, rdtype, use_edns=use_edns, payload=payload or 1232,
                                   options=options or None, **kw)
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=timeout)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=timeout)


def eventually(predicate: Any, timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns something true (returned), or fail after ``timeout`` seconds.

    The timeout is a ceiling for a slow machine, not a measurement: a passing test returns as
    soon as the condition holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s (last: {result!r})")
        time.sleep(interval)
