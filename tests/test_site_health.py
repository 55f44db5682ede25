"""Health signals of the simulated sources and the scenario families: each family
shows in the signals as docs/scenarios.md says. Effects are measured against a twin
run without the condition: the same seed gives the same noise, so the difference is
the effect alone."""

from __future__ import annotations

import math

import pytest

from host.model.fleet import EventKind, HealthSignals
from host.model.sources import SourceState
from host.sim.site.conditions import Condition, Family
from host.sim.site.scenario import Scenario, parse_scenario
from host.sim.site.simulator import SiteSimulator

SITE = """\
[scenario]
seed = 21
step_s = 300

[loads]
profile = "flat"
noise = 0
common_noise = 0
bursts_per_day = 0
utilisation = [0.5, 0.5]

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 200

[[sources]]
id = "gen-1"
kind = "generator"
capacity_kw = 200

[[sources]]
id = "bat-1"
kind = "battery"
capacity_kw = 200
energy_kwh = 100
recharge_kw = 20

[[racks]]
group = "row"
count = 20
primary = ["ups-1", "gen-1"]
rated_kw = [10, 10]
inputs = 3
"""
DAY = 86_400.0


def _scenario() -> Scenario:
    return parse_scenario(SITE)


def _signals(conditions: tuple[Condition, ...], t: float, source: str) -> HealthSignals | None:
    sim = SiteSimulator.from_scenario(_scenario(), conditions=conditions)
    sim.run_until(t)
    return sim.read_sources()[source].signals


def _effect(condition: Condition, t: float, field: str) -> float:
    """The condition's effect on one signal of its source at t."""
    assert condition.source is not None
    with_it, without = _signals((condition,), t, condition.source), _signals((), t, condition.source)
    assert with_it is not None and without is not None
    return float(getattr(with_it, field)) - float(getattr(without, field))


def test_healthy_baselines_by_kind() -> None:
    sim = SiteSimulator.from_scenario(_scenario())
    sim.run_until(DAY)
    sources = sim.read_sources()
    ups, gen, bat = (sources[s].signals for s in ("ups-1", "gen-1", "bat-1"))
    assert ups is not None and gen is not None and bat is not None
    assert 25 < (ups.temperature_c or 0) < 45 and 60 < (gen.temperature_c or 0) < 95
    assert bat.vibration_rms_mg is None and bat.kurtosis is None  # a battery string has no vibration sensor
    assert gen.ripple_pct is None  # an AC machine has no DC bus
    assert ups.kurtosis == pytest.approx(3.0, abs=0.5) and gen.vibration_rms_mg == pytest.approx(310, rel=0.2)


def test_temperature_follows_load_with_lag() -> None:
    sim = SiteSimulator.from_scenario(_scenario())
    sim.run_until(DAY)
    loaded = sim.read_sources()["ups-1"].signals
    for rack in sim.site.racks:
        if sim.read_telemetry().active_source(rack.id) == "ups-1":
            assert sim.move(rack.id, "ups-1", "gen-1").ok
    sim.step()
    just_after = sim.read_sources()["ups-1"].signals
    sim.run_until(DAY + 4 * 3600)
    later = sim.read_sources()["ups-1"].signals
    assert loaded is not None and just_after is not None and later is not None
    assert (loaded.temperature_c or 0) - (later.temperature_c or 0) > 3.0  # cooled once unloaded
    assert abs((loaded.temperature_c or 0) - (just_after.temperature_c or 0)) < 2.0  # but not at once


def test_thermal_drift_rises_linearly_and_ends_in_failure() -> None:
    drift = Condition(Family.THERMAL_DRIFT, "ups-1", start_s=DAY, end_s=3 * DAY, magnitude=20.0)
    assert _effect(drift, 0.5 * DAY, "temperature_c") == pytest.approx(0.0)
    assert _effect(drift, 2 * DAY, "temperature_c") == pytest.approx(10.0)
    sim = SiteSimulator.from_scenario(_scenario(), conditions=(drift,))
    sim.run_until(3 * DAY + 1)
    assert sim.read_sources()["ups-1"].state == SourceState.FAILED
    failed = [e for e in sim.read_events(0).events if e.kind == EventKind.SOURCE_FAILED]
    assert [(e.source_id, e.time_s) for e in failed] == [("ups-1", 3 * DAY)]


def test_bearing_wear_shows_in_kurtosis_before_rms() -> None:
    wear = Condition(Family.BEARING_WEAR, "gen-1", start_s=0.0, end_s=10 * DAY)
    early_kurtosis = _effect(wear, 3 * DAY, "kurtosis")
    early_rms = _effect(wear, 3 * DAY, "vibration_rms_mg")
    late_rms = _effect(wear, 9 * DAY, "vibration_rms_mg")
    assert early_kurtosis > 2.0 and _effect(wear, 3 * DAY, "crest_factor") > 1.0
    assert early_rms < 0.4 * 310 < late_rms


