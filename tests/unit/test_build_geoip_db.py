"""tools/build_geoip_db.py: the sample database is valid GeoIP2, complete and reproducible."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import geoip2.database
import geoip2.errors
import maxminddb
import pytest

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "data" / "sample-city.csv"
MMDB = ROOT / "data" / "sample-city.mmdb"
CENTROIDS = ROOT / "data" / "country-centroids.csv"
TOOL = ROOT / "tools" / "build_geoip_db.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("build_geoip_db", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


tool = _load_tool()
HEADER = "network,city,subdivision,country,continent,latitude,longitude\n"


def _rows():
    return tool.read_rows(CSV, tool.load_country_names(CENTROIDS))


def test_rebuilt_database_is_byte_identical_to_the_committed_one(tmp_path):
    out = tmp_path / "rebuilt.mmdb"
    assert tool.main(["--out", str(out)]) == 0
    assert out.read_bytes() == MMDB.read_bytes(), \
        "data/sample-city.mmdb is stale: run python tools/build_geoip_db.py and commit it"


def test_same_input_same_bytes_and_fixed_build_epoch(tmp_path):
    names = tool.load_country_names(CENTROIDS)
    rows = _rows()
    tool.build(rows, tmp_path / "a.mmdb", names, build_epoch=1234567890)
    tool.build(rows, tmp_path / "b.mmdb", names, build_epoch=1234567890)
    assert (tmp_path / "a.mmdb").read_bytes() == (tmp_path / "b.mmdb").read_bytes()
    with maxminddb.open_database(str(tmp_path / "a.mmdb")) as reader:
        assert reader.metadata().build_epoch == 1234567890
    with maxminddb.open_database(str(MMDB)) as reader:
        meta = reader.metadata()
        assert meta.build_epoch == tool.DEFAULT_BUILD_EPOCH
        assert meta.database_type == "GeoIP2-City"
        assert meta.ip_version == 6
        assert meta.languages == ["en"]


def test_source_covers_both_families_every_continent_and_special_rows():
    rows = _rows()
    assert 60 <= len(rows) <= 150
    assert {r.network.version for r in rows} == {4, 6}
    for version in (4, 6):
        located = {r.continent for r in rows if r.network.version == version and r.city and r.latlon}
        assert located == {"AF", "AN", "AS", "EU", "NA", "OC", "SA"}
    assert any(r.country and not r.city and r.latlon is None for r in rows)  # country only
    assert any(r.country is None and r.latlon is None for r in rows)  # continent only


def test_geoip2_city_reader_reads_ipv4_ipv6_and_ipv4_aliases():
    with geoip2.database.Reader(str(MMDB)) as reader:
        london = reader.city("81.2.69.142")
        assert london.city.name == "London"
        assert london.country.iso_code == "GB" and london.country.name == "United Kingdom"
        assert london.continent.code == "EU" and london.continent.name == "Europe"
        assert london.subdivisions.most_specific.iso_code == "ENG"
        assert (london.location.latitude, london.location.longitude) == (51.5142, -0.0931)
        assert str(london.traits.network) == "81.2.69.0/24"

        tokyo = reader.city("2001:db8:41::5")
        assert (tokyo.city.name, tokyo.country.iso_code, tokyo.continent.code) == ("Tokyo", "JP", "AS")
        assert str(tokyo.traits.network) == "2001:db8:41::/48"

        # ::ffff:0:0/96 (IPv4-mapped) and 2002::/16 (6to4) reach the IPv4 data, as in MaxMind's DBs
        assert reader.city("::ffff:81.2.69.142").city.name == "London"
        assert reader.city("2002:5102:458e::1").city.name == "London"  # 6to4 of 81.2.69.142

        with pytest.raises(geoip2.errors.AddressNotFoundError):
            reader.city("192.0.2.170")  # the deliberate gap


def test_country_database_has_country_layout(tmp_path):
    out = tmp_path / "country.mmdb"
    assert tool.main(["--country", "--out", str(out)]) == 0
    with geoip2.database.Reader(str(out)) as reader:
        assert reader.metadata().database_type == "GeoIP2-Country"
        answer = reader.country("203.0.113.5")
        assert (answer.country.iso_code, answer.continent.code) == ("SG", "AS")
        with pytest.raises(TypeError):
            reader.city("203.0.113.5")
    with maxminddb.open_database(str(out)) as reader:
        record = reader.get("81.2.69.142")
        assert set(record) == {"continent", "country"}


def test_centroid_table_is_complete_and_sane():
    with open(CENTROIDS, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    codes = [r["iso_code"] for r in rows]
    assert len(codes) == len(set(codes)) >= 249
    assert all(len(c) == 2 and c.isupper() for c in codes)
    for r in rows:
        assert -90 <= float(r["latitude"]) <= 90 and -180 <= float(r["longitude"]) <= 180, r
        assert r["name"]
    assert {r.country for r in _rows() if r.country} <= set(codes)


@pytest.mark.parametrize("line, message", [
    ("192.0.2.1/24,X,,DE,EU,1,1", "2: network: expected a CIDR network with no host bits set"),
    ("10.0.0.0/8,X,,DE,XX,1,1", "2: continent: expected one of AF AN AS EU NA OC SA, got 'XX'"),
    ("10.0.0.0/8,X,,ZZ,EU,1,1", "2: country: expected an ISO 3166-1 alpha-2 code"),
    ("10.0.0.0/8,X,,,EU,,", "2: country: a city or subdivision needs a country"),
    ("10.0.0.0/8,X,,DE,EU,91,1", "2: latitude/longitude: expected both, in degrees: 91 is out of range -90..90"),
    ("10.0.0.0/8,X,,DE,EU,50,", "2: latitude/longitude: expected both"),
    ("10.0.0.0/8,X,DE,EU", "2: row: expected 7 fields, got 4"),
    ("::ffff:0:0/104,X,,DE,EU,1,1", "2: network: ::ffff:0:0/104 overlaps the IPv4 part of the tree"),
])
def test_bad_rows_are_reported_with_file_line_and_field(tmp_path, line, message):
    src = tmp_path / "bad.csv"
    src.write_text(HEADER + line + "\n", encoding="utf-8")
    with pytest.raises(tool.BuildError) as info:
        tool.read_rows(src, tool.load_country_names(CENTROIDS))
    assert f"{src}:{message}" in str(info.value)


def test_overlaps_and_every_error_are_reported_at_once(tmp_path, capsys):
    src = tmp_path / "bad.csv"
    src.write_text(HEADER + "# comment\n10.0.0.0/8,,,DE,EU,,\n10.1.0.0/16,,,FR,EU,,\n"
                   "11.0.0.0/8,,,DE,QQ,,\n", encoding="utf-8")
    assert tool.main(["--csv", str(src), "--out", str(tmp_path / "x.mmdb")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{src}:4: network: 10.1.0.0/16 overlaps 10.0.0.0/8 (line 3)",
        f"{src}:5: continent: expected one of AF AN AS EU NA OC SA, got 'QQ'",
    ]
    assert not (tmp_path / "x.mmdb").exists()


def test_bad_header_and_missing_file(tmp_path, capsys):
    src = tmp_path / "bad.csv"
    src.write_text("net,city\n", encoding="utf-8")
    assert tool.main(["--csv", str(src), "--out", str(tmp_path / "x.mmdb")]) == 1
    assert f"{src}:1: header: expected network,city," in capsys.readouterr().err
    assert tool.main(["--csv", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x.mmdb")]) == 1
    assert "nope.csv: cannot read" in capsys.readouterr().err


def test_command_line_usage_errors_exit_2(tmp_path):
    result = subprocess.run([sys.executable, str(TOOL), "--country"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "--country needs --out" in result.stderr
