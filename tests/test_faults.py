"""Fault prediction (host/predict/faults.py) on small simulated sites: each degrading family is
flagged before its source fails, by the signal that family shows in first; the benign
confounders stay below the alarm level; a sudden failure is not predicted (no precursor),
and is reported apart. Also the pieces: the robust baseline fit and the trend test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from host.model.fleet import HealthSignals
from host.predict.faults import SIGNALS, FaultAssessment, FaultConfig, FaultPredictor, huber_fit, rising_trend
from host.sim.site.conditions import Condition, Family
from host.sim.site.scenario import LoadStep, parse_scenario
from host.sim.site.simulator import SiteSimulator

DAY = 86_400.0
SITE = """\
[scenario]
seed = 5
step_s = 600

[loads]
utilisation = [0.4, 0.7]

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 150

[[sources]]
id = "gen-1"
kind = "generator"
capacity_kw = 150

[[sources]]
id = "bat-1"
kind = "battery"
capacity_kw = 300
energy_kwh = 300
recharge_kw = 30

[[racks]]
group = "row"
count = 20
primary = ["ups-1", "gen-1"]
rated_kw = [5, 15]
inputs = 3
"""


def _run(
    conditions: tuple[Condition, ...], until_s: float, load_steps: tuple[LoadStep, ...] = ()
) -> dict[str, list[FaultAssessment]]:
    """Every source's assessments, one per step, up to until_s (or until it fails)."""
    scenario = parse_scenario(SITE)
    sim = SiteSimulator.from_scenario(scenario, conditions=conditions, load_steps=load_steps or scenario.load_steps)
    predictors = {source.id: FaultPredictor() for source in scenario.site.sources}
    out: dict[str, list[FaultAssessment]] = {name: [] for name in predictors}
    while sim.time_s < until_s:
        sim.step()
        for name, status in sim.read_sources().items():
            if status.up:
                load_fraction = status.load_kw / status.capacity_kw
                out[name].append(predictors[name].update(status.time_s, status.signals, load_fraction))
    return out


def _first_alarm(assessments: list[FaultAssessment]) -> FaultAssessment | None:
    return next((a for a in assessments if a.alarm), None)


def _peak(assessments: list[FaultAssessment]) -> float:
    return max(a.probability for a in assessments)


# -- degrading families: flagged before the failure, by the right signal ------------------

DEGRADING = (
    Condition(Family.THERMAL_DRIFT, "ups-1", start_s=2 * DAY, end_s=9 * DAY),
    Condition(Family.BEARING_WEAR, "gen-1", start_s=2 * DAY, end_s=10 * DAY),
    Condition(Family.BATTERY_AGEING, "bat-1", start_s=2 * DAY, end_s=10 * DAY),
)
CAPACITORS = (
    Condition(Family.CAPACITOR_AGEING, "ups-1", start_s=2 * DAY, end_s=10 * DAY),
    Condition(Family.CAPACITOR_AGEING, "bat-1", start_s=2 * DAY, end_s=10 * DAY),
    Condition(Family.SUDDEN_FAILURE, "gen-1", start_s=5 * DAY),
)
# the signals each family shows in first (docs/scenarios.md); bearing wear: the impacts, before the RMS
DRIVERS = {
    Family.THERMAL_DRIFT: {"temperature_c"},
    Family.BEARING_WEAR: {"kurtosis", "crest_factor"},
    Family.CAPACITOR_AGEING: {"ripple_pct", "thd_pct"},  # ripple crosses first, THD's trend is the clearer
    Family.BATTERY_AGEING: {"ripple_pct"},
}
MIN_LEAD_S = 2 * DAY  # the default horizon


@pytest.fixture(scope="module")
def degrading() -> dict[str, list[FaultAssessment]]:
    return _run(DEGRADING, 10 * DAY)


@pytest.fixture(scope="module")
def capacitors() -> dict[str, list[FaultAssessment]]:
    return _run(CAPACITORS, 10 * DAY)


