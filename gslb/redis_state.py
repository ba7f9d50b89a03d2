"""Cluster mode: the site-state table's results and overrides shared through Redis.

Key layout (``P`` is the versioned prefix, ``gslb:v1:``; every name part is percent-encoded
with ``urllib.parse.quote(part, safe="")`` so a ``:`` inside a name cannot split a key):

- ``P result:ZONE:SITE:REGION`` -- string, JSON ``{"state", "checked_at", "rtt_ms", "load",
  "error", "stale_after"}``, written with ``PX`` = stale_after, so the results of an agent that
  died disappear on their own. One key per (zone, site, region): several agents of one region
  overwrite each other (the newer ``checked_at`` wins, enforced by a Lua script), never
  double-count.
- ``P overrides`` -- hash, field ``ZONE:SITE``, value JSON ``{"state", "set_at"}``; no expiry:
  only an operator removes an override.
- ``P epoch`` -- string, a random id set once (``SET NX``); when it changes between two
  connections the Redis lost its data (restart without persistence, FLUSHALL) and every node
  republishes the overrides and fresh results it still knows.
- ``P events`` -- pub/sub channel; one compact JSON message per change:
  ``{"kind": "result", "zone", "site", "region", "result": {...}, "node"}``,
  ``{"kind": "override", "zone", "site", "state": "down" | null, "node"}`` and
  ``{"kind": "resync"}`` (ask every node for a full resynchronisation now).

Every node also rereads everything (SCAN + MGET + HGETALL) every ``resync_interval`` seconds and
after every reconnect, so a lost message never leaves a node wrong for long.

Faults: no method raises because Redis is down. Writes update this node's copy at once and are
queued (latest value per key) until Redis is reachable again; reconnection uses exponential
backoff with jitter (capped at ``backoff_cap``); ``connected`` tells the table to freeze
staleness meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import secrets
import time
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gslb.errors import StartupError
from gslb.model import Override, RegionResult
from gslb.state import SiteKey, expires_at

logger = logging.getLogger(__name__)

#: key prefix of this layout version; a future incompatible layout uses gslb:v2:
PREFIX = "gslb:v1:"
SCHEMES = ("redis", "rediss", "unix")
_OVERRIDES = ("up", "down", "drain")

#: store a result only when it is not older than the stored one, then announce it (atomic)
_PUT_RESULT_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' and tonumber(old['checked_at'])
     and tonumber(old['checked_at']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[4])
return 1
"""

#: errors that mean "Redis is not usable right now" (never raised to callers)
_TRANSIENT = (RedisError, OSError, asyncio.TimeoutError, EOFError)

ResultKey = tuple[SiteKey, str]


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs and /api/v1/status)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


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


