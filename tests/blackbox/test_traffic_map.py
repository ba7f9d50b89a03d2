"""The live traffic map and plan of a real ``gslb serve`` (example zone, sample GeoIP database,
health checks off, sites moved by override): ``/api/v1/map``, ``/api/v1/plan`` (GET and POST),
the query shares, errors; and the dashboard's choropleth in headless Chromium, driven over the
DevTools protocol: its country fills match ``/api/v1/map`` and follow an override."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest
from harness import ROOT, Gslb, eventually, eventually_async, free_port

ZONE = "gslb.example.com"
TOKEN = "traffic-map-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("traffic-map")
    (path / "token").write_text(TOKEN)
    srv = Gslb(path, {"example.yaml": (ROOT / "zones" / "example.yaml").read_text()},
               {"checks": False, "api_token_file": str(path / "token")})
    srv.start(wait_for=ZONE + ".")
    yield srv
    srv.stop()


def _request(server: Gslb, path: str, method: str = "GET", body: bytes | None = None,
             token: bool = False) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
    req = urllib.request.Request(server.http + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _override(server: Gslb, site: str, state: str) -> None:
    status, _ = _request(server, f"/api/v1/sites/{ZONE}/{site}/override", "PUT",
                         json.dumps({"state": state}).encode(), token=True)
    assert status == 200


@pytest.fixture
def live(server):
    yield server
    for site in ("fra", "iad", "sin", "syd", "gru"):
        _override(server, site, "auto")


def _serving(server: Gslb, pool: str = "web") -> dict[str, list[str]]:
    """Country -> the sites of its largest share, from /api/v1/map."""
    status, body = _request(server, f"/api/v1/map?zone={ZONE}&pool={pool}")
    assert status == 200, body
    best: dict[str, tuple[float, list[str]]] = {}
    for row in body["countries"]:
        if row["country"] not in best or row["share"] > best[row["country"]][0]:
            best[row["country"]] = (row["share"], row["sites"])
    return {c: s for c, (_, s) in best.items()}


def test_map_rows_and_shares(live):
    status, body = _request(live, f"/api/v1/map?zone={ZONE}&pool=web")
    assert status == 200
    assert body["zone"] == ZONE and body["pool"] == "web" and body["sites"] == ["fra", "iad", "sin", "syd", "gru"]
    totals: dict[str, float] = {}
    for row in body["countries"]:
        assert set(row) == {"country", "continent", "sites", "share"}
        totals[row["country"]] = totals.get(row["country"], 0) + row["share"]
    assert len(totals) > 40 and all(abs(t - 1) < 1e-9 for t in totals.values())
    assert {"country": "DE", "continent": "EU", "sites": ["fra"], "share": 1.0} in body["countries"]


def test_map_follows_an_override(live):
    assert _serving(live)["DE"] == ["fra"]
    _override(live, "fra", "down")
    # the map is recomputed in the builder process when the view changes
    eventually(lambda: _serving(live)["DE"] == ["iad"], what="DE served by iad")
    _override(live, "fra", "drain")
    assert _serving(live)["DE"] == ["iad"]
    _override(live, "fra", "auto")
    eventually(lambda: _serving(live)["DE"] == ["fra"], what="DE back on fra")


def test_plan_against_the_live_state(live):
    status, body = _request(live, f"/api/v1/plan?zone={ZONE}")
    assert status == 200
    assert [p["pool"] for p in body["pools"]] == ["web", "regional", "primary", "shop", "sticky"]
    assert all(p["moves"] == [] and p["moved_share"] == 0 for p in body["pools"])
    status, body = _request(live, f"/api/v1/plan?zone={ZONE}&down=fra&down=sin")
    assert status == 200
    web = body["pools"][0]
    assert {"country": "DE", "continent": "EU", "from": ["fra"], "to": ["iad"], "share": 1.0} in web["moves"]
    assert any(m["from"] == ["sin"] for m in web["moves"])
    # against the live state: with fra already down, a plan for fra down moves nothing more in web
    _override(live, "fra", "down")
    status, body = _request(live, f"/api/v1/plan?zone={ZONE}&down=fra")
    assert status == 200 and body["pools"][0]["moves"] == []
    status, body = _request(live, f"/api/v1/plan?zone={ZONE}&drain=fra")
    assert status == 200 and body["pools"][0]["moves"] == []


def test_plan_of_a_proposed_zone_file(live):
    text = (ROOT / "zones" / "example.yaml").read_text()
    proposed = text.replace("sites: [fra, iad, sin, syd, gru]   # order", "sites: [iad, sin, syd, gru]   # order", 1)
    status, body = _request(live, f"/api/v1/plan?zone={ZONE}", "POST", proposed.encode())
    assert status == 200, body
    web = body["pools"][0]
    assert {"country": "DE", "continent": "EU", "from": ["fra"], "to": ["iad"], "share": 1.0} in web["moves"]
    assert all(p["moves"] == [] for p in body["pools"][1:])
    # the same file: nothing moves
    status, body = _request(live, f"/api/v1/plan?zone={ZONE}", "POST", text.encode())
    assert status == 200 and all(p["moves"] == [] for p in body["pools"])
    # errors as gslb check prints them
    bad = text.replace("    location: [50.11, 8.68]     # Frankfurt", "    location: [91, 8.68]", 1)
    status, body = _request(live, f"/api/v1/plan?zone={ZONE}", "POST", bad.encode())
    assert status == 400
    assert any(e.endswith("sites.fra.location: latitude 91 is out of range -90..90") and e.startswith("proposed.yaml:")
               for e in body["errors"]), body
    status, body = _request(live, f"/api/v1/plan?zone={ZONE}", "POST", b"")
    assert status == 400 and "body" in body["error"]
    other = text.replace("zone: gslb.example.com", "zone: other.example.com", 1)
    status, body = _request(live, f"/api/v1/plan?zone={ZONE}", "POST", other.encode())
    assert status == 400 and "other.example.com" in body["error"]


def test_errors_are_json(live):
    for path, code in ((f"/api/v1/map?zone={ZONE}", 400), ("/api/v1/map?pool=web", 400),
                       ("/api/v1/map?zone=nope.example&pool=web", 404), (f"/api/v1/map?zone={ZONE}&pool=nope", 404),
                       ("/api/v1/plan", 400), ("/api/v1/plan?zone=nope.example", 404),
                       (f"/api/v1/plan?zone={ZONE}&down=nowhere", 404)):
        status, body = _request(live, path)
        assert (status, set(body)) == (code, {"error"}), path


def test_plan_weighs_moves_by_the_queries_seen(live):
    # DE clients (ECS Frankfurt) ask 6 times (most answers from the answer cache), US clients twice
    for _ in range(6):
        live.query("www." + ZONE + ".", "A", ecs="192.0.2.0/26")
    for _ in range(2):
        live.query("www." + ZONE + ".", "A", ecs="198.51.100.0/25")
    status, body = _request(live, f"/api/v1/plan?zone={ZONE}&down=fra")
    assert status == 200
    web = body["pools"][0]
    assert body["queries_window_seconds"] == 3600
    assert web["queries"] >= 8
    de = [m for m in web["moves"] if m["country"] == "DE"][0]
    assert de["query_share"] >= 6 / web["queries"] - 1e-9
    assert web["moved_query_share"] >= de["query_share"]
    assert not [m for m in web["moves"] if m["country"] == "US"]


# -- the dashboard in headless Chromium ---------------------------------------------------------


class Page:
    """One Chromium tab over the DevTools protocol (a websocket): evaluate JavaScript, take a screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")


