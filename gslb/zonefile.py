"""One zone file: YAML -> validated, immutable :class:`~gslb.model.Zone`.

``load_zone_file`` reports every error of a file at once (``PATH:LINE: field.path: message``);
the store that reloads a folder of them is :mod:`gslb.zonestore`.

Decisions the SPEC leaves open, made here:
- Names in records follow zone-file rules (``www`` is relative, ``x.example.`` absolute); names in
  ``ns:``/``soa:`` are absolute when they hold a dot (as ``zone:``). A relative name that already
  ends in the zone's name is an error (it would be doubled).
- Geo keys: a two-letter key that is a continent code (AF AN AS EU NA OC SA) is the continent;
  ``country:NA`` is the country with the same code. A geo pool may omit ``sites:`` (the union of
  its geo lists, in order); when given, every geo site must be in it.
- ``weight: 0`` is allowed: the weight-based policies never pick such a site while a site with
  a weight is up (a standby).
- Only glue (A/AAAA) may be written at or below a delegation point; other data would never be served.

Serial ``auto`` (the rule, precisely): let ``m`` be the file's modification time in whole Unix
seconds (clamped to 1..4294967295), and ``previous`` the (SHA-256 digest, serial) of the version
served before. With no previous version the serial is ``m``. Otherwise it is the previous serial
when the content (digest) is unchanged, else ``max(m, previous + 1)``: the serial increases on
every change and never decreases, also when a file comes back with an older mtime (``cp -p``,
``rsync -t``, ``tar x``, a backup) or several edits land within one second.

Within a process the previous version is the one in memory; across restarts the serial state
file of the zones folder (:mod:`gslb.zonestore`). Explicit serials (``serial: N``,
0..4294967295) are served as written.

Big zones (a file of 100,000 records loads in well under 2 s): the YAML is read through libyaml
(:mod:`gslb.yamlsafe`), each record is checked with a few precompiled matches before any slower
path that words an error, and a file at least BULK_BYTES big is built under :func:`bulk_build`
(garbage collector paused then frozen, short GIL switch interval) and its intermediate data freed
piecewise. A file whose content did not change gives its previous zone without being parsed.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import ipaddress
import os
import re
import sys
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import AbstractSet, Any, Callable, Iterator

from gslb.dnssec import parse_dnssec, parse_ds
from gslb.errors import ConfigError, ConfigErrors, display_path
from gslb.model import (
    POLICY_NAMES, STATIC_TYPES, Check, GeoRule, Node, Pool, Record, Site, Soa, Zone,
)
from gslb.rdata import name_to_wire
from gslb.validate import CANONICAL_IPV4, CONTINENTS, COUNTRIES, check_name, is_ip, is_ipv4, is_ipv6, parse_location
from gslb.yamlsafe import (
    Errors, Fields, LineDict, LineList, as_list, check_keys, fmt_num, is_int, kind_of, load_yaml, release,
)

__all__ = ["load_zone_file", "load_zone_bytes", "parse_zone", "bulk_build", "MAX_ZONE_FILE_BYTES"]

MAX_TTL = 2147483647  # RFC 2181 section 8
MAX_SERIAL = 4294967295
DEFAULT_TTL = 3600
SOA_DEFAULTS = {"refresh": 3600, "retry": 600, "expire": 1209600, "minimum": 60}
WHEN_ALL_DOWN = ("all", "servfail", "nodata")
CHECK_TYPES = ("http", "https", "tcp")
#: codes written for GB and GR (the EU's UK and EL): the geo key error suggests the ISO one
_COUNTRY_HINTS = {"UK": "GB", "EL": "GR"}

_TOP_KEYS = ("zone", "serial", "ttl", "soa", "ns", "records", "sites", "checks", "pools", "dnssec")
_SOA_KEYS = ("mname", "rname", "refresh", "retry", "expire", "minimum")
_NODE_KEYS = ("ttl", "pool") + STATIC_TYPES
_SITE_KEYS = ("location", "addresses", "checks", "weight")
_CHECK_KEYS = ("type", "port", "path", "host", "expect_status", "expect_body", "interval",
               "timeout", "rise", "fall", "target")
_POOL_KEYS = ("policy", "sites", "answers", "ttl", "quorum", "when_all_down", "geo")
_IDENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CAA_TAG = re.compile(r"^[A-Za-z0-9]{1,15}$")
#: a relative name as written that needs no rewriting: lower-case valid labels, no trailing dot
_PLAIN_RELATIVE = re.compile(r"(?:\*\.)?[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*")


# ---------------------------------------------------------------------------------------------
# Names in the zone


def _in_zone(name: str, origin: str) -> bool:
    return name == origin or name.endswith("." + origin)


class _Names:
    """Turns the names written in a zone file into absolute ones, recording errors."""

    def __init__(self, err: Errors, origin: str) -> None:
        self.err = err
        self.origin = origin
        self.bare = origin[:-1]
        self.dot_bare = "." + self.bare
        self.suffix = "." + origin if origin != "." else "."

    def relative(self, text: Any, line: int | None, path: str, *, owner: bool = False,
                 allow_root: bool = False) -> str | None:
        """A record name or target: ``@`` is the apex, ``x.`` absolute, anything else relative."""
        if type(text) is str and _PLAIN_RELATIVE.fullmatch(text):  # the common case, in one match
            name = text + self.suffix
            if (len(name) <= 254 and (owner or text[0] != "*")
                    and not (text == self.bare or text.endswith(self.dot_bare))):
                return name
        if not isinstance(text, str) or text == "":
            self.err.add(line, path, f"expected a domain name, got {kind_of(text)}")
            return None
        t = text.strip().lower()
        if t == "@":
            return self.origin
        if t == "." and allow_root:
            return "."
        if t.endswith("."):
            name = t
        else:
            if self.bare and (t == self.bare or t.endswith(self.dot_bare)):
                self.err.add(line, path, f"name {text!r} is relative and would become "
                             f"{t + '.' + self.origin!r}; add a trailing dot or write it relative "
                             "to the zone")
                return None
            name = t + self.suffix
        return self._validate(name, text, line, path, owner)

    def host(self, text: Any, line: int | None, path: str) -> str | None:
        """A host name in ``ns:``/``soa:``: a single label is relative, anything with a dot absolute."""
        if not isinstance(text, str) or text == "":
            self.err.add(line, path, f"expected a host name, got {kind_of(text)}")
            return None
        t = text.strip().lower()
        if is_ip(t):
            self.err.add(line, path, f"{text!r} is an IP address, not a host name")
            return None
        if t == "@":
            name = self.origin
        elif t.endswith("."):
            name = t
        elif "." in t:
            name = t + "."
        else:
            name = t + "." + self.origin
        return self._validate(name, text, line, path, False)

    def _validate(self, name: str, text: str, line: int | None, path: str, owner: bool) -> str | None:
        problem = check_name(name)
        if problem is None and not owner and name.startswith("*"):
            problem = "may not be a wildcard"
        if problem is not None:
            self.err.add(line, path, f"name {text!r} {problem}")
            return None
        return name


# ---------------------------------------------------------------------------------------------
# Record data


def _quote_txt(data: bytes) -> str:
    out = ['"']
    for b in data:
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    out.append('"')
    return "".join(out)


def _txt_rdata(parts: list[str]) -> str:
    """TXT presentation: each string split in <= 255-byte character-strings, quoted."""
    chunks: list[str] = []
    for part in parts:
        data = part.encode("utf-8")
        if not data:
            chunks.append('""')
        for i in range(0, len(data), 255):
            chunks.append(_quote_txt(data[i:i + 255]))
    return " ".join(chunks)


def _u16(text: str) -> int | None:
    if text.isdigit() and int(text) <= 65535:
        return int(text)
    return None


class _RecordParser:
    """Parses one value of one static type into canonical rdata (or records an error)."""

    def __init__(self, err: Errors, names: _Names) -> None:
        self.err = err
        self.names = names
        #: record type -> the method that parses its (stripped) text
        self.by_type: dict[str, Callable[[str, int | None, str], str | None]] = {
            rtype: getattr(self, "_" + rtype.lower()) for rtype in STATIC_TYPES if rtype != "TXT"}

    def parse(self, rtype: str, value: Any, raw: str | None, line: int | None, path: str) -> str | None:
        """The canonical presentation of one value, or None after recording an error."""
        if type(value) is str and rtype != "TXT":  # the common case
            return self.by_type[rtype](value.strip(), line, path)
        if rtype == "TXT":
            if isinstance(value, LineList):
                if not value or not all(isinstance(v, str) for v in value):
                    self.err.add(line, path, "a TXT value is a string or a list of strings")
                    return None
                return _txt_rdata(list(value))
            if isinstance(value, (dict, bool)) or value is None:
                self.err.add(line, path, f"expected a string, got {kind_of(value)}")
                return None
            return _txt_rdata([value if isinstance(value, str) else (raw or str(value))])
        if isinstance(value, (list, dict)) or value is None or isinstance(value, bool):
            self.err.add(line, path, f"expected {rtype} data, got {kind_of(value)}")
            return None
        text = value if isinstance(value, str) else (raw if raw is not None else str(value))
        return self.by_type[rtype](text.strip(), line, path)

    def _a(self, text: str, line: int | None, path: str) -> str | None:
        if CANONICAL_IPV4.fullmatch(text):
            return text  # as str(IPv4Address(text)) would write it
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            pass
        if is_ipv6(text):
            self.err.add(line, path, f"{text!r} is an IPv6 address; put it under AAAA")
        else:
            self.err.add(line, path, f"{text!r} is not an IPv4 address")
        return None

    def _aaaa(self, text: str, line: int | None, path: str) -> str | None:
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            pass
        if is_ipv4(text):
            self.err.add(line, path, f"{text!r} is an IPv4 address; put it under A")
        else:
            self.err.add(line, path, f"{text!r} is not an IPv6 address")
        return None

    def _name(self, text: str, line: int | None, path: str) -> str | None:
        if is_ip(text):
            self.err.add(line, path, f"{text!r} is an IP address, not a domain name")
            return None
        return self.names.relative(text, line, path)

    _cname = _name
    _ns = _name
    _ptr = _name

    def _ds(self, text: str, line: int | None, path: str) -> str | None:
        canonical, problem = parse_ds(text)
        if problem:
            self.err.add(line, path, problem)
        return canonical

    def _mx(self, text: str, line: int | None, path: str) -> str | None:
        parts = text.split()
        if len(parts) != 2 or _u16(parts[0]) is None:
            self.err.add(line, path, f"MX {text!r} must be \"PREFERENCE EXCHANGE\" "
                         "(preference 0..65535), e.g. \"10 mail.example.com.\"")
            return None
        target = self.names.relative(parts[1], line, path, allow_root=True)
        return None if target is None else f"{_u16(parts[0])} {target}"

    def _srv(self, text: str, line: int | None, path: str) -> str | None:
        parts = text.split()
        nums = [_u16(p) for p in parts[:3]]
        if len(parts) != 4 or None in nums:
            self.err.add(line, path, f"SRV {text!r} must be \"PRIORITY WEIGHT PORT TARGET\" "
                         "(numbers 0..65535), e.g. \"10 5 5060 sip.example.com.\"")
            return None
        target = self.names.relative(parts[3], line, path, allow_root=True)
        return None if target is None else f"{nums[0]} {nums[1]} {nums[2]} {target}"

    def _caa(self, text: str, line: int | None, path: str) -> str | None:
        parts = text.split(None, 2)
        if len(parts) != 3:
            self.err.add(line, path, f"CAA {text!r} must be \"FLAGS TAG VALUE\", "
                         "e.g. '0 issue \"letsencrypt.org\"'")
            return None
        flags, tag, value = parts
        if not flags.isdigit() or int(flags) > 255:
            self.err.add(line, path, f"CAA flags {flags!r} must be a number 0..255 (0, or 128 for critical)")
            return None
        if not _CAA_TAG.match(tag):
            self.err.add(line, path, f"CAA tag {tag!r} must be 1-15 letters or digits "
                         "(issue, issuewild, iodef)")
            return None
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]
        if '"' in value.replace('\\"', ""):
            self.err.add(line, path, f"CAA value {value!r} has an unescaped quote")
            return None
        return f'{int(flags)} {tag.lower()} "{value}"'


# ---------------------------------------------------------------------------------------------
# The zone builder


@dataclass(slots=True)
class _PendingNode:
    name: str
    line: int
    path: str
    ttl: int | None
    pool: str | None
    pool_line: int
    rdata: dict[str, list[str]]
    type_lines: dict[str, int]


def parse_zone(data: Any, file: str, digest: str = "", mtime: float = 0.0,
               previous: Zone | None = None, shown: str | None = None,
               recorded: tuple[str, int] | None = None, source: bytes = b"") -> Zone:
    """Build a Zone from loaded YAML (a LineDict); raises ConfigErrors with every problem.

    ``file`` goes into Zone.file; errors name ``shown`` (default: ``file``). ``previous`` and
    ``recorded`` (digest, serial from the state file) feed serial ``auto`` (module doc).
    ``source`` (the file's bytes) is kept in Zone.source.
    """
    err = Errors(shown or file)
    if not isinstance(data, LineDict):
        err.add(getattr(data, "line", 1) if data is not None else None, "",
                f"the top level must be a mapping with zone:, ns:, records:, ..., got {kind_of(data)}")
        raise ConfigErrors(err.items)
    check_keys(err, data, _TOP_KEYS, "")
    top = Fields(err, data, "")

    # zone: the origin
    origin: str | None = None
    if "zone" not in data:
        err.add(data.line, "zone", "missing required key 'zone' (the zone's name)")
    else:
        z = data["zone"]
        if not isinstance(z, str) or not z.strip():
            err.add(top.line("zone"), "zone", f"expected a domain name, got {kind_of(z)}")
        else:
            name = z.strip().lower()
            name = name if name.endswith(".") else name + "."
            problem = check_name(name)
            if problem is None and name.startswith("*"):
                problem = "may not be a wildcard"
            if problem:
                err.add(top.line("zone"), "zone", f"name {z!r} {problem}")
            else:
                origin = name
    if origin is None:
        # Without an origin no name can be checked; report what we have.
        raise ConfigErrors(err.items)
    names = _Names(err, origin)
    # dnssec: the keys are part of the zone's content (a new key is a new serial)
    signing = parse_dnssec(err, top, file, origin[:-1])
    if signing is not None:
        digest = hashlib.sha256(f"{digest};{signing.fingerprint}".encode()).hexdigest()

    ttl = top.integer("ttl", DEFAULT_TTL, 0, MAX_TTL)
    zone_ttl = DEFAULT_TTL if ttl is None else ttl

    # ns:
    ns_names: list[tuple[str, int]] = []
    if "ns" not in data:
        err.add(data.line, "ns", "missing required key 'ns' (the zone's name servers)")
    else:
        items, lines = as_list(data["ns"])
        if not items:
            err.add(top.line("ns"), "ns", "needs at least one name server")
        for i, item in enumerate(items):
            ln = lines(i) if lines else top.line("ns")
            n = names.host(item, ln, f"ns[{i}]" if lines else "ns")
            if n is not None:
                if any(n == seen for seen, _ in ns_names):
                    err.add(ln, f"ns[{i}]", f"duplicate name server {n!r}")
                else:
                    ns_names.append((n, ln))

    # soa:
    soa_m = top.mapping("soa")
    soa_vals: dict[str, Any] = dict(SOA_DEFAULTS)
    mname = ns_names[0][0] if ns_names else origin
    rname = "hostmaster." + origin
    if soa_m is not None:
        check_keys(err, soa_m, _SOA_KEYS, "soa")
        sf = Fields(err, soa_m, "soa")
        if "mname" in soa_m:
            mname = names.host(soa_m["mname"], sf.line("mname"), "soa.mname") or mname
        if "rname" in soa_m:
            r = soa_m["rname"]
            if isinstance(r, str) and "@" in r:
                local, _, domain = r.partition("@")
                if "." in local or not local:
                    err.add(sf.line("rname"), "soa.rname",
                            f"{r!r}: write the mailbox as a name (hostmaster.example.com), "
                            "a local part with dots is not supported")
                    r = None
                else:
                    r = f"{local}.{domain}"
            if r is not None:
                rname = names.host(r, sf.line("rname"), "soa.rname") or rname
        for key in SOA_DEFAULTS:
            v = sf.integer(key, SOA_DEFAULTS[key], 0, MAX_TTL)
            if v is not None:
                soa_vals[key] = v

    # serial:
    serial = _serial(err, data, top, digest, mtime, previous, recorded)

    # sites, checks, pools (records refer to pools; pools to sites; sites to checks)
    # References are checked against every name defined, so that one bad site does not also
    # make each pool that lists it fail with a misleading "unknown site".
    checks_m, sites_m, pools_m = top.mapping("checks"), top.mapping("sites"), top.mapping("pools")
    checks = _parse_checks(err, checks_m)
    sites = _parse_sites(err, sites_m, _defined(checks_m))
    pools = _parse_pools(err, pools_m, sites, _defined(sites_m))

    # records:
    pending = _parse_records(err, top.mapping("records"), names, _defined(pools_m))
    apex_line = data.key_line("ns") if "ns" in data else data.line
    soa = Soa(mname=mname, rname=rname, serial=serial, refresh=soa_vals["refresh"],
              retry=soa_vals["retry"], expire=soa_vals["expire"], minimum=soa_vals["minimum"],
              ttl=zone_ttl)
    apex = pending.get(origin)
    if apex is None:
        apex = pending[origin] = _PendingNode(origin, apex_line, "records.@", None, None, 0, {}, {})
    for rtype in ("CNAME", "NS"):
        if rtype in apex.rdata:
            msg = ("a CNAME cannot be at the zone apex (the apex holds SOA and NS)" if rtype == "CNAME"
                   else "the apex NS records come from the top-level ns: list")
            err.add(apex.type_lines[rtype], f"{apex.path}.{rtype}", msg)
            del apex.rdata[rtype]
    apex.rdata["SOA"] = [f"{mname} {rname} {serial} {soa.refresh} {soa.retry} {soa.expire} {soa.minimum}"]
    apex.rdata["NS"] = [n for n, _ in ns_names]
    apex.type_lines["NS"] = ns_names[0][1] if ns_names else apex_line

    cuts = frozenset(n for n, p in pending.items() if n != origin and "NS" in p.rdata)
    _check_tree(err, pending, cuts, origin)
    _check_glue(err, pending, origin, ns_names)
    all_names = _existing_names(pending, origin)
    _check_cname_loops(err, pending, cuts, origin, all_names)

    nodes = _build_nodes(err, pending, origin, zone_ttl)
    release(pending)  # piecewise: see yamlsafe.release
    if err.items:
        release(nodes)
        raise ConfigErrors(sorted(err.items, key=lambda e: (e.line or 0)))
    return Zone(origin=origin, file=file, serial=serial, ttl=zone_ttl, soa=soa,
                ns=tuple(n for n, _ in ns_names), nodes=MappingProxyType(nodes),
                sites=MappingProxyType(sites), checks=MappingProxyType(checks),
                pools=MappingProxyType(pools), digest=digest, names=all_names, cuts=cuts,
                mtime=mtime, source=source, dnssec=signing)


def _build_nodes(err: Errors, pending: dict[str, _PendingNode], origin: str, zone_ttl: int) -> dict[str, Node]:
    """The zone's immutable nodes: each type's records with the name's TTL (apex SOA/NS: the zone's).

    Data the wire format cannot hold (a TXT record of more than 65535 octets) is an error at the
    type's line (the message of :func:`gslb.rdata.record_tail`).
    """
    nodes: dict[str, Node] = {}
    for name, p in pending.items():
        rec_ttl = p.ttl if p.ttl is not None else zone_ttl
        records: dict[str, tuple[Record, ...]] = {}
        for rtype, values in p.rdata.items():
            ttl = zone_ttl if rtype == "SOA" or (rtype == "NS" and name == origin) else rec_ttl
            try:
                if len(values) == 1:
                    records[rtype] = (Record(name, rtype, ttl, values[0]),)
                else:
                    records[rtype] = tuple([Record(name, rtype, ttl, v) for v in values])
            except ValueError as exc:
                err.add(p.type_lines.get(rtype, p.line), f"{p.path}.{rtype}", str(exc))
                continue
            # (a cheap bound first: only a big RRset pays for the exact size)
            rrset = records[rtype]
            if (len(rrset[0].tail) if len(rrset) == 1 else sum(len(r.tail) for r in rrset)) \
                    + 273 + 2 * len(rrset) > MAX_MESSAGE and \
                    (size := rrset_message_size(name, rrset)) > MAX_MESSAGE:
                del records[rtype]
                err.add(p.type_lines.get(rtype, p.line), f"{p.path}.{rtype}",
                        f"the {len(values)} {rtype} record(s) need {size} octets in a reply (header, "
                        f"question, records), more than the {MAX_MESSAGE} a DNS message can hold")
        nodes[name] = Node(name, MappingProxyType(records), p.pool, p.ttl, p.line)
    return nodes


#: the largest DNS message (RFC 1035 4.2.2: TCP's two-octet length)
MAX_MESSAGE = 65535


def rrset_message_size(name: str, records: tuple[Record, ...]) -> int:
    """The smallest reply holding all of ``records`` (an RRset of ``name``): the 12-octet header,
    the question (``name`` with type and class) and each record with a compressed owner (2)."""
    return 12 + len(name_to_wire(name)) + 4 + sum(2 + len(r.tail) for r in records)


def _existing_names(pending: dict[str, _PendingNode], origin: str) -> frozenset[str]:
    """Every name that exists: the owner names and the empty non-terminals up to the apex."""
    names: set[str] = set()
    below = "." + origin
    for name in pending:
        n = name
        while n not in names:
            names.add(n)
            if n == origin or not n.endswith(below):
                break
            n = n.split(".", 1)[1]
    return frozenset(names)


def _serial(err: Errors, data: LineDict, top: Fields, digest: str, mtime: float,
            previous: Zone | None, recorded: tuple[str, int] | None = None) -> int:
    """Serial ``auto``: mtime seconds; after a content change max(mtime, previous + 1) (module doc).

    ``previous`` is the version in memory; without one, ``recorded`` is the (digest, serial) the
    state file kept from an earlier process.
    """
    auto = max(1, min(int(mtime), MAX_SERIAL))
    before = (previous.digest, previous.serial) if previous is not None else recorded
    if before is not None:
        auto = before[1] if before[0] == digest else max(auto, before[1] + 1)
        auto = min(auto, MAX_SERIAL)
    if "serial" not in data or data["serial"] == "auto":
        return auto
    v = data["serial"]
    if not is_int(v):
        err.add(top.line("serial"), "serial", f"expected an integer 0..{MAX_SERIAL} or 'auto', got {kind_of(v)}")
        return auto
    if not 0 <= v <= MAX_SERIAL:
        err.add(top.line("serial"), "serial", f"serial {v} is out of range 0..{MAX_SERIAL} (RFC 1982)")
        return auto
    return v


def _parse_checks(err: Errors, m: LineDict | None) -> dict[str, Check]:
    out: dict[str, Check] = {}
    if m is None:
        return out
    for name, spec in m.items():
        path = f"checks.{name}"
        if not isinstance(name, str) or not _IDENT.match(name):
            err.add(m.key_line(name), path, "a check name is letters, digits, '_', '-' or '.'")
            continue
        if not isinstance(spec, LineDict):
            err.add(m.value_line(name), path, f"expected a mapping, got {kind_of(spec)}")
            continue
        check_keys(err, spec, _CHECK_KEYS, path)
        f = Fields(err, spec, path)
        before = len(err.items)
        ctype = f.choice("type", "http", CHECK_TYPES, "check type")
        default_port = {"http": 80, "https": 443}.get(ctype or "")
        if ctype == "tcp" and "port" not in spec:
            err.add(spec.line, path, "a tcp check needs a port")
        port = f.integer("port", default_port, 1, 65535, "port")
        cpath = f.string("path", "/")
        if cpath is not None and not cpath.startswith("/"):
            err.add(f.line("path"), f.key_path("path"), f"path {cpath!r} must start with '/'")
        host = f.string("host", None)
        status: frozenset[int] | None = None
        if "expect_status" in spec:
            items, lines = as_list(spec["expect_status"])
            codes = set()
            for i, code in enumerate(items):
                ln = lines(i) if lines else f.line("expect_status")
                if not is_int(code) or not 100 <= code <= 599:
                    err.add(ln, f.key_path("expect_status"), f"expected an HTTP status 100..599, got "
                            f"{code if is_int(code) else kind_of(code)}")
                else:
                    codes.add(code)
            status = frozenset(codes)
        body = f.string("expect_body", None)
        interval = f.num("interval", 10.0, 0, None, lo_open=True)
        timeout = f.num("timeout", 3.0, 0, None, lo_open=True)
        if interval is not None and timeout is not None and timeout >= interval:
            where = "timeout" if "timeout" in spec else "interval"
            err.add(f.line(where), f.key_path(where), f"timeout {fmt_num(timeout)} must be less than "
                    f"interval {fmt_num(interval)}")
        rise = f.integer("rise", 2, 1, 1000)
        fall = f.integer("fall", 3, 1, 1000)
        target = f.string("target", None)
        if ctype == "tcp" and ("path" in spec or "expect_status" in spec or "expect_body" in spec):
            bad = next(k for k in ("path", "expect_status", "expect_body") if k in spec)
            err.add(spec.key_line(bad), f.key_path(bad), f"{bad} applies to http and https checks only")
        if len(err.items) == before:
            # the field readers return None only after adding an error; with no new error none is None
            out[name] = Check(name=name, type=ctype, port=port, path=cpath, host=host,  # type: ignore[arg-type]
                              expect_status=status, expect_body=body, interval=interval,  # type: ignore[arg-type]
                              timeout=timeout, rise=rise, fall=fall, target=target)  # type: ignore[arg-type]
    return out


def _defined(m: LineDict | None) -> set[str]:
    return {k for k in m if isinstance(k, str)} if m else set()


def _parse_sites(err: Errors, m: LineDict | None, checks: set[str]) -> dict[str, Site]:
    out: dict[str, Site] = {}
    if m is None:
        return out
    for name, spec in m.items():
        path = f"sites.{name}"
        if not isinstance(name, str) or not _IDENT.match(name):
            err.add(m.key_line(name), path, "a site name is letters, digits, '_', '-' or '.'")
            continue
        if not isinstance(spec, LineDict):
            err.add(m.value_line(name), path, f"expected a mapping, got {kind_of(spec)}")
            continue
        check_keys(err, spec, _SITE_KEYS, path)
        f = Fields(err, spec, path)
        before = len(err.items)
        location = None
        if spec.get("location") is not None:
            location = parse_location(err, spec["location"], f.line("location"), f.key_path("location"))
        v4: list[str] = []
        v6: list[str] = []
        if "addresses" not in spec:
            err.add(spec.line, f.key_path("addresses"), "a site needs at least one address")
        else:
            items, lines = as_list(spec["addresses"])
            if not items:
                err.add(f.line("addresses"), f.key_path("addresses"), "a site needs at least one address")
            for i, a in enumerate(items):
                ln = lines(i) if lines else f.line("addresses")
                text = a if isinstance(a, str) else None
                if text and is_ipv4(text.strip()):
                    addr = str(ipaddress.IPv4Address(text.strip()))
                    target = v4
                elif text and is_ipv6(text.strip()):
                    addr = str(ipaddress.IPv6Address(text.strip()))
                    target = v6
                else:
                    err.add(ln, f.key_path("addresses"), f"{a!r} is not an IPv4 or IPv6 address" if text
                            else f"expected an IP address, got {kind_of(a)}")
                    continue
                if addr in v4 or addr in v6:
                    err.add(ln, f.key_path("addresses"), f"duplicate address {addr}")
                    continue
                target.append(addr)
        site_checks: list[str] = []
        for cname, ln in f.names_list("checks") or []:
            if cname not in checks:
                err.add(ln, f.key_path("checks"), f"unknown check {cname!r} (defined: "
                        f"{', '.join(sorted(checks)) or 'none'})")
            elif cname in site_checks:
                err.add(ln, f.key_path("checks"), f"check {cname!r} is listed twice")
            else:
                site_checks.append(cname)
        weight = f.integer("weight", 1, 0, 1_000_000, "weight")
        if len(err.items) == before:
            # the field readers return None only after adding an error; with no new error none is None
            out[name] = Site(name=name, location=location, ipv4=tuple(v4), ipv6=tuple(v6),
                             checks=tuple(site_checks), weight=weight)  # type: ignore[arg-type]
    return out


def _geo_key(raw: str) -> tuple[str, str] | str:
    """(kind, normalised key) of a geo map key, or an error message."""
    k = raw.strip()
    if k == "default":
        return ("default", "default")
    low = k.lower()
    if low.startswith("country:") or low.startswith("continent:"):
        kind, _, code = k.partition(":")
        code = code.strip().upper()
        kind = kind.lower()
        table = COUNTRIES if kind == "country" else CONTINENTS
        if code not in table:
            return f"{code!r} is not a {'ISO 3166 country' if kind == 'country' else 'continent'} code"
        return (kind, code)
    if "/" in k or is_ip(k):
        try:
            net = ipaddress.ip_network(k, strict=True)
        except ValueError as exc:
            try:
                fixed = ipaddress.ip_network(k, strict=False)
            except ValueError:
                return f"{k!r} is not a network in CIDR form ({exc})"
            return f"{k!r} has host bits set; did you mean {fixed}?"
        return ("cidr", str(net))
    up = k.upper()
    if len(up) == 2 and up.isalpha():
        if up in CONTINENTS:
            return ("continent", up)
        if up in COUNTRIES:
            return ("country", up)
        hint = f" (did you mean {_COUNTRY_HINTS[up]}?)" if up in _COUNTRY_HINTS else ""
        return f"{k!r} is not an ISO 3166 country code{hint}"
    return (f"{k!r} is not a geo key: use a CIDR network, a 2-letter country code, a continent "
            f"code ({', '.join(sorted(CONTINENTS))}), country:XX / continent:XX, or default")


def _parse_pools(err: Errors, m: LineDict | None, sites: dict[str, Site], all_sites: set[str]
                 ) -> dict[str, Pool]:
    out: dict[str, Pool] = {}
    if m is None:
        return out
    for name, spec in m.items():
        path = f"pools.{name}"
        if not isinstance(name, str) or not _IDENT.match(name):
            err.add(m.key_line(name), path, "a pool name is letters, digits, '_', '-' or '.'")
            continue
        if not isinstance(spec, LineDict):
            err.add(m.value_line(name), path, f"expected a mapping, got {kind_of(spec)}")
            continue
        check_keys(err, spec, _POOL_KEYS, path)
        f = Fields(err, spec, path)
        before = len(err.items)
        if "policy" not in spec:
            err.add(spec.line, f.key_path("policy"), f"missing policy (one of: {', '.join(POLICY_NAMES)})")
            policy = None
        else:
            policy = f.choice("policy", None, POLICY_NAMES, "policy")
        pool_sites: list[str] = []
        site_lines: dict[str, int] = {}
        listed = f.names_list("sites")
        for sname, ln in listed or []:
            if sname in pool_sites:
                err.add(ln, f.key_path("sites"), f"site {sname!r} is listed twice")
            elif sname not in all_sites:
                err.add(ln, f.key_path("sites"), f"unknown site {sname!r}")
            else:
                pool_sites.append(sname)
                site_lines[sname] = ln
        answers = f.integer("answers", 1, 1, 1000, "answers")
        ttl = f.integer("ttl", 30, 0, MAX_TTL, "ttl")
        quorum = f.num("quorum", 0.5, 0, 1, hi_open=True)
        when_all_down = f.choice("when_all_down", "all", WHEN_ALL_DOWN, "when_all_down rule")
        rules: list[GeoRule] = []
        if "geo" in spec and policy is not None and policy != "geo":
            err.add(spec.key_line("geo"), f.key_path("geo"), f"a geo map needs policy geo (this pool's policy is {policy})")
        elif policy == "geo":
            geo = f.mapping("geo")
            if geo is None and "geo" not in spec:
                err.add(spec.line, f.key_path("geo"), "policy geo needs a geo map")
            if geo is not None:
                seen: dict[tuple[str, str], int] = {}
                for key, value in geo.items():
                    raw = geo.raw_key(key)
                    kpath = f"{path}.geo.{raw}"
                    parsed = _geo_key(raw) if isinstance(raw, str) else "a geo key must be a string"
                    if isinstance(parsed, str):
                        err.add(geo.key_line(key), kpath, parsed)
                        continue
                    if parsed in seen:
                        err.add(geo.key_line(key), kpath,
                                f"same key as line {seen[parsed]} ({parsed[0]} {parsed[1]})")
                        continue
                    seen[parsed] = geo.key_line(key)
                    items, lines = as_list(value)
                    rule_sites: list[str] = []
                    for i, sname in enumerate(items):
                        ln = lines(i) if lines else geo.value_line(key)
                        if not isinstance(sname, str):
                            err.add(ln, kpath, f"expected a site name, got {kind_of(sname)}")
                        elif sname not in all_sites:
                            err.add(ln, kpath, f"unknown site {sname!r}")
                        elif sname in rule_sites:
                            err.add(ln, kpath, f"site {sname!r} is listed twice")
                        else:
                            rule_sites.append(sname)
                            if listed is None and sname not in pool_sites:
                                pool_sites.append(sname)
                            elif listed is not None and sname not in pool_sites and sname in all_sites:
                                err.add(ln, kpath, f"site {sname!r} is not in this pool's sites")
                    if not items:
                        err.add(geo.value_line(key), kpath, "needs at least one site")
                    # parsed: (kind, key) from _geo_key, whose kinds are GeoRule's (typed str there)
                    rules.append(GeoRule(kind=parsed[0], key=parsed[1], sites=tuple(rule_sites)))  # type: ignore[arg-type]
        if listed is None and policy != "geo" and "sites" not in spec:
            err.add(spec.line, f.key_path("sites"), "a pool needs sites")
        elif not pool_sites and len(err.items) == before:
            err.add(f.line("sites"), f.key_path("sites"), "a pool needs at least one site")
        if policy == "closest":
            for sname in pool_sites:
                if sname in sites and sites[sname].location is None:
                    err.add(site_lines.get(sname, f.line("sites")), f.key_path("sites"),
                            f"policy closest needs a location for every site; site {sname!r} has none")
        if len(err.items) == before:
            # the field readers return None only after adding an error; with no new error none is None
            out[name] = Pool(name=name, policy=policy, sites=tuple(pool_sites), answers=answers,  # type: ignore[arg-type]
                             ttl=ttl, quorum=quorum, when_all_down=when_all_down, geo=tuple(rules))  # type: ignore[arg-type]
    return out


def _parse_records(err: Errors, m: LineDict | None, names: _Names, defined_pools: set[str]
                   ) -> dict[str, _PendingNode]:
    """``records:``: absolute owner name -> its parsed node, every problem recorded."""
    out: dict[str, _PendingNode] = {}
    if m is None:
        return out
    parser = _RecordParser(err, names)
    origin, below = names.origin, "." + names.origin
    for key, spec in m.items():
        raw = key if type(key) is str else m.raw_key(key)
        path = f"records.{raw}"
        line = m.key_line(key)
        owner = names.relative(raw, line, path, owner=True)
        if owner is None:
            continue
        if not owner.endswith(below) and owner != origin:  # _in_zone
            err.add(line, path, f"name {owner!r} is outside the zone {names.origin!r}")
            continue
        if owner in out:
            err.add(line, path, f"name {owner!r} is already defined at line {out[owner].line}")
            continue
        if not isinstance(spec, LineDict):
            err.add(m.value_line(key), path, f"expected a mapping of record types, got {kind_of(spec)}")
            continue
        if len(spec) == 1:
            address = spec.get("A")
            if type(address) is str and CANONICAL_IPV4.fullmatch(address):
                # One address as ipaddress writes it and nothing else, most names of a big zone:
                # nothing that _parse_node checks can fail.
                out[owner] = _PendingNode(owner, line, path, None, None, 0, {"A": [address]},
                                          {"A": spec.value_line("A")})
                continue
        out[owner] = _parse_node(err, parser, spec, owner, line, path, defined_pools)
    return out


_NODE_KEY_SET = frozenset(_NODE_KEYS)
_TYPE_ORDER = {rtype: i for i, rtype in enumerate(STATIC_TYPES)}


def _types_in(spec: LineDict) -> list[str]:
    """The record types written in ``spec``, in STATIC_TYPES order (the order their errors come in)."""
    types = [k for k in spec if k in _TYPE_ORDER]
    if len(types) > 1:
        types.sort(key=_TYPE_ORDER.__getitem__)
    return types


def _parse_node(err: Errors, parser: _RecordParser, spec: LineDict, owner: str, line: int, path: str,
                defined_pools: set[str]) -> _PendingNode:
    """One owner name's mapping (ttl, pool, record types) and the rules between its types."""
    if not spec.keys() <= _NODE_KEY_SET:
        for k in spec:
            if k not in _NODE_KEY_SET:
                hint = ""
                if isinstance(k, str) and k.upper() in STATIC_TYPES:
                    hint = f"; record types are upper-case: {k.upper()}"
                elif k == "SOA" or (isinstance(k, str) and k.upper() == "SOA"):
                    hint = "; the SOA comes from the top-level soa: and ns:"
                err.add(spec.key_line(k), f"{path}.{k}",
                        f"unknown key {str(k)!r} (allowed: {', '.join(_NODE_KEYS)}){hint}")
    ttl = Fields(err, spec, path).integer("ttl", None, 0, MAX_TTL, "ttl") if "ttl" in spec else None
    node = _PendingNode(owner, line, path, ttl, None, 0, {}, {})
    if "pool" in spec:
        pname = spec["pool"]
        pool_line = spec.value_line("pool")
        if not isinstance(pname, str):
            err.add(pool_line, f"{path}.pool", f"expected a pool name, got {kind_of(pname)}")
        elif pname not in defined_pools:
            err.add(pool_line, f"{path}.pool", f"unknown pool {pname!r} (defined: "
                    f"{', '.join(sorted(defined_pools)) or 'none'})")
        else:
            node.pool = pname
            node.pool_line = pool_line
    for rtype in _types_in(spec):
        _parse_type(err, parser, spec, rtype, f"{path}.{rtype}", node)
    # CNAME rules (RFC 1034 3.6.2, RFC 2181 10.1)
    if "CNAME" in spec:
        others = [t for t in STATIC_TYPES if t in spec and t != "CNAME"] + (["pool"] if "pool" in spec else [])
        if others:
            err.add(spec.key_line("CNAME"), f"{path}.CNAME",
                    f"a CNAME cannot be beside other data (also here: {', '.join(others)})")
        if len(node.rdata.get("CNAME", [])) > 1:
            err.add(spec.key_line("CNAME"), f"{path}.CNAME", "a name can have only one CNAME")
    if "pool" in spec:
        clash = [t for t in ("A", "AAAA") if t in spec]
        if clash:
            err.add(spec.key_line(clash[0]), f"{path}.{clash[0]}",
                    f"a pool name answers A and AAAA from pool; remove the static {'/'.join(clash)}")
    if "NS" in spec and owner.startswith("*"):
        err.add(spec.key_line("NS"), f"{path}.NS", "a wildcard cannot be a delegation (RFC 4592 4.2)")
    return node


