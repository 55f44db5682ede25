"""The forecaster's vocabulary: its configuration, a forecast with its quantiles, scheduled
loads, the fitting constants, and the shape checks of a history."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


Scalar = TypeVar("Scalar", bound=np.generic)


DAY_S = 86_400.0
# Fourier pairs unless configured: the shortest season's shape resolved to 1/16 of it (a
# daily profile to 1.5 h), the longer ones' to 1/40 (a weekly profile to about 4 h).
SHORTEST_SEASON_HARMONICS = 16
LONGER_SEASON_HARMONICS = 40
HUBER_ITERATIONS = 10  # pseudo-observation passes at most (see HUBER_TOLERANCE)
HUBER_TOLERANCE = 1e-3  # in sigmas: a pass that moves no fitted value more than this ends the fit
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation
OUTLIER_SIGMAS = 5.0  # a sample sticking out from both neighbours by this many sigmas is a spike
MIN_OBS_PER_PARAM = 4  # valid samples the model needs per fitted parameter
MIN_ROWS_PER_FEATURE = 10  # rows a residual regression needs per feature
BATCH_ELEMENTS = 2_000_000  # features solved together at most (16 MB of float64)
CLEANING_PASSES = 3  # one-step passes over gaps and spikes in the residuals
SCALE_SAMPLES = 2000  # samples a robust scale is estimated from
MIN_REL_SPREAD = 0.05  # the fallbacks' spread is at least this share of the mean level


@dataclass(frozen=True)
class ScheduledLoad:
    """An anticipated workload increase: `extra` more draw (in the series' unit) from
    `start_s` for `duration_s` seconds. A forecast step at time T carries it when
    start_s <= T < start_s + duration_s."""

    start_s: float
    duration_s: float
    extra: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and math.isfinite(self.extra)):
            raise ValueError(f"a scheduled load needs a finite start and extra draw, got {self}")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"a scheduled load lasts a positive, finite time, got duration_s={self.duration_s}")

    def draw_at(self, times_s: FloatArray) -> FloatArray:
        """The extra draw at each of `times_s`: `extra` inside the window, 0 outside."""
        inside = (times_s >= self.start_s) & (times_s < self.start_s + self.duration_s)
        return np.where(inside, self.extra, 0.0)


@dataclass(frozen=True)
class Forecast:
    """Forecast draw at `times_s` (steps 1..H after the last sample). `point` and each
    quantile are (H,) for one series or (series, H) for many."""

    times_s: FloatArray
    point: FloatArray
    quantiles: dict[float, FloatArray]
    method: str  # "seasonal regression + AR", "seasonal naive (season N)" or "mean"

    def quantile(self, q: float) -> FloatArray:
        """The forecast's `q` quantile; only the levels configured are available."""
        if q not in self.quantiles:
            raise ValueError(f"quantile {q} was not forecast; available: {sorted(self.quantiles)}")
        return self.quantiles[q]

    @property
    def p95(self) -> FloatArray:
        """The conservative number the allocation plans on."""
        return self.quantile(0.95)

    def with_loads(self, loads: Sequence[ScheduledLoad], row: int | None = None) -> Forecast:
        """This forecast with `loads` added to the point and every quantile; for many
        series, to `row` only, or to all when `row` is None."""
        extra = np.zeros_like(self.times_s)
        for load in loads:
            extra += load.draw_at(self.times_s)
        if row is None:
            return self.plus(extra)
        if self.point.ndim != 2 or not -self.point.shape[0] <= row < self.point.shape[0]:
            raise ValueError(f"row {row} does not exist in a forecast of shape {self.point.shape}")
        full = np.zeros_like(self.point)
        full[row] = extra
        return self.plus(full)

    def plus(self, extra: FloatArray) -> Forecast:
        """This forecast with `extra` (shaped like the point, or broadcast to it) added to
        the point and every quantile: draw known to come that the history cannot show."""
        return replace(self, point=self.point + extra, quantiles={q: v + extra for q, v in self.quantiles.items()})


@dataclass(frozen=True)
class ForecastConfig:
    """How to forecast a series sampled every `period_s` seconds.

    seasons: season lengths in samples (e.g. (48, 336) for half-hourly data).
    harmonics: Fourier pairs per season (None: SHORTEST_SEASON_HARMONICS for the
        shortest, LONGER_SEASON_HARMONICS for the others, at most season // 2 each).
    short_lags: lags of the residual regressions besides the seasons'; they carry the
        current level and its slope.
    window: samples fitted (a rolling window when updating); None: all history, which
        then grows with every update.
    quantiles: levels forecast besides the point (the mean).
    huber_k: clipping point of the seasonal fit, in robust sigmas.
    min_cycles: cycles of a season the window must hold to fit it.
    refit_every: samples between refits when updating; in between, new samples only
        extend the residual state, which costs a few vector operations.
    reseason_every: samples between refits of the seasonal mean alone when updating
        (None: only with the full refits). A seasonal mean fitted up to the latest
        samples takes in today's level, which one fitted an hour ago misses (on the
        benchmark's racks the 60-minute error of a model refitted 30 minutes ago is
        1.5% higher); the seasonal fit is about a quarter of a refit's cost, the
        residual regressions are the rest and keep their coefficients until the next.
    max_rows: rows (the latest origins) of each horizon's residual regression.
    interval_rows: rows spread evenly over the rest of the window whose errors join
        those of the latest rows in each horizon's quantiles: the latest rows alone (17
        hours of minute data) hold too few of the rare large misses (bursts, a job's
        edge) for a P95 an hour ahead.
    """

    period_s: float
    seasons: tuple[int, ...] = ()
    harmonics: tuple[int, ...] | None = None
    short_lags: tuple[int, ...] = (1, 2, 3)
    window: int | None = None
    quantiles: tuple[float, ...] = (0.05, 0.5, 0.95)
    huber_k: float = 2.0
    min_cycles: int = 2
    refit_every: int = 1
    reseason_every: int | None = None
    max_rows: int = 1000
    interval_rows: int = 500
    _harmonics: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.period_s > 0 and math.isfinite(self.period_s)):
            raise ValueError(f"period_s must be a positive number of seconds, got {self.period_s}")
        if any(int(s) != s or s < 2 for s in self.seasons):
            raise ValueError(f"seasons are whole numbers of samples, at least 2, got {self.seasons}")
        if self.harmonics is not None and len(self.harmonics) != len(self.seasons):
            raise ValueError(f"one harmonics count per season: seasons {self.seasons}, harmonics {self.harmonics}")
        harmonics = self.harmonics or tuple(
            min(SHORTEST_SEASON_HARMONICS if s == min(self.seasons) else LONGER_SEASON_HARMONICS, s // 2)
            for s in self.seasons
        )
        if any(not 1 <= k <= s // 2 for k, s in zip(harmonics, self.seasons, strict=True)):
            raise ValueError(f"harmonics per season must lie in 1..season // 2, got {harmonics} for {self.seasons}")
        if any(int(lag) != lag or lag < 1 for lag in self.short_lags):
            raise ValueError(f"short_lags are whole numbers of samples, at least 1, got {self.short_lags}")
        if not all(0 < q < 1 for q in self.quantiles):
            raise ValueError(f"quantile levels lie strictly between 0 and 1, got {self.quantiles}")
        if self.window is not None and self.window < 2:
            raise ValueError(f"window must be at least 2 samples (or None for all history), got {self.window}")
        reseason = 1 if self.reseason_every is None else self.reseason_every
        counts = (self.min_cycles, self.refit_every, reseason)
        if not self.huber_k > 0 or min(counts) < 1 or min(self.max_rows, self.interval_rows) < 10:
            raise ValueError("huber_k must be positive; min_cycles, refit_every and reseason_every at least 1; "
                             "max_rows and interval_rows at least 10")
        object.__setattr__(self, "_harmonics", harmonics)

    @classmethod
    def daily_weekly(cls, period_s: float, **options: object) -> ForecastConfig:
        """Daily and weekly seasons for data sampled every `period_s` seconds (which must
        divide a day)."""
        per_day = DAY_S / period_s
        if per_day != round(per_day):
            raise ValueError(f"a day must be a whole number of samples of {period_s} s")
        day = round(per_day)
        return cls(period_s, (day, 7 * day), **options)  # type: ignore[arg-type]

    def fittable_seasons(self, n: int) -> tuple[tuple[int, int], ...]:
        """(season, harmonics) of the seasons that `n` samples hold `min_cycles` of."""
        return tuple((s, k) for s, k in zip(self.seasons, self._harmonics, strict=True) if n >= self.min_cycles * s)


def as_history(values: ArrayLike) -> FloatArray:
    """`values` as a (series, samples) float array with gaps as NaN; ValueError, with
    what is wrong, for anything that is not one or many series with data."""
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"history must be numbers: {exc}") from exc
    if arr.ndim not in (1, 2):
        raise ValueError(f"history must be 1-D (one series) or 2-D (series x samples), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("history is empty: a forecast needs at least one value")
    arr = np.atleast_2d(arr)
    arr[~np.isfinite(arr)] = np.nan
    empty = np.flatnonzero(np.isnan(arr).all(axis=1))
    if empty.size:
        raise ValueError(f"series {empty.tolist()} of the history have no finite values")
    return arr


def check_horizon(horizon: object) -> int:
    """`horizon` as a positive whole number of steps, or ValueError."""
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be a positive whole number of steps, got {horizon!r}")
    return int(horizon)
