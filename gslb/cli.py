"""The ``gslb`` command: argv -> configuration -> run. The only place that picks exit codes.

Exit codes: 0 success, 1 invalid or missing files (``check``), 2 usage errors, 3 start-up failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Sequence

from gslb import __version__
from gslb.errors import ConfigErrors, GslbError, UsageError

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_STARTUP = 0, 1, 2, 3
#: the files ``gslb schema`` has a JSON Schema for (gslb/schemas/KIND.schema.json)
SCHEMA_KINDS = ("zone", "server")

logger = logging.getLogger("gslb")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gslb", description="Global server load balancer: an authoritative DNS server.")
    p.add_argument("--version", action="version", version=f"gslb {__version__}")
    p.add_argument("--log-level", default=os.environ.get("GSLB_LOG_LEVEL") or None,
                   choices=["debug", "info", "warning", "error"],
                   help="log level (default info for serve and checker, warning for the other commands)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", metavar="FILE", help="server file (default: gslb.yaml when it exists)")

    s = sub.add_parser("serve", help="answer DNS (and run health checks, serve HTTP)")
    config_arg(s)
    s.add_argument("--zones", metavar="DIR", help="folder of zone files (*.yaml)")
    s.add_argument("--listen", metavar="HOST:PORT", action="append", help="DNS address, UDP and TCP (repeatable)")
    s.add_argument("--http", metavar="HOST:PORT", help="HTTP status address ('off' disables it)")
    s.add_argument("--geoip", metavar="FILE", help="GeoIP2/GeoLite2 City or Country database ('none': no database)")
    s.add_argument("--state", metavar="URL", help="site-state table: memory://, redis://HOST:PORT/DB or "
                   "redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER/DB")
    s.add_argument("--region", metavar="NAME", help="the region this node's checks count for")
    s.add_argument("--no-checks", action="store_true", help="answer DNS only, run no health checks")
    s.add_argument("--workers", type=int, metavar="N", help="worker processes (default 1)")

    c = sub.add_parser("check", help="validate the server file and zone files")
    config_arg(c)
    c.add_argument("--zones", metavar="DIR", help="folder of zone files (*.yaml)")

    e = sub.add_parser("explain", help="why a client gets the answer it gets")
    e.add_argument("name")
    e.add_argument("type", nargs="?", default="A")
    e.add_argument("--client", required=True, metavar="IP", help="the client's address (as if sent in ECS)")
    config_arg(e)
    e.add_argument("--zones", metavar="DIR", help="folder of zone files (*.yaml)")
    e.add_argument("--geoip", metavar="FILE", help="GeoIP database ('none': no database)")
    e.add_argument("--down", action="append", default=[], metavar="SITE",
                   help="treat SITE (or ZONE/SITE) as down (repeatable)")
    e.add_argument("--json", action="store_true", help="print the trace as JSON")

    pl = sub.add_parser("plan", help="which clients would change site (offline)")
    pl.add_argument("zone", metavar="ZONE", help="a zone of the zones folder")
    pl.add_argument("proposed", nargs="?", metavar="PROPOSED.yaml", help="the zone file as it would be")
    config_arg(pl)
    pl.add_argument("--zones", metavar="DIR", help="folder of zone files (*.yaml)")
    pl.add_argument("--geoip", metavar="FILE", help="GeoIP database ('none': no database)")
    pl.add_argument("--down", action="append", default=[], metavar="SITE", help="treat SITE as down (repeatable)")
    pl.add_argument("--drain", action="append", default=[], metavar="SITE",
                    help="treat SITE as drained: out unless every other site is down (repeatable)")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")

    k = sub.add_parser("checker", help="run one region's health checks into a shared Redis table")
    k.add_argument("--region", required=True, metavar="NAME")
    k.add_argument("--state", required=True, metavar="URL",
                   help="redis://HOST:PORT/DB or redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER/DB")
    config_arg(k)
    k.add_argument("--zones", metavar="DIR", help="folder of zone files (*.yaml)")

    sc = sub.add_parser("schema", help="print the JSON Schema of the zone file or the server file")
    sc.add_argument("kind", choices=SCHEMA_KINDS, help="zone (zones/NAME.yaml) or server (gslb.yaml)")
    d = sub.add_parser("dnssec", help="a signed zone's keys: keygen, ds, rollover, retire")
    dsub = d.add_subparsers(dest="dnssec_command", required=True, metavar="ACTION")
    for action, text in (("keygen", "create the zone's signing key (never overwrites)"),
                         ("ds", "the DS record(s) to give the parent zone"),
                         ("rollover", "the next key signs from now on; the active one is retired"),
                         ("retire", "stop publishing the retired key")):
        a = dsub.add_parser(action, help=text)
        a.add_argument("zone", metavar="ZONE")
        config_arg(a)
        a.add_argument("--zones", metavar="DIR", help="folder of zone files (*.yaml)")
        if action == "keygen":
            a.add_argument("--next", action="store_true",
                           help="create the next key (published, not signing yet) for a rollover")

    st = sub.add_parser("status", help="a running server's site states as a table")
    config_arg(st)
    st.add_argument("--http", metavar="URL",
                    help="the server's HTTP address (default: http: of the server file, else 127.0.0.1:8053)")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags that override the server file (only those given)."""
    out: dict[str, Any] = {}
    for name in ("zones", "geoip", "state", "region", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    if getattr(args, "listen", None):
        out["listen"] = args.listen
    http = getattr(args, "http", None)
    if http is not None and args.command == "serve":
        out["http"] = None if http.lower() in ("off", "none", "null", "") else http
    if getattr(args, "no_checks", False):
        out["checks"] = False
    return out


def _load_config(args: argparse.Namespace):  # -> ServerConfig
    from gslb.config import find_default_config, load_server_config

    path = args.config if args.config else find_default_config(os.getcwd())
    return load_server_config(path, _overrides(args))


def _print_errors(exc: ConfigErrors) -> None:
    for error in exc.errors:
        print(error, file=sys.stderr)


def _config_or_exit(args: argparse.Namespace, file_errors: int):  # -> ServerConfig | exit code
    """The configuration, or an exit code with the errors printed: EXIT_USAGE for a bad flag value,
    ``file_errors`` for errors in the server file."""
    try:
        return _load_config(args)
    except UsageError as exc:
        _print_errors(exc)
        return EXIT_USAGE
    except ConfigErrors as exc:
        _print_errors(exc)
        return file_errors


def _config_with_zones(args: argparse.Namespace):  # -> ServerConfig | exit code
    """The configuration, or EXIT_INVALID (errors printed) when it or its zone folder is unusable."""
    config = _config_or_exit(args, EXIT_INVALID)
    if isinstance(config, int):
        return config
    from gslb.zonestore import check_zones_folder

    problem = check_zones_folder(config.zones, "--zones" if getattr(args, "zones", None) else "zones")
    if problem is not None:
        if not getattr(args, "zones", None) and config.file is None:
            problem += " (no server file: set the folder with --zones, or zones: in gslb.yaml)"
        print(problem, file=sys.stderr)
        return EXIT_INVALID
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    """``gslb serve``: run the server until stopped (exit 2 for a bad flag, 3 when it cannot start)."""
    from gslb.app import run

    config = _config_or_exit(args, EXIT_STARTUP)  # bad flag: 2; errors in the server file: 3
    if isinstance(config, int):
        return config
    return run(config, _overrides(args))


def cmd_check(args: argparse.Namespace) -> int:
    """``gslb check``: validate the server file and every zone file (exit 1 listing every error)."""
    from gslb.zonestore import check_directory

    config = _config_with_zones(args)
    if isinstance(config, int):
        return config
    errors = check_directory(config.zones, config.max_zone_file_bytes)
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"gslb check: {len(errors)} error(s)", file=sys.stderr)
        return EXIT_INVALID
    print(f"gslb check: {config.zones}: ok")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    """``gslb explain``: print why ``--client`` gets the answer it gets for a name."""
    import random

    from gslb.balancer import Balancer
    from gslb.config import usable_geoip
    from gslb.explain import explain, format_text
    from gslb.geo import GeoLocator
    from gslb.model import SiteStatus, StateView
    from gslb.zonestore import ZoneStore

    config = _config_with_zones(args)
    if isinstance(config, int):
        return config
    store = ZoneStore(config.zones, max_file_bytes=config.max_zone_file_bytes)
    result = store.reload(force=True)
    for error in result.get("errors", []):
        print(error, file=sys.stderr)
    zones = store.zones
    qname = args.name.lower().rstrip(".") + "."
    home = zones.find(qname)
    sites: dict[tuple[str, str], SiteStatus] = {}
    for item in args.down:
        zone_key, _, site = item.rpartition("/")
        zone = zones.by_key(zone_key) if zone_key else home
        if zone is None or site not in zone.sites:
            print(f"gslb explain: --down {item}: no such site", file=sys.stderr)
            return EXIT_USAGE
        sites[(zone.key, site)] = SiteStatus(override="down")
    view = StateView(version=1, sites=sites)
    try:
        geo = GeoLocator.open(usable_geoip(config))
    except GslbError as exc:
        where = "--geoip" if getattr(args, "geoip", None) is not None else "geoip"
        print(f"gslb explain: {where}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    balancer = Balancer(geo, dict(config.regions), random.Random())
    try:
        trace = explain(zones, balancer, view, args.name, args.type.upper(), args.client)
    except ValueError as exc:
        where = "--client" if "client address" in str(exc) else "TYPE" if "query type" in str(exc) else "NAME"
        print(f"gslb explain: {where}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(trace, indent=2) if args.json else format_text(trace))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    """``gslb plan``: which countries' clients would change site under PROPOSED.yaml and/or with
    sites down or drained (nothing printed, exit 0, when none would)."""
    from gslb.config import usable_geoip
    from gslb.geo import GeoLocator
    from gslb.netmap import NetworkIndex
    from gslb.trafficmap import MapEngine, format_plan, plan_zone
    from gslb.zonefile import load_zone_file
    from gslb.zonestore import ZoneStore

    config = _config_with_zones(args)
    if isinstance(config, int):
        return config
    store = ZoneStore(config.zones, max_file_bytes=config.max_zone_file_bytes)
    result = store.reload(force=True)
    zone = store.zones.by_key(args.zone.strip().lower().rstrip("."))
    if zone is None:
        for error in result.get("errors", []):
            print(error, file=sys.stderr)
        print(f"gslb plan: ZONE: no zone {args.zone!r} in {config.zones}", file=sys.stderr)
        return EXIT_USAGE if not result.get("errors") else EXIT_INVALID
    after = zone
    if args.proposed is not None:
        try:
            after = load_zone_file(args.proposed)
        except ConfigErrors as exc:
            _print_errors(exc)
            return EXIT_INVALID
        if after.key != zone.key:
            print(f"{args.proposed}:1: zone: expected {zone.key}, got {after.key}", file=sys.stderr)
            return EXIT_INVALID
    states: dict[str, str] = {}
    for flag, state in (("--down", "down"), ("--drain", "drain")):
        for site in getattr(args, flag[2:]):
            if site not in zone.sites and site not in after.sites:
                print(f"gslb plan: {flag} {site}: no such site in {zone.key}", file=sys.stderr)
                return EXIT_USAGE
            states[site] = state
    try:
        # no per-address cache: the index looks every database record up once
        geo = GeoLocator.open(usable_geoip(config), cache_size=0)
    except GslbError as exc:
        where = "--geoip" if getattr(args, "geoip", None) is not None else "geoip"
        print(f"gslb plan: {where}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    with geo:
        plan = plan_zone(MapEngine(NetworkIndex.build(geo)), zone, after, {}, states)
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        text = format_plan(plan)
        if text:
            print(text)
    return EXIT_OK


def cmd_checker(args: argparse.Namespace) -> int:
    """``gslb checker``: run one region's health checks into the shared Redis table until stopped."""
    import asyncio
    import signal

    from gslb.checker import run_checker

    from gslb.config import REDIS_SCHEMES

    config = _config_or_exit(args, EXIT_STARTUP)  # bad flag: 2; errors in the server file: 3
    if isinstance(config, int):
        return config
    if config.state.partition("://")[0] not in REDIS_SCHEMES:
        print(f"gslb checker: --state: expected the shared Redis table (redis://HOST:PORT/DB, rediss://..., "
              f"unix://PATH or redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER/DB), got {config.state!r}",
              file=sys.stderr)
        return EXIT_USAGE

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_checker(config, args.region, args.state, stop)

    try:
        asyncio.run(main())
    except GslbError as exc:
        print(f"gslb checker: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return EXIT_OK


def schema_text(kind: str) -> str:
    """The JSON Schema (draft 2020-12) of a ``zone`` or ``server`` file, as shipped in the package."""
    from importlib.resources import files

    return files("gslb").joinpath("schemas", f"{kind}.schema.json").read_text(encoding="utf-8")


def cmd_schema(args: argparse.Namespace) -> int:
    """``gslb schema zone|server``: print the file's JSON Schema (for editors and CI)."""
    sys.stdout.write(schema_text(args.kind))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """``gslb status``: a running server's zones and site states as a table."""
    from gslb.status_cli import run_status

    return run_status(args.http, args.config)


def cmd_dnssec(args: argparse.Namespace) -> int:
    """``gslb dnssec ACTION ZONE``: key files of a signed zone (gslb.dnssec_cli)."""
    from gslb.dnssec_cli import run as run_dnssec

    config = _config_with_zones(args)
    if isinstance(config, int):
        return config
    return run_dnssec(args, config.zones)


COMMANDS = {"serve": cmd_serve, "check": cmd_check, "explain": cmd_explain, "plan": cmd_plan,
            "checker": cmd_checker, "status": cmd_status, "schema": cmd_schema, "dnssec": cmd_dnssec}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gslb`` console script."""
    args = _parser().parse_args(argv)
    level = args.log_level or ("info" if args.command in ("serve", "checker") else "warning")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return EXIT_OK
