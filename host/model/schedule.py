"""Scheduled jobs and load steps: what a site knows in advance of its racks' draw. The
site simulator applies them; the plan inputs add the jobs a forecast cannot know of."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from host.model.arrays import BoolArray, FloatArray, IntArray


@dataclass(frozen=True, eq=False)
class Job:
    """A scheduled job: the racks draw `fraction` of their rated kW more while it runs,
    from start_s for duration_s, again every every_s if given, until until_s if given."""

    racks: IntArray
    start_s: float
    duration_s: float
    fraction: float
    every_s: float | None = None
    until_s: float | None = None

    def running(self, t: FloatArray) -> BoolArray:
        since = t - self.start_s
        phase = since if self.every_s is None else np.mod(since, self.every_s)
        on = (since >= 0) & (phase < self.duration_s)
        if self.until_s is not None:
            on &= t < self.until_s
        return on

    def extra_kw(self, rated_kw: FloatArray) -> FloatArray:
        """What it adds to each rack's draw while it runs (zero for racks not in it)."""
        out = np.zeros(len(rated_kw))
        out[self.racks] = self.fraction * rated_kw[self.racks]
        return out

    def windows(self, from_s: float, to_s: float) -> list[tuple[float, float]]:
        """(start, stop) of its runs that overlap [from_s, to_s), where `running` is True."""
        first = 0 if self.every_s is None else max(0, math.floor((from_s - self.start_s - self.duration_s)
                                                                  / self.every_s))
        out = []
        m = first
        while True:
            start = self.start_s + m * (self.every_s or 0.0)
            stop = start + self.duration_s
            if self.until_s is not None:
                stop = min(stop, self.until_s)
            if start >= to_s or (self.until_s is not None and start >= self.until_s):
                break
            if stop > from_s and stop > start:
                out.append((start, stop))
            if self.every_s is None:
                break
            m += 1
        return out


@dataclass(frozen=True, eq=False)
class LoadStep:
    """The racks draw `factor` times their load from start_s, until end_s if given."""

    racks: IntArray
    start_s: float
    factor: float
    end_s: float | None = None

    def active(self, t: FloatArray) -> BoolArray:
        on = t >= self.start_s
        if self.end_s is not None:
            on &= t < self.end_s
        return on


def jobs_kw(jobs: tuple[Job, ...] | list[Job], rated_kw: FloatArray, times_s: FloatArray) -> FloatArray:
    """The scheduled jobs' extra draw per rack at each of `times_s`: (racks, times)."""
    out = np.zeros((len(rated_kw), len(times_s)))
    for job in jobs:
        on = job.running(np.asarray(times_s, dtype=np.float64))
        if on.any():
            out[:, on] += job.extra_kw(rated_kw)[:, None]
    return out
