"""DNSSEC: a zone's ``dnssec:`` block, its key files, and online signing of replies (RFC 4033-4035).

A zone with a ``dnssec:`` block has one combined signing key (CSK, flags 257) in a PEM file
(PKCS#8, unencrypted, mode 0600) made by ``gslb dnssec keygen``. Every answer is signed when it is
built, so pool answers that differ per client are signed like static ones. The cryptography is
the ``cryptography`` package's (ECDSA P-256 with SHA-256, algorithm 13; Ed25519, algorithm 15);
this module only lays out the bytes RFC 4034 asks for.

Key files of one zone (``key_file`` and two siblings, for the rollover of the README):

- ``KEY`` the active key: it signs, and is published in DNSKEY, CDS and CDNSKEY;
- ``KEY.next`` a new key (``keygen --next``): published in DNSKEY, CDS and CDNSKEY, not signing;
- ``KEY.old`` the previous key (``gslb dnssec rollover``): still in DNSKEY, not signing, no
  longer in CDS/CDNSKEY (the parent should drop its DS); ``gslb dnssec retire`` deletes it.

Denial of existence: compact answers (RFC 9824). A name that does not exist gets NOERROR with
one NSEC record at the name itself whose next name is ``\\000.NAME`` and whose types are RRSIG,
NSEC and NXNAME; a name without the asked type gets the same kind of NSEC listing the types it
has. One NSEC, one signature, no chain to precompute or walk; wildcards and pool names need
nothing special. A positive answer synthesised from a wildcard carries, as RFC 4035 5.3.4 asks,
an NSEC that covers the query name (RFC 4470 minimally covering: from just below the name to
just above it, among its siblings, so the closest encloser a validator derives is the
wildcard's parent).

Signatures are cached per RRset (owner as signed, type, TTL, data), in a bounded table: a pool has
a few distinct answers, each signed once. Inception is an hour in the past, expiration
``signature_validity`` after now, and a signature is made again once less than a quarter of the
validity is left. The answer cache (``gslb.answercache``) keeps signed replies under the
dependency ``SIGNATURE_DEP``, dropped every ``SIGNATURE_CACHE_PERIOD`` seconds (well within a
quarter of the shortest validity allowed), so no cached reply carries a signature close to expiry.

Pure apart from the key files (read by :func:`load_keys`) and the injected clock of ``Signer``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gslb.authority import Outcome, lookup
from gslb.model import Node, Record, Zone, ZoneSet
from gslb.rdata import name_labels, name_to_wire
from gslb.wire import FORMERR, NOERROR, NXDOMAIN, Query, Response
from gslb.yamlsafe import Errors, Fields, LineDict

#: algorithm mnemonic -> number (RFC 8624: both MUST for signing and validation)
ALGORITHMS: dict[str, int] = {"ECDSAP256SHA256": 13, "ED25519": 15}
DEFAULT_ALGORITHM = "ECDSAP256SHA256"
#: DNSKEY flags of a combined signing key: zone key + secure entry point (RFC 4034 2.1.1)
CSK_FLAGS = 257
#: signature validity: default, and the bounds a zone file may set (seconds)
DEFAULT_VALIDITY = 7 * 86400
MIN_VALIDITY = 3600
MAX_VALIDITY = 366 * 86400
#: inception is set this far in the past (clock skew of validators)
INCEPTION_OFFSET = 3600
#: signed replies in the answer cache are dropped this often (seconds); < MIN_VALIDITY / 4
SIGNATURE_CACHE_PERIOD = 300
#: the answer cache dependency of every signed reply (a 1-tuple, like gslb.handler.COOKIE_DEP)
SIGNATURE_DEP = ("#signatures",)
#: signatures kept (then the oldest is dropped first): pool answers are a few per pool, static
#: RRsets one per name and type asked, denials one per name asked (about 400 bytes each)
SIGNATURE_CACHE_MAX = 32768

TYPE_NUMBERS = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "HINFO": 13, "MX": 15, "TXT": 16,
                "AAAA": 28, "SRV": 33, "DS": 43, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48, "CDS": 59,
                "CDNSKEY": 60, "CAA": 257}
#: RFC 9824: the pseudo-type in the NSEC of a name that does not exist
TYPE_NXNAME = 128
#: the types gslb publishes at a signed zone's apex
APEX_KEY_TYPES = ("DNSKEY", "CDS", "CDNSKEY")

_RR_FIXED = struct.Struct("!HHIH")
_RRSIG_FIXED = struct.Struct("!HBBIIIH")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DNSSEC_KEYS = ("algorithm", "key_file", "signature_validity")


class SigningError(Exception):
    """An RRset could not be signed (the query gets SERVFAIL, never an unsigned answer)."""


class KeyFileError(Exception):
    """A key file cannot be read or does not hold a key of the zone's algorithm."""


