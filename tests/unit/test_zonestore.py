"""The zones folder: ZoneStore (last good version, settle, renames, read/apply, reads off the event
loop, replaced zones freed later, size limit, links), check_directory, the serial state file
across restarts, reload_changed."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from harness import small_zone

import gslb.zonestore as zonestore
from gslb.model import ZoneSet
from gslb.zonestore import ZoneStore, check_directory

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# ZoneStore and check_directory


def zone_text(name: str, extra: str = "") -> str:
    return small_zone(name, extra, ns_address="192.0.2.1")


def test_store_loads_keeps_last_good_and_reports(tmp_path):
    (tmp_path / "a.yaml").write_text(zone_text("a.example"))
    (tmp_path / "b.yaml").write_text(zone_text("b.example"))
    (tmp_path / "notes.txt").write_text("not a zone")
    (tmp_path / ".#a.yaml").write_text("editor lock file")
    store = ZoneStore(str(tmp_path))
    result = store.reload()
    assert sorted(result["changed"]) == ["a.example", "b.example"] and result["errors"] == []
    zones = store.zones
    assert isinstance(zones, ZoneSet) and len(zones) == 2
    assert zones.find("www.a.example.") is zones.by_key("a.example")

    # nothing changed: same object, nothing reported
    assert store.reload() == {"changed": [], "errors": [], "removed": []}
    assert store.zones is zones

    # a broken edit keeps the last good zone and reports the error with file:line
    good = zones.by_key("a.example")
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.999}\n"))
    os.utime(path, ns=(good_mtime := os.stat(path).st_mtime_ns + 10**9, good_mtime))
    result = store.reload()
    assert result["changed"] == [] and len(result["errors"]) == 1
    assert result["errors"][0].startswith(f"{path}:5: records.www.A: ")
    assert store.zones is zones and store.zones.by_key("a.example") is good
    status = {s["file"]: s for s in store.status()}
    assert status[str(path)]["zone"] == "a.example" and "192.0.2.999" in status[str(path)]["error"]
    assert status[str(tmp_path / "b.yaml")]["error"] is None
    assert set(status[str(path)]) == {"zone", "serial", "file", "loaded_at", "error"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", status[str(path)]["loaded_at"])  # as http_api

    # fixing it swaps in a new zone with a larger serial and clears the error
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    os.utime(path, ns=(good_mtime + 10**9, good_mtime + 10**9))
    result = store.reload()
    assert result == {"changed": ["a.example"], "errors": [], "removed": []}
    new = store.zones.by_key("a.example")
    assert store.zones is not zones and new.serial > good.serial and "www.a.example." in new.nodes
    assert store.zones.by_key("b.example") is zones.by_key("b.example")
    assert all(s["error"] is None for s in store.status())

    # deleting a file removes its zone
    (tmp_path / "b.yaml").unlink()
    result = store.reload()
    assert result["removed"] == ["b.example"] and store.zones.by_key("b.example") is None
    assert [s["zone"] for s in store.status()] == ["a.example"]


def test_store_force_rereads_unchanged_files(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    store.reload()
    zones = store.zones
    stat = os.stat(path)
    path.write_text(zone_text("a.example").replace("192.0.2.1", "192.0.2.7"))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.reload()["changed"] == []  # same mtime and size: not noticed ...
    assert store.reload(force=True)["changed"] == ["a.example"]  # ... unless forced
    assert store.zones is not zones


def test_store_same_zone_in_two_files(tmp_path):
    (tmp_path / "a.yaml").write_text(zone_text("a.example"))
    (tmp_path / "b.yaml").write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    result = store.reload()
    assert result["changed"] == ["a.example"]
    assert result["errors"] == [f"{tmp_path / 'b.yaml'}:1: zone: zone a.example is already declared in {tmp_path / 'a.yaml'}"]
    assert store.zones.by_key("a.example").file == str(tmp_path / "a.yaml")
    errors = [str(e) for e in check_directory(str(tmp_path))]
    assert errors == result["errors"]


def test_store_broken_file_that_never_loaded(tmp_path):
    (tmp_path / "a.yaml").write_text("zone: a.example\n")
    store = ZoneStore(str(tmp_path))
    result = store.reload()
    assert result["changed"] == [] and len(result["errors"]) == 1 and len(store.zones) == 0
    assert store.status() == [{"zone": None, "serial": None, "file": str(tmp_path / "a.yaml"),
                               "loaded_at": None, "error": result["errors"][0]}]


def test_store_missing_directory(tmp_path):
    store = ZoneStore(str(tmp_path / "nope"))
    result = store.reload()
    assert result["changed"] == [] and "cannot read the zones folder" in result["errors"][0]


def test_store_missing_directory_reported_once_per_change(tmp_path):
    # regression: the file watch logged the same folder error every second
    store = ZoneStore(str(tmp_path / "nope"))
    assert len(store.reload()["errors"]) == 1
    assert store.reload()["errors"] == []
    assert len(store.reload(force=True)["errors"]) == 1  # an explicit reload still reports it
    (tmp_path / "nope").mkdir()
    (tmp_path / "nope" / "a.yaml").write_text(zone_text("a.example"))
    assert store.reload() == {"changed": ["a.example"], "errors": [], "removed": []}
    (tmp_path / "nope" / "a.yaml").unlink()
    (tmp_path / "nope").rmdir()
    assert len(store.reload()["errors"]) == 1  # a new failure is reported again


def test_check_directory(tmp_path):
    assert "no zone files" in str(check_directory(str(tmp_path))[0])
    (tmp_path / "a.yaml").write_text(zone_text("a.example", "  www: {A: 1.2.3}\n  ftp: {AAAA: x}\n"))
    (tmp_path / "b.yaml").write_text("zone: b.example\n")
    errors = [str(e) for e in check_directory(str(tmp_path))]
    assert len(errors) == 3
    assert errors[0].startswith(f"{tmp_path / 'a.yaml'}:5: records.www.A: ")
    assert errors[2].startswith(f"{tmp_path / 'b.yaml'}:1: ns: missing required key 'ns'")
    assert check_directory(str(ROOT / "zones")) == []


def test_store_second_file_takes_over_when_the_first_is_deleted(tmp_path):
    (tmp_path / "a.yaml").write_text(zone_text("a.example"))
    (tmp_path / "b.yaml").write_text(zone_text("a.example", "  www: {A: 192.0.2.5}\n"))
    store = ZoneStore(str(tmp_path))
    assert len(store.reload()["errors"]) == 1
    (tmp_path / "a.yaml").unlink()
    result = store.reload()
    assert result["changed"] == ["a.example"] and result["errors"] == []
    zone = store.zones.by_key("a.example")
    assert zone.file == str(tmp_path / "b.yaml") and "www.a.example." in zone.nodes


def test_store_sees_a_file_replaced_by_rename_with_the_same_mtime_and_size(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    store.reload()
    st = os.stat(path)
    new = tmp_path / ".a.yaml.tmp"
    new.write_text(zone_text("a.example").replace("192.0.2.1", "192.0.2.7"))  # same size
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, path)
    assert os.stat(path).st_ino != st.st_ino
    assert store.reload()["changed"] == ["a.example"]
    records = store.zones.by_key("a.example").nodes["ns1.a.example."].records["A"]
    assert [r.rdata for r in records] == ["192.0.2.7"]


def test_store_settle_waits_for_a_fresh_file_to_stop_changing(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    mtime = os.stat(path).st_mtime_ns
    store = ZoneStore(str(tmp_path))
    # just written: not read at the first poll, nor at the next before SETTLE_SECONDS passed,
    # read once unchanged at the previous poll and SETTLE_SECONDS old
    assert store.reload(settle=True, now_ns=mtime + 100_000_000) == {"changed": [], "errors": [], "removed": []}
    assert len(store.zones) == 0
    assert store.reload(settle=True, now_ns=mtime + 999_000_000)["changed"] == []
    assert store.reload(settle=True, now_ns=mtime + 10**9)["changed"] == ["a.example"]
    # a file still growing between polls waits; its errors are not reported meanwhile
    path.write_text("zone: a.example\nns: [ns1")  # half written
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    assert store.reload(settle=True, now_ns=mtime + 10**9 + 1000)["errors"] == []
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    os.utime(path, ns=(mtime + 2 * 10**9, mtime + 2 * 10**9))
    assert store.reload(settle=True, now_ns=mtime + 2 * 10**9 + 1000) == {"changed": [], "errors": [], "removed": []}
    result = store.reload(settle=True, now_ns=mtime + 3 * 10**9)  # stable for one poll and 1 s old
    assert result == {"changed": ["a.example"], "errors": [], "removed": []}
    # a change whose mtime is old already still waits for a second poll (a writer that paused
    # at a point that is valid YAML is not read at once)
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.10}\n"))
    os.utime(path, ns=(mtime + 3 * 10**9, mtime + 3 * 10**9))
    assert store.reload(settle=True, now_ns=mtime + 5 * 10**9)["changed"] == []
    assert store.reload(settle=True, now_ns=mtime + 6 * 10**9)["changed"] == ["a.example"]
    # a forced reload never waits
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.11}\n"))
    assert store.reload(force=True, settle=True, now_ns=0)["changed"] == ["a.example"]


# ---------------------------------------------------------------------------------------------
# Serial auto across restarts: the folder's .gslb-serials.json (gslb serve only)


def _serial_of(folder: Path, key: str = "a.example", serial_state: bool = True) -> int:
    store = ZoneStore(str(folder), serial_state=serial_state)  # a new store: a restart
    store.reload(force=True)
    return store.zones.by_key(key).serial


def _set_mtime(path: Path, t: int) -> None:
    os.utime(path, (t, t))


def test_serial_state_restored_older_file_still_increases_after_a_restart(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    _set_mtime(path, 1_700_000_000)
    old_copy = path.read_text()
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    _set_mtime(path, 1_800_000_000)
    assert _serial_of(tmp_path) == 1_800_000_000
    state = json.loads((tmp_path / ".gslb-serials.json").read_text())
    assert state["version"] == 1 and state["files"]["a.yaml"]["serial"] == 1_800_000_000
    # a backup with its old mtime comes back (cp -p, rsync -t, tar x), then a restart
    path.write_text(old_copy)
    _set_mtime(path, 1_700_000_000)
    assert _serial_of(tmp_path) == 1_800_000_001
    # the same content touched: the recorded serial, also after another restart
    _set_mtime(path, 1_750_000_000)
    assert _serial_of(tmp_path) == 1_800_000_001
    # a later edit with a later mtime: the mtime
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.10}\n"))
    _set_mtime(path, 1_900_000_000)
    assert _serial_of(tmp_path) == 1_900_000_000
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_serial_state_several_edits_within_one_second(tmp_path):
    path = tmp_path / "a.yaml"
    serials = []
    for i in range(3):
        path.write_text(zone_text("a.example", f"  www: {{A: 192.0.2.{i + 1}}}\n"))
        _set_mtime(path, 1_700_000_000)
        serials.append(_serial_of(tmp_path))
    assert serials == [1_700_000_000, 1_700_000_001, 1_700_000_002]


def test_serial_state_live_reload_records_too(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    _set_mtime(path, 1_700_000_000)
    store = ZoneStore(str(tmp_path), serial_state=True)
    store.reload()
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    _set_mtime(path, 1_600_000_000)
    store.reload()
    assert store.zones.by_key("a.example").serial == 1_700_000_001
    assert _serial_of(tmp_path) == 1_700_000_001


def test_serial_state_only_when_asked(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    _set_mtime(path, 1_700_000_000)
    assert _serial_of(tmp_path, serial_state=False) == 1_700_000_000
    assert check_directory(str(tmp_path)) == []
    assert os.listdir(tmp_path) == ["a.yaml"]  # neither the store without it nor check writes


def test_serial_state_corrupt_file_is_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    _set_mtime(path, 1_700_000_000)
    for bad in ("{not json", '{"version": 1, "files": {"a.yaml": {"digest": 1, "serial": "x"}}}', "[]"):
        (tmp_path / ".gslb-serials.json").write_text(bad)
        caplog.clear()
        with caplog.at_level("WARNING", logger="gslb.zonestore"):
            assert _serial_of(tmp_path) == 1_700_000_000
        assert any("ignoring the serial state file" in r.getMessage() for r in caplog.records), bad
    # and it was replaced by a good one
    assert json.loads((tmp_path / ".gslb-serials.json").read_text())["files"]["a.yaml"]["serial"] == 1_700_000_000
    assert check_directory(str(tmp_path)) == []  # a dotfile is never a zone file


def test_serial_state_unwritable_folder_warns_once(tmp_path, caplog, monkeypatch):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    _set_mtime(path, 1_700_000_000)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(zonestore, "write_serial_state", refuse)
    store = ZoneStore(str(tmp_path), serial_state=True)
    with caplog.at_level("WARNING", logger="gslb.zonestore"):
        store.reload()
        for i in range(3):
            path.write_text(zone_text("a.example", f"  www: {{A: 192.0.2.{i + 1}}}\n"))
            _set_mtime(path, 1_700_000_000)
            store.reload(force=True)  # same size and mtime: the watch would not see it
    warnings = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1 and "Permission denied" in warnings[0]
    assert store.zones.by_key("a.example").serial == 1_700_000_003  # the in-process rule still holds


def test_check_zones_folder_names_the_setting(tmp_path):
    from gslb.zonestore import check_zones_folder

    assert check_zones_folder(str(tmp_path)) is None
    assert check_zones_folder(str(tmp_path / "nope")) == f"zones: the folder {tmp_path / 'nope'} does not exist"
    (tmp_path / "f").write_text("")
    assert check_zones_folder(str(tmp_path / "f"), "--zones") == f"--zones: {tmp_path / 'f'} is not a folder"


def test_reload_changed_waits_for_a_file_to_settle(tmp_path):
    from gslb.zonestore import reload_changed

    store = ZoneStore(str(tmp_path))
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example", ""))
    assert reload_changed(store)["changed"] == []  # just written: maybe still being written
    old = time.time() - 2
    os.utime(path, (old, old))  # as if written 2 s ago: settled at the next poll
    assert reload_changed(store)["changed"] == []  # changed (mtime) since the last poll
    assert reload_changed(store)["changed"] == ["a.example"]  # unchanged since the last poll, old
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    assert reload_changed(store, force=True)["changed"] == ["a.example"]  # forced: read at once


def test_the_good_version_renamed_back_over_a_broken_one_is_read_again(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    assert store.reload()["changed"] == ["a.example"]
    os.rename(path, tmp_path / "a.yaml.kept")  # the good version (same inode, mtime, size) ...
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.999}\n"))
    assert len(store.reload()["errors"]) == 1
    assert store.reload()["errors"] == []  # a broken version is reported once
    os.rename(tmp_path / "a.yaml.kept", path)  # ... back: the version in use, but not the last read
    assert store.reload() == {"changed": [], "errors": [], "removed": []}
    assert store.status()[0]["error"] is None and store.zones.by_key("a.example").serial > 0


# ---------------------------------------------------------------------------------------------
# Reads off the event loop, replaced zones freed later, the size limit, links


def test_store_read_changes_nothing_until_apply(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    store.reload()
    zones, status = store.zones, store.status()
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    update = store.read(force=True)
    assert update.changed == ["a.example"]
    assert store.zones is zones and store.status() == status  # readers see the old version ...
    assert store.apply(update) == {"changed": ["a.example"], "errors": [], "removed": []}
    assert store.zones is not zones and "www.a.example." in store.zones.by_key("a.example").nodes  # ... then the new


def test_replaced_zones_are_freed_at_a_later_read_once_unused(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    store.reload()
    old = store.zones.by_key("a.example")
    path.write_text(zone_text("a.example", "  www: {A: 192.0.2.9}\n"))
    store.reload(force=True)
    assert len(store._retired) == 1
    store.reload()
    assert len(store._retired) == 1  # still used (by ``old``)
    del old
    store.reload()
    assert store._retired == []


async def test_reload_in_thread_reads_off_the_event_loop(tmp_path, monkeypatch):
    import asyncio
    import threading

    from gslb.zonestore import reload_in_thread

    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    loop_thread = threading.current_thread()
    go = threading.Event()
    read = store.read

    def blocked_read(*args: object) -> object:
        assert threading.current_thread() is not loop_thread
        assert go.wait(30), "the event loop did not run while the files were read"
        return read(*args)

    monkeypatch.setattr(store, "read", blocked_read)
    reload = asyncio.ensure_future(reload_in_thread(store, force=True))
    await asyncio.sleep(0)
    assert not reload.done() and len(store.zones) == 0
    go.set()  # only a running event loop gets here while the read waits
    assert (await reload)["changed"] == ["a.example"]
    assert store.zones.by_key("a.example") is not None


def test_the_store_applies_its_size_limit_and_keeps_the_last_good_version(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path), max_file_bytes=2048)
    assert store.reload()["changed"] == ["a.example"]
    path.write_text(zone_text("a.example", "  big: {TXT: " + "x" * 3000 + "}\n"))
    result = store.reload()
    assert result["changed"] == [] and len(result["errors"]) == 1
    assert "larger than the limit 2048" in result["errors"][0]
    assert store.zones.by_key("a.example") is not None
    [entry] = store.status()
    assert entry["zone"] == "a.example" and "larger than the limit 2048" in entry["error"]
    errors = check_directory(str(tmp_path), max_file_bytes=2048)
    assert [e.message for e in errors] == [
        f"file is {path.stat().st_size} bytes, larger than the limit 2048 (max_zone_file_bytes in the server file)"]


def test_dangling_and_looping_links_are_located_errors(tmp_path):
    (tmp_path / "a.yaml").write_text(zone_text("a.example"))
    os.symlink(tmp_path / "nowhere.yaml", tmp_path / "dangling.yaml")
    os.symlink(tmp_path / "loop2.yaml", tmp_path / "loop1.yaml")
    os.symlink(tmp_path / "loop1.yaml", tmp_path / "loop2.yaml")
    store = ZoneStore(str(tmp_path))
    result = store.reload()
    assert result["changed"] == ["a.example"]
    assert result["errors"] == [
        f"{tmp_path}/dangling.yaml: cannot read: No such file or directory "
        f"(a symbolic link to {tmp_path}/nowhere.yaml, which does not exist)",
        f"{tmp_path}/loop1.yaml: cannot read: Too many levels of symbolic links "
        f"(a symbolic link to {tmp_path}/loop2.yaml that loops)",
        f"{tmp_path}/loop2.yaml: cannot read: Too many levels of symbolic links "
        f"(a symbolic link to {tmp_path}/loop1.yaml that loops)",
    ]
    status = {os.path.basename(e["file"]): e for e in store.status()}
    assert status["dangling.yaml"]["zone"] is None and "does not exist" in status["dangling.yaml"]["error"]
    assert "loops" in status["loop1.yaml"]["error"]
    # reported once, not at every poll; again with a forced reload
    assert store.reload()["errors"] == []
    assert len(store.reload(force=True)["errors"]) == 3
    assert [e.message.split(" (")[0] for e in check_directory(str(tmp_path))] == [
        "cannot read: No such file or directory", "cannot read: Too many levels of symbolic links",
        "cannot read: Too many levels of symbolic links"]
    # the target appears: the link loads
    (tmp_path / "nowhere.yaml").write_text(zone_text("b.example"))
    os.rename(tmp_path / "nowhere.yaml", tmp_path / "target.yml")  # not a *.yaml: only via the link
    os.unlink(tmp_path / "dangling.yaml")
    os.symlink(tmp_path / "target.yml", tmp_path / "dangling.yaml")
    result = store.reload()
    assert result["changed"] == ["b.example"]
    assert {os.path.basename(e["file"]): e["error"] for e in store.status()}["dangling.yaml"] is None


def test_a_link_that_breaks_keeps_its_zone_last_good_version(tmp_path):
    target = tmp_path / "real.yml"
    target.write_text(zone_text("a.example"))
    os.symlink(target, tmp_path / "a.yaml")
    store = ZoneStore(str(tmp_path))
    assert store.reload()["changed"] == ["a.example"]
    target.unlink()
    result = store.reload()
    assert len(result["errors"]) == 1 and "which does not exist" in result["errors"][0]
    assert result["removed"] == [] and store.zones.by_key("a.example") is not None
    [entry] = store.status()
    assert entry["zone"] == "a.example" and "which does not exist" in entry["error"]


def test_changed_on_disk_lists_what_a_reload_would_read(tmp_path):
    (tmp_path / "a.yaml").write_text(zone_text("a.example"))
    store = ZoneStore(str(tmp_path))
    assert store.changed_on_disk() == [str(tmp_path / "a.yaml")]
    store.reload(force=True)
    assert store.changed_on_disk() == []
    (tmp_path / "b.yaml").write_text(zone_text("b.example"))
    (tmp_path / "a.yaml").write_text(zone_text("a.example", "  www: {A: 192.0.2.2}\n"))
    assert store.changed_on_disk() == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    store.reload(force=True)
    (tmp_path / "b.yaml").unlink()
    assert store.changed_on_disk() == [str(tmp_path / "b.yaml")]
