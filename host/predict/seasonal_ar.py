"""The model: a multi-seasonal mean with one residual regression per horizon (direct multi-
step), fitted on the latest origins, and its prediction at any origin."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from host.predict.baselines import row_quantiles
from host.predict.forecast_config import (
    BATCH_ELEMENTS,
    MIN_OBS_PER_PARAM,
    MIN_ROWS_PER_FEATURE,
    FloatArray,
    ForecastConfig,
)
from host.predict.robust_fit import (
    at,
    bad_samples,
    change_sigma,
    clean_residuals,
    coefficients,
    design,
    fourier_frequencies,
    huber_fit,
    least_squares,
    solve_changes,
)


def offsets_for(h: int, short_lags: Sequence[int], seasons: Sequence[int]) -> tuple[int, ...]:
    """Where the residuals that predict step h sit relative to the origin (0 is the last
    known sample, the current level): the short lags, which carry the level and its
    slope, and per season the residual one season before the origin and the latest at
    step h's phase, which say how yesterday, last week went on from here."""
    seasonal = {-s for s in seasons} | {h - s * math.ceil(h / s) for s in seasons}
    return tuple(sorted({0} | {1 - lag for lag in short_lags} | seasonal))


def fit_origins(n: int, offsets: Sequence[int], h: int, max_rows: int) -> range:
    """The latest `max_rows` origins whose features and step-h target lie inside n
    samples: the latest, because load drifts and the current regime matters most; a
    contiguous range, so that every lagged copy is a view that reads memory in order."""
    first, last = -min(offsets), n - 1 - h
    return range(max(first, last + 1 - max_rows), max(last + 1, first))


def older_origins(n: int, offsets: Sequence[int], h: int, before: int, rows: int) -> range:
    """About `rows` origins spread evenly over those before `before` whose features and
    step-h target lie inside n samples."""
    every = fit_origins(n, offsets, h, n)
    older = range(every.start, min(every.stop, before))
    step = max(1, math.ceil(len(older) / rows))
    return older[::step]


def h_step_changes(raw: FloatArray, clean: FloatArray, h: int) -> FloatArray:
    """The observed residuals' changes over h steps from the cleaned ones: what step h
    does to the level, for intervals without a horizon regression behind them."""
    return raw[:, h:] - clean[:, :-h] if h < raw.shape[1] else raw - clean[:, -1:]


def predict_at(e: FloatArray, coefs: FloatArray, offsets: Sequence[int], origins: range) -> FloatArray:
    """The regression's prediction (series, origins) from the residuals around each
    origin."""
    out = np.zeros((e.shape[0], len(origins)))
    for c, off in zip(coefs.T, offsets, strict=True):
        out += c[:, None] * at(e, origins, off)
    return out


@dataclass(frozen=True)
class HorizonModel:
    """The residual regression for one horizon and the quantiles of its errors."""

    offsets: tuple[int, ...]
    coefs: FloatArray  # (series, offsets)
    error_quantiles: FloatArray  # (levels, series)


