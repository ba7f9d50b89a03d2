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
