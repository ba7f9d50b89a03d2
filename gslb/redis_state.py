"""Cluster mode: the site-state table's results and overrides shared through Redis.

Key layout (``P`` is the versioned prefix, ``gslb:v1:``; every name part is percent-encoded
with ``urllib.parse.quote(part, safe="")`` so a ``:`` inside a name cannot split a key):

- ``P result:ZONE:SITE:REGION`` -- string, JSON ``{"state", "checked_at", "rtt_ms", "load",
  "error", "stale_after"}``, written with ``PX`` = stale_after, so the results of an agent that
  died disappear on their own. One key per (zone, site, region): several agents of one region
  overwrite each other (the newer ``checked_at`` wins, enforced by a Lua script), never
  double-count.
- ``P overrides`` -- hash, field ``ZONE:SITE``, value JSON ``{"state", "set_at"}``; no expiry:
  only an operator removes an override. A removal is kept as a tombstone ``{"state": null,
  "set_at"}`` for ``TOMBSTONE_TTL`` (then deleted): writes are last-writer-wins by ``set_at``
  (a Lua script compares), so a node that still remembers an older value can never put it back
  over a newer value or a newer removal.
- ``P epoch`` -- string, a random id set once (``SET NX``), checked on every connection and
  every resync; when it changes the Redis lost its data (restart without persistence,
  FLUSHALL) and every node writes back the overrides, tombstones and fresh results it still
  knows (through the same compare scripts, so the newest of each wins).
- ``P events`` -- pub/sub channel; compact JSON messages:
  ``{"kind": "results", "items": [{"zone", "site", "region", "result": {...}}, ...], "node"}``
  (the results one flush stored: a writer gathers results for up to ``RESULT_BATCH`` seconds,
  so a checker probing 50 sites a second sends about ten messages a second, not fifty, and
  every node reads that much less), ``{"kind": "result", "zone", "site", "region", "result",
  "node"}`` (one result: what earlier versions send; still understood),
  ``{"kind": "override", "zone", "site", "state": "down" | null, "set_at", "node"}`` and
  ``{"kind": "resync"}`` (ask every node for a full resynchronisation now).

Every node also rereads everything (SCAN + MGET + HGETALL) every ``resync_interval`` seconds and
after every reconnect, so a lost message never leaves a node wrong for long.

Faults: no method raises because Redis is down. Writes update this node's copy at once and are
queued (latest value per key) until Redis is reachable again; reconnection uses exponential
backoff with jitter (never more than ``backoff_cap`` between attempts); ``connected`` tells the
table to freeze staleness meanwhile. The backend owns the ``OutageClock`` (``gslb.state``: its
docstring has the rules) and replaces it at every connect and disconnect; the table reads it, and
this backend judges with the same clock which results it keeps when Redis no longer has them.

Everything read from Redis is validated: numbers finite, ``stale_after`` in (0, 1 day], and a
result whose ``checked_at`` is more than ``MAX_SKEW`` seconds ahead of this node's clock is
rejected (ignored, counted in ``bad_entries``, logged once per key); an override's ``set_at``
ahead of the clock by more than that is clamped (the override applies, it only orders writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import secrets
import time
from dataclasses import replace
from typing import Any, Awaitable, Callable, Mapping, cast
from urllib.parse import quote, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gslb.config import REDIS_SCHEMES, SENTINEL_SCHEME, check_state_url, parse_sentinel_url, redact_url
from gslb.errors import StartupError
from gslb.model import Override, RegionResult, SiteKey
from gslb.state import OutageClock, parse_override

logger = logging.getLogger(__name__)

#: key prefix of this layout version; a future incompatible layout uses gslb:v2:
PREFIX = "gslb:v1:"
#: seconds ``close`` keeps cancelling the background task before it gives up
CLOSE_TIMEOUT = 3.0
#: seconds a time read from Redis may be ahead of this node's clock
MAX_SKEW = 60.0
#: the longest stale_after accepted (longer ones are capped when written, rejected when read)
MAX_STALE_AFTER = 86400.0
#: seconds a removed override is remembered (tombstone) so that no stale copy revives it
TOMBSTONE_TTL = 7 * 86400.0

#: store a result only when it is not older than the stored one (the flush announces the stored
#: ones in one message); a stored time beyond the writer's clock + MAX_SKEW (ARGV[4]) never
#: blocks a write
_PUT_RESULT_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' then
    local t = tonumber(old['checked_at'])
    if t and t > tonumber(ARGV[2]) and t <= tonumber(ARGV[4]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

#: seconds a writer gathers results before it stores and announces them together
RESULT_BATCH = 0.1

#: last-writer-wins by set_at for an override or a tombstone (same rules as results)
_PUT_OVERRIDE_LUA = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' then
    local t = tonumber(old['set_at'])
    if t and t > tonumber(ARGV[3]) and t <= tonumber(ARGV[4]) then
      return 0
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[5])
return 1
"""