# --- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One key of a zone: its role (``active``, ``next``, ``old``), file and DNSKEY data."""

    role: str
    path: str
    algorithm: int
    #: the DNSKEY RDATA (flags, protocol 3, algorithm, public key)
    dnskey: bytes
    tag: int
    private: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class Signing:
    """A zone's DNSSEC settings and keys (``Zone.dnssec``); ``keys`` has the active key first."""

    algorithm: str
    key_file: str
    validity: int
    keys: tuple[Key, ...]

    @property
    def active(self) -> Key:
        """The key that signs."""
        return self.keys[0]

    @property
    def fingerprint(self) -> str:
        """What the zone's digest adds for its keys (a key change is a zone change)."""
        keys = ",".join(f"{k.role}:{k.tag}:{hashlib.sha256(k.dnskey).hexdigest()[:16]}" for k in self.keys)
        return f"{keys};{self.validity}"


@dataclass(frozen=True)
class DnssecSpec:
    """The ``dnssec:`` block as written: algorithm, key file (absolute), validity, its line."""

    algorithm: str
    key_file: str
    validity: int
    line: int


def parse_duration(value: Any) -> int | None:
    """Seconds of ``7d``, ``12h``, ``30m``, ``3600s``, ``2w`` or a plain integer; None when not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    m = _DURATION.match(value)
    if m is None:
        return None
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_dnssec_block(err: Errors, top: Fields, zones_dir: str, zone_key: str) -> DnssecSpec | None:
    """The zone file's ``dnssec:`` block (None when absent or wrong), errors recorded in ``err``.

    ``key_file`` is relative to ``zones_dir`` (the zone file's folder); default
    ``keys/ZONE.key``.
    """
    if "dnssec" not in top.m:
        return None
    if top.m["dnssec"] is None:
        # "dnssec:" alone: every default
        block = LineDict()
        block.line = top.line("dnssec")
        block.key_lines = block.value_lines = {}
        block.raw_keys = block.raw_values = {}
    else:
        found = top.mapping("dnssec", _DNSSEC_KEYS)
        if found is None:
            return None
        block = found
    f = Fields(err, block, "dnssec")
    algorithm = f.choice("algorithm", DEFAULT_ALGORITHM, tuple(ALGORITHMS), "algorithm")
    key_file = f.string("key_file", f"keys/{zone_key}.key", strip=True)
    validity = DEFAULT_VALIDITY
    if "signature_validity" in block:
        raw = block["signature_validity"]
        seconds = parse_duration(raw)
        if seconds is None:
            err.add(f.line("signature_validity"), "dnssec.signature_validity",
                    f"expected a duration such as 7d, 12h or 3600 (seconds), got {raw!r}")
            return None
        if not MIN_VALIDITY <= seconds <= MAX_VALIDITY:
            err.add(f.line("signature_validity"), "dnssec.signature_validity",
                    f"signature_validity {raw} ({seconds} s) is out of range 1h..366d")
            return None
        validity = seconds
    if algorithm is None or key_file is None:
        return None
    path = key_file if os.path.isabs(key_file) else os.path.join(zones_dir, key_file)
    line = f.line("key_file") if "key_file" in block else top.m.key_line("dnssec")
    return DnssecSpec(algorithm, os.path.normpath(path), validity, line)


def parse_dnssec(err: Errors, top: Fields, zone_file: str, zone_key: str) -> Signing | None:
    """The ``dnssec:`` block with its keys read (the zone parse calls this); a key that cannot be
    read is an error of the zone at the block's ``key_file`` line."""
    spec = parse_dnssec_block(err, top, os.path.dirname(os.path.abspath(zone_file)), zone_key)
    if spec is None:
        return None
    try:
        return load_keys(spec, zone_key)
    except KeyFileError as exc:
        err.add(spec.line, "dnssec.key_file", str(exc))
        return None


def key_paths(key_file: str) -> dict[str, str]:
    """The files of each key role: ``active``, ``next``, ``old``."""
    return {"active": key_file, "next": key_file + ".next", "old": key_file + ".old"}


def load_keys(spec: DnssecSpec, zone_key: str) -> Signing:
    """The zone's keys: the active key (required), and ``.next``/``.old`` when present."""
    keys: list[Key] = []
    for role, path in key_paths(spec.key_file).items():
        if role != "active" and not os.path.exists(path):
            continue
        keys.append(read_key(path, role, spec.algorithm, zone_key))
    return Signing(spec.algorithm, spec.key_file, spec.validity, tuple(keys))


def read_key(path: str, role: str, algorithm: str, zone_key: str) -> Key:
    """One key file; KeyFileError saying why it is unusable."""
    try:
        with open(path, "rb") as fh:
            pem = fh.read(65536)
    except OSError as exc:
        hint = f" (create it with: gslb dnssec keygen {zone_key})" if role == "active" else ""
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}{hint}") from None
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"key file {path} holds no unencrypted PEM private key: {exc}") from None
    number = ALGORITHMS[algorithm]
    if number == 13 and not (isinstance(private, ec.EllipticCurvePrivateKey)
                             and isinstance(private.curve, ec.SECP256R1)):
        raise KeyFileError(f"key file {path} is not an ECDSA P-256 key (algorithm {algorithm})")
    if number == 15 and not isinstance(private, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"key file {path} is not an Ed25519 key (algorithm {algorithm})")
    dnskey = dnskey_rdata(private, number)
    return Key(role, path, number, dnskey, key_tag(dnskey), private)