def _parse_type(err: Errors, parser: _RecordParser, spec: LineDict, rtype: str, tpath: str,
                node: _PendingNode) -> None:
    """The values of one record type (one value or a list) into ``node``: canonical, no duplicates."""
    value = spec[rtype]
    if not isinstance(value, LineList):  # one value, the common case
        ln = spec.value_line(rtype)
        rd = parser.parse(rtype, value, None if type(value) is str else spec.raw_value(rtype), ln, tpath)
        if rd is not None:
            node.rdata[rtype] = [rd]
        node.type_lines[rtype] = ln
        return
    if not value:
        err.add(spec.value_line(rtype), tpath, "needs at least one value")
        return
    values: list[str] = []
    raws = value.raw_items
    for i, item in enumerate(value):
        ln = value.item_line(i)
        rd = parser.parse(rtype, item, raws[i] if i < len(raws) else None, ln, tpath)
        if rd is None:
            continue
        if rd in values:
            err.add(ln, tpath, f"duplicate value {rd!r}")
            continue
        values.append(rd)
    if values:
        node.rdata[rtype] = values
        node.type_lines[rtype] = value.item_line(0)
    else:
        node.type_lines[rtype] = spec.value_line(rtype)


def _check_tree(err: Errors, pending: dict[str, _PendingNode], cuts: frozenset[str], origin: str) -> None:
    """Data at or below a delegation is not served, except glue (A/AAAA); DS only at a delegation."""
    for name, p in pending.items():
        if "DS" in p.rdata and name not in cuts:
            err.add(p.type_lines.get("DS", p.line), f"{p.path}.DS",
                    "DS records belong at a delegation point (a name with NS records) (RFC 4035 2.4)")
    if not cuts:
        return
    for name, p in pending.items():
        if name == origin:
            continue
        cut = _cut_above(name, cuts, origin)
        if cut is None:
            continue
        if cut == name:
            extra = [t for t in p.rdata if t not in ("NS", "DS", "A", "AAAA")] + (["pool"] if p.pool else [])
            if extra:
                err.add(p.line, p.path, f"a delegation point holds only NS (and glue A/AAAA); "
                        f"{', '.join(extra)} would never be served")
        else:
            extra = [t for t in p.rdata if t not in ("A", "AAAA")] + (["pool"] if p.pool else [])
            if extra:
                err.add(p.line, p.path, f"name is below the delegation {cut!r}; only glue A/AAAA "
                        f"may be written there ({', '.join(extra)} would never be served)")


