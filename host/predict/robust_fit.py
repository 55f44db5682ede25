"""The numerics of the seasonal mean and the residual regressions: Fourier designs, Huber
M-estimation on pseudo-observations, batched least squares on changes from the level,
and the cleaning of gaps and spikes in residuals."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray
from scipy import linalg  # type: ignore[import-untyped]  # no stubs ship with scipy

from host.predict.baselines import row_quantiles
from host.predict.forecast_config import (
    CLEANING_PASSES,
    HUBER_ITERATIONS,
    HUBER_TOLERANCE,
    MAD_TO_SIGMA,
    OUTLIER_SIGMAS,
    SCALE_SAMPLES,
    FloatArray,
    Scalar,
)


def at(e: NDArray[Scalar], origins: range, offset: int) -> NDArray[Scalar]:
    """The residuals `offset` samples after each origin (series, origins), as a view."""
    return e[:, origins.start + offset : origins.stop + offset : origins.step]


def robust_scale(residuals: FloatArray) -> FloatArray:
    """Per-row sigma from the median absolute deviation, ignoring gaps, over at most
    SCALE_SAMPLES evenly spread samples (plenty for a scale; medians of whole weeks of
    minute data for thousands of racks are not free); never zero, so that clipping at
    k sigmas is always defined."""
    sample = residuals[:, :: max(1, residuals.shape[1] // SCALE_SAMPLES)]
    centred = sample - row_quantiles(sample, [0.5])[0][:, None]
    sigma = MAD_TO_SIGMA * row_quantiles(np.abs(centred), [0.5])[0]
    floor = 1e-9 * (1.0 + np.nanmax(np.abs(sample), axis=1, initial=0.0))
    return np.fmax(np.nan_to_num(sigma), floor)


def fourier_frequencies(seasons: Sequence[tuple[int, int]]) -> FloatArray:
    """Cycles per sample of the Fourier pairs for (season, harmonics); a frequency that
    two seasons share (the weekly season's 7th harmonic is the daily's 1st) appears once,
    so the design has full rank."""
    freqs = sorted({Fraction(j, s) for s, k in seasons for j in range(1, k + 1)})
    return np.array([float(f) for f in freqs])


def design(sample_index: FloatArray, freqs: FloatArray, period: int = 0) -> FloatArray:
    """Intercept, then a sine and a cosine per frequency, at absolute sample indices.
    With `period` (the seasons' least common multiple, when `sample_index` is
    consecutive) the rows repeat every `period` samples and are computed once: a week
    of minutes with a daily season costs a day's sines."""
    n = sample_index.size
    if 0 < period < n:
        return np.tile(design(sample_index[:period], freqs), (-(-n // period), 1))[:n]
    angle = 2 * np.pi * np.outer(sample_index, freqs)
    # the sine at half a cycle per sample (a season's last harmonic when it has an even
    # number of samples) is zero at every sample: a column of zeros makes X'X singular
    sines = np.abs(freqs - 0.5) > 1e-12
    return np.hstack([np.ones((n, 1)), np.sin(angle[:, sines]), np.cos(angle)])


def huber_fit(y: FloatArray, x: FloatArray, k: float) -> FloatArray:
    """Huber M-estimate (series, p) of `y` (series, n) on the shared design `x` (n, p),
    by pseudo-observations with gaps filled by their fitted value, and the scale fixed
    from the least-squares residuals (a robust start that needs one median per fit). One
    Cholesky factor of X'X serves all series and all passes, which makes thousands of
    racks cheap."""
    observed = ~np.isnan(y)
    factor = linalg.cho_factor(x.T @ x)  # (p, p); the Fourier columns are near orthogonal

    def project(values: FloatArray) -> FloatArray:
        return np.asarray(linalg.cho_solve(factor, x.T @ values.T).T)

    pseudo = np.where(observed, y, np.nanmean(y, axis=1, keepdims=True))
    beta = project(pseudo)
    sigma = np.zeros((y.shape[0], 1))
    moving = np.ones(y.shape[0], dtype=bool)
    for i in range(HUBER_ITERATIONS):
        fitted = beta @ x.T
        residuals = np.where(observed, y - fitted, 0.0)
        if i == 0:
            sigma = robust_scale(np.where(observed, residuals, np.nan))[:, None]
        pseudo = fitted + np.clip(residuals, -k * sigma, k * sigma)
        step = project(pseudo) - beta
        beta[moving] += step[moving]
        # a series stops once a pass moves it little (|fitted change| <= sum |step|), so
        # its fit does not depend on the series fitted beside it
        moving &= np.abs(step).sum(axis=1) >= HUBER_TOLERANCE * sigma[:, 0]
        if not moving.any():
            break
    return beta


def least_squares(e: FloatArray, offsets: Sequence[int], origins: range, h: int) -> FloatArray:
    """Coefficients (series, offsets) predicting e at origin + h, constrained to sum to
    one: the regression is fitted on changes from the current level, so a level shift
    persists (a random-walk level, as in Holt-Winters with its level smoothing near 1).
    Fitting levels instead learns the mean reversion that a seasonal mean fitted on the
    same window builds into its residuals, and forecasts worse."""
    level = at(e, origins, 0)
    others = [off for off in offsets if off != 0]
    if not others:
        return np.ones((e.shape[0], 1))
    changes = np.stack([at(e, origins, off) - level for off in others], axis=1)[None]
    solved = solve_changes(changes, (at(e, origins, h) - level)[None])[0]
    return coefficients(offsets, solved)


def solve_changes(changes: FloatArray, target: FloatArray) -> FloatArray:
    """Least-squares weights (..., k) of the k changes (..., k, rows) from the current
    level that predict the target's change (..., rows): normal equations of every series
    and horizon at once; a whisker of ridge keeps a constant series solvable."""
    gram = np.matmul(changes, np.swapaxes(changes, -1, -2))
    rhs = np.matmul(changes, target[..., None])
    ridge = (1e-9 * np.trace(gram, axis1=-2, axis2=-1) + 1e-12)[..., None, None] * np.eye(changes.shape[-2])
    return np.linalg.solve(gram + ridge, rhs)[..., 0]


def coefficients(offsets: Sequence[int], solved: FloatArray) -> FloatArray:
    """Coefficients (series, offsets) on the residuals themselves from the weights
    (series, offsets but 0) on their changes from the level (offset 0): the level's
    coefficient is one minus the others'."""
    coefs = np.zeros((solved.shape[0], len(offsets)))
    others = [j for j, off in enumerate(offsets) if off != 0]
    coefs[:, others] = solved
    coefs[:, list(offsets).index(0)] = 1.0 - solved.sum(axis=1)
    return coefs


def spikes(raw: FloatArray, sigma: FloatArray) -> NDArray[np.bool_]:
    """Samples that stick out from both neighbours, the same way, by more than
    OUTLIER_SIGMAS times `sigma` (series,), the robust sigma of the sample-to-sample
    changes: a glitch, not a level shift (which moves away from one neighbour only). The
    latest sample has one neighbour and is never a spike: it cannot be told from the
    start of a shift, and the allocation would rather follow a real rise."""
    left = raw[:, 1:-1] - raw[:, :-2]
    right = raw[:, 1:-1] - raw[:, 2:]
    with np.errstate(invalid="ignore"):  # comparisons with gaps are False
        inner = (np.minimum(np.abs(left), np.abs(right)) > OUTLIER_SIGMAS * sigma[:, None]) & (left * right > 0)
    edge = np.zeros((raw.shape[0], 1), dtype=bool)
    return np.hstack([edge, inner, edge])


def clean_residuals(
    raw: FloatArray,
    bad: NDArray[np.bool_],
    coefs: FloatArray,
    offsets: Sequence[int],
    clean: FloatArray | None = None,
) -> FloatArray:
    """Residuals with the `bad` ones (gaps, spikes) replaced by their one-step
    prediction, so that neither skews the regressions nor echoes through a forecast.
    Gaps start at 0, the seasonal mean; each pass carries a filled gap one step further.
    Only the samples where some series is bad are predicted. `clean`, when given, is
    residuals cleaned already but for `bad`, and is cleaned in place."""
    clean = np.nan_to_num(raw) if clean is None else clean
    cols = np.flatnonzero(bad.any(axis=0))
    cols = cols[cols >= 1 - min(offsets)]  # the first samples have no history to predict them from
    if cols.size == 0:
        return clean
    mask = bad[:, cols]
    for _ in range(CLEANING_PASSES):
        origins = cols - 1  # each bad sample is step 1 after the sample before it
        predicted = sum((c[:, None] * clean[:, origins + off] for c, off in zip(coefs.T, offsets, strict=True)), 0.0)
        clean[:, cols] = np.where(mask, predicted, clean[:, cols])
    return clean


def change_sigma(raw: FloatArray) -> FloatArray:
    """Robust sigma (series,) of the sample-to-sample changes, the yardstick of spikes."""
    return robust_scale(np.diff(raw, axis=1))


def bad_samples(raw: FloatArray, sigma: FloatArray) -> NDArray[np.bool_]:
    """Gaps and spikes: the samples the residual regressions should not see."""
    return np.isnan(raw) | spikes(raw, sigma)
