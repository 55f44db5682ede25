"""Rack loads for the site simulator, built from the real load series in host/data.

Each rack draws `rated_kw * utilisation * shape(t)`, where its shape is a window of
the England and Wales demand (Taylor, half-hourly), of the UCI clients' hourly load,
or a mix of both, shifted by whole days plus a small jitter and interpolated to the
simulator step. Racks therefore differ (window, mix, scale, noise) yet correlate as
real ones do (the same daily rhythm, a site-wide noise term). On top: relative noise
(AR(1), per rack and site-wide), short bursts at random, load steps and scheduled jobs.
The draw is clipped to [0, rated_kw].

Loads are generated in blocks of steps, in order, from one seeded generator: the
same seed gives the same loads whatever reads the simulator does in between.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host.model.arrays import FloatArray, IntArray
from host.model.schedule import Job, LoadStep

DATA_DIR = Path(__file__).resolve().parents[2] / "data"  # host/data
DAY_S = 86_400.0
PROFILES = ("real", "flat")
_BLOCK_ELEMENTS = 400_000  # steps x racks generated at once: small enough to stay in cache
_KNOT_MAX_S = 300.0  # the smooth part of the load is evaluated at most this far apart
_NORMALISE_DAYS = 28  # the hourly series is divided by its 4-week centred mean: level drift out, rhythm in
_SHAPE_RANGE = (0.2, 3.0)  # a recorded outage in the hourly series would otherwise zero a rack


@dataclass(frozen=True, eq=False)
class LoadSeries:
    name: str
    period_s: float
    shape: FloatArray  # mean about 1

    @property
    def days(self) -> int:
        return int(len(self.shape) * self.period_s // DAY_S)


def _centred_mean(values: FloatArray, window: int) -> FloatArray:
    kernel = np.ones(window)
    return np.convolve(values, kernel, mode="same") / np.convolve(np.ones_like(values), kernel, mode="same")


@functools.cache
def real_series(data_dir: Path = DATA_DIR) -> tuple[LoadSeries, LoadSeries]:
    """The two real series of host/data as shapes of mean about 1."""
    with (data_dir / "taylor_halfhourly_mw.csv").open() as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if lines[0] != "mw":
        raise ValueError(f"taylor_halfhourly_mw.csv: header must be 'mw' (got {lines[0]!r})")
    taylor = np.array([float(x) for x in lines[1:]])
    with (data_dir / "hourly_electricity.csv").open() as f:
        hourly = np.array([float(row["y"]) for row in csv.DictReader(f)])
    hourly_shape = hourly / _centred_mean(hourly, _NORMALISE_DAYS * 24)
    return (
        LoadSeries("taylor_halfhourly", 1800.0, np.clip(taylor / taylor.mean(), *_SHAPE_RANGE)),
        LoadSeries("hourly_electricity", 3600.0, np.clip(hourly_shape, *_SHAPE_RANGE)),
    )


@dataclass(frozen=True)
class LoadConfig:
    profile: str = "real"  # "real": windows of host/data; "flat": constant shape (tests)
    utilisation: tuple[float, float] = (0.35, 0.75)  # mean draw over rated, uniform per rack
    noise: float = 0.04  # per-rack relative noise, standard deviation
    common_noise: float = 0.02  # site-wide relative noise shared by every rack
    noise_tau_s: float = 900.0  # correlation time of both noises
    bursts_per_day: float = 1.0  # per rack
    burst_s: float = 600.0
    burst_fraction: float = 0.2  # of rated kW added during a burst (0.5 to 1.5 times this, per rack)
    jitter_s: float = 1800.0  # per-rack shift of the profile, uniform within +-


class _Noise:
    """AR(1) relative noise for n series at knots `knot_s` apart, carried across blocks."""

    def __init__(self, n: int, sd: float, tau_s: float, knot_s: float, rng: np.random.Generator) -> None:
        self.phi = math.exp(-knot_s / tau_s) if tau_s > 0 else 0.0
        self.sd = sd
        self.last: FloatArray = rng.standard_normal(n) * sd

    def knots(self, count: int, rng: np.random.Generator) -> FloatArray:
        """The last knot of the previous block, then `count` new ones: (count + 1, n)."""
        series: FloatArray = rng.standard_normal((count + 1, len(self.last))) * (self.sd * math.sqrt(1 - self.phi**2))
        series[0] = self.last
        for k in range(1, count + 1):
            series[k] += self.phi * series[k - 1]
        self.last = series[-1].copy()
        return series


class RackLoads:
    """Draw of every rack at every step, in kW, generated in blocks of steps.

    The smooth part (profile times noise) is evaluated at knots every `knot_steps`
    steps and interpolated linearly in between: the real series are half-hourly and
    hourly and the noise is correlated over `noise_tau_s`, so nothing is lost, and a
    1 s step costs little more than a 60 s one. Load steps, jobs and bursts have sharp
    edges and are applied at every step."""

    def __init__(
        self,
        rated_kw: FloatArray,
        config: LoadConfig,
        step_s: float,
        seed: int,
        jobs: Sequence[Job] = (),
        steps: Sequence[LoadStep] = (),
    ) -> None:
        if config.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)} (got {config.profile!r})")
        self.rated_kw = np.asarray(rated_kw, dtype=float)
        self.config = config
        self.step_s = step_s
        self.jobs = tuple(jobs)
        self.steps = tuple(steps)
        n = len(self.rated_kw)
        params = np.random.default_rng([seed, 2])
        self._rng = np.random.default_rng([seed, 3])
        self.base_kw = self.rated_kw * params.uniform(*config.utilisation, n)
        self._windows = self._draw_windows(n, params)
        self._burst_kw = self.rated_kw * config.burst_fraction * params.uniform(0.5, 1.5, n)
        self._burst_steps = max(1, round(config.burst_s / step_s))
        self._pending: tuple[IntArray, IntArray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))  # bursts to come
        self.knot_steps = max(1, round(min(config.noise_tau_s / 4, _KNOT_MAX_S) / step_s))
        knot_s = self.knot_steps * step_s
        self._noise = _Noise(n, config.noise, config.noise_tau_s, knot_s, self._rng)
        self._common = _Noise(1, config.common_noise, config.noise_tau_s, knot_s, self._rng)
        per_block = max(1, _BLOCK_ELEMENTS // max(n, 1) // self.knot_steps)
        self.block_steps = self.knot_steps * per_block
        self._block_start = -1
        self._block: FloatArray = np.zeros((0, n))

    def _draw_windows(self, n: int, rng: np.random.Generator) -> list[tuple[LoadSeries, FloatArray, FloatArray]]:
        """Per series: the racks' weights on it and their time offsets (whole days plus jitter)."""
        if self.config.profile == "flat":
            return []
        taylor, hourly = real_series()
        pick = rng.random(n)
        weight = np.where(pick < 0.3, 1.0, np.where(pick < 0.6, 0.0, rng.random(n)))  # on taylor
        jitter = rng.uniform(-self.config.jitter_s, self.config.jitter_s, n)
        windows = []
        for series, w in ((taylor, weight), (hourly, 1.0 - weight)):
            offset = rng.integers(0, max(series.days - 1, 1), n) * DAY_S + jitter
            windows.append((series, w, offset))
        return windows

    def row(self, k: int) -> FloatArray:
        """Draw of every rack at step k, in kW. Steps are generated forward only."""
        if k < self._block_start:
            raise ValueError(f"step {k} is before the block in hand (loads are generated forward only)")
        while k >= self._block_start + len(self._block):
            start = max(self._block_start + len(self._block), 0)
            self._block = self._generate(start)
            self._block_start = start
        return self._block[k - self._block_start]

    def _shape(self, t: FloatArray) -> FloatArray:
        """Each rack's profile (mean about 1) at the times t: (len(t), racks)."""
        if not self._windows:
            return np.ones((len(t), len(self.rated_kw)))
        total = np.zeros((len(t), len(self.rated_kw)))
        for series, weight, offset in self._windows:
            pos = (t[:, None] + offset[None, :]) / series.period_s
            base = np.floor(pos)
            frac = pos - base
            i = base.astype(np.int64) % len(series.shape)
            j = i + 1
            j[j == len(series.shape)] = 0
            total += weight * (series.shape[i] * (1 - frac) + series.shape[j] * frac)
        return total

    def _smooth(self, k0: int, steps: int) -> FloatArray:
        """Profile times noise times base kW, at knots, interpolated to every step."""
        q = self.knot_steps
        count = steps // q
        t = (k0 + q * np.arange(count + 1, dtype=np.float64)) * self.step_s
        noise = self._noise.knots(count, self._rng) + self._common.knots(count, self._rng)
        level = self.base_kw * self._shape(t) * (1.0 + noise)
        if q == 1:
            out: FloatArray = level[:-1].copy()
            return out
        frac = np.arange(q, dtype=np.float64) / q
        rise = level[1:] - level[:-1]
        return (level[:-1, None, :] + rise[:, None, :] * frac[None, :, None]).reshape(steps, -1)

    def _add_bursts(self, load: FloatArray) -> None:
        """Bursts start at random (bursts_per_day per rack) and last burst_s; those that
        run past the block go on in the next one."""
        steps, n = load.shape
        p = min(self.config.bursts_per_day * self.step_s / DAY_S, 1.0)
        count = int(self._rng.binomial(steps * n, p)) if p > 0 else 0
        flat = self._rng.integers(0, steps * n, count)
        d = self._burst_steps
        rows = np.concatenate([self._pending[0], np.repeat(flat // n, d) + np.tile(np.arange(d), count)])
        cols = np.concatenate([self._pending[1], np.repeat(flat % n, d)])
        inside = rows < steps
        np.add.at(load, (rows[inside], cols[inside]), self._burst_kw[cols[inside]])
        self._pending = (rows[~inside] - steps, cols[~inside])

    def _generate(self, k0: int) -> FloatArray:
        steps = self.block_steps
        load = self._smooth(k0, steps)
        t = (k0 + np.arange(steps, dtype=np.float64)) * self.step_s
        for step in self.steps:
            load[:, step.racks] *= np.where(step.active(t), step.factor, 1.0)[:, None]
        self._add_bursts(load)
        for job in self.jobs:
            load[:, job.racks] += job.running(t)[:, None] * job.extra_kw(self.rated_kw)[job.racks][None, :]
        np.clip(load, 0.0, self.rated_kw, out=load)
        return load