def _check_flagged(runs: dict[str, list[FaultAssessment]], condition: Condition) -> None:
    assert condition.source is not None and condition.end_s is not None
    assessments = runs[condition.source]
    first = _first_alarm(assessments)
    assert first is not None, f"{condition.family} on {condition.source} never flagged"
    assert first.time_s > condition.start_s, "alarm before the condition started: a false alarm"
    deadline = condition.failure_s if condition.failure_s is not None else condition.end_s
    assert deadline - first.time_s >= MIN_LEAD_S, f"lead time {(deadline - first.time_s) / DAY:.1f} days"
    assert first.driver in DRIVERS[condition.family]
    assert math.isfinite(first.time_to_threshold_s)  # flagged on a trend (or its level), not on a z-score alone
    # once flagged, it stays flagged (the degradation goes on)
    later = [a for a in assessments if a.time_s >= first.time_s + DAY]
    assert later and all(a.alarm for a in later)


@pytest.mark.parametrize("condition", DEGRADING, ids=lambda c: str(c.family))
def test_degrading_family_is_flagged_ahead_by_its_signal(
    degrading: dict[str, list[FaultAssessment]], condition: Condition
) -> None:
    _check_flagged(degrading, condition)


@pytest.mark.parametrize("condition", CAPACITORS[:2], ids=lambda c: f"capacitor_ageing-{c.source}")
def test_capacitor_ageing_is_flagged_ahead(
    capacitors: dict[str, list[FaultAssessment]], condition: Condition
) -> None:
    _check_flagged(capacitors, condition)


def test_the_ramp_is_seen_as_a_trend_before_the_threshold(degrading: dict[str, list[FaultAssessment]]) -> None:
    """The thermal drift is flagged by its trend, while still well under its threshold."""
    first = _first_alarm(degrading["ups-1"])
    assert first is not None
    temperature = next(s for s in first.signals if s.signal == "temperature_c")
    assert temperature.slope_per_s > 0 and 0 < temperature.time_to_threshold_s < 3 * DAY
    assert temperature.level < 0.5 * temperature.threshold


def test_sudden_failure_is_not_predicted(capacitors: dict[str, list[FaultAssessment]]) -> None:
    """No precursor, so no alarm: a miss by design, to be counted apart from the predictable families."""
    gen = capacitors["gen-1"]
    assert gen and gen[-1].time_s <= 5 * DAY + 600  # it did fail then (no assessments while down)
    assert _first_alarm(gen) is None and _peak(gen) < 0.1


def test_no_false_alarm_before_the_onsets(
    degrading: dict[str, list[FaultAssessment]], capacitors: dict[str, list[FaultAssessment]]
) -> None:
    for runs in (degrading, capacitors):
        for assessments in runs.values():
            before = [a for a in assessments if a.time_s <= 2 * DAY]
            assert before and all(a.ready for a in before if a.time_s > 1.1 * DAY)
            assert max(a.probability for a in before) < 0.05


# -- benign confounders: no alarm -----------------------------------------------------------

HOT = Condition(Family.HOT_AFTERNOON, None, start_s=3 * DAY + 12 * 3600, end_s=3 * DAY + 19 * 3600)
BENIGN = (
    HOT,
    Condition(Family.SENSOR_DROPOUT, "ups-1", start_s=2 * DAY, end_s=2.5 * DAY, signal="all"),
    Condition(Family.RECALIBRATION_JUMP, "ups-1", start_s=2.6 * DAY, signal="temperature_c", magnitude=3.0),
    Condition(Family.RECALIBRATION_JUMP, "gen-1", start_s=2.2 * DAY, signal="kurtosis", magnitude=1.0),
    Condition(Family.MAINTENANCE_TEST, "bat-1", start_s=4.5 * DAY, end_s=4.5 * DAY + 1800, magnitude=200.0),
)


@pytest.fixture(scope="module")
def benign() -> dict[str, list[FaultAssessment]]:
    return _run(BENIGN, 6 * DAY)


def test_benign_confounders_do_not_alarm(benign: dict[str, list[FaultAssessment]]) -> None:
    for name, assessments in benign.items():
        assert _first_alarm(assessments) is None, name
        assert _peak(assessments) < FaultConfig().alarm_probability, name


def _z(assessment: FaultAssessment, signal: str) -> float:
    return next((s.z for s in assessment.signals if s.signal == signal), math.nan)