def _cname_step(name: str, pending: dict[str, _PendingNode], existing: AbstractSet[str], cuts: frozenset[str],
                origin: str) -> str | None:
    """The node whose CNAME answers a query for ``name`` in this zone (wildcards too), or None."""
    if not _in_zone(name, origin) or _cut_above(name, cuts, origin) is not None:
        return None  # answered elsewhere (out of zone, or a referral)
    if name in existing:
        return name if name in pending and "CNAME" in pending[name].rdata else None
    encloser = name
    while encloser not in existing and encloser != origin:
        encloser = encloser.split(".", 1)[1]
    star = "*." + encloser
    return star if star in pending and "CNAME" in pending[star].rdata else None


def _check_cname_loops(err: Errors, pending: dict[str, _PendingNode], cuts: frozenset[str], origin: str,
                       existing: frozenset[str]) -> None:
    """A chain of in-zone CNAMEs that comes back to itself never ends: one error per loop.

    ``existing`` is every name of the zone (:func:`_existing_names`).
    """
    done: set[str] = set()
    for start in pending:
        if "CNAME" not in pending[start].rdata or start in done:
            continue
        chain = [start]
        seen = {start: 0}
        node = start
        while True:
            target = pending[node].rdata["CNAME"][0]
            nxt = _cname_step(target, pending, existing, cuts, origin)
            if nxt is None or nxt in done:
                break
            if nxt in seen:
                loop = chain[seen[nxt]:]
                first = min(loop, key=lambda n: pending[n].type_lines.get("CNAME", 0))
                i = loop.index(first)
                loop = loop[i:] + loop[:i]
                shown = " -> ".join(n for n in loop + [loop[0]])
                p = pending[first]
                err.add(p.type_lines.get("CNAME", p.line), f"{p.path}.CNAME",
                        f"CNAME loop: {shown} (the chain never reaches an answer)")
                break
            seen[nxt] = len(chain)
            chain.append(nxt)
            node = nxt
        done.update(chain)


