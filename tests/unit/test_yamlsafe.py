"""The strict YAML loader: lines on every key/value, duplicate keys, no yes/no booleans."""

from __future__ import annotations

import pytest

from gslb.errors import ConfigErrors
import yaml

from gslb.yamlsafe import (
    LIBYAML, LineDict, LineList, StrictLoader, _PureParser, _Unusual, build_document, load_yaml, release, type_name,
)

if LIBYAML:
    from yaml._yaml import CParser


def test_lines_of_keys_values_and_items():
    data = load_yaml("a: 1\nb:\n  c: x\n  d:\n    - 1\n    - [2, 3]\ne: |\n  text\n", "f.yaml")
    assert isinstance(data, LineDict) and data.line == 1
    assert data.key_line("a") == 1 and data.value_line("a") == 1
    assert data.key_line("b") == 2 and data.value_line("b") == 3
    b = data["b"]
    assert isinstance(b, LineDict) and b.key_line("c") == 3 and b.key_line("d") == 4
    d = b["d"]
    assert isinstance(d, LineList) and d == [1, [2, 3]] and d.item_lines == [5, 6]
    assert d.item_line(1) == 6 and d.item_line(9) == d.line
    assert data["e"] == "text\n" and data.value_line("e") == 7


def test_only_true_false_are_booleans():
    data = load_yaml("NO: no\nyes: Yes\non: off\nY: n\nt: true\nf: False\n", "f.yaml")
    assert data == {"NO": "no", "yes": "Yes", "on": "off", "Y": "n", "t": True, "f": False}


def test_no_sexagesimal_or_timestamps_and_raw_text_kept():
    data = load_yaml("a: 1:30\nb: 2024-01-01\nc: 2001:db8::1\nd: 1.5\ne: 007\n10: x\n", "f.yaml")
    assert data["a"] == "1:30" and data["b"] == "2024-01-01" and data["c"] == "2001:db8::1"
    assert data["d"] == 1.5 and data["e"] == 7 and data.raw_value("e") == "007"
    assert data[10] == "x" and data.raw_key(10) == "10"


def test_duplicate_keys_at_the_second_key():
    with pytest.raises(ConfigErrors) as info:
        load_yaml("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\na: 2\n", "f.yaml")
    assert [str(e) for e in info.value.errors] == [
        "f.yaml:5: duplicate key 'c' (first at line 3)",
        "f.yaml:6: duplicate key 'a' (first at line 1)",
    ]


def test_syntax_error_has_the_line():
    with pytest.raises(ConfigErrors) as info:
        load_yaml("a: 1\nb: [1, 2\nc: 3\n", "f.yaml")
    (error,) = info.value.errors
    assert error.file == "f.yaml" and error.line == 3 and "YAML syntax error" in error.message
    with pytest.raises(ConfigErrors) as info:
        load_yaml("a: 1\n  b: 2\n", "f.yaml")
    assert info.value.errors[0].line == 2


def test_merge_keys_and_empty_documents():
    data = load_yaml("base: &b {x: 1}\nthing:\n  <<: *b\n  y: 2\n", "f.yaml")
    assert data["thing"] == {"x": 1, "y": 2}
    assert load_yaml("", "f.yaml") is None
    assert load_yaml("# only a comment\n", "f.yaml") is None


def test_type_names():
    assert [type_name(v) for v in (None, True, 1, 1.5, "s", [], {})] == [
        "null", "a boolean", "an integer", "a number", "a string", "a list", "a mapping"]


# ---------------------------------------------------------------------------------------------
# One loader, two parsers: libyaml's events or the pure-Python ones, the event builder or
# StrictLoader; every way gives the same values, lines, raw texts and errors.

GOOD = [
    "a: 1\nb:\n  c: x\n  d:\n    - 1\n    - [2, 3]\ne: |\n  text\n",
    "NO: no\nyes: Yes\non: off\nY: n\nt: true\nf: False\nT: TRUE\n",
    "a: 1:30\nb: 2024-01-01\nc: 2001:db8::1\nd: 1.5\ne: 007\n10: x\n",
    "x: ~\ny: null\nz:\nw: ''\nv: Null\n~: k\n",
    "a: 0x1F\nb: 0b101\nc: -017\nd: +12_000\ne: 1.5e+3\nf: .inf\ng: -.Inf\nh: 0\ni: -0.0\n",
    "'010': a\n\"q\": \"esc\\ttab \\u00e9\"\n? explicit\n: value\n010: b\n1.5: c\nfalse: d\n",
    "- a\n- b: 1\n  c: [x, {y: z}]\n- - nested\n  - list\n-\n",
    "just a scalar\n",
    "%YAML 1.1\n---\na: 1\n...\n",
    "a: >\n  folded\n  text\nb: |-\n  keep\nc: 'single ''quoted'''\n",
    "été: 1\nname: \"café\"\n",
    "a: [1, 2,\n    3]\nb: {c: 1,\n    d: 2}\n",
    "a: {b: c:d}\nb: {AAAA: 2001:db8::1}\n",
    "zone: example.org\nns: [ns1.example.org]\nrecords:\n  '@': {MX: ['10 mail']}\n  ns1: {A: 192.0.2.1}\n"
    "  '*.cdn': {pool: web}\n  api:\n    ttl: 60\n    A: [192.0.2.80, 192.0.2.81]\n    AAAA: ['2001:db8::80']\n"
    "  \"10\": {PTR: host.example.com.}\n",
    "a:\n  - b\n  -\n    c: 1\nd: [[], {}]\ne: {}\n",
    "# only a comment\n",
    "",
    "".join(f"- {v}\n" for v in (
        "0", "-0", "+1", "0o17", "0x_1F", "0b_1", "1_000", "1:30", "1.", ".5", "-.5e+3", "1e3", "1.0e3",
        "6.8523015e+5", ".NaN", ".nan", "-.inf", "+.INF", "2001:db8::1", "192.0.2.1", "0777", "08", "0.1.2",
        "TRUE", "True", "tRUE", "false", "~", "NULL", "nULL", "null", "yes", "on", "n", "Y", "12e", "0x", "-",
        "+", ".", "1-2", "10.0.0.0/8", "0.", "+0.5", "_1", "1__2", "0b2", "0xg")),
]

