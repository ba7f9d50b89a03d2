"""``gslb status``: a running server's /api/v1/status as terminal tables."""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.error
import urllib.request
from typing import Any, Sequence

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8053"

_COLOURS = {"up": "32", "down": "31", "drain": "33", "unknown": "90"}


def _state(state: str | None, colour: bool) -> str:
    text = state or "-"
    if colour and state in _COLOURS:
        return f"\033[{_COLOURS[state]}m{text}\033[0m"
    return text


def _table(headers: Sequence[str], rows: list[list[str]], widths_of: list[list[str]] | None = None) -> list[str]:
    """Left-aligned columns; ``widths_of`` is ``rows`` without colour codes (for the widths)."""
    plain = widths_of or rows
    widths = [max(len(h), *(len(r[i]) for r in plain)) if plain else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row, bare in zip(rows, plain):
        cells = [cell + " " * (w - len(b)) for cell, b, w in zip(row, bare, widths)]
        out.append("  ".join(cells).rstrip())
    return out


def _rtt(ms: float | None) -> str:
    return "" if ms is None else f" {ms:.1f}ms"


def _region(name: str, r: dict[str, Any], colour: bool) -> str:
    text = f"{name} {_state(r.get('state'), colour)}{_rtt(r.get('rtt_ms'))}"
    if r.get("load") is not None:
        text += f" load {r['load']:g}"
    if r.get("error"):
        text += f" ({r['error']})"
    return text


def format_status(doc: dict[str, Any], url: str | None = None, colour: bool = False) -> str:
    """The status document as text: header, zones, sites with regional results, pools, changes."""
    lines: list[str] = []
    backend = doc.get("state_backend") or {}
    head = f"gslb status{' of ' + url if url else ''}"
    head += f"   region {doc.get('region', '-')}"
    head += f"   state backend {backend.get('url') or '-'} {'connected' if backend.get('connected') else 'DISCONNECTED'}"
    if doc.get("dns_ready") is False:
        head += "   DNS NOT SERVING"
    lines += [head, ""]

    zones = doc.get("zones") or []
    rows = [[z.get("zone") or "-", str(z.get("serial", "-")), z.get("loaded_at") or "-", z.get("error") or "ok"]
            for z in zones]
    lines += _table(["zone", "serial", "loaded", "status"], rows) + [""]

    rows, bare = [], []
    for s in doc.get("sites") or []:
        regions = s.get("regions") or {}
        plain_regions = ", ".join(_region(n, r, False) for n, r in regions.items()) or "-"
        coloured_regions = ", ".join(_region(n, r, colour) for n, r in regions.items()) or "-"
        base = [s["zone"], s["site"]]
        rows.append(base + [_state(s["state"], colour), s.get("override") or "-", coloured_regions])
        bare.append(base + [s["state"], s.get("override") or "-", plain_regions])
    lines += _table(["zone", "site", "state", "override", "regions"], rows, bare) + [""]

    rows = [[p["zone"], p["pool"], p["policy"], f"{p['up']}/{p['total']}"] for p in doc.get("pools") or []]
    lines += _table(["zone", "pool", "policy", "up"], rows)

    changes = doc.get("changes") or []
    if changes:
        lines += ["", "RECENT CHANGES"]
        for c in changes[:10]:
            lines.append(f"{c.get('time')}  {c.get('zone')}/{c.get('site')}  "
                         f"{_state(c.get('old'), colour)} -> {_state(c.get('new'), colour)}")
    return "\n".join(lines)


def fetch_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET URL/api/v1/status and decode it (raises OSError/ValueError on failure)."""
    with urllib.request.urlopen(url.rstrip("/") + "/api/v1/status", timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def run_status(url: str = DEFAULT_URL) -> int:
    """Print the status of the server at ``url``; 0 on success, 1 when it cannot be read."""
    if "://" not in url:
        url = "http://" + url
    try:
        doc = fetch_status(url)
    except urllib.error.HTTPError as exc:
        print(f"gslb status: {url}: HTTP {exc.code} {exc.reason}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        print(f"gslb status: cannot reach {url}: {reason}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"gslb status: cannot read {url}/api/v1/status: {exc}", file=sys.stderr)
        return 1
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print(format_status(doc, url, colour))
    return 0