def _cut_above(name: str, cuts: frozenset[str], origin: str) -> str | None:
    n = name
    while n != origin and "." in n[:-1]:
        if n in cuts:
            return n
        n = n.split(".", 1)[1]
    return None


def _check_glue(err: Errors, pending: dict[str, _PendingNode], origin: str,
                ns_names: list[tuple[str, int]]) -> None:
    """Every in-zone NS target needs A or AAAA records here (glue), and may not be a CNAME."""
    targets: list[tuple[str, int, str]] = [(n, ln, "ns") for n, ln in ns_names]
    for name, p in pending.items():
        if name != origin and "NS" in p.rdata:
            targets += [(t, p.type_lines["NS"], f"{p.path}.NS") for t in p.rdata["NS"]]
    for target, line, path in targets:
        if not _in_zone(target, origin):
            continue
        node = pending.get(target)
        if node is not None and "CNAME" in node.rdata:
            err.add(line, path, f"name server {target!r} is a CNAME (RFC 2181 10.3); it needs A/AAAA records")
        elif node is None or not ("A" in node.rdata or "AAAA" in node.rdata):
            err.add(line, path, f"name server {target!r} is inside the zone but has no A/AAAA "
                    "records (glue); add them under records")


# ---------------------------------------------------------------------------------------------
# Files


