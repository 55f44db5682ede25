"""A rack's or a source's load forecast against what the site simulator then does
(`ibt forecast` prints and plots this).

The scenario runs on the site simulator from its start; the draw of one rack (as its
tap reports it) or the load of one source is recorded at every step. After `days` of
history the LoadForecaster is fitted (daily and weekly seasons at the simulator's step;
a season is fitted only once the history holds two cycles of it, so a week of minute
data gets the daily one) and forecasts `horizon_min` minutes; the simulator then runs
on over the horizon for the actuals.

A rack's draw while it is unpowered, and a source's load while it is down, are gaps
(NaN), not zeros: the demand was not measured then.

The scenario's scheduled jobs are known in advance, so they are honoured: their extra
draw (`fraction` of the rated kW of each rack running one; for a source, of its racks
on it) is taken out of the history before the fit, since the seasons would otherwise
smear a two-hour job over the day, and added back to the forecast as ScheduledLoad.
Load steps and bursts are not known in advance and stay in the history.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from host.model.arrays import BoolArray, FloatArray
from host.model.errors import ConfigurationError
from host.model.sources import SourceState
from host.predict.forecast import LoadForecaster
from host.predict.forecast_config import DAY_S, Forecast, ForecastConfig, ScheduledLoad
from host.sim.site.scenario import Scenario, load_scenario
from host.sim.site.simulator import SiteSimulator

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCENARIO = ROOT / "scenarios" / "hall_week.toml"
DEFAULT_HORIZON_MIN = 60
MAX_HORIZON_MIN = 1440  # a day ahead at most: every step of the horizon fits a regression of its own
TABLE_ROWS = 24  # the text table stays readable: rows every 10 minutes, coarser for long horizons
TABLE_EVERY_MIN = (10, 15, 20, 30, 60, 120)
PLOT_HISTORY_S = (6 * 3600.0, DAY_S)  # history shown: 4 horizons, within these bounds
IDS_LISTED_ALL = 16  # an unknown id is answered with all the valid ones up to this many, else a few
IDS_LISTED = 4

Kind = Literal["rack", "source"]


class ForecastReportError(ConfigurationError, ValueError):
    """A forecast that cannot be made as asked; the message says why and what would do."""


GAP_STATE: dict[Kind, str] = {"rack": "unpowered", "source": "down"}  # what a gap in the draw means


@dataclass(frozen=True, eq=False)
class ForecastReport:
    """The forecast of one rack or source at one origin, with the history before it and
    the actuals after it. Powers are kW; times are seconds from the scenario's start
    (midnight of day 0). Gaps are NaN."""

    scenario: str
    kind: Kind
    target: str
    step_s: float
    history_kw: FloatArray  # as recorded, scheduled jobs included
    forecast: Forecast  # steps 1..H after the history; times_s[0] is the origin
    actual_kw: FloatArray
    seasons: tuple[str, ...]  # the seasons the fit used, e.g. ("daily",)
    scheduled: tuple[ScheduledLoad, ...]  # the job windows added to the forecast

    @property
    def history_s(self) -> FloatArray:
        """Times of the history samples; the last is one step before the origin."""
        return np.arange(len(self.history_kw), dtype=np.float64) * self.step_s

    @property
    def history_days(self) -> float:
        return len(self.history_kw) * self.step_s / DAY_S

    @property
    def horizon_min(self) -> float:
        return len(self.actual_kw) * self.step_s / 60

    @property
    def times_s(self) -> FloatArray:
        return self.forecast.times_s

    @property
    def origin_s(self) -> float:
        return float(self.forecast.times_s[0])

    @property
    def p50_kw(self) -> FloatArray | None:
        return self.forecast.quantiles.get(0.5)

    @property
    def p05_kw(self) -> FloatArray | None:
        return self.forecast.quantiles.get(0.05)

    @property
    def gap_state(self) -> str:
        """What a gap means for this target."""
        return GAP_STATE[self.kind]

    @property
    def compared(self) -> int:
        """Horizon steps with an actual to compare with (a gap has none)."""
        return int(np.isfinite(self.actual_kw).sum())

    @property
    def mae_kw(self) -> float:
        error = np.abs(self.actual_kw - self.forecast.point)
        return float(np.nanmean(error)) if self.compared else math.nan

    @property
    def mape_pct(self) -> float:
        """Over the steps with a positive actual: the percentage error is undefined at 0."""
        positive = np.isfinite(self.actual_kw) & (self.actual_kw > 0)
        if not positive.any():
            return math.nan
        a = self.actual_kw[positive]
        return float(100.0 * np.mean(np.abs(a - self.forecast.point[positive]) / a))

    @property
    def p95_coverage(self) -> float:
        """The share of compared steps whose actual is at or under the P95."""
        finite = np.isfinite(self.actual_kw)
        return float(np.mean(self.actual_kw[finite] <= self.forecast.p95[finite])) if finite.any() else math.nan

    @property
    def method(self) -> str:
        return self.forecast.method + (f" ({', '.join(self.seasons)} season)" if self.seasons else "")

    def summary(self) -> dict[str, object]:
        finite = self.actual_kw[np.isfinite(self.actual_kw)]
        return {
            "mae_kw": _num(self.mae_kw, 4),
            "mape_pct": _num(self.mape_pct, 3),
            "p95_coverage": _num(self.p95_coverage, 4),
            "mean_actual_kw": _num(float(finite.mean()) if finite.size else math.nan, 3),
            "steps": len(self.actual_kw),
            "steps_compared": self.compared,
            "method": self.method,
        }

    def as_dict(self) -> dict[str, object]:
        """Plain data for JSON: the setting, the summary and the horizon step by step."""
        series: dict[str, object] = {
            "time_s": [float(t) for t in self.times_s],
            "actual_kw": _nums(self.actual_kw),
            "forecast_kw": _nums(self.forecast.point),
            "p95_kw": _nums(self.forecast.p95),
        }
        if self.p50_kw is not None:
            series["p50_kw"] = _nums(self.p50_kw)
        if self.p05_kw is not None:
            series["p05_kw"] = _nums(self.p05_kw)
        return {
            "scenario": self.scenario,
            self.kind: self.target,
            "step_s": self.step_s,
            "history_days": round(self.history_days, 4),
            "origin_s": self.origin_s,
            "horizon_min": round(self.horizon_min, 3),
            "scheduled": [{"start_s": s.start_s, "duration_s": s.duration_s, "extra_kw": round(s.extra, 3)}
                          for s in self.scheduled],
            "summary": self.summary(),
            "series": series,
        }

    def as_text(self) -> str:
        """A summary and a compact table of the horizon."""
        horizon_min = self.horizon_min
        steps = len(self.actual_kw)
        missing = "" if self.compared == steps else f"; {self.gap_state} in the other {steps - self.compared}"
        lines = [
            f"{self.kind} {self.target}, scenario {self.scenario}: {horizon_min:g} min from {clock(self.origin_s)}"
            f" after {self.history_days:g} days of history; {self.method}",
            f"MAE {_kw(self.mae_kw)}, MAPE {_pct(self.mape_pct)}, P95 coverage {_pct(100 * self.p95_coverage, 0)}"
            f" ({self.compared} of {steps} steps compared{missing})",
        ]
        if self.scheduled:
            windows = ", ".join(f"{clock(s.start_s)} +{s.extra:.3g} kW for {s.duration_s / 60:g} min"
                                for s in self.scheduled)
            lines.append(f"scheduled jobs in the horizon: {windows}")
        p50 = self.p50_kw
        lines.append(f"{'time':<12} {'actual':>9} {'forecast':>9}" + (f" {'P50':>9}" if p50 is not None else "")
                     + f" {'P95':>9}")
        for i in table_rows(len(self.actual_kw), self.step_s):
            row = f"{clock(self.times_s[i]):<12} {self.actual_kw[i]:9.2f} {self.forecast.point[i]:9.2f}"
            if p50 is not None:
                row += f" {p50[i]:9.2f}"
            lines.append(row + f" {self.forecast.p95[i]:9.2f}")
        lines.append("(kW; P95 coverage: the share of steps with the actual at or under the P95)")
        return "\n".join(lines)


def forecast_against_actuals(
    scenario_path: Path | str,
    *,
    rack: str | None = None,
    source: str | None = None,
    days: float | None = None,
    horizon_min: float = DEFAULT_HORIZON_MIN,
    honour_jobs: bool = True,
) -> ForecastReport:
    """Run the scenario, forecast the rack's or source's draw after `days` of history
    (None: as many whole days as leave the horizon inside the scenario) for
    `horizon_min` minutes, and collect the actuals. ForecastReportError for a request
    that does not fit the scenario; ScenarioError for a scenario that cannot be read."""
    if (rack is None) == (source is None):
        raise ForecastReportError("name one rack or one source to forecast")
    scenario = load_scenario(scenario_path)
    kind: Kind = "rack" if rack is not None else "source"
    target = rack if rack is not None else source
    assert target is not None  # for mypy: exactly one was given
    _check_target(scenario, kind, target)
    horizon = _horizon_steps(scenario, horizon_min)
    n = _history_steps(scenario, days, horizon)
    try:
        config = ForecastConfig.daily_weekly(scenario.step_s)
    except ValueError as exc:
        raise ForecastReportError(f"scenario {scenario.name!r}: {exc}; the forecaster needs whole days") from None

    draw, job_kw, at_origin = _record(scenario, kind, target, n, horizon, honour_jobs)
    history = draw[:n] - job_kw[:n]
    if not np.isfinite(history).any():
        state = GAP_STATE[kind]
        raise ForecastReportError(f"{kind} {target!r} was {state} throughout the history: nothing to fit")
    forecaster = LoadForecaster(config).fit(history, t0_s=0.0)
    origin_s = n * scenario.step_s
    scheduled = _scheduled(scenario, at_origin, origin_s, horizon * scenario.step_s) if honour_jobs else ()
    forecast = forecaster.predict(horizon, scheduled)
    seasons: tuple[str, ...] = ()
    if forecaster.method.startswith("seasonal regression"):
        day = round(DAY_S / scenario.step_s)
        seasons = tuple("daily" if s == day else "weekly" if s == 7 * day else f"{s}-step"
                        for s, _ in config.fittable_seasons(n))
    return ForecastReport(
        scenario=scenario.name,
        kind=kind,
        target=target,
        step_s=scenario.step_s,
        history_kw=draw[:n],
        forecast=forecast,
        actual_kw=draw[n:],
        seasons=seasons,
        scheduled=scheduled,
    )


# --- checks -----------------------------------------------------------------------------


def _check_target(scenario: Scenario, kind: Kind, target: str) -> None:
    ids = [r.id for r in scenario.site.racks] if kind == "rack" else [s.id for s in scenario.site.sources]
    if target in ids:
        return
    close = _closest(target, ids)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    listed = ", ".join(ids) if len(ids) <= IDS_LISTED_ALL else f"{', '.join(ids[:IDS_LISTED])}, ... {ids[-1]}"
    raise ForecastReportError(
        f"no {kind} {target!r} in scenario {scenario.name!r}{hint}; its {len(ids)} {kind}s are {listed}"
    )


def _closest(target: str, ids: Sequence[str]) -> list[str]:
    """The id that differs from `target` only in the zero padding of its numbers (rack
    'hall-a-16' is 'hall-a-00016'), else the few closest by spelling."""
    def unpadded(s: str) -> str:
        return re.sub(r"\d+", lambda m: str(int(m.group())), s).lower()

    same = [i for i in ids if unpadded(i) == unpadded(target)]
    return same[:1] or difflib.get_close_matches(target, ids, n=2)


def _horizon_steps(scenario: Scenario, horizon_min: float) -> int:
    if not (math.isfinite(horizon_min) and 0 < horizon_min <= MAX_HORIZON_MIN):
        raise ForecastReportError(f"the horizon must be 1 to {MAX_HORIZON_MIN} minutes, got {horizon_min:g}")
    steps = round(horizon_min * 60 / scenario.step_s)
    if steps < 1:
        raise ForecastReportError(f"a {horizon_min:g}-minute horizon is shorter than the scenario's step "
                                  f"({scenario.step_s:g} s)")
    return steps


def _history_steps(scenario: Scenario, days: float | None, horizon: int) -> int:
    """History samples before the origin; the origin plus the horizon must fit in the
    scenario, whose steps run from 0 to just before duration_s."""
    total = math.floor(scenario.duration_s / scenario.step_s + 1e-9)
    room = total - horizon  # the most history that leaves the horizon inside the scenario
    room_days = room * scenario.step_s / DAY_S
    if days is None:
        if room_days < 1:
            raise ForecastReportError(
                f"scenario {scenario.name!r} lasts {scenario.duration_s / DAY_S:g} days: too short for a day of"
                " history and the horizon")
        return round(math.floor(room_days) * DAY_S / scenario.step_s)
    if not (math.isfinite(days) and days > 0):
        raise ForecastReportError(f"days of history must be positive, got {days:g}")
    n = round(days * DAY_S / scenario.step_s)
    if n > room:
        raise ForecastReportError(
            f"{days:g} days of history and a {horizon * scenario.step_s / 60:g}-minute horizon run past the end of"
            f" scenario {scenario.name!r} ({scenario.duration_s / DAY_S:g} days): at most {room_days:.4g} days"
            " of history, or a shorter horizon")
    if n < 2:
        raise ForecastReportError(f"{days:g} days is less than two steps of {scenario.step_s:g} s")
    return n


# --- the run ----------------------------------------------------------------------------


def _record(
    scenario: Scenario, kind: Kind, target: str, history: int, horizon: int, honour_jobs: bool
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Through the fleet interface: the target's draw at steps 0..history+horizon-1 (gaps
    NaN), the scheduled jobs' part of it, and each job's extra kW on the target as wired
    at the last history step, which is all the forecast may assume about the horizon."""
    steps = history + horizon
    simulator = SiteSimulator.from_scenario(scenario)
    site = scenario.site
    jobs = scenario.jobs if honour_jobs else ()
    rated = np.array([r.rated_kw for r in site.racks])
    job_extra = [job.extra_kw(rated) for job in jobs]  # each job's extra kW per rack while it runs
    times: FloatArray = np.arange(steps, dtype=np.float64) * scenario.step_s
    running: FloatArray = np.array([job.running(times) for job in jobs], dtype=np.float64).reshape(len(jobs), steps)
    # A source's racks are read only where the wiring matters: while a job runs, and at the origin.
    wiring_needed: BoolArray = np.asarray(running.any(axis=0))
    wiring_needed[history - 1] = bool(jobs)
    draw = np.full(steps, np.nan)
    on_target: FloatArray = np.zeros((steps, len(jobs)))  # each job's extra kW on the target, as wired at each step
    rack = site.rack_index.get(target, -1)
    source = site.source_index.get(target, -1)
    # one source's own adapter: the fleet's read_sources would compute every source's health at each step
    adapter = simulator.adapter(target) if kind == "source" else None
    for k in range(steps):
        if k:
            simulator.step()
        if kind == "rack":
            telemetry = simulator.read_telemetry()
            powered = telemetry.active[rack] >= 0
            draw[k] = telemetry.draw_kw[rack] if powered else np.nan
            on_target[k] = [extra[rack] if powered else 0.0 for extra in job_extra]
        else:
            assert adapter is not None
            up = adapter.read_health_status().state == SourceState.UP
            draw[k] = adapter.read_reserve_capacity().load_kw if up else np.nan
            if wiring_needed[k]:
                mine = simulator.read_telemetry().active == source
                on_target[k] = [float(extra[mine].sum()) for extra in job_extra]
    job_kw = (running.T * on_target).sum(axis=1)
    return draw, job_kw, on_target[history - 1]


