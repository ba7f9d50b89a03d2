"""The HTTP endpoint: status, explain, metrics, reload, overrides and the dashboard (aiohttp).

A thin reader of the server's state: handlers read ``zone_store.zones`` and ``table.view`` (the
immutable snapshots) and never walk configuration files. Routes (SPEC "HTTP endpoint"):

    GET  /healthz                                 200 {"status": "ok"} while DNS serves, else 503
    GET  /api/v1/status                           zones, sites, pools, state backend, recent changes
    GET  /api/v1/explain?name=N&type=T&client=IP  the decision trace of a name for a client
    GET  /api/v1/map?zone=Z&pool=P                the pool's answer per country (the traffic map)
    GET  /api/v1/plan?zone=Z&down=S&drain=S       what would move against the live state
    POST /api/v1/plan?zone=Z&down=S&drain=S       the same under a proposed zone file (the body)
    GET  /metrics                                 Prometheus text format
    POST /api/v1/reload                           (token) reload zones, answer the result
    PUT  /api/v1/sites/{zone}/{site}/override     (token) {"state": "up"|"down"|"drain"|"auto"}
    GET  /                                        the dashboard; assets under /static/

Every error is JSON ``{"error": "..."}``, also the 400s of aiohttp's HTTP parser (a request line
over 8190 bytes, a bad header), which log one line each (``JsonErrorRunner``). Write endpoints
need ``Authorization: Bearer TOKEN``; with no token configured they answer 403, with a wrong or
missing one (any bytes) 401. A body announced bigger than MAX_BODY_BYTES is refused (413) before
it is read; a JSON body is at most MAX_JSON_BYTES and its parse errors (nesting too deep, an
integer of thousands of digits, bad UTF-8) are 400s. ``/static/NAME`` serves only the files the
static folder held at start-up (no file-system lookup of the client's path).

A site's overall ``state`` in /api/v1/status (and in gslb_site_state) is the table's verdict
(``SiteStateTable.site_state``): judged with the quorum of the first pool (in zone file order)
that lists the site, ``state.DEFAULT_QUORUM`` (0.5) for a site in no pool; each pool's
``up`` count uses that pool's own quorum. ``unknown`` (no fresh result yet) counts as up, as
it does in answers; ``drain`` does not.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server
from prometheus_client import CollectorRegistry

from gslb.errors import StartupError
from gslb.metrics import make_registry, render
from gslb.model import iso_time  # noqa: F401 (re-exported: the status API's time format)
from gslb.state import OVERRIDE_STATES, Change, UnknownSite, parse_override

if TYPE_CHECKING:
    from gslb.app import Server as GslbServer

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: what the PUT endpoint's body names, for error messages
_STATE_CHOICES = "|".join(f'"{s}"' for s in OVERRIDE_STATES)

#: query types the explain endpoint accepts
EXPLAIN_TYPES: frozenset[str] = frozenset(
    {"A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA", "NS", "PTR", "SOA", "ANY"})

_NAME_RE = re.compile(r"^[A-Za-z0-9_*.-]{1,253}$")

#: how many recent verdict changes /api/v1/status lists (the table keeps more:
#: ``state.CHANGES_KEPT``)
STATUS_CHANGES_LISTED = 50

#: the largest request body accepted at all (aiohttp's client_max_size); a bigger announced
#: Content-Length is refused before the body is read
MAX_BODY_BYTES = 1024 * 1024

#: the largest JSON body (the override's is a few bytes)
MAX_JSON_BYTES = 64 * 1024

#: the method aiohttp gives the stand-in request of an error of its HTTP parser
_PARSER_ERROR_METHOD = "UNKNOWN"

SERVER_KEY: web.AppKey[GslbServer] = web.AppKey("gslb_server")
REGISTRY_KEY = web.AppKey("gslb_registry", CollectorRegistry)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into JSON ``{"error": ...}``; log unexpected exceptions once."""
    size = request.content_length
    if size is not None and size > MAX_BODY_BYTES:
        response = _error(413, f"body: {size} bytes, larger than the limit {MAX_BODY_BYTES}")
        response.force_close()  # the body is not read: the connection cannot be reused
        return response
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return _error(exc.status, exc.text if exc.text and not exc.text.startswith(f"{exc.status}:")
                      else exc.reason.lower(), headers)
    except Exception:
        logger.exception("http: %s %s failed", request.method, request.path)
        return _error(500, "internal server error")


def _server(request: web.Request) -> Any:
    return request.app[SERVER_KEY]