FILLS_JS = """!document.getElementById("site-legend") ? '{"map": null, "fills": []}' : JSON.stringify({
  map: document.body.getAttribute("data-map"),
  fills: [...document.querySelectorAll("#map path.country")].filter((p) => p.getAttribute("data-site"))
    .map((p) => [p.getAttribute("data-iso"), p.getAttribute("data-site"), getComputedStyle(p).fill]),
  legend: Object.fromEntries([...document.querySelectorAll("#site-legend li[data-site]")]
    .map((li) => [li.getAttribute("data-site"), li.getAttribute("data-fill")])),
  drawn: [...document.querySelectorAll("#map path.country")].map((p) => p.getAttribute("data-iso")),
})"""


def _rgb(colour: str) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _check_fills(state: dict[str, Any], serving: dict[str, list[str]]) -> None:
    """Every drawn country the map has is filled with its site's legend colour; no other is."""
    fills = {iso: (site, fill) for iso, site, fill in state["fills"]}
    drawn = set(state["drawn"])
    assert set(fills) == {c for c in serving if c in drawn and serving[c]}
    for iso, (site, fill) in fills.items():
        assert site == serving[iso][0], iso
        assert fill == _rgb(state["legend"][site]), (iso, fill)


async def test_dashboard_choropleth_matches_the_map_and_follows_an_override(live, tmp_path):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", f"--remote-debugging-port={port}",
        "--window-size=1400,1100", live.http + "/",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def page_target() -> str | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as resp:
                pages = [t for t in json.loads(resp.read()) if t.get("type") == "page"]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        ws_url = eventually(page_target, timeout=30, ignoring=(OSError,), what="Chromium's DevTools endpoint")
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
            page = Page(ws)
            state: dict[str, Any] = {}

            async def painted(country: str, site: str) -> bool:
                state.update(json.loads(await page.eval(FILLS_JS)))
                return state["map"] == f"{ZONE}|web" and any(f[0] == country and f[1] == site for f in state["fills"])

            async def wait(country: str, site: str) -> None:
                await eventually_async(lambda: painted(country, site), timeout=30, interval=0.1,
                                       what=f"{country} painted as {site}")

            await wait("DE", "fra")
            serving = await asyncio.to_thread(_serving, live)
            _check_fills(state, serving)
            assert len(state["fills"]) > 40
            if os.environ.get("GSLB_SCREENSHOT"):
                # GSLB_SCREENSHOT=1 pytest tests/blackbox/test_traffic_map.py refreshes docs/traffic-map.png
                shot = await page.call("Page.captureScreenshot", format="png",
                                       clip={"x": 0, "y": 0, "width": 1400, "height": 900, "scale": 1})
                import base64
                (ROOT / "docs" / "traffic-map.png").write_bytes(base64.b64decode(shot["data"]))

            # an override: the page's next poll (every second) paints the new answers
            await asyncio.to_thread(_override, live, "fra", "down")
            await wait("DE", "iad")
            serving = await asyncio.to_thread(_serving, live)
            assert serving["DE"] == ["iad"]
            _check_fills(state, serving)
            assert not [f for f in state["fills"] if f[1] == "fra"]
            # the hover text holds the country's split
            title = await page.eval('document.querySelector(\'#map path.country[data-iso="DE"] title\').textContent')
            assert title == "Germany: iad 100.0 %"
            # another pool from the selector
            await page.eval('(() => { const s = document.getElementById("map-pool"); '
                            f's.value = "{ZONE}|primary"; s.dispatchEvent(new Event("change")); }})()')

            async def shows_primary() -> dict[str, Any] | None:
                got = json.loads(await page.eval(FILLS_JS))
                return got if got["map"] == f"{ZONE}|primary" else None

            state = await eventually_async(shows_primary, timeout=30, interval=0.1, what="the primary pool's map")
            assert {f[1] for f in state["fills"]} == {"iad"}  # failover [fra, iad] with fra down
    finally:
        proc.terminate()
        await proc.wait()


def test_screenshot_is_linked_from_the_readme():
    assert (ROOT / "docs" / "traffic-map.png").is_file()
    assert "docs/traffic-map.png" in (ROOT / "README.md").read_text()


def test_queries_of_every_dns_process_count(gslb_server):
    srv = gslb_server({"example.yaml": (ROOT / "zones" / "example.yaml").read_text()},
                      {"checks": False, "workers": 2}, wait_for=ZONE + ".")
    for _ in range(20):
        srv.query("www." + ZONE + ".", "A", ecs="192.0.2.0/26")  # DE, each from a new source port

    def counted() -> dict[str, Any] | None:
        status, body = _request(srv, f"/api/v1/plan?zone={ZONE}&down=fra")
        web = body["pools"][0]
        return web if status == 200 and web.get("queries", 0) >= 20 else None

    # the workers report their counters every second
    web = eventually(counted, what="20 queries counted")
    de = [m for m in web["moves"] if m["country"] == "DE"][0]
    assert de["query_share"] == pytest.approx(1.0)
    assert web["moved_query_share"] == pytest.approx(1.0)
