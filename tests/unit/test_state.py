"""The site-state table: aggregation (pure), staleness, overrides, reloads, frozen outages."""

from __future__ import annotations

import dataclasses
from typing import Callable

import pytest

from harness import eventually_async

from gslb.model import Check, Pool, RegionResult, Site, Soa, Zone, ZoneSet
from gslb.state import (
    CHANGES_KEPT,
    NEVER_DOWN,
    OVERRIDE_STATES,
    MemoryBackend,
    OutageClock,
    SiteConfig,
    SiteStateTable,
    UnknownSite,
    build_sites,
    expires_at,
    parse_override,
)

WEB = Check("web", "http", 80)


def make_zone(key: str, sites: dict[str, tuple[str, ...]], quorum: float = 0.5) -> Zone:
    """A zone whose sites have the given check names (empty: unchecked)."""
    soa = Soa("ns1." + key + ".", "h." + key + ".", 1, 3600, 600, 86400, 60, 3600)
    return Zone(
        origin=key + ".", file=f"zones/{key}.yaml", serial=1, ttl=3600, soa=soa,
        ns=("ns1." + key + ".",), nodes={},
        sites={name: Site(name, None, ("192.0.2.1",), (), checks) for name, checks in sites.items()},
        checks={"web": WEB},
        pools={"web": Pool("web", "failover", tuple(sites), quorum=quorum)},
    )


def zoneset(*zones: Zone) -> ZoneSet:
    return ZoneSet({z.origin: z for z in zones})


def up(at: float, stale: float = 30.0, **kw) -> RegionResult:
    return RegionResult("up", at, stale_after=stale, **kw)


