"""The pure parts of ``tools/bench``: query encoding, percentiles, dnsperf parsing, subnet sampling.

The tool is a script without a ``.py`` suffix; it is imported from its path. Nothing here starts a
server or needs dnsperf.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import ipaddress
import struct
import sys
from pathlib import Path

import dns.flags
import dns.message
import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench"


def _load():
    loader = importlib.machinery.SourceFileLoader("gslb_bench_tool", str(TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


bench = _load()


def test_ecs_query_is_what_dnsperf_dash_e_sends():
    wire = bench.wire_query("www.gslb.test", subnet="18.184.0.0/24")
    # header: id 0, RD, 1 question, 1 additional (the OPT record)
    assert wire[:12] == struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 1)
    # ECS option as `dnsperf -E 8:0001180012b800`: family 1, /24, scope 0, three address bytes
    assert wire.endswith(struct.pack("!HH", 8, 7) + bytes.fromhex("0001180012b800"))
    message = dns.message.from_wire(wire)
    assert str(message.question[0].name) == "www.gslb.test."
    assert message.edns == 0 and message.payload == 4096
    (option,) = message.options
    assert (option.address, option.srclen, option.scopelen) == ("18.184.0.0", 24, 0)


def test_signed_scenario_queries_carry_the_do_bit():
    plain = dns.message.from_wire(bench.wire_query("www.gslb.test", subnet="18.184.0.0/24"))
    signed = dns.message.from_wire(bench.wire_query("www.gslb.test", subnet="18.184.0.0/24", do=True))
    assert not plain.ednsflags & dns.flags.DO and signed.ednsflags & dns.flags.DO
    assert signed.options == plain.options


@pytest.mark.parametrize("subnet, payload", [
    ("3.80.0.0/24", "000118000350 00"),
    ("10.0.0.0/8", "0001080 00a"),
    ("0.0.0.0/0", "00010000"),
    ("192.0.2.128/25", "00011900c00002 80"),
    ("2001:db8::/32", "00022000 20010db8"),
])
def test_ecs_option_truncates_the_address_to_the_prefix(subnet, payload):
    raw = bytes.fromhex(payload.replace(" ", ""))
    assert bench.ecs_option(subnet) == struct.pack("!HH", 8, len(raw)) + raw


def test_query_without_subnet_has_no_opt_record():
    wire = bench.wire_query("static.gslb.test")
    message = dns.message.from_wire(wire)
    assert message.edns == -1 and message.flags & dns.flags.RD


def test_length_prefixed_is_dnsperf_binary_input():
    a, b = bench.wire_query("a.test"), bench.wire_query("bb.test", subnet="1.2.3.0/24")
    blob = bench.length_prefixed([a, b])
    assert blob == struct.pack("!H", len(a)) + a + struct.pack("!H", len(b)) + b


def test_percentiles_nearest_rank():
    histogram = {v: 1 for v in range(1, 101)}  # 1..100, once each
    assert bench.percentiles(histogram, (50, 99, 100)) == {50: 50, 99: 99, 100: 100}
    skewed = {10: 98, 500: 1, 9000: 1}
    assert bench.percentiles(skewed, (50, 99, 100)) == {50: 10, 99: 500, 100: 9000}
    assert bench.percentiles({7: 1}, (0, 50, 99.9)) == {0: 7, 50: 7, 99.9: 7}
    assert bench.percentiles({}, (50,)) == {}


def test_parse_dnsperf_statistics_and_latency_lines():
    text = """\
Statistics:

  Queries sent:         396425
  Queries completed:    396420 (100.00%)
  Queries lost:         5 (0.00%)

  Response codes:       NOERROR 396420 (100.00%)
  Average packet size:  request 45, response 61
  Run time (s):         10.000411
  Queries per second:   39640.370776

  Average Latency (s):  0.002497 (min 0.000046, max 0.089240)
  Latency StdDev (s):   0.001436
"""
    stats = bench.parse_dnsperf(text)
    assert stats["sent"] == 396425 and stats["completed"] == 396420
    assert stats["qps"] == pytest.approx(39640.370776) and stats["lost_pct"] == 0.0
    assert stats["avg_ms"] == pytest.approx(2.497) and stats["max_ms"] == pytest.approx(89.24)
    assert bench.parse_dnsperf("Queries sent: 0\n") == {"sent": 0.0}
    assert bench.parse_latency_line("> NOERROR www.gslb.test A 0.000123\n") == pytest.approx(0.000123)
    assert bench.parse_latency_line("[Status] Sending queries\n") is None


def test_parse_count():
    assert [bench.parse_count(t) for t in ("3", "2500", "10k", "100K", "1m")] == [3, 2500, 10000, 100000, 1000000]
    for bad in ("", "0", "ten", "10x", "-1"):
        with pytest.raises(ValueError):
            bench.parse_count(bad)


def test_sample_subnets_equal_shares_distinct_and_reproducible():
    continents = bench.CONTINENTS

    def lookup(address: str):  # a fake GeoIP: the continent follows the first octet
        first = int(address.split(".")[0])
        if first % 7 == 6:
            return None  # not located
        return {"continent": {"code": continents[first % 7]}, "location": {"latitude": 0, "longitude": 0}}

    subnets = bench.sample_subnets(lookup, 600, seed=1)
    assert len(subnets) == len(set(subnets)) == 600
    nets = [ipaddress.ip_network(s) for s in subnets]
    assert all(n.prefixlen == 24 for n in nets)
    shares = {c: sum(continents[int(str(n.network_address).split(".")[0]) % 7] == c for n in nets)
              for c in continents}
    assert shares == {c: 100 for c in continents}
    assert bench.sample_subnets(lookup, 600, seed=1) == subnets
    assert bench.sample_subnets(lookup, 600, seed=2) != subnets


def test_sphere_points_and_distance():
    points = bench.sphere_points(50)
    assert len(set(points)) == 50
    assert all(-90 <= lat <= 90 and -180 <= lon <= 180 for lat, lon in points)
    assert bench.distance_km((50.11, 8.68), (38.95, -77.45)) == pytest.approx(6500, rel=0.02)


def test_rate_limit_option():
    assert bench.parse_args(["--rate-limit", "1000000"]).rate_limit == 1000000
    assert bench.parse_args([]).rate_limit is None
    with pytest.raises(SystemExit):
        bench.parse_args(["--rate-limit", "0"])
