"""Load forecasting (host/predict/forecast.py) on synthetic series whose truth is known: hourly
draw with a daily and a weekly season, a wandering level and Gaussian noise."""

from __future__ import annotations

import numpy as np
import pytest

from host.predict import robust_fit, seasonal_ar
from host.predict.baselines import seasonal_naive
from host.predict.forecast import NAIVE_MIN_DIFFS, LoadForecaster
from host.predict.forecast_config import Forecast, ForecastConfig, ScheduledLoad

HOUR_S = 3600.0
DAY, WEEK = 24, 168
WINDOW = 6 * WEEK
CONFIG = ForecastConfig.daily_weekly(HOUR_S, window=WINDOW)
NOISE = 1.0


def seasonal_shape(t: np.ndarray) -> np.ndarray:
    """A daily peak and a weekly swing, both smooth."""
    daily = 10 * np.sin(2 * np.pi * t / DAY) + 4 * np.cos(4 * np.pi * t / DAY)
    weekly = 5 * np.sin(2 * np.pi * t / WEEK) + 3 * np.cos(6 * np.pi * t / WEEK)
    return 100 + daily + weekly


def synthetic(n: int, seed: int, series: int = 1, level_sd: float = 0.3) -> np.ndarray:
    """(series, n): the seasonal shape, a level that wanders as an AR(1) with phi 0.99,
    and white noise of sd NOISE."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, level_sd, (series, n))
    level = np.zeros((series, n))
    for i in range(1, n):
        level[:, i] = 0.99 * level[:, i - 1] + shocks[:, i]
    return seasonal_shape(np.arange(n, dtype=np.float64)) + level + rng.normal(0.0, NOISE, (series, n))


def rolling_errors(y: np.ndarray, horizon: int, origins: range) -> tuple[np.ndarray, np.ndarray]:
    """Absolute errors (origins, horizon) of ours and of the weekly seasonal naive."""
    ours, naive = [], []
    for o in origins:
        history = y[o - WINDOW + 1 : o + 1]
        actual = y[o + 1 : o + 1 + horizon]
        t0 = (o - WINDOW + 1) * HOUR_S
        ours.append(np.abs(LoadForecaster(CONFIG).fit(history, t0).predict(horizon).point - actual))
        naive.append(np.abs(seasonal_naive(history, WEEK, horizon) - actual))
    return np.array(ours), np.array(naive)


def test_seasonality_is_captured_and_beats_seasonal_naive() -> None:
    y = synthetic(10 * WEEK, seed=1)[0]
    ours, naive = rolling_errors(y, DAY, range(8 * WEEK, 10 * WEEK - DAY, 13))
    assert ours[:, 0].mean() < 0.7 * naive[:, 0].mean()  # one hour ahead
    assert ours[:, -1].mean() < 0.7 * naive[:, -1].mean()  # one day ahead
    assert ours[:, -1].mean() < 2.0 * NOISE  # knowing the shape and today's level: about 1.4 NOISE


def test_a_scheduled_job_raises_the_forecast_exactly_in_its_window() -> None:
    y = synthetic(4 * WEEK, seed=2)[0]
    forecaster = LoadForecaster(CONFIG).fit(y, t0_s=0.0)
    plain = forecaster.predict(DAY)
    start = plain.times_s[4] - 1.0  # between steps 4 and 5: step 5 is the first inside
    job = ScheduledLoad(start_s=start, duration_s=3 * HOUR_S, extra=25.0)
    with_job = forecaster.predict(DAY, scheduled=[job])
    expected = np.zeros(DAY)
    expected[4:7] = 25.0
    np.testing.assert_allclose(with_job.point - plain.point, expected, atol=1e-9)
    for q in CONFIG.quantiles:
        np.testing.assert_allclose(with_job.quantile(q) - plain.quantile(q), expected, atol=1e-9)


def test_a_job_for_one_rack_of_many_raises_that_rack_only() -> None:
    forecast = LoadForecaster(CONFIG).fit(synthetic(3 * WEEK, seed=3, series=3)).predict(6)
    job = ScheduledLoad(start_s=forecast.times_s[0], duration_s=2 * HOUR_S, extra=5.0)
    raised = forecast.with_loads([job], row=1)
    diff = raised.p95 - forecast.p95
    np.testing.assert_allclose(diff[1], [5, 5, 0, 0, 0, 0])
    assert not diff[[0, 2]].any()
    with pytest.raises(ValueError, match="row 3"):
        forecast.with_loads([job], row=3)


def test_gaps_and_outliers_do_not_break_it() -> None:
    clean = synthetic(6 * WEEK, seed=4)[0]
    future = synthetic(6 * WEEK + DAY, seed=4)[0][-DAY:]
    dirty = clean.copy()
    dirty[300:340] = np.nan  # a 40-hour outage
    dirty[700:900:37] += 60.0  # spikes of 60 sigma
    dirty[500] = np.inf  # a corrupt sample is a gap
    dirty[-1] = np.nan  # the latest sample is missing
    base = LoadForecaster(CONFIG).fit(clean).predict(DAY)
    forecast = LoadForecaster(CONFIG).fit(dirty).predict(DAY)
    assert forecast.method == "seasonal regression + AR"
    assert np.isfinite(forecast.point).all() and np.isfinite(forecast.p95).all()
    assert np.abs(forecast.point - future).mean() < 1.3 * np.abs(base.point - future).mean() + 0.2


def test_a_spike_does_not_echo_into_the_forecast_but_a_level_shift_is_followed() -> None:
    y = synthetic(6 * WEEK, seed=5)[0]
    base = LoadForecaster(CONFIG).fit(y).predict(DAY).point
    spiked = y.copy()
    spiked[-2] += 80.0  # a glitch: the latest sample is back to normal
    after = LoadForecaster(CONFIG).fit(spiked).predict(DAY).point
    assert np.abs(after - base).max() < 1.0 * NOISE
    shifted = y.copy()
    shifted[-3:] += 20.0  # a job started three hours ago
    after = LoadForecaster(CONFIG).fit(shifted).predict(DAY).point
    assert (after - base)[:6].min() > 10.0
    shifted[-30:-3] += 20.0  # ... thirty hours ago, and the latest two samples are lost
    shifted[-2:] = np.nan
    after = LoadForecaster(CONFIG).fit(shifted).predict(DAY).point
    assert np.abs(after - base - 20.0)[:6].max() < 3 * NOISE


@pytest.mark.parametrize(
    ("n", "method"), [(1, "mean"), (10, "mean"), (30, "seasonal naive (season 24)"), (47, "seasonal naive (season 24)")]
)
def test_short_history_falls_back_with_wide_intervals(n: int, method: str) -> None:
    y = synthetic(n, seed=6)[0]
    forecaster = LoadForecaster(CONFIG).fit(y)
    forecast = forecaster.predict(DAY)
    assert forecaster.method == forecast.method == method
    if method == "mean":
        np.testing.assert_allclose(forecast.point, y.mean())
    else:
        np.testing.assert_allclose(forecast.point, seasonal_naive(y, DAY, DAY))
    fitted = LoadForecaster(CONFIG).fit(synthetic(6 * WEEK, seed=6)[0]).predict(DAY)
    assert (forecast.p95 - forecast.point).min() > (fitted.p95 - fitted.point).max()
    assert (forecast.quantile(0.05) < forecast.point).all()


def test_the_seasonal_naive_takes_over_once_its_interval_is_no_wider_than_the_mean() -> None:
    # On one or two seasonal differences the naive forecast's Student-t interval has one
    # degree of freedom or none, several times the mean's width: a controller reading P95
    # would see the load leap at the hand-over. The mean holds until four differences.
    y = synthetic(DAY + NAIVE_MIN_DIFFS, seed=6)[0]
    before = LoadForecaster(CONFIG).fit(y[:-1]).predict(DAY)
    after = LoadForecaster(CONFIG).fit(y).predict(DAY)
    assert (before.method, after.method) == ("mean", "seasonal naive (season 24)")
    assert (after.p95 - after.point).max() <= (before.p95 - before.point).max()


def test_sparse_history_falls_back_to_the_longest_season_it_covers() -> None:
    y = synthetic(2 * WEEK, seed=6)[0]
    y[: -DAY - 20] = np.nan  # two weeks long, but 44 values
    forecast = LoadForecaster(CONFIG).fit(y).predict(DAY)
    assert forecast.method == "seasonal naive (season 168)"
    np.testing.assert_allclose(forecast.point, seasonal_naive(y, WEEK, DAY))
    assert np.isfinite(forecast.point).all() and np.isfinite(forecast.p95).all()


def test_p95_covers_about_95_percent_of_what_follows() -> None:
    """500 independent racks (the vectorised path) with a known noise, one forecast each,
    the next day of each: 12,000 checks."""
    y = synthetic(6 * WEEK + DAY, seed=7, series=500)
    forecast = LoadForecaster(CONFIG).fit(y[:, :-DAY]).predict(DAY)
    covered = y[:, -DAY:] <= forecast.p95
    assert 0.93 <= covered.mean() <= 0.97
    assert 0.92 <= covered[:, 0].mean() <= 0.98  # one step ahead
    assert 0.92 <= covered[:, -1].mean() <= 0.98  # one day ahead
    below = y[:, -DAY:] < forecast.quantile(0.05)
    assert 0.03 <= below.mean() <= 0.07


def test_many_series_forecast_as_each_alone() -> None:
    y = synthetic(4 * WEEK, seed=8, series=3)
    y[1, 100:120] = np.nan
    together = LoadForecaster(CONFIG).fit(y, t0_s=7200.0).predict(12)
    for row in range(3):
        alone = LoadForecaster(CONFIG).fit(y[row], t0_s=7200.0).predict(12)
        np.testing.assert_allclose(together.point[row], alone.point, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(together.p95[row], alone.p95, rtol=1e-9, atol=1e-9)


def test_steps_solved_together_forecast_as_steps_solved_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    y = synthetic(4 * WEEK, seed=12, series=2)
    y[0, 200:230] = np.nan
    together = LoadForecaster(CONFIG).fit(y, t0_s=3600.0).predict(DAY)
    monkeypatch.setattr(seasonal_ar, "BATCH_ELEMENTS", 1)  # every step alone (the model batches by it)
    alone = LoadForecaster(CONFIG).fit(y, t0_s=3600.0).predict(DAY)
    np.testing.assert_allclose(together.point, alone.point, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(together.p95, alone.p95, rtol=1e-9, atol=1e-9)


def test_a_periodic_design_repeats_the_rows_it_would_compute() -> None:
    freqs = np.array([1 / 24, 2 / 24, 1 / 168])
    index = 5.5 + np.arange(3 * 168 + 7, dtype=np.float64)  # any phase, not a whole number of periods
    np.testing.assert_allclose(robust_fit.design(index, freqs, 168), robust_fit.design(index, freqs),
                               atol=1e-9)


def test_a_season_of_an_even_number_of_samples_keeps_the_design_full_rank() -> None:
    # 12 pairs of a 24-sample season reach half a cycle per sample, whose sine is zero at
    # every sample: it must not be a column, or X'X is singular and the fit is noise
    freqs = robust_fit.fourier_frequencies([(24, 12), (168, 40)])
    x = robust_fit.design(389_760.0 + np.arange(2688, dtype=np.float64), freqs, 168)
    assert np.linalg.matrix_rank(x) == x.shape[1]
    assert np.linalg.cond(x.T @ x) < 1e6


def test_update_rolls_the_window_as_a_refit_would() -> None:
    y = synthetic(8 * WEEK, seed=9)[0]
    n, step = 7 * WEEK, 5
    online = LoadForecaster(CONFIG).fit(y[:n]).update(y[n : n + step]).predict(DAY)
    start = n + step - WINDOW
    refit = LoadForecaster(CONFIG).fit(y[start : n + step], t0_s=start * HOUR_S).predict(DAY)
    np.testing.assert_allclose(online.point, refit.point, rtol=1e-9)
    np.testing.assert_allclose(online.times_s, refit.times_s)
    assert online.times_s[0] == (n + step) * HOUR_S


def test_between_refits_new_samples_move_the_forecast_and_spikes_do_not() -> None:
    config = ForecastConfig.daily_weekly(HOUR_S, window=WINDOW, refit_every=DAY)
    y = synthetic(7 * WEEK, seed=10)[0]
    reference = LoadForecaster(config).fit(y).predict(3).point
    shifted = LoadForecaster(config).fit(y[:-3]).update(y[-3:] + 10.0).predict(3).point  # not refitted
    assert (shifted - reference).min() > 5.0
    glitch = y[-3:] + np.array([0.0, 60.0, 0.0])
    spiked = LoadForecaster(config).fit(y[:-3]).update(glitch).predict(3).point
    plain = LoadForecaster(config).fit(y[:-3]).update(y[-3:]).predict(3).point
    assert np.abs(spiked - plain).max() < 0.5 * NOISE


def test_between_refits_the_seasonal_mean_alone_is_refitted_every_reseason_samples() -> None:
    """reseason_every: the seasonal mean is fitted again on the rolling window, as a full
    refit would fit it, while the residual regressions keep their coefficients."""
    config = ForecastConfig.daily_weekly(HOUR_S, window=WINDOW, refit_every=DAY, reseason_every=4)
    y = synthetic(8 * WEEK, seed=12)[0]
    n = 7 * WEEK
    online = LoadForecaster(config).fit(y[:n])
    online.predict(DAY)  # fits the residual regressions
    horizons = dict(online._horizons)
    before = online._model
    online.update(y[n : n + 3])
    assert online._model is before  # 3 < 4: the residual state only
    online.update(y[n + 3 : n + 4])
    start = n + 4 - WINDOW
    refit = LoadForecaster(config).fit(y[start : n + 4], t0_s=start * HOUR_S)
    assert online._model is not None and refit._model is not None
    np.testing.assert_allclose(online._model.beta, refit._model.beta, rtol=1e-9)  # the seasonal mean of now
    assert online._horizons == horizons  # the regressions of the last refit
    with pytest.raises(ValueError, match="reseason_every"):
        ForecastConfig.daily_weekly(HOUR_S, reseason_every=0)


def test_one_minute_racks_fit_the_daily_season_from_days_of_history() -> None:
    config = ForecastConfig.daily_weekly(60.0)
    assert config.seasons == (1440, 10080)
    t = np.arange(3 * 1440, dtype=np.float64)
    rng = np.random.default_rng(11)
    kw = 5 + 2 * np.sin(2 * np.pi * t / 1440) + 0.05 * rng.standard_normal(t.size)
    forecaster = LoadForecaster(config).fit(kw)
    forecast = forecaster.predict(60)
    assert forecaster.method == "seasonal regression + AR"  # daily only: 3 days hold no 2 weeks
    truth = 5 + 2 * np.sin(2 * np.pi * (t.size + np.arange(60)) / 1440)
    assert np.abs(forecast.point - truth).max() < 0.2
    assert forecast.times_s[-1] - forecast.times_s[0] == 59 * 60.0


def test_input_errors_say_what_is_wrong() -> None:
    forecaster = LoadForecaster(CONFIG)
    with pytest.raises(ValueError, match="before fit"):
        forecaster.predict(1)
    with pytest.raises(ValueError, match="empty"):
        forecaster.fit([])
    with pytest.raises(ValueError, match="no finite values"):
        forecaster.fit([np.nan, np.inf])
    with pytest.raises(ValueError, match=r"1-D .* or 2-D"):
        forecaster.fit(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="numbers"):
        forecaster.fit(["a", "b"])
    forecaster.fit(synthetic(100, seed=12)[0])
    for bad in (0, -3, 1.5, True, "24"):
        with pytest.raises(ValueError, match="horizon must be a positive whole number"):
            forecaster.predict(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="horizon"):
        seasonal_naive([1.0, 2.0], 1, 0)
    with pytest.raises(ValueError, match="one full season"):
        seasonal_naive([1.0, 2.0], 3, 1)
    with pytest.raises(ValueError, match="period_s"):
        ForecastConfig(0.0)
    with pytest.raises(ValueError, match="harmonics"):
        ForecastConfig(HOUR_S, (24,), harmonics=(13,))
    with pytest.raises(ValueError, match="duration"):
        ScheduledLoad(0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="not forecast"):
        Forecast(np.zeros(1), np.zeros(1), {0.95: np.zeros(1)}, "mean").quantile(0.9)


def test_a_series_gone_quiet_for_longer_than_the_fitting_rows_keeps_its_intervals() -> None:
    """A source down for days records gaps; the latest rows of every horizon regression
    are then all gaps, and the intervals come from the whole window's changes instead."""
    config = ForecastConfig.daily_weekly(HOUR_S, window=WINDOW, max_rows=200)
    y = synthetic(6 * WEEK, seed=8)[0]
    y[-(config.max_rows + 2 * DAY):] = np.nan  # eleven days down
    forecast = LoadForecaster(config).fit(y).predict(DAY)
    assert forecast.method == "seasonal regression + AR"
    assert np.isfinite(forecast.point).all()
    assert np.isfinite(forecast.p95).all() and (forecast.p95 >= forecast.point).all()
