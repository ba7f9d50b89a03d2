"""The per-network engine: which answer every address of a GeoIP database gets, as merged runs.

The database's search tree is walked once per database (:func:`walk_tree`, :meth:`NetworkIndex.build`):
every address of each family falls in exactly one network, or in a gap (no record: an
unlocated client). Neighbouring networks whose records locate the same way (same coordinates,
country and continent as :class:`gslb.geo.GeoLocator` derives them) are merged into one *run*;
an index holds, per family, the sorted run starts (runs cover the whole address space, the next
start ends a run) and each run's location id.

Per pool (:func:`answer_runs`, pure): a function location id -> answer key, and the runs of
the index merged again wherever neighbours get the same answer. :meth:`AnswerRuns.scope` is
the widest ECS scope for a client: the smallest prefix length L (at least ``minimum``) whose
aligned block around the address lies inside the address's run (a bisect and bit arithmetic).
:meth:`AnswerRuns.shares` tells how much of the address space each answer gets (the traffic
map and ``gslb plan`` read the same runs).

Aliased subtrees of an IPv6 database (the IPv4 space at ``::/96``, ``::ffff:0:0/96``,
``2002::/16``) are one *opaque* run in the IPv6 index (location id :data:`OPAQUE`): a client
there gets no answer key (``scope`` returns None: the caller falls back to its per-network
scope). The IPv4 runs come from the IPv4 subtree; v4-mapped clients use them (the caller adds
the offset 96).
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator, Sequence

#: a location as the index keeps it: (latlon, country, continent), all None for a gap
LocationKey = tuple[tuple[float, float] | None, str | None, str | None]

#: location id of an aliased IPv6 subtree (no answer key: the caller's per-network scope)
OPAQUE = -1

_BITS = {4: 32, 6: 128}


def walk_tree(buf: bytes | mmap.mmap, node_count: int, record_size: int, root: int, bits: int,
              alias: int | None = None) -> Iterator[tuple[int, int, int]]:
    """The leaves of a MaxMind DB search tree below node ``root``, in address order.

    Yields ``(start, prefixlen, record)`` with ``start`` an integer of ``bits`` bits;
    ``record`` is ``node_count`` for no data, a data pointer (> node_count) for a record, or
    :data:`OPAQUE` for a pointer to node ``alias`` (the IPv4 subtree of an IPv6 tree).
    """
    if record_size not in (24, 28, 32):
        raise ValueError(f"unsupported record size {record_size}")
    if root >= node_count:
        yield 0, 0, root
        return
    width = record_size // 4
    half_w = width // 2
    frombytes = int.from_bytes
    stack = [(root, 0, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        node, start, depth = pop()
        if node >= node_count or node == alias:
            yield start, depth, (OPAQUE if node == alias else node)
            continue
        if depth >= bits:
            raise ValueError("search tree deeper than the address")
        o = node * width
        if record_size == 28:
            b = buf[o:o + 7]
            m = b[3]
            left = ((m & 0xF0) << 20) | frombytes(b[0:3], "big")
            right = ((m & 0x0F) << 24) | frombytes(b[4:7], "big")
        else:
            left = frombytes(buf[o:o + half_w], "big")
            right = frombytes(buf[o + half_w:o + width], "big")
        depth += 1
        # right first on the stack: the lower half comes out first
        push((right, start | (1 << (bits - depth)), depth))
        push((left, start, depth))


@dataclass
class FamilyRuns:
    """Runs of one family: ``starts`` ascending (the first is 0), ``ids`` per run."""

    bits: int
    starts: Sequence[int]
    ids: Sequence[int]


def merge_leaves(leaves: Iterator[tuple[int, int, int]], id_of: Callable[[int, int], int],
                 bits: int) -> FamilyRuns:
    """Merge address-ordered leaves into runs of equal ids (``id_of(record, start)``)."""
    starts = array("I") if bits == 32 else []
    ids = array("i")
    last = None
    for start, _plen, record in leaves:
        i = id_of(record, start)
        if i != last:
            starts.append(start)
            ids.append(i)
            last = i
    if not ids:
        starts.append(0)
        ids.append(id_of(-2, 0))
    return FamilyRuns(bits, starts, ids)


class NetworkIndex:
    """The networks of a GeoIP database as runs of location ids per family (see the module docstring).

    ``locations[id]`` is ``(latlon, country, continent)`` as the locator derives them (gaps:
    ``(None, None, None)``); ``runs[4]``/``runs[6]`` the runs of location ids per family.
    """

    def __init__(self, runs: dict[int, FamilyRuns], locations: list[LocationKey]) -> None:
        self.runs = runs
        self.locations = locations
        self._sizes: list[float] | None = None

    @classmethod
    def build(cls, locator: Any) -> "NetworkIndex":
        """Walk the database of a :class:`gslb.geo.GeoLocator` (its file, read by mmap)."""
        reader = locator._reader
        if reader is None:
            return cls({4: FamilyRuns(32, array("I", [0]), array("i", [0])),
                        6: FamilyRuns(128, [0], array("i", [0]))}, [(None, None, None)])
        meta = reader.metadata()
        node_count, record_size = meta.node_count, meta.record_size
        locations: list[LocationKey] = []
        loc_ids: dict[LocationKey, int] = {}
        by_record: dict[int, int] = {}

        def id_for(version: int) -> Callable[[int, int], int]:
            bits = _BITS[version]

            def id_of(record: int, start: int) -> int:
                if record == OPAQUE:
                    return OPAQUE
                got = by_record.get(record)
                if got is None:
                    packed = start.to_bytes(bits // 8, "big")
                    entry = locator._lookup(version, packed, start)
                    key = entry[2:]
                    got = loc_ids.get(key)
                    if got is None:
                        got = loc_ids[key] = len(locations)
                        locations.append(key)
                    by_record[record] = got  # gaps (record node_count) all locate alike
                return got
            return id_of

        with open(os.fspath(locator.path), "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            runs: dict[int, FamilyRuns] = {}
            if meta.ip_version == 4:
                runs[4] = merge_leaves(walk_tree(buf, node_count, record_size, 0, 32), id_for(4), 32)
                gap = _gap_id(locations, loc_ids)
                runs[6] = FamilyRuns(128, [0], array("i", [gap]))
            else:
                v4root = 0
                for _ in range(96):
                    if v4root >= node_count:
                        break
                    v4root = _children(buf, record_size, v4root)[0]
                runs[6] = merge_leaves(walk_tree(buf, node_count, record_size, 0, 128,
                                                 v4root if v4root < node_count else None), id_for(6), 128)
                runs[4] = merge_leaves(walk_tree(buf, node_count, record_size, v4root, 32), id_for(4), 32)
        finally:
            buf.close()
        return cls(runs, locations)


    def location_sizes(self) -> list[float]:
        """The address space of each location id in both families, in client networks: an IPv4
        /24 and an IPv6 /48 count as one (:data:`SIZE_UNIT_BITS`); opaque runs count nowhere.
        Computed once per index (the traffic map and ``gslb plan`` weigh by it)."""
        sizes = self._sizes
        if sizes is None:
            sizes = [0.0] * len(self.locations)
            for runs in self.runs.values():
                unit = float(1 << SIZE_UNIT_BITS[runs.bits])
                starts, ids = runs.starts, runs.ids
                n = len(starts)
                top = 1 << runs.bits
                for i in range(n):
                    lid = ids[i]
                    if lid != OPAQUE:
                        sizes[lid] += ((starts[i + 1] if i + 1 < n else top) - starts[i]) / unit
            self._sizes = sizes
        return sizes


#: the size of one client network per family's address width (bits below it): IPv4 /24, IPv6 /48,
#: the subnets the ``hash`` policy treats as one client
SIZE_UNIT_BITS = {32: 8, 128: 80}


def _gap_id(locations: list[LocationKey], loc_ids: dict[LocationKey, int]) -> int:
    key = (None, None, None)
    got = loc_ids.get(key)
    if got is None:
        got = loc_ids[key] = len(locations)
        locations.append(key)
    return got


def _children(buf: bytes | mmap.mmap, record_size: int, n: int) -> tuple[int, int]:
    if record_size == 24:
        o = n * 6
        return int.from_bytes(buf[o:o + 3], "big"), int.from_bytes(buf[o + 3:o + 6], "big")
    if record_size == 28:
        o = n * 7
        b = buf[o:o + 7]
        return ((b[3] & 0xF0) << 20) | int.from_bytes(b[0:3], "big"), ((b[3] & 0x0F) << 24) | int.from_bytes(b[4:7], "big")
    o = n * 8
    return int.from_bytes(buf[o:o + 4], "big"), int.from_bytes(buf[o + 4:o + 8], "big")


class AnswerRuns:
    """One family's runs of answers: ``starts`` ascending from 0, ``answers[i]`` (a key, or None: opaque)."""

    __slots__ = ("bits", "starts", "answers")

    def __init__(self, bits: int, starts: Sequence[int], answers: list[Hashable | None]) -> None:
        self.bits = bits
        self.starts = starts
        self.answers = answers

    def run(self, addr: int) -> tuple[int, int, Hashable | None]:
        """(first, last address, answer) of the run holding ``addr``."""
        i = bisect_right(self.starts, addr) - 1
        end = self.starts[i + 1] - 1 if i + 1 < len(self.starts) else (1 << self.bits) - 1
        return self.starts[i], end, self.answers[i]

    def scope(self, addr: int, minimum: int = 0) -> int | None:
        """The smallest prefix length L >= ``minimum`` whose block around ``addr`` lies in its run.

        None when the run is opaque (no answer key: the caller's own scope applies).
        """
        i = bisect_right(self.starts, addr) - 1
        if self.answers[i] is None:
            return None
        starts = self.starts
        return _run_scope(self.bits, starts[i], starts[i + 1] if i + 1 < len(starts) else None, addr, minimum)

    def shares(self) -> dict[Hashable | None, float]:
        """The fraction of the family's address space each answer gets."""
        total = float(1 << self.bits)
        out: dict[Hashable | None, float] = {}
        starts = self.starts
        n = len(starts)
        for i, answer in enumerate(self.answers):
            end = starts[i + 1] if i + 1 < n else 1 << self.bits
            out[answer] = out.get(answer, 0.0) + (end - starts[i]) / total
        return out

    def __len__(self) -> int:
        return len(self.starts)


