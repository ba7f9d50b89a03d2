"""How every Python tool in tools/ finds its modules: the project's venv, whatever started it.

A tool run as ``tools/NAME`` (or ``python3 tools/NAME``) starts with this, before its other imports::

    if __name__ == "__main__":  # run under the project's venv (tools/_venv.py)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import _venv
        _venv.use_project_venv()

It re-runs the tool under ``REPO/.venv/bin/python`` when that exists and is not the Python
running it, so the checkout's gslb and its dependencies are used. When the modules the tool
needs still cannot be imported (no venv yet, or an incomplete one), it stops at once (exit 2)
saying so and how to fix it: ``make .venv/.installed`` in the repository. Imported by a test
(not ``__main__``), a tool does nothing of this.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
VENV_PYTHON = VENV / "bin" / "python"

#: what most tools import: gslb and its dependencies
GSLB = ("gslb", "dnslib", "yaml", "geoip2", "aiohttp")


def in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def use_project_venv(needs: Sequence[str] = GSLB) -> None:
    """Re-run ``sys.argv`` under the project's venv Python, or exit 2 when ``needs`` are missing."""
    tool = Path(sys.argv[0]).resolve()
    if VENV_PYTHON.exists() and not in_project_venv():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(tool), *sys.argv[1:]])
    if str(REPO) not in sys.path:
        sys.path.insert(1, str(REPO))  # gslb from this checkout
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        where = "the project's venv" if in_project_venv() else f"{sys.executable} (no {VENV_PYTHON})"
        print(f"tools/{tool.name}: Python module(s) {', '.join(missing)} missing in {where}: "
              f"run `make .venv/.installed` in {REPO}", file=sys.stderr)
        sys.exit(2)


def load_tool(name: str, module: str = "gslb_tools_bench") -> ModuleType:
    """The tool ``tools/NAME`` (a script without .py) as a module named ``module``, e.g. to reuse
    tools/bench's GeoLite2 fetch and helpers from another tool."""
    loader = importlib.machinery.SourceFileLoader(module, str(REPO / "tools" / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    tool = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = tool  # its dataclasses need it registered
    loader.exec_module(tool)
    return tool
