"""The strict YAML loader: lines on every key/value, duplicate keys, no yes/no booleans."""

from __future__ import annotations

import pytest

from gslb.errors import ConfigErrors
from gslb.yamlsafe import LineDict, LineList, load_yaml, type_name


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
