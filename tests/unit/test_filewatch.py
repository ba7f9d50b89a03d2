"""The file watch: stamps, the settle rule, FileWatch (what was read of one file), the poll loop."""

from __future__ import annotations

import asyncio
import os

from gslb.filewatch import FileWatch, file_stamp, settled, stamp_of

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


def test_settled():
    stamp = (1, 10**9, 5)
    # both: seen unchanged at the previous poll, and the mtime SETTLE_SECONDS (1 s) old
    assert settled(stamp, stamp, 2 * 10**9)
    assert not settled(stamp, stamp, 2 * 10**9 - 1)  # unchanged, but written less than 1 s ago
    assert not settled(stamp, None, 10**12)  # old, but not seen at the previous poll
    assert not settled(stamp, (1, 10**9, 4), 10**12)  # it changed since the previous poll
    assert not settled(stamp, (2, 10**9, 5), 10**12)  # replaced by another file


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


async def test_watch_ticks_wakes_survives_errors_and_stops():
    from gslb.filewatch import watch

    stop, wake = asyncio.Event(), asyncio.Event()
    calls: list[bool] = []

    async def tick(forced: bool) -> None:
        calls.append(forced)
        if len(calls) == 1:
            raise RuntimeError("a bug in one tick")  # logged; the watch goes on
        if len(calls) == 2:
            wake.set()
        if len(calls) == 3:
            stop.set()

    await asyncio.wait_for(watch(tick, stop, wake=wake, interval=0.01), 5)
    assert calls == [False, False, True] and not wake.is_set()
