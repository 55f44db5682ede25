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
4. Sensor steps: an abrupt, lasting shift of one signal (a recalibration, a replaced
   sensor) is found from the bins (a plateau, one bin of change, a plateau at another
   level, with no change of load) and taken out of that signal from then on; it is
   kept in `steps` for the engineer to see.
5. Probability of failure within `horizon_s`, per signal, a logistic function:
   ``logit p = b0 + b1 * log(horizon / ttt) + b2 * (min(z, z_cap) - z0)``, ttt clipped
   to [horizon / 30, 30 x horizon]. The source's probability is the largest, and the
   signal with it is the driver. The coefficients are fitted by maximum likelihood
   (`fit_logit`, of the model as used: the largest over the signals) on the randomised
   cases of host/sim/site/fault_cases.py, seeds apart from those the benchmark scores on
   (`benchmarks/faults.py --calibrate`); the benchmark reports the calibration on its
   own seeds. The fit says how far these two features go: a source already over its
   threshold reads about 0.7, because degradations go on for days after crossing.
   The alarm is the probability at `alarm_probability` or over, held for `hold_s` after
   it last was (a slow trend near the noise is not accepted at every bin).

What is shared by every source (a hot afternoon) is taken out by the site's
FaultMonitor (fault_monitor.py), not here: a predictor alone takes a hot afternoon that
stays over a threshold for more than `over_s` for a fault.

What it does not catch: failures with no precursor (`sudden_failure`), by design; a
fault that shows as a step (taken for a sensor step, and reported as one); a fault
already present while the baseline is learned.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from scipy import optimize  # type: ignore[import-untyped]  # no stubs ship with scipy

from host.model.arrays import FloatArray, IntArray
from host.model.fleet import HealthSignals

SIGNALS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(HealthSignals))
DAY_S = 86_400.0
MIN_PLATEAU_BINS = 3

# per signal: (absolute rise, relative rise over the baseline level); the threshold is the larger
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "temperature_c": (10.0, 0.0),
    "vibration_rms_mg": (0.0, 1.0),
    "kurtosis": (1.5, 0.0),
    "crest_factor": (1.5, 0.0),
    "ripple_pct": (0.0, 0.5),
    "thd_pct": (1.0, 0.0),
}


def rise_threshold(signal: str, level: float,
                   thresholds: Mapping[str, tuple[float, float]] = DEFAULT_THRESHOLDS) -> float:
    """How far a signal may rise over `level` before it is over its threshold: the
    larger of the absolute and the relative rise (infinite for a signal with none)."""
    rise_abs, rise_rel = thresholds.get(signal, (math.inf, 0.0))
    return max(rise_abs, rise_rel * abs(level))


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
    alarm_probability: float = 0.3  # chosen on the calibration seeds (benchmarks/faults.py --calibrate)
    thresholds: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    ridge: float = 1e-3
    min_scale_fraction: float = 1e-3  # scale floor, relative to the baseline level
    # b0, b1, b2, fitted by `benchmarks/faults.py --calibrate --cases 60` (seeds 1000-1059)
    logit: tuple[float, float, float] = (-2.217, 0.309, 0.698)
    z0: float = 3.0
    z_cap: float = 6.0
    step_bins: int = 3  # flat bins each side of a sensor step
    step_z: float = 5.0  # a sensor step is at least this many baseline scales...
    step_fraction: float = 0.25  # ...and this fraction of the signal's threshold
    step_flatness: float = 0.25  # the bins each side span at most this fraction of the step
    step_load_change: float = 0.15  # a shift with a change of load fraction this large is no sensor step
    step_history_bins: int = 12  # the plateau before a step: so many bins (at least MIN_PLATEAU_BINS of them)


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
    probability: float  # of a failure (with a precursor) within the horizon
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


@functools.lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[IntArray, IntArray]:
    i, j = np.triu_indices(n, 1)
    return i, j


def theil_sen(t: FloatArray, y: FloatArray, confidence: float = 0.95) -> tuple[float, float]:
    """Theil-Sen slope of y over t (t increasing) and the lower bound of its two-sided
    `confidence` interval, by Sen (1968) eq. 2.6 without ties (distinct times, continuous
    readings): scipy.stats.theilslopes' figures, without its per-call overhead, which
    took half the predictor's time."""
    n = len(t)
    i, j = _pairs(n)
    slopes = np.sort((y[j] - y[i]) / (t[j] - t[i]))
    sigma = math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    z = NormalDist().inv_cdf((1.0 - confidence) / 2.0)  # negative
    low = max(round((len(slopes) + z * sigma) / 2.0) - 1, 0)
    return float(np.median(slopes)), float(slopes[low])