def generate_private_key(algorithm: str) -> Any:
    """A new private key for ``algorithm``."""
    if ALGORITHMS[algorithm] == 13:
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def private_pem(private: Any) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (the key file format)."""
    pem: bytes = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    return pem


def write_key_file(path: str, private: Any) -> None:
    """Create ``path`` (mode 0600, never overwriting: FileExistsError; a missing folder is made
    with mode 0700) holding ``private``."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)  # a new folder: owner only
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem(private))


def dnskey_rdata(private: Any, algorithm: int) -> bytes:
    """DNSKEY RDATA (RFC 4034 2.1) of a CSK; public key per RFC 6605 4 (P-256: X | Y) or RFC 8080 3."""
    public = private.public_key()
    raw: bytes
    if algorithm == 13:
        raw = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return struct.pack("!HBB", CSK_FLAGS, 3, algorithm) + raw


def key_tag(dnskey: bytes) -> int:
    """RFC 4034 appendix B."""
    acc = 0
    for i, b in enumerate(dnskey):
        acc += b if i & 1 else b << 8
    acc += (acc >> 16) & 0xFFFF
    return acc & 0xFFFF


def ds_rdata(origin: str, dnskey: bytes) -> bytes:
    """DS RDATA with digest type 2 (SHA-256) of a DNSKEY at ``origin`` (RFC 4509)."""
    digest = hashlib.sha256(name_to_wire(origin.lower()) + dnskey).digest()
    return struct.pack("!HBB", key_tag(dnskey), dnskey[3], 2) + digest


def ds_text(origin: str, key: Key, ttl: int = 3600) -> str:
    """The DS record of ``key`` in zone file syntax, as the parent zone takes it."""
    rdata = ds_rdata(origin, key.dnskey)
    return f"{origin} {ttl} IN DS {key.tag} {key.algorithm} 2 {rdata[4:].hex().upper()}"


def dnskey_text(origin: str, key: Key, ttl: int = 3600) -> str:
    """The DNSKEY record of ``key`` in zone file syntax."""
    flags, proto, alg = struct.unpack_from("!HBB", key.dnskey)
    return f"{origin} {ttl} IN DNSKEY {flags} {proto} {alg} {base64.b64encode(key.dnskey[4:]).decode()}"


# --- records built here ----------------------------------------------------------------------


def raw_record(owner: str, rtype: str, ttl: int, rdata: bytes, text: str = "") -> Record:
    """A ``Record`` whose wire data is given (types gslb.rdata does not encode: RRSIG, NSEC, DNSKEY...)."""
    record = object.__new__(Record)
    setattr_ = object.__setattr__
    setattr_(record, "name", owner)
    setattr_(record, "rtype", rtype)
    setattr_(record, "ttl", ttl)
    setattr_(record, "rdata", text)
    setattr_(record, "tail", _RR_FIXED.pack(TYPE_NUMBERS[rtype], 1, ttl, len(rdata)) + rdata)
    return record


