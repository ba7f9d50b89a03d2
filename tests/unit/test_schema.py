"""The JSON Schemas of the zone file and the server file (gslb/schemas, ``gslb schema``).

Checked with the ``jsonschema`` library as an editor would use them: every example zone and every
test zone gslb accepts validates, and on a corpus of good and bad files (tests/schema_corpus:
wrong types, unknown fields, enums, ranges) the schema's verdict and ``gslb check``'s agree.
Files are loaded with gslb's own YAML loader (YAML 1.2 booleans: ``yes`` is a string, as in
editors), and formats (ipv4, ipv6) are asserted.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from harness import ROOT, quorum_zone, small_zone, two_site_zone

from gslb import cli
from gslb.yamlsafe import LineDict, LineList, load_yaml

SCHEMAS = ROOT / "gslb" / "schemas"
CORPUS = ROOT / "tests" / "schema_corpus"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)


def validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def plain(v: Any) -> Any:
    """gslb's loaded YAML as JSON values (keys as written)."""
    if isinstance(v, LineDict):
        return {(k if isinstance(k, str) else str(v.raw_key(k))): plain(x) for k, x in v.items()}
    if isinstance(v, (LineList, list)):
        return [plain(x) for x in v]
    return v


def schema_errors(kind: str, text: str) -> list[str]:
    data = plain(load_yaml(text, "test.yaml"))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(kind).iter_errors(data)]


def schema_fields(kind: str, text: str) -> list[tuple[str, ...]]:
    """The fields the schema's errors are about: the error's path, plus the key an unknown-key,
    missing-key or bad-name error names."""
    out = []
    for e in validator(kind).iter_errors(plain(load_yaml(text, "test.yaml"))):
        path = tuple(map(str, e.absolute_path))
        named = re.search(r"\('(.+?)' was unexpected\)|^'(.+?)' is a required property", e.message)
        if named:
            path += (named.group(1) or named.group(2),)
        elif "propertyNames" in e.absolute_schema_path:
            path += (str(e.instance),)
        out.append(path)
    return out


def gslb_fields(stderr: str) -> list[tuple[str, ...]]:
    """The fields of ``gslb check``'s errors (``FILE:LINE: FIELD: message``)."""
    out = []
    for line in stderr.splitlines():
        found = re.match(r"^[^:]*:\d+: (.*)$", line)
        if found:
            field, sep, _ = found.group(1).partition(": ")
            out.append(tuple(field.split(".")) if sep else ())
    return out


