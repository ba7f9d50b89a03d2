"""The health monitor with a fake prober and a fake clock: rise/fall, scheduling, folding, reloads."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from harness import eventually_async, holds_for_async

from gslb.health.monitor import (
    UNKNOWN,
    Monitor,
    Target,
    TargetState,
    fold_site,
    next_state,
    targets_of,
)
from gslb.health.probes import ProbeResult
from gslb.model import Check, RegionResult, Site, Soa, Zone, ZoneSet

WEB = Check("web", "http", 80, interval=10.0, timeout=3.0, rise=2, fall=3)
TCP = Check("db", "tcp", 5432, interval=30.0, timeout=2.0, rise=1, fall=1)


def make_zone(key: str, sites: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
              checks: tuple[Check, ...] = (WEB, TCP)) -> Zone:
    """sites: name -> (addresses, check names)."""
    soa = Soa("ns1." + key + ".", "h." + key + ".", 1, 3600, 600, 86400, 60, 3600)
    built = {}
    for name, (addresses, check_names) in sites.items():
        v4 = tuple(a for a in addresses if ":" not in a)
        v6 = tuple(a for a in addresses if ":" in a)
        built[name] = Site(name, None, v4, v6, check_names)
    return Zone(origin=key + ".", file=f"zones/{key}.yaml", serial=1, ttl=3600, soa=soa,
                ns=("ns1." + key + ".",), nodes={}, sites=built,
                checks={c.name: c for c in checks})


def zoneset(*zones: Zone) -> ZoneSet:
    return ZoneSet({z.origin: z for z in zones})


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeTable:
    def __init__(self) -> None:
        self.reports: list[tuple[str, str, str, RegionResult]] = []

    async def report(self, zone: str, site: str, region: str, result: RegionResult) -> None:
        self.reports.append((zone, site, region, result))


class FakeProber:
    """Answers per address from ``self.results`` (default: a pass); records every call."""

    def __init__(self) -> None:
        self.results: dict[str, ProbeResult] = {}
        self.calls: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, check: Check, address: str, session) -> ProbeResult:
        self.calls.append((check.name, address))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
            return self.results.get(address, ProbeResult(True, 5.0, None, None))
        finally:
            self.in_flight -= 1


OK = ProbeResult(True, 10.0, None, None)
FAIL = ProbeResult(False, None, None, "timeout after 3.0s")


def make_monitor(**kw) -> tuple[Monitor, FakeTable, FakeProber, FakeClock]:
    table, prober, clock = FakeTable(), FakeProber(), FakeClock(100.0)
    kw.setdefault("rng", random.Random(7))
    monitor = Monitor(table, "local", clock=clock, wall=lambda: 5000.0, prober=prober, **kw)
    return monitor, table, prober, clock


# -- rise/fall

@pytest.mark.parametrize("prev, ok, expected", [
    (UNKNOWN, True, TargetState("up", 1, 0)),        # the first result decides at once
    (UNKNOWN, False, TargetState("down", 0, 1)),
    (TargetState("up", 5, 0), False, TargetState("up", 0, 1)),
    (TargetState("up", 0, 1), False, TargetState("up", 0, 2)),
    (TargetState("up", 0, 2), False, TargetState("down", 0, 3)),  # fall = 3
    (TargetState("up", 0, 2), True, TargetState("up", 1, 0)),     # a pass resets the streak
    (TargetState("down", 0, 3), True, TargetState("down", 1, 0)),
    (TargetState("down", 1, 0), True, TargetState("up", 2, 0)),   # rise = 2
    (TargetState("down", 1, 0), False, TargetState("down", 0, 1)),
    (TargetState("down", 0, 7), False, TargetState("down", 0, 8)),
])
def test_next_state(prev, ok, expected):
    assert next_state(prev, ok, rise=2, fall=3) == expected


def test_next_state_rise_and_fall_of_one():
    assert next_state(TargetState("up", 3, 0), False, 1, 1).state == "down"
    assert next_state(TargetState("down", 0, 3), True, 1, 1).state == "up"


# -- targets and folding

def test_targets_per_address_and_check_target_replaces_addresses():
    lb = Check("lb", "https", 443, target="lb.example.net")
    zone = make_zone("z.test", {"fra": (("192.0.2.10", "2001:db8::10"), ("web", "lb")),
                                "plain": (("192.0.2.99",), ())}, checks=(WEB, lb))
    keys = list(targets_of(zoneset(zone)))
    assert keys == [("z.test", "fra", "web", "192.0.2.10"), ("z.test", "fra", "web", "2001:db8::10"),
                    ("z.test", "fra", "lb", "lb.example.net")]


def _t(check: Check, address: str) -> Target:
    return Target("z.test", "fra", check.name, address, check)


def test_fold_up_when_every_target_is_up():
    entries = [
        (_t(WEB, "192.0.2.10"), TargetState("up", 3), ProbeResult(True, 10.0, 0.5, None)),
        (_t(WEB, "2001:db8::10"), TargetState("up", 3), ProbeResult(True, 30.0, 2.0, None)),
        (_t(TCP, "192.0.2.10"), TargetState("up", 3), ProbeResult(True, 20.0, None, None)),
    ]
    result = fold_site(entries, checked_at=5000.0)
    assert result == RegionResult("up", 5000.0, rtt_ms=20.0, load=2.0, error=None, stale_after=90.0)


def test_fold_down_when_any_target_is_down_with_its_error():
    entries = [
        (_t(WEB, "192.0.2.10"), TargetState("up", 3), ProbeResult(True, 10.0, None, None)),
        (_t(WEB, "2001:db8::10"), TargetState("up", 0, 1), ProbeResult(False, None, None, "connect refused")),
        (_t(TCP, "192.0.2.10"), TargetState("down", 0, 1), ProbeResult(False, None, None, "timeout after 2.0s")),
    ]
    result = fold_site(entries, checked_at=1.0)
    assert result is not None
    assert result.state == "down"
    assert result.error == "db 192.0.2.10: timeout after 2.0s"
    assert result.rtt_ms == 10.0


def test_fold_up_site_still_shows_the_last_error():
    entries = [
        (_t(WEB, "192.0.2.10"), TargetState("up", 0, 1), ProbeResult(False, None, None, "status 503, expected 200")),
        (_t(WEB, "192.0.2.11"), TargetState("up", 2), ProbeResult(True, 4.0, None, None)),
    ]
    result = fold_site(entries, checked_at=1.0)
    assert result is not None and result.state == "up"
    assert result.error == "web 192.0.2.10: status 503, expected 200"
    assert result.stale_after == 30.0


def test_fold_waits_for_unknown_targets_unless_one_is_down():
    up = (_t(WEB, "192.0.2.10"), TargetState("up", 1), OK)
    unknown = (_t(WEB, "192.0.2.11"), UNKNOWN, None)
    dead = (_t(TCP, "192.0.2.10"), TargetState("down", 0, 1), FAIL)
    assert fold_site([up, unknown], 1.0) is None
    assert fold_site([up, unknown, dead], 1.0).state == "down"
    assert fold_site([], 1.0) is None


# -- scheduling

async def test_first_probes_are_spread_over_the_interval():
    monitor, _, prober, clock = make_monitor()
    addresses = tuple(f"192.0.2.{i}" for i in range(1, 101))
    monitor.configure(zoneset(make_zone("z.test", {"fra": (addresses, ("web",))})))
    due = sorted(monitor.schedule().values())
    assert len(due) == 100
    assert all(100.0 <= d < 110.0 for d in due)
    assert due[0] < 101.5 and due[-1] > 108.5  # spread, not bunched
    # nothing is due yet at t=100 except what the offset put there; in 10 s every target ran once
    for step in range(1, 11):
        clock.now = 100.0 + step
        await asyncio.gather(*monitor.run_due())
        ran = len(prober.calls)
        assert ran <= 100
    assert sorted(a for _, a in prober.calls) == sorted(addresses)
    # next round: each target once more within the following interval, never twice
    clock.now = 120.0
    await asyncio.gather(*monitor.run_due())
    assert len(prober.calls) == 200
    await monitor.close()


async def test_probes_in_flight_are_bounded():
    monitor, _, prober, _ = make_monitor(max_in_flight=3)
    prober.gate = asyncio.Event()
    addresses = tuple(f"192.0.2.{i}" for i in range(1, 11))
    monitor.configure(zoneset(make_zone("z.test", {"fra": (addresses, ("web",))})))
    tasks = monitor.probe_all()  # the regular limit (the first round has its own, larger one)
    for _ in range(20):
        await asyncio.sleep(0)
    assert prober.in_flight == 3
    prober.gate.set()
    await asyncio.gather(*tasks)
    assert prober.max_in_flight == 3
    assert len(prober.calls) == 10
    await monitor.close()


async def test_first_round_is_bounded_by_its_timeout_and_unfinished_counts_as_down():
    monitor, table, prober, _ = make_monitor()
    prober.gate = asyncio.Event()  # never set: probes hang
    monitor.configure(zoneset(make_zone("z.test", {"fra": (("192.0.2.1",), ("web",))})))
    assert await monitor.first_round(timeout=0.05) is False
    assert prober.in_flight == 0  # the unfinished probe was cancelled
    # never "unknown = up": a target without a result after the round starts down
    [(_, site, _, result)] = table.reports
    assert site == "fra" and result.state == "down"
    assert result.error == "web 192.0.2.1: no result in the first round (0.1s)"
    await monitor.close()


class SlowProber(FakeProber):
    """Passes for every address except those in ``hang``, which never answer until cancelled."""

    def __init__(self, hang: set[str], delay: float) -> None:
        super().__init__()
        self.hang = hang
        self.delay = delay

    async def __call__(self, check: Check, address: str, session) -> ProbeResult:
        self.calls.append((check.name, address))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if address in self.hang:
                try:
                    async with asyncio.timeout(self.delay):
                        await asyncio.Event().wait()
                except TimeoutError:
                    return ProbeResult(False, None, None, f"timeout after {self.delay}s")
            await asyncio.sleep(0)
            return ProbeResult(True, 1.0, None, None)
        finally:
            self.in_flight -= 1


async def test_first_round_with_more_targets_than_the_in_flight_limit_probes_every_target():
    # 150 sites, 100 of them hanging until their timeout: with the regular limit of 4 only a few
    # would have a result after one timeout; the first round runs them all at once
    quick = Check("web", "http", 80, interval=5.0, timeout=0.2, rise=2, fall=3)
    sites = {f"c{i}": ((f"10.0.{i // 200}.{i % 200 + 1}",), ("web",)) for i in range(150)}
    hang = {sites[f"c{i}"][0][0] for i in range(100)}
    table, clock = FakeTable(), FakeClock(100.0)
    prober = SlowProber(hang, quick.timeout)
    monitor = Monitor(table, "local", clock=clock, wall=lambda: 5000.0, prober=prober,
                      rng=random.Random(7), max_in_flight=4, first_round_in_flight=1024)
    monitor.configure(zoneset(make_zone("z.test", sites, checks=(quick,))))
    assert await monitor.first_round() is True
    assert len(prober.calls) == 150
    assert prober.max_in_flight > 100
    got = {site: r.state for _, site, _, r in table.reports}
    assert len(got) == 150
    assert all(got[f"c{i}"] == "down" for i in range(100))
    assert all(got[f"c{i}"] == "up" for i in range(100, 150))
    await monitor.close()


async def test_first_round_waits_one_timeout_per_wave_of_its_limit():
    quick = Check("web", "http", 80, interval=5.0, timeout=0.05, rise=2, fall=3)
    sites = {f"c{i}": ((f"10.0.0.{i + 1}",), ("web",)) for i in range(30)}
    prober = SlowProber({a for a, in (v[0] for v in sites.values())}, quick.timeout)
    monitor = Monitor(FakeTable(), "local", prober=prober, rng=random.Random(7),
                      max_in_flight=2, first_round_in_flight=10)
    monitor.configure(zoneset(make_zone("z.test", sites, checks=(quick,))))
    # 3 waves of 10 hanging probes: every one ends in its own timeout, none is cut short
    assert await monitor.first_round() is True
    assert prober.max_in_flight == 10
    states = [(state.state, last.error) for _, state, last in monitor.targets()]
    assert states == [("down", "timeout after 0.05s")] * 30
    await monitor.close()


async def test_after_the_first_round_each_target_is_due_one_interval_after_its_probe():
    monitor, _, prober, clock = make_monitor(max_in_flight=2)
    addresses = tuple(f"192.0.2.{i}" for i in range(1, 41))
    monitor.configure(zoneset(make_zone("z.test", {"fra": (addresses, ("web",))})))
    # offsets drawn at configure() time (100..110) are passed by the time the round ends
    clock.now = 130.0
    assert await monitor.first_round() is True
    due = monitor.schedule().values()
    assert all(130.0 + 9.0 <= d <= 130.0 + 11.0 for d in due)  # interval 10, +-10 % jitter
    assert len(set(due)) > 1  # jittered, not all at the same instant
    # nothing fires again right after the round
    clock.now = 131.0
    assert monitor.run_due() == []
    await monitor.close()


async def test_first_round_reports_every_site():
    monitor, table, prober, _ = make_monitor()
    prober.results["198.51.100.1"] = FAIL
    monitor.configure(zoneset(make_zone("z.test", {
        "fra": (("192.0.2.1", "2001:db8::1"), ("web", "db")),
        "iad": (("198.51.100.1",), ("web",)),
        "plain": (("203.0.113.1",), ()),
    })))
    assert await monitor.first_round() is True
    got = {site: r for _, site, _, r in table.reports}
    assert set(got) == {"fra", "iad"}  # no checks, no targets: nothing to report for "plain"
    assert got["fra"].state == "up" and got["fra"].stale_after == 90.0
    assert got["iad"].state == "down"
    assert got["iad"].error == "web 198.51.100.1: timeout after 3.0s"
    assert all(region == "local" and zone == "z.test" for zone, _, region, _ in table.reports)
    assert got["fra"].checked_at == 5000.0
    await monitor.close()


async def test_reports_on_change_and_as_heartbeat_only():
    monitor, table, prober, clock = make_monitor()
    monitor.configure(zoneset(make_zone("z.test", {"fra": (("192.0.2.1",), ("web",))})))
    await monitor.first_round()
    assert len(table.reports) == 1
    key = ("z.test", "fra", "web", "192.0.2.1")
    # a pass 1 s later: same verdict, no heartbeat due (interval 10 -> every 5 s at most)
    clock.now = monitor.schedule()[key]
    await asyncio.gather(*monitor.run_due())
    reports_before = len(table.reports)
    for _ in range(3):
        clock.now = monitor.schedule()[key]
        await asyncio.gather(*monitor.run_due())
    assert len(table.reports) - reports_before >= 2  # heartbeats: at least once per interval
    # a failure: up -> (fall 3) still up but the error is new: reported at once
    prober.results["192.0.2.1"] = FAIL
    n = len(table.reports)
    await asyncio.gather(*monitor.probe_all())
    assert len(table.reports) == n + 1
    assert table.reports[-1][3].state == "up"
    assert table.reports[-1][3].error == "web 192.0.2.1: timeout after 3.0s"
    await asyncio.gather(*monitor.probe_all())
    await asyncio.gather(*monitor.probe_all())
    assert table.reports[-1][3].state == "down"
    await monitor.close()


async def test_state_changes_are_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="gslb.health.monitor")
    monitor, _, prober, _ = make_monitor()
    monitor.configure(zoneset(make_zone("gslb.example.com", {"fra": (("192.0.2.10",), ("web",))})))
    await monitor.first_round()
    prober.results["192.0.2.10"] = FAIL
    for _ in range(3):
        await asyncio.gather(*monitor.probe_all())
    records = {r.getMessage(): r.levelno for r in caplog.records if r.name == "gslb.health.monitor"}
    assert records["health: gslb.example.com/fra web 192.0.2.10 unknown -> up (1 pass)"] == logging.DEBUG
    assert records["health: first round, region local: 1 target(s) probed, 0 down, 0 unfinished"] == logging.INFO
    assert records[("health: gslb.example.com/fra web 192.0.2.10 up -> down "
                    "(3 failures, last: timeout after 3.0s)")] == logging.INFO
    await monitor.close()


async def test_reload_keeps_unchanged_targets_and_stops_removed_ones():
    monitor, table, prober, clock = make_monitor()
    prober.results["192.0.2.1"] = FAIL
    before = make_zone("z.test", {"fra": (("192.0.2.1",), ("web",)), "iad": (("198.51.100.1",), ("web",))})
    monitor.configure(zoneset(before))
    await monitor.first_round()
    schedule = monitor.schedule()
    fra = ("z.test", "fra", "web", "192.0.2.1")
    # reload: fra unchanged, iad removed, sin new
    after = make_zone("z.test", {"fra": (("192.0.2.1",), ("web",)), "sin": (("203.0.113.1",), ("web",))})
    clock.now = 101.0
    monitor.configure(zoneset(after))
    states = {t.key: s for t, s, _ in monitor.targets()}
    assert states[fra] == TargetState("down", 0, 1)
    assert monitor.schedule()[fra] == schedule[fra]
    sin = ("z.test", "sin", "web", "203.0.113.1")
    assert states[sin] == UNKNOWN
    assert 101.0 <= monitor.schedule()[sin] < 111.0
    assert ("z.test", "iad", "web", "198.51.100.1") not in states
    prober.calls.clear()
    clock.now = 200.0
    await asyncio.gather(*monitor.run_due())
    assert sorted(prober.calls) == [("web", "192.0.2.1"), ("web", "203.0.113.1")]
    await monitor.close()


async def test_reload_with_a_changed_check_restarts_it():
    monitor, _, _, _ = make_monitor()
    monitor.configure(zoneset(make_zone("z.test", {"fra": (("192.0.2.1",), ("web",))})))
    await monitor.first_round()
    changed = Check("web", "http", 8080)
    monitor.configure(zoneset(make_zone("z.test", {"fra": (("192.0.2.1",), ("web",))}, checks=(changed,))))
    [(target, state, last)] = monitor.targets()
    assert target.check == changed and state == UNKNOWN and last is None
    await monitor.close()


async def test_reload_cancels_in_flight_probes_of_removed_targets():
    monitor, table, prober, _ = make_monitor()
    prober.gate = asyncio.Event()
    monitor.configure(zoneset(make_zone("z.test", {"fra": (("192.0.2.1",), ("web",))})))
    round_ = asyncio.create_task(monitor.first_round(timeout=5.0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert prober.in_flight == 1
    monitor.configure(zoneset())
    assert await round_ is True  # the cancelled probe counts as finished
    assert prober.in_flight == 0
    assert table.reports == []
    await monitor.close()


async def test_running_loop_probes_and_close_stops_it():
    table, prober = FakeTable(), FakeProber()
    check = Check("web", "http", 80, interval=0.02, timeout=0.01)
    monitor = Monitor(table, "local", prober=prober, rng=random.Random(1))
    monitor.configure(zoneset(make_zone("z.test", {"fra": (("192.0.2.1",), ("web",))}, checks=(check,))))
    await monitor.start()
    await eventually_async(lambda: len(prober.calls) >= 3, what="three probes")
    assert table.reports and table.reports[0][3].state == "up"
    await monitor.close()
    calls = len(prober.calls)
    # three intervals after close: no probe
    await holds_for_async(lambda: len(prober.calls) == calls, 0.06, what="no probe after close")


async def test_a_crashing_prober_counts_as_a_failure():
    async def broken(check, address, session):
        raise RuntimeError("bug")

    table = FakeTable()
    monitor = Monitor(table, "local", prober=broken, rng=random.Random(1))
    monitor.configure(zoneset(make_zone("z.test", {"fra": (("192.0.2.1",), ("web",))})))
    await monitor.first_round()
    assert table.reports[-1][3].state == "down"
    assert table.reports[-1][3].error == "web 192.0.2.1: probe error: RuntimeError"
    await monitor.close()


async def test_the_loop_logs_an_error_and_keeps_checking(monkeypatch, caplog):
    import gslb.health.monitor as monitor_module

    monkeypatch.setattr(monitor_module, "LOOP_RETRY", 0.01)
    table, prober = FakeTable(), FakeProber()
    check = Check("web", "http", 80, interval=0.02, timeout=0.01)
    monitor = Monitor(table, "local", prober=prober, rng=random.Random(1))
    monitor.configure(zoneset(make_zone("z.test", {"fra": (("192.0.2.1",), ("web",))}, checks=(check,))))
    real, failures = monitor.run_due, []

    def flaky():
        if not failures:
            failures.append(1)
            raise RuntimeError("scheduler bug")
        return real()

    monitor.run_due = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="gslb.health.monitor"):
        await monitor.start()
        await eventually_async(lambda: len(prober.calls) >= 2, what="two probes")
    assert any("scheduling failed" in r.getMessage() and r.exc_info for r in caplog.records)
    await monitor.close()


async def test_due_heap_skips_removed_targets_and_follows_reconfiguration():
    clock, table, prober = FakeClock(100.0), FakeTable(), FakeProber()
    monitor = Monitor(table, "local", clock=clock, prober=prober, rng=random.Random(3))
    both = {"fra": (("192.0.2.1",), ("web",)), "iad": (("192.0.2.2",), ("web",))}
    monitor.configure(zoneset(make_zone("z.test", both)))
    monitor.configure(zoneset(make_zone("z.test", {"iad": both["iad"]})))
    assert monitor.next_due() == min(monitor.schedule().values())
    clock.now = 200.0
    await asyncio.gather(*monitor.run_due())
    assert [address for _check, address in prober.calls] == ["192.0.2.2"]
    assert monitor.next_due() == monitor.schedule()[("z.test", "iad", "web", "192.0.2.2")] > 200.0
    await monitor.close()
