"""The server file (gslb.yaml): frozen values, and the loader that merges it with CLI flags."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from gslb.errors import ConfigError, ConfigErrors, UsageError, display_path
from gslb.yamlsafe import Errors, Fields, LineDict, LineList, check_keys, kind_of, load_yaml
from gslb.validate import check_name, is_ip, is_ipv6, parse_location
from gslb.zonefile import MAX_ZONE_FILE_BYTES

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = ("127.0.0.1", 5300)
DEFAULT_HTTP = ("127.0.0.1", 8053)


@dataclass(frozen=True, slots=True)
class Acl:
    """Who may query at all; others get no reply."""

    allow: tuple[str, ...] = ("0.0.0.0/0", "::/0")
    deny: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Response rate limiting (UDP) per client network and answer; ``responses_per_second`` 0 = off.

    ``window``: seconds of credit a quiet client may build up; ``slip``: every Nth limited reply
    is sent truncated (TC=1), the others dropped (0: drop all, 1: truncate all); ``exempt``:
    networks never limited. See ``gslb.ratelimit``.
    """

    responses_per_second: int = 0
    slip: int = 2
    window: int = 5
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    exempt: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        """Whether replies are limited at all."""
        return self.responses_per_second > 0


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """RFC 7766 connection handling limits."""

    idle_timeout: float = 10.0
    max_connections: int = 1024
    max_per_client: int = 32


@dataclass(frozen=True, slots=True)
class CookieConfig:
    """DNS Cookies (RFC 7873, server cookies per RFC 9018; ``gslb.cookies``)."""

    enabled: bool = True
    #: the file holding the 16-byte secret every node shares (32 hex digits); None: random per start
    secret_file: str | None = None
    #: the largest UDP reply to a query without a valid server cookie (larger: TC=1)
    max_nocookie_udp: int = 1232
    #: the secret read from ``secret_file`` (None without one); never shown
    secret: bytes | None = field(default=None, repr=False)


#: the range of ``cookies.max_nocookie_udp`` (gdnsd's lower bound; gslb never sends more than 1232)
NOCOOKIE_UDP_RANGE = (128, 1232)


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
    cookies: CookieConfig = CookieConfig()
    workers: int = 1
    #: ECS scope of closest/geo answers: "merged" (neighbouring networks with the same answer) or
    #: "network" (the client's GeoIP network)
    ecs_scope: str = "merged"
    #: ``auto``: the file watch applies zone file changes; ``manual``: only SIGHUP and
    #: POST /api/v1/reload do (the watch logs that a file changed)
    reload: str = "auto"
    #: zone files bigger than this are refused before they are read
    max_zone_file_bytes: int = MAX_ZONE_FILE_BYTES
    #: the server file this came from, None when there was none
    file: str | None = None
    #: geoip is the built-in default path (given neither in the file nor by a flag)
    geoip_default: bool = False


# Loading



DEFAULT_CONFIG_NAME = "gslb.yaml"
_TOP_KEYS = ("listen", "http", "zones", "geoip", "region", "regions", "state", "checks",
             "api_token_file", "acl", "rate_limit", "tcp", "workers", "reload", "max_zone_file_bytes", "cookies",
             "ecs_scope")
#: the values of ``reload:``
RELOAD_MODES = ("auto", "manual")
#: the smallest ``max_zone_file_bytes``
MIN_ZONE_FILE_BYTES = 1024
#: the scheme of a Redis reached through Sentinel (:func:`parse_sentinel_url`)
SENTINEL_SCHEME = "redis+sentinel"
#: the default port of a Sentinel
SENTINEL_PORT = 26379
#: the values of ``ecs_scope:``
ECS_SCOPES = ("merged", "network")
#: the schemes of a Redis ``state:`` URL (gslb.redis_state.RedisBackend)
REDIS_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
#: every scheme ``state:`` accepts; :func:`check_state_url` is the one check of it
STATE_SCHEMES = ("memory",) + REDIS_SCHEMES
_QUERY_PASSWORD = re.compile(r"((?:^|&)(?:sentinel_)?password=)[^&#]*", re.IGNORECASE)
_CLI = "command line"