def type_bitmap(types: Iterable[int]) -> bytes:
    """The NSEC type bit maps field (RFC 4034 4.1.2)."""
    windows: dict[int, bytearray] = {}
    for t in sorted(set(types)):
        window = windows.setdefault(t >> 8, bytearray())
        low = t & 0xFF
        while len(window) <= low >> 3:
            window.append(0)
        window[low >> 3] |= 0x80 >> (low & 7)
    return b"".join(bytes((w, len(bits))) + bytes(bits) for w, bits in sorted(windows.items()))


def _label_count(name: str) -> int:
    labels = name.rstrip(".").split(".") if name != "." else []
    if labels and labels[0] == "*":
        return len(labels) - 1
    return len(labels)


def canonical_rdata(rtype: str, rdata: bytes) -> bytes:
    """RDATA in canonical form (RFC 4034 6.2): the names inside NS, CNAME, PTR, MX, SRV and SOA in
    lower case. Names in gslb's wire data are never compressed and labels are at most 63 octets,
    so lower-casing the name bytes touches no length octet."""
    if rtype in ("NS", "CNAME", "PTR"):
        return rdata.lower()
    if rtype == "MX":
        return rdata[:2] + rdata[2:].lower()
    if rtype == "SRV":
        return rdata[:6] + rdata[6:].lower()
    if rtype == "SOA":
        return rdata[:-20].lower() + rdata[-20:]
    return rdata


def _sign_bytes(key: Key, data: bytes) -> bytes:
    private = key.private
    if key.algorithm == 13:
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    signature: bytes = private.sign(data)
    return signature


def rrsig_rdata(records: tuple[Record, ...], signed_owner: str, signer: str, key: Key,
                inception: int, expiration: int) -> bytes:
    """The RRSIG RDATA over one RRset (RFC 4034 3.1, 3.1.8.1; RFC 4035 5.3.2 for wildcards):
    ``signed_owner`` is the owner as signed (``*.encloser`` for an answer synthesised from a
    wildcard)."""
    first = records[0]
    rtype = first.rtype
    ttl = first.ttl
    head = _RRSIG_FIXED.pack(TYPE_NUMBERS[rtype], key.algorithm, _label_count(signed_owner), ttl,
                             expiration & 0xFFFFFFFF, inception & 0xFFFFFFFF, key.tag)
    head += name_to_wire(signer)
    owner = name_to_wire(signed_owner.lower())
    fixed = _RR_FIXED.pack(TYPE_NUMBERS[rtype], 1, ttl, 0)[:8]
    rdatas = sorted({canonical_rdata(rtype, r.tail[10:]) for r in records})
    data = head + b"".join(owner + fixed + struct.pack("!H", len(rd)) + rd for rd in rdatas)
    try:
        signature = _sign_bytes(key, data)
    except Exception as exc:  # the library's own errors: a damaged key, an unsupported backend
        raise SigningError(f"cannot sign {signed_owner} {rtype} with key {key.tag}: {exc}") from exc
    return head + signature


# --- the signer ------------------------------------------------------------------------------