def rising_trend(t: FloatArray, y: FloatArray, parts: int, min_points: int, confidence: float = 0.95) -> float:
    """Theil-Sen slope of y over t if y rises, at `confidence`, in each of `parts`
    consecutive parts of the window; 0 otherwise (too few points, flat, a step, a bump)."""
    ok = np.isfinite(y)
    t, y = t[ok], y[ok]
    if len(t) < max(min_points, 3 * parts):
        return 0.0
    for chunk_t, chunk_y in zip(np.array_split(t, parts), np.array_split(y, parts), strict=True):
        if not theil_sen(chunk_t, chunk_y, confidence)[1] > 0:
            return 0.0
    return max(theil_sen(t, y)[0], 0.0)


def logit_features(z: float, time_to_threshold_s: float, config: FaultConfig) -> tuple[float, float]:
    """The two features of the logistic model: log(horizon / time to threshold), the time
    clipped to [horizon / 30, 30 x horizon], and the z-score, clipped to [0, z_cap], less z0."""
    h = config.horizon_s
    ttt = min(max(time_to_threshold_s, h / 30.0), 30.0 * h)
    return math.log(h / ttt), min(max(z, 0.0), config.z_cap) - config.z0


def failure_probability(z: float, time_to_threshold_s: float, config: FaultConfig) -> float:
    """The logistic model of the module docstring, point 5."""
    if not math.isfinite(z):
        return 0.0
    f1, f2 = logit_features(z, time_to_threshold_s, config)
    b0, b1, b2 = config.logit
    return 1.0 / (1.0 + math.exp(-(b0 + b1 * f1 + b2 * f2)))


def fit_logit(
    samples: Sequence[Sequence[SignalAssessment]], failed: Sequence[bool], config: FaultConfig
) -> tuple[float, float, float]:
    """Maximum-likelihood coefficients (b0, b1, b2) of the model as it is used: a
    sample's probability is the largest over its signals. `samples` are the signal
    assessments of a source at one time, `failed` whether it failed (with a precursor)
    within the horizon from then."""
    rows = [[logit_features(a.z, a.time_to_threshold_s, config) for a in sample if math.isfinite(a.z)]
            for sample in samples]
    width = max((len(r) for r in rows), default=0)
    if width == 0 or not any(failed) or all(failed):
        raise ValueError("calibration needs samples of both outcomes, with signals")
    f = np.full((len(rows), width, 2), np.nan)
    for i, r in enumerate(rows):
        if r:
            f[i, :len(r)] = r
    y = np.asarray(failed, dtype=float)

    def loss(b: FloatArray) -> float:
        logits = np.nanmax(b[0] + b[1] * f[:, :, 0] + b[2] * f[:, :, 1], axis=1, initial=-50.0)
        # -log-likelihood with log(1 + e^x) written stably
        return float(np.sum(np.logaddexp(0.0, logits) - y * logits))

    result = optimize.minimize(loss, np.asarray(config.logit, dtype=float), method="Nelder-Mead",
                               options={"xatol": 1e-4, "fatol": 1e-3, "maxiter": 4000})
    b0, b1, b2 = (float(v) for v in result.x)
    return b0, b1, b2


@dataclass(frozen=True)
class SensorStep:
    """An abrupt, lasting shift of one signal (a recalibration, a replaced sensor), taken
    out of the signal from then on rather than read as a fault."""

    time_s: float  # the middle of the bin it happened in
    signal: str
    size: float  # in the signal's unit