def find_default_config(cwd: str) -> str | None:
    """``gslb.yaml`` in ``cwd`` when it exists, else None."""
    path = os.path.join(cwd, DEFAULT_CONFIG_NAME)
    return path if os.path.isfile(path) else None


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[::1]:PORT"``, ``"HOST"`` or a bare IPv6 address -> (host, port).

    Raises ValueError with a message fit for the user.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected HOST:PORT")
    t = text.strip()
    port_text: str | None = None
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ValueError(f"{t!r}: missing ']' after the IPv6 address")
        host, rest = t[1:end], t[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{t!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
        if not is_ipv6(host):
            raise ValueError(f"{t!r}: {host!r} is not an IPv6 address")
    elif t.count(":") > 1:
        host = t  # a bare IPv6 address, no port
        if not is_ipv6(host):
            raise ValueError(f"{t!r}: write an IPv6 address with a port as [ADDRESS]:PORT")
    else:
        host, sep, port_text = t.partition(":")
        if not sep:
            port_text = None
        if not host:
            raise ValueError(f"{t!r}: missing host (e.g. 127.0.0.1:{default_port})")
    if port_text is None:
        port = default_port
    elif not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{t!r}: port {port_text!r} is not a number 1..65535")
    else:
        port = int(port_text)
    if not is_ip(host) and not _is_hostname(host):
        raise ValueError(f"{t!r}: {host!r} is not an IP address or host name")
    if not is_ip(host) and host.rstrip(".").rsplit(".", 1)[-1].isdigit():
        raise ValueError(f"{t!r}: {host!r} is not an address (expected an IPv4 address such as 127.0.0.1)")
    if not is_ip(host) and "." not in host.rstrip(".") and host.lower() != "localhost":
        raise ValueError(f"{t!r}: {host!r} is not an address (expected an IP address, localhost "
                         "or a fully-qualified host name)")
    return host, port


def _is_hostname(text: str) -> bool:
    """A host name (zone-file rules, no wildcard), with or without its trailing dot."""
    return "*" not in text and check_name(text.lower().rstrip(".") + ".") is None


def _number_or_default(f: Fields, key: str, default: Any, lo: float, hi: float | None = None, *,
            integer: bool = True, lo_open: bool = False) -> Any:
    """An int (or number) in range; ``default`` when absent or wrong (the error is recorded)."""
    v = f.integer(key, default, int(lo), None if hi is None else int(hi)) if integer else \
        f.num(key, default, lo, hi, lo_open=lo_open)
    return default if v is None else v


def _path(f: Fields, base: str, key: str, default: Any, nullable: bool = False) -> Any:
    """A file or folder path, made absolute relative to the server file's folder."""
    v = f.string(key, default, nullable=nullable, strip=True)
    if v is None:
        return None if nullable and key in f.m else default
    return os.path.normpath(os.path.join(base, os.path.expanduser(v)))


def _networks(err: Errors, m: LineDict, key: str, path: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if key not in m:
        return default
    v = m[key]
    if v is None:
        return ()
    items = list(v) if isinstance(v, LineList) else [v]
    out = []
    for i, item in enumerate(items):
        line = v.item_line(i) if isinstance(v, LineList) else m.value_line(key)
        if not isinstance(item, str):
            err.add(line, path, f"expected a network such as 192.0.2.0/24, got {kind_of(item)}")
            continue
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=True)))
        except ValueError as exc:
            err.add(line, path, f"{item!r} is not a network in CIDR form ({exc})")
    return tuple(out)


