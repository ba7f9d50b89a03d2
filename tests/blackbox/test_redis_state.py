"""RedisBackend against a real redis-server started on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from redisd import RedisServer  # noqa: E402

from gslb.model import RegionResult  # noqa: E402
from gslb.redis_state import PREFIX, RedisBackend, decode_result, encode_result, redact_url  # noqa: E402

KEY = ("gslb.example.com", "fra")
KEY2 = ("gslb.example.com", "iad")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., RedisBackend]]:
    """Factory of started backends (fast resync and backoff), all closed after the test."""
    made: list[RedisBackend] = []

    async def make(url: str, **kw: object) -> RedisBackend:
        kw.setdefault("resync_interval", 0.3)
        kw.setdefault("backoff_initial", 0.05)
        kw.setdefault("backoff_cap", 0.2)
        kw.setdefault("timeout", 1.0)
        backend = RedisBackend(url, **kw)  # type: ignore[arg-type]
        backend.changes = 0  # type: ignore[attr-defined]

        def bump() -> None:
            backend.changes += 1  # type: ignore[attr-defined]

        made.append(backend)
        await backend.start(bump)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def eventually(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def result(state: str = "up", at: float | None = None, stale_after: float = 30.0, **kw: object) -> RegionResult:
    return RegionResult(state=state, checked_at=time.time() if at is None else at,  # type: ignore[arg-type]
                        stale_after=stale_after, **kw)  # type: ignore[arg-type]


def assert_alive(*backends: RedisBackend) -> None:
    """No exception escaped the background task."""
    for b in backends:
        assert b._task is not None and not b._task.done()


# pure helpers ----------------------------------------------------------------------------

def test_result_json_round_trip() -> None:
    r = RegionResult(state="down", checked_at=1700000000.5, rtt_ms=12.5, load=3.0,
                     error="timeout after 3s", stale_after=30.0)
    assert decode_result(json.loads(json.dumps(encode_result(r)))) == r


@pytest.mark.parametrize("bad, message", [
    ({"state": "maybe", "checked_at": 1, "stale_after": 3}, "state"),
    ({"state": "up", "checked_at": "x", "stale_after": 3}, "checked_at"),
    ({"state": "up", "checked_at": 1, "stale_after": 0}, "stale_after"),
    ({"state": "up", "checked_at": 1, "stale_after": 3, "error": 5}, "error"),
    ([1, 2], "object"),
])
def test_decode_result_rejects_malformed(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_result(bad)


def test_url_password_is_redacted() -> None:
    assert redact_url("redis://:s3cret@127.0.0.1:6379/2") == "redis://:***@127.0.0.1:6379/2"
    assert redact_url("rediss://user:pw@[::1]:6380/0") == "rediss://user:***@[::1]:6380/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_unsupported_url_is_rejected() -> None:
    from gslb.errors import StartupError

    with pytest.raises(StartupError, match="unsupported URL"):
        RedisBackend("http://127.0.0.1:6379/0")


# round trip, expiry, durability ----------------------------------------------------------

async def test_round_trip_between_two_backends(redis_server: RedisServer, backends, raw) -> None:
    a = await backends(redis_server.url)
    b = await backends(redis_server.url)
    await eventually(lambda: a.connected and b.connected)
    r = result("down", rtt_ms=4.5, load=2.0, error="HTTP 503")
    await a.put_result(KEY, "eu-west", r)
    await a.put_override(KEY2, "drain")
    assert a.results() == {KEY: {"eu-west": r}}  # visible on the writer at once
    assert a.overrides() == {KEY2: "drain"}
    await eventually(lambda: b.results() == {KEY: {"eu-west": r}} and b.overrides() == {KEY2: "drain"})
    # the documented key layout
    stored = json.loads(await raw.get(f"{PREFIX}result:gslb.example.com:fra:eu-west"))
    assert stored == encode_result(r)
    assert json.loads(await raw.hget(f"{PREFIX}overrides", "gslb.example.com:iad"))["state"] == "drain"
    # removing an override
    await b.put_override(KEY2, None)
    await eventually(lambda: a.overrides() == {} and b.overrides() == {})
    assert await raw.hgetall(f"{PREFIX}overrides") == {}
    assert_alive(a, b)


async def test_results_expire_and_overrides_do_not(redis_server: RedisServer, backends, raw) -> None:
    a = await backends(redis_server.url)
    b = await backends(redis_server.url)
    await eventually(lambda: a.connected and b.connected)
    await a.put_result(KEY, "eu-west", result("down", stale_after=0.5))
    await a.put_override(KEY2, "down")
    name = f"{PREFIX}result:gslb.example.com:fra:eu-west"
    await eventually(lambda: KEY in b.results())
    ttl = await raw.pttl(name)
    assert 0 < ttl <= 500
    assert await raw.ttl(f"{PREFIX}overrides") == -1  # no expiry
    # the key expires in Redis; the periodic resync drops it everywhere
    await eventually(lambda: b.results() == {} and a.results() == {})
    assert await raw.exists(name) == 0
    # overrides survive every node going away
    await a.close()
    await b.close()
    c = await backends(redis_server.url)
    await eventually(lambda: c.connected)
    assert c.overrides() == {KEY2: "down"}
    assert c.results() == {}


async def test_one_result_per_region_newest_wins(redis_server: RedisServer, backends) -> None:
    agent1 = await backends(redis_server.url)
    agent2 = await backends(redis_server.url)
    node = await backends(redis_server.url)
    await eventually(lambda: agent1.connected and agent2.connected and node.connected)
    now = time.time()
    await agent1.put_result(KEY, "eu-west", result("up", at=now))
    await agent2.put_result(KEY, "eu-west", result("down", at=now + 1))
    await eventually(lambda: node.results().get(KEY, {}).get("eu-west") == result("down", at=now + 1))
    # a late write of an older result does not replace a newer one
    await agent1.put_result(KEY, "eu-west", result("up", at=now - 5))
    await asyncio.sleep(0.8)  # a couple of resyncs
    assert node.results() == {KEY: {"eu-west": result("down", at=now + 1)}}
    assert set(node.results()[KEY]) == {"eu-west"}  # one entry per region, never two


# change notification and resynchronisation -----------------------------------------------

async def test_change_reaches_another_node_within_a_second(redis_server: RedisServer, backends) -> None:
    # resync every minute: only the pub/sub message can bring the change this fast
    a = await backends(redis_server.url, resync_interval=60)
    b = await backends(redis_server.url, resync_interval=60)
    await eventually(lambda: a.connected and b.connected)
    before = b.changes
    start = time.monotonic()
    await a.put_result(KEY, "us-east", result("down"))
    await a.put_override(KEY, "up")
    await eventually(lambda: KEY in b.results() and b.overrides() == {KEY: "up"}, timeout=1.0)
    assert time.monotonic() - start < 1.0
    assert b.changes > before


async def test_resync_repairs_a_missed_message(redis_server: RedisServer, backends, raw) -> None:
    b = await backends(redis_server.url, resync_interval=0.3)
    await eventually(lambda: b.connected)
    # written behind the nodes' backs: no message at all
    r = result("down")
    await raw.set(f"{PREFIX}result:gslb.example.com:fra:eu-west", json.dumps(encode_result(r)), px=30000)
    await raw.hset(f"{PREFIX}overrides", "gslb.example.com:iad", json.dumps({"state": "drain"}))
    await eventually(lambda: b.results() == {KEY: {"eu-west": r}} and b.overrides() == {KEY2: "drain"})
    await raw.hdel(f"{PREFIX}overrides", "gslb.example.com:iad")
    await eventually(lambda: b.overrides() == {})


async def test_resync_message_triggers_a_full_resync(redis_server: RedisServer, backends, raw) -> None:
    b = await backends(redis_server.url, resync_interval=60)
    await eventually(lambda: b.connected)
    r = result("up")
    await raw.set(f"{PREFIX}result:gslb.example.com:fra:eu-west", json.dumps(encode_result(r)), px=30000)
    await raw.publish(f"{PREFIX}events", json.dumps({"kind": "resync"}))
    await eventually(lambda: b.results() == {KEY: {"eu-west": r}}, timeout=1.0)


async def test_malformed_entries_and_messages_are_ignored(redis_server: RedisServer, backends, raw) -> None:
    b = await backends(redis_server.url, resync_interval=0.2)
    await eventually(lambda: b.connected)
    await raw.set(f"{PREFIX}result:gslb.example.com:fra:eu-west", "not json")
    await raw.set(f"{PREFIX}result:too:many:colons:here", json.dumps(encode_result(result())))
    await raw.hset(f"{PREFIX}overrides", "gslb.example.com:fra", json.dumps({"state": "sideways"}))
    await raw.publish(f"{PREFIX}events", "{]")
    await raw.publish(f"{PREFIX}events", json.dumps({"kind": "result", "zone": "z"}))
    await eventually(lambda: b.bad_entries >= 5)
    assert b.results() == {} and b.overrides() == {}
    good = result("down")
    await b.put_result(KEY2, "eu-west", good)
    await asyncio.sleep(0.5)
    assert b.connected and b.results() == {KEY2: {"eu-west": good}}
    assert_alive(b)


async def test_a_failing_change_listener_does_not_stop_the_backend(redis_server: RedisServer) -> None:
    def broken() -> None:
        raise RuntimeError("listener bug")

    b = RedisBackend(redis_server.url, resync_interval=0.2)
    try:
        await b.start(broken)
        await eventually(lambda: b.connected)
        await b.put_override(KEY, "down")
        await asyncio.sleep(0.5)
        assert b.connected
        assert_alive(b)
    finally:
        await b.close()


async def test_password_in_url(tmp_path: Path, backends) -> None:
    server = RedisServer(tmp_path / "redis-auth", password="s3cret").start()
    try:
        a = await backends(server.url)
        await eventually(lambda: a.connected)
        assert "s3cret" not in a.url and "***" in a.url
        wrong = await backends(server.url.replace("s3cret", "wrong"))
        await eventually(lambda: wrong.errors > 0)
        assert not wrong.connected
        assert_alive(wrong)
    finally:
        server.stop()


# faults ----------------------------------------------------------------------------------

async def test_redis_outage_keeps_state_queues_writes_and_recovers(redis_server: RedisServer, backends) -> None:
    a = await backends(redis_server.url)
    b = await backends(redis_server.url)
    await eventually(lambda: a.connected and b.connected)
    r1 = result("down")
    await a.put_result(KEY, "eu-west", r1)
    await a.put_override(KEY2, "drain")
    await eventually(lambda: KEY in b.results() and KEY2 in b.overrides())

    redis_server.stop()
    await eventually(lambda: not a.connected and not b.connected)
    assert a.errors > 0 and b.errors > 0
    # the last known state stays; writes do not raise and are visible locally
    assert b.results() == {KEY: {"eu-west": r1}} and b.overrides() == {KEY2: "drain"}
    r2 = result("up")
    await a.put_result(KEY, "eu-west", r2)
    await a.put_override(KEY, "down")
    assert a.results() == {KEY: {"eu-west": r2}}
    assert a.overrides() == {KEY: "down", KEY2: "drain"}
    assert a.pending == 2
    await asyncio.sleep(0.5)  # several failed reconnection attempts
    assert_alive(a, b)

    # Redis comes back empty (no persistence): queued writes are flushed, known overrides are
    # republished, and both nodes converge
    redis_server.start()
    await eventually(lambda: a.connected and b.connected, timeout=5.0)
    await eventually(lambda: b.results() == {KEY: {"eu-west": r2}}
                     and b.overrides() == {KEY: "down", KEY2: "drain"})
    assert a.pending == 0
    assert a.overrides() == {KEY: "down", KEY2: "drain"}
    assert a.connects >= 2 and b.connects >= 2
    # a brand-new node sees everything, so nothing lives only in the nodes' memory
    c = await backends(redis_server.url)
    await eventually(lambda: c.connected)
    assert c.overrides() == {KEY: "down", KEY2: "drain"}
    assert c.results() == {KEY: {"eu-west": r2}}


async def test_redis_with_persistence_restart_is_not_a_data_loss(tmp_path: Path, backends) -> None:
    server = RedisServer(tmp_path / "redis-aof", persist=True).start()
    try:
        a = await backends(server.url)
        b = await backends(server.url)
        await eventually(lambda: a.connected and b.connected)
        await a.put_override(KEY, "down")
        await eventually(lambda: b.overrides() == {KEY: "down"})
        server.stop()
        await eventually(lambda: not a.connected and not b.connected)
        server.start()
        await eventually(lambda: a.connected and b.connected, timeout=5.0)
        # the override removed by b while both were connected again stays removed
        await b.put_override(KEY, None)
        await eventually(lambda: a.overrides() == {})
    finally:
        server.stop()


async def test_start_with_redis_unreachable(tmp_path: Path, backends) -> None:
    server = RedisServer(tmp_path / "redis-late")  # port chosen, not started yet
    a = await backends(server.url)
    await asyncio.sleep(0.3)
    assert not a.connected and a.errors > 0
    await a.put_result(KEY, "eu-west", result("down"))
    await a.put_override(KEY2, "up")
    assert a.results()[KEY]["eu-west"].state == "down"
    server.start()
    try:
        await eventually(lambda: a.connected, timeout=5.0)
        b = await backends(server.url)
        await eventually(lambda: b.connected)
        assert b.results()[KEY]["eu-west"].state == "down"
        assert b.overrides() == {KEY2: "up"}
        assert_alive(a, b)
    finally:
        server.stop()
