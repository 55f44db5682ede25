"""Randomised fault-prediction cases: a small site for two weeks on which every source
draws its fate from a seed (a gradual degradation ending in failure, a sudden failure,
or nothing), under benign confounders drawn the same way. The fault benchmark scores a
predictor over many seeds, and the predictor's probability is calibrated on other seeds,
so that neither learns one onset, one length, one shape or one size.

What is drawn, per seed (docs/scenarios.md describes the families):
- each source: a degradation with probability `P_DEGRADE` (a family its kind can have;
  onset from day 1.5 to day 9; lead, onset to failure, 1.5 to 8 days, log-uniform;
  shape linear, accelerating or knee; severity 0.6 to 1.5 of the family's default; it
  fails at its end, which may fall beyond the run: then it is still degrading at the
  end), else a sudden failure with probability `P_SUDDEN`, else nothing;
- site-wide: hot afternoons (0 to 2, 4 to 10 h, 5 to 12 degC), racks' load steps (0 to 2,
  +10 to +40% for 2 to 8 h), sensor dropouts (1 to 3, of one signal or all, 1 to 12 h),
  recalibration jumps (0 to 2, 0.5 to 2 times the signal's alarm threshold, either way),
  and a test discharge on a battery string (0 or 1).
The racks' taps have their alternates set, so a failed source's racks move to the
others: one more load step the predictor must take in its stride.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from host.model.site import SourceKind
from host.predict.faults import SIGNALS, rise_threshold
from host.sim.site.conditions import DEGRADING, FAMILIES, Condition, Family, Shape
from host.sim.site.health import BASELINES
from host.sim.site.loads import LoadStep
from host.sim.site.scenario import Scenario, parse_scenario
from host.sim.site.simulator import SiteSimulator

DAY_S = 86_400.0
DURATION_S = 14 * DAY_S
P_DEGRADE = 0.4
P_SUDDEN = 0.1
ONSET_S = (1.5 * DAY_S, 9 * DAY_S)
LEAD_S = (1.5 * DAY_S, 8 * DAY_S)
SEVERITY = (0.6, 1.5)

SITE = """\
[scenario]
name = "fault-case"
step_s = 300
duration_s = 1209600

[loads]
utilisation = [0.4, 0.75]

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 250

[[sources]]
id = "ups-2"
kind = "ups"
capacity_kw = 250

[[sources]]
id = "ups-3"
kind = "ups"
capacity_kw = 250

[[sources]]
id = "ups-4"
kind = "ups"
capacity_kw = 250

[[sources]]
id = "gen-1"
kind = "generator"
capacity_kw = 300

[[sources]]
id = "gen-2"
kind = "generator"
capacity_kw = 300

[[sources]]
id = "bat-1"
kind = "battery"
capacity_kw = 250
energy_kwh = 250
recharge_kw = 25

[[sources]]
id = "bat-2"
kind = "battery"
capacity_kw = 250
energy_kwh = 250
recharge_kw = 25

