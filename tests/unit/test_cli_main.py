"""Unit tests of gslb.cli exit codes (in-process, no sockets)."""

from __future__ import annotations

from pathlib import Path

import yaml

from gslb.cli import EXIT_INVALID, EXIT_STARTUP, EXIT_USAGE, main

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


def test_workers_out_of_range_in_the_server_file_names_file_line_and_field(tmp_path, capsys):
    config = tmp_path / "gslb.yaml"
    config.write_text("zones: .\nworkers: 0\n")
    assert main(["--log-level", "error", "serve", "-c", str(config)]) == EXIT_STARTUP
    assert f"{config}:2: workers:" in capsys.readouterr()[1]


def test_checker_needs_a_redis_state_url(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zones").mkdir()
    assert main(["--log-level", "error", "checker", "--region", "eu", "--state", "memory://"]) == EXIT_USAGE
    assert "gslb checker: --state: expected the shared Redis table" in capsys.readouterr()[1]


def test_explain_bad_input_names_what_to_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zones").mkdir()
    argv = ["--log-level", "error", "explain", "--zones", "zones", "--geoip", "none"]
    assert main(argv + ["www.example.com", "--client", "not-an-ip"]) == EXIT_USAGE
    assert "gslb explain: --client: invalid client address 'not-an-ip'" in capsys.readouterr()[1]
    assert main(argv + ["www.example.com", "BOGUS", "--client", "192.0.2.1"]) == EXIT_USAGE
    assert "gslb explain: TYPE: unknown query type" in capsys.readouterr()[1]