def load_zone_file(path: str, previous: Zone | None = None, recorded: tuple[str, int] | None = None,
                   max_bytes: int | None = None) -> Zone:
    """Read and validate one zone file; raises ConfigErrors listing every error in it.

    A file bigger than ``max_bytes`` (default MAX_ZONE_FILE_BYTES) is refused before it is read.
    """
    limit = MAX_ZONE_FILE_BYTES if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_size > limit:
                raise ConfigErrors([ConfigError(display_path(path), None, "", too_big(st.st_size, limit))])
            content = fh.read(limit + 1)  # it may have grown since fstat
            if len(content) > limit:
                raise ConfigErrors([ConfigError(display_path(path), None, "", too_big(len(content), limit))])
            mtime = st.st_mtime
    except OSError as exc:
        raise ConfigErrors([ConfigError(display_path(path), None, "", cannot_read(path, exc))]) from None
    return load_zone_bytes(content, path, mtime, previous, recorded)


#: the biggest zone file read (``max_zone_file_bytes`` in the server file): about 400,000
#: simple records; a bigger file is refused before it is read, so a runaway generator or a
#: stray dump cannot keep a reload (and the memory it needs) busy for minutes
MAX_ZONE_FILE_BYTES = 16 * 1024 * 1024


def too_big(size: int, limit: int) -> str:
    """The error for a zone file over the size limit."""
    return (f"file is {size} bytes, larger than the limit {limit} "
            "(max_zone_file_bytes in the server file)")