def same_field(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """One names the other or a field inside it (a whole mapping vs one of its keys)."""
    n = min(len(a), len(b))
    return a[:n] == b[:n] and (n > 0 or a == b)


def check_zone(tmp: Path, text: str) -> int:
    """``gslb check`` of one zone file alone in a folder: its exit code."""
    return _check(tmp, text, None)[0]


def check_server(tmp: Path, text: str) -> int:
    """``gslb check -c`` of a server file beside a folder with one good zone: its exit code."""
    return _check(tmp, (CORPUS / "zone" / "good" / "minimal.yaml").read_text(), text)[0]


def _check(tmp: Path, zone: str, server: str | None) -> tuple[int, str]:
    """(exit code, stderr) of ``gslb check`` of ``zone`` alone in a folder (with ``server`` as -c)."""
    zones = tmp / "zones"
    zones.mkdir(parents=True)
    (zones / "corpus.example.com.yaml").write_text(zone)
    args = ["check", "--zones", str(zones)]
    if server is not None:
        (tmp / "gslb.yaml").write_text(server)
        args = ["check", "-c", str(tmp / "gslb.yaml")]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(args)
    return code, err.getvalue()


@pytest.mark.parametrize("kind", ["zone", "server"])
def test_schemas_are_draft_2020_12_and_printed_by_gslb_schema(kind, capsys):
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert cli.main(["schema", kind]) == 0
    assert json.loads(capsys.readouterr().out) == schema


def test_gslb_schema_rejects_an_unknown_kind(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["schema", "policy"])
    assert exc.value.code == 2
    assert "invalid choice: 'policy'" in capsys.readouterr().err


def example_zones() -> list[Path]:
    return sorted((ROOT / "zones").glob("*.yaml"))


@pytest.mark.parametrize("path", example_zones(), ids=lambda p: p.name)
def test_example_zones_validate_and_name_the_schema(path, tmp_path, monkeypatch):
    text = path.read_text()
    assert schema_errors("zone", text) == []
    # the editor modeline: a path relative to the file, which VS Code YAML and others resolve
    found = MODELINE.search(text)
    assert found, f"{path.name} lacks the yaml-language-server $schema line"
    target = (path.parent / found.group(1)).resolve()
    assert target == (SCHEMAS / "zone.schema.json").resolve()
    monkeypatch.chdir(tmp_path)
    assert check_zone(tmp_path, text) == 0



def harvested_zones() -> list[tuple[str, str]]:
    """Zone texts written in the tests: string constants with a ``zone:`` line, and the harness's
    generated health zone."""
    out: list[tuple[str, str]] = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.search(r"(?m)^zone:\s*\S", node.value):
                out.append((f"{path.relative_to(ROOT)}:{node.lineno}", node.value))
    out.append(("harness.two_site_zone", two_site_zone({"fra": 8001, "iad": 8002})))
    out.append(("harness.small_zone", small_zone("small.test.", "  www: {A: 192.0.2.1}\n", serial="auto")))
    out.append(("harness.quorum_zone", quorum_zone(("192.0.2.10", "198.51.100.20"), ("web", "web"),
                                                   {"web": "{type: tcp, port: 8001}"})))
    return out


def test_every_test_zone_gslb_accepts_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    accepted = 0
    for i, (where, text) in enumerate(harvested_zones()):
        try:
            errors = schema_errors("zone", text)
        except Exception:  # not YAML gslb can load: gslb rejects it too
            errors = ["not loadable"]
        ok = check_zone(tmp_path / str(i), text) == 0
        if ok:
            accepted += 1
            assert errors == [], f"{where}: gslb accepts it, the schema does not: {errors}"
    assert accepted >= 5, accepted  # the harvest found real zones


@pytest.mark.parametrize("kind", ["zone", "server"])
def test_corpus_schema_and_gslb_check_agree(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check = check_zone if kind == "zone" else check_server
    seen = {"good": 0, "bad": 0}
    for verdict in ("good", "bad"):
        for path in sorted((CORPUS / kind / verdict).glob("*.yaml")):
            text = path.read_text()
            errors = schema_errors(kind, text)
            code = check(tmp_path / verdict / path.stem, text)
            if verdict == "good":
                assert errors == [], f"{path.name}: {errors}"
                assert code == 0, path.name
            else:
                assert errors, f"{path.name}: the schema accepts it"
                assert code == 1, f"{path.name}: gslb check exits {code}"
                # and both reject it for the same field
                zone, server = (text, None) if kind == "zone" else \
                    ((CORPUS / "zone" / "good" / "minimal.yaml").read_text(), text)
                _, stderr = _check(tmp_path / "again" / path.stem, zone, server)
                theirs, ours = gslb_fields(stderr), schema_fields(kind, text)
                assert any(same_field(a, b) for a in theirs for b in ours), (path.name, theirs, ours)
            seen[verdict] += 1
    assert seen["good"] >= 3 and seen["bad"] >= 15, seen




@pytest.mark.parametrize("block, ok", [
    ({"algorithm": "ECDSAP256SHA256", "key_file": "keys/z.key", "signature_validity": "7d"}, True),
    ({"algorithm": "ED25519", "signature_validity": 604800}, True),
    ({"algorithm": "RSASHA256"}, False),
    ({"signature_validity": "7 days"}, False),
    ({"signature_validity": 0}, False),
    ({"key_file": ""}, False),
    ({"rollover": "30d"}, False),
])
def test_dnssec_block(block, ok):
    # the SPEC's dnssec: block (another branch teaches gslb check about it; the schema knows it now)
    zone = {"zone": "corpus.example.com", "ns": ["ns1.example.com."], "dnssec": block}
    errors = list(validator("zone").iter_errors(zone))
    assert (errors == []) is ok, [e.message for e in errors]


def test_the_zone_schema_knows_every_static_type():
    """A record type gslb accepts and the schema does not would make editors flag good zones."""
    from gslb.model import STATIC_TYPES

    node = json.loads((SCHEMAS / "zone.schema.json").read_text())["$defs"]["node"]
    assert set(STATIC_TYPES) <= set(node["properties"])