class Signer:
    """Signs replies of signed zones with DO=1; caches signatures per RRset (bounded).

    ``clock`` gives wall-clock seconds (injected in tests).
    """

    def __init__(self, clock: Callable[[], float] = time.time, max_entries: int = SIGNATURE_CACHE_MAX) -> None:
        self.clock = clock
        self.max_entries = max_entries
        #: (signer origin, key, signed owner, type, data) -> (RRSIG tail, time to sign again, the
        #: RRSIG record at the first owner it was made for)
        self._cache: OrderedDict[tuple[Any, ...], tuple[bytes, float, Record]] = OrderedDict()
        #: signatures made (statistics, tests)
        self.signed = 0
        self._zones: ZoneSet | None = None
        self._any = False

    # -- entry point

    def apply(self, query: Query, response: Response, zones: ZoneSet) -> Response | None:
        """The reply to send instead of ``response`` (None: ``response`` as it is).

        Apex DNSKEY, CDS and CDNSKEY of a signed zone are answered with or without DO; everything
        else changes only with DO=1. SigningError when an RRset cannot be signed.
        """
        if zones is not self._zones:
            self._zones = zones
            self._any = any(z.dnssec is not None for z in zones)
        if not self._any:
            return None
        if query.qtype == TYPE_NXNAME:
            zone = zones.find(query.qname_lower)
            if zone is not None and zone.dnssec is not None:
                # RFC 9824 3.5: NXNAME is a meta-type that cannot be asked for
                return Response(FORMERR, False, zone=response.zone, deps=response.deps)
        keys = _apex_keys(query, response, zones) or _child_ds(query, response, zones)
        if keys is not None:
            response = keys
        if not query.do:
            return keys
        if response.rcode != NOERROR and response.rcode != NXDOMAIN:
            return keys
        return self._sign(query, response, zones) or keys

    def _sign(self, query: Query, response: Response, zones: ZoneSet) -> Response | None:
        now = self.clock()
        answer_in = response.answer
        if answer_in and not response.authority and not response.additional:
            # the common case, a pool or static answer: one RRset, one signature
            sets = _rrsets(answer_in)
            if len(sets) == 1:
                first = answer_in[0]
                zone = _zone_of(zones, first, query)
                if zone is None:
                    return None
                if _signed_owner(zone, first) == first.name:
                    signed = answer_in + (self._rrsig(zone, answer_in, first.name, now),)
                    return Response(response.rcode, response.aa, signed, (), (), response.ecs_scope, response.zone,
                                    response.deps, response.per_client, response.pool, response.sites, response.drop)
        changed = False
        answer: list[Record] = []
        authority: list[Record] = []
        additional: list[Record] = []
        proofs: list[Record] = []
        for rrset in _rrsets(response.answer):
            answer.extend(rrset)
            zone = _zone_of(zones, rrset[0], query)
            if zone is None:
                continue
            signed_owner = _signed_owner(zone, rrset[0])
            answer.append(self._rrsig(zone, rrset, signed_owner, now))
            changed = True
            if signed_owner != rrset[0].name:
                # RFC 4035 5.3.4: the next closer name does not exist (no closer match)
                closer = next_closer(rrset[0].name, signed_owner)
                if all(p.name != closer for p in proofs):
                    proofs.extend(self._covering_nsec(zone, closer, now))
        rcode = response.rcode
        negative = response.authority and response.authority[0].rtype == "SOA" and response.aa
        if negative:
            soa = response.authority[0]
            name = _final_name(query, response)
            zone = _zone_of(zones, soa, query)
            authority.extend(response.authority)
            if zone is not None:
                authority.append(self._rrsig(zone, response.authority[:1], soa.name, now))
                nsec = _denial_nsec(zone, name, query.qtype_name, soa.ttl)
                if (query.qtype_name == "NSEC" and not response.answer and response.rcode == NOERROR
                        and nsec.name == query.qname_lower):
                    # the NSEC of the name is the answer (the name exists)
                    answer.extend((nsec, self._rrsig(zone, (nsec,), nsec.name, now)))
                    authority = []
                else:
                    authority.extend((nsec, self._rrsig(zone, (nsec,), nsec.name, now)))
                rcode = NOERROR  # RFC 9824: the NSEC says whether the name exists
                changed = True
        else:
            for rrset in _rrsets(response.authority):
                authority.extend(rrset)
                zone = _zone_of(zones, rrset[0], query)
                if zone is None:
                    continue
                changed = True
                owner = rrset[0].name
                if rrset[0].rtype == "NS" and owner in zone.cuts:
                    # a delegation (a referral, or after a CNAME): the NS are the child's and stay
                    # unsigned; the DS, or the proof that there is none, is signed
                    node = zone.nodes.get(owner)
                    ds = node.records.get("DS", ()) if node is not None else ()
                    if ds:
                        authority.extend(ds)
                        authority.append(self._rrsig(zone, ds, owner, now))
                    else:
                        nsec = _nsec(owner, _node_types(zone, node, owner), zone.soa.negative_ttl)
                        authority.extend((nsec, self._rrsig(zone, (nsec,), owner, now)))
                    continue
                authority.append(self._rrsig(zone, rrset, _signed_owner(zone, rrset[0]), now))
        authority.extend(proofs)
        # additional addresses: signed where they are the zone's own data, glue (below a cut) not
        for rrset in _rrsets(response.additional):
            additional.extend(rrset)
            zone = _zone_of(zones, rrset[0], query)
            if zone is not None and _authoritative(zone, rrset[0].name):
                additional.append(self._rrsig(zone, rrset, rrset[0].name, now))
                changed = True
        if not changed:
            return None
        return Response(rcode, response.aa, tuple(answer), tuple(authority), tuple(additional),
                        response.ecs_scope, response.zone, response.deps, response.per_client,
                        response.pool, response.sites, response.drop)

    # -- signatures

    def _rrsig(self, zone: Zone, rrset: tuple[Record, ...] | list[Record], signed_owner: str, now: float) -> Record:
        signing = zone.dnssec
        assert signing is not None
        key = signing.active
        first = rrset[0]
        tails = (first.tail,) if len(rrset) == 1 else tuple(sorted(r.tail for r in rrset))
        cache_key = (zone.origin, key.dnskey, signed_owner, first.rtype, tails)
        cache = self._cache
        hit = cache.get(cache_key)
        if hit is not None and now < hit[1]:
            record = hit[2]
            if record.name == first.name:
                return record
        else:
            inception = int(now) - INCEPTION_OFFSET
            expiration = int(now) + signing.validity
            rdata = rrsig_rdata(tuple(rrset), signed_owner, zone.origin, key, inception, expiration)
            tail = _RR_FIXED.pack(TYPE_NUMBERS["RRSIG"], 1, first.ttl, len(rdata)) + rdata
            record = raw_rrsig(first, tail, key.algorithm, signed_owner)
            # made again once less than a quarter of the validity is left
            if cache_key not in cache and len(cache) >= self.max_entries:
                cache.popitem(last=False)
            cache[cache_key] = (tail, now + signing.validity * 3 / 4, record)
            self.signed += 1
            return record
        # the same signature at another owner (a wildcard answer for another name)
        return raw_rrsig(first, hit[0], key.algorithm, signed_owner)

    def _covering_nsec(self, zone: Zone, qname: str, now: float) -> list[Record]:
        """The NSEC (and its RRSIG) that proves ``qname`` does not exist, for a wildcard answer."""
        nsec = covering_nsec(qname, zone.soa.negative_ttl)
        if nsec is None:
            return []
        return [nsec, self._rrsig(zone, (nsec,), nsec.name, now)]


