"""``gslb status``: a running server's /api/v1/status as terminal tables.

The server's address is ``--http URL``, else the ``http:`` of the server file (``-c FILE``, or
``gslb.yaml`` in the working directory when it exists), else http://127.0.0.1:8053.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import sys
import time
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


def _age(checked_at: Any, now: float | None) -> str:
    """`` 4s ago`` / `` 3m ago`` / `` 2h ago`` / `` 5d ago`` from an ISO 8601 time ("" when unknown)."""
    if now is None or not isinstance(checked_at, str):
        return ""
    try:
        when = datetime.datetime.fromisoformat(checked_at)
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    age = max(0.0, now - when.timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= size:
            return f" {int(age // size)}{unit} ago"
    return f" {int(age)}s ago"


def _region(name: str, r: dict[str, Any], colour: bool, now: float | None = None) -> str:
    text = f"{name} {_state(r.get('state'), colour)}{_rtt(r.get('rtt_ms'))}{_age(r.get('checked_at'), now)}"
    if r.get("load") is not None:
        text += f" load {r['load']:g}"
    if r.get("error"):
        text += f" ({r['error']})"
    return text


def _zone_status(error: str | None) -> str:
    """A zone file's errors in one table cell: the first, and how many more (``gslb check`` lists all)."""
    lines = [line for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return "ok"
    more = len(lines) - 1
    return lines[0] + (f" (+{more} more error{'s' if more > 1 else ''}: gslb check)" if more else "")


def format_status(doc: dict[str, Any], url: str | None = None, colour: bool = False,
                  now: float | None = None) -> str:
    """The status document as text: header, zones, sites with regional results, pools, changes.

    With ``now`` (wall-clock seconds) each regional result shows how long ago it was checked.
    """
    lines: list[str] = []
    backend = doc.get("state_backend") or {}
    head = f"gslb status{' of ' + url if url else ''}"
    head += f"   region {doc.get('region', '-')}"
    head += f"   state backend {backend.get('url') or '-'} {'connected' if backend.get('connected') else 'DISCONNECTED'}"
    if doc.get("dns_ready") is False:
        head += "   DNS NOT SERVING"
    lines += [head, ""]

    zones = doc.get("zones") or []
    rows = [[z.get("zone") or "-", "-" if z.get("serial") is None else str(z["serial"]), z.get("loaded_at") or "-",
             _zone_status(z.get("error"))] for z in zones]
    lines += _table(["zone", "serial", "loaded", "status"], rows) + [""]

    rows, bare = [], []
    for s in doc.get("sites") or []:
        regions = s.get("regions") or {}
        plain_regions = ", ".join(_region(n, r, False, now) for n, r in regions.items()) or "-"
        coloured_regions = ", ".join(_region(n, r, colour, now) for n, r in regions.items()) or "-"
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


def url_from_config(path: str | None, cwd: str | None = None) -> str:
    """The status URL from the ``http:`` of the server file at ``path`` (None: ``gslb.yaml`` in
    ``cwd`` when it exists, else the default). Raises ValueError when the file is unusable or
    has HTTP off. A wildcard listen address is reached on loopback."""
    from gslb.config import find_default_config, load_server_config
    from gslb.errors import ConfigErrors

    if path is None:
        path = find_default_config(cwd or os.getcwd())
        if path is None:
            return DEFAULT_URL
    try:
        config = load_server_config(path)
    except ConfigErrors as exc:
        raise ValueError("\n".join(str(e) for e in exc.errors)) from None
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    if config.http is None:
        raise ValueError(f"{path}: http: is off (null); give --http URL")
    host, port = config.http
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    if ip is not None and ip.version == 6:
        return f"http://[{ip}]:{port}"
    return f"http://{ip or host}:{port}"


def run_status(url: str | None = DEFAULT_URL, config: str | None = None) -> int:
    """Print the status of the server at ``url`` (None: from the server file ``config``, see
    ``url_from_config``); 0 on success, 1 when it cannot be read."""
    if url is None:
        try:
            url = url_from_config(config)
        except ValueError as exc:
            print(f"gslb status: {exc}", file=sys.stderr)
            return 1
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
    print(format_status(doc, url, colour, time.time()))
    return 0
