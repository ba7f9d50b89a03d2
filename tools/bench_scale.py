#!/usr/bin/env python3
"""Memory under a million client subnets, and how fast a state change reaches every DNS worker.

    tools/bench_scale.py memory [--subnets 1000000]
    tools/bench_scale.py propagation [--workers 2] [--repeat 20]

``memory``: starts ``gslb serve`` (the project's venv) on a three-site ``closest`` pool with the
GeoIP database given by ``--geoip`` (default: GeoLite2 City as cached by ``tools/bench``, else
the sample database), warms it up, reads the resident memory of its process tree, then sends one
query with ECS from each of N distinct client /24s (random, public IPv4 space, a fixed seed) with
dnsperf, and reads it again. Target (issue "Performance"): less than 200 MB of growth for a
million subnets: every cache is bounded (answer cache in bytes, decision and GeoIP caches in
entries, parse cache in entries and key length).

``propagation``: starts ``gslb serve --workers N``, answers a pool name from 64 source ports (so
every worker has the answer cached), then sets an override through the HTTP API and measures the
time until all 64 ports get the new answer; then takes it back. Reports the median and the worst
of ``--repeat`` changes. Target: within 100 ms.

Both fail loudly (exit 1) when the server does not start or does not answer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __name__ == "__main__":  # run under the project's venv (tools/_venv.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _venv
    _venv.use_project_venv(())

ROOT = Path(__file__).resolve().parent.parent
PORT = 15385
HTTP = 15386
TOKEN = "bench-scale"

ZONE = """
zone: gslb.test
ns: [ns1.gslb.test]
records:
  ns1: {A: 127.0.0.1}
  www: {pool: www}
sites:
  fra: {location: [50.11, 8.68], addresses: [127.0.0.10]}
  iad: {location: [38.95, -77.45], addresses: [127.0.0.20]}
  sin: {location: [1.35, 103.82], addresses: [127.0.0.30]}
pools:
  www: {policy: closest, sites: [fra, iad, sin], ttl: 30}
"""


def fail(message: str) -> None:
    print(f"bench_scale: {message}", file=sys.stderr)
    sys.exit(1)


def default_geoip() -> str:
    cached = ROOT / "data" / "bench" / "GeoLite2-City.mmdb"
    return str(cached if cached.exists() else ROOT / "data" / "sample-city.mmdb")


class Server:
    """A gslb serve in a temporary folder; stopped by ``stop()``."""

    def __init__(self, gslb: str, geoip: str, workers: int = 1) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gslb-scale-"))
        (self.dir / "zones").mkdir()
        (self.dir / "zones" / "test.yaml").write_text(ZONE)
        (self.dir / "token").write_text(TOKEN)
        (self.dir / "gslb.yaml").write_text(json.dumps({
            "listen": [f"127.0.0.1:{PORT}"], "http": f"127.0.0.1:{HTTP}", "zones": "zones",
            "geoip": geoip, "workers": workers, "api_token_file": str(self.dir / "token")}))
        self.log = open(self.dir / "log", "w")
        self.proc = subprocess.Popen([gslb, "--log-level", "warning", "serve", "-c", str(self.dir / "gslb.yaml")],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                fail(f"gslb exited with {self.proc.returncode}:\n{(self.dir / 'log').read_text()[-2000:]}")
            try:
                if query("www.gslb.test", None, timeout=0.3) is not None:
                    status = self.status()
                    if all(w["ready"] for w in status["workers"]) and len(status["workers"]) == workers:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        fail("gslb did not answer within 60 s")

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{HTTP}/api/v1/status", timeout=5) as resp:
            return json.loads(resp.read())

    def override(self, site: str, state: str) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{HTTP}/api/v1/sites/gslb.test/{site}/override",
                                     data=json.dumps({"state": state}).encode(), method="PUT",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        urllib.request.urlopen(req, timeout=5).read()

    def rss_mb(self) -> float:
        """Resident memory of the server and its worker processes, in MB."""
        total = 0
        pids = [self.proc.pid] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == self.proc.pid]
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def wire_query(qname: str, ecs: tuple[bytes, int] | None, ident: int = 1) -> bytes:
    """An A query with EDNS (and an ECS option for an IPv4 /prefix when given)."""
    question = b"".join(bytes((len(p),)) + p.encode() for p in qname.split(".")) + b"\x00" + struct.pack("!HH", 1, 1)
    options = b""
    if ecs is not None:
        address, prefix = ecs
        body = struct.pack("!HBB", 1, prefix, 0) + address[:(prefix + 7) // 8]
        options = struct.pack("!HH", 8, len(body)) + body
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(options)) + options
    return struct.pack("!HHHHHH", ident, 0, 1, 0, 0, 1) + question + opt


def query(qname: str, ecs: tuple[bytes, int] | None, timeout: float = 1.0, sock: socket.socket | None = None) -> bytes | None:
    own = sock is None
    sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.sendto(wire_query(qname, ecs), ("127.0.0.1", PORT))
        return sock.recvfrom(4096)[0]
    except socket.timeout:
        return None
    finally:
        if own:
            sock.close()


def answer_address(reply: bytes | None) -> str | None:
    """The first A record's address of a reply (the answer section follows the question)."""
    if reply is None or reply[7] == 0:
        return None
    pos = 12
    while reply[pos]:
        pos += reply[pos] + 1
    pos += 5
    pos += 2 if reply[pos] & 0xC0 == 0xC0 else 0  # the owner: a pointer to the question
    rdlength = struct.unpack_from("!H", reply, pos + 8)[0]
    return socket.inet_ntoa(reply[pos + 10:pos + 10 + rdlength]) if rdlength == 4 else None


