"""Load forecasting benchmark: host/predict/forecast.py against the seasonal naive forecast and
statsmodels' Holt-Winters on two real load series, and on racks and sources of the site
simulator at the 1-60 minute horizons, with its cost for 10,000 racks.

Run from the repository root: `.venv/bin/python benchmarks/forecast.py` (about 5 min
here; `--only real` or `--only racks` runs one part). Needs the `bench` extra
(statsmodels). Prints markdown tables for RESULTS.md.

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
2. Racks: the site simulator (host/sim/site/simulator.py) runs RACK_SCENARIO, 10,000 racks
   for 8 days at a 60 s step, undisturbed (nothing fails or trips); the benchmark reads
   the Fleet telemetry after every step: each rack's draw, and each source's load as
   the sum of its racks' draws. Origins on day 8, every 90 minutes from 00:13 (16 of
   them). Ours: one week of minutes (the daily season only), online with hourly refits
   (refit_every 60) and the seasonal mean alone refitted every 10 minutes between them
   (reseason_every 10) on the rolling week, all scored racks in one block; it is scored
   at each origin, where it has just refitted, and again 59 minutes later, following
   the racks minute by minute, just before its next refit. The scenario's nightly jobs
   are scheduled, so the controller knows them ahead: ours is told of them as
   ScheduledLoad is (it learns from the draw without them and adds them over the
   horizon). Peers: the seasonal naive forecast (yesterday at the same minute), the
   last value, and on 20 racks and 4 sources at 4 of the origins statsmodels'
   Holt-Winters (additive trend and daily season of 1440 samples, refitted from scratch
   with heuristic initial states and no brute-force start: with statsmodels' defaults one
   fit took 1 to 120 s in trials). A rack always draws more than 0 (racks of 2-40 kW at
   35-75% utilisation, plus noise), so MAPE is defined; the run checks it. Timing: all
   10,000 racks at the first origin in blocks of 1,000 that share the clock: a full fit,
   the steady state between hourly refits (one new sample per rack, then a forecast),
   and the update that refits the seasonal mean.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.predict.baselines import seasonal_naive
from host.predict.forecast import LoadForecaster
from host.predict.forecast_config import Forecast, ForecastConfig
from host.sim.site.scenario import Scenario, parse_scenario
from host.sim.site.simulator import SiteSimulator

try:
    import statsmodels
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
except ImportError:  # pragma: no cover
    sys.exit("benchmarks/forecast.py needs statsmodels: .venv/bin/pip install -e '.[bench]'")

DATA = Path(__file__).resolve().parent.parent / "host" / "data"
WINDOW = 2688  # training samples at every origin, for every method
STRIDE = 13  # steps between origins: coprime with 24 and 48, so origins visit every time of day
STEP_S = 60.0  # the racks' sampling: one minute
DAY_MINUTES = 1440
RACKS = 10_000
RACK_BLOCK = 1_000  # racks forecast together in the timing run (they share the clock)
RACK_HISTORY = 7 * DAY_MINUTES  # one week of minutes: the daily season is fitted, the weekly one not
RACK_HORIZON = 60
RESEASON = 10  # minutes between refits of the seasonal mean alone (ForecastConfig.reseason_every)
RACK_CONFIG = ForecastConfig.daily_weekly(
    STEP_S, quantiles=(0.95,), refit_every=60, reseason_every=RESEASON, window=RACK_HISTORY
)
# Origins on day 8, every 90 minutes from 00:13 to 22:43, so that they visit every time of
# day (the nightly jobs' start and end included); each is also scored STALE minutes on.
RACK_ORIGINS = tuple(RACK_HISTORY + 13 + 90 * i for i in range(16))
STALE = 59  # minutes after an hourly refit: the oldest model the steady state forecasts with
RACK_SAMPLES = RACK_ORIGINS[-1] + STALE + RACK_HORIZON + 1  # 8 days and 43 minutes
SCORED_RACKS = 500  # every 20th rack, at every origin
SCORED_MINUTES = (1, 15, 60)
COVER_RANGES = ((1, 5), (6, 15), (16, 30), (31, 60), (1, 60))
HW_SERIES = 20  # racks that Holt-Winters forecasts (0.1-1.5 s per fit with a 1440-minute season)
HW_SOURCES = 4
HW_ORIGINS = (0, 4, 8, 12)  # indices into RACK_ORIGINS: 00:13, 06:13, 12:13, 18:13
RACK_SOURCE_KW = 10_000  # capacity of each UPS module and generator set; battery strings half that
RACK_SCENARIO = """
# 10,000 racks on 12 sources (8 UPS modules, 4 generator sets; 4 battery strings as
# alternates only) for 8 days at a 60 s step, sized so that nothing trips: the racks draw
# undisturbed, and every draw is what a rack wants. Loads as docs/scenarios.md says
# (windows of the real series, AR noise, random bursts), nightly batch jobs on half the
# deferrable racks, and one unannounced load step during the scored day.
[scenario]
name = "forecast-racks"
seed = 11
step_s = 60
duration_s = 700000

