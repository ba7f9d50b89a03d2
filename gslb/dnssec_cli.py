"""``gslb dnssec keygen|ds|rollover|retire ZONE``: a zone's key files, one command per step.

The zone's file is found in the zones folder by its ``zone:`` name; its ``dnssec:`` block says the
algorithm and the key file (``gslb.dnssec`` documents the ``.next`` and ``.old`` siblings). Every
command that changes a key file touches the zone file afterwards, so a running ``gslb serve``
(which watches the folder) reloads the zone with its new keys within a few seconds.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any

from gslb.dnssec import (DnssecSpec, KeyFileError, ds_text, generate_private_key, key_paths, load_keys,
                         parse_dnssec_block, write_key_file)
from gslb.errors import ConfigErrors
from gslb.yamlsafe import Errors, Fields, LineDict, load_yaml

EXIT_OK, EXIT_INVALID = 0, 1


def find_zone(zones_dir: str, zone: str) -> tuple[str, DnssecSpec | None, list[str]]:
    """(zone file, its dnssec: block or None, errors) for the zone named ``zone`` in ``zones_dir``."""
    wanted = zone.lower().rstrip(".") + "."
    for path in sorted(glob.glob(os.path.join(zones_dir, "*.yaml"))):
        try:
            with open(path, "rb") as fh:
                data = load_yaml(fh.read().decode("utf-8", "replace"), path)
        except (OSError, ConfigErrors):
            continue
        if not isinstance(data, LineDict) or not isinstance(data.get("zone"), str):
            continue
        name = data["zone"].strip().lower().rstrip(".") + "."
        if name != wanted:
            continue
        err = Errors(path)
        spec = parse_dnssec_block(err, Fields(err, data, ""), os.path.dirname(os.path.abspath(path)), wanted[:-1])
        return path, spec, [str(e) for e in err.items]
    return "", None, [f"{zones_dir}: no zone file declares zone {wanted[:-1]}"]


def _touch(path: str) -> None:
    """Mark the zone file changed: a running server reloads the zone (and its keys)."""
    os.utime(path)


def run(args: Any, zones_dir: str) -> int:
    """One ``gslb dnssec`` subcommand; the exit code."""
    path, spec, errors = find_zone(zones_dir, args.zone)
    if not errors and spec is None:
        errors = [f"{path}: zone {args.zone} has no dnssec: block (add one: see the README, DNSSEC)"]
    if errors:
        for error in errors:
            print(error, file=sys.stderr)
        return EXIT_INVALID
    assert spec is not None
    zone = args.zone.lower().rstrip(".")
    files = key_paths(spec.key_file)
    action = args.dnssec_command
    if action == "keygen":
        target = files["next"] if args.next else files["active"]
        if args.next and not os.path.exists(files["active"]):
            print(f"gslb dnssec keygen: {files['active']} does not exist yet: create the active key first "
                  f"(gslb dnssec keygen {zone})", file=sys.stderr)
            return EXIT_INVALID
        try:
            write_key_file(target, generate_private_key(spec.algorithm))
        except FileExistsError:
            print(f"gslb dnssec keygen: {target} exists; a key file is never overwritten "
                  "(see the README, DNSSEC, for the rollover)", file=sys.stderr)
            return EXIT_INVALID
        except OSError as exc:
            print(f"gslb dnssec keygen: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_INVALID
        _touch(path)
        print(f"wrote {target} ({spec.algorithm}, mode 0600)")
        return _print_ds(spec, zone)
    if action == "ds":
        return _print_ds(spec, zone)
    if action == "rollover":
        if not os.path.exists(files["next"]):
            print(f"gslb dnssec rollover: no next key {files['next']} (create it first: "
                  f"gslb dnssec keygen {zone} --next)", file=sys.stderr)
            return EXIT_INVALID
        if os.path.exists(files["old"]):
            print(f"gslb dnssec rollover: {files['old']} still exists (finish the previous rollover: "
                  f"gslb dnssec retire {zone})", file=sys.stderr)
            return EXIT_INVALID
        os.rename(files["active"], files["old"])
        os.rename(files["next"], files["active"])
        _touch(path)
        print(f"the next key now signs; the previous key is {files['old']} (published, not signing)")
        return _print_ds(spec, zone)
    # retire
    if not os.path.exists(files["old"]):
        print(f"gslb dnssec retire: no retired key {files['old']}", file=sys.stderr)
        return EXIT_INVALID
    os.remove(files["old"])
    _touch(path)
    print(f"removed {files['old']}: its DNSKEY is no longer published")
    return EXIT_OK


def _print_ds(spec: DnssecSpec, zone: str) -> int:
    """The DS records the parent should hold (active and next keys); a retired key as a comment."""
    try:
        signing = load_keys(spec, zone)
    except KeyFileError as exc:
        print(f"gslb dnssec: {exc}", file=sys.stderr)
        return EXIT_INVALID
    origin = zone + "."
    for key in signing.keys:
        line = ds_text(origin, key)
        if key.role == "old":
            print(f"; retired key {key.tag} (remove this DS from the parent): {line}")
        else:
            print(f"{line} ; {key.role} key")
    return EXIT_OK