@dataclass(frozen=True)
class SeasonalAR:
    """A fitted seasonal mean with residual regressions, for series sharing one clock."""

    freqs: FloatArray
    beta: FloatArray  # (series, p)
    short_lags: tuple[int, ...]
    seasons: tuple[int, ...]  # the seasons fitted
    one_step: FloatArray  # coefficients of horizon 1, which clean new residuals
    change_sigma: FloatArray  # (series,) of the residuals' sample-to-sample changes, for spikes
    n_fitted: int
    max_rows: int
    interval_rows: int

    def offsets(self, h: int) -> tuple[int, ...]:
        return offsets_for(h, self.short_lags, self.seasons)

    @property
    def n_params(self) -> int:
        """Fitted parameters per series, for the in-sample optimism of the intervals."""
        return self.beta.shape[1] + len(self.offsets(1)) - 1

    def seasonal(self, sample_index: FloatArray) -> FloatArray:
        """The seasonal mean (series, n) at absolute sample indices."""
        return self.beta @ design(sample_index, self.freqs).T

    def extend(
        self, residuals: tuple[FloatArray, FloatArray], new: FloatArray, first_index: float, keep: int
    ) -> tuple[FloatArray, FloatArray]:
        """The observed and cleaned residuals with `new` samples (series, k), the first at
        absolute index `first_index`, appended, and only the latest `keep` kept. Only the
        tail is examined for gaps and spikes (the sample that was latest has a right
        neighbour now), so following a minute of 10,000 racks between refits is cheap."""
        fresh = new - self.seasonal(first_index + np.arange(new.shape[1], dtype=np.float64))
        raw = np.hstack([residuals[0], fresh])[:, -keep:]
        clean = np.hstack([residuals[1], np.nan_to_num(fresh)])[:, -keep:]
        recheck = new.shape[1] + 1
        bad = np.zeros(raw.shape, dtype=bool)
        bad[:, -recheck:] = bad_samples(raw[:, -(recheck + 1) :], self.change_sigma)[:, -recheck:]
        return raw, clean_residuals(raw, bad, self.one_step, self.offsets(1), clean)

    def horizons(
        self, hs: Sequence[int], raw: FloatArray, clean: FloatArray, levels: Sequence[float]
    ) -> dict[int, HorizonModel]:
        """The residual regression for each step h of `hs`, fitted on the cleaned
        residuals, and its error quantiles against the observed ones (outliers included:
        the allocation lives with them), widened for the in-sample optimism of the whole
        fit. A step without enough rows for a regression carries the level only, with the
        quantiles of the seasonal residuals' changes over h steps. Steps whose
        regressions have the same shape are solved together, up to BATCH_ELEMENTS
        features at a time: one series alone would otherwise spend most of its time in
        the per-call overhead of 60 small solves and quantiles."""
        optimism = math.sqrt((self.n_fitted + self.n_params) / max(self.n_fitted - self.n_params, 1))
        models: dict[int, HorizonModel] = {}
        shapes: dict[tuple[int, int, int], list[HorizonRows]] = {}
        for h in hs:
            offsets = self.offsets(h)
            origins = fit_origins(raw.shape[1], offsets, h, self.max_rows)
            if len(origins) < MIN_ROWS_PER_FEATURE * len(offsets):
                changes = h_step_changes(raw, clean, h)
                models[h] = HorizonModel((0,), np.ones((raw.shape[0], 1)), optimism * row_quantiles(changes, levels))
                continue
            older = older_origins(raw.shape[1], offsets, h, origins.start, self.interval_rows)
            shapes.setdefault((len(offsets), len(origins), len(older)), []).append(
                HorizonRows(h, offsets, origins, older)
            )
        for (k, latest, spread), group in shapes.items():
            together = max(1, BATCH_ELEMENTS // (raw.shape[0] * k * (latest + spread)))
            for i in range(0, len(group), together):
                for rows, coefs, quantiles in fit_horizons(group[i : i + together], raw, clean, levels):
                    models[rows.h] = HorizonModel(rows.offsets, coefs, optimism * quantiles)
        return models


class HorizonRows(NamedTuple):
    """The rows of step h's regression: the latest origins, which it is fitted on, and
    older ones spread over the window, whose errors join theirs in the quantiles."""

    h: int
    offsets: tuple[int, ...]
    origins: range
    older: range


def level_and_changes(
    e: FloatArray, group: Sequence[HorizonRows], older: bool = False
) -> tuple[FloatArray, FloatArray]:
    """The residuals at each origin (steps, series, rows) and their changes from there to
    each feature's offset (steps, series, features, rows), for steps of the same shape."""
    ranges = [rows.older if older else rows.origins for rows in group]
    level = np.stack([at(e, r, 0) for r in ranges])
    features = [[at(e, r, off) for off in rows.offsets if off != 0] for r, rows in zip(ranges, group, strict=True)]
    return level, np.stack([np.stack(f, axis=1) for f in features]) - level[:, :, None, :]


def fit_horizons(
    group: Sequence[HorizonRows], raw: FloatArray, clean: FloatArray, levels: Sequence[float]
) -> list[tuple[HorizonRows, FloatArray, FloatArray]]:
    """Coefficients (series, offsets) and error quantiles (levels, series) of steps whose
    regressions have the same shape, solved together."""
    level, changes = level_and_changes(clean, group)
    target = np.stack([at(clean, rows.origins, rows.h) for rows in group]) - level
    weights = solve_changes(changes, target)  # (steps, series, features)
    errors = np.stack([at(raw, rows.origins, rows.h) for rows in group]) - level
    errors -= np.einsum("csjr,csj->csr", changes, weights)
    if len(group[0].older):
        level, changes = level_and_changes(clean, group, older=True)
        more = np.stack([at(raw, rows.older, rows.h) for rows in group]) - level
        errors = np.concatenate([errors, more - np.einsum("csjr,csj->csr", changes, weights)], axis=2)
    steps, series, n = errors.shape
    quantiles = row_quantiles(errors.reshape(steps * series, n), levels).reshape(len(levels), steps, series)
    fitted = []
    for i, rows in enumerate(group):
        q = quantiles[:, i]
        # a series whose latest rows are all gaps (a source down for days) has no errors
        # to take quantiles of: the h-step changes over the whole window stand in
        unknown = np.isnan(q).any(axis=0)
        if unknown.any():
            q[:, unknown] = row_quantiles(h_step_changes(raw[unknown], clean[unknown], rows.h), levels)
        fitted.append((rows, coefficients(rows.offsets, weights[i]), q))
    return fitted


def fit_seasonal_ar(
    y: FloatArray, first_index: float, config: ForecastConfig
) -> tuple[SeasonalAR, FloatArray, FloatArray] | None:
    """The model for `y` (series, n) whose first sample has absolute index
    `first_index`, with its observed and cleaned residuals; None when the history is too
    short or too sparse for it."""
    n = y.shape[1]
    usable = config.fittable_seasons(n)
    seasons = tuple(s for s, _ in usable)
    freqs = fourier_frequencies(usable)
    offsets = offsets_for(1, config.short_lags, seasons)
    n_params = 2 * freqs.size + len(offsets)
    valid = int((~np.isnan(y)).sum(axis=1).min())
    too_short = valid < MIN_OBS_PER_PARAM * n_params or n - 1 + min(offsets) < MIN_ROWS_PER_FEATURE * len(offsets)
    if too_short or (config.seasons and not usable):
        return None
    x = design(first_index + np.arange(n, dtype=np.float64), freqs, math.lcm(*seasons) if seasons else 0)
    beta = huber_fit(y, x, config.huber_k)
    raw = y - beta @ x.T
    origins = fit_origins(n, offsets, 1, config.max_rows)
    sigma = change_sigma(raw)
    bad = bad_samples(raw, sigma)
    first_pass = least_squares(np.nan_to_num(raw), offsets, origins, 1)
    one_step = least_squares(clean_residuals(raw, bad, first_pass, offsets), offsets, origins, 1)
    model = SeasonalAR(freqs, beta, tuple(config.short_lags), seasons, one_step, sigma, n, config.max_rows,
                       config.interval_rows)
    return model, raw, clean_residuals(raw, bad, one_step, offsets)