[[racks]]
group = "row"
count = 60
primary = ["ups-1", "ups-2", "ups-3", "ups-4", "gen-1", "gen-2"]
inputs = 3
rated_kw = [5, 25]
"""


@dataclass(frozen=True)
class FaultCase:
    seed: int
    scenario: Scenario
    conditions: tuple[Condition, ...]
    load_steps: tuple[LoadStep, ...]

    @property
    def duration_s(self) -> float:
        return self.scenario.duration_s

    def simulator(self, step_s: float | None = None) -> SiteSimulator:
        """The case's simulator, with every rack's alternates set for its first source."""
        sim = SiteSimulator.from_scenario(
            self.scenario, conditions=self.conditions, load_steps=self.load_steps, seed=self.seed,
            **({} if step_s is None else {"step_s": step_s}),
        )
        telemetry = sim.read_telemetry()
        for i, rack_id in enumerate(telemetry.rack_ids):
            sources = [telemetry.source_ids[s] for s in telemetry.input_source[i] if s >= 0]
            active = telemetry.active_source(rack_id)
            if active is not None:
                sim.set_alternates(rack_id, active, [s for s in sources if s != active])
        return sim

    def failure_s(self, source: str) -> float | None:
        """When the source fails in this case (within the run), if it does."""
        times = [c.failure_s for c in self.conditions if c.source == source and c.failure_s is not None]
        times = [t for t in times if t < self.duration_s]
        return min(times) if times else None

    def degradation(self, source: str) -> Condition | None:
        return next((c for c in self.conditions if c.source == source and c.family in DEGRADING), None)

    def sudden(self, source: str) -> bool:
        return any(c.source == source and c.family == Family.SUDDEN_FAILURE for c in self.conditions)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


def _threshold(kind: SourceKind, signal: str) -> float:
    """The predictor's default alarm rise for the signal, at the kind's half-load level."""
    no_load, full_rise, _ = BASELINES[kind][SIGNALS.index(signal)]
    return rise_threshold(signal, no_load + 0.5 * full_rise)


def _readable(kind: SourceKind) -> list[str]:
    """The signals a kind of source has sensors for."""
    return [s for j, s in enumerate(SIGNALS) if not math.isnan(BASELINES[kind][j][0])]


def draw_case(seed: int) -> FaultCase:
    """The case of this seed: the same seed, the same case."""
    rng = np.random.default_rng([seed, 17])
    scenario = parse_scenario(SITE, f"fault-case-{seed}")
    sources = scenario.site.sources
    conditions: list[Condition] = []
    for source in sources:
        roll = rng.uniform()
        families = [f for f in DEGRADING if source.kind in FAMILIES[f].kinds]
        if roll < P_DEGRADE:
            family = families[int(rng.integers(len(families)))]
            start = _uniform(rng, ONSET_S)
            end = start + _log_uniform(rng, LEAD_S)
            shape = tuple(Shape)[int(rng.integers(len(Shape)))]
            magnitude = FAMILIES[family].magnitude * _uniform(rng, SEVERITY)
            conditions.append(Condition(family, source.id, start, end, magnitude, fails=True, shape=shape))
        elif roll < P_DEGRADE + P_SUDDEN:
            conditions.append(Condition(Family.SUDDEN_FAILURE, source.id, _uniform(rng, (1.5 * DAY_S, DURATION_S))))
    for _ in range(int(rng.integers(0, 3))):
        day = int(rng.integers(2, 14))
        start = day * DAY_S + _uniform(rng, (10 * 3600, 14 * 3600))
        conditions.append(Condition(Family.HOT_AFTERNOON, None, start, start + _uniform(rng, (4 * 3600, 10 * 3600)),
                                    _uniform(rng, (5.0, 12.0))))
    for _ in range(int(rng.integers(1, 4))):
        source = sources[int(rng.integers(len(sources)))]
        readable = _readable(source.kind)
        signal = "all" if rng.uniform() < 0.3 else readable[int(rng.integers(len(readable)))]
        start = _uniform(rng, (1.5 * DAY_S, DURATION_S))
        conditions.append(Condition(Family.SENSOR_DROPOUT, source.id, start,
                                    start + _uniform(rng, (3600, 12 * 3600)), signal=signal))
    for _ in range(int(rng.integers(0, 3))):
        source = sources[int(rng.integers(len(sources)))]
        readable = _readable(source.kind)
        signal = readable[int(rng.integers(len(readable)))]
        size = _uniform(rng, (0.5, 2.0)) * _threshold(source.kind, signal) * (1 if rng.uniform() < 0.7 else -1)
        conditions.append(Condition(Family.RECALIBRATION_JUMP, source.id, _uniform(rng, (1.5 * DAY_S, DURATION_S)),
                                    magnitude=size, signal=signal))
    batteries = [s for s in sources if s.kind == SourceKind.BATTERY]
    if batteries and rng.uniform() < 0.5:
        battery = batteries[int(rng.integers(len(batteries)))]
        start = int(rng.integers(2, 14)) * DAY_S + 10 * 3600
        conditions.append(Condition(Family.MAINTENANCE_TEST, battery.id, start, start + 1800,
                                    _uniform(rng, (0.3, 0.8)) * battery.capacity_kw))
    racks = len(scenario.site.racks)
    steps = []
    for _ in range(int(rng.integers(0, 3))):
        chosen = rng.choice(racks, size=max(1, racks // 3), replace=False).astype(np.int64)
        start = _uniform(rng, (1.5 * DAY_S, DURATION_S))
        steps.append(LoadStep(chosen, start, 1.0 + _uniform(rng, (0.1, 0.4)),
                              start + _uniform(rng, (2 * 3600, 8 * 3600))))
    return FaultCase(seed, scenario, tuple(conditions), tuple(steps))
