"""A strict YAML loader for configuration files: line numbers everywhere, no surprises.

- Every mapping is loaded as a :class:`LineDict` and every sequence as a :class:`LineList`;
  both remember the (1-based) line of the container, of each key and of each value, and the
  raw text of plain scalars, so validators can say ``file:LINE: field: message``.
- Duplicate keys are errors (at the second key's line), never "last one wins".
- Only ``true``/``false`` are booleans: ``yes``/``no``/``on``/``off`` stay strings, so the
  country code ``NO:`` is the string ``"NO"``. Sexagesimal numbers (``1:30``) and timestamps
  are strings too.

How a document is read (fast enough for zone files of 100,000 records; the result is the same
whichever way it is read):

- Parser events come from libyaml (PyYAML's ``CParser``) when PyYAML was built with it
  (``yaml.__with_libyaml__``), else from PyYAML's pure-Python parser; ``load_yaml(...,
  pure=True)`` forces the pure one.
- A document made of mappings, sequences and untagged scalars (what configuration files are) is
  built straight from the events (:func:`build_document`), with :class:`StrictLoader`'s scalar
  rules.
- Anything else, anchors, aliases, explicit tags, merge keys (``<<``), a non-scalar key or a
  second document, is loaded by :class:`StrictLoader` (or :class:`StrictCLoader`: libyaml under
  the same constructor), PyYAML's composer and constructor, which define the semantics.
- A YAML error seen through libyaml is reported by reading the text again with the pure-Python
  parser, so messages and lines do not depend on libyaml (it words its errors differently).
"""

from __future__ import annotations

import logging
import re
from types import MappingProxyType
from typing import Any, Callable, Mapping

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    MappingEndEvent, MappingStartEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent, StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.scanner import Scanner

from gslb.errors import ConfigError, ConfigErrors

logger = logging.getLogger(__name__)

__all__ = ["LineDict", "LineList", "StrictLoader", "load_yaml", "type_name", "Errors", "Fields", "check_keys",
           "range_text", "LIBYAML", "build_document", "release"]

#: whether PyYAML has its libyaml (C) parser; without it the pure-Python parser is used
LIBYAML: bool = bool(getattr(yaml, "__with_libyaml__", False))

#: the shared empty table of a container with nothing to record (never written to)
_NONE: Mapping[Any, Any] = MappingProxyType({})


class LineDict(dict):
    """A mapping loaded from YAML that remembers where each key and value was written.

    The tables are sparse (most keys of a big file sit on their mapping's line, and most
    values are strings written as they are read): ``key_lines`` holds the keys not on the
    mapping's own line, ``value_lines`` the values not on their key's line, ``raw_keys`` the keys
    written differently from ``str(key)`` (``010``), ``raw_values`` the text of the scalar
    values that are not strings (``007``, ``~``). The methods answer for every key.
    """

    __slots__ = ("line", "key_lines", "value_lines", "raw_keys", "raw_values")

    line: int
    key_lines: Mapping[Any, int]
    value_lines: Mapping[Any, int]
    raw_keys: Mapping[Any, str]
    raw_values: Mapping[Any, str]

    def key_line(self, key: Any) -> int:
        """The line of ``key`` (the mapping's own line when unknown)."""
        return self.key_lines.get(key, self.line)

    def value_line(self, key: Any) -> int:
        """The line of the value of ``key`` (the key's line when unknown)."""
        line = self.value_lines.get(key)
        return self.key_line(key) if line is None else line

    def raw_key(self, key: Any) -> str:
        """The key as written in the file (``010`` stays ``"010"``)."""
        return self.raw_keys.get(key, str(key))

    def raw_value(self, key: Any) -> str | None:
        """The text of a scalar value as written, or None for other values."""
        raw = self.raw_values.get(key)
        if raw is None:
            value = self.get(key)
            if type(value) is str:
                return value
        return raw


