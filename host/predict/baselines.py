"""The forecasts the forecaster falls back to, and is measured against: the seasonal naive
forecast, the mean and the last value, with Student-t intervals; and row-wise empirical
quantiles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats  # type: ignore[import-untyped]  # no stubs ship with scipy

from host.predict.forecast_config import MIN_REL_SPREAD, FloatArray, as_history, check_horizon


def seasonal_naive(history: ArrayLike, season: int, horizon: int) -> FloatArray:
    """Each step repeats the value one season earlier (the last cycle, repeated): the
    baseline a forecaster has to beat. A gap takes the same phase of an earlier cycle, or
    the series' mean when no cycle has it. Shape (horizon,) or (series, horizon)."""
    y = as_history(history)
    horizon = check_horizon(horizon)
    if isinstance(season, bool) or int(season) != season or season < 1:
        raise ValueError(f"season must be a positive whole number of samples, got {season!r}")
    n = y.shape[1]
    if n < season:
        raise ValueError(f"seasonal naive needs one full season ({season} samples) of history, got {n}")
    cycles = n // season
    last = y[:, n - cycles * season :].reshape(y.shape[0], cycles, season)
    profile = last[:, -1, :].copy()
    for c in range(cycles - 2, -1, -1):  # fill gaps from ever older cycles
        profile = np.where(np.isnan(profile), last[:, c, :], profile)
    profile = np.where(np.isnan(profile), np.nanmean(y, axis=1, keepdims=True), profile)
    out = profile[:, np.arange(horizon) % season]
    return out[0] if np.ndim(history) == 1 else out


def student_quantiles(
    point: FloatArray, spread: FloatArray, dof: FloatArray, widen: FloatArray, levels: Sequence[float]
) -> dict[float, FloatArray]:
    """point + t-quantile x spread x widen: the fallbacks' intervals, wide when the
    history that estimated the spread is short (few degrees of freedom)."""
    return {
        q: point + stats.t.ppf(q, np.maximum(dof, 1.0))[:, None] * spread[:, None] * widen[None, :] for q in levels
    }


def spread_about_mean(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per row: the standard deviation (ddof 1, gaps ignored), at least MIN_REL_SPREAD of
    the mean level so that a flat history still gets an interval, and its degrees of
    freedom (at least 1)."""
    count = (~np.isnan(values)).sum(axis=1)
    mean = np.nansum(values, axis=1) / np.maximum(count, 1)
    squares = np.nansum((values - mean[:, None]) ** 2, axis=1)
    std = np.sqrt(squares / np.maximum(count - 1, 1))
    return std, np.maximum(count - 1, 1).astype(np.float64)


def mean_forecast(y: FloatArray, horizon: int, levels: Sequence[float]) -> tuple[FloatArray, dict[float, FloatArray]]:
    """The mean, with a Student-t prediction interval (the spread of one new value about
    a mean of n): the forecast when the history covers no season."""
    mean = np.nanmean(y, axis=1)
    std, dof = spread_about_mean(y)
    spread = np.fmax(std, MIN_REL_SPREAD * np.abs(mean)) * np.sqrt(1 + 1 / (dof + 1))
    point = np.repeat(mean[:, None], horizon, axis=1)
    return point, student_quantiles(point, spread, dof, np.ones(horizon), levels)


def naive_forecast(
    y: FloatArray, season: int, horizon: int, levels: Sequence[float]
) -> tuple[FloatArray, dict[float, FloatArray]]:
    """Seasonal naive, with Student-t intervals from the spread of the seasonal
    differences seen (a step k cycles past the last one repeats a value k cycles old, so
    its spread grows with sqrt(k)); with fewer than two differences, from the spread of
    the values, on one degree of freedom."""
    point = seasonal_naive(y, season, horizon).reshape(y.shape[0], horizon)
    diffs = y[:, season:] - y[:, :-season]
    enough = (~np.isnan(diffs)).sum(axis=1) >= 2
    diff_std, diff_dof = spread_about_mean(diffs)
    value_std, _ = spread_about_mean(y)
    spread = np.fmax(np.where(enough, diff_std, value_std), MIN_REL_SPREAD * np.abs(np.nanmean(y, axis=1)))
    widen = np.sqrt(np.ceil(np.arange(1, horizon + 1) / season))
    return point, student_quantiles(point, spread, np.where(enough, diff_dof, 1.0), widen, levels)


def row_quantiles(x: FloatArray, levels: Sequence[float]) -> FloatArray:
    """Quantiles (levels, rows) along the last axis of `x` (rows, n), ignoring NaN. Rows
    without gaps go through numpy's partition-based quantile; the others are sorted
    together, since numpy's nanquantile loops over rows in Python."""
    out = np.full((len(levels), x.shape[0]), np.nan)
    gappy = np.isnan(x).any(axis=1)
    if (~gappy).any():
        out[:, ~gappy] = np.quantile(x[~gappy], levels, axis=1)
    if gappy.any():
        ordered = np.sort(x[gappy], axis=1)  # NaN sorts last
        count = (~np.isnan(ordered)).sum(axis=1)
        for i, q in enumerate(levels):
            pos = q * np.maximum(count - 1, 0)
            lo = np.floor(pos).astype(np.int64)
            hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
            low, high = ordered[np.arange(lo.size), lo], ordered[np.arange(hi.size), hi]
            out[i, gappy] = np.where(count > 0, low + (pos - lo) * (high - low), np.nan)
    return out
