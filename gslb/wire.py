"""DNS wire format: query bytes -> ``Query``, ``Response`` -> reply bytes (EDNS, ECS, TC, errors).

The per-query path is the limit of a Python DNS server, so the common case (a header, one
question, at most one OPT record) is parsed by hand here. Replies are assembled from bytes with
name compression for owner names; names inside RDATA are written uncompressed, which is always
legal (RFC 3597 section 4) and keeps each record's wire data position-independent.

``Query`` (what was asked) and ``Response`` (what to answer) are the two values of the query
path; record data is already in wire form (``Record.tail``, encoded once by ``gslb.rdata``).

This is the only module of gslb that imports dnslib (for type names).

Error mapping at the edge (as dnspython's nanonameserver and CoreDNS do):
- a packet shorter than a header, or with QR=1 (a response), raises ``Drop``: no reply at all,
  so gslb can never be turned into a reflector of its own replies;
- a malformed query raises ``FormErr`` carrying a FORMERR reply (question echoed when it could
  be read);
- other opcodes than QUERY raise ``Reject`` with NOTIMP (NOTIFY: REFUSED, gslb is no
  secondary), and EDNS versions above 0 raise ``Reject`` with BADVERS (RFC 6891 section 6.1.3);
- a TSIG-signed query raises ``Reject`` with NOTAUTH and an unsigned TSIG record with error
  BADKEY (RFC 8945 section 5.2.1: gslb has no keys, so every key is unknown).
Every error reply to a query whose OPT record could be read carries an OPT record (RFC 6891
section 7); an OPT record outside the additional section is a FORMERR (section 6.1.1).

Error replies echo the opcode and RD (RFC 1035 4.1.1), and CD only for QUERY: the CD bit is a
QUERY flag (RFC 4035 3.1.6 has it copied into responses to queries); for other opcodes its
meaning is not defined (RFC 6895 2), so NOTIMP and NOTIFY's REFUSED copy RD alone, as Knot and
gdnsd do (ISC's EDNS compliance tester flags a NOTIMP that copies CD).

No UDP reply is larger than the client's limit (512 without EDNS, else min(its size, 1232)), the
error replies included: ``Reject.build(limit)`` drops, in this order, the TSIG record and then the
question, and sets TC=1, when the reply would not fit (a BADKEY reply echoes the key and algorithm
names in full, so a small query whose TSIG names point at a long question would otherwise get a
reply almost three times its size).

The COOKIE option (RFC 7873) is read here (``Query.cookie``, the first one; later ones are
ignored, RFC 7873 5.2) and judged by ``gslb.cookies``; the reply's COOKIE option is passed to
``encode_response`` and ``Reject.build`` as ready bytes.
"""

from __future__ import annotations

import logging
import socket
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from dnslib import QTYPE

from gslb.model import Record
from gslb.rdata import TYPE_NUMBERS, name_to_wire

__all__ = ["Query", "Response", "Ecs", "Drop", "Reject", "FormErr", "parse_query", "encode_response",
           "servfail", "formerr", "slipped", "with_tc", "type_name", "type_number", "name_to_wire", "RCODE_NAMES"]

logger = logging.getLogger(__name__)

#: RCODEs (RFC 1035 4.1.1, RFC 6891 9)
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
NOTAUTH = 9
BADVERS = 16
#: the server cookie is not valid (RFC 7873 8), extended: its upper bits travel in the OPT record
BADCOOKIE = 23
#: TSIG error: the key is not known (RFC 8945 section 5.2.1)
BADKEY = 17
RCODE_NAMES: dict[int, str] = {
    NOERROR: "NOERROR", FORMERR: "FORMERR", SERVFAIL: "SERVFAIL", NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP", REFUSED: "REFUSED", NOTAUTH: "NOTAUTH", BADVERS: "BADVERS",
    BADCOOKIE: "BADCOOKIE",
}

#: opcodes
OPCODE_QUERY, OPCODE_NOTIFY = 0, 4

#: classes and special types
CLASS_IN = 1
CLASS_ANY = 255
TYPE_OPT, TYPE_DS, TYPE_TSIG, TYPE_IXFR, TYPE_AXFR, TYPE_ANY = 41, 43, 250, 251, 252, 255