def _scheduled(scenario: Scenario, extra_kw: FloatArray, origin_s: float, horizon_s: float
               ) -> tuple[ScheduledLoad, ...]:
    """The job windows that overlap the horizon, each with its extra kW on the target."""
    loads = []
    end_s = origin_s + horizon_s
    for job, extra in zip(scenario.jobs, extra_kw, strict=True):
        if extra > 0:
            windows = job.windows(origin_s, end_s)
            loads += [ScheduledLoad(start, stop - start, float(extra)) for start, stop in windows]
    return tuple(sorted(loads, key=lambda load: load.start_s))


# --- output -----------------------------------------------------------------------------


def clock(t_s: float) -> str:
    """Scenario time as 'day D HH:MM' (day 0 starts the run, at midnight)."""
    minutes = round(t_s / 60)
    day, minute = divmod(minutes, 1440)
    return f"day {day} {minute // 60:02d}:{minute % 60:02d}"


def table_rows(steps: int, step_s: float) -> list[int]:
    """Indices of the horizon steps the text table shows: every 10 minutes, or coarser
    so that it stays about TABLE_ROWS long; the last step always."""
    span_min = steps * step_s / 60
    every_min = next((m for m in TABLE_EVERY_MIN if span_min / m <= TABLE_ROWS), TABLE_EVERY_MIN[-1])
    stride = max(1, round(every_min * 60 / step_s))
    rows = list(range(0, steps, stride))
    if rows[-1] != steps - 1:
        rows.append(steps - 1)
    return rows