# --- helpers of the signer -------------------------------------------------------------------


def raw_rrsig(covered: Record, tail: bytes, algorithm: int, signed_owner: str) -> Record:
    """The RRSIG record (wire data ``tail``) over ``covered``'s RRset, at its owner."""
    record = object.__new__(Record)
    setattr_ = object.__setattr__
    setattr_(record, "name", covered.name)
    setattr_(record, "rtype", "RRSIG")
    setattr_(record, "ttl", covered.ttl)
    setattr_(record, "rdata", f"{covered.rtype} {algorithm} {_label_count(signed_owner)}")
    setattr_(record, "tail", tail)
    return record


def _rrsets(records: tuple[Record, ...]) -> list[tuple[Record, ...]]:
    """Records grouped into RRsets (same owner and type), in order of first appearance."""
    if not records:
        return []
    first = records[0]
    if len(records) == 1 or all(r.name == first.name and r.rtype == first.rtype for r in records):
        return [records]
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        groups.setdefault((record.name, record.rtype), []).append(record)
    return [tuple(g) for g in groups.values()]


def _zone_of(zones: ZoneSet, record: Record, query: Query) -> Zone | None:
    """The signed zone that holds ``record`` (DS at a zone's apex: its parent), None when unsigned."""
    zone = zones.find(record.name)
    if zone is not None and record.rtype == "DS" and record.name == zone.origin and zone.origin != ".":
        zone = zones.find(zone.origin[zone.origin.find(".") + 1:] or ".")
    if zone is None or zone.dnssec is None:
        return None
    return zone


def _authoritative(zone: Zone, name: str) -> bool:
    """Whether ``name`` is authoritative data of ``zone`` (not at or below a delegation)."""
    if not zone.cuts:
        return True
    origin = zone.origin
    probe = name
    while probe != origin and probe.endswith("." + origin):
        if probe in zone.cuts:
            return False
        probe = probe[probe.find(".") + 1:]
    return True


def _signed_owner(zone: Zone, record: Record) -> str:
    """The owner as signed: the wildcard (``*.encloser``) when the record was synthesised from one."""
    name = record.name
    if name in zone.nodes or name in zone.names or name == zone.origin:
        return name
    found = lookup(zone, name, record.rtype)
    if found.wildcard and found.node is not None:
        return found.node.name
    return name


