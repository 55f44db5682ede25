"""Fault prediction benchmark: the site's FaultMonitor (host/predict/fault_monitor.py) against a
fixed-threshold alarm, on many randomised cases of every scenario family, in one run.

Run from the repository root: `.venv/bin/python benchmarks/faults.py` (about 3 min on
two cores). Prints markdown for benchmarks/RESULTS.md.

Cases (host/sim/site/fault_cases.py): per seed, 8 sources (4 UPS modules, 2 generator sets, 2
battery strings) and 60 racks for 14 days at a 300 s step; every source draws a
degradation (random family, onset, lead, shape and severity) or a sudden failure or
nothing, under randomised benign confounders (hot afternoons of up to 10 h, load steps,
dropouts, recalibration jumps as large as twice a threshold, test discharges). The
evaluation seeds (0...) are not the calibration seeds (1000...): `--calibrate` fits the
probability's coefficients (host.predict.faults.fit_logit) on the latter and prints them for
FaultConfig.logit.

Scored, for each detector:
- recall: degradations that end in failure within the run, alarmed between their onset
  and the failure; the lead time is failure minus the first such alarm;
- degradations still going at the end: the share alarmed before the end;
- false alarms: alarm episodes (rising edges) on a source with no degradation under way,
  per source-week of monitoring (a source up, after its first day, which is the
  baseline); precision: true episodes over all;
- sudden failures, apart: they have no precursor and are the failover path's job;
- ours only: the calibration of the probability of a failure within the horizon (2 days),
  on the hourly assessments whose outcome is known, against the observed frequency.
The fixed-threshold alarm is what a source's own controller does: an hourly median of
each reading over a fixed limit (the kind's full-load nominal value, the warm side of
the day's ambient, plus the same rise the predictor's thresholds allow), held 12 h
like ours so that its episodes count the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.model.site import SourceKind
from host.predict.fault_monitor import FaultMonitor
from host.predict.faults import (
    SIGNALS,
    FaultConfig,
    SignalAssessment,
    as_values,
    failure_probability,
    fit_logit,
    rise_threshold,
)
from host.sim.site.fault_cases import draw_case
from host.sim.site.health import AMBIENT_PEAK_S, baseline

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
HOUR_S = 3600.0
HOLD_S = FaultConfig().hold_s
EVAL_SEEDS_FROM = 0
CALIBRATION_SEEDS_FROM = 1000
ALARM_LEVELS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
RELIABILITY_BINS = (0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 1.0)


def fixed_limits(kind: SourceKind) -> np.ndarray:
    """The fixed alarm limit of every signal of a kind (NaN: no such sensor)."""
    nominal = baseline([kind], np.ones(1), AMBIENT_PEAK_S)[0][0]  # full load, the warmest hour
    return nominal + np.array([rise_threshold(name, level) for name, level in zip(SIGNALS, nominal, strict=True)])


@dataclass
class SourceTrace:
    """One source's hourly record in one case."""

    times: list[float] = field(default_factory=list)
    ready: list[bool] = field(default_factory=list)
    probability: list[float] = field(default_factory=list)
    ours: list[bool] = field(default_factory=list)
    fixed: list[bool] = field(default_factory=list)
    signals: list[tuple[SignalAssessment, ...]] = field(default_factory=list)


@dataclass
class CaseResult:
    seed: int
    traces: dict[str, SourceTrace]
    seconds: float


class FixedThresholds:
    def __init__(self, kinds: dict[str, SourceKind]) -> None:
        self.limits = {name: fixed_limits(kind) for name, kind in kinds.items()}
        self.readings: dict[str, list[list[float]]] = {name: [] for name in kinds}
        self.raised: dict[str, float] = {}

    def add(self, name: str, values: list[float]) -> None:
        self.readings[name].append(values)

    def close_hour(self, name: str, time_s: float) -> bool:
        rows = np.array(self.readings[name], dtype=float).reshape(-1, len(SIGNALS))
        self.readings[name] = []
        if len(rows):
            with warnings.catch_warnings():  # an all-NaN column is a dropout, not news
                warnings.simplefilter("ignore", RuntimeWarning)
                medians = np.nanmedian(rows, axis=0)
            if np.any(medians > self.limits[name]):
                self.raised[name] = time_s
        raised = self.raised.get(name)
        return raised is not None and time_s - raised <= HOLD_S


