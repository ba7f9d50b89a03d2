"""The answer cache: encoded replies keyed by the query's bytes, bounded in bytes, dropped precisely.

A resolver asks the same few questions again and again; the reply to a query is a function of
the query's bytes after the ID (question, letter case, flags, EDNS size, ECS option), of the
zones and pool verdicts it was computed from, and, for a pool whose answer depends on where the
client is when the query carries no ECS option, of the client's address. So the reply bytes
after the ID are cached under

- ``data[2:]`` (the query after its ID) when the reply depends on nothing else, or
- ``(data[2:], client address)`` when it also depends on the packet's source,

and the DNS transport answers a hit with ``data[:2] + tail``: one dict probe and one
concatenation, no parse, no resolve, no encode.

Dropped precisely. Every entry carries the *stamp* of the dependencies it was computed from
(:meth:`AnswerCache.token`): the zones its answer read (by zone key) and the pools whose verdicts
it used (``(zone key, pool name)``). :meth:`invalidate` bumps the stamps of everything that
depended on one zone or pool; a hit whose stamp is no longer current is a miss. A probe result
that changes no verdict invalidates nothing. Stale entries are not searched for: they are
overwritten by the next answer or aged out.

What is not stored: replies that depend on a random draw (weighted, round_robin, p2c), NXDOMAIN
and REFUSED (a flood of random names would otherwise push every useful answer out; resolvers
cache negative answers themselves), and queries longer than MAX_KEY.

Bounded in bytes, with two generations (a cheap approximation of LRU with O(1) work per
operation): new entries go to the young dict; when it holds half the budget, it becomes the old
one and the previous old one is dropped; a hit in the old generation moves the entry to the young
one. So the cache never holds more than ``max_bytes`` of keys and replies (estimated with a fixed
per-entry overhead), and the entries that are asked for survive.

Threads: writes (``put``, ``get`` with its promotion, ``invalidate``, ``clear``) happen under the
query handler's lock; a cache hit reads ``young`` and ``stamps`` without it. Those are only
replaced or grown, never shrunk in place, so a concurrent write can only make a hit a miss.
An answer is stored only when no invalidation happened while it was computed (``epoch``).
"""

from __future__ import annotations

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

#: a dependency: a zone key ("gslb.example.com"), a pool ("gslb.example.com", "web"), or ""
#: (the set of served zones itself)
Dependency = Hashable
#: one cache entry: (reply after the ID, stamp index, stamp value, statistics slot)
Entry = tuple


class AnswerCache:
    """Encoded replies by query bytes (module docstring)."""

    __slots__ = ("max_bytes", "young", "old", "young_bytes", "old_bytes", "stamps", "_combos",
                 "_members", "evicted", "epoch")

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.young: dict = {}
        self.old: dict = {}
        self.young_bytes = 0
        self.old_bytes = 0
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
        """The current entry for ``key`` (a hit in the old generation is promoted), else None."""
        entry = self.young.get(key)
        if entry is None:
            entry = self.old.pop(key, None)
            if entry is None:
                return None
            size = _size(key, entry)
            self.old_bytes -= size
            self._add(key, entry, size)
        if self.stamps[entry[1]] != entry[2]:
            return None
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

    def put(self, key: bytes, host: str | None, tail: bytes, token: tuple[int, int], slot: int) -> None:
        """Store a reply (after the ID) computed under ``token``; ``host`` when it depends on the
        client's address. Queries longer than MAX_KEY are not stored."""
        index, value = token
        if len(key) > MAX_KEY or index >= len(self.stamps) or self.stamps[index] != value:
            return  # too long, or computed from data that changed since (a stale token)
        if host is not None:
            # a stale entry under the bytes alone would shadow this one on every lookup
            self._discard(key)
            full: object = (key, host)
        else:
            full = key
        self._discard(full)
        entry = (tail, index, value, slot)
        self._add(full, entry, _size(full, entry))

    def _discard(self, key: object) -> None:
        entry = self.young.pop(key, None)
        if entry is not None:
            self.young_bytes -= _size(key, entry)
        entry = self.old.pop(key, None)
        if entry is not None:
            self.old_bytes -= _size(key, entry)

    def _add(self, key: object, entry: Entry, size: int) -> None:
        if self.young_bytes + size > self.max_bytes // 2:
            self.evicted += len(self.old)
            self.old = self.young
            self.old_bytes = self.young_bytes
            self.young = {}
            self.young_bytes = 0
        self.young[key] = entry
        self.young_bytes += size

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
        self.young = {}
        self.old = {}
        self.young_bytes = self.old_bytes = 0
        # every stamp moves on (a new list of the same length: a concurrent reader indexing the
        # old or the new list stays in range): a token taken before never matches again
        self.stamps = [value + 1 for value in self.stamps]
        self.epoch += 1

    # -- introspection

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    @property
    def bytes(self) -> int:
        """Estimated bytes held (keys, replies and per-entry overhead)."""
        return self.young_bytes + self.old_bytes


def _size(key: object, entry: Entry) -> int:
    if isinstance(key, bytes):
        return len(key) + len(entry[0]) + ENTRY_OVERHEAD
    return len(key[0]) + len(key[1]) + len(entry[0]) + ENTRY_OVERHEAD + 64  # type: ignore[index]
