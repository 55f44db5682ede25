"""The site-wide fault monitor (host/predict/fault_monitor.py), sensor steps taken out of a
signal, the calibration fit, the degradation shapes and the randomised fault cases.
The predictor's behaviour on each scenario family is in test_faults.py."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from host.model.fleet import HealthSignals, SourceState, SourceStatus
from host.model.site import SourceKind
from host.predict.fault_monitor import FaultMonitor, MonitorConfig
from host.predict.faults import (
    SIGNALS,
    FaultConfig,
    FaultPredictor,
    SignalAssessment,
    failure_probability,
    fit_logit,
    theil_sen,
)
from host.sim.site.conditions import DEGRADING, Condition, Family, Shape, shaped
from host.sim.site.fault_cases import ONSET_S, draw_case
from host.sim.site.scenario import ScenarioError, parse_scenario

DAY = 86_400.0
STEP = 300.0
TEMPERATURE = SIGNALS.index("temperature_c")
Temperature = Callable[[float], float]  # a source's temperature over time


def _signals(temperature: float, rng: np.random.Generator) -> HealthSignals:
    """A UPS's readings at half load: the temperature given, the others steady, all noisy."""
    noise = rng.standard_normal(6)
    return HealthSignals(temperature + 0.3 * noise[0], 17.5 + noise[1], 3.0 + 0.08 * noise[2],
                         3.2 + 0.06 * noise[3], 1.1 + 0.03 * noise[4], 2.1 + 0.05 * noise[5])


def _status(name: str, t: float, signals: HealthSignals) -> SourceStatus:
    return SourceStatus(name, SourceKind.UPS, t, SourceState.UP, 200.0, 100.0, 100.0, 0.0, None, None,
                        frozenset(), signals)