def run_case(seed: int) -> CaseResult:
    started = time.perf_counter()
    case = draw_case(seed)
    sim = case.simulator()
    kinds = {source.id: source.kind for source in case.scenario.site.sources}
    monitor = FaultMonitor(kinds)
    fixed = FixedThresholds(kinds)
    traces = {name: SourceTrace() for name in kinds}
    while sim.time_s < case.duration_s:
        sim.step()
        statuses = sim.read_sources()
        assessments = monitor.update(statuses)
        hour_closed = sim.time_s % HOUR_S == 0
        for name, assessment in assessments.items():
            signals = statuses[name].signals
            fixed.add(name, as_values(signals))
            if hour_closed:
                trace = traces[name]
                trace.times.append(sim.time_s)
                trace.ready.append(assessment.ready)
                trace.probability.append(assessment.probability)
                trace.ours.append(assessment.alarm)
                trace.fixed.append(fixed.close_hour(name, sim.time_s))
                trace.signals.append(assessment.signals)
    return CaseResult(seed, traces, time.perf_counter() - started)


def run_all(seeds: Sequence[int], jobs: int) -> list[CaseResult]:
    if jobs <= 1:
        return [run_case(s) for s in seeds]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(run_case, seeds, chunksize=2))


# -- scoring ----------------------------------------------------------------------------------


def rising_edges(times: Sequence[float], alarms: Sequence[bool]) -> list[float]:
    return [t for i, (t, a) in enumerate(zip(times, alarms, strict=True)) if a and (i == 0 or not alarms[i - 1])]


@dataclass
class Score:
    failing: int = 0
    caught: int = 0
    leads_s: list[float] = field(default_factory=list)
    ongoing: int = 0
    ongoing_flagged: int = 0
    true_episodes: int = 0
    false_episodes: int = 0
    sudden: int = 0
    sudden_flagged: int = 0
    by_group: dict[str, list[int]] = field(default_factory=dict)  # family/shape -> [failing, caught]

    def recall(self) -> float:
        return self.caught / self.failing if self.failing else math.nan

    def precision(self) -> float:
        total = self.true_episodes + self.false_episodes
        return self.true_episodes / total if total else math.nan


def replayed_alarms(trace: SourceTrace, config: FaultConfig) -> list[bool]:
    """Ours' alarms with other coefficients or alarm level: the probability recomputed
    from the recorded signal assessments, latched as FaultPredictor does."""
    alarms, raised = [], -math.inf
    for t, signals in zip(trace.times, trace.signals, strict=True):
        p = max((failure_probability(a.z, a.time_to_threshold_s, config) for a in signals), default=0.0)
        if p >= config.alarm_probability:
            raised = t
        alarms.append(t - raised <= config.hold_s)
    return alarms


def score(results: Sequence[CaseResult], alarms_of: Callable[[SourceTrace], Sequence[bool]]) -> tuple[Score, float]:
    """A detector's score, and the source-weeks monitored."""
    out = Score()
    monitored_s = 0.0
    for result in results:
        case = draw_case(result.seed)
        for name, trace in result.traces.items():
            times = trace.times
            alarms = alarms_of(trace)
            ready_times = [t for t, r in zip(times, trace.ready, strict=True) if r]
            monitored_s += len(ready_times) * HOUR_S
            degradation = case.degradation(name)
            failure = case.failure_s(name)
            onset = degradation.start_s if degradation else math.inf
            for edge in rising_edges(times, alarms):
                if edge >= onset:
                    out.true_episodes += 1
                else:
                    out.false_episodes += 1
            alarmed_after_onset = [t for t, a in zip(times, alarms, strict=True) if a and t >= onset]
            if degradation is not None and failure is not None and failure == degradation.end_s:
                out.failing += 1
                group = out.by_group.setdefault(f"{degradation.family}/{degradation.shape}", [0, 0])
                group[0] += 1
                if alarmed_after_onset:
                    out.caught += 1
                    group[1] += 1
                    out.leads_s.append(failure - alarmed_after_onset[0])
            elif degradation is not None:
                out.ongoing += 1
                out.ongoing_flagged += bool(alarmed_after_onset)
            if case.sudden(name) and failure is not None:
                out.sudden += 1
                out.sudden_flagged += any(a and failure - 2 * DAY_S <= t < failure
                                          for t, a in zip(times, alarms, strict=True))
    return out, monitored_s / WEEK_S


def outcomes(results: Sequence[CaseResult], horizon_s: float) -> tuple[list[tuple[SignalAssessment, ...]], list[bool],
                                                                         list[float]]:
    """The hourly assessments whose outcome within the horizon is known, with it: failed
    through a degradation within the horizon or not. Sudden failures are left out (no
    precursor to predict them by), and so are the last hours of a run that has not
    failed by its end (the outcome is not known)."""
    samples, failed, probability = [], [], []
    for result in results:
        case = draw_case(result.seed)
        for name, trace in result.traces.items():
            failure = case.failure_s(name)
            sudden = case.sudden(name)
            for t, ready, p, signals in zip(trace.times, trace.ready, trace.probability, trace.signals, strict=True):
                if not ready:
                    continue
                fails_soon = failure is not None and t < failure <= t + horizon_s
                if sudden and fails_soon:
                    continue
                if not fails_soon and t + horizon_s > case.duration_s:
                    continue
                samples.append(signals)
                failed.append(fails_soon)
                probability.append(p)
    return samples, failed, probability


