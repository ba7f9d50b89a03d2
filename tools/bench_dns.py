#!/usr/bin/env python3
"""Fire UDP queries at a DNS server and print queries per second and latency percentiles.

Several queries are kept outstanding at once (``--concurrency``) on one non-blocking UDP
socket; the run stops after ``--count`` queries or ``--duration`` seconds, whichever comes
first. Queries cycle through a mix of names and types, given with ``--query NAME[/TYPE]``
(repeatable) or read from ``--file`` (one ``NAME [TYPE]`` per line, ``#`` comments).

Example (a server from ``gslb serve`` on the defaults):

    tools/bench_dns.py 127.0.0.1:5300 --count 50000 --concurrency 32 \\
        -q gslb.example.com/SOA -q www.gslb.example.com/A -q api.gslb.example.com/AAAA \\
        --ecs 198.51.100.0/24

Output: sent, answered, lost (timed out), qps, the RCODE mix and p50/p90/p99/max latency.
"""

from __future__ import annotations

import argparse
import random
import selectors
import socket
import struct
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run under the project's venv (tools/_venv.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _venv
    _venv.use_project_venv(("dns",))

import dns.edns  # noqa: E402
import dns.message  # noqa: E402
import dns.rcode  # noqa: E402


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    return host, int(port)


def load_queries(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (name, type) mix from the flags and the file."""
    mix: list[tuple[str, str]] = []
    for item in args.query or []:
        name, _, rdtype = item.partition("/")
        mix.append((name, rdtype or "A"))
    if args.file:
        with open(args.file) as f:
            for line in f:
                line = line.split("#", 1)[0].split()
                if line:
                    mix.append((line[0], line[1] if len(line) > 1 else "A"))
    if not mix:
        raise SystemExit("bench_dns: give queries with -q NAME[/TYPE] or --file FILE")
    return mix


def build_templates(mix: list[tuple[str, str]], ecs: str | None, edns: bool) -> list[bytes]:
    """Wire queries with id 0 (the id is patched in per send)."""
    options = None
    if ecs:
        address, _, prefix = ecs.partition("/")
        options = [dns.edns.ECSOption(address, int(prefix or 24))]
    templates = []
    for name, rdtype in mix:
        q = dns.message.make_query(name, rdtype, use_edns=0 if (edns or options) else False, options=options)
        q.id = 0
        templates.append(q.to_wire())
    return templates


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (0..100) of sorted values."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def run(args: argparse.Namespace) -> int:
    """The benchmark loop; returns the exit code."""
    host, port = parse_target(args.target)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.connect((host, port))
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)

    templates = build_templates(load_queries(args), args.ecs, args.edns)
    rng = random.Random(args.seed)
    outstanding: dict[int, float] = {}  # id -> send time
    free_ids = list(range(65536))
    rng.shuffle(free_ids)
    latencies: list[float] = []
    rcodes: dict[str, int] = {}
    sent = lost = 0
    start = time.perf_counter()
    deadline = start + args.duration
    index = 0

    while True:
        now = time.perf_counter()
        # retire the timed-out ones
        if outstanding:
            expired = [i for i, t in outstanding.items() if now - t > args.timeout]
            for i in expired:
                del outstanding[i]
                free_ids.append(i)
                lost += 1
        can_send = sent < args.count and now < deadline
        if not can_send and not outstanding:
            break
        while can_send and len(outstanding) < args.concurrency and free_ids:
            ident = free_ids.pop()
            template = templates[index % len(templates)]
            index += 1
            try:
                sock.send(struct.pack("!H", ident) + template[2:])
            except BlockingIOError:
                free_ids.append(ident)
                break
            outstanding[ident] = time.perf_counter()
            sent += 1
            can_send = sent < args.count and time.perf_counter() < deadline
        for _key, _ in sel.select(timeout=0.05):
            while True:
                try:
                    data = sock.recv(65535)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    print("bench_dns: connection refused (is the server running?)", file=sys.stderr)
                    return 2
                if len(data) < 4:
                    continue
                ident = struct.unpack_from("!H", data)[0]
                t0 = outstanding.pop(ident, None)
                if t0 is None:
                    continue  # late reply of a query already counted as lost
                latencies.append(time.perf_counter() - t0)
                free_ids.append(ident)
                rcode = dns.rcode.to_text(data[3] & 0xF)
                rcodes[rcode] = rcodes.get(rcode, 0) + 1
    elapsed = time.perf_counter() - start
    sock.close()

    latencies.sort()
    answered = len(latencies)
    ms = [x * 1000 for x in latencies]
    print(f"target       {args.target}")
    print(f"sent         {sent}")
    print(f"answered     {answered}")
    print(f"lost         {lost}")
    print(f"elapsed      {elapsed:.2f} s")
    print(f"qps          {answered / elapsed:.0f}")
    print("rcodes       " + ", ".join(f"{k} {v}" for k, v in sorted(rcodes.items())))
    print("latency ms   " + "  ".join(f"p{p} {percentile(ms, p):.3f}" for p in (50, 90, 99))
          + f"  max {ms[-1] if ms else float('nan'):.3f}")
    return 0 if answered else 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="HOST:PORT of the server, e.g. 127.0.0.1:5300 or [::1]:5300")
    parser.add_argument("-q", "--query", action="append", help="NAME[/TYPE], repeatable")
    parser.add_argument("--file", help="file of 'NAME [TYPE]' lines")
    parser.add_argument("-n", "--count", type=int, default=20000, help="queries to send (default 20000)")
    parser.add_argument("-d", "--duration", type=float, default=30.0, help="at most this many seconds (default 30)")
    parser.add_argument("-c", "--concurrency", type=int, default=32, help="queries outstanding at once (default 32)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds before a query counts as lost")
    parser.add_argument("--ecs", help="add an ECS option, e.g. 198.51.100.0/24")
    parser.add_argument("--edns", action="store_true", help="add an OPT record (EDNS 0)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the query-id shuffle")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
