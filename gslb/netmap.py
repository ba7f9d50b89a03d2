"""The per-network engine: which answer every address of a GeoIP database gets, as merged runs.

The database's search tree is walked once per database (:meth:`NetworkIndex.build`: with numpy,
a level at a time, :func:`tree_leaves`): every address of each family falls in exactly one
network, or in a gap (no record: an unlocated client). Each distinct record is located once, by
the locator (in forked processes, :func:`in_forks`, for a large database). Neighbouring
networks whose records locate the same way (same coordinates, country and continent as
:class:`gslb.geo.GeoLocator` derives them) are merged into one *run*; an index holds, per
family, the sorted run starts (runs cover the whole address space, the next start ends a run)
and each run's location id.

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

import ctypes
import mmap
import os
import pickle
import signal
import socket
import struct
import sys
import traceback
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable, Sequence, TypeVar

if TYPE_CHECKING:
    # numpy is imported by the functions that build (the builder process, ``gslb plan``), never
    # by a DNS process, which only keeps CompactScopes: it would cost each one 15 MB, 50 ms
    # at start and a BLAS thread per core
    import numpy as np

#: a location as the index keeps it: (latlon, country, continent), all None for a gap
LocationKey = tuple[tuple[float, float] | None, str | None, str | None]

#: location id of an aliased IPv6 subtree (no answer key: the caller's per-network scope)
OPAQUE = -1

_BITS = {4: 32, 6: 128}


def search_tree(buf: bytes | mmap.mmap, node_count: int, record_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The left and right records of every node of a MaxMind DB search tree (two uint32 arrays)."""
    import numpy as np
    if record_size not in (24, 28, 32):
        raise ValueError(f"unsupported record size {record_size}")
    if record_size == 32:
        pairs = np.frombuffer(buf, dtype=">u4", count=2 * node_count).reshape(node_count, 2)
        return pairs[:, 0].astype(np.uint32), pairs[:, 1].astype(np.uint32)
    width = record_size // 4
    b = np.frombuffer(buf, dtype=np.uint8, count=width * node_count).reshape(node_count, width)

    def number(*columns: int) -> np.ndarray:  # big-endian bytes, a column at a time (memory)
        out = b[:, columns[0]].astype(np.uint32)
        for c in columns[1:]:
            out <<= 8
            out |= b[:, c]
        return out

    if record_size == 24:
        return number(0, 1, 2), number(3, 4, 5)
    left, right, middle = number(0, 1, 2), number(4, 5, 6), b[:, 3].astype(np.uint32)
    left |= (middle & 0xF0) << 20
    right |= (middle & 0x0F) << 24
    return left, right


@dataclass
class Leaves:
    """The leaves of a search tree below one node, in address order (:func:`tree_leaves`).

    Leaf ``i`` starts at ``hi[i] << 64 | lo[i]`` (``hi`` None for at most 64 bits) and holds
    ``records[i]`` (uint32): ``node_count`` for no data, a data pointer (> node_count) for a
    record, or the aliased node (< node_count: the IPv4 subtree of an IPv6 tree, opaque here).
    """

    bits: int
    hi: np.ndarray | None
    lo: np.ndarray
    records: np.ndarray

    def start(self, i: int) -> int:
        """The first address of leaf ``i``."""
        lo = int(self.lo[i])
        return lo if self.hi is None else int(self.hi[i]) << 64 | lo

    def runs(self, ids: np.ndarray) -> "FamilyRuns":
        """The leaves merged into runs of equal ``ids`` (one location id per leaf)."""
        import numpy as np
        first = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
        if self.bits == 32:
            starts: Sequence[int] = array("I", self.lo[first].astype(np.uint32).tobytes())
        else:
            lo = self.lo[first].tolist()
            starts = lo if self.hi is None else [h << 64 | x for h, x in zip(self.hi[first].tolist(), lo, strict=True)]
        return FamilyRuns(self.bits, starts, array("i", ids[first].astype(np.int32).tobytes()))


