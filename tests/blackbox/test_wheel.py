"""Packaging: a built wheel carries the dashboard's static files and the JSON Schemas, and both a
non-editable ``pip install .`` and the wheel give a working ``gslb`` in a fresh venv (slow: the
fresh venv installs gslb's dependencies from the package index)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from harness import ROOT

BASE_PYTHON = getattr(sys, "_base_executable", None) or sys.executable
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
#: what a source tree holds that a build does not need
_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                     "node_modules", "tests", "bench")


def run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def source_copy(tmp_path: Path) -> Path:
    """The project's files in a fresh folder (a build there writes nothing into the checkout)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    return src


def packaged(folder: str) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / folder).iterdir() if p.is_file()}


def check_installed(venv: Path, cwd: Path) -> None:
    """``gslb --version`` and ``gslb schema zone|server`` of the gslb installed in ``venv``."""
    gslb = str(venv / "bin" / "gslb")
    assert run([gslb, "--version"], cwd).stdout.strip() == f"gslb {VERSION}"
    for kind in ("zone", "server"):
        shipped = (ROOT / "gslb" / "schemas" / f"{kind}.schema.json").read_text()
        assert run([gslb, "schema", kind], cwd).stdout == shipped
    # imported from the venv, not from a source tree
    where = run([str(venv / "bin" / "python"), "-c", "import gslb; print(gslb.__file__)"], cwd).stdout
    assert where.startswith(str(venv)), where


def test_wheel_and_non_editable_install(tmp_path):
    src = source_copy(tmp_path)
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(src)], tmp_path)
    [wheel] = list(dist.glob("gslb-*.whl"))
    assert wheel.name.startswith(f"gslb-{VERSION}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert packaged("gslb/static") <= names, packaged("gslb/static") - names
    assert packaged("gslb/schemas") <= names and "gslb/schemas/zone.schema.json" in names
    assert packaged("gslb/data") <= names
    assert not any(n.startswith("tests/") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(f"gslb-{VERSION}.dist-info/entry_points.txt").decode()
    assert "gslb = gslb.cli:main" in entry_points

    venv = tmp_path / "venv"
    run([BASE_PYTHON, "-m", "venv", str(venv)], tmp_path)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    work = tmp_path / "elsewhere"
    work.mkdir()
    # pip install . (not editable), then the wheel over it
    run([*pip, str(src)], work)
    check_installed(venv, work)
    run([*pip, "--force-reinstall", "--no-deps", str(wheel)], work)
    check_installed(venv, work)