[loads]
profile = "real"

# SOURCES

[[racks]]
group = "hall"
count = 10000
priority = { critical = 0.2, normal = 0.6, deferrable = 0.2 }
primary = ["ups-1", "ups-2", "ups-3", "ups-4", "ups-5", "ups-6", "ups-7", "ups-8", "gen-1", "gen-2", "gen-3", "gen-4"]
inputs = 3

[[jobs]]
start_s = 7200  # every night 02:00 to 04:00
duration_s = 7200
every_s = 86400
fraction = 0.3
priority = "deferrable"
share = 0.5

[[events]]
at_s = 658800  # day 8, 15:00 to 17:00: a tenth of the racks draw 30% more
action = "load_step"
share = 0.1
factor = 1.3
until_s = 666000
"""


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


def holt_winters(train: np.ndarray, day: int, horizon: int, trend: str | None, quick: bool = False) -> np.ndarray:
    """statsmodels' defaults, or with `quick` the heuristic initial states and no brute-force
    search for the optimiser's starting point (for a 1440-sample season, see the racks)."""
    options = {"initialization_method": "heuristic"} if quick else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and frequency chatter
        model = ExponentialSmoothing(train, trend=trend, seasonal="add", seasonal_periods=day, **options)
        fitted = model.fit(use_brute=not quick)
        return np.asarray(fitted.forecast(horizon))


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


def rack_scenario_text() -> str:
    """RACK_SCENARIO with its sources written out."""
    sources = []
    for prefix, kind, count in (("ups", "ups", 8), ("gen", "generator", 4), ("bat", "battery", 4)):
        for i in range(1, count + 1):
            capacity = RACK_SOURCE_KW if kind != "battery" else RACK_SOURCE_KW / 2
            extra = f"energy_kwh = {capacity:g}\nrecharge_kw = 250\n" if kind == "battery" else ""
            sources.append(f'[[sources]]\nid = "{prefix}-{i}"\nkind = "{kind}"\ncapacity_kw = {capacity:g}\n{extra}')
    return RACK_SCENARIO.replace("# SOURCES\n", "\n".join(sources))


@dataclass
class SimulatedSite:
    racks: np.ndarray  # (racks, samples) kW, sample k the draw at k minutes after midnight of day 1
    sources: np.ndarray  # (sources that carry racks, samples) kW
    source_ids: tuple[str, ...]
    seconds: float  # to simulate and read the telemetry
    rack_jobs: np.ndarray  # (racks, samples) kW float32: the scheduled jobs' extra draw, known ahead
    source_jobs: np.ndarray  # (sources that carry racks, samples) kW: the same, per source