def random_subnets(count: int, seed: int = 11) -> list[bytes]:
    """``count`` distinct public IPv4 /24s (packed, 3 bytes)."""
    rng = random.Random(seed)
    seen: set[int] = set()
    while len(seen) < count:
        n = rng.randrange(1 << 24)
        first = n >> 16
        if first in (0, 10, 127) or first >= 224 or (first == 192 and (n >> 8) & 0xFF == 168) or \
                (first == 172 and 16 <= (n >> 8) & 0xFF < 32):
            continue
        seen.add(n)
    return [n.to_bytes(3, "big") for n in seen]


def cmd_memory(args: argparse.Namespace) -> None:
    dnsperf = shutil.which("dnsperf")
    if dnsperf is None:
        fail("dnsperf is missing: apt-get install dnsperf")
    subnets = random_subnets(args.subnets)
    path = Path(tempfile.mkstemp(prefix="gslb-scale-", suffix=".bin")[1])
    with open(path, "wb") as f:
        for packed in subnets:
            q = wire_query("www.gslb.test", (packed + b"\x00", 24))
            f.write(struct.pack("!H", len(q)) + q)
    server = Server(args.gslb, args.geoip)
    try:
        warm = [wire_query("www.gslb.test", (s + b"\x00", 24)) for s in subnets[:1000]]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1)
            for q in warm:
                sock.sendto(q, ("127.0.0.1", PORT))
                sock.recvfrom(4096)
        before = server.rss_mb()
        started = time.monotonic()
        # one pass over the file: -n 1 (each query once), a few clients in parallel
        out = subprocess.run(["timeout", "600", dnsperf, "-s", "127.0.0.1", "-p", str(PORT), "-B", "-d", str(path),
                              "-n", "1", "-c", "4", "-q", "200"], capture_output=True, text=True).stdout
        elapsed = time.monotonic() - started
        completed = next((line.split()[2] for line in out.splitlines() if "Queries completed" in line), "?")
        after = server.rss_mb()
        print(f"subnets sent      {args.subnets:,} (completed {completed}) in {elapsed:.1f} s")
        print(f"RSS after warm-up {before:8.1f} MB")
        print(f"RSS after         {after:8.1f} MB")
        print(f"growth            {after - before:8.1f} MB   (target < 200 MB)")
        if completed == "?" or int(completed) == 0:
            fail("dnsperf completed no query")
    finally:
        server.stop()
        path.unlink()


def cmd_propagation(args: argparse.Namespace) -> None:
    server = Server(args.gslb, args.geoip, workers=args.workers)
    socks = []
    try:
        for _ in range(64):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        frankfurt = (bytes((18, 184, 0, 0)), 24)  # a client near fra

        def all_answers() -> set[str | None]:
            return {answer_address(query("www.gslb.test", frankfurt, timeout=1.0, sock=s)) for s in socks}

        if all_answers() != {"127.0.0.10"}:
            fail(f"unexpected answers before the change: {all_answers()}")
        times = []
        for i in range(args.repeat):
            state, want = ("down", "127.0.0.20") if i % 2 == 0 else ("auto", "127.0.0.10")
            started = time.monotonic()
            server.override("fra", state)
            while all_answers() != {want}:
                if time.monotonic() - started > 10:
                    fail(f"the change to {state} did not reach every worker within 10 s")
            times.append((time.monotonic() - started) * 1000)
        times.sort()
        time.sleep(1.5)  # workers report their counters every second
        workers = server.status()["workers"]
        print(f"workers {len(workers)}, {args.repeat} changes (override fra down/auto), 64 source ports each")
        print(f"time until every port answers the new site: median {times[len(times) // 2]:.1f} ms, "
              f"max {times[-1]:.1f} ms   (target: 100 ms; includes the HTTP request and one full round of 64 queries)")
        print("queries per worker:", ", ".join(f"{w['worker']}: {w['queries']}" for w in workers))
    finally:
        for s in socks:
            s.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gslb", default=os.environ.get("GSLB", str(ROOT / ".venv" / "bin" / "gslb")))
    parser.add_argument("--geoip", default=default_geoip())
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("memory", help="RSS growth under N distinct client subnets")
    m.add_argument("--subnets", type=int, default=1_000_000)
    p = sub.add_parser("propagation", help="time for an override to reach every DNS worker")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if not Path(args.gslb).exists():
        fail(f"{args.gslb} not found: run `make .venv/.installed` (or give --gslb / GSLB=)")
    {"memory": cmd_memory, "propagation": cmd_propagation}[args.command](args)


if __name__ == "__main__":
    main()