def down(at: float, stale: float = 30.0, **kw) -> RegionResult:
    return RegionResult("down", at, stale_after=stale, **kw)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FlakyBackend(MemoryBackend):
    """A memory backend whose ``connected`` the test flips (a Redis outage); like RedisBackend it
    owns the outage clock and notes every connect and disconnect on it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__("redis://fake:6379/0")
        self.clock = clock
        self.up = True
        self.on_change: Callable[[], None] | None = None
        self._clock_value = OutageClock()

    @property
    def connected(self) -> bool:
        return self.up

    @property
    def outage(self) -> OutageClock:
        return self._clock_value

    async def start(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        if self.up:
            self._clock_value = self._clock_value.on_connect(self.clock())
        on_change()

    def flip(self, up: bool) -> None:
        self.up = up
        now = self.clock()
        self._clock_value = self._clock_value.on_connect(now) if up else self._clock_value.on_disconnect(now)
        assert self.on_change is not None
        self.on_change()


# -- pure aggregation

SITES = {("z", "a"): SiteConfig(False), ("z", "b"): SiteConfig(False), ("z", "u"): SiteConfig(True)}


def test_build_sites_quorum_of_fresh_regions():
    results = {("z", "a"): {"eu": up(100), "us": down(100)}}
    sites, next_expiry = build_sites(SITES, results, {}, now=110)
    a = sites[("z", "a")]
    assert set(a.regions) == {"eu", "us"}
    assert a.state(0.5) == "down"  # 1 of 2 is not more than half
    assert a.state(0.4) == "up"
    assert next_expiry == 130


def test_build_sites_no_result_is_unknown_and_unchecked_is_up():
    sites, next_expiry = build_sites(SITES, {}, {}, now=0)
    assert sites[("z", "b")].state(0.5) == "unknown"
    assert sites[("z", "u")].state(0.5) == "up"
    assert next_expiry is None


def test_build_sites_drops_stale_results():
    results = {("z", "a"): {"eu": down(100, stale=30), "us": up(120, stale=30)}}
    sites, next_expiry = build_sites(SITES, results, {}, now=131)
    assert set(sites[("z", "a")].regions) == {"us"}
    assert sites[("z", "a")].state(0.5) == "up"
    assert next_expiry == 150
    sites, next_expiry = build_sites(SITES, results, {}, now=150)
    assert sites[("z", "a")].state(0.5) == "unknown"
    assert next_expiry is None


def test_build_sites_overrides_beat_checks_and_unchecked():
    results = {("z", "a"): {"eu": up(100)}, ("z", "b"): {"eu": down(100)}}
    overrides = {("z", "a"): "down", ("z", "b"): "up", ("z", "u"): "drain"}
    sites, _ = build_sites(SITES, results, overrides, now=100)
    assert sites[("z", "a")].state(0.5) == "down"
    assert sites[("z", "b")].state(0.5) == "up"
    assert sites[("z", "u")].state(0.5) == "drain"


def test_build_sites_ignores_unconfigured_sites():
    results = {("z", "gone"): {"eu": up(100)}, ("other", "a"): {"eu": up(100)}}
    sites, _ = build_sites(SITES, results, {("z", "gone"): "down"}, now=100)
    assert set(sites) == set(SITES)


def test_expiry_is_pushed_by_outages_it_overlaps():
    r = down(100, stale=30)
    assert expires_at(r, ()) == 130
    assert expires_at(r, [(50, 90)]) == 130  # before the result: no effect
    assert expires_at(r, [(110, 170)]) == 190
    assert expires_at(r, [(90, 120)]) == 150  # partly before checked_at
    assert expires_at(r, [(110, 120), (125, 135)]) == 150


# -- the table

async def test_report_publishes_a_new_view_and_versions_grow():
    clock = FakeClock(1000)
    table = SiteStateTable(MemoryBackend(), clock=clock)
    table.configure(zoneset(make_zone("gslb.example.com", {"fra": ("web",), "iad": ("web",)})))
    await table.start()
    v0 = table.view
    assert v0.site("gslb.example.com", "fra").state(0.5) == "unknown"
    await table.report("gslb.example.com", "fra", "local", down(1000))
    v1 = table.view
    assert v1 is not v0 and v1.version > v0.version
    assert v1.site("gslb.example.com", "fra").state(0.5) == "down"
    assert v0.site("gslb.example.com", "fra").state(0.5) == "unknown"  # old views never change
    await table.report("gslb.example.com.", "fra", "local", up(1001))  # trailing dot accepted
    assert table.view.version > v1.version
    assert table.view.site("gslb.example.com", "fra").state(0.5) == "up"
    await table.close()


async def test_nothing_changed_keeps_the_same_view():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    await table.report("z.test", "a", "local", up(1000))
    view = table.view
    table.refresh()
    await table.report("z.test", "a", "local", up(1000))
    assert table.view is view
    await table.close()


async def test_quorum_across_regions():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    await table.report("z.test", "a", "eu-west", up(1000))
    await table.report("z.test", "a", "us-east", down(1000))
    status = table.view.site("z.test", "a")
    assert status.state(0.5) == "down"
    assert status.state(0.4) == "up"
    await table.close()


async def test_stale_results_expire_on_a_timer():
    table = SiteStateTable(MemoryBackend())  # real wall clock
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    import time
    await table.report("z.test", "a", "local", down(time.time(), stale=0.05))
    assert table.view.site("z.test", "a").state(0.5) == "down"
    version = table.view.version
    await eventually_async(lambda: table.view.version != version, what="a new view once the result is stale")
    assert table.view.site("z.test", "a").state(0.5) == "unknown"
    assert table.view.site("z.test", "a").regions == {}
    await table.close()


async def test_overrides_up_down_drain_auto():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "plain": ()})))
    await table.start()
    await table.report("z.test", "a", "local", up(1000))
    await table.set_override("z.test", "a", "down")
    assert table.view.site("z.test", "a").state(0.5) == "down"
    assert table.view.site("z.test", "a").override == "down"
    await table.set_override("z.test", "a", "drain")
    assert table.view.site("z.test", "a").state(0.5) == "drain"
    await table.set_override("z.test", "a", "auto")
    assert table.view.site("z.test", "a").override is None
    assert table.view.site("z.test", "a").state(0.5) == "up"
    # a site without checks is always up, unless overridden
    assert table.view.site("z.test", "plain").state(0.5) == "up"
    await table.set_override("z.test", "plain", "down")
    assert table.view.site("z.test", "plain").state(0.5) == "down"
    await table.close()


async def test_override_errors():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    with pytest.raises(UnknownSite, match=r"zone 'z.test' has no site 'nope' \(its sites: a\)") as info:
        await table.set_override("z.test", "nope", "down")
    assert (info.value.zone, info.value.site, info.value.zone_known, info.value.known) == \
        ("z.test", "nope", True, ("a",))
    with pytest.raises(UnknownSite, match=r"unknown zone 'other.test' \(zones: z.test\)") as info:
        await table.set_override("other.test", "a", "down")
    assert not info.value.zone_known and info.value.known == ("z.test",)
    with pytest.raises(ValueError, match="expected one of up, down, drain or auto, got 'maintenance'"):
        await table.set_override("z.test", "a", "maintenance")
    with pytest.raises(ValueError):  # the state is judged first, even for an unknown site
        await table.set_override("z.test", "nope", "maintenance")


async def test_reload_keeps_results_of_remaining_sites_and_drops_removed_zones():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    one = make_zone("one.test", {"a": ("web",), "b": ("web",)})
    two = make_zone("two.test", {"x": ("web",)})
    table.configure(zoneset(one, two))
    await table.start()
    await table.report("one.test", "a", "local", down(1000))
    await table.report("two.test", "x", "local", down(1000))
    table.configure(zoneset(make_zone("one.test", {"a": ("web",), "c": ()})))
    view = table.view
    assert view.site("one.test", "a").state(0.5) == "down"
    assert ("one.test", "b") not in view.sites
    assert ("two.test", "x") not in view.sites
    assert view.site("one.test", "c").unchecked
    # reports for sites that no longer exist are ignored
    await table.report("two.test", "x", "local", up(1000))
    assert ("two.test", "x") not in table.view.sites
    await table.close()


async def test_listeners_and_recent_changes():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "b": ("web",)})))
    await table.start()
    seen: list[tuple[int, int]] = []
    table.add_listener(lambda old, new: seen.append((old.version, new.version)))
    await table.report("z.test", "a", "local", up(1000))  # first verdict up: not a change to show
    await table.report("z.test", "a", "local", down(1001))
    await table.set_override("z.test", "a", "drain")
    await table.report("z.test", "b", "local", down(1001))  # first verdict down: shown
    assert seen and all(new > old for old, new in seen)
    changes = [(c.zone, c.site, c.old, c.new) for c in table.changes]
    assert changes == [("z.test", "a", "up", "down"), ("z.test", "a", "down", "drain"),
                       ("z.test", "b", "unknown", "down")]
    await table.close()


async def test_a_failing_listener_does_not_break_the_table():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))

    def boom(old, new):
        raise RuntimeError("boom")

    table.add_listener(boom)
    await table.start()
    await table.report("z.test", "a", "local", down(1000))
    assert table.view.site("z.test", "a").state(0.5) == "down"
    await table.close()


async def test_backend_status():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    assert table.backend_status() == {"url": "memory://", "connected": True, "errors": 0}


async def test_known_down_site_stays_down_during_an_outage_longer_than_stale_after():
    clock = FakeClock(1000)
    backend = FlakyBackend(clock)
    table = SiteStateTable(backend, clock=clock)
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "b": ("web",)})))
    await table.start()
    await table.report("z.test", "a", "eu", down(1000, stale=30))
    await table.report("z.test", "b", "eu", up(1000, stale=30))
    clock.now = 1010
    backend.flip(False)
    assert table.backend_status() == {"url": "redis://fake:6379/0", "connected": False, "errors": 0}
    clock.now = 1500  # far longer than stale_after
    table.refresh()  # as the expiry timer or a backend callback would
    assert table.view.site("z.test", "a").state(0.5) == "down"
    assert table.view.site("z.test", "b").state(0.5) == "up"
    # reconnect: 10 s of connected time had passed, 20 s remain
    backend.flip(True)
    assert table.view.site("z.test", "a").state(0.5) == "down"
    clock.now = 1519
    table.refresh()
    assert table.view.site("z.test", "a").state(0.5) == "down"
    clock.now = 1520
    table.refresh()
    assert table.view.site("z.test", "a").state(0.5) == "unknown"
    await table.close()


async def test_results_reported_during_an_outage_are_shown():
    clock = FakeClock(1000)
    backend = FlakyBackend(clock)
    table = SiteStateTable(backend, clock=clock)
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    backend.flip(False)
    clock.now = 1100
    await table.report("z.test", "a", "eu", down(1100, stale=30))
    assert table.view.site("z.test", "a").state(0.5) == "down"
    clock.now = 1200
    backend.flip(True)  # outage 1000..1200 overlaps 1100..1200: expiry 1230
    clock.now = 1229
    table.refresh()
    assert table.view.site("z.test", "a").state(0.5) == "down"
    clock.now = 1230
    table.refresh()
    assert table.view.site("z.test", "a").state(0.5) == "unknown"
    await table.close()


async def test_unreachable_at_start_is_no_outage():
    clock = FakeClock(1000)
    backend = FlakyBackend(clock)
    backend.up = False  # e.g. Redis down when the node starts
    table = SiteStateTable(backend, clock=clock)
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    assert table.view.site("z.test", "a").state(0.5) == "unknown"  # counts as up
    await table.report("z.test", "a", "eu", down(1000, stale=30))
    clock.now = 1100
    backend.flip(True)
    # a result met at the first connection is not kept longer than its own stale_after
    assert table.view.site("z.test", "a").state(0.5) == "unknown"
    await table.close()


async def test_site_state_uses_the_first_pools_quorum_and_default_for_no_pool():
    zone = make_zone("z.test", {"a": ("web",), "b": ("web",)}, quorum=0.0)
    zone = dataclasses.replace(zone, pools={"web": Pool("web", "failover", ("a",), quorum=0.0)})
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(zone))
    await table.start()
    for site in ("a", "b"):
        await table.report("z.test", site, "eu", up(1000))
        await table.report("z.test", site, "us", down(1000))
    status, state = table.site_state("z.test.", "a")
    assert set(status.regions) == {"eu", "us"} and state == "up"  # quorum 0.0: 1 of 2 is enough
    assert table.site_state("z.test", "b")[1] == "down"  # in no pool: DEFAULT_QUORUM 0.5
    assert table.site_state("z.test", "nowhere")[1] == "unknown"
    await table.close()


class UnreadableBackend(MemoryBackend):
    """A memory backend whose reads fail when ``broken`` is set."""

    broken = False

    def results(self):
        if self.broken:
            raise ConnectionError("unreadable")
        return super().results()


async def test_configure_publishes_new_sites_even_when_the_backend_cannot_be_read():
    backend = UnreadableBackend()
    table = SiteStateTable(backend, clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    await table.report("z.test", "a", "local", down(1000))
    backend.broken = True
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "lab": ()})))
    assert table.site_state("z.test", "lab") == (table.view.site("z.test", "lab"), "up")
    assert table.view.site("z.test", "lab").unchecked
    assert table.site_state("z.test", "a")[1] == "down"  # last known data kept
    await table.close()


async def test_a_result_rebuilds_its_site_only_and_versions_grow_on_real_changes():
    table = SiteStateTable(MemoryBackend(), clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "b": ("web",)})))
    await table.start()
    await table.report("z.test", "b", "local", up(1000))
    b = table.view.sites[("z.test", "b")]
    version = table.view.version
    await table.report("z.test", "a", "local", down(1000))
    assert table.view.version == version + 1
    assert table.view.sites[("z.test", "b")] is b  # untouched
    await table.report("z.test", "a", "local", down(1000))
    assert table.view.version == version + 1  # the same result again: no new view
    await table.close()


# -- the outage clock (pure: every time is passed in)

def test_outage_before_the_first_connection_is_no_outage():
    clock = OutageClock()
    assert clock.on_disconnect(100) == clock  # never connected: nothing to freeze
    assert not clock.frozen and clock.judged_at(150) == 150
    clock = clock.on_connect(200)
    assert clock == OutageClock(ever_connected=True) and clock.outages == ()
    r = down(100, stale=30)
    assert clock.expires_at(r, 200) == 130  # the time before the first connection counted


def test_outage_during_a_connection_freezes_then_is_completed():
    clock = OutageClock().on_connect(0).on_disconnect(1010)
    assert clock.frozen and clock.down_since == 1010
    assert clock.on_disconnect(1020) is clock  # already down: the outage keeps its start
    assert clock.judged_at(1500) == 1010
    r = down(1000, stale=30)
    assert clock.expires_at(r, 1500) == 1520  # the running outage counted up to now
    assert clock.outages == ()
    clock = clock.on_connect(1500)
    assert not clock.frozen and clock.outages == ((1010, 1500),)
    assert clock.judged_at(1600) == 1600
    assert clock.expires_at(r, 1600) == 1520
    assert clock.on_connect(1700) is clock  # connected twice: nothing new


def test_staleness_is_frozen_during_an_outage_and_counts_again_after():
    sites = {("z", "a"): SiteConfig(False)}
    results = {("z", "a"): {"eu": down(1000, stale=30)}}
    clock = OutageClock().on_connect(900).on_disconnect(1010)

    def verdict(now: float) -> str:
        built, _ = build_sites(sites, results, {}, clock.judged_at(now), clock.outages)
        return built[("z", "a")].state(0.5)

    assert verdict(1010) == "down"
    assert verdict(5000) == "down"  # frozen: far past stale_after, still known down
    clock = clock.on_connect(5000)  # 10 s counted before the outage, 20 s remain
    assert verdict(5019.9) == "down"
    assert verdict(5020) == "unknown"
    _, next_expiry = build_sites(sites, results, {}, clock.judged_at(5000), clock.outages)
    assert next_expiry == 5020  # the table's timer fires at the pushed expiry


def test_a_result_checked_during_an_outage_is_pushed_by_the_rest_of_it():
    clock = OutageClock().on_connect(0).on_disconnect(1000).on_connect(1200)
    assert clock.expires_at(down(1100, stale=30), 1300) == 1230
    assert clock.expires_at(down(1300, stale=30), 1300) == 1330  # checked after: no push


def test_pruning_forgets_outages_no_result_was_checked_before():
    clock = OutageClock(True, None, ((100, 200), (300, 400)))
    both = {("z", "a"): {"eu": down(150), "us": up(500)}}
    assert clock.pruned(both) is clock  # the result of 150 is still pushed by both
    later = {("z", "a"): {"eu": down(250)}}
    assert clock.pruned(later).outages == ((300, 400),)
    assert clock.pruned({("z", "a"): {"eu": down(400)}}).outages == ()  # ended as it was checked
    assert clock.pruned({}).outages == ()  # no results: nothing to push
    assert clock.pruned({("z", "a"): {}}).outages == ()
    running = OutageClock(True, 500, ((100, 200),))
    assert running.pruned({}) == OutageClock(True, 500, ())  # the running outage stays


def test_memory_backend_is_never_down():
    assert MemoryBackend().outage is NEVER_DOWN
    assert not NEVER_DOWN.frozen and NEVER_DOWN.on_disconnect(5).frozen  # a real clock would


# -- one validator, one error with words

def test_parse_override_is_the_one_validator():
    assert [parse_override(s) for s in OVERRIDE_STATES] == ["up", "down", "drain", None]
    assert parse_override(None, removal=None) is None
    assert parse_override("drain", removal=None) == "drain"
    for bad, removal, words in [("maintenance", "auto", "up, down, drain or auto, got 'maintenance'"),
                                (None, "auto", "got None"), (["up"], "auto", "got ['up']"),
                                ("auto", None, "up, down, drain or null, got 'auto'"), (1, None, "got 1"),
                                ("UP", "auto", "got 'UP'")]:
        with pytest.raises(ValueError, match=r"^state: expected one of ") as info:
            parse_override(bad, removal=removal)
        assert str(info.value).endswith(words)


async def test_memory_backend_validates_overrides_too():
    with pytest.raises(ValueError, match="or null"):
        await MemoryBackend().put_override(("z", "a"), "auto")  # type: ignore[arg-type]  # the wrong value on purpose


def test_unknown_site_lists_at_most_twenty_names():
    keys = [("z", f"s{i:02}") for i in range(25)]
    err = UnknownSite("z", "nope", keys)
    assert str(err).endswith("s19 and 5 more)") and len(err.known) == 25
    assert str(UnknownSite("z", "a", [])) == "unknown zone 'z' (zones: none)"
    assert isinstance(err, LookupError)


def test_the_table_keeps_more_changes_than_the_status_api_lists():
    from gslb.http_api import STATUS_CHANGES_LISTED

    assert SiteStateTable(MemoryBackend()).changes.maxlen == CHANGES_KEPT > STATUS_CHANGES_LISTED


# -- results are held once: by the backend

async def test_the_table_reads_the_backends_results_and_holds_no_copy():
    clock = FakeClock(1000)
    backend = MemoryBackend()
    table = SiteStateTable(backend, clock=clock)
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    await table.report("z.test", "a", "eu", down(1000))
    assert backend.results() == {("z.test", "a"): {"eu": down(1000)}}
    assert not any(isinstance(v, dict) and v and isinstance(next(iter(v.values())), dict)
                   for v in vars(table).values())  # no mapping of results beside the backend's
    # the view is a derived snapshot: a later write to the backend does not change it
    view = table.view
    await backend.put_result(("z.test", "a"), "us", up(1000))
    assert set(view.site("z.test", "a").regions) == {"eu"}
    table.refresh()
    assert set(table.view.site("z.test", "a").regions) == {"eu", "us"}
# -- written against the survivors of mutation testing (tools/mutation state)


async def test_overrides_are_stored_in_the_backend_and_auto_removes_them():
    """The backend holds the overrides (shared and durable in cluster mode), not only this table."""
    backend = MemoryBackend()
    table = SiteStateTable(backend, clock=FakeClock(1000))
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "b": ("web",)})))
    await table.start()
    await table.set_override("z.test", "b", "auto")  # no override yet: nothing to remove, no error
    assert backend.overrides() == {}
    await table.set_override("z.test.", "a", "drain")
    assert backend.overrides() == {("z.test", "a"): "drain"}
    await table.set_override("z.test", "a", "auto")
    assert backend.overrides() == {}
    assert table.view.site("z.test", "a").override is None
    await table.close()


async def test_one_rebuild_records_every_site_that_changed_with_its_time():
    clock = FakeClock(1000)
    table = SiteStateTable(MemoryBackend(), clock=clock)
    table.configure(zoneset(make_zone("z.test", {"a": ("web",), "b": ("web",), "c": ("web",)})))
    await table.start()
    await table.report("z.test", "a", "local", up(1000, stale=100))
    await table.report("z.test", "b", "local", down(1000))
    await table.report("z.test", "c", "local", down(1000))
    table.changes.clear()
    version = table.view.version
    clock.now = 1031  # b and c turn stale together; a stays up (the first site: unchanged)
    table.configure(zoneset(make_zone("z.test", {"new": ("web",), "a": ("web",), "b": ("web",),
                                                  "c": ("web",)})))
    assert [(c.at, c.site, c.old, c.new) for c in table.changes] == [
        (1031, "b", "down", "unknown"), (1031, "c", "down", "unknown")]
    assert table.view.version > version
    await table.close()


async def test_results_read_from_the_backend_expire_on_a_timer_too():
    """A whole rebuild (start, another node's results) arms the expiry timer, not only a report."""
    import time
    backend = MemoryBackend()
    await backend.put_result(("z.test", "a"), "elsewhere", down(time.time(), stale=0.05))
    table = SiteStateTable(backend)  # real wall clock
    table.configure(zoneset(make_zone("z.test", {"a": ("web",)})))
    await table.start()
    assert table.view.site("z.test", "a").state(0.5) == "down"
    version = table.view.version
    await eventually_async(lambda: table.view.version > version, what="a new view once the result is stale")
    assert table.view.site("z.test", "a").state(0.5) == "unknown"
    await table.close()
