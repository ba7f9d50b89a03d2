"""RedisBackend against a real redis-server started on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from harness import eventually_async, holds_for_async
from redisd import RedisServer

from gslb.model import RegionResult, ZoneSet
from gslb.redis_state import (
    MAX_SKEW, PREFIX, TOMBSTONE_TTL, RedisBackend, backoff_delay, decode_override, decode_result, encode_result,
    redact_url)
from gslb.state import SiteStateTable
from gslb.zones import ZoneStore

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
    # a password given as a query parameter (redis-py accepts it) is hidden too
    assert redact_url("redis://127.0.0.1:6379/0?password=s3cret") == "redis://127.0.0.1:6379/0?password=***"
    assert (redact_url("unix:///run/redis.sock?db=2&Password=s3cret&x=1")
            == "unix:///run/redis.sock?db=2&Password=***&x=1")
    assert redact_url("unix:///run/redis.sock?db=2") == "unix:///run/redis.sock?db=2"
    assert redact_url("rediss://u:a@b@h:1/0?password=c") == "rediss://u:***@h:1/0?password=***"


def test_decode_result_validates_ranges_and_clock_skew() -> None:
    now = 1_800_000_000.0
    ok = {"state": "up", "checked_at": now + MAX_SKEW - 1, "stale_after": 86400}
    assert decode_result(ok, now).checked_at == now + MAX_SKEW - 1
    for bad, message in [
        ({"state": "down", "checked_at": 1e300, "stale_after": 30}, "checked_at"),
        ({"state": "down", "checked_at": now + MAX_SKEW + 1, "stale_after": 30}, "checked_at"),
        ({"state": "down", "checked_at": now, "stale_after": 1e300}, "stale_after"),
        ({"state": "down", "checked_at": now, "stale_after": 86400.5}, "stale_after"),
        ({"state": "down", "checked_at": now, "stale_after": 30, "rtt_ms": float("inf")}, "rtt_ms"),
    ]:
        with pytest.raises(ValueError, match=message):
            decode_result(bad, now)


def test_backoff_delay_never_exceeds_the_cap() -> None:
    assert backoff_delay(0.1, 5.0, 0.0) == pytest.approx(0.05)
    assert backoff_delay(0.1, 5.0, 0.999) == pytest.approx(0.1499)
    assert backoff_delay(5.0, 5.0, 0.999) == 5.0  # not 7.5: the jittered wait is capped too
    assert backoff_delay(5.0, 5.0, 0.0) == 2.5


def test_decode_override() -> None:
    now = 1_800_000_000.0
    assert decode_override({"state": "down", "set_at": now - 5}, now) == ("down", now - 5)
    assert decode_override({"state": None, "set_at": now}, now) == (None, now)  # a tombstone
    assert decode_override({"state": "drain"}, now) == ("drain", 0.0)  # written by hand: oldest
    # from the future: applies, but its time is clamped (it only orders writes)
    assert decode_override({"state": "up", "set_at": 1e300}, now) == ("up", now + MAX_SKEW)
    for bad in ({"state": "sideways", "set_at": now}, {"state": "up", "set_at": "x"},
                {"state": "up", "set_at": float("nan")}, ["up"]):
        with pytest.raises(ValueError):
            decode_override(bad, now)


def test_unsupported_url_is_rejected() -> None:
    from gslb.errors import StartupError

    with pytest.raises(StartupError, match="unsupported URL"):
        RedisBackend("http://127.0.0.1:6379/0")


# round trip, expiry, durability ----------------------------------------------------------

async def test_round_trip_between_two_backends(redis_server: RedisServer, backends, raw) -> None:
    a = await backends(redis_server.url)
    b = await backends(redis_server.url)
    await eventually_async(lambda: a.connected and b.connected)
    r = result("down", rtt_ms=4.5, load=2.0, error="HTTP 503")
    await a.put_result(KEY, "eu-west", r)
    await a.put_override(KEY2, "drain")
    assert a.results() == {KEY: {"eu-west": r}}  # visible on the writer at once
    assert a.overrides() == {KEY2: "drain"}
    await eventually_async(lambda: b.results() == {KEY: {"eu-west": r}} and b.overrides() == {KEY2: "drain"})
    # the documented key layout
    stored = json.loads(await raw.get(f"{PREFIX}result:gslb.example.com:fra:eu-west"))
    assert stored == encode_result(r)
    assert json.loads(await raw.hget(f"{PREFIX}overrides", "gslb.example.com:iad"))["state"] == "drain"
    # removing an override
    await b.put_override(KEY2, None)
    await eventually_async(lambda: a.overrides() == {} and b.overrides() == {})
    # a removal is remembered as a tombstone with its time (last writer wins by set_at)
    tomb = json.loads(await raw.hget(f"{PREFIX}overrides", "gslb.example.com:iad"))
    assert tomb["state"] is None and abs(tomb["set_at"] - time.time()) < 5
    assert_alive(a, b)


async def test_results_of_one_flush_are_announced_in_one_message(redis_server: RedisServer, backends,
                                                                   raw) -> None:
    """A checker's results gathered within RESULT_BATCH go out as one ``results`` message; the
    one-result messages of earlier versions are still applied."""
    a = await backends(redis_server.url)
    b = await backends(redis_server.url)
    await eventually_async(lambda: a.connected and b.connected)
    pubsub = raw.pubsub()
    await pubsub.subscribe(f"{PREFIX}events")
    assert (await pubsub.get_message(timeout=2.0))["type"] == "subscribe"
    sites = [(KEY[0], f"s{i}") for i in range(10)]
    for key in sites:
        await a.put_result(key, "eu-west", result("up"))
    await eventually_async(lambda: all(key in b.results() for key in sites))
    messages = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # None also stands for the subscription's confirmation
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg is not None:
            messages.append(json.loads(msg["data"]))
    assert [m["kind"] for m in messages] == ["results"]
    assert sorted(item["site"] for item in messages[0]["items"]) == sorted(site for _, site in sites)
    await pubsub.aclose()
    old = result("down")
    await raw.publish(f"{PREFIX}events", json.dumps({"kind": "result", "zone": KEY[0], "site": KEY[1],
                                                     "region": "us-east", "result": encode_result(old)}))
    await eventually_async(lambda: b.results().get(KEY, {}).get("us-east") == old)
    assert_alive(a, b)


async def test_results_expire_and_overrides_do_not(redis_server: RedisServer, backends, raw) -> None:
    a = await backends(redis_server.url)
    b = await backends(redis_server.url)
    await eventually_async(lambda: a.connected and b.connected)
    await a.put_result(KEY, "eu-west", result("down", stale_after=0.5))
    await a.put_override(KEY2, "down")
    name = f"{PREFIX}result:gslb.example.com:fra:eu-west"
    await eventually_async(lambda: KEY in b.results())
    ttl = await raw.pttl(name)
    assert 0 < ttl <= 500
    assert await raw.ttl(f"{PREFIX}overrides") == -1  # no expiry
    # the key expires in Redis; the periodic resync drops it everywhere
    await eventually_async(lambda: b.results() == {} and a.results() == {})
    assert await raw.exists(name) == 0
    # overrides survive every node going away
    await a.close()
    await b.close()
    c = await backends(redis_server.url)
    await eventually_async(lambda: c.connected)
    assert c.overrides() == {KEY2: "down"}
    assert c.results() == {}


async def test_one_result_per_region_newest_wins(redis_server: RedisServer, backends) -> None:
    agent1 = await backends(redis_server.url)
    agent2 = await backends(redis_server.url)
    node = await backends(redis_server.url)
    await eventually_async(lambda: agent1.connected and agent2.connected and node.connected)
    now = time.time()
    await agent1.put_result(KEY, "eu-west", result("up", at=now))
    await agent2.put_result(KEY, "eu-west", result("down", at=now + 1))
    await eventually_async(lambda: node.results().get(KEY, {}).get("eu-west") == result("down", at=now + 1))
    # a late write of an older result does not replace a newer one
    resyncs = node.resyncs
    await agent1.put_result(KEY, "eu-west", result("up", at=now - 5))
    await eventually_async(lambda: node.resyncs >= resyncs + 2, what="two resyncs after the late write")
    assert node.results() == {KEY: {"eu-west": result("down", at=now + 1)}}
    assert set(node.results()[KEY]) == {"eu-west"}  # one entry per region, never two


# change notification and resynchronisation -----------------------------------------------

async def test_change_reaches_another_node_within_a_second(redis_server: RedisServer, backends) -> None:
    # resync every minute: only the pub/sub message can bring the change this fast
    a = await backends(redis_server.url, resync_interval=60)
    b = await backends(redis_server.url, resync_interval=60)
    await eventually_async(lambda: a.connected and b.connected)
    before = b.changes
    start = time.monotonic()
    await a.put_result(KEY, "us-east", result("down"))
    await a.put_override(KEY, "up")
    # the table is told too (coalesced: one call for a burst of messages)
    await eventually_async(lambda: KEY in b.results() and b.overrides() == {KEY: "up"}
                     and b.changes > before, timeout=1.0)
    assert time.monotonic() - start < 1.0


async def test_resync_repairs_a_missed_message(redis_server: RedisServer, backends, raw) -> None:
    b = await backends(redis_server.url, resync_interval=0.3)
    await eventually_async(lambda: b.connected)
    # written behind the nodes' backs: no message at all
    r = result("down")
    await raw.set(f"{PREFIX}result:gslb.example.com:fra:eu-west", json.dumps(encode_result(r)), px=30000)
    await raw.hset(f"{PREFIX}overrides", "gslb.example.com:iad", json.dumps({"state": "drain"}))
    await eventually_async(lambda: b.results() == {KEY: {"eu-west": r}} and b.overrides() == {KEY2: "drain"})
    await raw.hdel(f"{PREFIX}overrides", "gslb.example.com:iad")
    await eventually_async(lambda: b.overrides() == {})


async def test_resync_message_triggers_a_full_resync(redis_server: RedisServer, backends, raw) -> None:
    b = await backends(redis_server.url, resync_interval=60)
    await eventually_async(lambda: b.connected)
    r = result("up")
    await raw.set(f"{PREFIX}result:gslb.example.com:fra:eu-west", json.dumps(encode_result(r)), px=30000)
    await raw.publish(f"{PREFIX}events", json.dumps({"kind": "resync"}))
    await eventually_async(lambda: b.results() == {KEY: {"eu-west": r}}, timeout=1.0)


async def test_malformed_entries_and_messages_are_ignored(redis_server: RedisServer, backends, raw) -> None:
    b = await backends(redis_server.url, resync_interval=0.2)
    await eventually_async(lambda: b.connected)
    await raw.set(f"{PREFIX}result:gslb.example.com:fra:eu-west", "not json")
    await raw.set(f"{PREFIX}result:too:many:colons:here", json.dumps(encode_result(result())))
    await raw.hset(f"{PREFIX}overrides", "gslb.example.com:fra", json.dumps({"state": "sideways"}))
    await raw.publish(f"{PREFIX}events", "{]")
    await raw.publish(f"{PREFIX}events", json.dumps({"kind": "result", "zone": "z"}))
    await eventually_async(lambda: b.bad_entries >= 5)
    assert b.results() == {} and b.overrides() == {}
    good = result("down")
    resyncs = b.resyncs
    await b.put_result(KEY2, "eu-west", good)
    await eventually_async(lambda: b.resyncs >= resyncs + 2, what="two resyncs after the write")
    assert b.connected and b.results() == {KEY2: {"eu-west": good}}
    assert_alive(b)


async def test_a_failing_change_listener_does_not_stop_the_backend(redis_server: RedisServer) -> None:
    def broken() -> None:
        raise RuntimeError("listener bug")

    b = RedisBackend(redis_server.url, resync_interval=0.2)
    try:
        await b.start(broken)
        await eventually_async(lambda: b.connected)
        resyncs = b.resyncs
        await b.put_override(KEY, "down")
        await eventually_async(lambda: b.resyncs >= resyncs + 2, what="two resyncs after the failing listener")
        assert b.connected
        assert_alive(b)
    finally:
        await b.close()


async def test_password_in_url(tmp_path: Path, backends) -> None:
    server = RedisServer(tmp_path / "redis-auth", password="s3cret").start()
    try:
        a = await backends(server.url)
        await eventually_async(lambda: a.connected)
        assert "s3cret" not in a.url and "***" in a.url
        wrong = await backends(server.url.replace("s3cret", "wrong"))
        await eventually_async(lambda: wrong.errors > 0)
        assert not wrong.connected
        assert_alive(wrong)
    finally:
        server.stop()


# faults ----------------------------------------------------------------------------------

async def test_redis_outage_keeps_state_queues_writes_and_recovers(redis_server: RedisServer, backends) -> None:
    a = await backends(redis_server.url)
    b = await backends(redis_server.url)
    await eventually_async(lambda: a.connected and b.connected)
    r1 = result("down")
    await a.put_result(KEY, "eu-west", r1)
    await a.put_override(KEY2, "drain")
    await eventually_async(lambda: KEY in b.results() and KEY2 in b.overrides())

    redis_server.stop()
    await eventually_async(lambda: not a.connected and not b.connected)
    assert a.errors > 0 and b.errors > 0
    # the last known state stays; writes do not raise and are visible locally
    assert b.results() == {KEY: {"eu-west": r1}} and b.overrides() == {KEY2: "drain"}
    r2 = result("up")
    await a.put_result(KEY, "eu-west", r2)
    await a.put_override(KEY, "down")
    assert a.results() == {KEY: {"eu-west": r2}}
    assert a.overrides() == {KEY: "down", KEY2: "drain"}
    assert a.pending == 2
    errors = a.errors, b.errors
    await eventually_async(lambda: a.errors >= errors[0] + 2 and b.errors >= errors[1] + 2,
                     what="several failed reconnection attempts")
    assert_alive(a, b)

    # Redis comes back empty (no persistence): queued writes are flushed, known overrides are
    # republished, and both nodes converge
    redis_server.start()
    await eventually_async(lambda: a.connected and b.connected, timeout=5.0)
    await eventually_async(lambda: b.results() == {KEY: {"eu-west": r2}}
                     and b.overrides() == {KEY: "down", KEY2: "drain"})
    assert a.pending == 0
    assert a.overrides() == {KEY: "down", KEY2: "drain"}
    assert a.connects >= 2 and b.connects >= 2
    # a brand-new node sees everything, so nothing lives only in the nodes' memory
    c = await backends(redis_server.url)
    await eventually_async(lambda: c.connected)
    assert c.overrides() == {KEY: "down", KEY2: "drain"}
    assert c.results() == {KEY: {"eu-west": r2}}


async def test_redis_with_persistence_restart_is_not_a_data_loss(tmp_path: Path, backends) -> None:
    server = RedisServer(tmp_path / "redis-aof", persist=True).start()
    try:
        a = await backends(server.url)
        b = await backends(server.url)
        await eventually_async(lambda: a.connected and b.connected)
        await a.put_override(KEY, "down")
        await eventually_async(lambda: b.overrides() == {KEY: "down"})
        server.stop()
        await eventually_async(lambda: not a.connected and not b.connected)
        server.start()
        await eventually_async(lambda: a.connected and b.connected, timeout=5.0)
        # the override removed by b while both were connected again stays removed
        await b.put_override(KEY, None)
        await eventually_async(lambda: a.overrides() == {})
    finally:
        server.stop()


async def test_start_with_redis_unreachable(tmp_path: Path, backends) -> None:
    server = RedisServer(tmp_path / "redis-late")  # port chosen, not started yet
    a = await backends(server.url)
    await eventually_async(lambda: a.errors > 0, what="a failed connection attempt")
    assert not a.connected
    await a.put_result(KEY, "eu-west", result("down"))
    await a.put_override(KEY2, "up")
    assert a.results()[KEY]["eu-west"].state == "down"
    server.start()
    try:
        await eventually_async(lambda: a.connected, timeout=5.0)
        b = await backends(server.url)
        await eventually_async(lambda: b.connected)
        assert b.results()[KEY]["eu-west"].state == "down"
        assert b.overrides() == {KEY2: "up"}
        assert_alive(a, b)
    finally:
        server.stop()


async def test_start_waits_for_the_first_sync(redis_server: RedisServer, backends) -> None:
    a = await backends(redis_server.url)
    await a.put_override(KEY, "drain")
    await eventually_async(lambda: a.pending == 0)
    # a node that starts now answers from the shared state from its first query
    b = await backends(redis_server.url)
    assert b.connected and b.overrides() == {KEY: "drain"}


async def test_start_with_redis_unreachable_returns_quickly(tmp_path: Path, backends) -> None:
    dead = RedisServer(tmp_path / "never-started")
    started = time.monotonic()
    a = await backends(dead.url)
    assert time.monotonic() - started < 1.0
    assert not a.connected and a.results() == {} and a.overrides() == {}


async def test_redis_losing_its_data_does_not_forget_fresh_results(redis_server: RedisServer, backends) -> None:
    agent = await backends(redis_server.url)
    node = await backends(redis_server.url)
    down = result("down", stale_after=30.0)
    await agent.put_result(KEY, "eu-west", down)
    await eventually_async(lambda: node.results() == {KEY: {"eu-west": down}})
    await agent.close()  # the agent dies with Redis
    redis_server.stop()
    await eventually_async(lambda: not node.connected)
    redis_server.start()
    await eventually_async(lambda: node.connected, timeout=5.0)
    resyncs = node.resyncs
    await eventually_async(lambda: node.resyncs >= resyncs + 2, what="resyncs against the empty Redis")
    # still known down here (fresh in connected time), and republished for everyone
    assert node.results() == {KEY: {"eu-west": down}}
    late = await backends(redis_server.url)
    assert late.results() == {KEY: {"eu-west": down}}


@pytest.mark.parametrize("later", [None, "down"])
async def test_override_change_during_an_outage_survives_an_empty_restart(
        redis_server: RedisServer, backends, raw, later: str | None) -> None:
    # node1 sets "up"; Redis dies; node1 removes it (or sets "down"); an empty Redis starts.
    # node2 still remembers "up" and writes it back: the newer change must win everywhere.
    node1 = await backends(redis_server.url)
    node2 = await backends(redis_server.url)
    await eventually_async(lambda: node1.connected and node2.connected)
    await node1.put_override(KEY, "up")
    await eventually_async(lambda: node2.overrides() == {KEY: "up"})
    redis_server.stop()
    await eventually_async(lambda: not node1.connected and not node2.connected)
    await node1.put_override(KEY, later)  # type: ignore[arg-type]
    good_url, node2._url = node2._url, "redis://127.0.0.1:1/0"  # node2 comes back last
    redis_server.start()
    await eventually_async(lambda: node1.connected and node1.pending == 0, timeout=5.0)
    node2._url = good_url
    await eventually_async(lambda: node2.connected, timeout=5.0)
    expected = {} if later is None else {KEY: later}
    await eventually_async(lambda: node1.overrides() == expected and node2.overrides() == expected)
    resyncs = node1.resyncs, node2.resyncs
    await eventually_async(lambda: node1.resyncs >= resyncs[0] + 2 and node2.resyncs >= resyncs[1] + 2,
                     what="a few resyncs on both nodes")  # after which nothing flipped back:
    assert node1.overrides() == expected and node2.overrides() == expected
    stored = json.loads(await raw.hget(f"{PREFIX}overrides", "gslb.example.com:fra"))
    assert stored["state"] == later
    late = await backends(redis_server.url)
    assert late.overrides() == expected


async def test_flushall_while_connected_is_noticed(redis_server: RedisServer, backends, raw) -> None:
    a = await backends(redis_server.url)
    await a.put_override(KEY, "drain")
    await eventually_async(lambda: a.pending == 0)
    await raw.flushall()
    # the next resync sees the epoch gone and writes the override back
    await eventually_async(lambda: raw_sync_has(redis_server, "gslb.example.com:fra"), timeout=3.0)
    assert a.overrides() == {KEY: "drain"}


def raw_sync_has(server: RedisServer, field: str) -> bool:
    import redis

    with redis.Redis(port=server.port, decode_responses=True) as client:
        return client.hget(f"{PREFIX}overrides", field) is not None


async def test_old_tombstones_are_deleted(redis_server: RedisServer, backends, raw) -> None:
    old = json.dumps({"state": None, "set_at": time.time() - TOMBSTONE_TTL - 10})
    fresh = json.dumps({"state": None, "set_at": time.time() - 10})
    await raw.hset(f"{PREFIX}overrides", mapping={"gslb.example.com:fra": old, "gslb.example.com:iad": fresh})
    a = await backends(redis_server.url)
    await eventually_async(lambda: a.resyncs >= 2)
    assert await raw.hgetall(f"{PREFIX}overrides") == {"gslb.example.com:iad": fresh}
    assert a.overrides() == {}


async def test_values_from_the_future_are_bounded(redis_server: RedisServer, backends, raw) -> None:
    a = await backends(redis_server.url)
    await eventually_async(lambda: a.connected)
    name = f"{PREFIX}result:gslb.example.com:fra:eu-west"
    # a crafted message and a crafted key: rejected, counted, never kept
    bomb = {"state": "down", "checked_at": 1e300, "stale_after": 1e300}
    await raw.publish(f"{PREFIX}events", json.dumps({"kind": "result", "zone": KEY[0], "site": KEY[1],
                                                     "region": "eu-west", "result": bomb}))
    await raw.set(name, json.dumps({"state": "down", "checked_at": time.time() + 3600, "stale_after": 30}))
    await eventually_async(lambda: a.bad_entries >= 2)
    assert a.results() == {}
    # a real agent's result replaces the one from the future (the compare script caps it)
    r = result("up")
    await a.put_result(KEY, "eu-west", r)
    await eventually_async(lambda: a.pending == 0)
    assert json.loads(await raw.get(name)) == encode_result(r)
    # an override from the future applies, and a later removal still wins over it
    await raw.hset(f"{PREFIX}overrides", "gslb.example.com:iad", json.dumps({"state": "down", "set_at": 1e300}))
    await eventually_async(lambda: a.overrides() == {KEY2: "down"})
    await a.put_override(KEY2, None)
    await eventually_async(lambda: a.pending == 0)
    resyncs = a.resyncs
    await eventually_async(lambda: a.resyncs >= resyncs + 2, what="two resyncs after the removal")
    assert a.overrides() == {}
    assert json.loads(await raw.hget(f"{PREFIX}overrides", "gslb.example.com:iad"))["state"] is None
    # a stale_after longer than a day is capped when written
    await a.put_result(KEY2, "eu-west", result("up", stale_after=10 * 86400))
    assert a.results()[KEY2]["eu-west"].stale_after == 86400
    assert_alive(a)


async def test_unix_socket_and_password_in_query(tmp_path: Path, backends) -> None:
    from gslb.config import check_state_url

    sock = Path("/tmp") / f"gslb-test-{os.getpid()}-{time.monotonic_ns()}.sock"
    server = RedisServer(tmp_path / "redis-unix", password="s3cret", unixsocket=sock).start()
    try:
        url = f"unix://{sock}?db=0&password=s3cret"
        assert check_state_url(url) is None
        a = await backends(url)
        b = await backends(f"redis://127.0.0.1:{server.port}/0?password=s3cret")
        await eventually_async(lambda: a.connected and b.connected)
        assert "s3cret" not in a.url and "s3cret" not in b.url
        await a.put_override(KEY, "down")
        await eventually_async(lambda: b.overrides() == {KEY: "down"})
    finally:
        server.stop()
        sock.unlink(missing_ok=True)


# the site-state table over Redis ---------------------------------------------------------

ZONE = """\
zone: gslb.test
ns: [ns1.gslb.test]
records:
  ns1: {A: 192.0.2.53}
  www: {pool: web}
  www4: {pool: web4}