def tree_leaves(left: np.ndarray, right: np.ndarray, node_count: int, root: int, bits: int,
                alias: int | None = None) -> Leaves:
    """The leaves below node ``root`` of the tree ``left``/``right`` (:func:`search_tree`), for
    addresses of ``bits`` bits, walked a level at a time; ``alias`` is a node that is a leaf
    (opaque) here. ValueError when a path is longer than the address."""
    import numpy as np
    wide = bits > 64
    word = np.uint64 if bits > 32 else np.uint32
    nodes = np.array([root], np.uint32)
    hi = np.zeros(1, np.uint64) if wide else None
    lo = np.zeros(1, word)
    found: list[tuple[np.ndarray | None, np.ndarray, np.ndarray]] = []
    for depth in range(bits + 1):
        leaf = nodes >= node_count
        if alias is not None:
            leaf |= nodes == alias
        if leaf.any():
            found.append((hi[leaf] if hi is not None else None, lo[leaf], nodes[leaf]))
            inner = ~leaf
            nodes, lo = nodes[inner], lo[inner]
            if hi is not None:
                hi = hi[inner]
        if not len(nodes):
            break
        if depth == bits:
            raise ValueError("search tree deeper than the address")
        # children: the left keeps the start, the right sets the bit below the prefix
        bit = bits - depth - 1
        nodes = np.concatenate((left[nodes], right[nodes]))
        if hi is not None and bit >= 64:
            hi = np.concatenate((hi, hi | np.uint64(1 << (bit - 64))))
            lo = np.concatenate((lo, lo))
        else:
            lo = np.concatenate((lo, lo | np.array(1 << bit, word)))
            if hi is not None:
                hi = np.concatenate((hi, hi))
    lo = np.concatenate([f[1] for f in found])
    records = np.concatenate([f[2] for f in found])
    if hi is not None:
        hi = np.concatenate([f[0] for f in found if f[0] is not None])
        order = np.lexsort((lo, hi))
        return Leaves(bits, hi[order], lo[order], records[order])
    order = np.argsort(lo)  # starts are distinct: no need for a stable sort
    return Leaves(bits, None, lo[order], records[order])