#: EDNS option codes
OPTION_ECS = 8
OPTION_COOKIE = 10

#: what gslb advertises and never exceeds over UDP (DNS flag day 2020)
OUR_PAYLOAD = 1232
#: the classic UDP limit without EDNS (RFC 1035 4.2.1)
CLASSIC_UDP = 512
#: the largest DNS message (TCP)
TCP_MAX = 65535

_HEADER = struct.Struct("!HHHHHH")
_U16 = struct.Struct("!H")
_RR_FIXED = struct.Struct("!HHIH")
_OPT_FIXED = struct.Struct("!BHHIH")  # root name, type, class, ttl, rdlength

# flag bits
_QR, _AA, _TC, _RD, _CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0010

# bytes that may appear unescaped in a label of the text form of a name
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*/+=!#$%&'^`{|}~")


class Drop(Exception):
    """The packet gets no reply at all (short header, or a response: QR=1)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Reject(Exception):
    """The query gets an error reply with ``rcode``; ``qtype`` as far as known.

    ``reply`` is the complete reply (TCP); :meth:`build` fits it into a UDP limit and adds a
    COOKIE option. ``cookie`` is the query's COOKIE option data when it could be read (None
    otherwise); ``udp_limit`` the largest UDP reply the client takes (512 without EDNS).
    """

    def __init__(self, rcode: int, ident: int, flags: int, question: bytes = b"", edns: bool = False,
                 do: bool = False, tsig: bytes = b"", qtype: str = "", udp_limit: int = 512,
                 cookie: bytes | None = None) -> None:
        self.rcode = rcode
        self.ident = ident
        #: the header flags without the RCODE (QR, opcode, RD, CD as echoed)
        self.flags = flags
        self.question = question
        self.edns = edns
        self.do = do
        self.tsig = tsig
        self.qtype = qtype
        self.udp_limit = udp_limit
        self.cookie = cookie
        super().__init__(RCODE_NAMES.get(rcode, str(rcode)))

    @property
    def reply(self) -> bytes:
        """The complete reply (no COOKIE option, no size limit)."""
        return self.build(TCP_MAX)

    def build(self, limit: int, cookie: bytes = b"", rcode: int | None = None) -> bytes:
        """The reply in at most ``limit`` bytes, with the COOKIE option ``cookie`` (code, length and
        data) in its OPT record; ``rcode`` replaces the error's (the cookie ping of RFC 7873 5.4).

        When it does not fit: TC=1 (the client retries over TCP, where it gets all of it) and the
        TSIG record is left out, then the question too (a truncated reply only has to send the
        client to TCP; the header alone always fits).
        """
        if rcode is None:
            rcode = self.rcode
        flags = self.flags | (rcode & 0xF)
        opt = _opt_rr(rcode, self.do, cookie) if self.edns else b""
        reply = _bare_reply(self.ident, flags, self.question, opt, self.tsig)
        if len(reply) <= limit:
            return reply
        return _truncated(self.ident, flags, self.question, opt, limit)


class FormErr(Reject):
    """The query is malformed: FORMERR (question echoed when readable); ``why`` says how.

    ``ping`` marks a query with no question but a COOKIE option: with cookies enabled it is the
    cookie ping of RFC 7873 5.4 (answered NOERROR or BADCOOKIE), else a FORMERR.
    """

    def __init__(self, ident: int, flags: int, why: str, question: bytes = b"", edns: bool = False,
                 do: bool = False, qtype: str = "", udp_limit: int = 512, cookie: bytes | None = None,
                 ping: bool = False) -> None:
        super().__init__(FORMERR, ident, flags, question, edns, do, b"", qtype, udp_limit, cookie)
        self.why = why
        self.ping = ping


class Ecs:
    """A parsed EDNS Client Subnet option (RFC 7871 section 6)."""

    __slots__ = ("family", "address", "source_prefix", "raw_address")

    def __init__(self, family: int, address: str, source_prefix: int, raw_address: bytes) -> None:
        self.family = family
        self.address = address
        self.source_prefix = source_prefix
        #: the ADDRESS bytes as sent (echoed in the reply)
        self.raw_address = raw_address

    def __repr__(self) -> str:
        return f"Ecs({self.address}/{self.source_prefix})"


@dataclass(frozen=True, slots=True)
class Query:
    """One parsed question with its header bits and EDNS data; shared by every query with the same bytes.

    The query ID is not part of it (``parse_query`` returns it beside the ``Query``), so that a
    repeated question is parsed once and its ``Query`` reused as is.
    """

    opcode: int
    rd: bool
    cd: bool
    #: as received (original letter case), absolute with a trailing dot
    qname: str
    qtype: int
    qclass: int
    #: the raw question section (QNAME QTYPE QCLASS), echoed as is (0x20 case preserved)
    question: bytes
    edns: bool = False
    #: the client's advertised UDP payload (>= 512)
    payload: int = CLASSIC_UDP
    do: bool = False
    ecs: Ecs | None = None
    #: the data of the query's (first) COOKIE option as sent, any length; None without one
    cookie: bytes | None = None
    #: derived: ``qname`` in lower case
    qname_lower: str = field(init=False, repr=False)
    #: derived: the type mnemonic (``A``, ``TYPE65534``)
    qtype_name: str = field(init=False, repr=False)
    #: derived: the largest UDP reply this client may get: min(its payload, 1232), 512 without EDNS
    udp_limit: int = field(init=False, repr=False)
    #: derived: the header flags every reply to it has (QR, opcode, RD and CD echoed)
    reply_flags: int = field(init=False, repr=False)
    #: derived: the compression targets the question offers (name -> offset); never mutated,
    #: each reply copies it
    compress: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        qname_lower = self.qname.lower()
        setattr_ = object.__setattr__
        setattr_(self, "qname_lower", qname_lower)
        setattr_(self, "qtype_name", type_name(self.qtype))
        setattr_(self, "udp_limit", min(self.payload, OUR_PAYLOAD) if self.edns else CLASSIC_UDP)
        setattr_(self, "reply_flags",
                 _QR | (self.opcode << 11) | (_RD if self.rd else 0) | (_CD if self.cd else 0))
        setattr_(self, "compress", _question_names(qname_lower, self.qname))


class Response:
    """What to answer: rcode, AA, the three sections (model ``Record``s), the ECS scope, and what
    the answer cache and the statistics need to know about it.

    - ``zone``: the key of the zone that answered ("" for REFUSED), for statistics;
    - ``deps``: what the answer was computed from, for the answer cache (``gslb.answercache``):
      the keys of the zones it read and ``(zone key, pool name)`` of the pool whose verdicts it
      used; None when it must not be cached (a random draw: weighted, round_robin, p2c);
    - ``per_client``: the answer depends on the packet's source address (a pool that locates or
      hashes the client, asked without a usable ECS option);
    - ``pool``/``sites``: the pool that answered and the sites in the answer (statistics);
    - ``drop``: when set, no reply at all is sent and the packet is counted as dropped for this
      reason (``starting``: a pool name asked before the first round of health checks).
    """

    __slots__ = ("rcode", "aa", "answer", "authority", "additional", "ecs_scope", "zone", "deps",
                 "per_client", "pool", "sites", "drop")

    def __init__(self, rcode: int, aa: bool, answer: tuple[Record, ...] = (),
                 authority: tuple[Record, ...] = (), additional: tuple[Record, ...] = (),
                 ecs_scope: int = 0, zone: str = "", deps: tuple | None = (), per_client: bool = False,
                 pool: tuple[str, str] | None = None, sites: tuple[str, ...] = (),
                 drop: str | None = None) -> None:
        self.rcode = rcode
        self.aa = aa
        self.answer = answer
        self.authority = authority
        self.additional = additional
        self.ecs_scope = ecs_scope
        self.zone = zone
        self.deps = deps
        self.per_client = per_client
        self.pool = pool
        self.sites = sites
        self.drop = drop

    def __repr__(self) -> str:
        return (f"Response(rcode={self.rcode}, aa={self.aa}, answer={self.answer}, "
                f"authority={self.authority}, additional={self.additional}, scope={self.ecs_scope})")


def _question_names(qname_lower: str, qname: str) -> dict[str, int]:
    """The owner names a reply can point at the question for (name -> offset in the message).

    The question name is at offset 12: answers at the qname point there and so show the
    client's letter case. Its suffixes are compression targets only where the client wrote
    them in lower case: other owners (a CNAME target, the apex SOA) keep the zone's case
    instead of picking up the client's 0x20 letters (c2.t.TEST.).
    """
    names: dict[str, int] = {}
    if qname_lower == "." or "\\" in qname_lower:
        return names
    names[qname_lower] = 12
    if qname != qname_lower:
        size = len(qname)
        dot = qname_lower.find(".")
        while dot < size - 1:
            suffix = qname_lower[dot + 1:]
            if qname.endswith(suffix):
                names[suffix] = 13 + dot
            dot = qname_lower.find(".", dot + 1)
    else:
        offset = 12
        suffix = qname_lower
        while suffix:
            names[suffix] = offset
            dot = suffix.find(".")
            offset += dot + 1
            suffix = suffix[dot + 1:]
    return names


@lru_cache(maxsize=1024)
def type_name(qtype: int) -> str:
    """The mnemonic of a type number (``TYPE65534`` when unknown)."""
    try:
        return str(QTYPE[qtype])
    except Exception:  # dnslib raises its own error for unknown numbers
        return f"TYPE{qtype}"


def type_number(name: str) -> int:
    """The number of a type mnemonic (``A`` -> 1)."""
    number = TYPE_NUMBERS.get(name)
    if number is not None:
        return number
    if name.startswith("TYPE"):
        return int(name[4:])
    return int(getattr(QTYPE, name))


# --- parsing ---------------------------------------------------------------------------------


class _Malformed(Exception):
    """Internal: the rest of the packet cannot be read."""


def _read_qname(data: bytes, pos: int) -> tuple[str, int]:
    """The question name at ``pos`` (no compression allowed there) and the offset after it."""
    labels: list[str] = []
    total = 1
    end = len(data)
    while True:
        if pos >= end:
            raise _Malformed("name runs past the end")
        length = data[pos]
        pos += 1
        if length == 0:
            break
        if length > 63:
            # a compression pointer can only point backwards, into the header: never valid here
            raise _Malformed("compression pointer or bad label type in the question")
        label = data[pos:pos + length]
        if len(label) != length:
            raise _Malformed("label runs past the end")
        pos += length
        total += length + 1
        if total > 255:
            raise _Malformed("name longer than 255 octets")
        labels.append(label.decode("ascii") if _PLAIN.issuperset(label) else _escape(label))
    return (".".join(labels) + "." if labels else "."), pos


def _escape(label: bytes) -> str:
    """A label in presentation form with RFC 1035 5.1 escapes (``\\.``, ``\\DDD``)."""
    out = []
    for b in label:
        if b in _PLAIN:
            out.append(chr(b))
        elif b in b".\\\"();@ " or b < 0x21 or b > 0x7E:
            out.append(f"\\{b:03d}" if (b < 0x21 or b > 0x7E) else "\\" + chr(b))
        else:
            out.append(chr(b))
    return "".join(out)


def _skip_name(data: bytes, pos: int) -> int:
    """The offset after a (possibly compressed) name at ``pos``."""
    end = len(data)
    while True:
        if pos >= end:
            raise _Malformed("name runs past the end")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise _Malformed("pointer runs past the end")
            return pos + 2
        if length > 63:
            raise _Malformed("bad label type")
        pos += 1 + length


def _read_name_wire(data: bytes, pos: int) -> tuple[bytes, int]:
    """The name at ``pos`` as uncompressed wire bytes (pointers followed, case kept) and the offset after it."""
    out = bytearray()
    end = len(data)
    after = -1
    hops = 0
    while True:
        if pos >= end:
            raise _Malformed("name runs past the end")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise _Malformed("pointer runs past the end")
            if after < 0:
                after = pos + 2
            hops += 1
            if hops > 127:
                raise _Malformed("compression pointer loop")
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        if length > 63:
            raise _Malformed("bad label type")
        if pos + 1 + length > end:
            raise _Malformed("label runs past the end")
        out += data[pos:pos + 1 + length]
        if len(out) > 255:
            raise _Malformed("name longer than 255 octets")
        if length == 0:
            return bytes(out), (after if after >= 0 else pos + 1)
        pos += 1 + length


class _Tsig:
    """The parts of a query's TSIG record that an error reply echoes (RFC 8945 section 4.2)."""

    __slots__ = ("key", "algorithm", "time_fudge", "original_id")

    def __init__(self, key: bytes, algorithm: bytes, time_fudge: bytes, original_id: bytes) -> None:
        self.key = key
        self.algorithm = algorithm
        #: Time Signed (48 bits) and Fudge as sent
        self.time_fudge = time_fudge
        self.original_id = original_id