def redact_url(url: str) -> str:
    """The URL with its passwords (``user:PASSWORD@``, ``?password=``) replaced by ``***``."""
    base, sep, query = url.partition("?")
    if sep:
        query = _QUERY_PASSWORD.sub(r"\1***", query)
    try:
        parts = urlsplit(base)
        password = parts.password
    except ValueError:
        password = None
    if password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        base = base.replace("//" + parts.netloc, f"//{user}:***@{hostport}", 1)
    return base + sep + query


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A ``redis+sentinel://`` state URL, parsed (:func:`parse_sentinel_url`)."""

    #: (host, port) of every Sentinel to ask where the master is
    sentinels: tuple[tuple[str, int], ...]
    #: the monitored master's name (``sentinel monitor NAME ...``)
    master: str
    db: int = 0
    #: ACL user and password of the Redis master and replicas (``user:password@``)
    username: str | None = None
    password: str | None = None
    #: password of the Sentinels themselves (``?sentinel_password=``)
    sentinel_password: str | None = None


SENTINEL_FORM = "redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER/DB"


def parse_sentinel_url(url: str) -> SentinelUrl:
    """``redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB][?sentinel_password=P]``.

    Ports default to 26379 (IPv6 hosts in brackets), DB to 0. Raises ValueError saying what is
    wrong, without the password.
    """
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"expected {SENTINEL_FORM}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        if not item.strip():
            raise ValueError(f"missing a Sentinel HOST:PORT (expected {SENTINEL_FORM})")
        try:
            hp = parse_hostport(item, SENTINEL_PORT)
        except ValueError as exc:
            raise ValueError(f"Sentinel {exc}") from None
        if hp not in sentinels:
            sentinels.append(hp)
    path = [unquote(p) for p in parts.path.split("/")[1:]]
    if path and path[-1] == "" and len(path) > 1:
        path.pop()  # a trailing slash
    if not path or not path[0]:
        raise ValueError(f"missing the master's name (expected {SENTINEL_FORM})")
    if len(path) > 2:
        raise ValueError(f"expected /MASTER/DB after the Sentinels ({SENTINEL_FORM})")
    db_text = path[1] if len(path) == 2 else "0"
    if not db_text.isdigit():
        raise ValueError(f"the database must be a number ({SENTINEL_FORM})")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - {"sentinel_password"})
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (known: sentinel_password)")
    return SentinelUrl(sentinels=tuple(sentinels), master=path[0], db=int(db_text), username=username,
                       password=password, sentinel_password=query.get("sentinel_password") or None)


def check_state_url(url: str) -> str | None:
    """Why ``url`` is not a usable state URL (memory://, redis://, rediss://, unix://,
    redis+sentinel://), or None.

    The message shows the URL with its password redacted (:func:`redact_url`).
    """
    shown = repr(redact_url(url))
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"{shown}: not a URL ({exc})"
    if parts.scheme not in STATE_SCHEMES:
        return f"{shown}: the scheme must be one of {', '.join(s + '://' for s in STATE_SCHEMES)}"
    if parts.scheme == "memory":
        return None
    if parts.scheme == SENTINEL_SCHEME:
        try:
            parse_sentinel_url(url)
        except ValueError as exc:
            return f"{shown}: {exc}"
        return None
    if parts.scheme == "unix":
        if not parts.path.startswith("/"):
            return f"{shown}: expected unix:///PATH/TO/redis.sock?db=N (an absolute socket path)"
        dbs = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "db"]
        if any(not v.isdigit() for v in dbs):
            return f"{shown}: the database must be a number (unix:///PATH?db=N)"
        return None
    try:
        host = parts.hostname
    except ValueError:
        host = None
    if not host:
        return f"{shown}: missing the Redis host (redis://HOST:PORT/DB)"
    try:
        _ = parts.port  # urllib checks the port only when it is read
    except ValueError:
        return f"{shown}: the port is not a number 1..65535"
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        return f"{shown}: the database must be a number (redis://HOST:PORT/DB)"
    return None