def simulate_site() -> SimulatedSite:
    """Every rack's draw and every source's load, minute by minute, as the controller
    reads them: the Fleet telemetry after each step."""
    scenario = parse_scenario(rack_scenario_text(), "forecast-racks")
    assert scenario.step_s == STEP_S and len(scenario.site.racks) == RACKS
    start = time.perf_counter()
    sim = SiteSimulator.from_scenario(scenario)
    draws = np.empty((RACK_SAMPLES, RACKS), dtype=np.float32)  # 0.5 GB; float64 would double it
    loads = np.empty((RACK_SAMPLES, len(scenario.site.sources)))
    for k in range(RACK_SAMPLES):
        telemetry = sim.read_telemetry()
        draws[k] = telemetry.draw_kw
        loads[k] = np.bincount(telemetry.active, weights=telemetry.draw_kw, minlength=loads.shape[1])
        sim.step()
    seconds = time.perf_counter() - start
    assert sim.stats().racks_unpowered == 0 and not sim.read_events(0).events, "the benchmark site must run undisturbed"
    assert draws.min() > 0, "a rack drew nothing: MAPE would be undefined"
    carrying = np.flatnonzero(loads.min(axis=0) > 0)  # battery strings are alternates only and carry nothing
    ids = tuple(scenario.site.sources[i].id for i in carrying)
    rack_jobs, source_jobs = scheduled_extra(scenario, sim.read_telemetry().active)
    return SimulatedSite(np.ascontiguousarray(draws.T), np.ascontiguousarray(loads[:, carrying].T), ids, seconds,
                         rack_jobs, source_jobs[carrying])


def scheduled_extra(scenario: Scenario, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the scenario's jobs add, minute by minute, per rack and per source (the racks
    never move here): the anticipated workload the controller knows of and tells the
    forecaster about. A job adds its fraction of the rack's rating; where that would pass
    the rating the simulator clips the draw, so this is an upper bound there."""
    rated = np.array([rack.rated_kw for rack in scenario.site.racks])
    times = np.arange(RACK_SAMPLES) * STEP_S
    racks = np.zeros((len(rated), RACK_SAMPLES), dtype=np.float32)
    sources = np.zeros((len(scenario.site.sources), RACK_SAMPLES))
    for job in scenario.jobs:
        running = job.running(times).astype(np.float64)
        extra = job.extra_kw(rated)
        racks += (extra[:, None] * running[None, :]).astype(np.float32)
        sources += np.bincount(active, weights=extra, minlength=len(sources))[:, None] * running[None, :]
    return racks, sources


@dataclass
class MinuteScores:
    """Errors (forecast - actual) and actuals per origin, each (series, RACK_HORIZON)."""

    errors: dict[str, list[np.ndarray]] = field(default_factory=lambda: {m: [] for m in ("ours", "naive", "last")})
    actuals: list[np.ndarray] = field(default_factory=list)
    p95: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0  # ours: refit (or update) + predict, all origins

    def add(self, y: np.ndarray, origin: int, forecast: Forecast) -> None:
        train, actual = y[:, origin - RACK_HISTORY + 1 : origin + 1], y[:, origin + 1 : origin + 1 + RACK_HORIZON]
        self.errors["ours"].append(forecast.point - actual)
        self.errors["naive"].append(seasonal_naive(train, DAY_MINUTES, RACK_HORIZON) - actual)
        self.errors["last"].append(np.repeat(train[:, -1:], RACK_HORIZON, axis=1) - actual)
        self.actuals.append(actual)
        self.p95.append(forecast.p95)

    def mae(self, method: str, step: int) -> float:
        return float(np.mean([np.abs(e[:, step - 1]) for e in self.errors[method]]))

    def mape(self, method: str, step: int) -> float:
        pairs = zip(self.errors[method], self.actuals, strict=True)
        return float(100 * np.mean([np.abs(e[:, step - 1]) / a[:, step - 1] for e, a in pairs]))

    def cover(self, first: int, last: int) -> float:
        pairs = zip(self.actuals, self.p95, strict=True)
        return float(100 * np.mean([a[:, first - 1 : last] <= p[:, first - 1 : last] for a, p in pairs]))


def score_minutes(y: np.ndarray, jobs: np.ndarray) -> tuple[MinuteScores, MinuteScores]:
    """Ours online over RACK_ORIGINS, all series of `y` in one block: at each origin it has
    just refitted on the week before it (the update brings in 31 or more new minutes,
    over refit_every), and forecasts; then it takes STALE more minutes one update, with
    no refit, and forecasts again, as it would just before its next hourly refit. Scores
    at the refit, and STALE minutes after it. The scheduled jobs (`jobs`, the same shape)
    are known ahead, as ScheduledLoad is: ours learns from the draw without them and adds
    them over the horizon; the peers see the draw as it is."""
    fresh, stale = MinuteScores(), MinuteScores()
    base = y - jobs
    forecaster, last = None, 0
    for origin in RACK_ORIGINS:
        start = time.perf_counter()
        if forecaster is None:
            t0_s = (origin - RACK_HISTORY + 1) * STEP_S
            forecaster = LoadForecaster(RACK_CONFIG).fit(base[:, origin - RACK_HISTORY + 1 : origin + 1], t0_s=t0_s)
        else:
            forecaster.update(base[:, last + 1 : origin + 1])
        forecast = with_jobs(forecaster.predict(RACK_HORIZON), jobs, origin)
        fresh.seconds += time.perf_counter() - start
        fresh.add(y, origin, forecast)
        start = time.perf_counter()
        for minute in range(origin + 1, origin + 1 + STALE):  # minute by minute, as the controller follows it
            forecaster.update(base[:, minute : minute + 1])
        forecast = with_jobs(forecaster.predict(RACK_HORIZON), jobs, origin + STALE)
        stale.seconds += time.perf_counter() - start
        stale.add(y, origin + STALE, forecast)
        last = origin + STALE
    return fresh, stale


def with_jobs(forecast: Forecast, jobs: np.ndarray, origin: int) -> Forecast:
    """The forecast with the scheduled jobs' extra over its horizon added."""
    return forecast.plus(jobs[:, origin + 1 : origin + 1 + RACK_HORIZON].astype(np.float64))


