"""Unit tests of gslb.cli exit codes (in-process, no sockets)."""

from __future__ import annotations

from pathlib import Path

import yaml

from gslb.cli import EXIT_INVALID, main

ROOT = Path(__file__).resolve().parent.parent.parent


def test_explain_with_a_missing_zone_folder_exits_1(tmp_path, capsys):
    config = tmp_path / "gslb.yaml"
    config.write_text(yaml.safe_dump({"zones": "no-zones", "geoip": str(ROOT / "data" / "sample-city.mmdb")}))
    code = main(["--log-level", "error", "explain", "www.gslb.example.com", "--client", "192.0.2.1",
                 "-c", str(config)])
    out, err = capsys.readouterr()
    assert code == EXIT_INVALID and out == ""
    assert f"zones: the folder {tmp_path / 'no-zones'} does not exist" in err


def test_check_with_a_missing_zones_flag_folder_names_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["--log-level", "error", "check", "--zones", "nope"])
    _, err = capsys.readouterr()
    assert code == EXIT_INVALID
    assert err.startswith(f"--zones: the folder {tmp_path / 'nope'} does not exist")