sites:
  fra: {location: [50.11, 8.68], addresses: [127.0.0.1], checks: [web]}
  iad: {location: [38.95, -77.45], addresses: [127.0.0.1], checks: [web]}
checks:
  web: {type: http, port: PORT, path: /healthz, interval: 0.5, timeout: 0.3, rise: 1, fall: 1}
pools:
  web: {policy: failover, sites: [fra, iad], quorum: 0.5}
  web4: {policy: failover, sites: [fra, iad], quorum: 0.4}
"""
FRA = ("gslb.test", "fra")
IAD = ("gslb.test", "iad")


def zones(tmp_path: Path, port: int = 9) -> ZoneSet:
    folder = tmp_path / "zones"
    folder.mkdir(exist_ok=True)
    (folder / "test.yaml").write_text(ZONE.replace("PORT", str(port)))
    store = ZoneStore(str(folder))
    assert not store.reload(force=True)["errors"]
    return store.zones


@pytest.fixture
async def tables(backends) -> AsyncIterator[Callable[..., SiteStateTable]]:
    made: list[SiteStateTable] = []

    async def make(url: str, zoneset: ZoneSet, **kw: object) -> SiteStateTable:
        table = SiteStateTable(await backends(url, **kw))
        table.configure(zoneset)
        await table.start()
        made.append(table)
        return table

    yield make
    for table in made:
        await table.close()


def verdicts(table: SiteStateTable, quorum: float) -> dict[str, str]:
    return {key[1]: status.state(quorum) for key, status in table.view.sites.items()}


async def test_two_tables_see_the_same_view(redis_server: RedisServer, tables, tmp_path: Path) -> None:
    zs = zones(tmp_path)
    node1 = await tables(redis_server.url, zs)
    node2 = await tables(redis_server.url, zs)
    agent = await tables(redis_server.url, zs)
    await agent.report("gslb.test", "fra", "eu-west", result("down", stale_after=30))
    await agent.report("gslb.test.", "iad", "eu-west", result("up", stale_after=30))
    await eventually_async(lambda: verdicts(node1, 0.5) == {"fra": "down", "iad": "up"})
    await eventually_async(lambda: dict(node2.view.sites) == dict(node1.view.sites))
    assert node1.backend_status()["connected"] is True


async def test_quorum_across_regions(redis_server: RedisServer, tables, tmp_path: Path) -> None:
    zs = zones(tmp_path)
    node = await tables(redis_server.url, zs)
    eu = await tables(redis_server.url, zs)
    us = await tables(redis_server.url, zs)
    # down in both regions: down whatever the quorum (the pool's when_all_down decides answers)
    await eu.report("gslb.test", "fra", "eu-west", result("down"))
    await us.report("gslb.test", "fra", "us-east", result("down"))
    await eventually_async(lambda: len(node.view.site(*FRA).regions) == 2)
    assert node.view.site(*FRA).state(0.5) == "down" and node.view.site(*FRA).state(0.4) == "down"
    # down in one of two: 1 of 2 is not more than half -> out with 0.5, in with 0.4
    await us.report("gslb.test", "fra", "us-east", result("up"))
    await eventually_async(lambda: node.view.site(*FRA).regions.get("us-east", result("down")).state == "up")
    assert node.view.site(*FRA).state(0.5) == "down"
    assert node.view.site(*FRA).state(0.4) == "up"
    # several agents of one region: one vote, the newest
    await eu.report("gslb.test", "fra", "eu-west", result("up"))
    await eventually_async(lambda: node.view.site(*FRA).state(0.5) == "up")
    assert set(node.view.site(*FRA).regions) == {"eu-west", "us-east"}


async def test_a_dead_agents_results_go_stale(redis_server: RedisServer, tables, tmp_path: Path) -> None:
    zs = zones(tmp_path)
    node = await tables(redis_server.url, zs)
    eu = await tables(redis_server.url, zs)
    us = await tables(redis_server.url, zs)
    await eu.report("gslb.test", "fra", "eu-west", result("down", stale_after=0.6))
    await us.report("gslb.test", "fra", "us-east", result("up", stale_after=30))
    await eventually_async(lambda: len(node.view.site(*FRA).regions) == 2)
    assert node.view.site(*FRA).state(0.5) == "down"
    await eu.close()  # the eu-west agent dies: its vote stops counting, quorum is recomputed
    await eventually_async(lambda: set(node.view.site(*FRA).regions) == {"us-east"})
    assert node.view.site(*FRA).state(0.5) == "up"


async def test_override_through_one_node_applies_on_the_other_and_survives_restart(
        redis_server: RedisServer, tables, tmp_path: Path) -> None:
    zs = zones(tmp_path)
    node1 = await tables(redis_server.url, zs)
    node2 = await tables(redis_server.url, zs)
    await node1.set_override("gslb.test", "iad", "drain")
    assert node1.view.site(*IAD).override == "drain"  # at once on the node that took it
    await eventually_async(lambda: node2.view.site(*IAD).override == "drain", timeout=1.0)
    await node1.close()
    await node2.close()
    restarted = await tables(redis_server.url, zs)
    assert restarted.view.site(*IAD).override == "drain"
    await restarted.set_override("gslb.test", "iad", "auto")
    assert restarted.view.site(*IAD).override is None


async def test_table_freezes_during_an_outage_and_converges_after(redis_server: RedisServer, tables,
                                                                   tmp_path: Path) -> None:
    zs = zones(tmp_path)
    node = await tables(redis_server.url, zs)
    agent = await tables(redis_server.url, zs)
    await agent.report("gslb.test", "fra", "eu-west", result("down", stale_after=0.8))
    await eventually_async(lambda: node.view.site(*FRA).state(0.5) == "down")
    redis_server.stop()
    await eventually_async(lambda: not node.backend_status()["connected"])
    # for longer than stale_after: frozen, so still known down throughout
    await holds_for_async(lambda: node.view.site(*FRA).state(0.5) == "down", 1.2, what="fra known down")
    # the agent keeps checking meanwhile; its latest result arrives once Redis is back
    await agent.report("gslb.test", "fra", "eu-west", result("up", stale_after=30))
    redis_server.start()
    await eventually_async(lambda: node.backend_status()["connected"], timeout=5.0)
    await eventually_async(lambda: node.view.site(*FRA).state(0.5) == "up")


# the checker agent -----------------------------------------------------------------------

async def test_checker_agent_reports_health_into_redis(redis_server: RedisServer, tables,
                                                        tmp_path: Path, caplog) -> None:
    from aiohttp import web

    from gslb.checker import run_checker
    from gslb.config import ServerConfig

    caplog.set_level(logging.INFO, logger="gslb.checker")
    healthy = {"ok": True}

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(status=200 if healthy["ok"] else 503, text="OK")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    zs = zones(tmp_path, port)
    stop = asyncio.Event()
    agent = asyncio.create_task(run_checker(ServerConfig(zones=str(tmp_path / "zones")), "eu-west",
                                            redis_server.url, stop))
    try:
        node = await tables(redis_server.url, zs)
        await eventually_async(lambda: node.view.site(*FRA).regions.get("eu-west") is not None
                         and node.view.site(*FRA).state(0.5) == "up", timeout=5.0)
        healthy["ok"] = False
        await eventually_async(lambda: node.view.site(*FRA).state(0.5) == "down", timeout=5.0)
        # a changed zone file is picked up within a second or two: iad loses its checks
        (tmp_path / "zones" / "test.yaml").write_text(
            ZONE.replace("PORT", str(port)).replace(
                "iad: {location: [38.95, -77.45], addresses: [127.0.0.1], checks: [web]}",
                "iad: {location: [38.95, -77.45], addresses: [127.0.0.1]}"))
        await eventually_async(lambda: "checker: now checking" in caplog.text, timeout=3.0)
        # SIGHUP forces a reload
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually_async(lambda: "SIGHUP, reloading zones" in caplog.text, timeout=3.0)
        # the agent stops: its results go stale after 3 x interval
        stop.set()
        await asyncio.wait_for(agent, 5.0)
        await eventually_async(lambda: node.view.site(*FRA).regions == {}, timeout=5.0)
        assert node.view.site(*FRA).state(0.5) == "unknown"
    finally:
        stop.set()
        if not agent.done():
            agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        await runner.cleanup()