UNUSUAL = [
    "base: &b {x: 1}\nthing:\n  <<: *b\n  y: 2\n",
    "a: &x [1, 2]\nb: *x\n",
    "a: !!str 5\nb: !!int '7'\n",
    "a: ! 5\n",
    "[1, 2]: x\n",
    "{AAAA: 2001:db8::1}: x\n",
    "? [a]\n: b\n",
    "a: =\n",
    "--- a\n--- b\n",
    "a: !custom 1\n",
    "a: *unknown\n",
    "a: &anchor 1\n",
]

BAD = [
    "a: 1\nb: [1, 2\nc: 3\n",
    "a: 1\n  b: 2\n",
    "a: 'unterminated\n",
    "\tkey: tab\n",
    "a: b: c\n",
    "a: \x07\n",
    "- a\nb: c\n",
    "a: [}\n",
    "a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\na: 2\n",
    "x: 1\nx: {c: 1, c: 2}\n",
    "- {a: 1, a: 2}\n- {b: 1, b: 1}\n",
    "1: a\ntrue: b\n1.0: c\n",
]


def snapshot(value: object) -> object:
    """Everything a validator can ask of a loaded value, as plain data."""
    if isinstance(value, LineDict):
        return ("map", value.line, [(type(k).__name__, repr(k), value.raw_key(k), value.key_line(k),
                                     value.value_line(k), value.raw_value(k), snapshot(v))
                                    for k, v in value.items()])
    if isinstance(value, LineList):
        return ("seq", value.line, list(value.item_lines), list(value.raw_items), [snapshot(v) for v in value])
    return (type(value).__name__, repr(value))


def outcome(text: str, **kw: object) -> tuple[str, object]:
    try:
        return ("ok", snapshot(load_yaml(text, "f.yaml", **kw)))
    except ConfigErrors as exc:
        return ("error", [str(e) for e in exc.errors])


def strict_loader_outcome(text: str) -> tuple[str, object]:
    """What PyYAML's composer and constructor (StrictLoader, the reference) make of ``text``."""
    loader = StrictLoader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    assert not loader.duplicates
    return ("ok", snapshot(data))


@pytest.mark.parametrize("text", GOOD + UNUSUAL + BAD)
def test_libyaml_and_pure_parsers_give_the_same_result_and_errors(text):
    assert outcome(text) == outcome(text, pure=True)


@pytest.mark.parametrize("text", GOOD + [t for t in UNUSUAL if outcome(t, pure=True)[0] == "ok"])
def test_the_event_builder_agrees_with_strict_loader(text):
    assert outcome(text, pure=True) == strict_loader_outcome(text)
    assert outcome(text) == strict_loader_outcome(text)


@pytest.mark.parametrize("c", [False, True] if LIBYAML else [False])
def test_plain_documents_are_built_from_events(c):
    for text in GOOD:
        parser = CParser(text) if c else _PureParser(text)
        build_document(parser)  # no _Unusual: no detour through StrictLoader
    for text in UNUSUAL:
        parser = CParser(text) if c else _PureParser(text)
        with pytest.raises((_Unusual, yaml.YAMLError)):
            build_document(parser)


def test_syntax_errors_are_worded_by_the_pure_parser():
    (error,) = outcome("a: 1\nb: [1, 2\nc: 3\n")[1]
    assert error == ("f.yaml:3: YAML syntax error: while parsing a flow sequence: "
                     "expected ',' or ']', but got ':'")


def test_duplicate_key_inside_a_duplicate_is_not_reported():
    assert outcome("x: 1\nx: {c: 1, c: 2}\n") == ("error", ["f.yaml:2: duplicate key 'x' (first at line 1)"])


def test_release_empties_a_document():
    data = load_yaml("a:\n" + "".join(f"  k{i}: {{A: [1, 2]}}\n" for i in range(1000)) + "b: [1, 2]\n", "f.yaml")
    inner = data["a"]
    release(data, chunk=16)
    assert data == {} and inner == {}
    release("a scalar")  # nothing to do


def test_pyyaml_here_has_libyaml():
    """The loader's speed (and the libyaml-vs-pure comparisons above) need PyYAML's C binding:
    its wheels carry it; a build without it fails here rather than skipping those tests."""
    assert LIBYAML
