"""gslb.geo: locating clients with the sample City database, a Country database and none."""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import random
import sys
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from gslb.errors import GeoDatabaseError
from gslb.geo import GeoLocator, distance_km, load_centroids
from gslb.model import Location

ROOT = Path(__file__).resolve().parents[2]
MMDB = ROOT / "data" / "sample-city.mmdb"
CENTROIDS = load_centroids(ROOT / "data" / "country-centroids.csv")


def _load_tool():
    spec = importlib.util.spec_from_file_location("build_geoip_db", ROOT / "tools" / "build_geoip_db.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def city():
    with GeoLocator.open(str(MMDB)) as locator:
        yield locator


@pytest.fixture(scope="module")
def country_db(tmp_path_factory):
    out = tmp_path_factory.mktemp("geo") / "sample-country.mmdb"
    assert _load_tool().main(["--country", "--out", str(out)]) == 0
    return out


def _write_mmdb(path, database_type, ip_version=6, networks=()):
    writer = MMDBWriter(ip_version=ip_version, ipv4_compatible=ip_version == 6, database_type=database_type,
                        languages=["en"], description="test")
    for network, record in networks:
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


# One client of every continent, IPv4 and IPv6: (ip, network, city coordinates, country, continent)
CLIENTS = [
    ("192.0.2.10", "192.0.2.0/26", (50.1109, 8.6821), "DE", "EU"),
    ("81.2.69.142", "81.2.69.0/24", (51.5142, -0.0931), "GB", "EU"),
    ("198.51.100.20", "198.51.100.0/25", (39.0438, -77.4874), "US", "NA"),
    ("8.8.4.4", "8.8.4.0/24", (40.7128, -74.006), "US", "NA"),
    ("203.0.113.30", "203.0.113.0/25", (1.3521, 103.8198), "SG", "AS"),
    ("203.0.113.130", "203.0.113.128/26", (-33.8688, 151.2093), "AU", "OC"),
    ("203.0.113.200", "203.0.113.192/27", (-23.5505, -46.6333), "BR", "SA"),
    ("203.0.113.230", "203.0.113.224/28", (-26.2041, 28.0473), "ZA", "AF"),
    ("41.58.10.1", "41.58.0.0/16", (6.5244, 3.3792), "NG", "AF"),
    ("157.132.184.9", "157.132.184.0/24", (-77.8463, 166.6681), "AQ", "AN"),
    ("2001:db8:1::1", "2001:db8:1::/48", (50.1109, 8.6821), "DE", "EU"),
    ("2001:db8:10:ab::1", "2001:db8:10::/48", (39.0438, -77.4874), "US", "NA"),
    ("2001:db8:20::20", "2001:db8:20::/48", (-23.5505, -46.6333), "BR", "SA"),
    ("2001:db8:31::1", "2001:db8:31::/48", (6.5244, 3.3792), "NG", "AF"),
    ("2001:db8:40::1", "2001:db8:40::/48", (1.3521, 103.8198), "SG", "AS"),
    ("2001:db8:50::1", "2001:db8:50::/48", (-33.8688, 151.2093), "AU", "OC"),
    ("2001:db8:60::1", "2001:db8:60::/48", (-77.8463, 166.6681), "AQ", "AN"),
    ("2a02:2e0:1::1", "2a02:2e0::/32", (50.1109, 8.6821), "DE", "EU"),
]


@pytest.mark.parametrize("ip, network, latlon, country, continent", CLIENTS)
def test_locates_clients_of_every_continent(city, ip, network, latlon, country, continent):
    loc = city.locate(ip)
    prefixlen = int(network.split("/")[1])
    assert loc == Location(ip, network, prefixlen, latlon, country, continent)


def test_kind_and_metadata(city):
    assert city.kind == "city"
    assert city.database_type == "GeoIP2-City"
    assert city.path == str(MMDB)


def test_country_only_rows_use_the_country_centroid(city):
    assert city.locate("46.21.200.1") == Location("46.21.200.1", "46.21.0.0/16", 16, CENTROIDS["FR"], "FR", "EU")
    assert city.locate("2001:db8:70::9") == Location(
        "2001:db8:70::9", "2001:db8:70::/48", 48, CENTROIDS["DE"], "DE", "EU")


def test_continent_only_rows_have_no_coordinates(city):
    assert city.locate("185.250.3.3") == Location("185.250.3.3", "185.250.0.0/22", 22, None, None, "EU")
    assert city.locate("2001:db8:71::1") == Location("2001:db8:71::1", "2001:db8:71::/48", 48, None, None, "AS")


@pytest.mark.parametrize("ip, network", [
    ("192.0.2.170", "192.0.2.160/27"),  # gap between London /27 and Dublin /26
    ("203.0.113.250", "203.0.113.240/28"),
    ("10.1.2.3", "10.0.0.0/7"),  # 10/8 and 11/8 are both empty
    ("127.0.0.1", "124.0.0.0/6"),  # 124/8..127/8 hold no row
    ("2001:db8:ffff::1", "2001:db8:8000::/33"),
    ("fe80::1", "8000::/1"),
])
def test_unlocated_addresses_report_the_empty_network_around_them(city, ip, network):
    loc = city.locate(ip)
    assert (loc.latlon, loc.country, loc.continent) == (None, None, None)
    assert (loc.network, loc.prefixlen) == (network, int(network.split("/")[1]))
    # every address of that network is unlocated, and the network is as large as it can be
    net = ipaddress.ip_network(network)
    for probe in (net.network_address, net.broadcast_address):
        assert city.locate(str(probe)).network == network
    if net.prefixlen > 0:
        parent = net.supernet()
        sibling = next(n for n in parent.subnets() if n != net)
        assert city.locate(str(sibling.network_address)).network != network


def test_ipv4_prefix_lengths_are_ipv4_lengths_in_an_ipv6_tree(city):
    for ip, *_ in CLIENTS:
        loc = city.locate(ip)
        if ":" not in ip:
            assert 0 <= loc.prefixlen <= 32
            assert ipaddress.ip_address(ip) in ipaddress.ip_network(loc.network)


def test_ipv4_mapped_addresses_are_located_as_ipv4_with_ipv6_lengths(city):
    loc = city.locate("::ffff:81.2.69.142")
    assert loc == Location("::ffff:81.2.69.142", "::ffff:81.2.69.0/120", 120, (51.5142, -0.0931), "GB", "EU")
    gap = city.locate("::FFFF:c000:2aa")  # 192.0.2.170
    assert (gap.ip, gap.network, gap.prefixlen, gap.latlon) == (
        "::ffff:192.0.2.170", "::ffff:192.0.2.160/123", 123, None)


def test_scoped_link_local_and_bad_input(city):
    assert city.locate("fe80::1%eth0").network == "8000::/1"
    with pytest.raises(ValueError):
        city.locate("not-an-ip")
    with pytest.raises(ValueError):
        city.locate("192.0.2.0/24")


def test_country_database_locates_at_country_centroids(country_db):
    with GeoLocator.open(str(country_db)) as locator:
        assert locator.kind == "country"
        assert locator.locate("81.2.69.142") == Location(
            "81.2.69.142", "81.2.69.0/24", 24, CENTROIDS["GB"], "GB", "EU")
        assert locator.locate("2001:db8:41::1") == Location(
            "2001:db8:41::1", "2001:db8:41::/48", 48, CENTROIDS["JP"], "JP", "AS")
        assert locator.locate("157.132.184.1").latlon == CENTROIDS["AQ"]
        assert locator.locate("185.250.0.1").latlon is None
        assert locator.locate("192.0.2.170").prefixlen == 27


def test_no_database_means_unknown_location_for_everyone():
    locator = GeoLocator.open(None)
    assert locator.kind == "none"
    assert locator.locate("81.2.69.142") == Location("81.2.69.142", "0.0.0.0/0", 0)
    assert locator.locate("2001:db8:1::1") == Location("2001:db8:1::1", "::/0", 0)
    locator.close()


def test_missing_or_invalid_database_raises_naming_the_path(tmp_path):
    missing = tmp_path / "nope.mmdb"
    with pytest.raises(GeoDatabaseError, match=f"^{missing}: GeoIP database not found"):
        GeoLocator.open(str(missing))
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"this is not a MaxMind DB\n" * 10)
    with pytest.raises(GeoDatabaseError, match=f"^{junk}: not a readable MaxMind DB"):
        GeoLocator.open(str(junk))
    with pytest.raises(GeoDatabaseError, match=f"^{tmp_path}: not a readable MaxMind DB"):
        GeoLocator.open(str(tmp_path))


