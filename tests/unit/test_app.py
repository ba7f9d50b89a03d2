"""gslb.app without sockets: reload of the server file (all or nothing), SIGHUP task bookkeeping."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harness import eventually_async

from gslb.app import Server
from gslb.config import load_server_config

ROOT = Path(__file__).resolve().parent.parent.parent
GEOIP = str(ROOT / "data" / "sample-city.mmdb")
ZONE = "zone: a.example\nns: [ns1.a.example]\nrecords:\n  ns1: {A: 192.0.2.1}\n"


@pytest.fixture
def server(tmp_path):
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "a.yaml").write_text(ZONE)
    (tmp_path / "token").write_text("one")
    cfg = tmp_path / "gslb.yaml"
    cfg.write_text(f"zones: zones\ngeoip: {GEOIP}\napi_token_file: token\nchecks: false\n")
    srv = Server(load_server_config(str(cfg), {"region": "cli-region"}), {"region": "cli-region"})
    srv.zone_store.reload(force=True)
    yield srv
    if srv.geo is not None:
        srv.geo.close()


async def test_reload_rereads_token_regions_and_warns_about_restart_fields(server, tmp_path):
    cfg = tmp_path / "gslb.yaml"
    (tmp_path / "token").write_text("two\n")
    cfg.write_text(cfg.read_text() + "regions: {eu: {location: [50, 8]}}\nlisten: [127.0.0.1:1]\n"
                   "region: file-region\n")
    server._use_geo(None, {})
    result = await server.reload()
    assert result["ok"] is True and result["errors"] == [], result
    assert server.api_token == "two"
    assert server.balancer is not None and server.balancer.regions == ("eu",)
    assert [w.split(" ")[0] for w in result["warnings"]] == ["listen"]  # region comes from the flag
    assert server.config.listen != ((("127.0.0.1", 1),))
    assert server.config.region == "cli-region"
    assert dict(server.config.regions) == {"eu": (50.0, 8.0)}


async def test_broken_server_file_changes_nothing(server, tmp_path):
    cfg = tmp_path / "gslb.yaml"
    before = server.config
    (tmp_path / "token").write_text("two")
    cfg.write_text(cfg.read_text() + "acl: {deny: [10.0.0.0/8]}\ntcp: {idle_timeout: nope}\n")
    result = await server.reload()
    assert result["ok"] is False
    assert result["errors"] == [e for e in result["errors"] if "gslb.yaml:6: tcp.idle_timeout" in e]
    assert len(result["errors"]) == 1
    assert server.config is before and server.api_token == "one"
    assert server.reloads["error"] == 1


async def test_broken_geoip_on_reload_changes_nothing(server, tmp_path):
    cfg = tmp_path / "gslb.yaml"
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"nope" * 100)
    (tmp_path / "token").write_text("two")
    cfg.write_text(cfg.read_text().replace(GEOIP, str(bad)))
    server._use_geo(None, {})
    result = await server.reload()
    assert result["ok"] is False and result["errors"][0].startswith("geoip: "), result
    assert server.api_token == "one" and server.config.geoip == GEOIP


async def test_sighup_tasks_are_forgotten_when_done_and_coalesced(server, monkeypatch):
    runs: list[int] = []
    running = [0]

    async def slow_reload(force=True, on_start=None):
        async with server._reload_lock:
            if on_start is not None:
                on_start()
            running[0] += 1
            assert running[0] == 1  # never two at once
            await asyncio.sleep(0.05)
            runs.append(1)
            running[0] -= 1
        return {}

    monkeypatch.setattr(server, "reload", slow_reload)
    for _ in range(5):
        server._reload_soon()
    await asyncio.sleep(0)
    for _ in range(5):  # while the first runs: one more is queued, the rest join it
        server._reload_soon()
    await eventually_async(lambda: not server._tasks, what="the reloads done")
    assert len(runs) == 2



def test_acl_with_only_deny_keeps_the_default_allow(tmp_path):
    cfg = tmp_path / "gslb.yaml"
    cfg.write_text("acl: {deny: [10.0.0.0/8]}\n")
    acl = load_server_config(str(cfg)).acl
    assert acl.allow == ("0.0.0.0/0", "::/0") and acl.deny == ("10.0.0.0/8",)


# -- the open-file limit (issue 9, item 8) ------------------------------------------------------

def test_fd_limit_plan_raises_the_soft_limit_to_the_hard_one():
    import resource

    from gslb.app import FD_RESERVE, fd_limit_plan

    assert fd_limit_plan(1024, 4096, 1024) == (4096, None)
    assert fd_limit_plan(1024, 1024 + FD_RESERVE, 1024) == (1024 + FD_RESERVE, None)
    assert fd_limit_plan(8192, 8192, 1024) == (8192, None)
    assert fd_limit_plan(1024, resource.RLIM_INFINITY, 100_000) == (1 << 20, None)
    target, warning = fd_limit_plan(1024, 1024, 1024)
    assert target == 1024
    assert warning == (f"tcp.max_connections 1024 plus {FD_RESERVE} files for the rest need "
                       f"{1024 + FD_RESERVE} open files, but the limit is 1024 (hard limit 1024): "
                       f"connections beyond about {1024 - FD_RESERVE} fail; raise the hard limit "
                       "(ulimit -Hn, systemd LimitNOFILE=) or lower tcp.max_connections")
    assert fd_limit_plan(1024, 1024, 1024 - FD_RESERVE) == (1024, None)
    assert fd_limit_plan(1024, 1024, 1025 - FD_RESERVE)[1] is not None


async def test_reload_applies_rate_limit_with_new_buckets(server, tmp_path):
    from gslb.answercache import AnswerCache
    from gslb.handler import QueryHandler

    server.handler = QueryHandler(lambda: server.zone_store.zones, None, server.stats, server.config.acl,
                                  AnswerCache(), rate_limit=server.config.rate_limit)
    assert server.handler.rrl is None
    cfg = tmp_path / "gslb.yaml"
    base = cfg.read_text()
    cfg.write_text(base + "rate_limit: {responses_per_second: 7, exempt: [10.0.0.0/8]}\n")
    result = await server.reload()
    assert result["ok"] is True and result["warnings"] == [], result
    limiter = server.handler.rrl
    assert limiter is not None and limiter.config.responses_per_second == 7 and limiter.exempt("10.1.2.3")
    assert server.config.rate_limit.exempt == ("10.0.0.0/8",)
    cfg.write_text(base)
    assert (await server.reload())["ok"] is True
    assert server.handler.rrl is None and not server.config.rate_limit.enabled
