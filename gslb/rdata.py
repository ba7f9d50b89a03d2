"""Record data in wire form: presentation text -> bytes, done once when a record is built (pure).

Every ``gslb.model.Record`` carries its ``tail``: TYPE CLASS TTL RDLENGTH RDATA, everything of a
resource record after its owner name, encoded here when the record is constructed (at zone load
for static records, once per distinct pool answer for pool records). The reply encoder only
appends bytes; no record is converted from text on the query path.

Names inside RDATA are written uncompressed (always legal, RFC 3597 section 4), so a tail is the
same wherever it lands in a message. Presentation forms are the zone loader's: names absolute
with a trailing dot, TXT and HINFO as quoted character strings with RFC 1035 5.1 escapes
(``\\DDD`` decimal, ``\\X``), a string longer than 255 octets split into 255-octet pieces.

Limits (RFC 1035 3.1, 3.3): a name is at most 255 octets, a label 63, the RDATA 65535;
:func:`record_tail` raises ``ValueError`` naming the limit, for the loader to turn into a located
error.
"""

from __future__ import annotations

import socket
import struct
from functools import lru_cache

#: the record types a zone or a pool answer can hold, by mnemonic
TYPE_NUMBERS: dict[str, int] = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "HINFO": 13, "MX": 15, "TXT": 16,
    "AAAA": 28, "SRV": 33, "OPT": 41, "DS": 43, "CAA": 257,
}

CLASS_IN = 1
#: the largest RDATA (RDLENGTH is 16 bits)
MAX_RDATA = 65535

_U16 = struct.Struct("!H")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength


def name_labels(name: str) -> tuple[bytes, ...]:
    """The labels of a text name (absolute, trailing dot optional), RFC 1035 escapes decoded."""
    if name == "." or name == "":
        return ()
    if "\\" not in name:
        text = name[:-1] if name.endswith(".") else name
        return tuple(label.encode("ascii") for label in text.split("."))
    labels: list[bytes] = []
    cur = bytearray()
    i = 0
    while i < len(name):
        c = name[i]
        if c == "\\":
            nxt = name[i + 1:i + 4]
            if len(nxt) == 3 and nxt.isdigit():
                cur.append(int(nxt))
                i += 4
                continue
            cur += name[i + 1].encode("latin-1")
            i += 2
            continue
        if c == ".":
            labels.append(bytes(cur))
            cur = bytearray()
        else:
            cur += c.encode("latin-1")
        i += 1
    if cur:
        labels.append(bytes(cur))
    return tuple(labels)


@lru_cache(maxsize=8192)
def name_to_wire(name: str) -> bytes:
    """An uncompressed wire name; ValueError when a label or the name is too long."""
    out = bytearray()
    for label in name_labels(name):
        if not 0 < len(label) <= 63:
            raise ValueError(f"label {label[:20]!r} of {name[:80]} is {len(label)} octets, expected 1..63")
        out.append(len(label))
        out += label
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name {name[:80]}... is {len(out)} octets in wire form, at most 255")
    return bytes(out)


def character_strings(text: str) -> list[bytes]:
    """The <character-string>s of a presentation form: quoted or bare, with escapes; long ones split at 255."""
    out: list[bytes] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        cur = bytearray()
        quoted = text[i] == '"'
        if quoted:
            i += 1
        while i < n:
            c = text[i]
            if quoted and c == '"':
                i += 1
                break
            if not quoted and c in " \t":
                break
            if c == "\\" and i + 1 < n:
                digits = text[i + 1:i + 4]
                if len(digits) == 3 and digits.isdigit():
                    cur.append(int(digits))
                    i += 4
                    continue
                cur += text[i + 1].encode("utf-8")
                i += 2
                continue
            cur += c.encode("utf-8")
            i += 1
        while len(cur) > 255:  # a long string is split into 255-octet pieces
            out.append(bytes(cur[:255]))
            del cur[:255]
        out.append(bytes(cur))
    return out


def _cstrings(text: str) -> bytes:
    return b"".join(bytes((len(s),)) + s for s in character_strings(text))


def encode_rdata(rtype: str, rdata: str) -> bytes:
    """The RDATA of a record in presentation form (names absolute) as uncompressed wire bytes."""
    if rtype == "A":
        return socket.inet_pton(socket.AF_INET, rdata)
    if rtype == "AAAA":
        return socket.inet_pton(socket.AF_INET6, rdata)
    if rtype in ("CNAME", "NS", "PTR"):
        return name_to_wire(rdata.strip())
    if rtype in ("TXT", "HINFO"):
        return _cstrings(rdata)
    fields = rdata.split()
    if rtype == "MX":
        return _U16.pack(int(fields[0])) + name_to_wire(fields[1])
    if rtype == "SRV":
        return struct.pack("!HHH", int(fields[0]), int(fields[1]), int(fields[2])) + name_to_wire(fields[3])
    if rtype == "SOA":
        return (name_to_wire(fields[0]) + name_to_wire(fields[1])
                + struct.pack("!IIIII", *(int(f) for f in fields[2:7])))
    if rtype == "DS":  # "KEYTAG ALGORITHM DIGESTTYPE HEX" (validated by gslb.dnssec.parse_ds)
        tag, alg, dtype, digest = rdata.split(None, 3)
        return struct.pack("!HBB", int(tag), int(alg), int(dtype)) + bytes.fromhex(digest.replace(" ", ""))
    if rtype == "CAA":
        flags, tag, value = rdata.split(None, 2)
        tag_bytes = tag.encode("ascii")
        strings = character_strings(value)
        return bytes((int(flags), len(tag_bytes))) + tag_bytes + b"".join(strings)
    raise ValueError(f"cannot encode {rtype} records")


def record_tail(rtype: str, ttl: int, rdata: str) -> bytes:
    """TYPE CLASS TTL RDLENGTH RDATA of a record; ValueError when it cannot be encoded or is too long."""
    try:
        data = encode_rdata(rtype, rdata)
    except (OSError, struct.error, IndexError, UnicodeEncodeError) as exc:
        raise ValueError(f"{rtype} data {rdata[:80]!r} cannot be encoded: {exc}") from None
    if len(data) > MAX_RDATA:
        raise ValueError(f"{rtype} data is {len(data)} octets in wire form, at most {MAX_RDATA}")
    number = TYPE_NUMBERS.get(rtype)
    if number is None:
        raise ValueError(f"cannot encode {rtype} records")
    return _RR_FIXED.pack(number, CLASS_IN, ttl, len(data)) + data