def _hostport(err: Errors, v: Any, line: int | None, path: str, default_port: int) -> tuple[str, int] | None:
    if not isinstance(v, str):
        err.add(line, path, f"expected HOST:PORT, got {kind_of(v)}")
        return None
    try:
        return parse_hostport(v, default_port)
    except ValueError as exc:
        err.add(line, path, str(exc))
        return None


def load_server_config(path: str | None, overrides: Mapping[str, Any] | None = None) -> ServerConfig:
    """The server file at ``path`` (None: no file) merged with CLI ``overrides``; raises ConfigErrors.

    ``overrides`` holds only the flags given: ``listen`` (list of HOST:PORT), ``http`` (HOST:PORT,
    or None to disable), ``zones``, ``geoip``, ``state``, ``region``, ``checks`` (bool), ``workers``.
    Relative paths in the file are relative to its folder; on the command line, to the cwd.
    Bad flag values make it a UsageError (a ConfigErrors that also lists the file's errors).
    """
    overrides = dict(overrides or {})
    cwd = os.getcwd()
    values: dict[str, Any] = {
        "zones": os.path.join(cwd, "zones"),
        "geoip": os.path.join(cwd, "data", "sample-city.mmdb"),
        "geoip_default": True,
    }
    errors: list[ConfigError] = []
    if path is not None:
        values.update(_read_file(path, errors))
        values["file"] = os.path.abspath(path)
    flag_errors = _apply_overrides(values, overrides, cwd)
    errors.extend(flag_errors)
    if flag_errors:
        raise UsageError(errors)  # exit 2 (usage), not a start-up failure
    if errors:
        raise ConfigErrors(errors)
    return ServerConfig(**values)


def usable_geoip(config: ServerConfig) -> str | None:
    """The GeoIP path to open: None (one warning) when the built-in default file does not exist.

    A database named in the file or by ``--geoip`` is opened as given (missing: an error).
    """
    path = config.geoip
    if path and config.geoip_default and not os.path.exists(path):
        logger.warning("geo: no GeoIP database at %s: client locations unknown; set geoip: or --geoip",
                       display_path(path))
        return None
    return path