def _change(item: Change) -> dict[str, Any]:
    """One recent verdict change as JSON."""
    return {"time": iso_time(item.at), "zone": item.zone, "site": item.site, "old": item.old, "new": item.new}


def build_status(server: Any) -> dict[str, Any]:
    """The /api/v1/status document (SPEC fields plus a few additions the dashboard uses)."""
    zones = server.zone_store.zones
    table = server.table
    view = table.view
    sites: list[dict[str, Any]] = []
    pools: list[dict[str, Any]] = []
    for zone in sorted(zones, key=lambda z: z.key):
        pools_of: dict[str, list[str]] = {}
        for pool in zone.pools.values():
            for name in pool.sites:
                pools_of.setdefault(name, []).append(pool.name)
        for name in sorted(zone.sites):
            site = zone.sites[name]
            status, state = table.site_state(zone.key, name)
            sites.append({
                "zone": zone.key,
                "site": name,
                "state": state,
                "override": status.override,
                "regions": {
                    region: {
                        "state": result.state,
                        "checked_at": iso_time(result.checked_at),
                        "rtt_ms": None if result.rtt_ms is None else round(result.rtt_ms, 3),
                        "load": result.load,
                        "error": result.error,
                    }
                    for region, result in sorted(status.regions.items())
                },
                "location": list(site.location) if site.location else None,
                "addresses": [*site.ipv4, *site.ipv6],
                "checks": list(site.checks),
                "weight": site.weight,
                "pools": pools_of.get(name, []),
            })
        for pool in zone.pools.values():
            up = sum(1 for name in pool.sites
                     if view.site(zone.key, name).state(pool.quorum) in ("up", "unknown"))
            pools.append({
                "zone": zone.key, "pool": pool.name, "policy": pool.policy,
                "up": up, "total": len(pool.sites), "sites": list(pool.sites),
            })
    backend = server.table.backend_status()
    config = server.config
    changes = list(server.table.changes)[-STATUS_CHANGES_LISTED:]
    return {
        "zones": server.zone_store.status(),
        "sites": sites,
        "pools": pools,
        "state_backend": {"url": backend.get("url"), "connected": bool(backend.get("connected"))},
        "region": config.region,
        "regions": {name: {"location": list(loc) if loc else None}
                    for name, loc in sorted(config.regions.items())},
        "changes": [_change(c) for c in reversed(changes)],
        "dns_ready": bool(server.dns_ready),
        "workers": _workers(server),
        "rate_limit": _rate_limit(server),
    }


def _rate_limit(server: Any) -> dict[str, Any] | None:
    """The response rate limiter: its settings and what it held back (every DNS process); None when off."""
    rl = getattr(server.config, "rate_limit", None)
    if rl is None or not rl.enabled:
        return None
    totals = getattr(server, "query_stats", None)
    stats = totals() if callable(totals) else server.stats
    return {"responses_per_second": rl.responses_per_second, "window": rl.window, "slip": rl.slip,
            "ipv4_prefix": rl.ipv4_prefix, "ipv6_prefix": rl.ipv6_prefix, "exempt": list(rl.exempt),
            "dropped": stats.rrl_dropped, "slipped": stats.rrl_slipped}