def _kw(x: float) -> str:
    return f"{x:.3g} kW" if math.isfinite(x) else "n/a"


def _pct(x: float, decimals: int | None = None) -> str:
    """A percentage for people; n/a where it is undefined (no actuals, or none above 0)."""
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.{decimals}f}%" if decimals is not None else f"{x:.3g}%"


def _num(x: float, digits: int) -> float | None:
    return round(x, digits) if math.isfinite(x) else None  # JSON has no NaN


def _nums(values: FloatArray) -> list[float | None]:
    return [_num(float(v), 4) for v in values]


def _gaps(values: FloatArray) -> list[tuple[int, int]]:
    """(start, stop) of the runs of NaN in `values`."""
    edges = np.diff(np.concatenate([[0], np.isnan(values).astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def plot(report: ForecastReport, path: Path | str) -> None:
    """Write a PNG: the last hours of history (4 horizons, 6 h to a day), the actuals,
    the point forecast and the P05-P95 band, the origin marked."""
    # Imported here: matplotlib takes a noticeable time to load and only --plot needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    horizon_s = len(report.actual_kw) * report.step_s
    shown_s = min(max(4 * horizon_s, PLOT_HISTORY_S[0]), PLOT_HISTORY_S[1])
    keep = report.history_s >= report.origin_s - shown_s
    hours = 1 / 3600.0
    h_t, h_y = report.history_s[keep] * hours, report.history_kw[keep]
    f_t = report.times_s * hours
    point, p95, p05 = report.forecast.point, report.forecast.p95, report.p05_kw

    fig = Figure(figsize=(10, 4.8), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)  # no screen here: render with Agg
    ax = fig.add_subplot()
    for load in report.scheduled:
        # a strip along the bottom: a full-height span would tint the band beneath it
        ax.axvspan(load.start_s * hours, (load.start_s + load.duration_s) * hours, ymax=0.03, color="tab:orange",
                   alpha=0.7, lw=0, label="scheduled job" if load is report.scheduled[0] else None)
    shown_t = np.concatenate([h_t, f_t])
    for n, (start, stop) in enumerate(_gaps(np.concatenate([h_y, report.actual_kw]))):
        # the step after the last of the run ends it; the axes end where the data does
        end = shown_t[stop] if stop < len(shown_t) else shown_t[-1]
        ax.axvspan(shown_t[start], end, color="0.5", alpha=0.15, lw=0,
                   label=f"{report.kind} {report.gap_state}" if n == 0 else None)
    ax.plot(h_t, h_y, color="0.45", lw=1.0, label="history")
    ax.plot(f_t, report.actual_kw, color="black", lw=1.3, label="actual")
    if p05 is not None:
        ax.fill_between(f_t, p05, p95, color="tab:blue", alpha=0.18, lw=0, label="P05-P95 band")
    ax.plot(f_t, p95, color="tab:blue", lw=1.0, ls="--", label="P95")
    ax.plot(f_t, point, color="tab:blue", lw=1.8, label="forecast (mean)")
    ax.axvline(report.origin_s * hours, color="tab:red", lw=1.0, ls=":")
    ax.annotate("origin", (report.origin_s * hours, 1.0), xycoords=("data", "axes fraction"),
                xytext=(3, -3), textcoords="offset points", va="top", color="tab:red", fontsize=9)

    span_h = f_t[-1] - (h_t[0] if len(h_t) else f_t[0])
    ax.xaxis.set_major_locator(MultipleLocator(1 if span_h <= 8 else 2 if span_h <= 16 else 3 if span_h <= 30 else 6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: clock(x * 3600).replace(" ", "\u00a0", 1)
                                               .replace(" ", "\n")))
    ax.set_xlim(h_t[0] if len(h_t) else f_t[0], f_t[-1])
    ax.set_xlabel("scenario time (day, hh:mm)")
    ax.set_ylabel("draw (kW)" if report.kind == "rack" else "load (kW)")
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    # below the axes, in one row: a legend inside would hide data somewhere
    fig.legend(handles, labels, loc="outside lower center", fontsize=9, ncols=len(labels), frameon=False)
    ax.set_title(f"{report.kind} {report.target}, scenario {report.scenario}", loc="left", fontsize=12)
    ax.set_title(f"{report.horizon_min:g} min ahead from {clock(report.origin_s)}: "
                 f"MAE {_kw(report.mae_kw)}, MAPE {_pct(report.mape_pct)}, "
                 f"P95 coverage {_pct(100 * report.p95_coverage, 0)}\n{report.method}",
                 loc="right", fontsize=9, color="0.3")
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise ForecastReportError(f"cannot write the plot to {path}: {exc.strerror or exc}") from None