def _parse_tsig(data: bytes, start: int, rdata_at: int, end: int) -> _Tsig:
    """The TSIG record at ``start`` (RDATA from ``rdata_at`` to ``end``), its RDATA checked for length."""
    key, _ = _read_name_wire(data, start)
    algorithm, pos = _read_name_wire(data, rdata_at)
    if pos > end:
        raise _Malformed("TSIG algorithm name runs past the record")
    if pos + 10 > end:
        raise _Malformed("TSIG record too short")
    time_fudge = data[pos:pos + 8]
    mac_size = _U16.unpack_from(data, pos + 8)[0]
    pos += 10 + mac_size
    if pos + 6 > end:
        raise _Malformed("TSIG MAC runs past the record")
    original_id = data[pos:pos + 2]
    other_len = _U16.unpack_from(data, pos + 4)[0]
    if pos + 6 + other_len != end:
        raise _Malformed("TSIG other data does not end the record")
    return _Tsig(key, algorithm, time_fudge, original_id)


def _badkey_tsig(tsig: _Tsig) -> bytes:
    """The unsigned TSIG record of a BADKEY reply: key and algorithm, time and fudge echoed, no MAC."""
    rdata = tsig.algorithm + tsig.time_fudge + b"\x00\x00" + tsig.original_id + _U16.pack(BADKEY) + b"\x00\x00"
    return tsig.key + _RR_FIXED.pack(TYPE_TSIG, CLASS_ANY, 0, len(rdata)) + rdata