def reliability(failed: Sequence[bool], probability: Sequence[float]) -> list[str]:
    p = np.asarray(probability)
    y = np.asarray(failed, dtype=float)
    brier = float(np.mean((p - y) ** 2))
    climatology = float(np.mean((y.mean() - y) ** 2))
    lines = [
        f"Hourly assessments with a known outcome: {len(y)}, of which {int(y.sum())} fail within the horizon "
        f"({y.mean():.1%}). Brier score {brier:.4f} against {climatology:.4f} for the base rate "
        f"(skill {1 - brier / climatology:.2f}).",
        "",
        "| predicted probability | assessments | mean predicted | observed frequency |",
        "| --- | --- | --- | --- |",
    ]
    for low, high in itertools.pairwise(RELIABILITY_BINS):
        inside = (p >= low) & ((p < high) if high < 1 else (p <= high))
        if inside.any():
            lines.append(f"| {low:.2f}-{high:.2f} | {int(inside.sum())} | {p[inside].mean():.3f} | "
                         f"{y[inside].mean():.3f} |")
    return lines


def _minutes(seconds: list[float], q: float) -> str:
    return f"{np.quantile(seconds, q) / 3600:.1f} h" if seconds else "n/a"


def report(results: Sequence[CaseResult], wall_s: float, jobs: int) -> None:
    ours, weeks = score(results, lambda trace: trace.ours)
    fixed, _ = score(results, lambda trace: trace.fixed)
    print(f"## faults (benchmarks/faults.py), {dt.date.today().isoformat()}")
    print()
    print(f"- Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"- {len(results)} cases (seeds {results[0].seed}-{results[-1].seed}), {weeks:.1f} source-weeks monitored; "
          f"{wall_s:.0f} s with {jobs} processes, {np.mean([r.seconds for r in results]):.1f} s per case")
    print()
    print("| detector | recall | caught / failing | median lead | 10th percentile lead | false alarms per "
          "10 source-weeks | precision | still degrading at the end, flagged | sudden failures flagged |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, s in (("ours (FaultMonitor)", ours), ("fixed thresholds", fixed)):
        print(f"| {label} | {s.recall():.3f} | {s.caught} / {s.failing} | {_minutes(s.leads_s, 0.5)} | "
              f"{_minutes(s.leads_s, 0.1)} | {10 * s.false_episodes / weeks:.2f} ({s.false_episodes}) | "
              f"{s.precision():.3f} | {s.ongoing_flagged} / {s.ongoing} | {s.sudden_flagged} / {s.sudden} |")
    print()
    print("Recall by family and shape (ours; fixed thresholds):")
    print()
    print("| family/shape | failing | ours | fixed |")
    print("| --- | --- | --- | --- |")
    for group in sorted(ours.by_group):
        n, caught = ours.by_group[group]
        print(f"| {group} | {n} | {caught} | {fixed.by_group.get(group, [0, 0])[1]} |")
    print()
    _, failed, probability = outcomes(results, FaultConfig().horizon_s)
    print("Calibration of ours' probability of a failure within 2 days:")
    print()
    print("\n".join(reliability(failed, probability)))


def calibrate(results: Sequence[CaseResult]) -> None:
    config = FaultConfig()
    samples, failed, _ = outcomes(results, config.horizon_s)
    b = fit_logit(samples, failed, config)
    print(f"{len(samples)} hourly assessments, {sum(failed)} failing within {config.horizon_s / DAY_S:g} days")
    print(f"fitted logit = ({b[0]:.3f}, {b[1]:.3f}, {b[2]:.3f}); was {config.logit}")
    print()
    print("With these, on the same seeds, by alarm level:")
    print()
    print("| alarm probability | recall | median lead | false alarms per 10 source-weeks | precision |")
    print("| --- | --- | --- | --- | --- |")
    for level in ALARM_LEVELS:
        fitted = dataclasses.replace(config, logit=b, alarm_probability=level)
        s, weeks = score(results, lambda trace, c=fitted: replayed_alarms(trace, c))
        print(f"| {level:.2f} | {s.recall():.3f} | {_minutes(s.leads_s, 0.5)} | "
              f"{10 * s.false_episodes / weeks:.2f} | {s.precision():.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100, help="cases to run (default 100)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    parser.add_argument("--calibrate", action="store_true",
                        help=f"fit the probability's coefficients on seeds from {CALIBRATION_SEEDS_FROM}")
    args = parser.parse_args()
    first = CALIBRATION_SEEDS_FROM if args.calibrate else EVAL_SEEDS_FROM
    started = time.perf_counter()
    results = run_all(range(first, first + args.cases), args.jobs)
    if args.calibrate:
        calibrate(results)
    else:
        report(results, time.perf_counter() - started, args.jobs)


if __name__ == "__main__":
    main()