def decode_result(obj: Any) -> RegionResult:
    """The JSON object of ``encode_result`` back as a RegionResult; ValueError when malformed."""
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
    if stale_after <= 0:
        raise ValueError(f"stale_after: expected > 0, got {stale_after!r}")
    checked_at = _number(obj.get("checked_at"), "checked_at")
    assert checked_at is not None
    return RegionResult(state=state, checked_at=checked_at,
                        rtt_ms=_number(obj.get("rtt_ms"), "rtt_ms", optional=True),
                        load=_number(obj.get("load"), "load", optional=True),
                        error=error, stale_after=stale_after)


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library call swallowed (redis-py does, inside commands)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisBackend:
    """A StateBackend shared by every node and checker agent through one Redis database."""

    def __init__(self, url: str, *, prefix: str = PREFIX, resync_interval: float = 5.0,
                 backoff_initial: float = 0.1, backoff_cap: float = 5.0, timeout: float = 2.0,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 node_id: str | None = None) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in SCHEMES:
            raise StartupError(f"state: unsupported URL {redact_url(url)!r}, expected "
                               "redis://[:PASSWORD@]HOST:PORT/DB, rediss://... or unix://PATH")
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
        # writes not yet in Redis: latest per key; results carry their expiry in seconds
        self._pending_results: dict[ResultKey, tuple[RegionResult, float]] = {}
        self._pending_overrides: dict[SiteKey, Override | None] = {}
        # change sequence per key, so a resync never undoes a change newer than its snapshot
        self._seq = 0
        self._touched_results: dict[ResultKey, int] = {}
        self._touched_overrides: dict[SiteKey, int] = {}
        self._epoch: str | None = None
        # (start, end) wall times of finished outages, and the start of the current one:
        # results missing from Redis stay known here until stale in *connected* time, as the
        # table judges them (SPEC: an outage never turns a known-down site back up)
        self._outages: list[tuple[float, float]] = []
        self._outage_since: float | None = None
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
        if self._task is None:
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
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # bounded: redis-py may swallow a cancellation inside a command; the loops below
            # notice that, but closing must never hang the shutdown of a node
            await asyncio.wait({task}, timeout=3.0)
            if not task.done():
                logger.warning("state: background task of %s did not stop in time", self.url)
        self._connected = False

    # writers ------------------------------------------------------------------------------

    async def put_result(self, key: SiteKey, region: str, result: RegionResult) -> None:
        """Store one region's result for a site: visible here at once, in Redis as soon as reachable.

        Like MemoryBackend, does not call ``on_change`` (the table rebuilds after its own writes).
        """
        self._seq += 1
        self._touched_results[(key, region)] = self._seq
        self._results.setdefault(key, {})[region] = result
        self._pending_results[(key, region)] = (result, result.stale_after)
        self._wake.set()

    async def put_override(self, key: SiteKey, state: Override | None) -> None:
        """Store (or with None remove) an operator override; durable (no expiry); no ``on_change``."""
        if state is not None and state not in _OVERRIDES:
            raise ValueError(f"override: expected one of {', '.join(_OVERRIDES)} or None, got {state!r}")
        self._seq += 1
        self._touched_overrides[key] = self._seq
        if state is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = state
        self._pending_overrides[key] = state
        self._wake.set()

    # readers ------------------------------------------------------------------------------

    def results(self) -> dict[SiteKey, dict[str, RegionResult]]:
        """The latest results known to this node (the last known ones while Redis is unreachable)."""
        return {key: dict(regions) for key, regions in self._results.items() if regions}

    def overrides(self) -> dict[SiteKey, Override]:
        """The overrides known to this node (the last known ones while Redis is unreachable)."""
        return dict(self._overrides)

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
        if self._connected != value:
            now = self._clock()
            if value:
                if self._outage_since is not None:
                    self._outages.append((self._outage_since, now))
                self._outage_since = None
            else:
                self._outage_since = now
            self._connected = value
            self._changed()

    def _expiry(self, result: RegionResult) -> float:
        """Wall time at which a result turns stale, not counting outages (as the table does)."""
        outages = self._outages
        if self._outage_since is not None:
            outages = [*outages, (self._outage_since, self._clock())]
        return expires_at(result, outages)

    def _client(self) -> aioredis.Redis:
        # No retries inside redis-py: this class reconnects itself, and a command must fail fast.
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
                if not self._first_attempt.is_set() and self._outage_since is None:
                    self._outage_since = self._clock()  # down from the start
                self._set_connected(False)
            finally:
                self._first_attempt.set()
                await self._quietly(pubsub.aclose())
                await self._quietly(client.aclose())
            if self._closing:
                break
            await asyncio.sleep(delay * (0.5 + self._rng.random()))
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
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=2.0)

    async def _check_epoch(self, client: aioredis.Redis) -> None:
        """Notice a Redis that lost its data since the last connection, and republish into it."""
        epoch_key = self.prefix + "epoch"
        await client.set(epoch_key, secrets.token_hex(8), nx=True)
        epoch = await client.get(epoch_key)
        if self._epoch is not None and epoch != self._epoch:
            now = self._clock()
            republished = 0
            for key, state in self._overrides.items():
                self._pending_overrides.setdefault(key, state)
            for key, regions in self._results.items():
                for region, result in regions.items():
                    left = self._expiry(result) - now
                    if left > 0:
                        self._pending_results.setdefault((key, region), (result, left))
                        republished += 1
            logger.warning("state: %s lost its data (epoch %s -> %s); republishing %d override(s) "
                           "and %d fresh result(s)", self.url, self._epoch, epoch,
                           len(self._overrides), republished)
        self._epoch = epoch

    async def _flush(self, client: aioredis.Redis) -> None:
        """Write every queued change (one pipeline per batch); on failure they stay queued."""
        while self._pending_results or self._pending_overrides:
            results, self._pending_results = self._pending_results, {}
            overrides, self._pending_overrides = self._pending_overrides, {}
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for (key, region), (result, ttl) in results.items():
                        body = encode_result(result)
                        msg = self._message(kind="result", zone=key[0], site=key[1], region=region,
                                            result=body)
                        pipe.eval(_PUT_RESULT_LUA, 2, self.result_key(key, region), self.channel,
                                  json.dumps(body, separators=(",", ":")), repr(result.checked_at),
                                  max(1, int(ttl * 1000)), msg)
                    for key, state in overrides.items():
                        if state is None:
                            pipe.hdel(self.overrides_key, self.override_field(key))
                        else:
                            pipe.hset(self.overrides_key, self.override_field(key),
                                      json.dumps({"state": state, "set_at": self._clock()}))
                        pipe.publish(self.channel, self._message(kind="override", zone=key[0],
                                                                 site=key[1], state=state))
                    await pipe.execute()
            except BaseException:
                # Keep them for the next connection, unless a newer value was queued meanwhile.
                for rkey, value in results.items():
                    self._pending_results.setdefault(rkey, value)
                for okey, state in overrides.items():
                    self._pending_overrides.setdefault(okey, state)
                raise

    async def _work(self, client: aioredis.Redis) -> None:
        """Flush writes as they come and resynchronise periodically (one task: they never overlap)."""
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self.resync_interval
        while True:
            _raise_if_cancelling()
            self._wake.clear()
            await self._flush(client)
            if self._resync_now.is_set() or loop.time() >= next_resync:
                self._resync_now.clear()
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
        try:
            msg = json.loads(data)
            kind = msg.get("kind") if isinstance(msg, dict) else None
            if kind == "result":
                key: SiteKey = (str(msg["zone"]), str(msg["site"]))
                region = str(msg["region"])
                result = decode_result(msg["result"])
                current = self._results.get(key, {}).get(region)
                if current == result or (current is not None and current.checked_at > result.checked_at):
                    return
                self._seq += 1
                self._touched_results[(key, region)] = self._seq
                self._results.setdefault(key, {})[region] = result
            elif kind == "override":
                key = (str(msg["zone"]), str(msg["site"]))
                state = msg.get("state")
                if state is not None and state not in _OVERRIDES:
                    raise ValueError(f"state: expected one of {', '.join(_OVERRIDES)} or null, got {state!r}")
                if self._overrides.get(key) == state:
                    return
                self._seq += 1
                self._touched_overrides[key] = self._seq
                if state is None:
                    self._overrides.pop(key, None)
                else:
                    self._overrides[key] = state
            elif kind == "resync":
                self._resync_now.set()
                return
            else:
                raise ValueError(f"kind: unknown {kind!r}")
        except (ValueError, KeyError, TypeError) as exc:
            self.bad_entries += 1
            logger.warning("state: ignoring a malformed message on %s: %s: %.200s", self.channel, exc, data)
            return
        self._changed_soon()

    async def _resync(self, client: aioredis.Redis) -> None:
        """Reread every result and override, replacing this node's copy (changes newer than the snapshot stay)."""
        seq0 = self._seq
        pattern = _glob_escape(self.prefix) + "result:*"
        names = [name async for name in client.scan_iter(match=pattern, count=1000)]
        values: list[str | None] = []
        for i in range(0, len(names), 500):
            values.extend(await client.mget(names[i:i + 500]))
        raw_overrides: Mapping[str, str] = await client.hgetall(self.overrides_key)

        results: dict[SiteKey, dict[str, RegionResult]] = {}
        for name, value in zip(names, values):
            if value is None:  # expired between SCAN and MGET
                continue
            parsed = self._parse_result_key(name)
            try:
                if parsed is None:
                    raise ValueError("key: expected PREFIX result:ZONE:SITE:REGION")
                result = decode_result(json.loads(value))
            except ValueError as exc:
                self._bad_entry(name, exc)
                continue
            results.setdefault(parsed[0], {})[parsed[1]] = result
        overrides: dict[SiteKey, Override] = {}
        for field, value in raw_overrides.items():
            okey = self._parse_override_field(field)
            try:
                if okey is None:
                    raise ValueError("field: expected ZONE:SITE")
                state = json.loads(value).get("state")
                if state not in _OVERRIDES:
                    raise ValueError(f"state: expected one of {', '.join(_OVERRIDES)}, got {state!r}")
            except (ValueError, AttributeError) as exc:
                self._bad_entry(f"{self.overrides_key} {field}", exc)
                continue
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
        # A result gone from Redis (expired there, or Redis lost its data) stays known here
        # until it is stale in connected time: Redis's clock kept running during outages.
        now = self._clock()
        for key, regions in self._results.items():
            for region, local in regions.items():
                if region not in results.get(key, {}) and self._expiry(local) > now:
                    results.setdefault(key, {})[region] = local
        if self._outages:
            oldest = min((r.checked_at for regions in results.values() for r in regions.values()),
                         default=now)
            self._outages = [o for o in self._outages if o[1] > oldest]
        self._touched_results = {k: s for k, s in self._touched_results.items() if s > seq0}
        self._touched_overrides = {k: s for k, s in self._touched_overrides.items() if s > seq0}
        results = {k: v for k, v in results.items() if v}

        self.resyncs += 1
        if results != self._results or overrides != self._overrides:
            self._results = results
            self._overrides = overrides
            self._changed_soon()

    def _bad_entry(self, where: str, exc: Exception) -> None:
        self.bad_entries += 1
        logger.warning("state: ignoring malformed entry %s: %s", where, exc)
