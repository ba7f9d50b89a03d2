"""The harness's waiting helpers: ``eventually`` returns as soon as it holds, ``holds_for`` fails as
soon as it does not; the async pair behaves the same inside an event loop."""

from __future__ import annotations

import itertools

import pytest

from harness import eventually, eventually_async, holds_for, holds_for_async


def counter():
    """A predicate source: successive calls give 1, 2, 3, ..."""
    return itertools.count(1).__next__


def test_eventually_returns_the_first_true_value():
    calls = counter()
    assert eventually(lambda: (n := calls()) >= 3 and n, interval=0) == 3


def test_eventually_fails_with_what_and_the_last_value():
    with pytest.raises(AssertionError, match=r"the thing did not hold within 0.05s \(last: 0\)"):
        eventually(lambda: 0, timeout=0.05, interval=0.01, what="the thing")


def test_eventually_ignores_only_the_named_exceptions():
    calls = counter()

    def flaky() -> int:
        n = calls()
        if n < 3:
            raise KeyError(n)
        return n

    assert eventually(flaky, interval=0, ignoring=(KeyError,)) == 3
    with pytest.raises(KeyError):
        eventually(lambda: {}["x"], timeout=1)


def test_holds_for_checks_until_the_duration_is_over():
    calls = counter()
    holds_for(lambda: calls(), 0.05, interval=0.01)
    assert calls() > 3  # looked several times, not once


def test_holds_for_fails_at_the_first_false_value():
    calls = counter()
    with pytest.raises(AssertionError, match=r"the state stopped holding \(got False\)"):
        holds_for(lambda: calls() < 3, 10, interval=0, what="the state")
    assert calls() == 4  # stopped right there, did not wait out the 10 s


async def test_the_async_pair_behaves_the_same():
    calls = counter()
    assert await eventually_async(lambda: (n := calls()) >= 3 and n, interval=0) == 3
    with pytest.raises(AssertionError, match="did not hold"):
        await eventually_async(lambda: None, timeout=0.05, interval=0.01)
    await holds_for_async(lambda: True, 0.05, interval=0.01)
    with pytest.raises(AssertionError, match="stopped holding"):
        await holds_for_async(lambda: calls() < 6, 10, interval=0)


async def test_eventually_async_awaits_a_coroutine_predicate():
    calls = []

    async def ready() -> str | None:
        calls.append(1)
        return "yes" if len(calls) >= 3 else None

    assert await eventually_async(ready, timeout=5, interval=0) == "yes"
    assert len(calls) == 3
