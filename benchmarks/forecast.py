"""Load forecasting benchmark: host/forecast.py against the seasonal naive forecast and
statsmodels' Holt-Winters on two real load series, and its cost on 10,000 synthetic racks.

Run from the repository root: `.venv/bin/python benchmarks/forecast.py` (about 3 min
here). Needs the `bench` extra (statsmodels). Prints markdown tables for RESULTS.md.

1. Real series (host/data/README.md), rolling origin over the last 4 weeks (half-hourly
   England and Wales) and 12 weeks (hourly UCI), an origin every 13 steps so that the
   origins visit every time of day: at every origin each method is fitted on the same
   window (the 2688 samples before it: 8 weeks half-hourly, 16 weeks hourly) and
   forecasts 1..H steps, H one day. Ours follows the
   series online (`update`, which refits on the rolling window); Holt-Winters is refitted
   from scratch. Scored: MAE and MAPE at 1 step and H steps for ours, the seasonal naive
   forecast (weekly season) and Holt-Winters (statsmodels ExponentialSmoothing,
   additive trend and season, seasonal period one day; also without trend, which is
   its faster variant); ours' P95 coverage; fit+predict time per origin.
2. Racks: 10,000 synthetic racks, one-minute draw, one week of history each, horizons
   1..60 minutes, forecast in blocks of 1,000 racks that share the clock (one design
   matrix per block): a full fit, and the steady state between hourly refits (one new
   sample per rack, then a forecast). The accuracy of 1-60 minute rack forecasts waits
   for the site simulator's racks; the coverage printed here is on the synthetic racks'
   own generator, a sanity check only.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import lfilter  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.forecast import ForecastConfig, LoadForecaster, seasonal_naive

try:
    import statsmodels
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
except ImportError:  # pragma: no cover
    sys.exit("benchmarks/forecast.py needs statsmodels: .venv/bin/pip install -e '.[bench]'")

DATA = Path(__file__).resolve().parent.parent / "host" / "data"
WINDOW = 2688  # training samples at every origin, for every method
STRIDE = 13  # steps between origins: coprime with 24 and 48, so origins visit every time of day
RACKS = 10_000
RACK_BLOCK = 1_000  # racks forecast together (they share the clock)
RACK_HISTORY = 7 * 1440  # one week of minutes
RACK_HORIZON = 60


@dataclass(frozen=True)
class Series:
    name: str
    values: np.ndarray
    t0_s: float
    period_s: float
    day: int  # samples per day
    horizon: int  # the long horizon scored: one day
    test: int  # samples at the end over which origins run

    @property
    def week(self) -> int:
        return 7 * self.day


def utc_seconds(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def load_series() -> list[Series]:
    lines = [line for line in (DATA / "taylor_halfhourly_mw.csv").read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == "mw", lines[0]
    taylor = np.array([float(v) for v in lines[1:]])
    rows = [line.split(",") for line in (DATA / "hourly_electricity.csv").read_text().splitlines()[1:] if line]
    stamps = np.array([utc_seconds(r[0]) for r in rows])
    assert (np.diff(stamps) == 3600).all(), "the UCI series is not evenly hourly"
    uci = np.array([float(r[1]) for r in rows])
    return [
        Series("England and Wales, half-hourly MW", taylor, utc_seconds("2000-06-05 00:00"), 1800.0, 48, 48, 4 * 336),
        Series("UCI 321 clients, hourly kW", uci, stamps[0], 3600.0, 24, 24, 12 * 168),
    ]


@dataclass
class Scores:
    errors: dict[str, list[np.ndarray]]  # method -> per origin, forecast - actual over 1..H
    actuals: list[np.ndarray]
    p95: list[np.ndarray]
    seconds: dict[str, float]
    origins: int


def holt_winters(train: np.ndarray, day: int, horizon: int, trend: str | None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and frequency chatter
        model = ExponentialSmoothing(train, trend=trend, seasonal="add", seasonal_periods=day).fit()
        return np.asarray(model.forecast(horizon))


def score(series: Series) -> Scores:
    y, h = series.values, series.horizon
    origins = range(len(y) - series.test - 1, len(y) - h - 1, STRIDE)
    config = ForecastConfig(series.period_s, (series.day, series.week), window=WINDOW)
    methods = ("ours", "naive", "hw", "hw_nt")
    out = Scores({m: [] for m in methods}, [], [], dict.fromkeys(("ours", "hw", "hw_nt"), 0.0), 0)
    forecaster, last = None, origins[0]
    for o in origins:
        train, actual = y[o - WINDOW + 1 : o + 1], y[o + 1 : o + 1 + h]
        start = time.perf_counter()
        if forecaster is None:
            forecaster = LoadForecaster(config).fit(train, t0_s=series.t0_s + (o - WINDOW + 1) * series.period_s)
        else:
            forecaster.update(y[last + 1 : o + 1])  # refits on the rolling window: the same as `train`
        forecast = forecaster.predict(h)
        out.seconds["ours"] += time.perf_counter() - start
        last = o
        for key, trend in (("hw", "add"), ("hw_nt", None)):
            start = time.perf_counter()
            hw = holt_winters(train, series.day, h, trend)
            out.seconds[key] += time.perf_counter() - start
            out.errors[key].append(hw - actual)
        out.errors["ours"].append(forecast.point - actual)
        out.errors["naive"].append(seasonal_naive(train, series.week, h) - actual)
        out.actuals.append(actual)
        out.p95.append(forecast.p95)
        out.origins += 1
    return out


def mae(errors: list[np.ndarray], step: int) -> float:
    return float(np.mean([abs(e[step]) for e in errors]))


def mape(errors: list[np.ndarray], actuals: list[np.ndarray], step: int) -> float:
    return float(100 * np.mean([abs(e[step]) / abs(a[step]) for e, a in zip(errors, actuals, strict=True)]))


def real_series_tables(series: list[Series]) -> None:
    results = []
    for s in series:
        start = time.perf_counter()
        results.append((s, score(s)))
        print(f"<!-- {s.name}: {results[-1][1].origins} origins in {time.perf_counter() - start:.0f} s -->")
    print()
    print("| series | horizon | MAE ours | MAE seasonal naive | MAE Holt-Winters | ours / naive | ours / HW |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s, r in results:
        for step in (0, s.horizon - 1):
            ours, naive, hw = (mae(r.errors[m], step) for m in ("ours", "naive", "hw"))
            print(
                f"| {s.name} | {horizon_label(s, step + 1)} | {ours:,.1f} | {naive:,.1f} | {hw:,.1f} "
                f"| {ours / naive:.2f} | {ours / hw:.2f} |"
            )
    print()
    print("| series | horizon | MAPE ours | MAPE seasonal naive | MAPE Holt-Winters | MAPE HW no trend | P95 cover |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s, r in results:
        for step in (0, s.horizon - 1):
            ours, naive, hw, nt = (mape(r.errors[m], r.actuals, step) for m in ("ours", "naive", "hw", "hw_nt"))
            cover = np.mean([a[step] <= p[step] for a, p in zip(r.actuals, r.p95, strict=True)])
            print(
                f"| {s.name} | {horizon_label(s, step + 1)} | {ours:.2f}% | {naive:.2f}% | {hw:.2f}% | {nt:.2f}% "
                f"| {100 * cover:.1f}% |"
            )
    print()
    print(
        "| series | origins | P95 cover ours, all horizons | ms per fit+predict: ours | Holt-Winters | HW no trend "
        "| HW / ours | HW no trend / ours |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for s, r in results:
        cover = np.mean([a <= p for a, p in zip(r.actuals, r.p95, strict=True)])
        ours, hw, nt = (1000 * r.seconds[m] / r.origins for m in ("ours", "hw", "hw_nt"))
        print(
            f"| {s.name} | {r.origins} | {100 * cover:.1f}% | {ours:.1f} | {hw:.1f} | {nt:.1f} "
            f"| {hw / ours:.1f}x | {nt / ours:.1f}x |"
        )


def horizon_label(series: Series, steps: int) -> str:
    minutes = steps * series.period_s / 60
    steps_text = f"{steps} step" + ("s" if steps > 1 else "")
    return f"{steps_text} ({minutes:.0f} min)" if minutes < 60 else f"{steps_text} ({minutes / 60:.0f} h)"


def synthetic_racks(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """One-minute draw in kW: a base of 2-10 kW, a daily cycle of random depth and phase,
    a level that wanders (AR(1), phi 0.999), jobs that step the draw up for a few hours,
    measurement noise, a few glitches and a few lost samples."""
    t = np.arange(n)
    base = rng.uniform(2, 10, (count, 1))
    daily = rng.uniform(0.05, 0.3, (count, 1)) * base * np.sin(2 * np.pi * (t / 1440 + rng.random((count, 1))))
    level = lfilter([1.0], [1.0, -0.999], rng.normal(0, 0.01, (count, n)) * base, axis=1)
    jobs = np.zeros((count, n))
    for _ in range(3):
        start = rng.integers(0, n, (count, 1))
        length = rng.integers(60, 480, (count, 1))
        jobs += ((t >= start) & (t < start + length)) * rng.uniform(0, 0.4, (count, 1)) * base
    y = np.maximum(base + daily + level + jobs + rng.normal(0, 0.02, (count, n)) * base, 0.0)
    glitch = rng.random((count, n)) < 1e-4
    y[glitch] *= 3
    y[rng.random((count, n)) < 1e-3] = np.nan
    return y


def rack_table() -> None:
    rng = np.random.default_rng(2026)
    config = ForecastConfig.daily_weekly(60.0, quantiles=(0.95,), refit_every=60)
    fit_s = first_s = step_s = 0.0
    covered = []
    for _ in range(RACKS // RACK_BLOCK):
        y = synthetic_racks(rng, RACK_BLOCK, RACK_HISTORY + 1 + RACK_HORIZON)
        history, after = y[:, :RACK_HISTORY], y[:, RACK_HISTORY:]
        start = time.perf_counter()
        forecaster = LoadForecaster(config).fit(history)
        fit_s += time.perf_counter() - start
        start = time.perf_counter()
        forecaster.predict(RACK_HORIZON)
        first_s += time.perf_counter() - start
        start = time.perf_counter()
        forecast = forecaster.update(after[:, 0]).predict(RACK_HORIZON)  # the next minute, no refit
        step_s += time.perf_counter() - start
        seen = ~np.isnan(after[:, 1:])
        covered.append((after[:, 1:] <= forecast.p95)[seen])
    print()
    print(
        "| racks | history | horizons | model | fit s | first forecast s (fits the 60 horizon regressions) "
        "| fit + forecast s | ms per rack | next minute: update + forecast s, no refit | P95 cover (synthetic) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {RACKS:,} in blocks of {RACK_BLOCK:,} | 1 week of minutes | 1-{RACK_HORIZON} min "
        f"| {forecaster.method}, daily season | {fit_s:.1f} | {first_s:.1f} | {fit_s + first_s:.1f} "
        f"| {1000 * (fit_s + first_s) / RACKS:.2f} | {step_s:.1f} | {100 * np.concatenate(covered).mean():.1f}% |"
    )


def main() -> None:
    started = time.perf_counter()
    print(
        f"<!-- {platform.machine()}, {os.cpu_count()} cores; CPython {platform.python_version()}; numpy "
        f"{np.__version__}; statsmodels {statsmodels.__version__} -->"
    )
    real_series_tables(load_series())
    rack_table()
    print(f"\n<!-- {time.perf_counter() - started:.0f} s in all -->")


if __name__ == "__main__":
    main()