#: delete an expired tombstone unless it changed meanwhile
_PURGE_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


#: errors that mean "Redis is not usable right now" (never raised to callers)
_TRANSIENT = (RedisError, OSError, asyncio.TimeoutError, EOFError)

ResultKey = tuple[SiteKey, str]


def encode_result(result: RegionResult) -> dict[str, Any]:
    """A result as the JSON object stored in Redis and sent in messages."""
    return {"state": result.state, "checked_at": result.checked_at, "rtt_ms": result.rtt_ms,
            "load": result.load, "error": result.error, "stale_after": result.stale_after}


def _number(value: Any, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    return float(value)


def decode_result(obj: Any, now: float | None = None) -> RegionResult:
    """The JSON object of ``encode_result`` back as a RegionResult; ValueError when malformed.

    ``stale_after`` must be in (0, MAX_STALE_AFTER]; with ``now``, ``checked_at`` must not be
    more than MAX_SKEW seconds in the future (such a result would outlive its key).
    """
    if not isinstance(obj, dict):
        raise ValueError(f"expected an object, got {type(obj).__name__}")
    state = obj.get("state")
    if state not in ("up", "down"):
        raise ValueError(f"state: expected up or down, got {state!r}")
    error = obj.get("error")
    if error is not None and not isinstance(error, str):
        raise ValueError(f"error: expected a string or null, got {error!r}")
    stale_after = _number(obj.get("stale_after"), "stale_after")
    assert stale_after is not None
    if not 0 < stale_after <= MAX_STALE_AFTER:
        raise ValueError(f"stale_after: expected > 0 and <= {MAX_STALE_AFTER:g}, got {stale_after!r}")
    checked_at = _number(obj.get("checked_at"), "checked_at")
    assert checked_at is not None
    if now is not None and checked_at > now + MAX_SKEW:
        raise ValueError(f"checked_at: {checked_at!r} is more than {MAX_SKEW:g}s ahead of this "
                         f"node's clock ({now:.3f}); check the clocks (NTP)")
    return RegionResult(state=state, checked_at=checked_at,
                        rtt_ms=_number(obj.get("rtt_ms"), "rtt_ms", optional=True),
                        load=_number(obj.get("load"), "load", optional=True),
                        error=error, stale_after=stale_after)


def decode_override(obj: Any, now: float) -> tuple[Override | None, float]:
    """``(state, set_at)`` of an overrides-hash value or override message; ValueError when malformed.

    ``state`` None is a removal (tombstone). A missing ``set_at`` (an entry written by hand)
    counts as 0, the oldest; one more than MAX_SKEW ahead of ``now`` is clamped to it.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"expected an object, got {type(obj).__name__}")
    state = parse_override(obj.get("state"), removal=None)
    set_at = _number(obj.get("set_at", 0.0), "set_at")
    assert set_at is not None
    return state, min(set_at, now + MAX_SKEW)


def backoff_delay(delay: float, cap: float, u: float) -> float:
    """The wait before the next attempt: ``delay`` jittered to [0.5, 1.5) x by ``u`` in [0, 1), at most ``cap``."""
    return min(cap, delay * (0.5 + u))


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library call swallowed (redis-py does, inside commands)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _stop(tasks: set[asyncio.Task[Any]], timeout: float) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them, cancelling again every 0.1 s (redis-py may swallow a
    cancellation inside a command), for at most ``timeout`` seconds; return those still running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {t for t in tasks if not t.done()}
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            break
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=min(0.1, left))
    return pending


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class _SentinelMaster(aioredis.Redis):
    """The master of a Sentinel-monitored Redis; closing it also closes the Sentinel connections."""

    sentinel_nodes: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the master's connections, then the Sentinels'."""
        try:
            await super().aclose(close_connection_pool)
        finally:
            for node in self.sentinel_nodes.sentinels if self.sentinel_nodes is not None else ():
                await node.aclose()


def sentinel_client(url: str, timeout: float) -> aioredis.Redis:
    """A client of the master a ``redis+sentinel://`` URL names: every new connection asks the
    Sentinels where the master is now, so after a failover the next (re)connection reaches the
    promoted replica (:class:`RedisBackend` reconnects when a command fails)."""
    spec = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if spec.sentinel_password:
        sentinel_kwargs["password"] = spec.sentinel_password
    sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs=sentinel_kwargs)
    client = sentinel.master_for(spec.master, redis_class=_SentinelMaster, db=spec.db, username=spec.username,
                                 password=spec.password, retry=Retry(NoBackoff(), 0), socket_timeout=timeout,
                                 socket_connect_timeout=timeout, decode_responses=True)
    client.sentinel_nodes = sentinel
    return client


