"""The file watch: which version of a file is on disk (:data:`Stamp`), when a changed one may be
read (:func:`settled`), and the poll loop of ``gslb serve`` and ``gslb checker`` (:func:`watch`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Awaitable, Callable

logger = logging.getLogger(__name__)

__all__ = ["Stamp", "file_stamp", "settled", "watch", "SETTLE_SECONDS", "WATCH_SECONDS"]


#: a changed file is read once its modification time is at least this old (and it was seen
#: unchanged at the previous poll: :func:`settled`)
SETTLE_SECONDS = 1.0
#: how often the file watch polls (SPEC: a change is applied within 2 s)
WATCH_SECONDS = 1.0

#: what identifies one version of a file for the watch: (st_ino, st_mtime_ns, st_size)
Stamp = tuple[int, int, int]


def file_stamp(st: os.stat_result) -> Stamp:
    """The watch's identity of a file version: inode (rename-replaced files), mtime, size."""
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def settled(stamp: Stamp, pending: Stamp | None, now_ns: int) -> bool:
    """Whether a changed file may be read: seen unchanged at the previous poll (``pending``) and
    its mtime at least SETTLE_SECONDS before ``now_ns``.

    A file still being written (copied in place, streamed by a deploy tool) changes between
    polls; reading it then would report an error for a half-written file, or serve it when the
    writer paused at a point that is valid YAML. Both conditions: a pause must last a full poll
    interval and SETTLE_SECONDS for a half-written file to be read (with a 1 s poll a change is
    read 1-2 s after the last write). Only writing a copy and renaming it over the file (the
    README's advice) is safe whatever the writer's pauses.
    """
    return stamp == pending and now_ns - stamp[1] >= int(SETTLE_SECONDS * 1e9)


async def watch(tick: Callable[[bool], Awaitable[Any]], stop: asyncio.Event, *,
                wake: asyncio.Event | None = None, interval: float = WATCH_SECONDS) -> None:
    """The file watch of ``gslb serve`` and ``gslb checker``: ``await tick(forced)`` until ``stop``.

    ``tick(False)`` runs every ``interval`` seconds and should call ``ZoneStore.reload(settle=True)``
    (see :func:`gslb.zonestore.reload_changed`); ``tick(True)`` runs at once when ``wake`` is set (SIGHUP). An
    exception in ``tick`` is logged and the watch goes on.
    """
    while not stop.is_set():
        waits = [asyncio.ensure_future(stop.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if stop.is_set():
            return
        forced = wake is not None and wake.is_set()
        if forced:
            wake.clear()  # type: ignore[union-attr]
        try:
            await tick(forced)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let the watch die
            logger.exception("zones: reload failed")