def holt_winters_minutes(y: np.ndarray, series: Sequence[int]) -> tuple[dict[tuple[int, int], np.ndarray], float]:
    """statsmodels' Holt-Winters errors per (series, origin index) over HW_ORIGINS, and
    its seconds per fit+predict."""
    errors, seconds = {}, 0.0
    for i in series:
        for j in HW_ORIGINS:
            origin = RACK_ORIGINS[j]
            train, actual = y[i, origin - RACK_HISTORY + 1 : origin + 1], y[i, origin + 1 : origin + 1 + RACK_HORIZON]
            start = time.perf_counter()
            forecast = holt_winters(train, DAY_MINUTES, RACK_HORIZON, "add", quick=True)
            seconds += time.perf_counter() - start
            errors[i, j] = forecast - actual
    return errors, seconds / max(len(errors), 1)


def ours_alone(y: np.ndarray, series: Sequence[int]) -> float:
    """Seconds per fit+predict of ours on one series alone, from scratch, at HW_ORIGINS."""
    start = time.perf_counter()
    for i in series:
        for j in HW_ORIGINS:
            origin = RACK_ORIGINS[j]
            LoadForecaster(RACK_CONFIG).fit(y[i, origin - RACK_HISTORY + 1 : origin + 1]).predict(RACK_HORIZON)
    return (time.perf_counter() - start) / (len(series) * len(HW_ORIGINS))


def pick(scores: MinuteScores, method: str, rows: Sequence[int]) -> list[np.ndarray]:
    """`method`'s errors at HW_ORIGINS for `rows` of the scored block, in the order of
    holt_winters_minutes."""
    return [scores.errors[method][j][r] for r in rows for j in HW_ORIGINS]


