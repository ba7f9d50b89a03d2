"""The checks the zone files and the server file share: host names, IP addresses, locations,
country and continent codes. ``check_name`` says why a name is wrong (None: it is fine) and the
``is_*`` tests answer yes or no, for the callers to word the located error; ``parse_location``
records its errors itself.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from gslb.yamlsafe import Errors, LineList, fmt_num, is_num

__all__ = ["check_name", "is_ip", "is_ipv4", "is_ipv6", "parse_location", "CONTINENTS", "COUNTRIES",
           "CANONICAL_IPV4"]

#: Continent codes as GeoIP2 databases report them.
CONTINENTS: frozenset[str] = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})
#: ISO 3166-1 alpha-2 codes (plus XK, Kosovo, as used by MaxMind).
COUNTRIES: frozenset[str] = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK
""".split())
_LABEL = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)$")
#: an absolute host name check_name accepts, in one match (the common case; check_name says why not)
_VALID_NAME = re.compile(r"(?:\*\.)?(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: an IPv4 address written as ipaddress writes it (no leading zeros): kept as written
CANONICAL_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


# ---------------------------------------------------------------------------------------------
# Domain names


def check_name(name: str) -> str | None:
    """Why ``name`` (absolute, lower-case, trailing dot) is not a valid host name, or None."""
    if name == "." or (len(name) <= 254 and _VALID_NAME.fullmatch(name)):
        return None
    if len(name) > 254:
        return "is longer than 253 characters"
    labels = name[:-1].split(".")
    for i, label in enumerate(labels):
        if label == "":
            return "has an empty label"
        if len(label) > 63:
            return f"has a label longer than 63 characters ({label[:20]}...)"
        if label == "*" and i == 0:
            continue
        if not label.isascii():
            return f"has a non-ASCII label {label!r} (write IDNs in their xn-- form)"
        if not _LABEL.match(label):
            if "*" in label:
                return "may only have '*' as its whole first label (RFC 4592)"
            return f"has an invalid label {label!r} (letters, digits, '-' and '_'; no '-' at either end)"
    return None


def is_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address."""
    if ":" not in text:  # not IPv6; IPv4 is exactly what CANONICAL_IPV4 matches
        return CANONICAL_IPV4.fullmatch(text) is not None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_ipv4(text: str) -> bool:
    """Whether ``text`` is an IPv4 address (ipaddress accepts exactly what CANONICAL_IPV4 matches)."""
    return CANONICAL_IPV4.fullmatch(text) is not None


def is_ipv6(text: str) -> bool:
    """Whether ``text`` is an IPv6 address."""
    if ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Locations


def parse_location(err: Errors, v: Any, line: int, path: str) -> tuple[float, float] | None:
    """``[latitude, longitude]`` in range, or None with every problem recorded."""
    if not isinstance(v, LineList) or len(v) != 2 or not all(is_num(x) for x in v):
        err.add(line, path, "expected [latitude, longitude] (two numbers)")
        return None
    lat, lon = float(v[0]), float(v[1])
    ok = True
    if not -90 <= lat <= 90:
        err.add(v.item_line(0), path, f"latitude {fmt_num(v[0])} is out of range -90..90")
        ok = False
    if not -180 <= lon <= 180:
        err.add(v.item_line(1), path, f"longitude {fmt_num(v[1])} is out of range -180..180")
        ok = False
    return (lat, lon) if ok else None