def _read_file(path: str, errors: list[ConfigError]) -> dict[str, Any]:
    shown = display_path(path)
    try:
        with open(path, "rb") as fh:
            content = fh.read()
    except OSError as exc:
        errors.append(ConfigError(shown, None, "", f"cannot read the server file: {exc.strerror or exc}"))
        return {}
    try:
        data = load_yaml(content.decode("utf-8"), shown)
    except UnicodeDecodeError:
        errors.append(ConfigError(shown, None, "", "the file is not valid UTF-8"))
        return {}
    except ConfigErrors as exc:
        errors.extend(exc.errors)
        return {}
    base = os.path.dirname(os.path.abspath(path))
    err = Errors(shown)
    top = Fields(err, data, "") if isinstance(data, LineDict) else None
    out: dict[str, Any] = {"zones": os.path.join(base, "zones"),
                           "geoip": os.path.join(base, "data", "sample-city.mmdb")}
    if data is None:
        return out
    if top is None:
        errors.append(ConfigError(shown, getattr(data, "line", None), "",
                                  f"the top level must be a mapping, got {kind_of(data)}"))
        return out
    check_keys(err, data, _TOP_KEYS, "")

    if "listen" in data:
        v = data["listen"]
        items = list(v) if isinstance(v, LineList) else [v]
        listen = []
        for i, item in enumerate(items):
            line = v.item_line(i) if isinstance(v, LineList) else data.value_line("listen")
            hp = _hostport(err, item, line, "listen", DEFAULT_LISTEN[1])
            if hp is not None and hp not in listen:
                listen.append(hp)
        if not items:
            err.add(data.value_line("listen"), "listen", "needs at least one HOST:PORT")
        if listen:
            out["listen"] = tuple(listen)
    if "http" in data:
        v = data["http"]
        out["http"] = None if v is None else _hostport(err, v, data.value_line("http"), "http", DEFAULT_HTTP[1])
    out["zones"] = _path(top, base, "zones", out["zones"])
    out["geoip"] = _path(top, base, "geoip", out["geoip"], nullable=True)
    out["geoip_default"] = "geoip" not in data
    out["region"] = top.string("region", "local", strip=True) or "local"
    regions_m = top.mapping("regions")
    if regions_m is not None:
        regions: dict[str, tuple[float, float] | None] = {}
        spec_fields = Fields(err, regions_m, "regions")
        for name in regions_m:
            if regions_m[name] is None:
                regions[str(name)] = None
                continue
            spec = spec_fields.mapping(name, ("location",))
            if spec is None:
                continue
            loc = spec.get("location")
            regions[str(name)] = None if loc is None else parse_location(
                err, loc, spec.value_line("location"), f"regions.{name}.location")
        out["regions"] = regions
    state = top.string("state", "memory://", strip=True) or "memory://"
    problem = check_state_url(state)
    if problem:
        err.add(data.value_line("state"), "state", problem)
    out["state"] = state
    if "checks" in data:
        if not isinstance(data["checks"], bool):
            v = data["checks"]
            err.add(data.value_line("checks"), "checks",
                    f"expected true or false, got {v!r}" if isinstance(v, str) else
                    f"expected true or false, got {kind_of(v)}")
        else:
            out["checks"] = data["checks"]
    token = _path(top, base, "api_token_file", None, nullable=True)
    if token is not None and not os.path.isfile(token):
        err.add(data.value_line("api_token_file"), "api_token_file", f"file {token} not found")
    out["api_token_file"] = token
    acl_m = top.mapping("acl", ("allow", "deny"))
    if acl_m is not None:
        out["acl"] = Acl(allow=_networks(err, acl_m, "allow", "acl.allow", Acl().allow),
                         deny=_networks(err, acl_m, "deny", "acl.deny", ()))
    rl_m = top.mapping("rate_limit", ("responses_per_second", "window", "slip", "ipv4_prefix",
                                       "ipv6_prefix", "exempt"))
    if rl_m is not None:
        rl = Fields(err, rl_m, "rate_limit")
        out["rate_limit"] = RateLimit(responses_per_second=_number_or_default(rl, "responses_per_second", 0, 0),
                                      slip=_number_or_default(rl, "slip", 2, 0, 10),
                                      window=_number_or_default(rl, "window", 5, 1, 3600),
                                      ipv4_prefix=_number_or_default(rl, "ipv4_prefix", 24, 0, 32),
                                      ipv6_prefix=_number_or_default(rl, "ipv6_prefix", 56, 0, 128),
                                      exempt=_networks(err, rl_m, "exempt", "rate_limit.exempt", ()))
    tcp_m = top.mapping("tcp", ("idle_timeout", "max_connections", "max_per_client"))
    if tcp_m is not None:
        tcp = Fields(err, tcp_m, "tcp")
        out["tcp"] = TcpLimits(
            idle_timeout=float(_number_or_default(tcp, "idle_timeout", 10.0, 0, integer=False, lo_open=True)),
            max_connections=_number_or_default(tcp, "max_connections", 1024, 1),
            max_per_client=_number_or_default(tcp, "max_per_client", 32, 1))
    out["workers"] = _number_or_default(top, "workers", 1, 1, 256)
    out["reload"] = top.choice("reload", "auto", RELOAD_MODES, "reload mode") or "auto"
    out["max_zone_file_bytes"] = _number_or_default(top, "max_zone_file_bytes", MAX_ZONE_FILE_BYTES, MIN_ZONE_FILE_BYTES)
    cookies_m = top.mapping("cookies", ("enabled", "secret_file", "max_nocookie_udp"))
    if cookies_m is not None:
        out["cookies"] = _cookies(err, cookies_m, base)
    out["ecs_scope"] = top.choice("ecs_scope", "merged", ECS_SCOPES, "ecs_scope") or "merged"
    errors.extend(sorted(err.items, key=lambda e: e.line or 0))
    return out