def cannot_read(path: str, exc: OSError) -> str:
    """Why ``path`` cannot be read; a dangling or looping symbolic link says so and where it points."""
    reason = f"cannot read: {exc.strerror or exc}"
    try:
        target = os.readlink(path)
    except OSError:
        return reason
    if exc.errno == errno.ELOOP:
        return f"{reason} (a symbolic link to {target} that loops)"
    if exc.errno == errno.ENOENT:
        return f"{reason} (a symbolic link to {target}, which does not exist)"
    return f"{reason} (a symbolic link to {target})"


def load_zone_bytes(content: bytes, path: str, mtime: float, previous: Zone | None = None,
                    recorded: tuple[str, int] | None = None) -> Zone:
    """Validate zone file content already read (``path`` goes into Zone.file and messages).

    Content identical to ``previous``'s (same digest, same file) gives ``previous`` itself: the
    zone would come out the same, serial ``auto`` included, and a forced reload of a big
    unchanged file costs a read and a hash.
    """
    shown = display_path(path)
    digest = hashlib.sha256(content).hexdigest()
    if previous is not None and previous.digest == digest and previous.file == path:
        return previous
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[:exc.start].count(b"\n") + 1
        raise ConfigErrors([ConfigError(shown, line, "", "the file is not valid UTF-8")]) from None
    with bulk_build() if len(content) >= BULK_BYTES else contextlib.nullcontext():
        data = load_yaml(text, shown)
        try:
            return parse_zone(data, path, digest=digest, mtime=mtime, previous=previous, shown=shown,
                              recorded=recorded, source=content)
        finally:
            release(data)


