"""Every tool in tools/ runs with the project's venv whatever Python starts it, and stops loudly
(exit 2, naming ``make .venv/.installed``) when there is none (issue 10, "a new user's first hour").

"A Python that is not the venv" is the venv's base interpreter, run isolated (``-I``: no user
site, no PYTHONPATH, not even the script's folder on sys.path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT

TOOLS = ROOT / "tools"
BASE_PYTHON = getattr(sys, "_base_executable", None) or sys.executable


def python_tools() -> list[Path]:
    return sorted(p for p in TOOLS.iterdir()
                  if p.is_file() and not p.name.startswith("_") and p.read_text().startswith("#!/usr/bin/env python3"))


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_every_tool_is_an_executable_that_uses_the_project_venv():
    tools = [p for p in TOOLS.iterdir() if p.is_file() and not p.name.startswith("_")]
    assert len(python_tools()) >= 10
    for tool in tools:
        assert os.access(tool, os.X_OK), f"{tool.name} is not executable: the README runs tools/NAME"
    for tool in python_tools():
        assert "_venv.use_project_venv(" in tool.read_text(), f"{tool.name} does not use tools/_venv.py"


@pytest.mark.parametrize("name", [p.name for p in python_tools() if p.name != "build_world_map.py"])
def test_a_python_tool_started_by_another_python_runs_under_the_venv(name, tmp_path):
    done = run([BASE_PYTHON, "-I", str(TOOLS / name), "--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()


def test_bench_handler_as_the_readme_writes_it_measures(tmp_path):
    done = run([BASE_PYTHON, "-I", "tools/bench_handler.py", "--queries", "200", "--repeat", "1"], cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "us" in done.stdout or "µs" in done.stdout, done.stdout


def test_without_a_venv_the_tools_stop_at_once_saying_how_to_make_it(tmp_path):
    shutil.copytree(TOOLS, tmp_path / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    done = run([BASE_PYTHON, "-I", "tools/bench_handler.py", "--queries", "10"], cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "gslb" in done.stderr and "make .venv/.installed" in done.stderr, done.stderr
    done = run(["tools/cluster_demo.sh"], cwd=tmp_path)
    assert done.returncode == 2
    assert "make .venv/.installed" in done.stderr, done.stderr
    done = run(["tools/bench_dnsperf.sh", "1", "1"], cwd=tmp_path)
    assert done.returncode != 0
    assert "make .venv/.installed" in done.stderr or "dnsperf missing" in done.stderr, done.stderr
