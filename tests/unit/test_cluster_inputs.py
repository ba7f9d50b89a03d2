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
