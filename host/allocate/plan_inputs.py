"""What the allocation is told about a site: each rack's conservative draw over the
plan's horizon and each source's fault risk, learned from what the fleet interface
reports step by step.

A plan must hold until the next one, so a rack counts with the largest P95 of its
forecast over `horizon_s` (the forecaster's upper quantile, with the scheduled jobs it
knows of added), at most its breaker rating, which it cannot exceed. A rack that is
unpowered now counts at its rating: its draw is unknown, and when it is restored it
may draw all of it. Draws read while a rack was unpowered are gaps, not zeros. A
source's risk is its fault monitor's probability of failure within the predictor's
horizon; a source that is not up has risk 1, so the plan empties it and names it
nobody's alternate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from host.model.arrays import FloatArray
from host.model.fleet import Fleet
from host.model.schedule import Job, jobs_kw
from host.predict.fault_monitor import FaultMonitor
from host.predict.forecast import LoadForecaster
from host.predict.forecast_config import ForecastConfig

PLAN_HORIZON_S = 3600.0  # a plan holds until the next; the controller replans at least hourly
HISTORY_S = 7 * 86_400.0  # the forecaster's rolling window: a week


@dataclass(frozen=True)
class PlanInputs:
    """In the order of `rack_ids` and `source_ids`."""

    rack_ids: tuple[str, ...]
    source_ids: tuple[str, ...]
    draw_kw: FloatArray  # conservative draw over the horizon, at most the rating
    draw_now_kw: FloatArray  # as read last (NaN: unpowered)
    risk: FloatArray  # fault probability, 1 for a source that is not up
    up: tuple[bool, ...]
    method: str  # the forecaster's, for the record
    history_steps: int


class SiteObserver:
    """Follows a site through its fleet interface: `record()` after every step keeps the
    racks' draws for the forecaster and feeds every source's fault predictor; `inputs()`
    gives the allocation's inputs at that moment."""

    def __init__(
        self, fleet: Fleet, rated_kw: Mapping[str, float], step_s: float, jobs: Sequence[Job] = ()
    ) -> None:
        telemetry = fleet.read_telemetry()
        self.fleet = fleet
        self.rack_ids = telemetry.rack_ids
        self.source_ids = telemetry.source_ids
        missing = [rack for rack in self.rack_ids if rack not in rated_kw]
        if missing:
            raise ValueError(f"no rating for racks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        self.rated_kw = np.array([rated_kw[rack] for rack in self.rack_ids], dtype=np.float64)
        self.step_s = step_s
        self.jobs = tuple(jobs)
        self.monitor = FaultMonitor(self.source_ids)
        self._keep = max(2, round(HISTORY_S / step_s))
        self._draws: list[FloatArray] = []  # one (racks,) row per step, gaps NaN, scheduled jobs taken out
        self._times: list[float] = []
        self._up = dict.fromkeys(self.source_ids, True)
        self._risk = dict.fromkeys(self.source_ids, 0.0)

    def record(self) -> None:
        """Read the fleet once: every rack's draw and every source's status."""
        telemetry = self.fleet.read_telemetry()
        powered = telemetry.active >= 0
        base = np.where(powered, telemetry.draw_kw - self._job_kw(telemetry.time_s), np.nan)
        self._draws.append(base)
        self._times.append(telemetry.time_s)
        if len(self._draws) > self._keep:
            del self._draws[0], self._times[0]
        statuses = self.fleet.read_sources()
        self._up.update((name, status.up) for name, status in statuses.items())
        for name, assessment in self.monitor.update(statuses).items():
            self._risk[name] = assessment.probability if assessment.ready else 0.0

    def inputs(self, horizon_s: float = PLAN_HORIZON_S) -> PlanInputs:
        """The conservative draws over `horizon_s` from the latest reading, and the risks."""
        if not self._draws:
            raise ValueError("no readings yet: record() the fleet at least once")
        steps = max(1, round(horizon_s / self.step_s))
        history = np.array(self._draws).T  # (racks, samples)
        config = ForecastConfig.daily_weekly(self.step_s, quantiles=(0.95,), window=self._keep)
        forecaster = LoadForecaster(config).fit(history, t0_s=self._times[0])
        forecast = forecaster.predict(steps)
        p95 = forecast.p95 + np.array([self._job_kw(t) for t in forecast.times_s]).T
        now = history[:, -1]
        peak = p95.max(axis=1)  # NaN for a rack never read: no forecast, counted at its rating
        draw = np.where(np.isnan(now) | np.isnan(peak), self.rated_kw, np.clip(peak, 0.0, self.rated_kw))
        up = tuple(self._up[s] for s in self.source_ids)
        risk = np.array([self._risk[s] if u else 1.0 for s, u in zip(self.source_ids, up, strict=True)])
        return PlanInputs(self.rack_ids, self.source_ids, draw, now, risk, up, forecaster.method, history.shape[1])

    def _job_kw(self, time_s: float) -> FloatArray:
        """The scheduled jobs' extra draw per rack at `time_s`."""
        return jobs_kw(self.jobs, self.rated_kw, np.array([time_s]))[:, 0]