def test_the_confounders_were_seen_yet_not_taken_for_trends(benign: dict[str, list[FaultAssessment]]) -> None:
    """So the test above can fail: each confounder does move the score; it is not a rising trend."""
    ups, gen = benign["ups-1"], benign["gen-1"]
    hot = [a for a in ups if HOT.start_s + 3 * 3600 < a.time_s < HOT.end_s]
    assert max(_z(a, "temperature_c") for a in hot) > 10
    after_jump = [a for a in ups if 2.7 * DAY < a.time_s < HOT.start_s]
    assert min(_z(a, "temperature_c") for a in after_jump) > 3  # the +3 degC offset is seen...
    trends = [s for a in after_jump for s in a.signals if s.signal == "temperature_c"]
    assert all(s.slope_per_s == 0 and s.time_to_threshold_s == math.inf for s in trends)  # ...as no trend
    assert max(_z(a, "kurtosis") for a in gen if a.time_s > 2.3 * DAY) > 5


def test_a_dropout_is_a_gap_not_a_reading(benign: dict[str, list[FaultAssessment]]) -> None:
    during = [a for a in benign["ups-1"] if 2.05 * DAY < a.time_s < 2.5 * DAY]
    assert during and all(a.ready and not a.signals and a.probability == 0.0 for a in during)
    after = [a for a in benign["ups-1"] if 2.55 * DAY < a.time_s < 2.6 * DAY]
    assert after and all(len(a.signals) == len(SIGNALS) for a in after)  # back as soon as the readings are


def test_a_load_step_the_baseline_explains_does_not_alarm() -> None:
    step = LoadStep(np.arange(20), 2.5 * DAY, 1.4)  # every rack 40% more, for good
    runs = _run((), 4 * DAY, (step,))
    ups = runs["ups-1"]
    assert _first_alarm(ups) is None
    after = [a for a in ups if a.time_s > 2.6 * DAY]
    assert max(abs(_z(a, "temperature_c")) for a in after) < 3
    # while the step itself is large against the noise (0.3 degC): its load is explained, not ignored
    scenario = parse_scenario(SITE)
    sim = SiteSimulator.from_scenario(scenario, load_steps=(step,))
    sim.run_until(2.45 * DAY)
    before = sim.read_sources()["ups-1"].load_kw
    sim.run_until(2.55 * DAY)
    assert sim.read_sources()["ups-1"].load_kw > 1.3 * before


# -- the pieces -----------------------------------------------------------------------------


def test_huber_fit_ignores_outliers_and_a_constant_column() -> None:
    rng = np.random.default_rng(1)
    n = 500
    load = rng.uniform(0.2, 0.8, n)
    x = np.column_stack([np.ones(n), load, np.full(n, 0.5)])
    y = 27.0 + 12.0 * load + 0.3 * rng.standard_normal(n)
    y[::25] += 15.0  # 4% spikes
    coef, scale = huber_fit(x, y)
    assert coef[0] + 0.5 * coef[2] == pytest.approx(27.0, abs=0.2)
    assert coef[1] == pytest.approx(12.0, abs=0.3)
    assert scale == pytest.approx(0.3, rel=0.2)


def test_rising_trend_takes_a_ramp_not_a_step_nor_a_bump() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(24) * 3600.0
    noise = 0.05 * rng.standard_normal(24)
    ramp = 0.2 * t / 3600.0 + noise
    step = np.where(t >= 12 * 3600, 3.0, 0.0) + noise
    bump = 8.0 * np.sin(np.pi * np.clip((t - 6 * 3600) / (7 * 3600), 0, 1)) + noise
    assert rising_trend(t, ramp, 3, 9) * 3600 == pytest.approx(0.2, rel=0.1)
    assert rising_trend(t, step, 3, 9) == 0.0
    assert rising_trend(t, bump, 3, 9) == 0.0
    gappy = ramp.copy()
    gappy[5:9] = np.nan
    assert rising_trend(t, gappy, 3, 9) > 0
    assert rising_trend(t[:6], ramp[:6], 3, 9) == 0.0  # too few points


def test_nothing_is_claimed_while_the_baseline_is_learned() -> None:
    predictor = FaultPredictor(FaultConfig(baseline_s=3600.0))
    first = predictor.update(0.0, HealthSignals(30.0, None, None, None, 1.0, 2.0), 0.5)
    assert not first.ready and first.probability == 0.0 and first.driver is None
    with pytest.raises(ValueError, match="expected 6 signals"):
        predictor.update(60.0, [1.0, 2.0], 0.5)
    assert not predictor.baseline_ready
