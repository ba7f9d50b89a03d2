"""Shared fixtures: ``gslb_server`` starts a real server process, ``backends`` loopback health-check
backends; both are stopped after the test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "blackbox"))

from backends import Backend  # noqa: E402
from harness import Gslb  # noqa: E402


@pytest.fixture
def gslb_server(tmp_path: Path) -> Iterator[Callable[..., Gslb]]:
    """Factory: ``gslb_server({"example.yaml": TEXT}, config={...})`` -> a started Gslb."""
    started: list[Gslb] = []

    def start(zones: dict[str, str], config: dict | None = None, args: list[str] | None = None,
              wait_for: str | None = None) -> Gslb:
        server = Gslb(tmp_path / f"srv{len(started)}", zones, config, args)
        started.append(server)
        return server.start(wait_for=wait_for)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def backends() -> Iterator[Callable[..., Backend]]:
    """Factory of loopback backends, all stopped after the test."""
    made: list[Backend] = []

    def make(**kw: Any) -> Backend:
        b = Backend(**kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()