def _opcode_rcode(opcode: int) -> int:
    """The RCODE an opcode other than QUERY gets (0 for QUERY).

    RFC 1996: a NOTIFY to a server that is no secondary of the zone gets REFUSED; every other
    opcode (IQUERY, STATUS, UPDATE, ...) is not implemented.
    """
    if opcode == OPCODE_QUERY:
        return NOERROR
    return REFUSED if opcode == OPCODE_NOTIFY else NOTIMP


def _bare_reply(ident: int, flags: int, question: bytes = b"", opt: bytes = b"", tsig: bytes = b"") -> bytes:
    """A reply without records: the header (``flags`` complete: QR, RCODE, TC...), the question, OPT and TSIG if any."""
    return (_HEADER.pack(ident, flags, 1 if question else 0, 0, 0, (1 if opt else 0) + (1 if tsig else 0))
            + question + opt + tsig)


def _truncated(ident: int, flags: int, question: bytes, opt: bytes, limit: int) -> bytes:
    """A TC=1 reply without records in at most ``limit`` bytes: the question and OPT kept when they
    fit, else the question left out, else the OPT too (the header alone always fits)."""
    flags |= _TC
    reply = _bare_reply(ident, flags, question, opt)
    if len(reply) > limit:
        reply = _bare_reply(ident, flags, b"", opt)
        if len(reply) > limit:
            reply = _bare_reply(ident, flags)
    return reply


