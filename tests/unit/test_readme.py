"""The README has a section for every registered policy, each showing a ``policy: NAME`` example.

The README holds no complete zone file (its snippets are fragments), so none is loaded here.
"""

from __future__ import annotations

import re
from pathlib import Path

from gslb.policies import POLICIES

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_registered_policy_has_a_readme_section_with_an_example():
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^##)", README, re.S | re.M))
    for name in POLICIES:
        assert name in sections, f"README has no section for policy {name}"
        assert f"policy: {name}" in sections[name], f"README's {name} section shows no example"
