"""``gslb --version`` prints the installed distribution's version, which is pyproject.toml's."""

from __future__ import annotations

import tomllib
from importlib.metadata import version

import pytest
from harness import ROOT

import gslb
from gslb import cli


def test_version_comes_from_the_package_metadata(capsys):
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version("gslb") == expected == gslb.__version__
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"gslb {expected}\n"
