"""Pure pieces of cluster mode outside gslb.redis_state: the state URL check and time display."""

from __future__ import annotations

import pytest

from gslb.config import check_state_url
from gslb.http_api import iso_time


@pytest.mark.parametrize("url", [
    "unix:///run/redis/redis.sock", "unix:///run/redis/redis.sock?db=3",
    "unix:///tmp/r.sock?db=0&password=x", "redis://127.0.0.1:6379/0", "rediss://h:6380/1", "memory://",
])
def test_state_urls_accepted(url: str) -> None:
    assert check_state_url(url) is None


@pytest.mark.parametrize("url, message", [
    ("unix://", "absolute socket path"),
    ("unix://relative.sock", "absolute socket path"),
    ("unix:///run/redis.sock?db=x", "the database must be a number"),
    ("http://x", "unix://"),
])
def test_state_urls_rejected(url: str, message: str) -> None:
    problem = check_state_url(url)
    assert problem is not None and message in problem


@pytest.mark.parametrize("ts", [1e300, -1e300, float("inf"), float("nan"), 1e20])
def test_iso_time_never_raises(ts: float) -> None:
    assert iso_time(ts) is None


def test_iso_time_in_range() -> None:
    assert iso_time(0.0) == "1970-01-01T00:00:00.000Z"


async def test_close_cancels_again_a_task_that_swallows_its_cancellation() -> None:
    import asyncio

    from gslb.redis_state import RedisBackend

    backend = RedisBackend("redis://127.0.0.1:1/0")
    swallowed = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:  # as redis-py does inside a command, once
                if swallowed:
                    raise
                swallowed.append(1)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    backend._task = task
    await backend.close()
    assert swallowed and task.done() and backend._task is None


def test_override_states_follow_the_model() -> None:
    from typing import get_args

    from gslb.model import Override
    from gslb.redis_state import decode_override
    from gslb.state import OVERRIDE_STATES

    assert OVERRIDE_STATES == (*get_args(Override), "auto")
    for state in get_args(Override):
        assert decode_override({"state": state, "set_at": 1.0}, now=2.0) == (state, 1.0)
    with pytest.raises(ValueError, match="up, down, drain"):
        decode_override({"state": "auto"}, now=2.0)


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_redis_backend_unreachable_from_the_start_has_no_outage() -> None:
    """The one outage clock's rule 1 in the backend that owns it: no connection yet, no freeze."""
    from gslb.redis_state import RedisBackend
    from gslb.state import OutageClock

    clock = _Clock(1000.0)
    backend = RedisBackend("redis://127.0.0.1:1/0", clock=clock, timeout=0.5, backoff_initial=5.0)
    await backend.start(lambda: None)
    try:
        assert not backend.connected and backend.errors >= 1
        assert backend.outage == OutageClock() and not backend.outage.frozen
    finally:
        await backend.close()


def test_redis_backend_notes_connects_and_disconnects_on_its_outage_clock() -> None:
    from gslb.model import RegionResult
    from gslb.redis_state import RedisBackend

    clock = _Clock(1000.0)
    backend = RedisBackend("redis://127.0.0.1:1/0", clock=clock)
    told: list[bool] = []
    backend._on_change = lambda: told.append(backend.connected)
    backend._set_connected(True)
    clock.now = 1010.0
    backend._set_connected(False)
    assert backend.outage.frozen and backend.outage.down_since == 1010.0
    result = RegionResult("down", 1000.0, stale_after=30.0)
    clock.now = 1500.0
    assert backend._expiry(result) == 1520.0  # the running outage does not count
    backend._set_connected(True)
    assert backend.outage.outages == ((1010.0, 1500.0),) and not backend.outage.frozen
    assert backend._expiry(result) == 1520.0
    assert told == [True, False, True]