class LineList(list):
    """A sequence loaded from YAML that remembers the line of each item."""

    __slots__ = ("line", "item_lines", "raw_items")

    line: int
    #: the line of each item
    item_lines: list[int]
    #: the text of each scalar item as written (None for a mapping or a list)
    raw_items: list[str | None]

    def item_line(self, index: int) -> int:
        """The line of item ``index`` (the list's own line when unknown)."""
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _raw(node: yaml.Node) -> str | None:
    if isinstance(node, ScalarNode):
        return node.value
    return None


class _StrictConstruction:
    """Line-aware containers and duplicate-key errors, over PyYAML's composer and constructor."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)  # type: ignore[call-arg]
        #: (line, message) of every duplicate key met while constructing
        self.duplicates: list[tuple[int, str]] = []

    def construct_yaml_map(self, node: MappingNode):  # type: ignore[no-untyped-def]
        """Build a :class:`LineDict` (two-step, so recursive structures work)."""
        data = LineDict()
        data.line = _line(node)
        data.key_lines, data.value_lines, data.raw_keys, data.raw_values = {}, {}, {}, {}
        yield data
        self.flatten_mapping(node)  # type: ignore[attr-defined]
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            try:
                hash(key)
            except TypeError:
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found an unhashable key", key_node.start_mark) from None
            if key in data:
                self.duplicates.append(
                    (_line(key_node), f"duplicate key {key_node.value if isinstance(key_node, ScalarNode) else key!r} "
                                      f"(first at line {data.key_line(key)})"))
                continue
            data[key] = self.construct_object(value_node, deep=True)  # type: ignore[attr-defined]
            data.key_lines[key] = _line(key_node)  # type: ignore[index]
            data.value_lines[key] = _line(value_node)  # type: ignore[index]
            raw_key = _raw(key_node)
            if raw_key is not None:
                data.raw_keys[key] = raw_key  # type: ignore[index]
            raw_value = _raw(value_node)
            if raw_value is not None:
                data.raw_values[key] = raw_value  # type: ignore[index]

    def construct_yaml_seq(self, node: SequenceNode):  # type: ignore[no-untyped-def]
        """Build a :class:`LineList`."""
        data = LineList()
        data.line = _line(node)
        data.item_lines = [_line(n) for n in node.value]
        data.raw_items = [_raw(n) for n in node.value]
        yield data
        data.extend(self.construct_object(n, deep=True) for n in node.value)  # type: ignore[attr-defined]


class StrictLoader(_StrictConstruction, yaml.SafeLoader):
    """SafeLoader with line-aware containers, duplicate-key errors and YAML-1.2-like booleans."""

    yaml_implicit_resolvers: dict = {}


StrictLoader.add_constructor("tag:yaml.org,2002:map", StrictLoader.construct_yaml_map)
StrictLoader.add_constructor("tag:yaml.org,2002:seq", StrictLoader.construct_yaml_seq)

# Implicit resolvers: SafeLoader's, minus the YAML 1.1 booleans (yes/no/on/off/y/n), the
# sexagesimal numbers and timestamps; plus booleans spelled true/false only.
for _first, _resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items():
    StrictLoader.yaml_implicit_resolvers[_first] = [
        (tag, regexp) for tag, regexp in _resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
for _first, _resolvers in StrictLoader.yaml_implicit_resolvers.items():
    _resolvers[:] = [
        (tag, _INT if tag == "tag:yaml.org,2002:int" else _FLOAT if tag == "tag:yaml.org,2002:float" else rx)
        for tag, rx in _resolvers
    ]

if LIBYAML:
    from yaml._yaml import CParser

    class StrictCLoader(_StrictConstruction, yaml.CSafeLoader):  # type: ignore[misc]
        """:class:`StrictLoader` over libyaml's parser and composer."""

        yaml_implicit_resolvers = StrictLoader.yaml_implicit_resolvers
        yaml_constructors = StrictLoader.yaml_constructors