@dataclass
class FamilyRuns:
    """Runs of one family: ``starts`` ascending (the first is 0), ``ids`` per run."""

    bits: int
    starts: Sequence[int]
    ids: Sequence[int]


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
    def build(cls, locator: Any, workers: int | None = None) -> "NetworkIndex":
        """Walk the database of a :class:`gslb.geo.GeoLocator` (its file, read by mmap).

        The tree is walked with numpy (:func:`search_tree`, :func:`tree_leaves`); each distinct
        record is then located once, by the locator itself (so the index locates as DNS answers
        do), in ``workers`` processes when there are many (None: one per core it may run on, at
        most :data:`MAX_WORKERS`).
        """
        import numpy as np
        reader = locator._reader
        if reader is None:
            return cls({4: FamilyRuns(32, array("I", [0]), array("i", [0])),
                        6: FamilyRuns(128, [0], array("i", [0]))}, [(None, None, None)])
        meta = reader.metadata()
        node_count = meta.node_count
        with open(os.fspath(locator.path), "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            left, right = search_tree(buf, node_count, meta.record_size)
        finally:
            buf.close()
        families: list[tuple[int, Leaves]] = []
        if meta.ip_version == 4:
            families.append((4, tree_leaves(left, right, node_count, 0, 32)))
        else:
            v4root = 0
            for _ in range(96):
                if v4root >= node_count:
                    break
                v4root = int(left[v4root])
            families.append((6, tree_leaves(left, right, node_count, 0, 128,
                                            v4root if v4root < node_count else None)))
            families.append((4, tree_leaves(left, right, node_count, v4root, 32)))
        del left, right
        # every distinct record (the gaps' too: record node_count) is located once, at its first address
        bounds = np.cumsum([0] + [len(leaves.records) for _, leaves in families])
        distinct, first, inverse = np.unique(np.concatenate([leaves.records for _, leaves in families]),
                                             return_index=True, return_inverse=True)
        # the first address of each distinct record, and its family (0: the aliased node, opaque)
        versions = np.zeros(len(distinct), np.uint8)
        hi, lo = np.zeros(len(distinct), np.uint64), np.zeros(len(distinct), np.uint64)
        for k, (version, leaves) in enumerate(families):
            mine = (first >= bounds[k]) & (first < bounds[k + 1]) & (distinct >= node_count)
            at = first[mine] - bounds[k]
            versions[mine] = version
            lo[mine] = leaves.lo[at]
            if leaves.hi is not None:
                hi[mine] = leaves.hi[at]
        locations, lid_of = locate_samples(locator, versions, hi, lo, workers)
        ids = lid_of[inverse.reshape(-1)]
        runs = {version: leaves.runs(ids[bounds[k]:bounds[k + 1]]) for k, (version, leaves) in enumerate(families)}
        if 6 not in runs:
            runs[6] = FamilyRuns(128, [0], array("i", [_gap_id(locations)]))
        return cls(runs, locations)

    def location_sizes(self) -> list[float]:
        """The address space of each location id in both families, in client networks: an IPv4
        /24 and an IPv6 /48 count as one (:data:`SIZE_UNIT_BITS`); opaque runs count nowhere.
        Computed once per index (the traffic map and ``gslb plan`` weigh by it)."""
        import numpy as np
        sizes = self._sizes
        if sizes is None:
            total = np.zeros(len(self.locations))
            for runs in self.runs.values():
                top = 1 << runs.bits
                ids = np.asarray(runs.ids, np.int64)
                if runs.bits <= 32:
                    ends = np.append(np.asarray(runs.starts, np.int64), top)
                    lengths = np.diff(ends).astype(np.float64)
                else:  # wider than int64: Python integers, then floats
                    big = [*runs.starts, top]
                    lengths = np.array([b - a for a, b in zip(big, big[1:], strict=False)], np.float64)
                keep = ids != OPAQUE
                total += np.bincount(ids[keep], weights=lengths[keep] / (1 << SIZE_UNIT_BITS[runs.bits]),
                                     minlength=len(self.locations))
            sizes = self._sizes = total.tolist()
        return sizes


#: the size of one client network per family's address width (bits below it): IPv4 /24, IPv6 /48,
#: the subnets the ``hash`` policy treats as one client
SIZE_UNIT_BITS = {32: 8, 128: 80}


def _gap_id(locations: list[LocationKey]) -> int:
    """The location id of a gap (no record), added when no address of the database is one."""
    gap: LocationKey = (None, None, None)
    if gap not in locations:
        locations.append(gap)
    return locations.index(gap)


#: at most this many processes locate the records of a large database (:meth:`NetworkIndex.build`)
MAX_WORKERS = 4
#: fewer distinct records than this are located in the calling process alone (a fork costs more)
PARALLEL_MIN = 50_000

T = TypeVar("T")


def in_forks(work: Callable[[int], T], parts: int, here: bool = True, nice: int = 0) -> list[T]:
    """``[work(0), ..., work(parts - 1)]``, part 0 in this process (``here``; else in a child
    too) and each other part in a forked child, ``nice`` added to its niceness, that sends its
    result back pickled through a pipe. A child dies with the thread that forked it (Linux: a
    parent death signal; elsewhere as soon as its write fails); a failed child is a RuntimeError
    here (no child outlives it)."""
    children: list[tuple[int, int]] = []
    parent = os.getpid()
    try:
        for i in range(1 if here else 0, parts):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child (its coverage is not collected)
                code = 1
                try:
                    _die_with_parent(parent)
                    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the parent reports it, not each child
                    os.close(read)
                    if nice:
                        os.nice(nice)
                    with os.fdopen(write, "wb") as out:
                        out.write(pickle.dumps(work(i), pickle.HIGHEST_PROTOCOL))
                    code = 0
                except BaseException:
                    traceback.print_exc()  # the parent reports the part as failed
                finally:
                    os._exit(code)
            os.close(write)
            children.append((pid, read))
        results = [work(0)] if here else []
        while children:
            pid, read = children[0]
            children[0] = (pid, -1)
            with os.fdopen(read, "rb") as got:
                data = got.read()
            status = os.waitpid(pid, 0)[1]
            children.pop(0)
            if status != 0:
                raise RuntimeError(f"the process computing part {len(results)} of {parts} failed (wait status {status})")
            results.append(pickle.loads(data))
        return results
    finally:
        for pid, read in children:
            if read >= 0:
                os.close(read)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _die_with_parent(parent: int) -> None:
    """In a forked child: be killed when the thread that forked it ends (an orphaned build would
    compete with the next server's processes: another session's, so niceness does not shield them)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux: the failed write ends it
        pass
    if os.getppid() != parent:  # the parent was gone before that took effect
        os._exit(1)


def locate_samples(locator: Any, versions: np.ndarray, hi: np.ndarray, lo: np.ndarray,
                   workers: int | None = None) -> tuple[list[LocationKey], np.ndarray]:
    """The distinct ``(latlon, country, continent)`` of the addresses ``hi << 64 | lo`` of IP
    ``versions`` as ``locator`` locates them, and each address's index in that list (version
    0: :data:`OPAQUE`); shared with forked processes when there are :data:`PARALLEL_MIN` or more."""
    import numpy as np
    if workers is None:
        workers = min(MAX_WORKERS, len(os.sched_getaffinity(0)))  # the cores this process may use
    if workers <= 1 or len(versions) < PARALLEL_MIN:
        workers = 1
    size = -(-len(versions) // workers)

    def part(i: int) -> tuple[list[LocationKey], bytes]:
        cut = slice(i * size, (i + 1) * size)
        return _locate_chunk(locator, versions[cut], hi[cut], lo[cut])

    parts = in_forks(part, workers)
    locations: list[LocationKey] = []
    numbers: dict[LocationKey, int] = {}
    lid_of = []
    for keys, local in parts:
        ids = np.array([_number(key, numbers, locations) for key in keys] + [OPAQUE], np.int32)  # [-1]: OPAQUE
        lid_of.append(ids[np.frombuffer(local, np.int32)])
    return locations, np.concatenate(lid_of)


def _number(key: LocationKey, numbers: dict[LocationKey, int], keys: list[LocationKey]) -> int:
    """The index of ``key`` in ``keys``, appended there when new (``numbers``: the same, by key)."""
    got = numbers.get(key)
    if got is None:
        got = numbers[key] = len(keys)
        keys.append(key)
    return got


def _locate_chunk(locator: Any, versions: np.ndarray, hi: np.ndarray,
                  lo: np.ndarray) -> tuple[list[LocationKey], bytes]:
    """The distinct places of the addresses and each one's index among them (-1: version 0)."""
    get, place_of, ntop = locator._reader.get, locator.place_of, socket.inet_ntop
    v4, v6 = socket.AF_INET, socket.AF_INET6
    keys: list[LocationKey] = []
    numbers: dict[LocationKey, int] = {}
    local = array("i")
    for version, h, x in zip(versions.tolist(), hi.tolist(), lo.tolist(), strict=True):
        if version == 4:
            local.append(_number(place_of(get(ntop(v4, x.to_bytes(4, "big")))), numbers, keys))
        elif version == 6:
            local.append(_number(place_of(get(ntop(v6, (h << 64 | x).to_bytes(16, "big")))), numbers, keys))
        else:
            local.append(OPAQUE)
    return keys, local.tobytes()


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

    ``answer_of(location id)`` is called once per distinct id; OPAQUE runs (and locations
    whose answer is None) get answer None and are never merged with anything.
    """
    import numpy as np
    at = np.asarray(runs.ids, np.int64) - OPAQUE  # location ids from 0 (OPAQUE is -1)
    present = np.zeros(int(at.max()) + 1, bool)
    present[at] = True
    number: dict[Hashable, int] = {}
    code_of = np.full(len(present), -1, np.int64)  # the answer's number per location id (-1: None)
    for i in np.flatnonzero(present).tolist():
        lid = i + OPAQUE
        key = None if lid == OPAQUE else answer_of(lid)
        if key is not None:
            code_of[i] = number.setdefault(key, len(number))
    answers = list(number)
    codes = code_of[at]
    first = np.flatnonzero(np.concatenate(([True], (codes[1:] != codes[:-1]) | (codes[1:] < 0))))
    if runs.bits <= 32:
        starts: Sequence[int] = array("I", np.asarray(runs.starts, np.uint32)[first].tobytes())
    else:
        every = runs.starts
        starts = [every[i] for i in first.tolist()]
    return AnswerRuns(runs.bits, starts, [answers[c] if c >= 0 else None for c in codes[first].tolist()])


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
