"""Fault prediction for a whole site: one FaultPredictor per source, with what the
sources share taken out first.

A hot afternoon warms every source at once, for as long as it lasts; a predictor that
sees one source alone cannot tell it from a cooling fault once it has lasted hours. So
at every step, for each shared signal (the temperature by default: the room is common
to all), the median of the sources' residuals against their own baselines is taken
from each of them, when at least `min_shared_sources` report it. A fault on one source,
or on fewer than half of them, leaves the median with the healthy ones, and stands out
all the more. The shared part is kept (`shared`) for the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from host.model.arrays import FloatArray
from host.model.fleet import SourceStatus
from host.predict.faults import SIGNALS, FaultAssessment, FaultConfig, FaultPredictor

SHARED_SIGNALS = ("temperature_c",)
MIN_SHARED_SOURCES = 3


@dataclass(frozen=True)
class MonitorConfig:
    shared_signals: tuple[str, ...] = SHARED_SIGNALS
    min_shared_sources: int = MIN_SHARED_SOURCES

    def __post_init__(self) -> None:
        unknown = [s for s in self.shared_signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown shared signals {unknown}; the signals are {', '.join(SIGNALS)}")
        if self.min_shared_sources < 3:
            raise ValueError("min_shared_sources must be at least 3: the median of two is their mean")


class FaultMonitor:
    """Every source's FaultPredictor, fed from the fleet's source statuses."""

    def __init__(
        self, sources: Iterable[str], config: FaultConfig | None = None, monitor: MonitorConfig | None = None
    ) -> None:
        self.config = config or FaultConfig()
        self.monitor = monitor or MonitorConfig()
        self.predictors = {name: FaultPredictor(self.config) for name in sources}
        self._shared = [SIGNALS.index(s) for s in self.monitor.shared_signals]
        self.shared: FloatArray = np.zeros(len(SIGNALS))  # the latest shared part taken out

    def update(self, statuses: Mapping[str, SourceStatus]) -> dict[str, FaultAssessment]:
        """Take one reading of every source (as `Fleet.read_sources` gives them); return
        the assessments of those up. A source that is down is not fed: its failure is
        not a health signal, and its predictor resumes when it is back."""
        residuals: dict[str, FloatArray | None] = {}
        for name, status in statuses.items():
            predictor = self.predictors.get(name)
            if predictor is None or not status.up:
                continue
            load_fraction = status.load_kw / status.capacity_kw if status.capacity_kw > 0 else 0.0
            residuals[name] = predictor.residual(status.time_s, status.signals, load_fraction)
        self._take_out_shared([r for r in residuals.values() if r is not None])
        return {
            name: self.predictors[name].add(statuses[name].time_s, residual) for name, residual in residuals.items()
        }

    def _take_out_shared(self, residuals: list[FloatArray]) -> None:
        self.shared = np.zeros(len(SIGNALS))
        if not residuals:
            return
        stacked = np.array(residuals)
        for j in self._shared:
            column = stacked[:, j]
            finite = column[np.isfinite(column)]
            if len(finite) >= self.monitor.min_shared_sources:
                self.shared[j] = float(np.median(finite))
        for residual in residuals:
            residual -= self.shared  # in place: the arrays are the ones handed to add()
