#!/usr/bin/env python3
"""Time loading a large zone file, and measure how long DNS answers pause while a server loads it.

Generates, in a temporary folder, a zone of ``--records`` owner names (default 100,000): mostly
``hN: {A: 192.0.2.x}`` lines, plus every 50th name with a TTL, a list of A and an AAAA, every
200th a TXT beside an A, every 500th an MX list, every 100th a CNAME to an earlier name.

Load time (default): the median wall time of ``--repeat`` runs of ``load_zone_file`` and of a
fresh ``ZoneStore.reload``, in seconds, and the process CPU time of the same runs; first, how
long a 10M-iteration Python loop takes (this machine's speed at the moment).

    tools/bench_zone_load.py [--records 100000] [--repeat 3] [--profile]

``--profile`` prints a cProfile summary (top functions by cumulative and by own time) of one
``load_zone_file`` instead.

Pause (``--pause``): starts ``gslb serve`` (this Python, checks off, no GeoIP) on a folder with a
small zone and queries a static name of it every 10 ms over UDP (one socket) and over TCP (one
connection, pipelined): UDP is answered by the server's UDP threads, TCP on its event loop. It
notes when each answer arrives, first for 2 s of idling (the noise floor), then while the
server loads the big zone three times: dropped into the zones folder (the file watch), changed
in place unseen by the watch (same size and mtime) and re-read by ``POST /api/v1/reload`` (with
a token), and edited again (one record changed; the watch). For each it prints the load time
as seen from outside, the longest gap between two answers (target: at most 50 ms; it also
counts stalls of this process or the OS), the slowest answer and how many were answered.
``--workers N`` runs the server with N DNS processes; ``--root DIR`` runs the ``gslb`` package
of another checkout (first on the path), to compare before and after.

    tools/bench_zone_load.py --pause [--records 100000] [--root ../main]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run under the project's venv (tools/_venv.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _venv
    _venv.use_project_venv()

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gslb.zones import ZoneStore, load_zone_file  # noqa: E402

ORIGIN = "big.test"


def zone_text(records: int, origin: str = ORIGIN, variant: int = 0) -> str:
    """The generated zone file (``records`` owner names, the apex included); ``variant``
    changes one address (an edit)."""
    lines = [f"zone: {origin}", "serial: auto", "ttl: 300", f"ns: [ns1.{origin}]", "records:",
             f"  ns1: {{A: 192.0.2.{53 + variant}}}",
             '  "@": {MX: ["10 mail"], TXT: ["v=spf1 -all"]}',
             "  mail: {A: 192.0.2.25}"]
    for i in range(records - 3):
        a = f"192.0.{2 + (i >> 8) % 200}.{i & 255}"
        if i % 100 == 99:
            lines.append(f"  c{i}: {{CNAME: h{i - 1}}}")
        elif i % 500 == 7:
            lines.append(f"  m{i}:\n    MX: [\"10 mail\", \"20 h{i - 1}.{origin}.\"]")
        elif i % 200 == 3:
            lines.append(f"  t{i}: {{TXT: \"host {i} text\", A: {a}}}")
        elif i % 50 == 1:
            lines.append(f"  h{i}:\n    ttl: 60\n    A: [{a}, 198.51.100.{i & 255}]\n"
                         f"    AAAA: \"2001:db8::{i >> 16:x}:{i & 0xffff:x}\"")
        else:
            lines.append(f"  h{i}: {{A: {a}}}")
    return "\n".join(lines) + "\n"


def timed(fn, repeat: int) -> tuple[float, float]:
    """(median wall time, median process CPU time) of ``repeat`` calls of ``fn``; what ``fn``
    returns is freed after the clock stops (as a server keeps the zone it loaded)."""
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
        del result
    return statistics.median(wall), statistics.median(cpu)


def machine_speed() -> float:
    """Seconds a 10,000,000-iteration Python loop takes: how fast this machine is right now
    (on a shared machine it varies; read the load times against it)."""
    start = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.process_time() - start


def load_times(records: int, repeat: int, profile: bool) -> int:
    """The default mode: time load_zone_file and ZoneStore.reload (or profile one load)."""
    with tempfile.TemporaryDirectory(prefix="gslb-bench-") as tmp:
        folder = Path(tmp) / "zones"
        folder.mkdir()
        path = folder / "big.yaml"
        path.write_text(zone_text(records))
        zone = load_zone_file(str(path))
        print(f"zone: {len(zone.nodes)} names, {path.stat().st_size / 1e6:.1f} MB")
        del zone
        if profile:
            prof = cProfile.Profile()
            prof.runcall(load_zone_file, str(path))
            stats = pstats.Stats(prof)
            stats.sort_stats("cumulative").print_stats(25)
            stats.sort_stats("tottime").print_stats(25)
            return 0
        print(f"machine: a 10M-iteration Python loop takes {machine_speed():.2f} s CPU")
        wall, cpu = timed(lambda: load_zone_file(str(path)), repeat)
        print(f"load_zone_file: {wall:.3f} s wall, {cpu:.3f} s CPU (median of {repeat})")

        def reload() -> ZoneStore:
            store = ZoneStore(str(folder))
            result = store.reload(force=True)
            assert result["changed"] and not result["errors"], result
            return store

        wall, cpu = timed(reload, repeat)
        print(f"ZoneStore.reload: {wall:.3f} s wall, {cpu:.3f} s CPU (median of {repeat})")
    return 0


# ---------------------------------------------------------------------------------------------
# --pause


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def dns_query(qname: str, qid: int = 0, rtype: int = 1) -> bytes:
    """A minimal query (one question, class IN, RD clear) in wire format."""
    name = b"".join(bytes([len(label)]) + label.encode() for label in qname.rstrip(".").split(".")) + b"\0"
    return qid.to_bytes(2, "big") + b"\0\0\0\1\0\0\0\0\0\0" + name + rtype.to_bytes(2, "big") + b"\0\1"


def rcode_of(port: int, qname: str, timeout: float = 0.5) -> int | None:
    """The rcode of one A query for ``qname`` (None: no answer within ``timeout``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(dns_query(qname, 4242), ("127.0.0.1", port))
        try:
            reply = s.recv(4096)
        except OSError:
            return None
    return reply[3] & 0x0F


class Prober:
    """Sends one query every ``interval`` seconds over one UDP socket or one TCP connection
    (RFC 7766: queries pipelined, each with its 2-byte length); notes when the answers arrive."""

    def __init__(self, port: int, qname: str, tcp: bool = False, interval: float = 0.01) -> None:
        self.tcp = tcp
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.query = dns_query(qname)
        self.interval = interval
        self.sent: dict[int, float] = {}
        #: (sent, answered) monotonic times
        self.answers: list[tuple[float, float]] = []
        self.sent_times: list[float] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._receive, daemon=True)]

    def start(self) -> "Prober":
        for t in self.threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2)
        self.sock.close()

    def _send(self) -> None:
        n = 0
        due = time.monotonic()
        while not self.stop.is_set():
            qid = n & 0xFFFF
            packet = qid.to_bytes(2, "big") + self.query[2:]
            if self.tcp:
                packet = len(packet).to_bytes(2, "big") + packet
            now = time.monotonic()
            self.sent[qid] = now
            self.sent_times.append(now)
            try:
                self.sock.sendall(packet)
            except OSError:
                pass
            n += 1
            due += self.interval
            time.sleep(max(0.0, due - time.monotonic()))

    def _messages(self):
        """The replies as they arrive (None after each read timeout, to check ``stop``)."""
        buffer = b""
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65536)
            except OSError:
                yield None
                continue
            if not self.tcp:
                yield data
                continue
            if not data:
                return  # the server closed the connection
            buffer += data
            while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                size = int.from_bytes(buffer[:2], "big")
                yield buffer[2:2 + size]
                buffer = buffer[2 + size:]

    def _receive(self) -> None:
        for data in self._messages():
            if data is None or len(data) < 4:
                continue
            now = time.monotonic()
            sent = self.sent.pop(int.from_bytes(data[:2], "big"), None)
            if sent is not None and (data[3] & 0x0F) == 0:
                self.answers.append((sent, now))

    def window(self, start: float, end: float) -> "Window":
        """What happened to the queries sent between ``start`` and ``end``."""
        answered = sorted(a for s, a in self.answers if start <= s <= end)
        before = [a for s, a in self.answers if a < start]
        times = ([max(before)] if before else []) + answered
        gap = max((b - a for a, b in zip(times, times[1:])), default=end - start)
        slowest = max((a - s for s, a in self.answers if start <= s <= end), default=0.0)
        sent = sum(1 for s in self.sent_times if start <= s <= end)
        return Window(sent, len(answered), gap, slowest)


