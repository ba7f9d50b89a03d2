"""The server file (gslb.yaml): frozen values, and the loader that merges it with CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

DEFAULT_LISTEN = ("127.0.0.1", 5300)
DEFAULT_HTTP = ("127.0.0.1", 8053)


@dataclass(frozen=True, slots=True)
class Acl:
    """Who may query at all; others get no reply."""

    allow: tuple[str, ...] = ("0.0.0.0/0", "::/0")
    deny: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Response rate limiting per client /24 or /56 and answer (0 = off)."""

    responses_per_second: int = 0
    slip: int = 2


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """RFC 7766 connection handling limits."""

    idle_timeout: float = 10.0
    max_connections: int = 1024
    max_per_client: int = 32


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``gslb serve`` needs, after the file and the flags are merged.

    Paths are absolute (relative ones in the file are relative to the file's folder, relative
    ones on the command line to the working directory).
    """

    listen: tuple[tuple[str, int], ...] = (DEFAULT_LISTEN,)
    http: tuple[str, int] | None = DEFAULT_HTTP
    zones: str = "zones"
    geoip: str | None = "data/sample-city.mmdb"
    region: str = "local"
    #: checker region name -> (lat, lon), for policy "fastest"
    regions: Mapping[str, tuple[float, float] | None] = field(default_factory=dict)
    state: str = "memory://"
    checks: bool = True
    api_token_file: str | None = None
    acl: Acl = Acl()
    rate_limit: RateLimit = RateLimit()
    tcp: TcpLimits = TcpLimits()
    workers: int = 1
    #: the server file this came from, None when there was none
    file: str | None = None