def test_non_location_database_type_is_refused(tmp_path):
    asn = _write_mmdb(tmp_path / "asn.mmdb", "GeoLite2-ASN",
                      networks=[("192.0.2.0/24", {"autonomous_system_number": 64496})])
    with pytest.raises(GeoDatabaseError, match="'GeoLite2-ASN' is not a GeoIP2/GeoLite2 City or Country"):
        GeoLocator.open(str(asn))


def test_missing_centroid_table_is_an_error(tmp_path):
    with pytest.raises(GeoDatabaseError, match="cannot read the country centroid table"):
        GeoLocator.open(str(MMDB), centroids=tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("iso_code,name,latitude,longitude\nDE,Germany,north,east\n", encoding="utf-8")
    with pytest.raises(GeoDatabaseError, match=f"^{bad}:2: row: expected iso_code,name,latitude,longitude"):
        load_centroids(bad)


def test_ipv4_only_database_does_not_locate_ipv6(tmp_path):
    db = _write_mmdb(tmp_path / "v4.mmdb", "GeoLite2-Country", ip_version=4, networks=[
        ("81.2.69.0/24", {"country": {"iso_code": "GB"}, "continent": {"code": "EU"}})])
    with GeoLocator.open(str(db)) as locator:
        assert locator.locate("81.2.69.1") == Location("81.2.69.1", "81.2.69.0/24", 24, CENTROIDS["GB"], "GB", "EU")
        assert locator.locate("2001:db8::1") == Location("2001:db8::1", "::/0", 0)
        assert locator.locate("::ffff:81.2.69.1").network == "::ffff:81.2.69.0/120"


def test_ipv6_tree_without_ipv4_data(tmp_path):
    db = _write_mmdb(tmp_path / "v6.mmdb", "GeoIP2-City", networks=[
        ("2001:db8:1::/48", {"country": {"iso_code": "DE"}, "continent": {"code": "EU"}})])
    with GeoLocator.open(str(db)) as locator:
        assert locator.locate("192.0.2.1") == Location("192.0.2.1", "0.0.0.0/0", 0)
        assert locator.locate("::ffff:192.0.2.1") == Location("::ffff:192.0.2.1", "::ffff:0.0.0.0/96", 96)
        assert locator.locate("2001:db8:1::1").latlon == CENTROIDS["DE"]


def test_cache_keeps_small_networks_inside_one_slash24_apart(city):
    # Frankfurt /26, Paris /26, London /27, a /27 gap and Dublin /26 share 192.0.2.0/24.
    expected = {
        "192.0.2.1": ("192.0.2.0/26", "DE"), "192.0.2.65": ("192.0.2.64/26", "FR"),
        "192.0.2.129": ("192.0.2.128/27", "GB"), "192.0.2.161": ("192.0.2.160/27", None),
        "192.0.2.193": ("192.0.2.192/26", "IE"),
        "2001:db8:80::1": ("2001:db8:80::/56", "FR"), "2001:db8:80:100::1": ("2001:db8:80:100::/56", "ES"),
    }
    with GeoLocator.open(str(MMDB)) as locator:
        for _ in range(3):  # the second and third rounds are answered from the caches
            for ip, (network, country) in expected.items():
                loc = locator.locate(ip)
                assert (loc.ip, loc.network, loc.country) == (ip, network, country)
        # a different address of a cached network: its own ip, the network's data
        other = locator.locate("192.0.2.100")
        assert (other.ip, other.network, other.country) == ("192.0.2.100", "192.0.2.64/26", "FR")


@pytest.mark.parametrize("cache_size", [4, 65536])
def test_cached_answers_equal_uncached_answers(cache_size):
    rng = random.Random(7)
    ips = [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("192.0.2.0")) + i)) for i in range(256)]
    ips += [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("203.0.113.0")) + i)) for i in range(256)]
    ips += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(2000)]
    ips += [f"2001:db8:{rng.choice(['1', '41', '70', '71', '80', '80:100', '80:200', 'ffff'])}::{rng.getrandbits(16):x}"
            for _ in range(500)]
    ips += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(500)]
    ips += [f"::ffff:{ip}" for ip in ips[:300]]
    ips = ips * 2
    rng.shuffle(ips)
    with GeoLocator.open(str(MMDB), cache_size=cache_size) as cached, \
            GeoLocator.open(str(MMDB), cache_size=0) as uncached:
        for ip in ips:
            assert cached.locate(ip) == uncached.locate(ip), ip


