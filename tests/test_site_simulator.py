"""The site simulator: the fleet conformance suite, and its behaviour (determinism,
overload trips on the IEC curve, batteries running out, local failover)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from host.model.fleet import Done, EventKind, Fleet, Refusal, Refused
from host.model.overload import trip_time_s
from host.model.site import Feed, Priority, Rack, Site, Source, SourceKind, Tap
from host.model.sources import Alarm, SourceState
from host.sim.site.loads import LoadConfig
from host.sim.site.scenario import load_scenario
from host.sim.site.simulator import SiteSimulator
from tests.fleet_conformance import FleetConformance

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
FLAT = LoadConfig(profile="flat", utilisation=(0.5, 0.5), noise=0.0, common_noise=0.0, bursts_per_day=0.0)

# rack i of the small site is wired to WIRING[i % 4], by input
WIRING = (("ups-a", "ups-b", "bat-d"), ("ups-b", "gen-c"), ("gen-c", "ups-a", "ups-b", "bat-d"), ("ups-a", "gen-c"))


def small_site(racks: int = 12) -> Site:
    sources = (
        Source("ups-a", SourceKind.UPS, 200.0),
        Source("ups-b", SourceKind.UPS, 200.0),
        Source("gen-c", SourceKind.GENERATOR, 300.0),
        Source("bat-d", SourceKind.BATTERY, 150.0, energy_kwh=100.0),
    )
    taps, rack_list, feeds = [], [], []
    for i in range(racks):
        wiring = WIRING[i % len(WIRING)]
        taps.append(Tap(f"t{i}", len(wiring)))
        rack_list.append(Rack(f"r{i}", f"t{i}", tuple(Priority)[i % 3], 10.0))
        feeds += [Feed(f"t{i}", k + 1, source, 0.02) for k, source in enumerate(wiring)]
    return Site(sources, tuple(taps), tuple(rack_list), tuple(feeds))


def one_source_site(source: Source, racks: int, rated_kw: float, spare: bool = False) -> Site:
    """Racks on `source` (input 1), with a spare UPS on input 2 if asked."""
    sources = (source, Source("spare", SourceKind.UPS, 10_000.0)) if spare else (source, Source("other", "ups", 1.0))
    taps = tuple(Tap(f"t{i}", 2) for i in range(racks))
    rack_list = tuple(Rack(f"r{i}", f"t{i}", Priority.NORMAL, rated_kw) for i in range(racks))
    feeds = tuple(Feed(f"t{i}", k + 1, s.id, 0.01) for i in range(racks) for k, s in enumerate(sources))
    return Site(sources, taps, rack_list, feeds)


class TestSimulatorConformance(FleetConformance):
    load_tolerance_kw = 1e-9

    def make_fleet(self) -> Fleet:
        return SiteSimulator(small_site(), step_s=10.0, seed=1)

    def fail_source(self, fleet: Fleet, source_id: str) -> bool:
        assert isinstance(fleet, SiteSimulator)
        fleet.fail_source(source_id)
        return True


class TestSimulatorConformanceMidRun(FleetConformance):
    """The same rules on a scenario with real loads, half an hour in."""

    def make_fleet(self) -> Fleet:
        sim = SiteSimulator.from_scenario(load_scenario(SCENARIOS / "battery_runout.toml"))
        sim.run_until(1800.0)
        return sim

    def fail_source(self, fleet: Fleet, source_id: str) -> bool:
        assert isinstance(fleet, SiteSimulator)
        fleet.fail_source(source_id)
        return True


def _trace(sim: SiteSimulator, steps: int, read: bool) -> list[tuple[bytes, tuple[float, ...]]]:
    out = []
    for k in range(steps):
        if read and k % 7 == 0:
            sim.read_sources()
            sim.read_telemetry()
        sim.step()
        telemetry = sim.read_telemetry()
        out.append((telemetry.draw_kw.tobytes() + telemetry.active.tobytes(), tuple(sim._bank.load_kw)))
    return out


def test_same_seed_same_run_whatever_is_read_in_between() -> None:
    scenario = load_scenario(SCENARIOS / "fault_families.toml")
    one = SiteSimulator.from_scenario(scenario, step_s=300.0)
    two = SiteSimulator.from_scenario(scenario, step_s=300.0)
    assert _trace(one, 400, read=True) == _trace(two, 400, read=False)
    assert one.read_events(0, 10**6) == two.read_events(0, 10**6)
    signals = [(s.source_id, s.signals, s.state) for s in one.read_sources().values()]
    assert signals == [(s.source_id, s.signals, s.state) for s in two.read_sources().values()]


def test_another_seed_another_run() -> None:
    scenario = load_scenario(SCENARIOS / "battery_runout.toml")
    one = SiteSimulator.from_scenario(scenario)
    two = SiteSimulator.from_scenario(scenario, seed=scenario.seed + 1)
    assert _trace(one, 50, read=False) != _trace(two, 50, read=False)


@pytest.mark.parametrize(
    ("multiple", "curve", "tms", "step_s"),
    [(1.2, "standard_inverse", 1.0, 1.0), (2.0, "standard_inverse", 0.5, 0.5), (1.5, "very_inverse", 1.0, 2.0),
     (3.0, "extremely_inverse", 0.8, 0.25), (1.1, "standard_inverse", 0.1, 1.0)],
)
def test_an_overload_trips_on_the_iec_curve_within_one_step(multiple: float, curve: str, tms: float,
                                                            step_s: float) -> None:
    racks, rated = 10, 20.0
    load_kw = racks * rated * 0.5
    source = Source("ups", SourceKind.UPS, load_kw / multiple, curve=curve, tms=tms)
    sim = SiteSimulator(one_source_site(source, racks, rated), step_s=step_s, seed=0, loads=FLAT)
    expected = trip_time_s(multiple, tms, curve)
    sim.run_until(expected * 3)
    trips = [e for e in sim.read_events(0).events if e.kind == EventKind.SOURCE_TRIPPED]
    assert len(trips) == 1 and trips[0].source_id == "ups"
    assert expected <= trips[0].time_s < expected + step_s + 1e-9
    assert trips[0].value == pytest.approx(multiple)
    assert sim.read_sources()["ups"].state == SourceState.TRIPPED
    assert sim.stats().racks_unpowered == racks  # no alternates were set


def test_below_pickup_never_trips() -> None:
    source = Source("ups", SourceKind.UPS, 101.0)
    sim = SiteSimulator(one_source_site(source, 10, 20.0), step_s=60.0, loads=FLAT)
    sim.run_until(86_400.0)
    assert sim.read_sources()["ups"].state == SourceState.UP
    assert sim.read_sources()["ups"].overload_progress == 0.0


@pytest.mark.parametrize(("recharge_kw", "step_s"), [(0.0, 10.0), (20.0, 1.0), (0.0, 60.0)])
def test_a_battery_runs_out_at_energy_over_load(recharge_kw: float, step_s: float) -> None:
    battery = Source("bat", SourceKind.BATTERY, 200.0, energy_kwh=50.0, recharge_kw=recharge_kw)
    sim = SiteSimulator(one_source_site(battery, 10, 20.0), step_s=step_s, loads=FLAT)  # 100 kW
    expected = battery.runtime_s(100.0)
    assert expected == pytest.approx(50.0 / (100.0 - recharge_kw) * 3600)
    status = sim.read_sources()["bat"]
    assert status.runtime_s == pytest.approx(expected) and status.state_of_charge == 1.0
    assert Alarm.DISCHARGING in status.alarms
    sim.run_until(expected / 2)
    assert sim.read_sources()["bat"].state_of_charge == pytest.approx(0.5, abs=step_s * 2 / expected)
    sim.run_until(expected * 1.5)
    exhausted = [e for e in sim.read_events(0).events if e.kind == EventKind.SOURCE_EXHAUSTED]
    assert len(exhausted) == 1
    assert expected <= exhausted[0].time_s < expected + step_s + 1e-9
    assert sim.stats().racks_unpowered == 10


def test_an_exhausted_battery_serves_again_once_recharged() -> None:
    battery = Source("bat", SourceKind.BATTERY, 200.0, energy_kwh=10.0, recharge_kw=50.0)
    sim = SiteSimulator(one_source_site(battery, 10, 30.0), step_s=10.0, loads=FLAT)  # 150 kW
    sim.run_until(3600.0)
    kinds = [e.kind for e in sim.read_events(0).events if e.source_id == "bat" and e.rack_id is None]
    assert kinds == [EventKind.SOURCE_EXHAUSTED, EventKind.SOURCE_RESTORED]
    assert sim.read_sources()["bat"].up


def _failover_sim() -> SiteSimulator:
    sim = SiteSimulator(small_site(), step_s=10.0, seed=1, loads=FLAT)
    telemetry = sim.read_telemetry()
    assert telemetry.active_source("r0") == "ups-a" and telemetry.active_source("r3") == "ups-a"
    return sim


def test_a_lost_source_moves_its_racks_to_their_first_alternate_that_is_up() -> None:
    sim = _failover_sim()
    assert sim.set_alternates("r0", "ups-a", ["ups-b", "bat-d"]).ok  # first choice up
    assert sim.set_alternates("r4", "ups-a", ["bat-d", "ups-b"]).ok
    sim.fail_source("bat-d")  # r4's first choice is down: it takes its second
    assert sim.set_alternates("r3", "ups-a", ["gen-c"]).ok
    assert sim.set_alternates("r7", "gen-c", ["ups-a"]).ok  # r7 is on ups-a: a ranking for gen-c does not apply
    head = sim.read_events(0).head
    sim.fail_source("ups-a")
    telemetry = sim.read_telemetry()
    assert telemetry.active_source("r0") == "ups-b"
    assert telemetry.active_source("r4") == "ups-b"
    assert telemetry.active_source("r3") == "gen-c"
    on_a = [r for r in ("r8", "r11", "r7") if sim.site.reachable(r)[0] == "ups-a"]
    assert all(telemetry.active_source(r) is None for r in on_a)
    events = sim.read_events(head).events
    transfers = {(e.rack_id, e.source_id) for e in events if e.kind == EventKind.TRANSFER}
    assert transfers == {("r0", "ups-b"), ("r4", "ups-b"), ("r3", "gen-c")}
    assert {e.rack_id for e in events if e.kind == EventKind.RACK_UNPOWERED} == set(on_a)
    assert events[0].kind == EventKind.SOURCE_FAILED
    for rack in on_a:
        assert telemetry.rack(rack).draw_kw == 0.0
        assert not telemetry.rack(rack).inputs[0].present
    sim.step()
    assert sim.stats().unserved_kwh[Priority.CRITICAL] + sim.stats().unserved_kwh[Priority.NORMAL] > 0
    # the transferred racks keep no ranking for their new source; the controller sets one
    assert sim.alternates("r0").for_source == "ups-a"


def test_an_overload_trip_fails_over_too_and_can_cascade() -> None:
    a = Source("a", SourceKind.UPS, 80.0)  # 10 racks x 10 kW = 100 kW: 1.25 x pickup
    b = Source("b", SourceKind.UPS, 150.0)
    sources = (a, b)
    taps = tuple(Tap(f"t{i}", 2) for i in range(10))
    racks = tuple(Rack(f"r{i}", f"t{i}", Priority.NORMAL, 20.0) for i in range(10))
    feeds = tuple(Feed(f"t{i}", k + 1, s.id, 0.01) for i in range(10) for k, s in enumerate(sources))
    sim = SiteSimulator(Site(sources, taps, racks, feeds), step_s=1.0, loads=FLAT)
    for rack in racks:
        assert sim.set_alternates(rack.id, "a", ["b"]).ok
    sim.run_until(trip_time_s(1.25, 1.0) + 2)
    assert sim.read_sources()["a"].state == SourceState.TRIPPED
    assert sim.read_sources()["b"].load_kw == pytest.approx(100.0)
    stats = sim.stats()
    assert stats.racks_unpowered == 0 and stats.dark_rack_s == 0.0
    # a carried 1.25 x its capacity every second until it tripped; b never went above its own
    assert stats.overload_s is not None and stats.overload_s["b"] == 0.0
    assert trip_time_s(1.25, 1.0) - 1 <= stats.overload_s["a"] <= trip_time_s(1.25, 1.0) + 2
    assert stats.worst_utilisation == pytest.approx(1.25)


def test_moves_change_source_loads_at_once_and_refusals_do_not() -> None:
    sim = _failover_sim()
    before = {k: v.load_kw for k, v in sim.read_sources().items()}
    assert sim.move("r0", "ups-a", "bat-d") == Done(changed=True)
    after = {k: v.load_kw for k, v in sim.read_sources().items()}
    assert after["ups-a"] == pytest.approx(before["ups-a"] - 5.0)
    assert after["bat-d"] == pytest.approx(before["bat-d"] + 5.0)
    refused = sim.move("r0", "ups-a", "ups-b")
    assert isinstance(refused, Refused) and refused.reason == Refusal.CAS_MISMATCH and refused.actual == "bat-d"
    assert {k: v.load_kw for k, v in sim.read_sources().items()} == after


def test_opening_the_output_unpowers_the_rack_and_a_move_powers_it_again() -> None:
    sim = _failover_sim()
    assert sim.move("r0", "ups-a", None) == Done(changed=True)
    assert sim.read_telemetry().rack("r0").active_source is None
    sim.step(6)
    assert sim.stats().unserved_kwh[Priority.CRITICAL] == pytest.approx(5.0 * 60 / 3600)
    assert sim.stats().dark_rack_s == pytest.approx(6 * sim.step_s)
    assert sim.move("r0", None, "ups-b") == Done(changed=True)
    assert sim.read_telemetry().rack("r0").draw_kw == 5.0


def test_input_voltages_droop_with_load_and_path() -> None:
    sim = _failover_sim()
    reading = sim.read_telemetry().rack("r0")
    active, idle = reading.inputs[0], reading.inputs[1]
    assert active.source_id == "ups-a" and active.healthy and idle.healthy
    assert active.voltage_v < 400.0 and idle.voltage_v < 400.0
    assert reading.current_a == pytest.approx(5000 / (math.sqrt(3) * 400 * 0.95))
    sim.fail_source("ups-b")
    reading = sim.read_telemetry().rack("r0")
    assert not reading.inputs[1].present and not reading.inputs[1].healthy and reading.inputs[1].voltage_v == 0.0


def test_maintenance_sources_start_down_and_racks_start_on_a_live_input() -> None:
    site = small_site()
    sources = tuple(
        Source(s.id, s.kind, s.capacity_kw, s.energy_kwh, availability="maintenance") if s.id == "ups-a" else s
        for s in site.sources
    )
    sim = SiteSimulator(Site(sources, site.taps, site.racks, site.feeds), loads=FLAT)
    telemetry = sim.read_telemetry()
    assert telemetry.active_source("r0") == "ups-b"
    assert sim.read_sources()["ups-a"].state == SourceState.MAINTENANCE
    refused = sim.move("r0", "ups-b", "ups-a")
    assert isinstance(refused, Refused) and refused.reason == Refusal.SOURCE_UNHEALTHY


def test_scenario_events_take_effect_at_the_first_step_at_or_after_their_time() -> None:
    scenario = load_scenario(SCENARIOS / "battery_runout.toml")
    sim = SiteSimulator.from_scenario(scenario, step_s=7.0)
    sim.run_until(3700.0)
    failed = [e for e in sim.read_events(0, 10**6).events if e.kind == EventKind.SOURCE_FAILED]
    assert len(failed) == 1 and failed[0].source_id == "ups-1"
    assert 3600.0 <= failed[0].time_s < 3607.0


def test_battery_runout_scenario_with_alternates() -> None:
    scenario = load_scenario(SCENARIOS / "battery_runout.toml")
    sim = SiteSimulator.from_scenario(scenario)
    for rack in scenario.site.racks:
        active = sim.read_telemetry().active_source(rack.id)
        if active == "ups-1":
            others = [s for s in scenario.site.reachable(rack.id) if s != active]
            assert sim.set_alternates(rack.id, active, others).ok
    sim.run_until(3600.0)
    assert sim.stats().racks_unpowered == 0
    sim.step()
    on_battery = sim.read_sources()["bat-1"]
    assert on_battery.load_kw > 0 and on_battery.runtime_s is not None
    sim.run_until(scenario.duration_s)
    events = sim.read_events(0, 10**6).events
    assert any(e.kind == EventKind.TRANSFER for e in events)
    assert any(e.kind == EventKind.SOURCE_EXHAUSTED and e.source_id == "bat-1" for e in events)


def test_a_move_onto_a_source_without_room_is_refused_unless_the_policy_allows_the_overload() -> None:
    sources = (Source("a", SourceKind.UPS, 10.0), Source("b", SourceKind.UPS, 10.0))
    taps = tuple(Tap(f"t{i}", 2) for i in range(3))
    racks = tuple(Rack(f"r{i}", f"t{i}", rated_kw=10.0) for i in range(3))  # FLAT: each draws 5 kW
    wiring = (("a", "b"), ("a", "b"), ("b", "a"))
    feeds = tuple(Feed(f"t{i}", k + 1, s, 0.01) for i in range(3) for k, s in enumerate(wiring[i]))
    site = Site(sources, taps, racks, feeds)
    sim = SiteSimulator(site, step_s=1.0, loads=FLAT)  # r0 and r1 on a (10 of 10 kW), r2 on b (5)
    assert sim.move("r0", "a", "b").ok  # b: 5 + 5 of 10
    refused = sim.move("r1", "a", "b")  # 15 of 10
    assert isinstance(refused, Refused) and refused.reason == Refusal.NO_ROOM, refused
    assert sim.read_telemetry().active_source("r1") == "a", "nothing moved"
    lenient = SiteSimulator(site, step_s=1.0, loads=FLAT, overload_allowance=0.5)  # up to 15 kW
    assert lenient.move("r0", "a", "b").ok and lenient.move("r1", "a", "b").ok


def test_single_losses_weigh_what_the_taps_would_do_now() -> None:
    a, b = Source("a", SourceKind.UPS, 100.0), Source("b", SourceKind.UPS, 100.0)
    taps = tuple(Tap(f"t{i}", 2) for i in range(4))
    racks = tuple(Rack(f"r{i}", f"t{i}", Priority.NORMAL, 40.0) for i in range(4))  # 20 kW each, all on a
    feeds = tuple(Feed(f"t{i}", k + 1, s.id, 0.01) for i in range(4) for k, s in enumerate((a, b)))
    sim = SiteSimulator(Site((a, b), taps, racks, feeds), step_s=1.0, loads=FLAT)
    assert sim.single_losses()[:2] == (0, 1)  # no tap has an alternate: losing a darkens them all
    for rack in racks:
        assert sim.set_alternates(rack.id, "a", ["b"]).ok
    survivable, weighed, stranded = sim.single_losses()
    assert (survivable, weighed) == (1, 1)
    assert stranded == pytest.approx((100 - 80) + (100 - 0 - 80))  # a's spare, and b's beyond a's racks
    assert sim.single_losses(survivor_limit=0.7)[0] == 0  # b would carry 0.8 of its capacity
