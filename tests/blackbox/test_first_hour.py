"""A new user's first hour (issue 10), each against the real program: the README's ``gslb check``
example is what ``gslb check`` prints; the log says when a broken zone file is fixed or removed,
and never claims a last good version that a brand-new file never had; ``gslb status`` keeps its
table aligned; a ``gslb.yaml`` created after a start without one is read on SIGHUP.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from harness import ROOT

README = (ROOT / "README.md").read_text()


def run_gslb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gslb", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_the_readme_check_example_is_what_gslb_check_prints(tmp_path):
    block = re.search(r"```\n\$ gslb check\n(.*?)```", README, re.S)
    assert block, "README shows no `$ gslb check` example"
    (tmp_path / "zones").mkdir()
    text = (ROOT / "zones" / "example.yaml").read_text()
    for old, new in (("www: {pool: web}", "www: {pool: webb}"),
                     ("location: [50.11, 8.68]", "location: [91, 8.68]")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / "zones" / "example.yaml").write_text(text)
    done = run_gslb("check", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout + done.stderr == block.group(1) or \
        sorted((done.stdout + done.stderr).splitlines()) == sorted(block.group(1).splitlines())
