"""The site model: validation names the item and the field; lookups; battery runtime;
the IEC overload element; the event log."""

from __future__ import annotations

import math

import numpy as np
import pytest

from host.model.events import EventLog
from host.model.fleet import EventKind
from host.model.overload import advance, trip_time_s
from host.model.site import Feed, Priority, Rack, Site, SiteError, Source, SourceKind, Tap


def _problems(build: object) -> tuple[str, ...]:
    assert callable(build)
    with pytest.raises(SiteError) as caught:
        build()
    return caught.value.problems


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: Source("u1", SourceKind.UPS, -5.0), "source 'u1': capacity_kw must be > 0 (got -5)"),
        (lambda: Source("u1", "fuel cell", 5.0), "source 'u1': kind must be one of ups, battery, generator"),
        (lambda: Source("b1", SourceKind.BATTERY, 5.0), "source 'b1': energy_kwh must be a finite number (got None)"),
        (lambda: Source("g1", SourceKind.GENERATOR, 5.0, energy_kwh=3.0), "source 'g1': energy_kwh is for batteries"),
        (lambda: Source("u1", SourceKind.UPS, 5.0, curve="slow"), "source 'u1': curve must be one of"),
        (lambda: Source("u1", SourceKind.UPS, math.nan), "source 'u1': capacity_kw must be a finite number"),
        (lambda: Source("", SourceKind.UPS, 5.0), "source '': id must be a non-empty string"),
        (lambda: Tap("t1", 5), "tap 't1': n_inputs must be an integer 2 to 4 (got 5)"),
        (lambda: Rack("r1", "t1", "vip"), "rack 'r1': priority must be one of critical, normal, deferrable"),
        (lambda: Rack("r1", "t1", rated_kw=0), "rack 'r1': rated_kw must be > 0 (got 0)"),
        (lambda: Feed("t1", 0, "u1", 0.1), "feed 't1' input 0: input must be an integer 1 to 4"),
        (lambda: Feed("t1", 1, "u1", -0.1), "feed 't1' input 1: impedance_ohm must be >= 0 (got -0.1)"),
    ],
)
def test_an_item_names_itself_and_the_field(build: object, expected: str) -> None:
    problems = _problems(build)
    assert any(p.startswith(expected) for p in problems), problems


def test_strings_become_enums() -> None:
    source = Source("b", "battery", 10.0, energy_kwh=5.0, availability="maintenance")
    assert source.kind is SourceKind.BATTERY and source.availability.value == "maintenance"
    assert Rack("r", "t", "critical").priority is Priority.CRITICAL


def _site(**changes: object) -> Site:
    parts: dict[str, object] = {
        "sources": (Source("a", SourceKind.UPS, 10.0), Source("b", SourceKind.UPS, 10.0)),
        "taps": (Tap("t1", 2), Tap("t2", 2)),
        "racks": (Rack("r1", "t1"), Rack("r2", "t2")),
        "feeds": (Feed("t1", 1, "a", 0.1), Feed("t1", 2, "b", 0.1), Feed("t2", 2, "a", 0.1), Feed("t2", 1, "b", 0.2)),
    }
    parts.update(changes)
    return Site(**parts)  # type: ignore[arg-type]


def test_a_site_reports_every_cross_reference_problem_at_once() -> None:
    problems = _problems(lambda: _site(
        racks=(Rack("r1", "t1"), Rack("r2", "t9"), Rack("r3", "t1"), Rack("r1", "t2")),
        feeds=(Feed("t1", 1, "a", 0.1), Feed("t1", 2, "a", 0.1), Feed("t2", 1, "zz", 0.1), Feed("t2", 3, "b", 0.1),
               Feed("t8", 1, "a", 0.1)),
    ))
    expected = [
        "rack 'r1': id is used twice",
        "rack 'r2': tap_id 't9' is not a tap of the site",
        "rack 'r3': tap_id 't1' already serves rack 'r1'",
        "feed 't1' input 2: source_id 'a' is already wired to another input",
        "feed 't2' input 1: source_id 'zz' is not a source of the site",
        "feed 't2' input 3: input must be at most the tap's n_inputs 2",
        "feed 't8' input 1: tap_id 't8' is not a tap of the site",
        "tap 't2': inputs [2] have no feed",
    ]
    for line in expected:
        assert line in problems, (line, problems)


def test_a_site_without_sources_is_refused() -> None:
    assert "site 'site': sources must not be empty" in _problems(lambda: Site((), (), (), ()))


def test_lookups_by_id_and_input_order() -> None:
    site = _site()
    assert site.reachable("r2") == ("b", "a")
    assert [f.input for f in site.feeds_of("r2")] == [1, 2]
    assert site.source("b").capacity_kw == 10.0 and site.rack("r2").tap_id == "t2"
    assert site.tap_of("r1").n_inputs == 2 and site.max_inputs == 2
    with pytest.raises(KeyError):
        site.rack("nope")


def test_battery_runtime() -> None:
    battery = Source("b", SourceKind.BATTERY, 100.0, energy_kwh=50.0, recharge_kw=10.0)
    assert battery.runtime_s(60.0) == pytest.approx(3600.0)
    assert battery.runtime_s(60.0, stored_kwh=25.0) == pytest.approx(1800.0)
    assert battery.runtime_s(5.0) == math.inf
    assert Source("u", SourceKind.UPS, 100.0).runtime_s(60.0) == math.inf


def test_iec_formula() -> None:
    assert trip_time_s(2.0, 1.0) == pytest.approx(0.14 / (2**0.02 - 1))
    assert trip_time_s(2.0, 0.5, "very_inverse") == pytest.approx(0.5 * 13.5)
    assert trip_time_s(3.0, 1.0, "extremely_inverse") == pytest.approx(10.0)
    assert trip_time_s(1.0, 1.0) == math.inf


def test_overload_integral_holds_between_dropoff_and_pickup_and_resets_below() -> None:
    one = np.ones(3)
    progress = np.array([0.5, 0.5, 0.5])
    after = advance(progress, np.array([0.97, 0.90, 2.0]), one, one * 0.14, one * 0.02, 1.0)
    assert after[0] == 0.5  # held
    assert after[1] == 0.0  # reset
    assert after[2] == pytest.approx(0.5 + 1.0 / trip_time_s(2.0, 1.0))


def test_event_log_numbers_pages_and_drops_the_oldest() -> None:
    log = EventLog(capacity=4)
    for i in range(10):
        log.append(float(i), EventKind.MOVED, rack_id=f"r{i}")
    assert log.head == 10
    page = log.read(0)
    assert page.first > 0 and page.events[0].index == page.first  # the host learns how many it lost
    assert [e.index for e in page.events] == list(range(page.first, 10))
    assert [e.index for e in log.read(8, max_count=1).events] == [8]
    assert log.read(10).events == () and log.read(99).first == 10
