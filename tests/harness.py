"""Start a real ``gslb serve`` process for black-box tests and talk to it with dnspython."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import yaml

from gslb.model import Node, Pool, Record, Soa, Zone

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
        qname = wait_for or "invalid."
        proc = self.proc

        def answering() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"gslb exited with {proc.returncode}:\n{self.log()}")
            # "gslb: serving" is logged once the first round of health checks is done
            if "gslb: serving" not in self.log():
                return False
            try:
                dns.query.udp(dns.message.make_query(qname, "SOA"), "127.0.0.1", port=self.port, timeout=0.2)
                return True
            except (dns.exception.Timeout, OSError):
                return False

        try:
            eventually(answering, timeout=timeout, what=f"gslb answering {qname}")
        except AssertionError:
            self.stop()
            raise RuntimeError(f"gslb did not answer within {timeout}s:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then wait; SIGKILL if it does not stop. Returns the exit code."""
        if self.proc is None:
            return None
        stop_process(self.proc, timeout)
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


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """Stop a process a test started: SIGTERM, then wait up to ``timeout``; SIGKILL if it does not
    stop. Returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _first_error(predicate: Callable[[], Any], ignoring: tuple[type[BaseException], ...]) -> Any:
    try:
        return predicate()
    except ignoring as exc:
        return exc


def eventually(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
               what: str = "condition", ignoring: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll ``predicate()`` until it returns something true (returned), or fail after ``timeout`` seconds.

    The timeout is a ceiling for a slow machine, not a measurement: a passing test returns as
    soon as the condition holds. Exceptions of the ``ignoring`` types count as "not yet" (a
    server still starting, a key not there yet).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = _first_error(predicate, ignoring)
        if result and not isinstance(result, BaseException):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s (last: {result!r})")
        time.sleep(interval)


def holds_for(predicate: Callable[[], Any], duration: float, interval: float = 0.05,
              what: str = "condition") -> None:
    """Check ``predicate()`` again and again for ``duration`` seconds; fail the first time it is false.

    For "X stays true while time passes" (nothing flips back, a frozen state stays frozen): the
    duration is how long the behaviour must last, checked throughout rather than once at the end.
    """
    deadline = time.monotonic() + duration
    while True:
        result = predicate()
        if not result:
            raise AssertionError(f"{what} stopped holding (got {result!r})")
        if time.monotonic() > deadline:
            return
        time.sleep(interval)


async def eventually_async(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
                           what: str = "condition") -> Any:
    """``eventually`` inside an event loop: polls without blocking the loop the code under test runs on.

    ``predicate`` may be a coroutine function (e.g. a question to a browser page): it is awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


async def holds_for_async(predicate: Callable[[], Any], duration: float, interval: float = 0.02,
                          what: str = "condition") -> None:
    """``holds_for`` inside an event loop."""
    deadline = time.monotonic() + duration
    while True:
        result = predicate()
        if not result:
            raise AssertionError(f"{what} stopped holding (got {result!r})")
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(interval)


# zones built in memory (unit tests of the query path) ----------------------------------------

def make_zone(origin: str, records: dict[str, dict], pools: dict[str, Pool] | None = None,
              ttl: int = 3600, minimum: int = 60, ns: tuple[str, ...] | None = None) -> Zone:
    """A Zone from ``{"owner": {"A": [...], "pool": "web", "ttl": 60}}``; "@" is the apex."""
    origin = origin.lower().rstrip(".") + "."
    ns = ns or (f"ns1.{origin}",)

    def absolute(name: str) -> str:
        if name == "@":
            return origin
        return name if name.endswith(".") else f"{name}.{origin}"

    soa = Soa(ns[0], f"hostmaster.{origin}", 2024010101, 3600, 600, 1209600, minimum, ttl)
    nodes: dict[str, Node] = {}
    specs = dict(records)
    specs.setdefault("@", {})
    for owner, spec in specs.items():
        name = absolute(owner)
        node_ttl = spec.get("ttl")
        recs: dict[str, tuple[Record, ...]] = {}
        for rtype, values in spec.items():
            if rtype in ("ttl", "pool"):
                continue
            values = values if isinstance(values, list) else [values]
            recs[rtype] = tuple(Record(name, rtype, node_ttl or ttl, v) for v in values)
        if name == origin:
            recs["SOA"] = (Record(origin, "SOA", ttl, f"{soa.mname} {soa.rname} {soa.serial} 3600 600 1209600 {minimum}"),)
            recs["NS"] = tuple(Record(origin, "NS", ttl, n) for n in ns)
        nodes[name] = Node(name, MappingProxyType(recs), spec.get("pool"), node_ttl)
    names = set()
    for name in nodes:
        n = name
        while True:
            names.add(n)
            if n == origin:
                break
            n = n.split(".", 1)[1]
    cuts = frozenset(n for n, node in nodes.items() if n != origin and "NS" in node.records)
    return Zone(origin=origin, file="test.yaml", serial=soa.serial, ttl=ttl, soa=soa, ns=ns,
                nodes=MappingProxyType(nodes), pools=MappingProxyType(dict(pools or {})),
                names=frozenset(names), cuts=cuts)