def _workers(server: Any) -> list[dict[str, Any]]:
    """The DNS processes: this one (worker 0) and the worker processes (``workers:`` above 1)."""
    rows = getattr(server, "dns_processes", None)
    if callable(rows):
        return rows()
    return [{"worker": 0, "pid": os.getpid(), "ready": bool(server.dns_ready), "restarts": 0}]


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 while the DNS listeners serve, 503 before and during shutdown."""
    if _server(request).dns_ready:
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "unavailable", "error": "DNS listeners are not serving"}, status=503)


async def status(request: web.Request) -> web.Response:
    """GET /api/v1/status."""
    return web.json_response(build_status(_server(request)))


async def explain(request: web.Request) -> web.Response:
    """GET /api/v1/explain?name=N&type=T&client=IP."""
    name = request.query.get("name", "").strip()
    qtype = request.query.get("type", "A").strip().upper() or "A"
    client = request.query.get("client", "").strip()
    if not name:
        return _error(400, "missing query parameter: name")
    if not _NAME_RE.match(name) or any(not 0 < len(label) <= 63 for label in name.rstrip(".").split(".")):
        return _error(400, f"name: not a domain name: {name!r}")
    if qtype not in EXPLAIN_TYPES:
        return _error(400, f"type: expected one of {', '.join(sorted(EXPLAIN_TYPES))}, got {qtype!r}")
    if not client:
        return _error(400, "missing query parameter: client")
    try:
        client = str(ipaddress.ip_address(client))
    except ValueError:
        return _error(400, f"client: not an IP address: {client!r}")
    try:
        trace = _server(request).explain(name, qtype, client)
    except ValueError as exc:
        return _error(400, str(exc))
    return web.json_response(trace)


async def traffic_map(request: web.Request) -> web.Response:
    """GET /api/v1/map?zone=Z&pool=P (computed by the builder process; gslb.mapservice)."""
    from gslb.mapservice import MapError

    zone = request.query.get("zone", "").strip()
    pool = request.query.get("pool", "").strip()
    if not zone:
        return _error(400, "missing query parameter: zone")
    if not pool:
        return _error(400, "missing query parameter: pool")
    maps = getattr(_server(request), "maps", None)
    if maps is None:
        return _error(503, "the traffic map is not available yet")
    try:
        return web.json_response(await maps.map(zone, pool))
    except MapError as exc:
        return _error(exc.status, str(exc))


async def plan(request: web.Request) -> web.Response:
    """GET /api/v1/plan?zone=Z&down=S&drain=S; POST with a proposed zone file as the body (its
    errors, as ``gslb check`` prints them, are a 400 with ``errors``)."""
    from gslb.errors import ConfigErrors
    from gslb.mapservice import MapError
    from gslb.zonefile import load_zone_bytes

    zone = request.query.get("zone", "").strip()
    if not zone:
        return _error(400, "missing query parameter: zone")
    down = [s.strip() for s in request.query.getall("down", []) if s.strip()]
    drain = [s.strip() for s in request.query.getall("drain", []) if s.strip()]
    maps = getattr(_server(request), "maps", None)
    if maps is None:
        return _error(503, "plans are not available yet")
    proposed = None
    if request.method == "POST":
        body = await request.read()
        if not body.strip():
            return _error(400, "body: expected the proposed zone file (YAML)")
        try:
            # in a worker thread, as zone reloads are (a big file is built under bulk_build)
            proposed = await asyncio.to_thread(load_zone_bytes, body, "proposed.yaml", 0.0)
        except ConfigErrors as exc:
            errors = [str(e) for e in exc.errors]
            return web.json_response({"error": f"proposed zone file: {len(errors)} error(s): {errors[0]}",
                                      "errors": errors}, status=400)
    try:
        return web.json_response(await maps.plan(zone, down, drain, proposed))
    except MapError as exc:
        return _error(exc.status, str(exc))


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    body = render(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _authorize(request: web.Request) -> web.Response | None:
    """None when the request carries the configured bearer token, else the error response."""
    token = _server(request).api_token
    if not token:
        return _error(403, "write endpoints are disabled: no api_token_file is configured")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # compare in constant time, as bytes (compare_digest rejects non-ASCII str); header bytes
    # that are not UTF-8 come as surrogate escapes, which encode back to those bytes
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, token.encode()):
        return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="gslb"'})
    return None


async def reload(request: web.Request) -> web.Response:
    """POST /api/v1/reload (token): reload zones now and answer the result."""
    denied = _authorize(request)
    if denied is not None:
        return denied
    result = await _server(request).reload()
    return web.json_response(result)


async def override(request: web.Request) -> web.Response:
    """PUT /api/v1/sites/{zone}/{site}/override (token), body {"state": ...}."""
    denied = _authorize(request)
    if denied is not None:
        return denied
    server = _server(request)
    zone_name = request.match_info["zone"]
    site_name = request.match_info["site"]
    body, problem = await read_json(request)
    if problem is not None:
        return problem
    state = body.get("state") if isinstance(body, dict) else None
    try:
        parse_override(state)  # the one validator (the table calls it too)
    except ValueError as exc:
        return _error(400, str(exc))
    zones = server.zone_store.zones
    zone = zones.by_key(zone_name)
    if zone is None or site_name not in zone.sites:
        served = ((z.key, name) for z in zones for name in z.sites)
        return _error(404, str(UnknownSite(zone.key if zone else zone_name, site_name, served)))
    try:
        await server.table.set_override(zone.key, site_name, state)
    except UnknownSite as exc:  # the table does not know it yet (a reload in progress)
        return _error(404, str(exc))
    logger.info("http: override %s/%s -> %s (from %s)", zone.key, site_name, state, request.remote)
    status, verdict = server.table.site_state(zone.key, site_name)
    return web.json_response({"zone": zone.key, "site": site_name,
                              "override": status.override, "state": verdict})


async def read_json(request: web.Request) -> tuple[Any, web.Response | None]:
    """(the JSON body, None), or (None, the 400/413 answer): at most MAX_JSON_BYTES, and a body
    the parser chokes on (too deep, an integer of thousands of digits, not UTF-8) is a 400."""
    data = await request.content.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        response = _error(413, f"body: larger than the limit {MAX_JSON_BYTES} bytes for JSON")
        response.force_close()  # the rest of the body is not read
        return None, response
    try:
        return json.loads(data.decode("utf-8")), None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        reason = "nested too deeply" if isinstance(exc, RecursionError) else \
            str(exc).partition(":")[0] if isinstance(exc, json.JSONDecodeError) else \
            "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "a number too long"
        return None, _error(400, f"body: expected JSON {{\"state\": {_STATE_CHOICES}}} ({reason})")


def static_handler(folder: Path) -> Handler:
    """GET /static/NAME: the files ``folder`` holds now, by exact name; anything else 404."""
    files = {p.name: p for p in folder.iterdir() if p.is_file()}

    async def serve(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    return serve


async def dashboard(request: web.Request) -> web.FileResponse:
    """GET /: the dashboard page."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(server: Any) -> web.Application:
    """The aiohttp application for ``server`` (a gslb.app.Server or an object with its attributes)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[SERVER_KEY] = server
    app[REGISTRY_KEY] = make_registry(server)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/explain", explain)
    app.router.add_get("/api/v1/map", traffic_map)
    app.router.add_get("/api/v1/plan", plan)
    app.router.add_post("/api/v1/plan", plan)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/api/v1/reload", reload)
    app.router.add_put("/api/v1/sites/{zone}/{site}/override", override)
    app.router.add_get("/", dashboard)
    app.router.add_get("/static/{name:.*}", static_handler(STATIC_DIR))
    return app


class AccessLogger(AbstractAccessLogger):
    """One line per request on ``gslb.http.access``: reads that succeed (dashboard polls, scrapes)
    at DEBUG, writes and errors at INFO."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Log one finished request (not the HTTP parser's 400s: ``handle_error`` logged them)."""
        if request.method == _PARSER_ERROR_METHOD and response.status == 400:
            return
        quiet = request.method in ("GET", "HEAD") and response.status < 400
        self.logger.log(logging.DEBUG if quiet else logging.INFO, '%s "%s %s" %s %.1fms',
                        request.remote, request.method, request.path_qs, response.status, time * 1000)