def _cookies(err: Errors, m: LineDict, base: str) -> CookieConfig:
    """The ``cookies:`` section; the secret file is read (and checked) here."""
    f = Fields(err, m, "cookies")
    enabled = True
    if "enabled" in m:
        if isinstance(m["enabled"], bool):
            enabled = m["enabled"]
        else:
            v = m["enabled"]
            err.add(f.line("enabled"), "cookies.enabled",
                    f"expected true or false, got {v!r}" if isinstance(v, str) else
                    f"expected true or false, got {kind_of(v)}")
    lo, hi = NOCOOKIE_UDP_RANGE
    limit = _number_or_default(f, "max_nocookie_udp", 1232, lo, hi)
    path = _path(f, base, "secret_file", None, nullable=True)
    secret = None
    if path is not None:
        from gslb.cookies import parse_secret

        try:
            with open(path, encoding="ascii") as fh:
                secret = parse_secret(fh.read())
        except OSError as exc:
            err.add(f.line("secret_file"), "cookies.secret_file", f"cannot read {path}: {exc.strerror or exc}")
        except (UnicodeDecodeError, ValueError) as exc:
            why = "not ASCII text; expected 32 hex digits (16 bytes)" if isinstance(exc, UnicodeDecodeError) else exc
            err.add(f.line("secret_file"), "cookies.secret_file", f"{path}: {why}")
    return CookieConfig(enabled=enabled, secret_file=path, max_nocookie_udp=limit, secret=secret)


def _apply_overrides(values: dict[str, Any], overrides: dict[str, Any], cwd: str) -> list[ConfigError]:
    """Put the CLI flags over the file's values; their paths are relative to ``cwd``."""
    errors: list[ConfigError] = []

    def err(flag: str, message: str) -> None:
        errors.append(ConfigError(_CLI, None, flag, message))

    if overrides.get("listen"):
        listen = []
        items = overrides["listen"]
        for item in [items] if isinstance(items, str) else items:
            try:
                hp = parse_hostport(item, DEFAULT_LISTEN[1])
            except ValueError as exc:
                err("--listen", str(exc))
                continue
            if hp not in listen:
                listen.append(hp)
        values["listen"] = tuple(listen)
    if "http" in overrides:
        v = overrides["http"]
        if v is None or (isinstance(v, str) and v.strip().lower() in ("", "off", "none", "null")):
            values["http"] = None
        else:
            try:
                values["http"] = parse_hostport(v, DEFAULT_HTTP[1])
            except ValueError as exc:
                err("--http", str(exc))
    if str(overrides.get("geoip", "")).strip().lower() in ("none", "off", "null"):
        overrides["geoip"] = None  # --geoip none: no database, as ``geoip: null`` in the file
        values["geoip"] = None
    if "geoip" in overrides:
        values["geoip_default"] = False
    for key in ("zones", "geoip"):
        if overrides.get(key) is not None:
            values[key] = os.path.normpath(os.path.join(cwd, os.path.expanduser(overrides[key])))
    if overrides.get("state") is not None:
        problem = check_state_url(overrides["state"])
        if problem:
            err("--state", problem)
        values["state"] = overrides["state"]
    if overrides.get("region") is not None:
        if not str(overrides["region"]).strip():
            err("--region", "expected a region name")
        values["region"] = str(overrides["region"]).strip()
    if overrides.get("checks") is not None:
        values["checks"] = bool(overrides["checks"])
    if overrides.get("workers") is not None:
        w = overrides["workers"]
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            err("--workers", f"expected a number >= 1, got {w!r}")
        else:
            values["workers"] = w
    return errors
