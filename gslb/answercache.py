"""The answer cache: encoded replies keyed by the query's bytes, bounded in bytes, dropped precisely.

A resolver asks the same few questions again and again; the reply to a query is a function of
the query's bytes after the ID (question, letter case, flags, EDNS size, ECS option), of the
zones and pool verdicts it was computed from, and, for a pool whose answer depends on where the
client is when the query carries no ECS option, of the client's address. So the reply bytes
after the ID are cached under

- ``data[2:]`` (the query after its ID) when the reply depends on nothing else, or
- ``(data[2:], client address)`` when it also depends on the packet's source (a pool answer
  located by the source address, or a reply carrying a DNS server cookie, ``gslb.handler``),

and the DNS transport answers a hit with ``data[:2] + tail``: one dict probe and one
concatenation, no parse, no resolve, no encode.

Dropped precisely. Every entry carries the *stamp* of the dependencies it was computed from
(:meth:`AnswerCache.token`): the zones its answer read (by zone key), the pools whose verdicts it
used (``(zone key, pool name)``) and each site in a pool answer (``(zone key, pool name,
site)``). :meth:`invalidate` bumps the stamps of everything that depended on one of them; a hit
whose stamp is no longer current is a miss. A probe result that changes no verdict invalidates
nothing; a site going down or draining drops only the answers that held it (the others cannot
change, see ``gslb.balancer``); a site coming back drops the pool's answers. Stale entries are
not searched for: they are overwritten by the next answer or evicted.

What is not stored: replies that depend on a random draw (weighted, round_robin, p2c), NXDOMAIN
and REFUSED (a flood of random names would otherwise push every useful answer out; resolvers
cache negative answers themselves), and queries longer than MAX_KEY.

Bounded in bytes, least recently used first out: the entries live in one ``OrderedDict``; a
hit moves its entry to the end (``move_to_end``, C, O(1)), a store evicts from the front until
the estimated bytes of keys, replies and a fixed per-entry overhead are within ``max_bytes``.
One entry at a time: no half of the cache is ever dropped at once (a big dict freed in one go
pauses every thread, and a working set a little above half the budget would be recomputed over
and over).

Threads: writes (``put``, ``invalidate``, ``clear``) happen under the query handler's lock; a
cache hit reads ``entries`` and ``stamps`` and moves its entry to the end without it (each of
those is one atomic operation under the GIL; a concurrent eviction can only make a hit a miss,
and ``stamps`` is only replaced or grown, never shrunk in place). An answer is stored only when
no invalidation happened while it was computed (``epoch``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Iterable

#: bytes counted per entry beyond its key and reply (dict slot, tuple, the objects' headers)
ENTRY_OVERHEAD = 200
#: the default budget of one process's answer cache
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: queries longer than this are never cached (e.g. large EDNS padding or cookie options): they
#: would cost more memory than they save
MAX_KEY = 512
#: distinct dependency sets one cache registers (then its owner starts a new cache)
MAX_COMBOS = 65536

#: a dependency: a zone key ("gslb.example.com"), a pool ("gslb.example.com", "web") or a site
#: of a pool ("gslb.example.com", "web", "fra")
Dependency = Hashable
#: one cache entry: (reply after the ID, stamp index, stamp value, statistics slot, rate-limit
#: identity or None: ``gslb.ratelimit.identity``, computed once so that a hit is limited without a parse)
Entry = tuple


class AnswerCache:
    """Encoded replies by query bytes (module docstring)."""

    __slots__ = ("max_bytes", "entries", "bytes", "stamps", "_combos", "_members", "evicted", "epoch")

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        #: key -> entry, least recently used first
        self.entries: OrderedDict = OrderedDict()
        #: estimated bytes held (keys, replies and per-entry overhead)
        self.bytes = 0
        #: current stamp value per dependency set (index)
        self.stamps: list[int] = []
        self._combos: dict[tuple, int] = {}
        #: dependency -> indexes of the dependency sets that contain it
        self._members: dict[Dependency, list[int]] = {}
        #: entries dropped to stay within the budget
        self.evicted = 0
        #: grows with every invalidation: an answer computed while it changed is not stored
        self.epoch = 0

    # -- the query path

    def get(self, key: object) -> Entry | None:
        """The current entry for ``key`` (moved to the most recently used end), else None."""
        entry = self.entries.get(key)
        if entry is None or self.stamps[entry[1]] != entry[2]:
            return None
        try:
            self.entries.move_to_end(key)
        except KeyError:  # evicted meanwhile
            pass
        return entry

    def lookup(self, key: bytes, host: str) -> Entry | None:
        """The current entry for a query: under its bytes, else under its bytes and the client's address."""
        entry = self.get(key)
        if entry is None:
            entry = self.get((key, host))
        return entry

    def token(self, deps: tuple) -> tuple[int, int]:
        """(stamp index, stamp value) for an answer that depends on ``deps``."""
        index = self._combos.get(deps)
        if index is None:
            index = self._combos[deps] = len(self.stamps)
            self.stamps.append(0)
            for dep in set(deps):
                self._members.setdefault(dep, []).append(index)
        return index, self.stamps[index]

    @property
    def full(self) -> bool:
        """Whether the stamp table reached MAX_COMBOS (the owner then starts a new cache)."""
        return len(self.stamps) >= MAX_COMBOS

    def put(self, key: bytes, host: str | None, tail: bytes, token: tuple[int, int], slot: int,
            rrl: object = None) -> None:
        """Store a reply (after the ID) computed under ``token``; ``host`` when it depends on the
        client's address; ``rrl`` its rate-limit identity (None when rate limiting is off).
        Queries longer than MAX_KEY are not stored."""
        index, value = token
        if len(key) > MAX_KEY or index >= len(self.stamps) or self.stamps[index] != value:
            return  # too long, or computed from data that changed since (a stale token)
        entries = self.entries
        if host is not None:
            # a stale entry under the bytes alone would shadow this one on every lookup
            self._discard(key)
            full: object = (key, host)
        else:
            full = key
        self._discard(full)
        entry = (tail, index, value, slot, rrl)
        entries[full] = entry
        self.bytes += _size(full, entry)
        while self.bytes > self.max_bytes and entries:
            old_key, old = entries.popitem(last=False)
            self.bytes -= _size(old_key, old)
            self.evicted += 1

    def _discard(self, key: object) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= _size(key, entry)

    # -- invalidation

    def invalidate(self, deps: Iterable[Dependency]) -> None:
        """Every entry that depended on one of ``deps`` is stale from now on."""
        stamps = self.stamps
        for dep in deps:
            for index in self._members.get(dep, ()):
                stamps[index] += 1
        self.epoch += 1

    def clear(self) -> None:
        """Drop everything (a new GeoIP database, new regions, a new set of zones)."""
        self.entries = OrderedDict()
        self.bytes = 0
        # every stamp moves on (a new list of the same length: a concurrent reader indexing the
        # old or the new list stays in range): a token taken before never matches again
        self.stamps = [value + 1 for value in self.stamps]
        self.epoch += 1

    # -- introspection

    def __len__(self) -> int:
        return len(self.entries)


def _size(key: object, entry: Entry) -> int:
    if isinstance(key, bytes):
        return len(key) + len(entry[0]) + ENTRY_OVERHEAD
    return len(key[0]) + len(key[1]) + len(entry[0]) + ENTRY_OVERHEAD + 64  # type: ignore[index]