def test_distance_km_known_values():
    assert distance_km((51.5074, -0.1278), (51.5074, -0.1278)) == 0.0
    assert distance_km((0.0, 0.0), (0.0, 1.0)) == pytest.approx(2 * math.pi * 6371 / 360)  # 111.195 km
    assert distance_km((0.0, 0.0), (0.0, 180.0)) == pytest.approx(math.pi * 6371)  # antipodes: 20015 km
    assert distance_km((90.0, 0.0), (-90.0, 0.0)) == pytest.approx(math.pi * 6371)
    london, paris = (51.5074, -0.1278), (48.8566, 2.3522)
    assert distance_km(london, paris) == pytest.approx(343.5, abs=0.5)
    assert distance_km(paris, london) == distance_km(london, paris)
    frankfurt, ashburn, singapore = (50.11, 8.68), (38.95, -77.45), (1.35, 103.82)
    assert distance_km(frankfurt, ashburn) == pytest.approx(6550, rel=0.01)
    assert distance_km(frankfurt, singapore) == pytest.approx(10260, rel=0.01)
    # across the antimeridian: Suva (Fiji) to Apia (Samoa), about 1150 km
    assert distance_km((-18.1248, 178.4501), (-13.8333, -171.7667)) == pytest.approx(1150, rel=0.03)
