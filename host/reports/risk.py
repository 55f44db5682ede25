"""Sources ranked by predicted fault risk, with the reason: the site simulator's health
signals run through the site's FaultMonitor (`ibt risk` prints this)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from host.model.errors import ConfigurationError
from host.predict.fault_monitor import FaultMonitor
from host.predict.faults import FaultAssessment, SensorStep
from host.sim.site.scenario import load_scenario
from host.sim.site.simulator import SiteSimulator

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCENARIO = ROOT / "scenarios" / "fault_families.toml"
HEALTHY_BELOW = 0.1  # a probability under this is reported as healthy


@dataclass(frozen=True)
class SourceRisk:
    source: str
    up: bool
    assessment: FaultAssessment | None  # None: the source never reported health
    steps: tuple[SensorStep, ...] = ()  # sensor steps taken out of its signals

    @property
    def probability(self) -> float:
        return self.assessment.probability if self.assessment and self.assessment.ready else 0.0

    def as_dict(self) -> dict[str, object]:
        a = self.assessment
        ttt = None if a is None or math.isinf(a.time_to_threshold_s) else a.time_to_threshold_s
        return {"source": self.source, "up": self.up, "probability": round(self.probability, 4),
                "driver": a.driver if a else None, "score": round(a.score, 2) if a else None,
                "time_to_threshold_s": ttt, "alarm": bool(a and a.alarm), "reason": self.reason(),
                "sensor_steps": [{"time_s": s.time_s, "signal": s.signal, "size": round(s.size, 3)}
                                 for s in self.steps]}

    def reason(self) -> str:
        a = self.assessment
        if not self.up:
            return "down"
        if a is None or not a.ready:
            return "learning its baseline"
        if a.driver is None or (a.probability < HEALTHY_BELOW and not a.alarm):
            return f"healthy (largest z-score {a.score:.1f})"
        when = "already over its threshold" if a.time_to_threshold_s == 0 else (
            "no rising trend" if math.isinf(a.time_to_threshold_s)
            else f"over its threshold in {_duration(a.time_to_threshold_s)} at the present trend")
        held = ", alarm held from a recent peak" if a.alarm and a.probability < HEALTHY_BELOW else ""
        return f"{a.driver}: z-score {a.score:.1f}, {when}{held}"

    def notes(self) -> str:
        """The sensor steps, which an engineer should know of (a sensor replaced, or recalibrated, or worse)."""
        return "; ".join(f"{s.signal} stepped {s.size:+.2f} at day {s.time_s / 86400:.1f}, taken as a recalibration"
                         for s in self.steps)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.0f} h"


class RiskReportError(ConfigurationError, ValueError):
    """What `ibt risk` was asked cannot be run on that scenario."""

    cause = "--days counts from the scenario's start, and cannot go past its end"


def assess(scenario_path: Path, days: float) -> list[SourceRisk]:
    """Run the scenario for `days` and rank the sources by risk, highest first; a scenario
    shorter than `days` is refused, since a risk read past its end would be of nothing."""
    scenario = load_scenario(scenario_path)
    if days * 86400 > scenario.duration_s + 1e-6:
        raise RiskReportError(f"--days {days:g} runs past the end of scenario {scenario.name!r}, "
                              f"which lasts {scenario.duration_s / 86400:g} days")
    simulator = SiteSimulator.from_scenario(scenario)
    monitor = FaultMonitor(source.id for source in scenario.site.sources)
    latest: dict[str, FaultAssessment] = {}
    up: dict[str, bool] = {name: True for name in monitor.predictors}
    until_s = days * 86400
    while simulator.time_s < until_s:
        simulator.step()
        statuses = simulator.read_sources()
        up.update((name, status.up) for name, status in statuses.items())
        latest.update(monitor.update(statuses))
    risks = [SourceRisk(name, up[name], latest.get(name), tuple(predictor.steps))
             for name, predictor in monitor.predictors.items()]
    return sorted(risks, key=lambda r: (r.up, -r.probability))