def next_closer(qname: str, wildcard: str) -> str:
    """The name one label below the wildcard's parent on the way to ``qname``."""
    labels = qname[:-1].split(".")
    keep = _label_count(wildcard) + 1
    return ".".join(labels[-keep:]) + "."


def _final_name(query: Query, response: Response) -> str:
    """The name a negative answer is about: the last CNAME's target, else the query name."""
    name = query.qname_lower
    for record in response.answer:
        if record.rtype == "CNAME":
            name = record.rdata.lower()
    return name


def _node_types(zone: Zone, node: Node | None, name: str, exclude: str = "") -> list[int]:
    """The types at a name for its NSEC: its records, a pool's A and AAAA, the apex keys; RRSIG, NSEC."""
    types = {TYPE_NUMBERS["RRSIG"], TYPE_NUMBERS["NSEC"]}
    if name in zone.cuts:
        # a delegation: the parent side holds only NS (and DS); the rest is glue
        types.add(TYPE_NUMBERS["NS"])
        if node is not None and node.records.get("DS"):
            types.add(TYPE_NUMBERS["DS"])
        return sorted(types)
    if node is not None:
        for rtype, records in node.records.items():
            if records and rtype in TYPE_NUMBERS:
                types.add(TYPE_NUMBERS[rtype])
        if node.pool is not None:
            types.update((1, 28))
    if name == zone.origin:
        types.update((TYPE_NUMBERS["SOA"], TYPE_NUMBERS["NS"]))
        types.update(TYPE_NUMBERS[t] for t in APEX_KEY_TYPES)
    if exclude in TYPE_NUMBERS:
        types.discard(TYPE_NUMBERS[exclude])
    return sorted(types)


def _nsec(owner: str, types: Iterable[int], ttl: int) -> Record:
    """The compact-answer NSEC at ``owner``: next name ``\\000.owner`` (RFC 9824)."""
    nxt = "\\000." + owner if owner != "." else "\\000."
    try:
        next_wire = name_to_wire(nxt)
    except ValueError:  # a name of 254-255 octets has no room for the label: the name itself
        next_wire = name_to_wire(owner)
    return raw_record(owner, "NSEC", ttl, next_wire + type_bitmap(types), "compact")


def _denial_nsec(zone: Zone, name: str, qtype: str, ttl: int) -> Record:
    """The one NSEC of a compact negative answer (RFC 9824) about ``name``."""
    found = lookup(zone, name, qtype)
    if found.outcome is Outcome.NXDOMAIN:
        return _nsec(name, (TYPE_NUMBERS["RRSIG"], TYPE_NUMBERS["NSEC"], TYPE_NXNAME), ttl)
    node = found.node
    if found.outcome is Outcome.NODATA and qtype == "DS" and name in zone.cuts:
        node = zone.nodes.get(name)
    return _nsec(name, _node_types(zone, node, name, qtype), ttl)


def covering_nsec(qname: str, ttl: int) -> Record | None:
    """An NSEC from just before ``qname`` to just after it among its siblings (RFC 4470 with the
    owner and next name next to the query name at its own level), so a validator finds the
    name does not exist and that the closest encloser is its parent; None for a name at the root."""
    if qname == "." or "." not in qname[:-1]:
        return None
    first, _, parent = qname.partition(".")
    label = _label_bytes(first)
    if label is None:
        return None
    # the longest first label this name's parent leaves room for (a name is at most 255 octets)
    room = min(63, 254 - len(name_to_wire(parent)))
    if label and label[-1] > 0:
        before = label[:-1] + bytes((label[-1] - 1,))
        before += b"\xff" * max(0, room - len(before))
    else:
        before = label[:-1]
    if not before:
        return None
    if len(label) < room:
        after = label + b"\x00"
    elif label[-1] < 0xFF:
        after = label[:-1] + bytes((label[-1] + 1,))
    else:
        return None
    owner = _escape(before) + "." + parent
    nxt = _escape(after) + "." + parent
    types = (TYPE_NUMBERS["RRSIG"], TYPE_NUMBERS["NSEC"])
    return raw_record(owner, "NSEC", ttl, name_to_wire(nxt) + type_bitmap(types), "covering")


