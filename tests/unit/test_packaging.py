"""pyproject.toml in the form current setuptools builds without deprecation warnings (issue 10):
the licence as an SPDX expression string (PEP 639), with a setuptools that understands it (>= 77)."""

from __future__ import annotations

import re
import tomllib

from harness import ROOT


def test_license_is_an_spdx_string_and_setuptools_supports_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    requires = project["build-system"]["requires"]
    setuptools = [r for r in requires if r.startswith("setuptools")]
    assert setuptools, requires
    minimum = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools[0])
    assert minimum and int(minimum.group(1)) >= 77, setuptools