def _run_scope(bits: int, start: int, after: int | None, addr: int, minimum: int) -> int:
    """The smallest prefix length >= ``minimum`` whose block around ``addr`` lies in the run from
    ``start`` to just before ``after`` (None: the end of the address space)."""
    scope = minimum
    if start > 0:
        # the block at L holds start - 1 while L <= the common prefix length of both
        need = bits - (addr ^ (start - 1)).bit_length() + 1
        if need > scope:
            scope = need
    if after is not None:
        need = bits - (addr ^ after).bit_length() + 1
        if need > scope:
            scope = need
    return scope if scope <= bits else bits


def answer_runs(runs: FamilyRuns, answer_of: Callable[[int], Hashable]) -> AnswerRuns:
    """Merge a family's location runs wherever neighbours get the same answer.

    ``answer_of(location id)`` is called once per distinct id; OPAQUE runs get answer None
    and are never merged with anything.
    """
    keys: dict[int, Hashable | None] = {OPAQUE: None}
    interned: dict[Hashable, Hashable] = {}
    starts = array("I") if runs.bits == 32 else []
    answers: list[Hashable | None] = []
    last: object = _NOTHING
    for start, lid in zip(runs.starts, runs.ids, strict=True):
        try:
            key = keys[lid]
        except KeyError:
            key = answer_of(lid)
            key = interned.setdefault(key, key)
            keys[lid] = key
        if key is None or key is not last:
            starts.append(start)
            answers.append(key)
            last = key if key is not None else _NOTHING
    return AnswerRuns(runs.bits, starts, answers)