def _feed(temperature_of: dict[str, Temperature], days: float, monitor: FaultMonitor, seed: int = 0) -> dict[str, list]:
    """Run the monitor over `days` with each source's temperature a function of time."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {name: [] for name in temperature_of}
    for k in range(int(days * DAY / STEP)):
        t = (k + 1) * STEP
        statuses = {name: _status(name, t, _signals(f(t), rng)) for name, f in temperature_of.items()}
        for name, assessment in monitor.update(statuses).items():
            out[name].append(assessment)
    return out


def _hot_afternoon(t: float) -> float:
    """35 degC, and a 10-hour hot afternoon on day 3 peaking 12 degC higher."""
    start, length = 3 * DAY + 9 * 3600, 10 * 3600
    inside = start <= t < start + length
    return 35.0 + (12.0 * math.sin(math.pi * (t - start) / length) if inside else 0.0)


def test_a_long_hot_afternoon_shared_by_all_sources_is_taken_out() -> None:
    names = ("ups-1", "ups-2", "ups-3", "ups-4")
    alone = _feed(dict.fromkeys(names, _hot_afternoon), 5, FaultMonitor(names, monitor=MonitorConfig(("kurtosis",))))
    shared = _feed(dict.fromkeys(names, _hot_afternoon), 5, FaultMonitor(names))
    # without the shared part taken out, ten hours over the threshold read as a fault...
    assert any(a.alarm for a in alone["ups-1"])
    # ...with it, nothing is left of it
    for name in names:
        assert not any(a.alarm for a in shared[name])
        assert max(abs(s.z) for a in shared[name] for s in a.signals if s.signal == "temperature_c") < 4


def test_a_fault_on_one_source_stands_out_from_the_shared_part() -> None:
    names = ("ups-1", "ups-2", "ups-3", "ups-4")
    drift: dict[str, Temperature] = dict.fromkeys(names, _hot_afternoon)
    drift["ups-2"] = lambda t: _hot_afternoon(t) + max(0.0, t - 2 * DAY) / DAY * 6.0  # +6 degC a day
    runs = _feed(drift, 5, FaultMonitor(names))
    first = next(a for a in runs["ups-2"] if a.alarm)
    assert 2 * DAY < first.time_s < 4 * DAY and first.driver == "temperature_c"
    assert not any(a.alarm for name in names if name != "ups-2" for a in runs[name])


def test_fewer_than_three_sources_share_nothing() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        MonitorConfig(min_shared_sources=2)
    with pytest.raises(ValueError, match="unknown shared signals"):
        MonitorConfig(("humidity",))
    monitor = FaultMonitor(("a", "b"))
    _feed({"a": _hot_afternoon, "b": _hot_afternoon}, 1.2, monitor)
    assert monitor.shared[TEMPERATURE] == 0.0


def test_a_source_that_is_down_is_not_fed() -> None:
    monitor = FaultMonitor(("ups-1", "ups-2", "ups-3"))
    rng = np.random.default_rng(1)
    down = SourceStatus("ups-1", SourceKind.UPS, 300.0, SourceState.FAILED, 200.0, 0.0, 0.0, 0.0, None, None,
                        frozenset(), _signals(35.0, rng))
    out = monitor.update({"ups-1": down, "ups-2": _status("ups-2", 300.0, _signals(35.0, rng))})
    assert set(out) == {"ups-2"}


# -- sensor steps -----------------------------------------------------------------------------


def _predictor_run(temperature: Temperature, days: float, seed: int = 3) -> tuple[FaultPredictor, list]:
    rng = np.random.default_rng(seed)
    predictor = FaultPredictor()
    out = []
    for k in range(int(days * DAY / STEP)):
        t = (k + 1) * STEP
        out.append(predictor.update(t, _signals(temperature(t), rng), 0.5))
    return predictor, out


def test_a_recalibration_jump_beyond_the_threshold_is_taken_out_and_reported() -> None:
    jump_at = 2.5 * DAY + 1234.0
    predictor, out = _predictor_run(lambda t: 35.0 + (15.0 if t >= jump_at else 0.0), 5)
    assert not any(a.alarm for a in out)
    assert len(predictor.steps) == 1
    step = predictor.steps[0]
    assert step.signal == "temperature_c" and step.size == pytest.approx(15.0, abs=0.3)
    assert abs(step.time_s - jump_at) < 3600
    late = next(s for s in out[-1].signals if s.signal == "temperature_c")
    assert abs(late.z) < 4  # the offset is gone from the readings after it


def test_a_ramp_is_not_taken_for_a_step() -> None:
    predictor, out = _predictor_run(lambda t: 35.0 + max(0.0, t - 1.5 * DAY) / DAY * 5.0, 5)
    assert predictor.steps == []
    assert any(a.alarm and a.driver == "temperature_c" for a in out)


def test_the_end_of_a_bump_is_not_a_step() -> None:
    """A hot afternoon that plateaus, on one source: its fall returns to the level before it."""
    predictor, _ = _predictor_run(_hot_afternoon, 5)
    assert predictor.steps == []


# -- calibration and the pieces ----------------------------------------------------------------


def test_theil_sen_gives_scipys_figures() -> None:
    rng = np.random.default_rng(4)
    for n in (9, 24, 72):
        for confidence in (0.9, 0.95):
            t = np.arange(n) * 3600.0
            y = rng.standard_normal(n) + 2e-5 * t
            expected = stats.theilslopes(y, t, confidence)
            slope, low = theil_sen(t, y, confidence)
            assert slope == pytest.approx(expected.slope) and low == pytest.approx(expected.low_slope)


def test_fit_logit_recovers_the_coefficients_it_was_drawn_from() -> None:
    truth = FaultConfig(logit=(-2.0, 0.8, 0.6))
    rng = np.random.default_rng(5)
    samples, failed = [], []
    for _ in range(6000):
        signals = tuple(
            SignalAssessment("x", 0.0, float(rng.uniform(0, 8)), 1.0, 0.0, float(math.exp(rng.uniform(7, 17))), 0.0)
            for _ in range(2)
        )
        p = max(failure_probability(a.z, a.time_to_threshold_s, truth) for a in signals)
        samples.append(signals)
        failed.append(bool(rng.uniform() < p))
    fitted = fit_logit(samples, failed, FaultConfig())
    assert fitted == pytest.approx(truth.logit, abs=0.2)


def test_fit_logit_needs_both_outcomes() -> None:
    signal = (SignalAssessment("x", 0.0, 1.0, 1.0, 0.0, math.inf, 0.0),)
    with pytest.raises(ValueError, match="both outcomes"):
        fit_logit([signal, signal], [False, False], FaultConfig())


# -- shapes and cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", list(Shape))
def test_every_shape_rises_from_zero_to_one(shape: Shape) -> None:
    x = np.linspace(0, 1, 101)
    y = [shaped(float(v), shape) for v in x]
    assert y[0] == 0.0 and y[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(y))


def test_accelerating_and_knee_hold_back_then_catch_up() -> None:
    assert shaped(0.5, Shape.ACCELERATING) < 0.25 < shaped(0.5, Shape.LINEAR)
    assert shaped(0.7, Shape.KNEE) == pytest.approx(0.2)
    condition = Condition(Family.THERMAL_DRIFT, "ups-1", 0.0, 10.0, shape=Shape.KNEE)
    assert condition.progress(7.0) == pytest.approx(0.2) and condition.progress(20.0) == 1.0


SCENARIO = """\
[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 100

[[sources]]
id = "ups-2"
kind = "ups"
capacity_kw = 100

[[racks]]
group = "row"
count = 2

[[conditions]]
family = "{family}"
source = "ups-1"
start_s = 0
end_s = 100
shape = "{shape}"
"""


def test_a_scenario_names_the_shape_and_is_refused_a_wrong_one() -> None:
    scenario = parse_scenario(SCENARIO.format(family="bearing_wear", shape="accelerating"))
    assert scenario.conditions[0].shape == Shape.ACCELERATING
    with pytest.raises(ScenarioError, match=r"conditions\[0\]\.shape .*must be one of linear, accelerating, knee"):
        parse_scenario(SCENARIO.format(family="bearing_wear", shape="sudden"))
    with pytest.raises(ScenarioError, match=r"conditions\[0\]\.shape .*only by gradual degradations"):
        parse_scenario(SCENARIO.format(family="hot_afternoon", shape="knee"))


def test_cases_are_the_same_for_a_seed_and_vary_across_seeds() -> None:
    assert draw_case(3).conditions == draw_case(3).conditions
    cases = [draw_case(seed) for seed in range(40)]
    degradations = [c for case in cases for c in case.conditions if c.family in DEGRADING]
    assert {c.family for c in degradations} == set(DEGRADING)
    assert {c.shape for c in degradations} == set(Shape)
    assert all(ONSET_S[0] <= c.start_s < ONSET_S[1] for c in degradations)  # after the baseline day
    assert len({round(c.start_s) for c in degradations}) == len(degradations)
    assert any(c.family == Family.SUDDEN_FAILURE for case in cases for c in case.conditions)
    assert any(c.family == Family.HOT_AFTERNOON and c.end_s is not None and c.end_s - c.start_s > 6 * 3600
               for case in cases for c in case.conditions)


def test_a_z_score_alone_never_raises_the_alarm() -> None:
    """With the fitted coefficients, a signal far off its baseline but not rising (a
    confounder's level) stays under the alarm level; rising towards its threshold within
    the horizon, it does not."""
    config = FaultConfig()
    assert failure_probability(100.0, math.inf, config) < config.alarm_probability
    assert failure_probability(5.0, config.horizon_s / 4, config) >= config.alarm_probability