class _JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, with its own error answers (the HTTP parser's 400s, a
    handler's crash outside the middleware) as JSON and one log line, not a traceback."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """One log line and ``{"error": ...}`` (aiohttp: plain text and a traceback)."""
        if status >= 500:
            logger.error("http: %s %s failed: %s", request.method, request.path, _one_line(exc, message))
            response = _error(status, "internal server error")
        else:
            reason = _one_line(exc, message)
            logger.info("http: bad request from %s: %s", request.remote, reason)
            response = _error(status, f"bad request: {reason}")
        if request.writer.output_size > 0:  # as aiohttp: some of a response went out already
            raise ConnectionError("Response is sent already, cannot send another response")
        response.force_close()
        return response


def _one_line(exc: BaseException | None, message: str | None) -> str:
    """The parser's reason on one line, without the echoed request bytes, at most 200 characters."""
    text = getattr(exc, "message", None) or message or (str(exc) if exc is not None else "") or "error"
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    text = " ".join(str(text).split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 200 else text[:197] + "..."


class _JsonErrorServer(Server):
    """aiohttp's low-level server making :class:`_JsonErrorRequestHandler` connections."""

    def __call__(self) -> RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An AppRunner whose connections answer aiohttp's own errors as JSON with one log line.

    aiohttp has no public hook for the responses of its HTTP parser (``RequestHandler.handle_error``
    writes plain text and logs a traceback); this swaps in a subclass of its connection handler.
    """

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on host:port; raise StartupError when the address cannot be bound."""
    runner = JsonErrorRunner(app, access_log_class=AccessLogger, access_log=logging.getLogger("gslb.http.access"))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"http {host}:{port}: cannot listen: {exc.strerror or exc}") from exc
    logger.info("http: listening on %s:%s", host, port)
    return runner


async def stop_http(runner: web.AppRunner) -> None:
    """Stop serving and release the socket."""
    await runner.cleanup()
