"""The file watch: which version of a file is on disk (:data:`Stamp`), when a changed one may be
read (:func:`settled`), what was read of one file (:class:`FileWatch`: the zone files of
:class:`gslb.zonestore.ZoneStore`, the GeoIP database of :class:`gslb.app.Server`), and the poll
loop of ``gslb serve`` and ``gslb checker`` (:func:`watch`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

logger = logging.getLogger(__name__)

__all__ = ["Stamp", "FileWatch", "file_stamp", "stamp_of", "settled", "watch", "SETTLE_SECONDS",
           "WATCH_SECONDS"]


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


def stamp_of(path: str | None) -> Stamp | None:
    """The :func:`file_stamp` of ``path`` on disk; None without a path or when it cannot be stat'ed."""
    if not path:
        return None
    try:
        return file_stamp(os.stat(path))
    except OSError:
        return None


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


@dataclass(slots=True)
class FileWatch:
    """What the watch knows of one file: the version in use, the last one that failed, and a
    changed one seen at the previous poll.

    Each poll asks :meth:`due` with the version on disk; the reader then records the outcome with
    :meth:`mark_loaded` or :meth:`mark_failed`. A version is read once: one that failed is not
    read again until it changes (a forced reload reads whatever the watch says).
    """

    path: str
    #: the version in use: the last one read without an error
    stamp: Stamp | None = None
    #: the version last read when that read failed (None after a good read)
    failed: Stamp | None = None
    #: a changed version seen at the previous poll, not read yet (see :func:`settled`)
    pending: Stamp | None = None

    def changed(self, stamp: Stamp | None) -> bool:
        """Whether ``stamp`` (the version on disk) is not the version last read, good or failed."""
        return stamp != (self.stamp if self.failed is None else self.failed)

    def due(self, stamp: Stamp | None, now_ns: int, settle: bool = True) -> bool:
        """Whether to read the version ``stamp`` now: changed and (with ``settle``) settled.

        A changed version that has not settled yet becomes ``pending``; ``stamp`` None (the
        file is gone or cannot be stat'ed) is never due.
        """
        if stamp is None or not self.changed(stamp):
            self.pending = None
            return False
        if settle and not settled(stamp, self.pending, now_ns):
            self.pending = stamp  # maybe still being written: look again next poll
            return False
        self.pending = None
        return True

    def mark_loaded(self, stamp: Stamp | None) -> None:
        """The version ``stamp`` was read and is in use now."""
        self.stamp, self.failed, self.pending = stamp, None, None

    def mark_failed(self, stamp: Stamp) -> None:
        """Reading the version ``stamp`` failed: the version in use stays; it is not read again
        until it changes."""
        self.failed, self.pending = stamp, None


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
        if forced and wake is not None:
            wake.clear()
        try:
            await tick(forced)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let the watch die
            logger.exception("zones: reload failed")