# zone files as text (tests that write a zones folder) ------------------------------------------

def small_zone(origin: str, more: str = "", *, serial: int | str | None = None,
               ns_address: str = "192.0.2.53") -> str:
    """The smallest zone file of ``origin``: one name server, ns1.ORIGIN, with its glue A record
    ``ns_address``, and ``serial:`` when given (a number, ``auto``, or a ``%d`` placeholder).

    ``more`` is appended as written: further lines of ``records:`` (two-space indented, each
    ending in a newline), then other top-level keys (``sites:``, ``pools:``, ...) if any.
    """
    serial_line = "" if serial is None else f"serial: {serial}\n"
    return f"zone: {origin}\n{serial_line}ns: [ns1.{origin}]\nrecords:\n  ns1: {{A: {ns_address}}}\n{more}"


def quorum_zone(addresses: tuple[str, str], site_checks: tuple[str, str], checks: dict[str, str]) -> str:
    """Zone gslb.test with sites fra and iad (``addresses``, checked by ``site_checks``) and two
    failover pools over them: www -> web (quorum 0.5), www4 -> web4 (quorum 0.4).

    ``checks`` maps a check name to its flow mapping, e.g. ``{"web": "{type: http, port: 80}"}``.
    """
    lines = "".join(f"  {name}: {spec}\n" for name, spec in checks.items())
    return f"""\
zone: gslb.test
ns: [ns1.gslb.test]
records:
  ns1: {{A: 192.0.2.53}}
  www: {{pool: web}}
  www4: {{pool: web4}}
sites:
  fra: {{location: [50.11, 8.68], addresses: [{addresses[0]}], checks: [{site_checks[0]}]}}
  iad: {{location: [38.95, -77.45], addresses: [{addresses[1]}], checks: [{site_checks[1]}]}}
checks:
{lines}pools:
  web: {{policy: failover, sites: [fra, iad], quorum: 0.5}}
  web4: {{policy: failover, sites: [fra, iad], quorum: 0.4}}
"""


# the two-site health zone (test_health, test_http_live) -----------------------------------------
# Sites fra and iad, each with one check on a loopback backend (tests/blackbox/backends.py); the
# site addresses are documentation addresses that are only ever answered, never probed.

ORIGIN = "gslb.example.com."
FRA, IAD = "192.0.2.10", "198.51.100.20"
INTERVAL, TIMEOUT, RISE, FALL = 0.5, 0.3, 2, 2


def two_site_zone(ports: dict[str, int], kinds: dict[str, str] | None = None) -> str:
    """A zone with sites fra and iad, one check per site on its backend's port, two pools."""
    kinds = kinds or {}
    checks = []
    for site, port in ports.items():
        kind = kinds.get(site, "http")
        extra = "    path: /health\n    host: www.gslb.example.com\n    expect_status: [200]\n    expect_body: OK\n" if kind == "http" else ""
        checks.append(
            f"  c_{site}:\n    type: {kind}\n    target: 127.0.0.1\n    port: {port}\n{extra}"
            f"    interval: {INTERVAL}\n    timeout: {TIMEOUT}\n    rise: {RISE}\n    fall: {FALL}\n")
    return f"""
zone: gslb.example.com
ns: [ns1.gslb.example.com]
records:
  ns1: {{A: 192.0.2.53}}
  www: {{pool: web}}
  near: {{pool: near}}
  light: {{pool: light}}
sites:
  fra: {{location: [50.11, 8.68], addresses: [{FRA}], checks: [c_fra]}}
  iad: {{location: [38.95, -77.45], addresses: [{IAD}], checks: [c_iad]}}
checks:
{''.join(checks)}
pools:
  web: {{policy: failover, sites: [fra, iad], ttl: 5}}
  near: {{policy: closest, sites: [fra, iad], ttl: 5}}
  light: {{policy: least_load, sites: [fra, iad], ttl: 5}}
"""


def answer(server: Gslb, name: str = "www") -> set[str]:
    """The A addresses gslb answers for ``name``."""
    msg = server.query(f"{name}.{ORIGIN}", "A")
    return {rr.address for rrset in msg.answer for rr in rrset}


def get_json(server: Gslb, path: str) -> Any:
    """GET ``path`` from the server's HTTP endpoint as JSON."""
    with urllib.request.urlopen(server.http + path, timeout=5) as resp:
        return json.loads(resp.read())


def site_entry(server: Gslb, site: str) -> dict[str, Any]:
    """The /api/v1/status entry of ``site``."""
    doc = get_json(server, "/api/v1/status")
    return next(s for s in doc["sites"] if s["site"] == site)


def start_two_sites(gslb_server: Callable[..., Gslb], ports: dict[str, int], kinds: dict[str, str] | None = None, **config: Any):
    """A started server for ``two_site_zone(ports, kinds)``, region lab-1, plus ``config``."""
    cfg = {"region": "lab-1", **config}
    return gslb_server({"gslb.example.com.yaml": two_site_zone(ports, kinds)}, config=cfg, wait_for=ORIGIN)