def test_capacitor_ageing_raises_ripple_then_thd() -> None:
    ageing = Condition(Family.CAPACITOR_AGEING, "ups-1", start_s=0.0, end_s=10 * DAY, fails=False)
    base = _signals((), 5 * DAY, "ups-1")
    assert base is not None and base.ripple_pct is not None
    assert _effect(ageing, 5 * DAY, "ripple_pct") == pytest.approx(2.0 * base.ripple_pct, rel=0.01)
    assert _effect(ageing, 5 * DAY, "thd_pct") == pytest.approx(1.0)
    assert ageing.failure_s is None


def test_battery_ageing_shortens_runtime() -> None:
    ageing = Condition(Family.BATTERY_AGEING, "bat-1", start_s=0.0, end_s=DAY, magnitude=0.5)
    sim = SiteSimulator.from_scenario(_scenario(), conditions=(ageing,))
    sim.run_until(DAY)
    for rack in sim.site.racks[:10]:  # 10 racks x 5 kW = 50 kW onto the battery
        assert sim.move(rack.id, sim.read_telemetry().active_source(rack.id), "bat-1").ok
    sim.step()
    status = sim.read_sources()["bat-1"]
    assert status.runtime_s == pytest.approx(0.5 * 100 / (50 - 20) * 3600, rel=0.05)


def test_hot_afternoon_warms_every_source_and_passes() -> None:
    hot = Condition(Family.HOT_AFTERNOON, None, start_s=DAY + 12 * 3600, end_s=DAY + 18 * 3600, magnitude=8.0)
    for source in ("ups-1", "gen-1", "bat-1"):
        with_it = _signals((hot,), DAY + 15 * 3600, source)
        without = _signals((), DAY + 15 * 3600, source)
        assert with_it is not None and without is not None
        assert (with_it.temperature_c or 0) - (without.temperature_c or 0) == pytest.approx(8.0)
    assert _signals((hot,), DAY + 20 * 3600, "ups-1") == _signals((), DAY + 20 * 3600, "ups-1")
    assert hot.failure_s is None


def test_sensor_dropout_gives_none_then_readings_again() -> None:
    dropout = Condition(Family.SENSOR_DROPOUT, "ups-1", start_s=DAY, end_s=DAY + 3600, signal="temperature_c")
    during = _signals((dropout,), DAY + 1800, "ups-1")
    after = _signals((dropout,), DAY + 3600, "ups-1")
    assert during is not None and during.temperature_c is None and during.thd_pct is not None
    assert after is not None and after.temperature_c is not None
    everything = Condition(Family.SENSOR_DROPOUT, "ups-1", start_s=DAY, end_s=DAY + 3600, signal="all")
    assert _signals((everything,), DAY + 1800, "ups-1") == HealthSignals(None, None, None, None, None, None)


def test_recalibration_jump_is_a_step_that_stays() -> None:
    jump = Condition(Family.RECALIBRATION_JUMP, "gen-1", start_s=DAY, signal="vibration_rms_mg", magnitude=30.0)
    assert _effect(jump, DAY - 300, "vibration_rms_mg") == pytest.approx(0.0)
    assert _effect(jump, DAY + 300, "vibration_rms_mg") == pytest.approx(30.0)
    assert _effect(jump, 5 * DAY, "vibration_rms_mg") == pytest.approx(30.0)


def test_maintenance_test_discharges_the_battery_and_it_recharges() -> None:
    test = Condition(Family.MAINTENANCE_TEST, "bat-1", start_s=3600.0, end_s=5400.0, magnitude=100.0)
    sim = SiteSimulator.from_scenario(_scenario(), conditions=(test,))
    sim.run_until(3600.0)
    assert sim.read_sources()["bat-1"].load_kw == pytest.approx(100.0)
    sim.run_until(5400.0)
    soc = sim.read_sources()["bat-1"].state_of_charge
    assert soc == pytest.approx(1 - (100 - 20) * 0.5 / 100, abs=0.01)
    assert sim.read_sources()["bat-1"].load_kw == 0.0
    sim.run_until(5 * 3600.0)
    after = sim.read_sources()["bat-1"]
    assert after.up and after.state_of_charge == pytest.approx(1.0)
    assert sim.stats().racks_unpowered == 0


def test_sudden_failure_has_no_precursor() -> None:
    sudden = Condition(Family.SUDDEN_FAILURE, "ups-1", start_s=2 * DAY)
    before = _signals((sudden,), 2 * DAY - 300, "ups-1")
    assert before == _signals((), 2 * DAY - 300, "ups-1")
    sim = SiteSimulator.from_scenario(_scenario(), conditions=(sudden,))
    sim.run_until(2 * DAY)
    assert sim.read_sources()["ups-1"].state == SourceState.FAILED


def test_every_signal_is_a_finite_number_or_none() -> None:
    sim = SiteSimulator.from_scenario(_scenario())
    for _ in range(20):
        sim.step(7)
        for status in sim.read_sources().values():
            assert status.signals is not None
            for value in vars(status.signals).values():
                assert value is None or math.isfinite(value)


def test_a_condition_at_time_zero_takes_effect_at_once() -> None:
    test = Condition(Family.MAINTENANCE_TEST, "bat-1", start_s=0.0, end_s=600.0, magnitude=40.0)
    sim = SiteSimulator.from_scenario(_scenario(), conditions=(test,))
    assert sim.read_sources()["bat-1"].load_kw == pytest.approx(40.0)
