"""The file watch: stamps, the settle rule, FileWatch (what was read of one file), the poll loop."""

from __future__ import annotations

import asyncio
import os

from gslb.filewatch import SETTLE_SECONDS, FileWatch, file_stamp, settled, stamp_of

S = int(1e9)
OLD = (7, 100 * S, 10)  # a version written long before "now" (settled once seen twice)
NEW = (7, 200 * S, 12)
NOW = 300 * S


def test_stamp_of_is_the_file_stamp_or_none(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    assert stamp_of(str(path)) == file_stamp(os.stat(path)) == (os.stat(path).st_ino, os.stat(path).st_mtime_ns, 1)
    assert stamp_of(str(tmp_path / "missing")) is None
    assert stamp_of(None) is None and stamp_of("") is None


def test_settled_needs_the_same_version_twice_and_an_old_enough_mtime():
    assert not settled(NEW, None, NOW)  # first sight
    assert settled(NEW, NEW, NOW)
    assert not settled(NEW, OLD, NOW)  # it changed since the previous poll
    fresh = (7, NOW - int(SETTLE_SECONDS * 1e9) + 1, 12)
    assert not settled(fresh, fresh, NOW)  # written less than SETTLE_SECONDS ago
    just = (7, NOW - int(SETTLE_SECONDS * 1e9), 12)
    assert settled(just, just, NOW)


def test_a_changed_version_is_due_once_it_settled_and_read_once():
    watch = FileWatch("f", OLD)
    assert not watch.due(OLD, NOW)  # the version in use
    assert not watch.due(NEW, NOW) and watch.pending == NEW  # seen once: wait a poll
    assert watch.due(NEW, NOW) and watch.pending is None
    watch.mark_loaded(NEW)
    assert (watch.stamp, watch.failed, watch.pending) == (NEW, None, None)
    assert not watch.due(NEW, NOW)


def test_without_settle_a_changed_version_is_due_at_once():
    watch = FileWatch("f", OLD)
    assert watch.due(NEW, NOW, settle=False)
    assert not FileWatch("f", NEW).due(NEW, NOW, settle=False)


def test_a_version_that_failed_is_not_read_again_until_it_changes():
    watch = FileWatch("f", OLD)
    watch.due(NEW, NOW)
    assert watch.due(NEW, NOW)
    watch.mark_failed(NEW)
    assert watch.stamp == OLD  # still the version in use
    assert not watch.changed(NEW) and not watch.due(NEW, NOW)
    # ... but the version in use written back (e.g. renamed back) is read again: the failure ends
    assert watch.changed(OLD)
    assert not watch.due(OLD, NOW) and watch.due(OLD, NOW)
    watch.mark_loaded(OLD)
    assert (watch.stamp, watch.failed) == (OLD, None)


def test_a_vanished_file_is_never_due_and_forgets_the_pending_version():
    watch = FileWatch("f", OLD)
    assert not watch.due(NEW, NOW) and watch.pending == NEW
    assert not watch.due(None, NOW) and watch.pending is None
    assert not watch.due(NEW, NOW)  # seen anew: it has to settle again
    assert FileWatch("f").changed(NEW) and not FileWatch("f").changed(None)


def test_the_poll_loop_ticks_until_stopped_and_at_once_when_woken():
    from gslb.filewatch import watch

    async def main() -> list[bool]:
        stop, wake = asyncio.Event(), asyncio.Event()
        ticks: list[bool] = []

        async def tick(forced: bool) -> None:
            ticks.append(forced)
            if len(ticks) == 1:
                raise RuntimeError("a failing tick is logged; the watch goes on")
            if forced:
                stop.set()
            else:
                wake.set()

        await asyncio.wait_for(watch(tick, stop, wake=wake, interval=0.001), timeout=30)
        return ticks

    assert asyncio.run(main()) == [False, False, True]