class RedisBackend:
    """A StateBackend shared by every node and checker agent through one Redis database."""

    def __init__(self, url: str, *, prefix: str = PREFIX, resync_interval: float = 5.0,
                 backoff_initial: float = 0.1, backoff_cap: float = 5.0, timeout: float = 2.0,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 node_id: str | None = None) -> None:
        problem = check_state_url(url)  # the one scheme check (gslb.config)
        if problem is None and urlsplit(url).scheme not in REDIS_SCHEMES:
            problem = f"{redact_url(url)!r} is not a Redis URL"
        if problem is not None:
            raise StartupError(f"state: unsupported URL {problem}, expected "
                               "redis://[:PASSWORD@]HOST:PORT/DB, rediss://..., unix://PATH or "
                               "redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER/DB")
        self._url = url
        #: the URL without its password (shown in /api/v1/status)
        self.url = redact_url(url)
        self.prefix = prefix
        self.channel = prefix + "events"
        self.resync_interval = resync_interval
        self.backoff_initial = backoff_initial
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self.node_id = node_id or secrets.token_hex(4)
        self._clock = clock
        self._rng = rng or random.Random()
        self._results: dict[SiteKey, dict[str, RegionResult]] = {}
        self._overrides: dict[SiteKey, Override] = {}
        # set_at of every known override and of every remembered removal (tombstone)
        self._override_at: dict[SiteKey, float] = {}
        # writes not yet in Redis: latest per key; results carry their expiry in seconds,
        # overrides their (state or None, set_at)
        self._pending_results: dict[ResultKey, tuple[RegionResult, float]] = {}
        self._pending_overrides: dict[SiteKey, tuple[Override | None, float]] = {}
        self._bad_logged: set[str] = set()
        # change sequence per key, so a resync never undoes a change newer than its snapshot
        self._seq = 0
        self._touched_results: dict[ResultKey, int] = {}
        self._touched_overrides: dict[SiteKey, int] = {}
        self._epoch: str | None = None
        # the one outage clock (gslb.state.OutageClock), read by the table: results missing
        # from Redis stay known here until stale in *connected* time, by the same clock
        self._outage = OutageClock()
        self._first_attempt = asyncio.Event()
        self._notify: asyncio.TimerHandle | None = None
        self._connected = False
        self._closing = False
        self._outage_logged = False
        self._on_change: Callable[[], None] = lambda: None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._resync_now = asyncio.Event()
        #: connection and command failures so far (for /metrics)
        self.errors = 0
        #: malformed entries or messages ignored so far
        self.bad_entries = 0
        #: completed full resynchronisations
        self.resyncs = 0
        #: successful (re)connections
        self.connects = 0
        #: the last connection error, None while connected
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        """Whether Redis is reachable now (and this node's copy was resynchronised)."""
        return self._connected

    @property
    def outage(self) -> OutageClock:
        """The outage clock: replaced at every connect and disconnect, pruned at every resync."""
        return self._outage

    @property
    def pending(self) -> int:
        """Writes waiting for Redis to be reachable."""
        return len(self._pending_results) + len(self._pending_overrides)

    async def start(self, on_change: Callable[[], None]) -> None:
        """Connect and load the shared state; never raises for an unreachable Redis.

        Waits for the outcome of the first attempt (at most about twice ``timeout``), so a node
        answers from the shared state from its first query; then keeps (re)connecting in the
        background.
        """
        self._on_change = on_change
        self._closing = False
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._supervise(), name=f"redis-state {self.url}")
            try:
                await asyncio.wait_for(self._first_attempt.wait(), 2 * self.timeout + 0.5)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        """Stop the background task and disconnect (pending writes that never reached Redis are lost)."""
        self._closing = True
        if self._notify is not None:
            self._notify.cancel()
            self._notify = None
        task = self._task
        if task is not None:
            if await _stop({task}, CLOSE_TIMEOUT):
                # kept (not dropped): a later close() cancels it again, start() reuses it
                logger.warning("state: background task of %s did not stop within %.0fs",
                               self.url, CLOSE_TIMEOUT)
            else:
                self._task = None
        self._connected = False

    # writers ------------------------------------------------------------------------------

    async def put_result(self, key: SiteKey, region: str, result: RegionResult) -> None:
        """Store one region's result for a site: visible here at once, in Redis as soon as reachable.

        Like MemoryBackend, does not call ``on_change`` (the table rebuilds after its own writes).
        """
        if result.stale_after > MAX_STALE_AFTER:
            result = replace(result, stale_after=MAX_STALE_AFTER)
        self._seq += 1
        self._touched_results[(key, region)] = self._seq
        self._results.setdefault(key, {})[region] = result
        self._pending_results[(key, region)] = (result, result.stale_after)
        self._wake.set()

    async def put_override(self, key: SiteKey, state: Override | None) -> None:
        """Store (or with None remove) an operator override; durable (no expiry); no ``on_change``.

        Stamped with ``set_at`` = now (and later than any value this node knows for the site),
        so it wins over every older value or removal, wherever they are remembered.
        """
        state = parse_override(state, removal=None)
        set_at = max(self._clock(), self._override_at.get(key, -math.inf) + 0.001)
        self._seq += 1
        self._touched_overrides[key] = self._seq
        self._set_override(key, state, set_at)
        self._pending_overrides[key] = (state, set_at)
        self._wake.set()

    def _set_override(self, key: SiteKey, state: Override | None, set_at: float) -> None:
        self._override_at[key] = set_at
        if state is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = state

    # readers ------------------------------------------------------------------------------

    def results(self) -> Mapping[SiteKey, Mapping[str, RegionResult]]:
        """The latest results known to this node (the last known ones while Redis is unreachable).

        This node's own copy, not a copy of it (``StateBackend.results``): read only.
        """
        return self._results

    def overrides(self) -> Mapping[SiteKey, Override]:
        """The overrides known to this node (the last known ones while Redis is unreachable); read only."""
        return self._overrides

    # keys and messages --------------------------------------------------------------------

    def result_key(self, key: SiteKey, region: str) -> str:
        """The Redis key of one region's result for one site."""
        zone, site = key
        return f"{self.prefix}result:{quote(zone, safe='')}:{quote(site, safe='')}:{quote(region, safe='')}"

    @property
    def overrides_key(self) -> str:
        """The Redis hash of all overrides."""
        return self.prefix + "overrides"

    @staticmethod
    def override_field(key: SiteKey) -> str:
        """The field of one site in the overrides hash."""
        return f"{quote(key[0], safe='')}:{quote(key[1], safe='')}"

    def _parse_result_key(self, raw: str) -> ResultKey | None:
        parts = raw[len(self.prefix) + len("result:"):].split(":")
        if len(parts) != 3:
            return None
        zone, site, region = (unquote(p) for p in parts)
        return (zone, site), region

    @staticmethod
    def _parse_override_field(raw: str) -> SiteKey | None:
        parts = raw.split(":")
        if len(parts) != 2:
            return None
        return unquote(parts[0]), unquote(parts[1])

    def _message(self, **fields: Any) -> str:
        return json.dumps({**fields, "node": self.node_id}, separators=(",", ":"))

    # the connection -----------------------------------------------------------------------

    def _changed(self) -> None:
        """Tell the table now (cancels a coalesced call that is due)."""
        if self._notify is not None:
            self._notify.cancel()
            self._notify = None
        try:
            self._on_change()
        except Exception:  # a listener's bug must not stop the state backend
            logger.exception("state: change listener failed")

    def _changed_soon(self) -> None:
        """Tell the table within 50 ms: a burst of messages costs one view rebuild, not one each."""
        if self._notify is None:
            self._notify = asyncio.get_running_loop().call_later(0.05, self._changed)

    def _set_connected(self, value: bool) -> None:
        """Note a connect or disconnect on the outage clock and tell the table."""
        if self._connected != value:
            now = self._clock()
            if value:
                since = self._outage.down_since
                if since is not None:
                    logger.info("state: %s reachable again after %.1fs; staleness resumes",
                                self.url, now - since)
                self._outage = self._outage.on_connect(now)
            else:
                self._outage = self._outage.on_disconnect(now)
                if self._outage.frozen:  # (the reason is logged by _supervise)
                    logger.info("state: %s lost; staleness frozen at the last known states", self.url)
            self._connected = value
            self._changed()

    def _expiry(self, result: RegionResult) -> float:
        """Wall time at which a result turns stale in connected time (``OutageClock.expires_at``)."""
        return self._outage.expires_at(result, self._clock())

    def _client(self) -> aioredis.Redis:
        # No retries inside redis-py: this class reconnects itself, and a command must fail fast.
        if self._url.startswith(SENTINEL_SCHEME + "://"):
            return sentinel_client(self._url, self.timeout)
        return aioredis.from_url(self._url, retry=Retry(NoBackoff(), 0), socket_timeout=self.timeout,
                                 socket_connect_timeout=self.timeout, decode_responses=True)

    async def _supervise(self) -> None:
        delay = self.backoff_initial
        while not self._closing:
            client = self._client()
            pubsub = client.pubsub()
            try:
                await self._session(client, pubsub)
            except _TRANSIENT as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if not self._outage_logged:
                    logger.warning("state: %s unreachable (%s); keeping the last known state, "
                                   "retrying with backoff", self.url, self.last_error)
                    self._outage_logged = True
                else:
                    logger.debug("state: %s still unreachable: %s", self.url, self.last_error)
                if self._connected:
                    delay = self.backoff_initial
                self._set_connected(False)
            finally:
                self._first_attempt.set()
                await self._quietly(pubsub.aclose())
                await self._quietly(client.aclose())
            if self._closing:
                break
            await asyncio.sleep(backoff_delay(delay, self.backoff_cap, self._rng.random()))
            delay = min(delay * 2, self.backoff_cap)

    @staticmethod
    async def _quietly(aw: Awaitable[Any]) -> None:
        try:
            await asyncio.wait_for(aw, 1.0)
        except (*_TRANSIENT, RuntimeError):
            pass

    async def _session(self, client: aioredis.Redis, pubsub: Any) -> None:
        """One connection: subscribe, flush queued writes, resync, then serve until an error."""
        await client.ping()
        # Subscribe before the first snapshot, so no change between the two can be missed.
        await pubsub.subscribe(self.channel)
        await self._check_epoch(client)
        await self._flush(client)
        await self._resync(client)
        self.connects += 1
        self.last_error = None
        self._outage_logged = False
        logger.info("state: connected to %s (%d sites with results, %d overrides)",
                    self.url, len(self._results), len(self._overrides))
        self._set_connected(True)
        self._first_attempt.set()
        tasks = [asyncio.create_task(self._listen(pubsub)), asyncio.create_task(self._work(client))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            await _stop(set(tasks), 2.0)

    async def _check_epoch(self, client: aioredis.Redis) -> None:
        """Notice a Redis that lost its data since the last check, and write back what is known.

        Overrides and tombstones go back with their own ``set_at`` through the compare script,
        so between nodes that remember different values the newest wins, as it did before.
        """
        epoch_key = self.prefix + "epoch"
        await client.set(epoch_key, secrets.token_hex(8), nx=True)
        epoch = cast("str | None", await client.get(epoch_key))  # decode_responses=True: str
        if self._epoch is not None and epoch != self._epoch:
            now = self._clock()
            republished = 0
            for key, set_at in self._override_at.items():
                self._pending_overrides.setdefault(key, (self._overrides.get(key), set_at))
            for key, regions in self._results.items():
                for region, result in regions.items():
                    left = self._expiry(result) - now
                    if left > 0:
                        self._pending_results.setdefault((key, region), (result, left))
                        republished += 1
            logger.warning("state: %s lost its data (epoch %s -> %s); republishing %d override(s) or "
                           "removal(s) and %d fresh result(s)", self.url, self._epoch, epoch,
                           len(self._override_at), republished)
        self._epoch = epoch

    async def _flush(self, client: aioredis.Redis) -> None:
        """Write every queued change (one pipeline per batch); on failure they stay queued."""
        while self._pending_results or self._pending_overrides:
            results, self._pending_results = self._pending_results, {}
            overrides, self._pending_overrides = self._pending_overrides, {}
            ceiling = repr(self._clock() + MAX_SKEW)
            try:
                items = []
                async with client.pipeline(transaction=False) as pipe:
                    for (key, region), (result, ttl) in results.items():
                        body = encode_result(result)
                        items.append({"zone": key[0], "site": key[1], "region": region, "result": body})
                        pipe.eval(_PUT_RESULT_LUA, 1, self.result_key(key, region),
                                  json.dumps(body, separators=(",", ":")), repr(result.checked_at),
                                  max(1, int(ttl * 1000)), ceiling)
                    for key, (state, set_at) in overrides.items():
                        msg = self._message(kind="override", zone=key[0], site=key[1], state=state,
                                            set_at=set_at)
                        pipe.eval(_PUT_OVERRIDE_LUA, 2, self.overrides_key, self.channel,
                                  self.override_field(key),
                                  json.dumps({"state": state, "set_at": set_at}, separators=(",", ":")),
                                  repr(set_at), ceiling, msg)
                    written = await pipe.execute()
                stored = [item for item, ok in zip(items, written, strict=False) if ok]  # then the overrides' replies
                if stored:
                    await client.publish(self.channel, self._message(kind="results", items=stored))
                if not all(written):
                    # Redis holds something newer than this write: take it over at once.
                    self._resync_now.set()
            except BaseException:
                # Keep them for the next connection, unless a newer value was queued meanwhile.
                for rkey, value in results.items():
                    self._pending_results.setdefault(rkey, value)
                for okey, entry in overrides.items():
                    self._pending_overrides.setdefault(okey, entry)
                raise

    async def _work(self, client: aioredis.Redis) -> None:
        """Flush writes as they come and resynchronise periodically (one task: they never overlap)."""
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self.resync_interval
        while True:
            _raise_if_cancelling()
            if self._pending_results and not self._pending_overrides:
                # gather the results of the next RESULT_BATCH seconds into this flush; an
                # override (or closing) ends the wait at once
                deadline = loop.time() + RESULT_BATCH
                while not self._pending_overrides and not self._closing:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), left)
            self._wake.clear()
            await self._flush(client)
            if self._resync_now.is_set() or loop.time() >= next_resync:
                self._resync_now.clear()
                await self._check_epoch(client)  # a FLUSHALL keeps the connection
                await self._flush(client)
                await self._resync(client)
                next_resync = loop.time() + self.resync_interval
                continue
            if self._pending_results or self._pending_overrides:
                continue
            waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(self._resync_now.wait())]
            try:
                await asyncio.wait(waits, timeout=max(0.0, next_resync - loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def _listen(self, pubsub: Any) -> None:
        """Apply change messages as they arrive."""
        while True:
            _raise_if_cancelling()
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None and msg.get("type") == "message":
                self._apply_message(msg["data"])

    def _apply_message(self, data: str) -> None:
        msg: Any = None
        try:
            msg = json.loads(data)
            kind = msg.get("kind") if isinstance(msg, dict) else None
            if kind == "results":
                items = msg["items"]
                if not isinstance(items, list):
                    raise ValueError("items: expected a list")
                if not any([self._apply_result(item) for item in items]):
                    return
            elif kind == "result":
                if not self._apply_result(msg):
                    return
            elif kind == "override":
                key = (str(msg["zone"]), str(msg["site"]))
                state, set_at = decode_override(msg, self._clock())
                known = self._override_at.get(key)
                if known is not None and (known > set_at or (known == set_at and self._overrides.get(key) == state)):
                    return  # older than (or the same as) what this node knows
                self._seq += 1
                self._touched_overrides[key] = self._seq
                self._set_override(key, state, set_at)
            elif kind == "resync":
                self._resync_now.set()
                return
            else:
                raise ValueError(f"kind: unknown {kind!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.bad_entries += 1
            where = "message"
            if isinstance(msg, dict):
                where = f"message {msg.get('kind')} {msg.get('zone')}/{msg.get('site')}/{msg.get('region')}"
            self._log_bad(where, f"state: ignoring a malformed message on {self.channel}: {exc}: {data:.200}")
            return
        self._changed_soon()

    def _apply_result(self, item: Any) -> bool:
        """One announced result (``zone``, ``site``, ``region``, ``result``); True when it is news."""
        key: SiteKey = (str(item["zone"]), str(item["site"]))
        region = str(item["region"])
        result = decode_result(item["result"], self._clock())
        current = self._results.get(key, {}).get(region)
        if current == result or (current is not None and current.checked_at > result.checked_at):
            return False
        self._seq += 1
        self._touched_results[(key, region)] = self._seq
        self._results.setdefault(key, {})[region] = result
        return True

    async def _resync(self, client: aioredis.Redis) -> None:
        """Reread every result and override, replacing this node's copy (changes newer than the snapshot stay)."""
        seq0 = self._seq
        pattern = _glob_escape(self.prefix) + "result:*"
        names = [name async for name in client.scan_iter(match=pattern, count=1000)]
        values: list[str | None] = []
        for i in range(0, len(names), 500):
            values.extend(cast("list[str | None]", await client.mget(names[i:i + 500])))  # decode_responses=True
        raw_overrides = cast("Mapping[str, str]", await client.hgetall(self.overrides_key))

        now = self._clock()
        results: dict[SiteKey, dict[str, RegionResult]] = {}
        for name, value in zip(names, values, strict=True):
            if value is None:  # expired between SCAN and MGET
                continue
            parsed = self._parse_result_key(name)
            try:
                if parsed is None:
                    raise ValueError("key: expected PREFIX result:ZONE:SITE:REGION")
                result = decode_result(json.loads(value), now)
            except ValueError as exc:
                self._bad_entry(name, exc)
                continue
            results.setdefault(parsed[0], {})[parsed[1]] = result
        overrides: dict[SiteKey, Override] = {}
        override_at: dict[SiteKey, float] = {}
        expired: list[tuple[str, str]] = []
        for field, value in raw_overrides.items():
            okey = self._parse_override_field(field)
            try:
                if okey is None:
                    raise ValueError("field: expected ZONE:SITE")
                state, set_at = decode_override(json.loads(value), now)
            except ValueError as exc:
                self._bad_entry(f"{self.overrides_key} {field}", exc)
                continue
            if state is None and set_at < now - TOMBSTONE_TTL:
                expired.append((field, value))
                continue
            override_at[okey] = set_at
            if state is not None:
                overrides[okey] = state

        # Changes made or received after the snapshot began win over it.
        for rkey, seq in self._touched_results.items():
            if seq > seq0:
                (key, region) = rkey
                local = self._results.get(key, {}).get(region)
                if local is None:
                    results.get(key, {}).pop(region, None)
                else:
                    snap = results.get(key, {}).get(region)
                    if snap is None or snap.checked_at <= local.checked_at:
                        results.setdefault(key, {})[region] = local
        for okey, seq in self._touched_overrides.items():
            if seq > seq0:
                if okey in self._overrides:
                    overrides[okey] = self._overrides[okey]
                else:
                    overrides.pop(okey, None)
                if okey in self._override_at:
                    override_at[okey] = self._override_at[okey]
                else:
                    override_at.pop(okey, None)
        # A result gone from Redis (expired there, or Redis lost its data) stays known here
        # until it is stale in connected time: Redis's clock kept running during outages.
        for key, regions in self._results.items():
            for region, local in regions.items():
                if region not in results.get(key, {}) and self._expiry(local) > now:
                    results.setdefault(key, {})[region] = local
        self._outage = self._outage.pruned(results)
        self._touched_results = {k: s for k, s in self._touched_results.items() if s > seq0}
        self._touched_overrides = {k: s for k, s in self._touched_overrides.items() if s > seq0}
        results = {k: v for k, v in results.items() if v}

        self.resyncs += 1
        self._override_at = override_at
        if results != self._results or overrides != self._overrides:
            self._results = results
            self._overrides = overrides
            self._changed_soon()
        for field, value in expired:
            await client.eval(_PURGE_LUA, 1, self.overrides_key, field, value)

    def _bad_entry(self, where: str, exc: Exception) -> None:
        self.bad_entries += 1
        self._log_bad(where, f"state: ignoring malformed entry {where}: {exc}")

    def _log_bad(self, where: str, text: str) -> None:
        """Log a malformed entry or message: a warning the first time per place, then debug."""
        if where in self._bad_logged:
            logger.debug("%s", text)
            return
        if len(self._bad_logged) >= 1000:
            self._bad_logged.clear()
        self._bad_logged.add(where)
        logger.warning("%s (logged once)", text)