#: a zone file at least this big is built under :func:`bulk_build`
BULK_BYTES = 256 * 1024

#: the GIL switch interval while a big zone is built (CPython's default is 5 ms)
BULK_SWITCH_INTERVAL = 0.001

_gc_lock = threading.Lock()
_gc_builds = 0
_gc_resume = False
_switch_interval = 0.005


@contextlib.contextmanager
def bulk_build() -> Iterator[None]:
    """Build a big zone with the cyclic garbage collector paused, then keep it out of collections.

    A big load allocates hundreds of thousands of objects that all stay alive: each collection
    meanwhile would scan the growing tree for nothing (it more than doubled the load time of a
    100,000-record file) and hold the GIL as it does, so DNS answers would pause. When the
    outermost block ends (blocks may nest and run in several threads) and the collector was on,
    ``gc.freeze()`` moves every object alive, the new zone among them, to the permanent
    generation, which collections never scan, before the collector is turned on again: without
    it the next collection would scan the whole zone at once (~0.1-0.3 s for 100,000 records
    here, a pause for every thread), and every full collection after it again. Reference
    counting still frees those objects when the zone is replaced. The price: garbage cycles
    alive at that moment are never collected (a server has few; ``gc.unfreeze()`` hands
    everything back to the collector).

    Meanwhile the GIL switch interval is BULK_SWITCH_INTERVAL: a thread that answers DNS waits
    at most that long for the GIL the loading thread holds (``tools/bench_zone_load.py
    --pause`` here: the slowest answer during a 100,000-record load went from 15-60 ms to
    5-30 ms; the load time did not measurably change).
    """
    global _gc_builds, _gc_resume, _switch_interval
    with _gc_lock:
        if _gc_builds == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
            _switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_interval, BULK_SWITCH_INTERVAL))
        _gc_builds += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_builds -= 1
            if _gc_builds == 0:
                sys.setswitchinterval(_switch_interval)
                if _gc_resume:
                    gc.freeze()
                    gc.enable()