_NOTHING = object()


@dataclass
class ScopeTable:
    """A pool's answer runs for both families (for the inputs it was built under)."""

    v4: AnswerRuns
    v6: AnswerRuns

    def scope(self, addr: int, version: int, minimum: int = 0) -> int | None:
        """:meth:`AnswerRuns.scope` in the client's family (``version`` 4 or 6)."""
        return (self.v4 if version == 4 else self.v6).scope(addr, minimum)

    def size(self) -> int:
        """Number of runs (both families)."""
        return len(self.v4) + len(self.v6)

    def compact(self) -> bytes:
        """What a DNS process needs of the table, as bytes (:meth:`CompactScopes.from_bytes`).

        The answers themselves stay here: a DNS process computes its answer on its own and only
        asks the table for the run boundaries (and whether a run is opaque).
        """
        v4, v6 = self.v4, self.v6
        starts4 = array("I", v4.starts)
        if sys.byteorder != "little":  # pragma: no cover
            starts4.byteswap()
        return b"".join((_HEADER.pack(_MAGIC, len(v4), len(v6)), starts4.tobytes(),
                         bytes(a is None for a in v4.answers),
                         b"".join(s.to_bytes(16, "big") for s in v6.starts),
                         bytes(a is None for a in v6.answers)))


_MAGIC = b"GSC1"
_HEADER = struct.Struct("<4sII")


