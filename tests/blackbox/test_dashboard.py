"""The dashboard rendered by headless Chromium from a real aiohttp server, and ``gslb status``.

The server object is a fake built from model values (the real gslb.app.Server is exercised by the
full-process tests); what is checked here is that the page, its script and the map data, served
by gslb alone, show every site with its state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gslb.config import ServerConfig
from gslb.http_api import create_app, iso_time, start_http, stop_http
from gslb.errors import StartupError
from gslb.model import Pool, RegionResult, Site, SiteStatus, Soa, StateView, Zone, ZoneSet
from gslb.state import Change, sites_of
from gslb.stats import QueryStats
from gslb.status_cli import run_status

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _zone(key: str, sites: list[Site], pools: list[Pool]) -> Zone:
    origin = key + "."
    soa = Soa(f"ns1.{origin}", f"hostmaster.{origin}", 2026112701, 3600, 600, 1209600, 60, 3600)
    return Zone(origin=origin, file=f"zones/{key}.yaml", serial=2026112701, ttl=3600, soa=soa,
                ns=(f"ns1.{origin}",), nodes={}, sites={s.name: s for s in sites},
                pools={p.name: p for p in pools})


class DemoServer:
    """A plausible three-region deployment: every state appears at least once."""

    def __init__(self) -> None:
        now = time.time()
        sites = [
            Site("fra", (50.11, 8.68), ("192.0.2.10",), ("2001:db8::10",), ("web",), 100),
            Site("ams", (52.37, 4.90), ("192.0.2.20",), (), ("web",), 50),
            Site("iad", (38.95, -77.45), ("198.51.100.20",), (), ("web",)),
            Site("sfo", (37.77, -122.42), ("198.51.100.40",), (), ("web",)),
            Site("gru", (-23.55, -46.63), ("198.51.100.60",), (), ("web",)),
            Site("sin", (1.35, 103.82), ("203.0.113.30",), (), ("web",)),
            Site("syd", (-33.87, 151.21), ("203.0.113.50",), (), ("web",)),
            Site("nrt", (35.68, 139.69), ("203.0.113.70",), (), ()),
        ]
        web = _zone("gslb.example.com", sites, [
            Pool("www", "closest", ("fra", "ams", "iad", "sfo", "gru", "sin", "syd")),
            Pool("api", "failover", ("iad", "fra")),
        ])
        cdn = _zone("cdn.example.net", [sites[0], sites[5], sites[7]], [Pool("edge", "least_load", ("fra", "sin", "nrt"))])
        self.zone_store = _Store([web, cdn])

        def up(rtt: float, load: float | None = None, age: float = 4) -> RegionResult:
            return RegionResult("up", now - age, rtt_ms=rtt, load=load)

        def down(error: str, age: float = 3) -> RegionResult:
            return RegionResult("down", now - age, error=error)

        w, c = web.key, cdn.key
        self.table = _Table({
            (w, "fra"): SiteStatus({"eu-west": up(11.8, 12), "us-east": up(84.2, 12), "ap-south": up(161.0, 12)}),
            (w, "ams"): SiteStatus({"eu-west": up(9.6, 30), "us-east": up(79.9, 30), "ap-south": up(170.4, 30)}),
            (w, "iad"): SiteStatus({"eu-west": down("status 503, expected 200"), "us-east": down("connect refused"),
                                    "ap-south": up(221.7)}),
            (w, "sfo"): SiteStatus({"eu-west": up(141.2), "us-east": up(62.0), "ap-south": up(170.8)}),
            (w, "gru"): SiteStatus({}),
            (w, "sin"): SiteStatus({"eu-west": up(158.3), "us-east": up(230.1), "ap-south": up(1.9)}, override="drain"),
            (w, "syd"): SiteStatus({"eu-west": down("timeout after 3.0s"), "us-east": down("timeout after 3.0s"),
                                    "ap-south": down("timeout after 3.0s")}),
            (w, "nrt"): SiteStatus(unchecked=True),
            (c, "fra"): SiteStatus({"eu-west": up(11.8, 12)}),
            (c, "sin"): SiteStatus({"ap-south": up(1.9, 70)}),
            (c, "nrt"): SiteStatus(unchecked=True),
        }, now, self.zone_store.zones)
        self.stats = QueryStats()
        self.check_stats = None
        self.config = ServerConfig(region="eu-west", regions={
            "eu-west": (53.35, -6.26), "us-east": (38.95, -77.45), "ap-south": (1.35, 103.82)})
        self.api_token = None
        self.dns_ready = True
        self.reloads = {"ok": 1, "error": 0}

    def explain(self, name: str, qtype: str, client: str) -> dict[str, Any]:
        return {}

    async def reload(self) -> dict[str, Any]:
        return {}


class _Store:
    def __init__(self, zones: list[Zone]) -> None:
        self.zones = ZoneSet({z.origin: z for z in zones})

    def status(self) -> list[dict[str, Any]]:
        return [{"zone": z.key, "serial": z.serial, "file": z.file, "loaded_at": iso_time(time.time() - 3600),
                 "error": None} for z in self.zones]


class _Table:
    def __init__(self, sites: dict[tuple[str, str], SiteStatus], now: float, zones: ZoneSet) -> None:
        self.view = StateView(1, sites)
        self.changes = deque([
            Change(now - 900, "gslb.example.com", "syd", "up", "down"),
            Change(now - 600, "gslb.example.com", "sin", "up", "drain"),
            Change(now - 120, "gslb.example.com", "iad", "up", "down"),
        ])
        self.quorums = {key: cfg.quorum for key, cfg in sites_of(zones).items()}

    def site_state(self, zone: str, site: str) -> tuple[SiteStatus, str]:
        status = self.view.site(zone, site)
        return status, status.state(self.quorums.get((zone, site), 0.5))

    async def set_override(self, zone: str, site: str, state: str) -> None:
        raise KeyError(site)

    def backend_status(self) -> dict[str, Any]:
        return {"url": "memory://", "connected": True}


def _expected_states(server: DemoServer) -> dict[tuple[str, str], str]:
    from gslb.http_api import build_status
    return {(s["zone"], s["site"]): s["state"] for s in build_status(server)["sites"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _chromium(tmp_path: Path, url: str, *mode: str) -> str:
    profile = tmp_path / "chromium-profile"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=4000",
        "--window-size=1400,1280", *mode, url,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


@pytest.fixture
async def dashboard():
    server = DemoServer()
    port = _free_port()
    runner = await start_http(create_app(server), "127.0.0.1", port)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await stop_http(runner)


async def test_dashboard_shows_every_site_with_its_state(dashboard, tmp_path):
    server, url = dashboard
    dom = await _chromium(tmp_path, url + "/", "--dump-dom")
    assert 'data-loaded="true"' in dom, dom[:2000]
    expected = _expected_states(server)
    assert set(expected.values()) == {"up", "down", "drain", "unknown"}
    for (zone, site), state in expected.items():
        # the map marker and the table row both carry zone, site and state
        pattern = rf'data-zone="{re.escape(zone)}" data-site="{site}" data-state="{state}"'
        assert len(re.findall(pattern, dom)) == 2, (zone, site, state)
    # the map outline came from the packaged data, pools and changes are listed
    assert dom.count('class="country"') > 150
    assert 'data-pool="www" data-up="4" data-total="7"' in dom
    assert dom.count('data-region="') == 3
    assert "timeout after 3.0s" in dom
    if os.environ.get("GSLB_SCREENSHOT"):
        # GSLB_SCREENSHOT=1 pytest tests/blackbox/test_dashboard.py refreshes docs/dashboard.png
        await _chromium(tmp_path, url + "/", f"--screenshot={ROOT / 'docs' / 'dashboard.png'}")


async def test_dashboard_assets_are_local(dashboard):
    # every script, stylesheet and image the page names is served by gslb itself (no CDN)
    server, url = dashboard
    html = (ROOT / "gslb" / "static" / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all("//" not in r for r in refs), refs
    for asset in ("dashboard.js", "dashboard.css"):
        text = (ROOT / "gslb" / "static" / asset).read_text()
        urls = set(re.findall(r"https?://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (asset, urls)
        assert "@import" not in text
    # and each of them is really served
    async with aiohttp.ClientSession() as session:
        for ref in refs:
            if ref.startswith("data:"):
                continue
            async with session.get(f"{url}/{ref}") as resp:
                assert resp.status == 200, ref


async def test_status_command_prints_the_tables(dashboard, capsys):
    _, url = dashboard
    code = await asyncio.to_thread(run_status, url)
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"gslb\.example\.com +syd +down", out)
    assert re.search(r"sin +drain +drain", out)
    assert re.search(r"www +closest +4/7", out)


async def test_access_log_levels(dashboard, caplog):
    _, url = dashboard
    with caplog.at_level(logging.DEBUG, logger="gslb.http.access"):
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/api/v1/status") as resp:
                assert resp.status == 200
            async with session.post(url + "/api/v1/reload") as resp:
                assert resp.status == 403
    records = [r for r in caplog.records if r.name == "gslb.http.access"]
    assert [(r.levelno, r.getMessage().split('"')[1]) for r in records] == [
        (logging.DEBUG, "GET /api/v1/status"), (logging.INFO, "POST /api/v1/reload")]


async def test_status_command_unreachable(capsys):
    code = await asyncio.to_thread(run_status, f"http://127.0.0.1:{_free_port()}")
    assert code == 1
    assert "cannot reach" in capsys.readouterr().err


async def test_start_http_port_in_use_is_startup_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(StartupError, match=f"127.0.0.1:{port}"):
            await start_http(create_app(DemoServer()), "127.0.0.1", port)
