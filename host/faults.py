"""Fault prediction per source: from the stream of a source's health signals, how
abnormal it is, how soon a signal will cross its alarm threshold, the probability that
it fails within a horizon, and the signal that drove it.

Method
------
One `FaultPredictor` per source, fed one sample per step (`update`): the time, the
signals (`HealthSignals`, or a sequence in its field order; None or NaN for a dropout)
and the source's load fraction (load over capacity). Pure: plain data in and out, no
I/O, numpy and scipy only.

1. Baseline, the source's own: the samples of its first `baseline_s` (a day by
   default) are kept, and each signal is fitted by robust least squares (Huber, by
   iteratively reweighted least squares, with a small ridge on all but the intercept)
   on an intercept, the load fraction, smoothed by the thermal lag (`load_tau_s`), and
   a daily pair (cosine, sine of the time of day) when the baseline covers most of a
   day. Its scale is the MAD of the fit's residuals. Load steps and the ambient's daily
   swing are thus explained by the baseline and leave the residual alone.
2. Residuals are collected in bins (`bin_s`, an hour) and each bin is summarised by its
   median: a gap (None, NaN) only thins a bin, a bin with too few readings is a gap,
   and spikes do not move the level. The level of a signal is the median of its latest
   `level_bins` bins; its robust z-score is level / scale. `score` is the largest z-score (one
   signal's fault is not diluted by the healthy others).
3. Trend: a Theil-Sen slope of the bins over each of `trend_windows_s` (a day, for
   fast faults, and three, for slow ones), the steeper kept. A trend counts only if
   it is rising in each of `trend_parts` consecutive parts of the window, at 90%
   confidence (the lower bound of each part's Theil-Sen slope above zero): a step that
   stays flat (a recalibration) rises in one part only, a bump (a hot afternoon, a load
   step the baseline did not explain) rises then falls; neither is a trend. The time to
   threshold is (threshold - level) / slope, 0 once every bin of the last `over_s` (six
   hours) is over the threshold (so a few hours of confounders stacked over it do not
   count), and infinite without a trend. Thresholds are rises over the baseline per signal,
   `max(absolute, relative x baseline level)` (`FaultConfig.thresholds`).
4. Probability of failure within `horizon_s`, per signal, a logistic function:
   ``logit p = b0 + b1 * log(horizon / ttt) + b2 * (min(z, z_cap) - z0)``, ttt clipped
   to [horizon / 30, 30 x horizon]. The source's probability is the largest, and the
   signal with it is the driver. THE COEFFICIENTS ARE NOT CALIBRATED: the defaults are
   set by hand so that a signal on course to cross its threshold within the horizon
   reads about 0.5 and more, and a high z-score alone (a confounder's jump) stays well
   below. They are meant to be fitted (logistic regression of "failed within the
   horizon" on the two features) on many simulated runs of the scenario families.
   The alarm is the probability at `alarm_probability` or over, held for `hold_s` after
   it last was (a slow trend near the noise is not accepted at every bin).

What it does not catch: failures with no precursor (`sudden_failure`), by design; a
confounder that pushes a signal over its threshold by itself (a recalibration jump as
large as the threshold); a fault already present while the baseline is learned.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats  # type: ignore[import-untyped]  # no stubs ship with scipy

from host.site.arrays import FloatArray
from host.site.fleet import HealthSignals

SIGNALS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(HealthSignals))
DAY_S = 86_400.0

# per signal: (absolute rise, relative rise over the baseline level); the threshold is the larger
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "temperature_c": (10.0, 0.0),
    "vibration_rms_mg": (0.0, 1.0),
    "kurtosis": (1.5, 0.0),
    "crest_factor": (1.5, 0.0),
    "ripple_pct": (0.0, 0.5),
    "thd_pct": (1.0, 0.0),
}


@dataclass(frozen=True)
class FaultConfig:
    baseline_s: float = DAY_S  # the healthy baseline is learned from the first baseline_s of samples
    daily_min_s: float = 0.8 * DAY_S  # fit the daily pair only when the baseline covers this much
    load_tau_s: float = 1200.0  # thermal lag of the signals behind the load
    bin_s: float = 3600.0
    min_bin_fraction: float = 0.25  # a bin with fewer readings (of those expected at the step seen) is a gap
    trend_windows_s: tuple[float, ...] = (DAY_S, 3 * DAY_S)  # a fast and a slow trend; the sooner crossing counts
    trend_parts: int = 3
    over_s: float = 6 * 3600.0  # a level counts as over its threshold once the median of this long is over it
    level_bins: int = 3  # the level is the median of the latest bins
    trend_confidence: float = 0.90  # of each part's rise
    hold_s: float = 12 * 3600.0  # an alarm stays raised this long after the probability last reached the alarm level
    min_trend_bins: int = 9
    horizon_s: float = 2 * DAY_S
    alarm_probability: float = 0.5
    thresholds: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    ridge: float = 1e-3
    min_scale_fraction: float = 1e-3  # scale floor, relative to the baseline level
    logit: tuple[float, float, float] = (0.0, 2.0, 0.5)  # b0, b1, b2: to be fitted on simulated runs
    z0: float = 3.0
    z_cap: float = 6.0


@dataclass(frozen=True)
class SignalAssessment:
    signal: str
    level: float  # robust residual over the baseline (median of the latest bins), in the signal's unit
    z: float  # level / baseline scale
    threshold: float  # the alarm threshold, as a rise over the baseline
    slope_per_s: float  # the accepted rising trend, 0 without one
    time_to_threshold_s: float  # 0 over the threshold, inf without a trend
    probability: float


@dataclass(frozen=True)
class FaultAssessment:
    time_s: float
    ready: bool  # False while the baseline is learned: nothing else is meaningful then
    score: float  # the largest robust z-score
    probability: float  # of a failure within the horizon (uncalibrated, see the module docstring)
    time_to_threshold_s: float
    driver: str | None  # the signal with the largest probability
    alarm: bool
    signals: tuple[SignalAssessment, ...] = ()


@dataclass(frozen=True)
class _Baseline:
    coef: FloatArray  # (signals, features); NaN rows for signals never seen
    scale: FloatArray  # (signals,)
    level: FloatArray  # (signals,) mean fitted value over the baseline
    daily: bool


def _features(t: FloatArray, load: FloatArray, daily: bool) -> FloatArray:
    columns = [np.ones_like(t), load]
    if daily:
        phase = 2 * np.pi * (t % DAY_S) / DAY_S
        columns += [np.cos(phase), np.sin(phase)]
    return np.column_stack(columns)


def huber_fit(x: FloatArray, y: FloatArray, ridge: float = 1e-3, iterations: int = 20) -> tuple[FloatArray, float]:
    """Huber regression of y on x (first column the intercept, not penalised) by
    iteratively reweighted least squares, with a ridge on the other columns (scaled by
    their spread, so a constant column gets a zero coefficient). Returns the
    coefficients and the MAD scale of the residuals."""
    spread = x.std(axis=0)
    penalty = ridge * len(y) * np.where(spread > 0, spread**2, 1.0)
    penalty[0] = 0.0
    weights = np.ones(len(y))
    coef: FloatArray = np.zeros(x.shape[1])
    scale = 0.0
    for _ in range(iterations):
        xw = x * weights[:, None]
        coef = np.asarray(np.linalg.solve(xw.T @ x + np.diag(penalty), xw.T @ y), dtype=float)
        residual = y - x @ coef
        scale = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
        if scale <= 0:
            break
        u = np.abs(residual) / (1.345 * scale)
        new = np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
        if np.allclose(new, weights, atol=1e-4):
            break
        weights = new
    return coef, scale


def _fit_baseline(t: FloatArray, load: FloatArray, values: FloatArray, config: FaultConfig) -> _Baseline:
    daily = bool(len(t)) and float(t[-1] - t[0]) >= config.daily_min_s
    x = _features(t, load, daily)
    n = len(SIGNALS)
    coef = np.full((n, x.shape[1]), np.nan)
    scale = np.full(n, np.nan)
    level = np.full(n, np.nan)
    for j in range(n):
        ok = np.isfinite(values[:, j])
        if ok.sum() < max(10, 2 * x.shape[1]):
            continue
        c, s = huber_fit(x[ok], values[ok, j], config.ridge)
        coef[j] = c
        level[j] = float(np.mean(x[ok] @ c))
        scale[j] = max(s, config.min_scale_fraction * abs(level[j]), 1e-9)
    return _Baseline(coef, scale, level, daily)


def rising_trend(t: FloatArray, y: FloatArray, parts: int, min_points: int, confidence: float = 0.95) -> float:
    """Theil-Sen slope of y over t if y rises, at `confidence`, in each of `parts`
    consecutive parts of the window; 0 otherwise (too few points, flat, a step, a bump)."""
    ok = np.isfinite(y)
    t, y = t[ok], y[ok]
    if len(t) < max(min_points, 3 * parts):
        return 0.0
    for chunk_t, chunk_y in zip(np.array_split(t, parts), np.array_split(y, parts), strict=True):
        low = stats.theilslopes(chunk_y, chunk_t, confidence).low_slope
        if not low > 0:
            return 0.0
    return max(float(stats.theilslopes(y, t).slope), 0.0)


def failure_probability(z: float, time_to_threshold_s: float, config: FaultConfig) -> float:
    """The logistic model of the module docstring (uncalibrated coefficients)."""
    if not math.isfinite(z):
        return 0.0
    h = config.horizon_s
    ttt = min(max(time_to_threshold_s, h / 30.0), 30.0 * h)
    b0, b1, b2 = config.logit
    logit = b0 + b1 * math.log(h / ttt) + b2 * (min(max(z, 0.0), config.z_cap) - config.z0)
    return 1.0 / (1.0 + math.exp(-logit))


class FaultPredictor:
    """Fault prediction for one source, updated online. See the module docstring."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.config = config or FaultConfig()
        self._t0: float | None = None
        self._last_t: float | None = None
        self._step_s = 0.0
        self._load: float | None = None
        self._learning: list[tuple[float, float, list[float]]] = []
        self._baseline: _Baseline | None = None
        self._bin_index: int | None = None
        self._bin: list[list[float]] = [[] for _ in SIGNALS]
        window = max(1, round(max(self.config.trend_windows_s) / self.config.bin_s))
        self._bins: deque[tuple[float, FloatArray]] = deque(maxlen=window)
        self._last: FaultAssessment | None = None
        self._raised_s: float | None = None

    @property
    def baseline_ready(self) -> bool:
        return self._baseline is not None

    def update(
        self, time_s: float, signals: HealthSignals | Sequence[float | None] | None, load_fraction: float
    ) -> FaultAssessment:
        """Take one sample; return the assessment as of it (recomputed when an hourly bin closes)."""
        cfg = self.config
        values = _as_values(signals)
        load = float(load_fraction) if math.isfinite(load_fraction) else 0.0
        if self._t0 is None:
            self._t0 = time_s
        if self._load is None or self._last_t is None:
            self._load = load
        elif time_s > self._last_t:
            dt = time_s - self._last_t
            self._step_s = dt if self._step_s == 0 else min(self._step_s, dt)
            self._load += (1.0 - math.exp(-dt / cfg.load_tau_s)) * (load - self._load)
        self._last_t = time_s
        smoothed = self._load
        if self._baseline is None:
            if time_s - self._t0 < cfg.baseline_s:
                self._learning.append((time_s, smoothed, values))
                return FaultAssessment(time_s, False, 0.0, 0.0, math.inf, None, False)
            arr = np.array([row[2] for row in self._learning], dtype=float).reshape(-1, len(SIGNALS))
            t = np.array([row[0] for row in self._learning])
            lf = np.array([row[1] for row in self._learning])
            self._baseline = _fit_baseline(t, lf, arr, cfg)
            self._learning = []
        base = self._baseline
        expected = base.coef @ _features(np.array([time_s]), np.array([smoothed]), base.daily)[0]
        residual = np.asarray(values) - expected
        index = int((time_s - self._t0) // cfg.bin_s)
        if self._bin_index is not None and index != self._bin_index:
            self._close_bin()
            self._last = self._assess(time_s)
        self._bin_index = index
        for j, r in enumerate(residual):
            if math.isfinite(r):
                self._bin[j].append(float(r))
        if self._last is None:
            return FaultAssessment(time_s, True, 0.0, 0.0, math.inf, None, False)
        return dataclasses.replace(self._last, time_s=time_s)

    def _latch(self, time_s: float, probability: float) -> bool:
        if probability >= self.config.alarm_probability:
            self._raised_s = time_s
        return self._raised_s is not None and time_s - self._raised_s <= self.config.hold_s

    def _close_bin(self) -> None:
        cfg = self.config
        assert self._bin_index is not None and self._t0 is not None
        expected = cfg.bin_s / self._step_s if self._step_s > 0 else 1.0
        medians = np.array(
            [float(np.median(b)) if len(b) >= max(1.0, cfg.min_bin_fraction * expected) else math.nan
             for b in self._bin]
        )
        centre = self._t0 + (self._bin_index + 0.5) * cfg.bin_s
        self._bins.append((centre, medians))
        self._bin = [[] for _ in SIGNALS]

    def _assess(self, time_s: float) -> FaultAssessment:
        cfg = self.config
        base = self._baseline
        assert base is not None
        t = np.array([b[0] for b in self._bins])
        y = np.array([b[1] for b in self._bins])
        out = []
        for j, name in enumerate(SIGNALS):
            latest = y[-cfg.level_bins:, j]
            level = float(np.nanmedian(latest)) if np.isfinite(latest[-1]) else math.nan
            if not (math.isfinite(level) and math.isfinite(base.scale[j])):
                continue
            z = level / float(base.scale[j])
            rise_abs, rise_rel = cfg.thresholds.get(name, (math.inf, 0.0))
            threshold = max(rise_abs, rise_rel * abs(float(base.level[j])))
            recent = y[t > t[-1] - cfg.over_s, j]
            if len(recent) >= round(cfg.over_s / cfg.bin_s) and np.nanmedian(recent) >= threshold:
                slope, ttt = 0.0, 0.0
            else:
                slope = 0.0
                for window_s in cfg.trend_windows_s:
                    inside = t > t[-1] - window_s
                    parts, confidence = cfg.trend_parts, cfg.trend_confidence
                    rise = rising_trend(t[inside], y[inside, j], parts, cfg.min_trend_bins, confidence)
                    slope = max(slope, rise)
                ttt = max(threshold - level, 0.0) / slope if slope > 0 else math.inf
            out.append(SignalAssessment(name, level, z, threshold, slope, ttt, failure_probability(z, ttt, cfg)))
        if not out:
            return FaultAssessment(time_s, True, 0.0, 0.0, math.inf, None, False)
        worst = max(out, key=lambda s: (s.probability, s.z))
        score = max(max(s.z for s in out), 0.0)
        return FaultAssessment(
            time_s=time_s,
            ready=True,
            score=score,
            probability=worst.probability,
            time_to_threshold_s=min(s.time_to_threshold_s for s in out),
            driver=worst.signal,
            alarm=self._latch(time_s, worst.probability),
            signals=tuple(out),
        )


def _as_values(signals: HealthSignals | Sequence[float | None] | None) -> list[float]:
    if signals is None:
        return [math.nan] * len(SIGNALS)
    raw = [getattr(signals, name) for name in SIGNALS] if isinstance(signals, HealthSignals) else list(signals)
    if len(raw) != len(SIGNALS):
        raise ValueError(f"expected {len(SIGNALS)} signals ({', '.join(SIGNALS)}), got {len(raw)}")
    return [math.nan if v is None else float(v) for v in raw]
