"""The controller's view of the site between plans: each tick's readings into the
telemetry store, the racks' forecasters fed from it on their own cadence, and every
source's fault risk, with state that survives a restart (rebuilt from the store).

Forecasts run on buckets of `period_s` (a minute, or the tick when it is longer): the
mean draw of the bucket, less the scheduled jobs the site knows of, with gaps as NaN. A
bucket is fed once no later reading can land in it. The forecasters refit every
`refit_s` and refit their seasonal mean alone every `reseason_s` (host/predict/forecast.py);
in between a bucket extends them cheaply.

A rack counts in a plan with the largest P95 of its forecast over the horizon, jobs
added, at most its rating; a rack with no forecast yet (or unpowered now) at its rating.
A source's risk is its fault predictor's probability; a source not up has risk 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from host.model.arrays import FloatArray
from host.model.fleet import FleetTelemetry, SourceStatus
from host.model.schedule import Job, jobs_kw
from host.model.site import Site
from host.predict.fault_monitor import FaultMonitor
from host.predict.forecast import LoadForecaster
from host.predict.forecast_config import ForecastConfig
from host.store.telemetry import TelemetryStore

WINDOW_S = 7 * 86_400.0  # the forecasters' rolling window: a week
MIN_PERIOD_S = 60.0


@dataclass(frozen=True)
class SiteView:
    """What a plan is made from, in the site's rack and source order."""

    time_s: float
    draw_kw: FloatArray  # conservative draw over the horizon, at most the rating
    draw_now_kw: FloatArray  # as read last (NaN: no reading or unpowered)
    risk: FloatArray  # fault probability; 1 for a source not up
    method: str  # the forecaster's
    samples: int  # buckets the forecast was fitted on


class LiveObserver:
    """Feeds the store, the forecasters and the fault monitor; `view()` for a plan."""

    def __init__(self, site: Site, store: TelemetryStore, *, tick_s: float, horizon_s: float, refit_s: float,
                 reseason_s: float, jobs: Sequence[Job] = (), window_s: float = WINDOW_S) -> None:
        self.site = site
        self.store = store
        self.rack_ids = tuple(r.id for r in site.racks)
        self.source_ids = tuple(s.id for s in site.sources)
        self.rated_kw = np.array([r.rated_kw for r in site.racks], dtype=np.float64)
        self.period_s = max(MIN_PERIOD_S, math.ceil(tick_s / MIN_PERIOD_S) * MIN_PERIOD_S)
        self.tick_s = tick_s
        self.horizon_s = horizon_s
        self.jobs = tuple(jobs)
        self.window = max(2, round(window_s / self.period_s))
        self.config = ForecastConfig.daily_weekly(
            self.period_s, quantiles=(0.95,), window=self.window,
            refit_every=max(1, round(refit_s / self.period_s)),
            reseason_every=max(1, round(reseason_s / self.period_s)))
        self.monitor = FaultMonitor(self.source_ids)
        self.forecaster: LoadForecaster | None = None
        self._next_bucket: int | None = None  # the first bucket not yet fed to the forecasters
        self._risk = dict.fromkeys(self.source_ids, 0.0)
        self._up = dict.fromkeys(self.source_ids, True)
        self.latest: FleetTelemetry | None = None
        self.statuses: dict[str, SourceStatus] = {}

    # -- after a restart ----------------------------------------------------------------------------

    def rebuild(self, now_s: float) -> int:
        """The forecasters and the fault monitor from what the store holds; the buckets
        the forecasters were fitted on."""
        for _, statuses in self.store.source_history(now_s - self.monitor.config.baseline_s - WINDOW_S):
            self._assess(statuses)
        last = self.store.latest_time()
        if last is None:
            return 0
        self._next_bucket = math.floor((last - self.window * self.period_s) / self.period_s)
        return self._feed(last)

    # -- every tick -----------------------------------------------------------------------------------

    def record(self, telemetry: FleetTelemetry, statuses: Mapping[str, SourceStatus]) -> None:
        """One tick's readings: stored, the risks updated, complete buckets fed."""
        risk = self._assess(statuses)
        self.store.write(telemetry, statuses, risk)
        self.latest = telemetry
        self.statuses = dict(statuses)
        if self._next_bucket is None:
            self._next_bucket = math.floor(telemetry.time_s / self.period_s)
        self._feed(telemetry.time_s)

    def _assess(self, statuses: Mapping[str, SourceStatus]) -> dict[str, float]:
        self._up.update((name, status.up) for name, status in statuses.items())
        for name, assessment in self.monitor.update(statuses).items():
            self._risk[name] = assessment.probability if assessment.ready else 0.0
        return {s: self.risk_of(s) for s in self.source_ids}

    def risk_of(self, source_id: str) -> float:
        """For the plan: the predicted risk, 1 for a source that is not up."""
        return self._risk[source_id] if self._up.get(source_id, True) else 1.0

    def predicted_risk(self, source_id: str) -> float:
        """The fault monitor's probability alone (a source down is a loss, not a prediction)."""
        return self._risk[source_id]

    def _feed(self, now_s: float) -> int:
        """Feed every bucket no later reading can land in; the buckets fed."""
        assert self._next_bucket is not None
        last_complete = math.floor((now_s + self.tick_s) / self.period_s) - 1
        if last_complete < self._next_bucket:
            return 0
        start = self._next_bucket * self.period_s
        times, draws = self.store.rack_history(self.rack_ids, self.period_s, start,
                                               last_complete * self.period_s)
        draws = draws - jobs_kw(self.jobs, self.rated_kw, times + self.period_s / 2)
        self._next_bucket = last_complete + 1
        if self.forecaster is None:
            if np.isnan(draws).all():
                return 0  # nothing read yet: no history to fit
            self.forecaster = LoadForecaster(self.config).fit(_filled(draws), t0_s=float(times[0]))
        else:
            self.forecaster.update(draws)
        return draws.shape[1]

    # -- for a plan -----------------------------------------------------------------------------------

    def view(self) -> SiteView:
        """The conservative draws over the horizon from now, and the risks (module docstring)."""
        if self.latest is None:
            raise ValueError("no readings yet: record() the fleet at least once")
        telemetry = self.latest
        order = [telemetry.index(r) for r in self.rack_ids]
        powered = telemetry.active[order] >= 0
        now = np.where(powered, telemetry.draw_kw[order], np.nan)
        draw = self.rated_kw.copy()
        method, samples = "none yet: racks at their rating", 0
        if self.forecaster is not None:
            steps = max(1, math.ceil(self.horizon_s / self.period_s))
            forecast = self.forecaster.predict(steps)
            p95 = np.atleast_2d(forecast.p95) + jobs_kw(self.jobs, self.rated_kw, forecast.times_s)
            with np.errstate(invalid="ignore"):
                peak = np.nanmax(np.where(np.isfinite(p95), p95, np.nan), axis=1) if p95.size else np.full(
                    len(draw), np.nan)
            known = powered & np.isfinite(peak) & np.isfinite(now)
            draw = np.where(known, np.clip(np.maximum(peak, now), 0.0, self.rated_kw), self.rated_kw)
            method, samples = self.forecaster.method, int(self.window)
        risk = np.array([self.risk_of(s) for s in self.source_ids])
        return SiteView(telemetry.time_s, draw, now, risk, method, samples)


def _filled(draws: FloatArray) -> FloatArray:
    """A first history whose racks never read carry one 0 sample: the forecaster needs a
    finite value per series, and such a rack counts at its rating anyway (not powered)."""
    out = draws.copy()
    empty = np.isnan(out).all(axis=1)
    out[empty, -1] = 0.0
    return out
