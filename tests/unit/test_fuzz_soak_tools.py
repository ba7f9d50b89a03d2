"""tools/fuzz and tools/soak themselves: the fuzzer runs clean and stops on a failure; the soak's
pure parts (zones, subnets, judging, RSS verdict, dnsperf parsing, flapping schedule).

Both tools are scripts without a ``.py`` suffix, imported from their paths. Nothing here starts
gslb or dnsperf; the soak itself (60 s, saturating the machine) is not run in CI.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import ipaddress
import random
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from gslb.zones import load_zone_file

TOOLS = Path(__file__).resolve().parents[2] / "tools"
ROOT = TOOLS.parent


def _load(name: str):
    loader = importlib.machinery.SourceFileLoader(f"gslb_{name}_tool", str(TOOLS / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


fuzz = _load("fuzz")
soak = _load("soak")


# ------------------------------------------------------------------------------------ tools/fuzz

def test_fuzz_runs_2000_inputs_and_exits_0(tmp_path):
    result = subprocess.run([sys.executable, str(TOOLS / "fuzz"), "--inputs", "2000", "--seed", "3",
                             "--crash-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2,000 inputs in" in result.stdout and "no failure" in result.stdout
    assert "NOERROR" in result.stdout and "FORMERR" in result.stdout  # both the resolver and the parser reached
    assert list(tmp_path.iterdir()) == []


def test_fuzz_stops_at_the_first_failure_and_writes_the_input(tmp_path, monkeypatch, capsys):
    """A broken handler (a reply with the wrong ID) is caught, reported and saved."""
    real = fuzz.Env.__init__

    def broken(self, folder):
        real(self, folder)
        udp = self.handler.udp
        self.handler.udp = lambda data, host: (b"\xff\xff" + r[2:]) if (r := udp(data, host)) else r

    monkeypatch.setattr(fuzz.Env, "__init__", broken)
    assert fuzz.fuzz(500, 1, 512, 0, tmp_path, quiet=True) == 1
    (saved,) = tmp_path.iterdir()
    assert saved.name.startswith("fuzz-crash-") and saved.read_bytes()
    assert "is not the query's" in capsys.readouterr().err
    monkeypatch.setattr(fuzz.Env, "__init__", real)
    assert fuzz.replay(saved, "127.0.0.1") == 0  # the real handler passes the saved input


def test_fuzz_oracle(tmp_path):
    q = dns.message.make_query("www.gslb.example.com.", "A", use_edns=0, payload=700)
    q.id = 4660
    data = q.to_wire()
    assert fuzz.udp_limit(data) == 700
    assert fuzz.udp_limit(dns.message.make_query("a.", "A").to_wire()) == 512
    assert fuzz.udp_limit(dns.message.make_query("a.", "A", use_edns=0, payload=100).to_wire()) == 512
    assert fuzz.udp_limit(dns.message.make_query("a.", "A", use_edns=0, payload=9000).to_wire()) == 1232
    assert fuzz.udp_limit(b"\x00\x01garbage") == 1232
    reply = dns.message.make_response(q).to_wire()
    assert fuzz.check_reply(data, reply, 512).id == 4660
    assert fuzz.check_reply(data, None, 512) is None
    with pytest.raises(fuzz.Failure, match="not the query's"):
        fuzz.check_reply(b"\x00\x01" + data[2:], reply, 512)
    with pytest.raises(fuzz.Failure, match="exceeds the client's limit"):
        fuzz.check_reply(data, reply, len(reply) - 1)
    with pytest.raises(fuzz.Failure, match="cannot parse"):
        fuzz.check_reply(data, reply[:-3], 512)
    with pytest.raises(fuzz.Failure, match="QR clear"):
        fuzz.check_reply(data, data, 512)
    # an UPDATE is read as a generic message (its echoed question need not be an SOA zone section)
    assert fuzz.as_generic(b"\x00\x01\x28\x00") == b"\x00\x01\x00\x00"
    assert fuzz.as_generic(data) == data


def test_fuzz_generators_are_deterministic_and_varied():
    a, b = random.Random(5), random.Random(5)
    assert [fuzz.structured(a) for _ in range(50)] == [fuzz.structured(b) for _ in range(50)]
    rng = random.Random(1)
    valid = [fuzz.valid_query(rng) for _ in range(300)]
    parsed = [dns.message.from_wire(v) for v in valid]
    assert {m.edns for m in parsed} == {-1, 0}
    assert any(m.options for m in parsed)
    mutated = {fuzz.mutate(rng, valid[0], valid, 512) for _ in range(100)}
    assert len(mutated) > 90 and all(len(m) <= 512 for m in mutated)


# ------------------------------------------------------------------------------------ tools/soak

def test_soak_zones_load(tmp_path):
    (tmp_path / "soak.yaml").write_text(soak.soak_zone(15999))
    zone = load_zone_file(str(tmp_path / "soak.yaml"))
    assert set(zone.sites) == set(soak.SITES) and "www" in zone.pools
    serials = set()
    for generation in range(6):
        (tmp_path / "flip.yaml").write_text(soak.flip_zone(generation))
        zone = load_zone_file(str(tmp_path / "flip.yaml"))
        serials.add(zone.soa.serial)
        assert [s for s in zone.pools["p"].sites] == (["y"] if generation % 3 == 2 else
                                                      ["y", "x"] if generation % 2 else ["x", "y"])
    assert len(serials) == 6
    assert soak.flip_address(0) == "10.0.0.0" and soak.flip_address(257) == "10.0.1.1"


def test_located_subnets_distinct_located_and_reproducible():
    text = (ROOT / "data" / "sample-city.csv").read_text()
    subnets = soak.located_subnets(text, 5000, seed=1)
    assert len(set(subnets)) == 5000 and subnets == soak.located_subnets(text, 5000, seed=1)
    assert subnets != soak.located_subnets(text, 5000, seed=2)
    from gslb.geo import GeoLocator
    geo = GeoLocator.open(str(ROOT / "data" / "sample-city.mmdb"))
    try:
        for subnet in subnets[:200]:
            net = ipaddress.ip_network(subnet)
            assert net.prefixlen == 24
            location = geo.locate(str(net.network_address))
            assert location is not None and location.latlon, subnet
    finally:
        geo.close()
    with pytest.raises(soak.SoakError, match="fewer than"):
        soak.located_subnets(text, 10 ** 7)


def test_load_queries_mix_names_and_carry_ecs():
    queries = soak.load_queries([f"81.2.{i}.0/24" for i in range(40)])
    names = [str(dns.message.from_wire(q).question[0].name) for q in queries]
    assert names.count("v.flip.test.") == 2 and names.count("p.flip.test.") == 2
    assert names.count("www.soak.test.") == 36
    assert all(dns.message.from_wire(q).options[0].srclen == 24 for q in queries)


def test_judge_accepts_the_state_before_or_after_only():
    fra, iad = ("NOERROR", ("127.0.3.1",)), ("NOERROR", ("127.0.3.2",))
    assert soak.judge(fra, fra, fra)
    assert soak.judge(fra, fra, iad) and soak.judge(iad, fra, iad)
    assert not soak.judge(iad, fra, fra)
    assert not soak.judge(("SERVFAIL", ()), fra, iad)


def test_replied_and_explained_compare_as_equal():
    q = dns.message.make_query("www.soak.test.", "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.soak.test.", 30, "IN", "A", "127.0.3.2", "127.0.3.1"))
    assert soak.replied(r.to_wire()) == ("NOERROR", ("127.0.3.1", "127.0.3.2"))
    assert soak.explained({"rcode": "NOERROR", "answers": ["127.0.3.2", "127.0.3.1"]}) == soak.replied(r.to_wire())
    r.set_rcode(dns.rcode.NXDOMAIN)
    r.answer.clear()
    assert soak.replied(r.to_wire()) == ("NXDOMAIN", ()) == soak.explained({"rcode": "NXDOMAIN", "answers": []})


def test_changed_names_counts_clients_whose_answer_moved():
    a, b = ("NOERROR", ("1.1.1.1",)), ("NOERROR", ("2.2.2.2",))
    seen = {("www", "1.0.0.0/24"): {a, b}, ("www", "2.0.0.0/24"): {a}, ("v", "1.0.0.0/24"): {a}}
    assert soak.changed_names(seen) == {"www": 1, "v": 0}


def test_rss_verdict_after_warmup():
    samples = [(t, (500 if t < 10 else 1000) + t) for t in range(0, 60)]  # caches fill during warm-up
    v = soak.rss_verdict(samples, 15, 10)
    assert (v.first_kb, v.last_kb, v.max_kb) == (1015, 1059, 1059) and v.ok
    assert v.growth_pct == pytest.approx(44 / 1015 * 100)
    growing = [(t, 1000 + 10 * t) for t in range(60)]
    assert not soak.rss_verdict(growing, 15, 10).ok
    assert soak.rss_verdict([(1, 100), (2, 100)], 15, 10) is None


def test_parse_lost_and_flap_schedule():
    assert soak.parse_lost("  Queries sent:  10\n  Queries lost:         5 (0.00%)\n") == 5
    assert soak.parse_lost("Queries lost: 0 (0.00%)") == 0
    assert soak.parse_lost("nothing") is None
    assert [soak.flap_up(t, 3) for t in (0, 2.9, 3, 5.9, 6, 9.5)] == [True, True, False, False, True, False]


def test_soak_arguments():
    args = soak.parse_args([])
    assert (args.duration, args.warmup, args.subnets, args.rss_growth, args.cluster) == (60, 30, 100000, 10, False)
    assert soak.parse_args(["--cluster", "--subnets", "10k"]).subnets == 10000
    with pytest.raises(SystemExit):
        soak.parse_args(["--duration", "10", "--warmup", "10"])
