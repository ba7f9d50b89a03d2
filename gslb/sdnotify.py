"""systemd's service notification protocol (``sd_notify``): one datagram to ``$NOTIFY_SOCKET``.

``Type=notify`` units learn from ``READY=1`` that the service answers (gslb sends it once DNS
listeners are bound and pool names are answered), from ``RELOADING=1`` ... ``READY=1`` that a
reload runs, and from ``STOPPING=1`` that it is shutting down. Without ``$NOTIFY_SOCKET`` (not
started by systemd) nothing is sent. A failure to send is logged, never raised: readiness
reporting must not stop a DNS server.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping

logger = logging.getLogger(__name__)


def socket_address(value: str | None) -> str | None:
    """The ``AF_UNIX`` address of a ``$NOTIFY_SOCKET`` value (``@name``: abstract), or None."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other forms are not supported


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, lines joined by newlines) to the service manager.

    Returns whether a datagram was sent.
    """
    raw = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    address = socket_address(raw)
    if address is None:
        if raw:
            logger.warning("systemd: NOTIFY_SOCKET %r is not a unix socket path; not notifying", raw)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        logger.warning("systemd: cannot notify %s: %s", raw, exc)
        return False
    return True


def reloading() -> str:
    """The ``RELOADING=1`` message (with ``MONOTONIC_USEC``, which ``Type=notify-reload`` needs)."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
