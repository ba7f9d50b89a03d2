"""The model's few rules of its own: a site's load, what an HTTP status passes, the zone that holds
a name (down to the root), a wildcard's record renamed with its wire data.

Written against the survivors of mutation testing (tools/mutation model).
"""

from __future__ import annotations

import pytest

from gslb.model import Check, Record, RegionResult, SiteStatus, Soa, Zone, ZoneSet


def regions(*loads: float | None) -> SiteStatus:
    return SiteStatus(regions={f"r{i}": RegionResult("up", 0.0, load=x) for i, x in enumerate(loads)})


def test_a_sites_load_is_the_highest_any_region_reports():
    """One region that sees the site overloaded is enough: the load is the maximum, not the minimum."""
    assert regions(0.2, 0.9, 0.5).load == 0.9
    assert regions(0.9, 0.2).load == 0.9
    assert regions(None, 0.3).load == 0.3  # a region without X-Load does not count
    assert regions(None).load == 0.0
    assert SiteStatus().load == 0.0


@pytest.mark.parametrize("status, passes", [(199, False), (200, True), (204, True), (301, True), (399, True),
                                            (400, False), (503, False)])
def test_without_expect_status_200_to_399_pass(status, passes):
    assert Check("web", "http", 80).status_ok(status) is passes


def test_expect_status_is_the_list_of_passing_statuses():
    check = Check("web", "http", 80, expect_status=frozenset({200, 418}))
    assert check.status_ok(418) and check.status_ok(200)
    assert not check.status_ok(204) and not check.status_ok(301)


def zone(origin: str) -> Zone:
    soa = Soa(f"ns1.{origin}" if origin != "." else "ns1.", "hostmaster.", 1, 3600, 600, 1209600, 60, 3600)
    return Zone(origin, "z.yaml", 1, 3600, soa, (soa.mname,), {})


def test_zoneset_finds_the_longest_matching_zone_and_falls_back_to_the_root():
    root, com, example = zone("."), zone("com."), zone("example.com.")
    zones = ZoneSet({z.origin: z for z in (root, com, example)})
    assert zones.find("www.example.com.") is example
    assert zones.find("example.com.") is example
    assert zones.find("other.com.") is com
    assert zones.find("www.example.org.") is root
    assert zones.find("org.") is root
    assert zones.find(".") is root
    assert ZoneSet({"com.": com}).find("www.example.org.") is None


def test_a_renamed_record_keeps_its_data_and_wire_form():
    record = Record("*.example.com.", "A", 60, "192.0.2.1")
    copy = record.renamed("www.example.com.")
    assert (copy.name, copy.rtype, copy.ttl, copy.rdata) == ("www.example.com.", "A", 60, "192.0.2.1")
    assert copy.tail == record.tail == Record("www.example.com.", "A", 60, "192.0.2.1").tail
    assert record.name == "*.example.com."