class _Starts128:
    """IPv6 run starts kept as the shipped bytes (16 big-endian bytes each, in order): item ``i``
    is its bytes, which compare as the numbers do, so ``bisect`` searches them directly."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data) >> 4

    def __getitem__(self, i: int) -> bytes:
        o = i << 4
        return self.data[o:o + 16]


class CompactScopes:
    """A :class:`ScopeTable` as a DNS process keeps it: run starts and opaque flags per family.

    ``scope`` answers as :meth:`ScopeTable.scope` does. Memory: 5 bytes per IPv4 run (start and
    flag), 17 per IPv6 run.
    """

    __slots__ = ("starts4", "opaque4", "starts6", "opaque6", "nbytes")

    def __init__(self, starts4: Sequence[int], opaque4: bytes, starts6: _Starts128, opaque6: bytes,
                 nbytes: int = 0) -> None:
        self.starts4 = starts4
        self.opaque4 = opaque4
        self.starts6 = starts6
        self.opaque6 = opaque6
        #: the size of the bytes it came from
        self.nbytes = nbytes

    @classmethod
    def from_bytes(cls, data: bytes) -> "CompactScopes":
        """The table of :meth:`ScopeTable.compact` (ValueError when ``data`` is not one)."""
        if len(data) < _HEADER.size:
            raise ValueError("scope table: truncated header")
        magic, n4, n6 = _HEADER.unpack_from(data)
        if magic != _MAGIC or n4 < 1 or n6 < 1 or len(data) != _HEADER.size + 5 * n4 + 17 * n6:
            raise ValueError(f"scope table: not a compact table ({len(data)} bytes)")
        o = _HEADER.size
        starts4 = array("I")
        starts4.frombytes(data[o:o + 4 * n4])
        if sys.byteorder != "little":  # pragma: no cover
            starts4.byteswap()
        o += 4 * n4
        opaque4 = data[o:o + n4]
        o += n4
        starts6 = _Starts128(data[o:o + 16 * n6])
        o += 16 * n6
        return cls(starts4, opaque4, starts6, data[o:o + n6], len(data))

    def scope(self, addr: int, version: int, minimum: int = 0) -> int | None:
        """The smallest prefix length >= ``minimum`` whose block around ``addr`` lies in its run
        (None: an opaque run, the caller's own scope applies)."""
        if version == 4:
            starts4 = self.starts4
            i = bisect_right(starts4, addr) - 1
            if self.opaque4[i]:
                return None
            return _run_scope(32, starts4[i], starts4[i + 1] if i + 1 < len(starts4) else None, addr, minimum)
        starts6 = self.starts6
        i = bisect_right(starts6, addr.to_bytes(16, "big")) - 1
        if self.opaque6[i]:
            return None
        after = int.from_bytes(starts6[i + 1], "big") if i + 1 < len(starts6) else None
        return _run_scope(128, int.from_bytes(starts6[i], "big"), after, addr, minimum)

    def size(self) -> int:
        """Number of runs (both families)."""
        return len(self.starts4) + len(self.starts6)


def build_table(index: NetworkIndex, answer_of_location: Callable[[LocationKey], Hashable],
                relevant: Callable[[LocationKey], Hashable] | None = None) -> ScopeTable:
    """A pool's :class:`ScopeTable`: ``answer_of_location((latlon, country, continent))`` per location.

    ``relevant(location)``: the part of a location the answer depends on (locations with an equal
    part are asked once; e.g. ``geo`` reads no coordinates); default the whole location.
    """
    answer_of = _memo(index, answer_of_location, relevant)  # one memo: both families share locations
    return ScopeTable(answer_runs(index.runs[4], answer_of), answer_runs(index.runs[6], answer_of))


def _memo(index: NetworkIndex, answer_of_location: Callable[[LocationKey], Hashable],
          relevant: Callable[[LocationKey], Hashable] | None = None) -> Callable[[int], Hashable]:
    locations = index.locations
    memo: dict[int, Hashable] = {}
    by_part: dict[Hashable, Hashable] = {}

    def answer_of(lid: int) -> Hashable:
        got = memo.get(lid)
        if got is None:
            location = locations[lid]
            if relevant is None:
                got = answer_of_location(location)
            else:
                part = relevant(location)
                got = by_part.get(part)
                if got is None:
                    got = by_part[part] = answer_of_location(location)
            memo[lid] = got
        return got

    return answer_of


def country_shares(index: NetworkIndex, answer_of_location: Callable[[LocationKey], Hashable],
                   version: int = 4) -> dict[tuple[str | None, Hashable], float]:
    """The fraction of one family's address space per (country, answer) (the traffic map's and
    ``gslb plan``'s view of a pool; opaque IPv6 runs count as country and answer None)."""
    runs = index.runs[version]
    answer_of = _memo(index, answer_of_location)
    locations = index.locations
    total = float(1 << runs.bits)
    starts, ids = runs.starts, runs.ids
    n = len(starts)
    out: dict[tuple[str | None, Hashable], float] = {}
    for i in range(n):
        lid = ids[i]
        key = (None, None) if lid == OPAQUE else (locations[lid][1], answer_of(lid))
        end = starts[i + 1] if i + 1 < n else 1 << runs.bits
        out[key] = out.get(key, 0.0) + (end - starts[i]) / total
    return out


if __name__ == "__main__":  # pragma: no cover - measuring aid: python -m gslb.netmap DB
    import resource
    import time

    from gslb.geo import GeoLocator
    t0 = time.perf_counter()
    loc = GeoLocator.open(sys.argv[1])
    idx = NetworkIndex.build(loc)
    t1 = time.perf_counter()
    print(f"index: {t1 - t0:.2f} s, runs v4 {len(idx.runs[4].starts)} v6 {len(idx.runs[6].starts)}, "
          f"locations {len(idx.locations)}, maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