class FaultPredictor:
    """Fault prediction for one source, updated online. See the module docstring.

    `update` takes a sample and returns the assessment. A site monitor that removes
    what all sources share (fault_monitor.py) calls its two halves instead: `residual`
    (the sample against the source's own baseline) and `add` (a residual, possibly
    corrected, into the bins and the assessment)."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.config = config or FaultConfig()
        self._t0: float | None = None
        self._last_t: float | None = None
        self._step_s = 0.0
        self._load: float | None = None
        self._learning: list[tuple[float, float, list[float]]] = []
        self._baseline: _Baseline | None = None
        self._offset = np.zeros(len(SIGNALS))  # the sensor steps taken out so far
        self._bin_index: int | None = None
        self._bin: list[list[float]] = [[] for _ in SIGNALS]
        window = max(1, round(max(self.config.trend_windows_s) / self.config.bin_s))
        self._bins: deque[tuple[float, FloatArray, float]] = deque(maxlen=window)  # centre, medians, mean load
        self._bin_loads: list[float] = []  # the smoothed load fraction at each sample of the open bin
        self._last: FaultAssessment | None = None
        self._raised_s: float | None = None
        self.steps: list[SensorStep] = []

    @property
    def baseline_ready(self) -> bool:
        return self._baseline is not None

    def update(
        self, time_s: float, signals: HealthSignals | Sequence[float | None] | None, load_fraction: float
    ) -> FaultAssessment:
        """Take one sample; return the assessment as of it (recomputed when an hourly bin closes)."""
        return self.add(time_s, self.residual(time_s, signals, load_fraction))

    def residual(
        self, time_s: float, signals: HealthSignals | Sequence[float | None] | None, load_fraction: float
    ) -> FloatArray | None:
        """The sample less the source's own baseline (and the sensor steps seen), per
        signal, NaN for a gap; None while the baseline is being learned."""
        cfg = self.config
        values = as_values(signals)
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
                return None
            arr = np.array([row[2] for row in self._learning], dtype=float).reshape(-1, len(SIGNALS))
            t = np.array([row[0] for row in self._learning])
            lf = np.array([row[1] for row in self._learning])
            self._baseline = _fit_baseline(t, lf, arr, cfg)
            self._learning = []
        base = self._baseline
        expected = base.coef @ _features(np.array([time_s]), np.array([smoothed]), base.daily)[0]
        out: FloatArray = np.asarray(values) - expected - self._offset
        return out

    def add(self, time_s: float, residual: FloatArray | None) -> FaultAssessment:
        """Bin one residual (from `residual`); return the assessment as of it."""
        if residual is None or self._t0 is None:
            return FaultAssessment(time_s, False, 0.0, 0.0, math.inf, None, False)
        index = int((time_s - self._t0) // self.config.bin_s)
        if self._bin_index is not None and index != self._bin_index:
            self._close_bin()
            self._take_out_steps()
            self._last = self._assess(time_s)
        self._bin_index = index
        for j, r in enumerate(residual):
            if math.isfinite(r):
                self._bin[j].append(float(r))
        if self._load is not None:
            self._bin_loads.append(self._load)
        if self._last is None:
            return FaultAssessment(time_s, True, 0.0, 0.0, math.inf, None, False)
        return dataclasses.replace(self._last, time_s=time_s)

    def threshold(self, j: int) -> float:
        """Signal j's alarm threshold, as a rise over its baseline."""
        assert self._baseline is not None
        return rise_threshold(SIGNALS[j], float(self._baseline.level[j]), self.config.thresholds)

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
        load = float(np.mean(self._bin_loads)) if self._bin_loads else math.nan
        self._bins.append((centre, medians, load))
        self._bin = [[] for _ in SIGNALS]
        self._bin_loads = []

    def _take_out_steps(self) -> None:
        """Find an abrupt, lasting shift: a plateau (the `step_bins` bins before it agree
        with the `step_history_bins` before those), one bin in which it happened, and
        `step_bins` flat bins at another level; the shift at least `step_z` scales and
        `step_fraction` of the threshold. A degradation ramps, so its bins are not flat;
        the end of a bump (a hot afternoon) returns to the level before it, so its
        "plateau" is not one. Nor is a shift that came with a change of load by
        `step_load_change` or more: that is the baseline's load term falling short on a
        source whose response to load has changed, a sign of the fault itself. The shift
        is added to the offset taken from every later sample and subtracted from the
        bins after it, so neither the level nor the trends see it."""
        cfg = self.config
        k = cfg.step_bins
        if len(self._bins) < 2 * k + 1 + MIN_PLATEAU_BINS or self._baseline is None:
            return
        bins = list(self._bins)
        recent = bins[-(2 * k + 1):]
        earlier = np.array([b[1] for b in bins[-(2 * k + 1) - cfg.step_history_bins:-(2 * k + 1)]])
        y = np.array([b[1] for b in recent])
        loads = [b[2] for b in recent]
        if not abs(float(np.mean(loads[k + 1:]) - np.mean(loads[:k]))) < cfg.step_load_change:
            return
        for j, name in enumerate(SIGNALS):
            before, during, after = y[:k, j], y[k, j], y[k + 1:, j]
            history = earlier[:, j][np.isfinite(earlier[:, j])]
            if not (np.isfinite(before).all() and np.isfinite(after).all()) or len(history) < MIN_PLATEAU_BINS:
                continue
            size = float(np.median(after) - np.median(before))
            least = max(cfg.step_z * float(self._baseline.scale[j]), cfg.step_fraction * self.threshold(j))
            tolerance = cfg.step_flatness * abs(size)
            flat = max(np.ptp(before), np.ptp(after)) <= tolerance
            plateau = abs(float(np.median(history) - np.median(before))) <= tolerance
            if abs(size) < least or not (flat and plateau):
                continue
            self._offset[j] += size
            for _, medians, _ in recent[k + 1:]:
                medians[j] -= size
            if math.isfinite(during):
                recent[k][1][j] = float(np.median(before))
            self.steps.append(SensorStep(recent[k][0], name, size))

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
            threshold = self.threshold(j)
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


def as_values(signals: HealthSignals | Sequence[float | None] | None) -> list[float]:
    """Readings in SIGNALS order, NaN for a dropout or a missing sensor."""
    if signals is None:
        return [math.nan] * len(SIGNALS)
    raw = [getattr(signals, name) for name in SIGNALS] if isinstance(signals, HealthSignals) else list(signals)
    if len(raw) != len(SIGNALS):
        raise ValueError(f"expected {len(SIGNALS)} signals ({', '.join(SIGNALS)}), got {len(raw)}")
    return [math.nan if v is None else float(v) for v in raw]