class _PureParser(Reader, Scanner, Parser):
    """PyYAML's pure-Python event source (what ``CParser`` is in C)."""

    def __init__(self, stream: Any) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


# ---------------------------------------------------------------------------------------------
# The event builder: LineDict/LineList straight from parser events


class _Unusual(Exception):
    """The document needs PyYAML's composer and constructor (see the module doc)."""


_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
if None in StrictLoader.yaml_implicit_resolvers:  # pragma: no cover - not in any PyYAML so far
    raise ImportError("gslb.yamlsafe expects no implicit resolver for every first character")


def _one_regex(resolvers: list[tuple[str, re.Pattern[str]]]) -> tuple[re.Pattern[str], dict[str, str]]:
    """One regex trying ``resolvers`` in order (the first that matches wins, as in PyYAML's
    resolver), and the tag of each of its groups: ``tags[match.lastgroup]``."""
    parts, tags = [], {}
    for i, (tag, regexp) in enumerate(resolvers):
        flags = "".join(f for f, bit in (("i", re.I), ("m", re.M), ("s", re.S), ("x", re.X)) if regexp.flags & bit)
        parts.append(f"(?P<r{i}>(?{flags}:{regexp.pattern}))" if flags else f"(?P<r{i}>{regexp.pattern})")
        tags[f"r{i}"] = tag
    return re.compile("|".join(parts)), tags