def rack_tables() -> None:
    site = simulate_site()
    print(
        f"\n<!-- simulating {RACKS:,} racks for {RACK_SAMPLES / DAY_MINUTES:.2f} days at a {STEP_S:.0f} s step, "
        f"reading the telemetry every step: {site.seconds:.1f} s -->"
    )
    scored = np.arange(0, RACKS, RACKS // SCORED_RACKS)
    started = time.perf_counter()
    racks = site.racks[scored].astype(np.float64)
    fresh, stale = score_minutes(racks, site.rack_jobs[scored])
    sources_fresh, sources_stale = score_minutes(site.sources, site.source_jobs)
    hw_rows = np.arange(0, len(scored), len(scored) // HW_SERIES)
    hw_errors, hw_s = holt_winters_minutes(racks, hw_rows)
    alone_s = ours_alone(racks, hw_rows)
    hw_src_rows = range(len(site.source_ids))[:: max(1, len(site.source_ids) // HW_SOURCES)][:HW_SOURCES]
    hw_src_errors, hw_src_s = holt_winters_minutes(site.sources, hw_src_rows)
    print(f"<!-- rack and source accuracy: {time.perf_counter() - started:.0f} s -->")
    timing = rack_timing(site.racks)

    print()
    head = " | ".join(f"{m} {label}" for m in ("MAE kW", "MAPE") for label in ("ours", "seasonal naive", "last value"))
    print(f"| series | forecast made | horizon | {head} | ours / naive MAE | ours / last value MAE | P95 cover |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, scores, made in (
        (f"{len(scored):,} racks", fresh, "at a refit"),
        (f"{len(scored):,} racks", stale, f"{STALE} min after"),
        (f"{len(site.source_ids)} sources", sources_fresh, "at a refit"),
        (f"{len(site.source_ids)} sources", sources_stale, f"{STALE} min after"),
    ):
        for step in SCORED_MINUTES:
            m = {k: scores.mae(k, step) for k in ("ours", "naive", "last")}
            p = {k: scores.mape(k, step) for k in ("ours", "naive", "last")}
            print(
                f"| {name} | {made} | {step} min | {m['ours']:.3f} | {m['naive']:.3f} | {m['last']:.3f} "
                f"| {p['ours']:.2f}% | {p['naive']:.2f}% | {p['last']:.2f}% | {m['ours'] / m['naive']:.2f} "
                f"| {m['ours'] / m['last']:.2f} | {scores.cover(step, step):.1f}% |"
            )
    print()
    ranges = " | ".join(f"{a}-{b} min" for a, b in COVER_RANGES)
    print(f"| P95 cover of ours | forecast made | {ranges} |")
    print("| --- | --- |" + " --- |" * len(COVER_RANGES))
    for name, scores, made in (
        (f"{len(scored):,} racks x {len(RACK_ORIGINS)} origins", fresh, "at a refit"),
        (f"{len(scored):,} racks x {len(RACK_ORIGINS)} origins", stale, f"{STALE} min after"),
        (f"{len(site.source_ids)} sources x {len(RACK_ORIGINS)} origins", sources_fresh, "at a refit"),
        (f"{len(site.source_ids)} sources x {len(RACK_ORIGINS)} origins", sources_stale, f"{STALE} min after"),
    ):
        print(f"| {name} | {made} | " + " | ".join(f"{scores.cover(a, b):.1f}%" for a, b in COVER_RANGES) + " |")

    print()
    print(
        "| Holt-Winters subset | horizon | MAE ours | MAE seasonal naive | MAE last value | MAE Holt-Winters "
        "| MAPE ours | MAPE seasonal naive | MAPE last value | MAPE Holt-Winters | ours / HW MAPE |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, scores, rows, errors in (
        (f"{len(hw_rows)} racks x {len(HW_ORIGINS)} origins", fresh, hw_rows, hw_errors),
        (f"{len(hw_src_rows)} sources x {len(HW_ORIGINS)} origins", sources_fresh, hw_src_rows, hw_src_errors),
    ):
        table = {m: pick(scores, m, rows) for m in ("ours", "naive", "last")} | {"hw": list(errors.values())}
        actuals = [scores.actuals[j][r] for r in rows for j in HW_ORIGINS]
        for step in SCORED_MINUTES:
            mae_, mape_ = {}, {}
            for m, errs in table.items():
                e = np.abs(np.array([x[step - 1] for x in errs]))
                mae_[m] = float(e.mean())
                mape_[m] = float(100 * np.mean(e / np.array([a[step - 1] for a in actuals])))
            print(
                f"| {name} | {step} min | " + " | ".join(f"{mae_[m]:.3f}" for m in table) + " | "
                + " | ".join(f"{mape_[m]:.2f}%" for m in table) + f" | {mape_['ours'] / mape_['hw']:.2f} |"
            )

    print()
    print(
        "| ms per series, fit+predict 1-60 min | ours, one series alone | ours, racks in blocks "
        f"of {len(scored):,} (refit + predict) | Holt-Winters | HW / ours alone | HW / ours in blocks |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    block_ms = 1000 * fresh.seconds / (len(scored) * len(RACK_ORIGINS))
    print(
        f"| racks | {1000 * alone_s:.1f} | {block_ms:.2f} | {1000 * hw_s:,.0f} | {hw_s / alone_s:.0f}x "
        f"| {1000 * hw_s / block_ms:,.0f}x |"
    )
    print(f"| sources (HW: {len(hw_src_rows)} x {len(HW_ORIGINS)} fits) | | | {1000 * hw_src_s:,.0f} | | |")
    print_timing(timing)


@dataclass
class Timing:
    fit_s: float = 0.0
    first_s: float = 0.0  # the first forecast after a fit: it fits the RACK_HORIZON horizon regressions
    step_s: float = 0.0  # one more minute between refits: update + forecast
    reseason_s: float = 0.0  # the update that refits the seasonal mean alone, RESEASON minutes after the refit
    covered: list[np.ndarray] = field(default_factory=list)
    errors: list[np.ndarray] = field(default_factory=list)
    actuals: list[np.ndarray] = field(default_factory=list)
    method: str = ""


def rack_timing(draws: np.ndarray) -> Timing:
    """All RACKS at the first origin, in blocks of RACK_BLOCK: a full fit on the week
    before it and a forecast, then the next minute (update, no refit) and a forecast,
    which is scored."""
    origin, out = RACK_ORIGINS[0], Timing()
    for first in range(0, RACKS, RACK_BLOCK):
        y = draws[first : first + RACK_BLOCK].astype(np.float64)
        start = time.perf_counter()
        forecaster = LoadForecaster(RACK_CONFIG).fit(
            y[:, origin - RACK_HISTORY + 1 : origin + 1], t0_s=(origin - RACK_HISTORY + 1) * STEP_S
        )
        out.fit_s += time.perf_counter() - start
        start = time.perf_counter()
        forecaster.predict(RACK_HORIZON)
        out.first_s += time.perf_counter() - start
        start = time.perf_counter()
        forecast = forecaster.update(y[:, origin + 1]).predict(RACK_HORIZON)
        out.step_s += time.perf_counter() - start
        actual = y[:, origin + 2 : origin + 2 + RACK_HORIZON]
        out.covered.append(actual <= forecast.p95)
        out.errors.append(forecast.point - actual)
        out.actuals.append(actual)
        out.method = forecaster.method
        forecaster.update(y[:, origin + 2 : origin + RESEASON])  # up to a minute before the seasonal refit
        start = time.perf_counter()
        forecaster.update(y[:, origin + RESEASON : origin + RESEASON + 1])
        out.reseason_s += time.perf_counter() - start
    return out


def print_timing(t: Timing) -> None:
    errors, actuals = np.vstack(t.errors), np.vstack(t.actuals)
    mape = 100 * np.mean(np.abs(errors) / actuals, axis=0)
    print()
    print(
        "| racks | history | horizons | model | fit s | first forecast s (fits the 60 horizon regressions) "
        "| fit + forecast s | ms per rack | next minute: update + forecast s, no refit "
        f"| the update that refits the seasonal mean (every {RESEASON} min) s "
        "| that forecast: MAPE 1, 15, 60 min | P95 cover 1-60 min |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {RACKS:,} in blocks of {RACK_BLOCK:,} | 1 week of minutes | 1-{RACK_HORIZON} min "
        f"| {t.method}, daily season | {t.fit_s:.1f} | {t.first_s:.1f} | {t.fit_s + t.first_s:.1f} "
        f"| {1000 * (t.fit_s + t.first_s) / RACKS:.2f} | {t.step_s:.1f} | {t.reseason_s:.1f} "
        f"| {', '.join(f'{mape[s - 1]:.2f}%' for s in SCORED_MINUTES)} | {100 * np.vstack(t.covered).mean():.1f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("real", "racks"), help="run one part: the real series or the racks")
    only = parser.parse_args().only
    started = time.perf_counter()
    print(
        f"<!-- {platform.machine()}, {os.cpu_count()} cores; CPython {platform.python_version()}; numpy "
        f"{np.__version__}; statsmodels {statsmodels.__version__} -->"
    )
    if only != "racks":
        real_series_tables(load_series())
    if only != "real":
        rack_tables()
    print(f"\n<!-- {time.perf_counter() - started:.0f} s in all -->")


if __name__ == "__main__":
    main()