def _opt_rr(ext_rcode: int = 0, do: bool = False, options: bytes = b"") -> bytes:
    """Our OPT record: payload 1232, version 0, the DO bit echoed, the extended RCODE bits."""
    ttl = ((ext_rcode >> 4) << 24) | (0x8000 if do else 0)
    return _OPT_FIXED.pack(0, TYPE_OPT, OUR_PAYLOAD, ttl, len(options)) + options


#: parsed queries by their bytes after the ID: a question the answer cache cannot hold (a
#: random policy's, or one asked from many sources) skips the parser and shares one immutable
#: ``Query`` (cleared when full; queries longer than _PARSED_KEY are not kept)
_PARSED: dict[bytes, Query] = {}
_PARSED_MAX = 4096
_PARSED_KEY = 512


def parse_query(data: bytes) -> tuple[int, Query]:
    """The query ID and the (shared) ``Query``; raise ``Drop`` (no reply), ``FormErr`` or ``Reject`` (prebuilt reply)."""
    key = data[2:]
    query = _PARSED.get(key)
    if query is None:
        query = _parse(data)
        if len(key) <= _PARSED_KEY:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[key] = query
    return (data[0] << 8) | data[1], query


def _parse(data: bytes) -> Query:
    if len(data) < 12:
        raise Drop("short")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & _QR:
        raise Drop("response")
    opcode = (flags >> 11) & 0xF
    # every error reply: QR set, opcode and RD kept; CD too for QUERY (module docstring)
    base = _QR | (flags & (0x7800 | _RD | (_CD if opcode == OPCODE_QUERY else 0)))

    # The question: exactly one (RFC 1035 4.1.2 allows more, but no server answers them).
    question = b""
    qname = "."
    qtype = qclass = 0
    pos = 12
    try:
        if qdcount >= 1:
            qname, after = _read_qname(data, 12)
            if after + 4 > len(data):
                raise _Malformed("question runs past the end")
            qtype, qclass = struct.unpack_from("!HH", data, after)
            pos = after + 4
            question = data[12:pos]
    except _Malformed as e:
        raise FormErr(ident, base, str(e)) from None
    qtype_name = type_name(qtype) if question else ""

    # The rest: further questions (counted, then refused below), answer and authority records
    # (not expected in a query: skipped, but an OPT there is malformed) and the additional
    # section (OPT, TSIG; others ignored).
    edns = False
    version = 0
    payload = CLASSIC_UDP
    do = False
    ecs: Ecs | None = None
    cookie: bytes | None = None
    tsig: _Tsig | None = None
    malformed: str | None = None
    end = len(data)
    try:
        for _ in range(qdcount - 1):
            pos = _skip_name(data, pos) + 4
            if pos > end:
                raise _Malformed("question runs past the end")
        for _ in range(ancount + nscount):
            pos = _skip_name(data, pos)
            if pos + 10 > end:
                raise _Malformed("record runs past the end")
            if data[pos] == 0 and data[pos + 1] == TYPE_OPT:
                raise _Malformed("OPT record outside the additional section (RFC 6891 6.1.1)")
            pos += 10 + _U16.unpack_from(data, pos + 8)[0]
        opt_seen = 0
        for index in range(arcount):
            start = pos
            pos = _skip_name(data, pos)
            if pos + 10 > end:
                raise _Malformed("record runs past the end")
            rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
            rdata_at = pos + 10
            pos = rdata_at + rdlen
            if pos > end:
                raise _Malformed("record data runs past the end")
            if rtype == TYPE_TSIG:
                if index != arcount - 1:
                    raise _Malformed("TSIG record is not the last record (RFC 8945 5.1)")
                tsig = _parse_tsig(data, start, rdata_at, pos)
                continue
            if rtype != TYPE_OPT:
                continue
            opt_seen += 1
            if opt_seen > 1:
                raise _Malformed("more than one OPT record (RFC 6891 6.1.1)")
            if data[start] != 0:
                raise _Malformed("OPT owner is not the root (RFC 6891 6.1.2)")
            edns = True
            payload = max(rclass, CLASSIC_UDP)  # values below 512 are treated as 512 (6.2.5)
            version = (ttl >> 16) & 0xFF
            do = bool(ttl & 0x8000)
            ecs, cookie = _parse_options(data, rdata_at, pos)
        if pos != end:
            raise _Malformed("trailing bytes after the last record")
    except _Malformed as e:
        malformed = str(e)

    echo = question if qdcount == 1 else b""
    limit = min(payload, OUR_PAYLOAD) if edns else CLASSIC_UDP
    opcode_rcode = _opcode_rcode(opcode)
    if malformed is not None or (qdcount != 1 and not opcode_rcode):
        if opcode_rcode:
            # not a query at all: the opcode's answer rather than a judgement of a format we do not serve
            raise Reject(opcode_rcode, ident, base, echo, edns, do, b"", qtype_name, limit)
        # no question, a COOKIE option and nothing else wrong: the cookie ping (RFC 7873 5.4)
        ping = malformed is None and qdcount == 0 and cookie is not None and tsig is None and version == 0
        raise FormErr(ident, base, malformed or f"QDCOUNT {qdcount}, expected 1", echo, edns, do, qtype_name,
                      limit, cookie if malformed is None else None, ping)
    if tsig is not None:
        # RFC 8945 5.2.1: an unknown key gets NOTAUTH with an unsigned TSIG, error BADKEY (5.3.2)
        raise Reject(NOTAUTH, ident, base, echo, edns, do, _badkey_tsig(tsig), qtype_name, limit, cookie)
    if version > 0:
        # RFC 6891 6.1.3: BADVERS (its upper bits in the OPT), with an OPT of the highest version we implement (0).
        raise Reject(BADVERS, ident, base, echo, edns, do, b"", qtype_name, limit, cookie)
    if opcode_rcode:
        raise Reject(opcode_rcode, ident, base, echo, edns, do, b"", qtype_name, limit, cookie)
    return Query(opcode, bool(flags & _RD), bool(flags & _CD), qname, qtype, qclass, question,
                 edns, payload, do, ecs, cookie)