def _label_bytes(text: str) -> bytes | None:
    labels = name_labels(text + ".")
    return labels[0] if len(labels) == 1 else None


def _escape(label: bytes) -> str:
    out = []
    for b in label:
        c = chr(b)
        if c.isascii() and (c.isalnum() or c in "-_"):
            out.append(c.lower())
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def apex_key_records(zone: Zone, rtype: str) -> tuple[Record, ...]:
    """The DNSKEY (every key), CDS or CDNSKEY (active and next keys) RRset of a signed zone."""
    signing = zone.dnssec
    assert signing is not None
    memo_key = ("", "dnssec " + rtype)
    records = zone.memo.get(memo_key)
    if records is None:
        origin, ttl = zone.origin, zone.ttl
        if rtype == "DNSKEY":
            records = tuple(raw_record(origin, "DNSKEY", ttl, k.dnskey, k.role) for k in signing.keys)
        else:
            wanted = [k for k in signing.keys if k.role != "old"]
            if rtype == "CDS":
                records = tuple(raw_record(origin, "CDS", ttl, ds_rdata(origin, k.dnskey), k.role) for k in wanted)
            else:
                records = tuple(raw_record(origin, "CDNSKEY", ttl, k.dnskey, k.role) for k in wanted)
        zone.memo[memo_key] = records
    return records


def _apex_keys(query: Query, response: Response, zones: ZoneSet) -> Response | None:
    """DNSKEY, CDS or CDNSKEY asked at a signed zone's apex: the answer (else None)."""
    qtype = query.qtype_name
    if qtype not in APEX_KEY_TYPES or response.answer:
        return None
    zone = zones.find(query.qname_lower)
    if zone is None or zone.dnssec is None or query.qname_lower != zone.origin:
        return None
    return Response(NOERROR, True, apex_key_records(zone, qtype), zone=response.zone, deps=response.deps)


_HEX = re.compile(r"^[0-9A-Fa-f]+$")
#: digest lengths by DS digest type (RFC 4034 5.1.4: SHA-1, RFC 4509: SHA-256, RFC 6605: SHA-384)
_DIGEST_LENGTHS = {1: 20, 2: 32, 4: 48}


def parse_ds(text: str) -> tuple[str | None, str | None]:
    """A DS value of a zone file, ``"KEYTAG ALGORITHM DIGESTTYPE DIGEST"``: (canonical, None) or
    (None, the problem)."""
    parts = text.split()
    example = 'e.g. "12345 13 2 49FD46E6C4B45C55D4AC..." (as `gslb dnssec ds` prints it)'
    if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
        return None, f"DS {text!r} must be \"KEYTAG ALGORITHM DIGESTTYPE DIGEST\", {example}"
    tag, alg, dtype = (int(p) for p in parts[:3])
    digest = "".join(parts[3:])
    if tag > 65535 or alg > 255 or dtype > 255:
        return None, f"DS {text!r}: key tag 0..65535, algorithm and digest type 0..255"
    if not _HEX.match(digest) or len(digest) % 2:
        return None, f"DS {text!r}: the digest must be hexadecimal, {example}"
    want = _DIGEST_LENGTHS.get(dtype)
    if want is not None and len(digest) != 2 * want:
        return None, (f"DS {text!r}: a digest of type {dtype} is {want} octets ({2 * want} hex digits), "
                      f"got {len(digest) // 2}")
    return f"{tag} {alg} {dtype} {digest.upper()}", None


def _child_ds(query: Query, response: Response, zones: ZoneSet) -> Response | None:
    """DS asked at the apex of a signed zone that gslb also serves, delegated from a served
    parent that has no DS written for it: the DS of the child's keys (active and next), so the
    chain of trust runs from parent to child without copying DS records by hand."""
    if query.qtype_name != "DS" or response.answer or not response.aa:
        return None
    name = query.qname_lower
    child = zones.find(name)
    if child is None or child.dnssec is None or child.origin != name or name == ".":
        return None
    parent = zones.find(name[name.find(".") + 1:] or ".")
    if parent is None or name not in parent.cuts:
        return None
    records = tuple(raw_record(name, "DS", parent.ttl, ds_rdata(name, k.dnskey), k.role)
                    for k in child.dnssec.keys if k.role != "old")
    return Response(NOERROR, True, records, zone=response.zone, deps=response.deps + (child.key,)
                    if response.deps is not None else None)
