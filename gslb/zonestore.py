"""The zones folder: :class:`ZoneStore` reloads changed zone files and keeps each file's last good
zone, so a broken edit never takes a zone down; the serial state file; the folder checks.

Serial ``auto`` (:mod:`gslb.zonefile`) needs the version served before. Within a process it is
the one in memory. Across restarts ``gslb serve`` keeps it in a small state file in the zones
folder, ``.gslb-serials.json`` (``{"version": 1, "files": {FILE NAME: {"digest": SHA256,
"serial": N}}}``), rewritten atomically (temporary file + rename) whenever a served serial
changes. It is best effort: when the folder is not writable, one warning is logged and after a
restart the serial is the file's modification time again (as without the file); a corrupt state
file is ignored with a warning. ``gslb check`` and ``gslb explain`` neither read nor write it.
Dotfiles are never zone files.

In ``gslb serve`` a reload reads and builds in a worker thread (:func:`reload_in_thread`,
:meth:`ZoneStore.read`) and swaps the result in on the event loop (:meth:`ZoneStore.apply`), so
DNS keeps answering; replaced zones are freed piecewise in that thread later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

from gslb.errors import ConfigError, ConfigErrors, display_path
from gslb.filewatch import FileWatch, file_stamp, stamp_of
from gslb.model import Node, Zone, ZoneSet, iso_time
from gslb.yamlsafe import is_int
from gslb.zonefile import MAX_SERIAL, MAX_ZONE_FILE_BYTES, cannot_read, load_zone_file

logger = logging.getLogger(__name__)

__all__ = ["ZoneStore", "ZoneUpdate", "check_directory", "check_zones_folder", "reload_changed",
           "reload_in_thread"]


def _zone_files(directory: str) -> list[str]:
    """The zone files of ``directory``: ``*.yaml`` files and symbolic links (dangling or looping
    ones too, so that they get an error), dotfiles and folders left out."""
    names = sorted(n for n in os.listdir(directory) if n.endswith(".yaml") and not n.startswith("."))
    paths = [os.path.join(directory, n) for n in names]
    return [p for p in paths if os.path.isfile(p) or os.path.islink(p) and not os.path.isdir(p)]


@dataclass(slots=True)
class _FileState(FileWatch):
    """One zone file: its watch (the version in use is the one ``zone`` was built from) and zone."""

    zone: Zone | None = None
    loaded_at: float | None = None  # wall-clock seconds
    error: str | None = None
    #: the located errors of the last read (empty after a good one)
    errors: tuple[ConfigError, ...] = ()


#: the serial state file in the zones folder (module doc); a dotfile, so never a zone file
SERIAL_STATE_NAME = ".gslb-serials.json"


def read_serial_state(directory: str) -> dict[str, tuple[str, int]]:
    """File name -> (digest, serial) from the folder's state file; {} when absent or corrupt (warned)."""
    path = os.path.join(directory, SERIAL_STATE_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("zones: ignoring the serial state file %s: %s", path, exc)
        return {}
    out: dict[str, tuple[str, int]] = {}
    files = data.get("files") if isinstance(data, dict) and data.get("version") == 1 else None
    if not isinstance(files, dict):
        logger.warning("zones: ignoring the serial state file %s: not a gslb serial state (version 1)", path)
        return {}
    for name, entry in files.items():
        digest = entry.get("digest") if isinstance(entry, dict) else None
        serial = entry.get("serial") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not is_int(serial) or not 0 <= serial <= MAX_SERIAL:
            logger.warning("zones: ignoring the serial state file %s: bad entry for %r", path, name)
            return {}
        out[str(name)] = (digest, serial)
    return out


def write_serial_state(directory: str, entries: dict[str, tuple[str, int]]) -> None:
    """Write the folder's state file atomically (temporary file + rename); raises OSError."""
    path = os.path.join(directory, SERIAL_STATE_NAME)
    tmp = f"{path}.{os.getpid()}.tmp"
    data = {"version": 1, "files": {name: {"digest": d, "serial": n} for name, (d, n) in sorted(entries.items())}}
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@dataclass(slots=True)
class ZoneUpdate:
    """What one :meth:`ZoneStore.read` found, for :meth:`ZoneStore.apply` to put in place."""

    changed: list[str]
    errors: list[str]
    removed: list[str]
    #: every file's state after the read; None when the folder could not be listed (no change)
    files: dict[str, _FileState] | None
    #: the zones to serve from now on; None when they did not change
    zones: ZoneSet | None
    dir_error: str | None
    recorded: dict[str, tuple[str, int]] | None
    serial_state: bool
    #: the zones this update replaces or removes, with their nodes (see ZoneStore._release_retired)
    retired: list[tuple[Any, list[Node]]] = field(default_factory=list)

    def result(self) -> dict[str, list[str]]:
        """changed/errors/removed, as :meth:`ZoneStore.reload` returns them."""
        return {"changed": self.changed, "errors": self.errors, "removed": self.removed}


class ZoneStore:
    """The zone files of one folder: reloads changed files and keeps each file's last good zone.

    With ``serial_state`` (``gslb serve`` only) serial ``auto`` continues across restarts through
    the folder's ``.gslb-serials.json`` (module doc).

    A reload has two steps: :meth:`read` reads and validates the changed files and builds the new
    zones without changing anything that readers of the store see (``zones``, ``status()``), so
    it may run in a worker thread while another thread serves; :meth:`apply` then puts the result
    in place with plain assignments (``zones`` in one). One reload at a time: the caller
    serialises them (``gslb serve`` holds its reload lock).
    """

    def __init__(self, directory: str, serial_state: bool = False,
                 max_file_bytes: int | None = None) -> None:
        self.directory = directory
        #: files bigger than this are refused (``max_zone_file_bytes``)
        self.max_file_bytes = MAX_ZONE_FILE_BYTES if max_file_bytes is None else max_file_bytes
        #: the zones being served; replaced by one assignment when something changed
        self.zones: ZoneSet = ZoneSet()
        self._files: dict[str, _FileState] = {}
        self._dir_error: str | None = None
        self._serial_state = serial_state
        #: file name -> (digest, serial) as last recorded; None until read
        self._recorded: dict[str, tuple[str, int]] | None = None
        #: replaced zones (weak references) and their nodes, to free piecewise once unused
        self._retired: list[tuple[Any, list[Node]]] = []

    def reload(self, force: bool = False, settle: bool = False, now_ns: int | None = None
               ) -> dict[str, list[str]]:
        """Re-read new and changed files (all with ``force``); returns changed/errors/removed.

        A file is changed when its (inode, mtime, size) differs from the version last read, so
        a file replaced by rename is always seen. With ``settle`` (the file watch) a changed file
        is read only once it has settled (see :func:`gslb.filewatch.settled`): the same at the
        previous call and modified at least SETTLE_SECONDS before ``now_ns`` (wall clock, ns;
        default now). With a 1 s poll a change is applied within 2 s. A version that failed is
        not read again until it changes (:class:`gslb.filewatch.FileWatch`). The same as
        ``apply(read(...))``.
        """
        return self.apply(self.read(force, settle, now_ns))

    def apply(self, update: ZoneUpdate) -> dict[str, list[str]]:
        """Put in place what :meth:`read` found (``zones`` by one assignment); changed/errors/removed."""
        self._dir_error = update.dir_error
        self._recorded = update.recorded
        self._serial_state = update.serial_state
        self._retired.extend(update.retired)
        if update.files is not None:
            self._files = update.files
        if update.zones is not None:
            self.zones = update.zones
        return update.result()

    def read(self, force: bool = False, settle: bool = False, now_ns: int | None = None) -> ZoneUpdate:
        """Read and validate new and changed files, as :meth:`reload` does, for :meth:`apply`.

        Changes nothing that readers of the store see (it works on copies of the files' states);
        it does write the serial state file, when a served serial changes.
        """
        if now_ns is None:
            now_ns = time.time_ns()
        self._release_retired()
        changed: list[str] = []
        errors: list[str] = []
        removed: list[str] = []
        recorded, serial_state = self._recorded, self._serial_state
        try:
            paths = _zone_files(self.directory)
        except OSError as exc:
            msg = f"{self.directory}: cannot read the zones folder: {exc.strerror or exc}"
            repeated = msg == self._dir_error
            if not repeated:
                logger.error("zones: %s", msg)
            # Like a broken file, a lasting folder error is reported once, not on every poll.
            return ZoneUpdate([], [] if repeated and not force else [msg], [], None, None, msg,
                              recorded, serial_state)

        files = {path: replace(state) for path, state in self._files.items()}  # copies: see the doc
        replaced: list[Zone] = []
        for path in list(files):
            if path not in paths:
                state = files.pop(path)
                if state.zone is not None:
                    replaced.append(state.zone)
                    removed.append(state.zone.key)
                    logger.info("zones: %s removed (file %s deleted)", state.zone.key, path)
                elif state.error is not None:
                    logger.info("zones: %s: removed (it had errors and was not served)", display_path(path))

        if serial_state and recorded is None:
            recorded = read_serial_state(self.directory)
        known = recorded if recorded is not None else {}
        owners = {s.zone.origin: p for p, s in files.items() if s.zone is not None}
        for path in paths:
            state = files.setdefault(path, _FileState(path))
            try:
                st = os.stat(path)
            except OSError as exc:  # a dangling or looping symbolic link, or gone since listed
                self._unreadable(state, path, exc, errors, force or bool(removed))
                continue
            stamp = file_stamp(st)
            # After a removal, a file that failed (e.g. "zone already declared") may load now.
            retry = bool(removed) and state.error is not None
            if not force and not retry and not state.due(stamp, now_ns, settle):
                continue  # unchanged (its error, if any, stays in status()), or not settled yet
            old = state.zone
            was_broken = state.error is not None
            try:
                zone = load_zone_file(path, previous=old, recorded=known.get(os.path.basename(path)),
                                      max_bytes=self.max_file_bytes)
                owner = owners.get(zone.origin)
                if owner is not None and owner != path:
                    raise ConfigErrors([ConfigError(display_path(path), _zone_line(path), "zone",
                                                    f"zone {zone.key} is already declared in {display_path(owner)}")])
            except ConfigErrors as exc:
                state.mark_failed(stamp)
                state.error = str(exc)
                state.errors = tuple(exc.errors)
                errors.extend(str(e) for e in exc.errors)
                for e in exc.errors:
                    logger.debug("zones: %s", e)
                _log_not_applied(path, old)
                continue
            state.mark_loaded(stamp)
            state.error = None
            state.errors = ()
            unchanged = old is not None and old.digest == zone.digest and old.origin == zone.origin
            if was_broken:
                logger.info("zones: %s: fixed, serving serial %d", display_path(path),
                            old.serial if unchanged and old is not None else zone.serial)
            if unchanged:
                if zone is not old:
                    replaced.append(zone)  # the same content again: this copy is not used
                continue
            if old is not None and old.origin != zone.origin:
                removed.append(old.key)
                owners.pop(old.origin, None)
            if old is not None:
                replaced.append(old)
            state.zone = zone
            state.loaded_at = time.time()
            owners[zone.origin] = path
            changed.append(zone.key)
            logger.info("zones: %s loaded from %s (serial %d)", zone.key, path, zone.serial)

        removed = [k for k in removed if k not in changed]  # re-declared by another file
        if changed and serial_state:
            recorded, serial_state = self._record_serials(files, recorded)
        zones = None
        if changed or removed:
            zones = ZoneSet({s.zone.origin: s.zone for p, s in sorted(files.items())
                             if s.zone is not None and owners.get(s.zone.origin) == p})
        return ZoneUpdate(changed, errors, removed, files, zones, None, recorded, serial_state,
                          [_retire(zone) for zone in replaced])

    @staticmethod
    def _unreadable(state: _FileState, path: str, exc: OSError, errors: list[str], again: bool) -> None:
        """A listed file that cannot be stat'ed: one located error, kept in ``status()``.

        Reported when it first happens (or with ``again``), not on every poll; the file's zone,
        if it had one, keeps serving its last good version.
        """
        try:
            st = os.lstat(path)
        except OSError:
            return  # removed since the folder was listed: the next poll drops it
        stamp = (-st.st_ino, st.st_mtime_ns, -1)  # the link itself: a new link is reported anew
        if not state.changed(stamp) and not again:
            return
        state.mark_failed(stamp)
        error = ConfigError(display_path(path), None, "", cannot_read(path, exc))
        state.error, state.errors = str(error), (error,)
        errors.append(str(error))
        _log_not_applied(path, state.zone)

    def changed_on_disk(self) -> list[str]:
        """The files new, changed or removed since they were last read (for ``reload: manual``)."""
        try:
            paths = _zone_files(self.directory)
        except OSError:
            return []
        out = [p for p in self._files if p not in paths]
        for path in paths:
            state = self._files.get(path)
            stamp = stamp_of(path)
            if state is None or (stamp is not None and state.changed(stamp)):
                out.append(path)
        return sorted(out)

    def _release_retired(self) -> None:
        """Free the nodes of replaced zones nobody uses any more, a few at a time.

        A zone freed in one go (the last reference dropped, wherever that is: often the event
        loop) holds the GIL until its last record is freed, ~0.1 s for 100,000 records. So the
        store keeps each replaced zone's nodes and a weak reference to the zone: once the zone
        is gone (freeing it then only drops references), the nodes are freed here, in chunks,
        at the next read (the worker thread of the next poll in a server).
        """
        kept = []
        for ref, nodes in self._retired:
            if ref is None or ref() is None:
                while nodes:
                    del nodes[-256:]
            else:
                kept.append((ref, nodes))
        self._retired = kept

    def _record_serials(self, files: dict[str, _FileState], recorded: dict[str, tuple[str, int]] | None
                        ) -> tuple[dict[str, tuple[str, int]] | None, bool]:
        """Keep the served (digest, serial) of every file in the state file (best effort).

        Returns what is recorded now and whether to go on recording (False after a failed write).
        """
        if recorded is None:
            return recorded, True
        entries = dict(recorded)
        for path, st in files.items():
            if st.zone is not None:
                entries[os.path.basename(path)] = (st.zone.digest, st.zone.serial)
        if entries == recorded:
            return recorded, True
        try:
            write_serial_state(self.directory, entries)
        except OSError as exc:
            logger.warning("zones: cannot write %s (%s): after a restart serial auto is the files' "
                           "modification time again", os.path.join(self.directory, SERIAL_STATE_NAME),
                           exc.strerror or exc)
            return recorded, False  # warned once; the in-memory rule still holds
        return entries, True

    def status(self) -> list[dict[str, Any]]:
        """One entry per zone file: zone, serial, file, loaded_at (ISO 8601 UTC), error."""
        out = []
        for path, s in sorted(self._files.items()):
            out.append({
                "zone": s.zone.key if s.zone else None,
                "serial": s.zone.serial if s.zone else None,
                "file": path,
                "loaded_at": iso_time(s.loaded_at),
                "error": s.error,
            })
        return out


def reload_changed(store: ZoneStore, force: bool = False) -> dict[str, list[str]]:
    """``store.reload`` as the watch does it: changed files once settled, every file with ``force``."""
    return store.reload(force=force, settle=not force)


async def reload_in_thread(store: ZoneStore, force: bool = False) -> dict[str, list[str]]:
    """:func:`reload_changed` for a server: the files are read, validated and built in a worker
    thread, so the event loop goes on answering meanwhile, and the result is applied on the
    calling thread (the event loop): ``store.zones`` changes between two of its callbacks.

    Cancelled while the thread reads, it applies nothing (the next reload reads the files again).
    """
    update = await asyncio.to_thread(store.read, force, not force)
    return store.apply(update)


def _log_not_applied(path: str, old: Zone | None) -> None:
    """After a file's errors: what is served instead (its last good version, or nothing)."""
    if old is not None:
        logger.warning("zones: %s keeps serving serial %d from its last good version", old.key, old.serial)
    else:
        logger.info("zones: %s: not served (it has no good version yet)", display_path(path))


def _retire(zone: Zone) -> tuple[Any, list[Node]]:
    """(weak reference to ``zone`` or None, its nodes) for ZoneStore._release_retired."""
    try:
        ref = weakref.ref(zone)
    except TypeError:  # a Zone without weak references: nothing to wait for
        return None, []
    return ref, list(zone.nodes.values())


def _zone_line(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if line.startswith("zone:"):
                    return i
    except OSError:
        return None
    return None


def check_zones_folder(path: str, setting: str = "zones") -> str | None:
    """Why ``path`` cannot be the zones folder (missing, not a folder), or None.

    The message starts with ``setting``, the place to fix it (``zones`` or ``--zones``).
    """
    if not os.path.exists(path):
        return f"{setting}: the folder {path} does not exist"
    if not os.path.isdir(path):
        return f"{setting}: {path} is not a folder"
    return None


def check_directory(directory: str, max_file_bytes: int | None = None) -> list[ConfigError]:
    """Every error of every zone file in ``directory`` (for ``gslb check``), as ZoneStore finds them."""
    try:
        paths = _zone_files(directory)
    except OSError as exc:
        return [ConfigError(directory, None, "", f"cannot read the zones folder: {exc.strerror or exc}")]
    if not paths:
        return [ConfigError(directory, None, "", "no zone files (*.yaml) in this folder")]
    store = ZoneStore(directory, max_file_bytes=max_file_bytes)
    result = store.reload(force=True)
    errors = [e for _, state in sorted(store._files.items()) for e in state.errors]
    # Only when the folder became unreadable since it was listed above: the store's message.
    return errors or [ConfigError(directory, None, "", e.partition(": ")[2]) for e in result["errors"]]