def _parse_options(data: bytes, pos: int, end: int) -> tuple[Ecs | None, bytes | None]:
    """The ECS option among the OPT's options, validated per RFC 7871 section 6 and 7.2.1, and
    the first COOKIE option's data as sent (its length is judged by ``gslb.cookies``)."""
    ecs = None
    cookie = None
    while pos < end:
        if pos + 4 > end:
            raise _Malformed("truncated EDNS option")
        code, length = struct.unpack_from("!HH", data, pos)
        pos += 4
        if pos + length > end:
            raise _Malformed("EDNS option runs past the OPT record")
        if code == OPTION_ECS:
            if ecs is not None:
                raise _Malformed("more than one ECS option")
            ecs = _parse_ecs(data[pos:pos + length])
        elif code == OPTION_COOKIE and cookie is None:
            cookie = data[pos:pos + length]
        pos += length
    return ecs, cookie


def _parse_ecs(opt: bytes) -> Ecs:
    """One ECS option's payload; every malformation is a FORMERR (RFC 7871 7.2.1)."""
    if len(opt) < 4:
        raise _Malformed("ECS option shorter than 4 octets")
    family, source, scope = struct.unpack_from("!HBB", opt)
    raw = opt[4:]
    if family == 1:
        width = 32
    elif family == 2:
        width = 128
    else:
        raise _Malformed(f"ECS family {family} is not 1 (IPv4) or 2 (IPv6)")
    if source > width:
        raise _Malformed(f"ECS source prefix {source} longer than {width}")
    if scope != 0:
        raise _Malformed("ECS scope prefix must be 0 in a query")
    if len(raw) != (source + 7) // 8:
        raise _Malformed(f"ECS address has {len(raw)} octets, source prefix {source} needs {(source + 7) // 8}")
    if source % 8 and raw[-1] & (0xFF >> (source % 8)):
        raise _Malformed("ECS address has bits set beyond the source prefix")
    full = raw + bytes(width // 8 - len(raw))
    address = socket.inet_ntop(socket.AF_INET if family == 1 else socket.AF_INET6, full)
    return Ecs(family, address, source, raw)


# --- encoding --------------------------------------------------------------------------------


class _Writer:
    """Builds a message with owner-name compression."""

    __slots__ = ("buf", "names")

    def __init__(self, head: bytes, names: dict[str, int]) -> None:
        self.buf = bytearray(head)
        #: name -> offset of the names written so far (starts as a copy of the question's)
        self.names = names.copy()

    def owner(self, name: str) -> None:
        """Append an owner name, compressed against the names written before."""
        names = self.names
        buf = self.buf
        ptr = names.get(name)
        if ptr is not None:
            buf += _U16.pack(0xC000 | ptr)
            return
        labels = name[:-1].split(".") if "\\" not in name else None
        if labels is None or name == ".":
            buf += name_to_wire(name)
            return
        suffix = name
        for label in labels:
            ptr = names.get(suffix)
            if ptr is not None:
                buf += _U16.pack(0xC000 | ptr)
                return
            if len(buf) < 0x3FFF:
                names[suffix] = len(buf)
            raw = label.encode("ascii")
            buf.append(len(raw))
            buf += raw
            suffix = suffix[len(label) + 1:]
        buf.append(0)

    def records(self, records: Iterable[Record]) -> int:
        """Append records; returns how many."""
        count = 0
        for record in records:
            self.owner(record.name)
            self.buf += record.tail
            count += 1
        return count


def _ecs_option(query: Query, scope: int) -> bytes:
    ecs = query.ecs
    if ecs is None:
        return b""
    scope = min(scope, 32 if ecs.family == 1 else 128)
    body = struct.pack("!HBB", ecs.family, ecs.source_prefix, scope) + ecs.raw_address
    return struct.pack("!HH", OPTION_ECS, len(body)) + body


def encode_response(ident: int, query: Query, response: "Response", max_size: int, cookie: bytes = b"") -> bytes:
    """The reply bytes (ID ``ident``) for ``response``; never longer than ``max_size`` (else TC=1, question and OPT kept).

    Additional records that do not fit are left out without TC (RFC 2181 9), except the glue of
    a referral, which a resolver needs (RFC 9471): then the reply is truncated. ``cookie`` is the
    reply's COOKIE option (code, length and data), put in the OPT record after the ECS option.
    """
    rcode = response.rcode
    flags = query.reply_flags | (rcode & 0xF)
    if response.aa:
        flags |= _AA
    opt = _opt_rr(rcode, query.do, _ecs_option(query, response.ecs_scope) + cookie) if query.edns else b""
    writer = _Writer(b"\x00" * 12 + query.question, query.compress)
    ancount = writer.records(response.answer)
    nscount = writer.records(response.authority)
    budget = max_size - len(opt)
    if len(writer.buf) > budget:
        return _truncated(ident, flags, query.question, opt, max_size)  # the client retries over TCP (RFC 7766)
    arcount = 0
    if response.additional:
        referral = not response.aa and not response.answer and nscount > 0
        for record in response.additional:
            mark = len(writer.buf)
            writer.records((record,))
            if len(writer.buf) > budget:
                if referral:
                    return _truncated(ident, flags, query.question, opt, max_size)
                del writer.buf[mark:]
                writer.names = {k: v for k, v in writer.names.items() if v < mark}
                break
            arcount += 1
    if opt:
        writer.buf += opt
        arcount += 1
    _HEADER.pack_into(writer.buf, 0, ident, flags, 1, ancount, nscount, arcount)
    return bytes(writer.buf)


def servfail(ident: int, query: Query, cookie: bytes = b"") -> bytes:
    """A bare SERVFAIL reply (ID ``ident``) to ``query`` (question and OPT kept, ``cookie`` in the OPT)."""
    return _bare_reply(ident, query.reply_flags | SERVFAIL, query.question,
                       _opt_rr(0, query.do, cookie) if query.edns else b"")


def formerr(ident: int, query: Query) -> bytes:
    """A bare FORMERR reply (ID ``ident``) to a query that parsed but is malformed (a bad COOKIE
    option, RFC 7873 5.2.2): question and OPT kept."""
    return _bare_reply(ident, query.reply_flags | FORMERR, query.question,
                       _opt_rr(0, query.do) if query.edns else b"")


def slipped(reply: bytes, query: Query) -> bytes:
    """What a rate limiter sends instead of ``reply`` (``gslb.ratelimit``): its header with TC=1,
    the question and, when the query had EDNS, an OPT record (DO and the ECS option echoed, scope
    0); no records. A real client retries over TCP, which is never limited."""
    flags = (reply[2] << 8) | reply[3]
    ident = (reply[0] << 8) | reply[1]
    opt = _opt_rr(0, query.do, _ecs_option(query, 0)) if query.edns else b""
    return _bare_reply(ident, flags | _TC, query.question, opt)


def with_tc(reply: bytes) -> bytes:
    """A reply without records (an error reply) with its TC bit set."""
    return reply[:2] + bytes((reply[2] | (_TC >> 8),)) + reply[3:]