def windows(probers: list[Prober], start: float, end: float) -> str:
    """What each prober saw between ``start`` and ``end``, one line each."""
    return "".join(f"\n  {'TCP' if p.tcp else 'UDP'}: {p.window(start, end).text()}" for p in probers)


@dataclass
class Window:
    sent: int
    answered: int
    longest_gap: float
    slowest: float

    def text(self) -> str:
        return (f"{self.sent} queries, {self.answered} answered, longest gap between answers "
                f"{self.longest_gap * 1000:.0f} ms, slowest answer {self.slowest * 1000:.0f} ms")


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` the way editors and deploy tools do: a new file renamed over."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_unnoticed(path: Path, text: str) -> None:
    """Rewrite ``path`` in place keeping its inode, size and mtime (the file watch misses it)."""
    st = path.stat()
    data = text.encode()
    assert len(data) == st.st_size
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def wait_for(predicate, deadline: float) -> float:
    """Poll until ``predicate()``; the monotonic time it became true (raises after ``deadline`` s)."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise SystemExit(f"not within {deadline} s")
        time.sleep(0.02)
    return time.monotonic()


def pause_check(records: int, root: Path | None, deadline: float, verbose: bool = False,
                workers: int = 1) -> int:
    """The ``--pause`` mode (module doc)."""
    with tempfile.TemporaryDirectory(prefix="gslb-pause-") as tmp:
        work = Path(tmp)
        zones = work / "zones"
        zones.mkdir()
        (zones / "small.yaml").write_text(
            "zone: small.test\nns: [ns1.small.test]\nrecords:\n  ns1: {A: 192.0.2.53}\n  www: {A: 192.0.2.80}\n")
        (work / "token").write_text("bench-token\n")
        port, http_port = free_port(), free_port()
        (work / "gslb.yaml").write_text(json.dumps({
            "listen": [f"127.0.0.1:{port}"], "http": f"127.0.0.1:{http_port}", "zones": "zones",
            "checks": False, "api_token_file": str(work / "token")}))
        # all generated before the clock starts: the probers share this process
        big, changed, edited = (zone_text(records, variant=v) for v in (0, 2, 1))
        env = dict(os.environ)
        if root is not None:
            env["PYTHONPATH"] = str(root.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
        log = open(work / "gslb.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "gslb", "serve", "-c", str(work / "gslb.yaml"),
                                 "--geoip", "none", "--workers", str(workers)],
                                cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env)
        probers: list[Prober] = []
        try:
            wait_for(lambda: rcode_of(port, "www.small.test") == 0, 30)
            probers = [Prober(port, "www.small.test").start(), Prober(port, "www.small.test", tcp=True).start()]
            t0 = time.monotonic()
            time.sleep(2.0)
            print(f"idle (the noise floor of this machine), 2 s: {windows(probers, t0 + 0.2, time.monotonic() - 0.2)}")
            qname = f"h0.{ORIGIN}"

            t0 = time.monotonic()
            replace_file(zones / "big.yaml", big)
            t1 = wait_for(lambda: rcode_of(port, qname) == 0, deadline)
            time.sleep(0.5)
            print(f"file watch, new {records}-record zone: answered {t1 - t0:.2f} s after the write "
                  f"(includes the watch's 1 s poll and settle); {windows(probers, t0, t1 + 0.5)}")

            # changed in place with the same size and mtime: only a forced reload sees it
            write_unnoticed(zones / "big.yaml", changed)
            t0 = time.monotonic()
            request = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/v1/reload", data=b"",
                                             method="POST", headers={"Authorization": "Bearer bench-token"})
            with urllib.request.urlopen(request, timeout=deadline) as resp:
                body = json.loads(resp.read())
            t1 = time.monotonic()
            assert body["ok"] and body["changed"] == [ORIGIN], body
            assert _address(port, f"ns1.{ORIGIN}") == "192.0.2.55"
            time.sleep(0.5)
            print(f"POST /api/v1/reload (the big file changed unseen by the watch): {t1 - t0:.2f} s; "
                  f"{windows(probers, t0, t1 + 0.5)}")

            t0 = time.monotonic()
            replace_file(zones / "big.yaml", edited)
            t1 = wait_for(lambda: _address(port, f"ns1.{ORIGIN}") == "192.0.2.54", deadline)
            time.sleep(0.5)
            print(f"file watch, one record edited: answered {t1 - t0:.2f} s after the write; "
                  f"{windows(probers, t0, t1 + 0.5)}")
        finally:
            for prober in probers:
                prober.close()
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            if verbose:
                print((work / "gslb.log").read_text(), end="")
    return 0


def _address(port: int, qname: str) -> str | None:
    """The first A address in the answer to ``qname`` (None when there is none)."""
    import dns.message

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(dns_query(qname, 4343), ("127.0.0.1", port))
        try:
            reply = dns.message.from_wire(s.recv(4096))
        except OSError:
            return None
    return next((r.address for rrset in reply.answer for r in rrset if hasattr(r, "address")), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print a cProfile summary of one load")
    ap.add_argument("--pause", action="store_true", help="measure DNS answer gaps in a server while it loads")
    ap.add_argument("--root", type=Path, help="with --pause: run the gslb package of this checkout")
    ap.add_argument("--deadline", type=float, default=120.0, help="with --pause: give up after this many s")
    ap.add_argument("--verbose", action="store_true", help="with --pause: print the server's log")
    ap.add_argument("--workers", type=int, default=1, help="with --pause: gslb serve --workers N")
    args = ap.parse_args()
    if args.pause:
        return pause_check(args.records, args.root, args.deadline, args.verbose, args.workers)
    return load_times(args.records, args.repeat, args.profile)


if __name__ == "__main__":
    sys.exit(main())