#: first character of a plain scalar -> the regex and tags of the resolvers that may apply
_RESOLVERS: dict[str, tuple[re.Pattern[str], dict[str, str]]] = {
    first: _one_regex(resolvers)
    for first, resolvers in StrictLoader.yaml_implicit_resolvers.items() if resolvers
}
#: numbers are built by StrictLoader's own constructors (few of them in a file)
_NUMBERS = {tag: StrictLoader.yaml_constructors[tag] for tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")}
_SCALARS = SafeConstructor()


def _scalar(ev: ScalarEvent) -> Any:
    """The value of an untagged scalar under StrictLoader's rules."""
    if ev.tag is not None or ev.anchor is not None:
        raise _Unusual
    value = ev.value
    if not ev.implicit[0]:
        return value  # quoted or block scalar: a string
    resolvers = _RESOLVERS.get(value[:1])
    match = resolvers[0].match(value) if resolvers is not None else None
    if match is None:
        return value
    tag = resolvers[1][match.lastgroup]  # type: ignore[index]
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return value.lower() == "true"
    number = _NUMBERS.get(tag)
    if number is None:
        raise _Unusual  # a merge key, "=": PyYAML's constructor decides
    return number(_SCALARS, ScalarNode(tag, value))


def _collection(get: Callable[[], Any], ev: Any, dups: list[tuple[int, str]]) -> Any:
    """The mapping or sequence that starts with event ``ev``."""
    kind = type(ev)
    if kind is not MappingStartEvent and kind is not SequenceStartEvent:
        raise _Unusual  # an alias
    if ev.tag is not None or ev.anchor is not None:
        raise _Unusual
    if kind is MappingStartEvent:
        return _mapping(get, ev, dups)
    return _sequence(get, ev, dups)


def _mapping(get: Callable[[], Any], start: MappingStartEvent, dups: list[tuple[int, str]]) -> LineDict:
    data = LineDict()
    line = data.line = start.start_mark.line + 1
    key_lines: Any = _NONE
    value_lines: Any = _NONE
    raw_keys: Any = _NONE
    raw_values: Any = _NONE
    while True:
        kev = get()
        if type(kev) is not ScalarEvent:
            if type(kev) is MappingEndEvent:
                break
            raise _Unusual  # a mapping or a list as a key
        key = kev.value
        if kev.tag is not None or kev.anchor is not None or (kev.implicit[0] and key[:1] in _RESOLVERS):
            key = _scalar(kev)  # else a plain string, the common case
        key_line = kev.start_mark.line + 1
        vev = get()
        if key in data:  # PyYAML reports the key and does not read its value
            _scalar(vev) if type(vev) is ScalarEvent else _collection(get, vev, [])
            dups.append((key_line, f"duplicate key {kev.value!r} (first at line {key_lines.get(key, line)})"))
            continue
        raw = None
        if type(vev) is ScalarEvent:
            value = vev.value
            if vev.tag is not None or vev.anchor is not None or (vev.implicit[0] and value[:1] in _RESOLVERS):
                value = _scalar(vev)
                if type(value) is not str:
                    raw = vev.value
        else:
            value = _collection(get, vev, dups)
        data[key] = value
        if key_line != line:
            if key_lines is _NONE:
                key_lines = {}
            key_lines[key] = key_line
        value_line = vev.start_mark.line + 1
        if value_line != key_line:
            if value_lines is _NONE:
                value_lines = {}
            value_lines[key] = value_line
        if type(key) is not str and kev.value != str(key):
            if raw_keys is _NONE:
                raw_keys = {}
            raw_keys[key] = kev.value
        if raw is not None:
            if raw_values is _NONE:
                raw_values = {}
            raw_values[key] = raw
    data.key_lines = key_lines
    data.value_lines = value_lines
    data.raw_keys = raw_keys
    data.raw_values = raw_values
    return data


def _sequence(get: Callable[[], Any], start: SequenceStartEvent, dups: list[tuple[int, str]]) -> LineList:
    data = LineList()
    data.line = start.start_mark.line + 1
    lines: list[int] = []
    raws: list[str | None] = []
    while True:
        ev = get()
        kind = type(ev)
        if kind is ScalarEvent:
            data.append(_scalar(ev))
            raws.append(ev.value)
        elif kind is SequenceEndEvent:
            break
        else:
            data.append(_collection(get, ev, dups))
            raws.append(None)
        lines.append(ev.start_mark.line + 1)
    data.item_lines = lines
    data.raw_items = raws
    return data


def build_document(parser: Any) -> tuple[Any, list[tuple[int, str]]]:
    """(data, duplicate keys as (line, message)) of the single document of ``parser``'s events.

    ``parser`` is a ``CParser`` or the pure-Python parser. Raises ``_Unusual`` for a document
    StrictLoader must read (module doc), and PyYAML's errors for invalid YAML.
    """
    get = parser.get_event
    get()  # StreamStartEvent
    if type(get()) is StreamEndEvent:  # else DocumentStartEvent
        return None, []
    dups: list[tuple[int, str]] = []
    ev = get()
    data = _scalar(ev) if type(ev) is ScalarEvent else _collection(get, ev, dups)
    get()  # DocumentEndEvent
    if type(get()) is not StreamEndEvent:
        raise _Unusual  # a second document: StrictLoader says so
    return data, dups


def _read(text: str | bytes, c: bool) -> tuple[Any, list[tuple[int, str]]]:
    """(data, duplicates) of ``text`` with libyaml (``c``) or the pure parser; raises YAMLError."""
    parser = CParser(text) if c else _PureParser(text)
    try:
        return build_document(parser)
    except _Unusual:
        pass
    finally:
        parser.dispose()
    loader = StrictCLoader(text) if c else StrictLoader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()


def release(data: Any, chunk: int = 256) -> None:
    """Free a loaded document a piece at a time (call it when done with ``data``; it empties it).

    Dropping the last reference to a big tree frees it in one go, and CPython holds the GIL until
    the last object is freed (~0.1 s for a 100,000-record zone file): every other thread, DNS
    answers included, waits. Here the values of a container are freed ``chunk`` at a time, other
    threads running in between; a value holding more than ``chunk`` items is emptied so first.
    """
    if isinstance(data, dict):
        values = list(data.values())
    elif isinstance(data, list):
        values = list(data)
    else:
        return
    data.clear()  # the values live on in ``values``
    for value in values:
        if isinstance(value, (dict, list)) and len(value) > chunk:
            release(value, chunk)
    while values:
        del values[-chunk:]


def type_name(value: Any) -> str:
    """A short English name of a loaded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def reader_error(text: str | bytes, filename: str, exc: yaml.reader.ReaderError) -> ConfigError:
    """A located error for a character YAML does not allow (NUL, 0x01, other control characters).

    PyYAML's ReaderError has no mark, only the position of the character in the text.
    """
    position = exc.position if isinstance(exc.position, int) else 0
    before = text[:position]
    line = (before.count(b"\n") if isinstance(before, bytes) else before.count("\n")) + 1
    char = exc.character
    code = char if isinstance(char, int) else ord(char) if isinstance(char, str) and char else None
    what = f"the control character U+{code:04X}" if code is not None else "a character"
    return ConfigError(filename, line, "", f"{what} is not allowed in YAML (only tab, line breaks and "
                       "printable characters; write it as an escape in a double-quoted string, e.g. \"\\x01\")")


def load_yaml(text: str | bytes, filename: str, *, pure: bool = False) -> Any:
    """Parse one YAML document; raises ConfigErrors (``filename:LINE: message``) on any problem.

    ``pure`` reads with PyYAML's pure-Python parser even when libyaml is there (module doc).
    """
    try:
        try:
            data, duplicates = _read(text, c=LIBYAML and not pure)
        except yaml.YAMLError:
            if pure or not LIBYAML:
                raise
            data, duplicates = _read(text, c=False)  # the pure parser words the error
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "invalid YAML"
        if exc.context and exc.context not in problem:
            problem = f"{exc.context}: {problem}"
        raise ConfigErrors([ConfigError(filename, line, "", f"YAML syntax error: {problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, a position
        raise ConfigErrors([reader_error(text, filename, exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigErrors([ConfigError(filename, None, "", f"YAML error: {exc}")]) from None
    if duplicates:
        raise ConfigErrors([ConfigError(filename, line, "", msg) for line, msg in duplicates])
    return data


# ---------------------------------------------------------------------------------------------
# Typed reading of loaded files (the server file and zone files), with located errors


class Errors:
    """Collects the located errors of one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[ConfigError] = []

    def add(self, line: int | None, path: str, message: str) -> None:
        """Record one error: ``FILE:LINE: path: message``."""
        self.items.append(ConfigError(self.file, line, path, message))


def check_keys(err: Errors, m: LineDict, allowed: tuple[str, ...], path: str) -> None:
    """Record an error for every key of ``m`` not in ``allowed``."""
    for key in m:
        if key not in allowed:
            err.add(m.key_line(key), join_path(path, str(key)),
                    f"unknown key {str(key)!r} (allowed: {', '.join(allowed)})")


def join_path(path: str, key: str) -> str:
    """``path.key`` (``key`` at the top level)."""
    return f"{path}.{key}" if path else key


def is_int(v: Any) -> bool:
    """An integer, not a boolean."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """An integer or a float, not a boolean."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_num(v: float) -> str:
    """A number as messages show it (``91.0`` as ``91``)."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def range_text(lo: float, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    """A range as every message words it: ``1..10``, ``>= 0``, ``> 0``, ``0..1 (1 excluded)``."""
    if hi is None:
        return f"> {fmt_num(lo)}" if lo_open else f">= {fmt_num(lo)}"
    excluded = [fmt_num(b) for b, is_open in ((lo, lo_open), (hi, hi_open)) if is_open]
    return f"{fmt_num(lo)}..{fmt_num(hi)}" + (f" ({' and '.join(excluded)} excluded)" if excluded else "")


def as_list(v: Any) -> tuple[list, Callable[[int], int] | None]:
    """``v`` as a list (one value or a list), with a per-item line function when known."""
    if isinstance(v, LineList):
        return list(v), v.item_line
    return [v], None


class Fields:
    """Typed access to the keys of one mapping, recording located errors."""

    def __init__(self, err: Errors, m: LineDict, path: str) -> None:
        self.err = err
        self.m = m
        self.path = path

    def line(self, key: str) -> int:
        """Line of the value of ``key``."""
        return self.m.value_line(key)

    def p(self, key: str) -> str:
        """Dotted path of ``key``."""
        return join_path(self.path, key)

    def int(self, key: str, default: int | None, lo: int, hi: int | None = None,
            what: str | None = None) -> int | None:
        """An integer in lo..hi (None after an error or when absent without default)."""
        if key not in self.m:
            return default
        v = self.m[key]
        if not is_int(v):
            self.err.add(self.line(key), self.p(key), f"expected an integer, got {type_name(v)}")
            return None
        if v < lo or (hi is not None and v > hi):
            self.err.add(self.line(key), self.p(key), f"{what or key} {v} is out of range {range_text(lo, hi)}")
            return None
        return v

    def num(self, key: str, default: float | None, lo: float, hi: float | None = None, *,
            lo_open: bool = False, hi_open: bool = False) -> float | None:
        """A number in the range (bounds inclusive unless ``*_open``)."""
        if key not in self.m:
            return default
        v = self.m[key]
        if not is_num(v) or v != v:
            self.err.add(self.line(key), self.p(key), f"expected a number, got {type_name(v)}")
            return None
        bad = v < lo or (lo_open and v == lo) or (hi is not None and (v > hi or (hi_open and v == hi)))
        if bad:
            self.err.add(self.line(key), self.p(key),
                         f"{key} {fmt_num(v)} is out of range {range_text(lo, hi, lo_open, hi_open)}")
            return None
        return float(v)

    def str(self, key: str, default: str | None, *, nullable: bool = False, strip: bool = False) -> str | None:
        """A non-empty string (surrounding blanks removed with ``strip``); null is ``default``,
        or None with ``nullable``."""
        if key not in self.m:
            return default
        v = self.m[key]
        if v is None:
            return None if nullable else default
        if isinstance(v, str) and strip:
            v = v.strip()
        if not isinstance(v, str) or not v:
            self.err.add(self.line(key), self.p(key), f"expected a non-empty string{' or null' if nullable else ''}, "
                         f"got {type_name(self.m[key])}")
            return None
        return v

    def choice(self, key: str, default: str | None, choices: tuple[str, ...], what: str) -> str | None:
        """One of ``choices``."""
        if key not in self.m:
            return default
        v = self.m[key]
        if v not in choices:
            shown = repr(v) if isinstance(v, str) else type_name(v)
            self.err.add(self.line(key), self.p(key),
                         f"unknown {what} {shown} (one of: {', '.join(choices)})")
            return None
        return v

    def mapping(self, key: str, allowed: tuple[str, ...] | None = None) -> LineDict | None:
        """A mapping (None when absent, null or wrong), whose keys are all in ``allowed`` when given."""
        v = self.m.get(key)
        if v is None:
            return None
        if not isinstance(v, LineDict):
            self.err.add(self.line(key), self.p(key), f"expected a mapping, got {type_name(v)}")
            return None
        if allowed is not None:
            check_keys(self.err, v, allowed, self.p(key))
        return v

    def names_list(self, key: str) -> list[tuple[str, int]] | None:
        """One identifier or a list of them, each with its line."""
        if key not in self.m:
            return None
        v = self.m[key]
        items, lines = as_list(v)
        out: list[tuple[str, int]] = []
        ok = True
        for i, item in enumerate(items):
            ln = lines(i) if lines else self.line(key)
            if not isinstance(item, str) or not item:
                self.err.add(ln, self.p(key), f"expected a name, got {type_name(item)}")
                ok = False
                continue
            out.append((item, ln))
        return out if ok else None
