"""The reserve sources of the site simulator as arrays, one element per source: state,
overload integral and stored energy, advanced one step at a time.

A source is loaded by the racks on it (plus a maintenance test load, if any). Above
its capacity its IEC 60255-151 element integrates and trips it; a battery discharges
by energy (less what its charger puts back), is exhausted when it runs dry, and comes
back once its charger has brought it to RESTART_SOC. Failing and restoring a source by
a scenario is done here too; what happens to the racks is the simulator's business.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from host.model import overload
from host.model.arrays import BoolArray, FloatArray, IntArray
from host.model.site import Availability, Source, SourceKind

UP, FAILED, TRIPPED, EXHAUSTED, MAINTENANCE = range(5)
STATE_NAMES = ("up", "failed", "tripped", "exhausted", "maintenance")  # by code; adapters.SourceState
RESTART_SOC = 0.2  # an exhausted battery serves again once recharged to this
_NONE = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class SourceEvent:
    """A scenario's action on a source at a time: "fail" or "restore"."""

    at_s: float
    action: str
    source: str


ACTIONS = ("fail", "restore")


@dataclass(frozen=True)
class SourceChanges:
    """Indices of the sources that changed state in one step."""

    tripped: IntArray
    exhausted: IntArray
    recovered: IntArray

    @property
    def lost(self) -> IntArray:
        return np.concatenate([self.tripped, self.exhausted])


class SourceBank:
    def __init__(self, sources: Sequence[Source]) -> None:
        self.ids = tuple(s.id for s in sources)
        self.kinds = tuple(s.kind for s in sources)
        self.capacity_kw = np.array([s.capacity_kw for s in sources], dtype=float)
        self.tms = np.array([s.tms for s in sources], dtype=float)
        self.a = np.array([overload.CURVES[s.curve][0] for s in sources], dtype=float)
        self.b = np.array([overload.CURVES[s.curve][1] for s in sources], dtype=float)
        self.is_battery = np.array([s.kind == SourceKind.BATTERY for s in sources], dtype=bool)
        self.energy_kwh = np.array([s.energy_kwh or 0.0 for s in sources], dtype=float)
        self.recharge_kw = np.array([s.recharge_kw for s in sources], dtype=float)
        self.usable_fraction = np.ones(len(sources))  # battery ageing fades it
        self.stored_kwh = self.energy_kwh.copy()
        self.state = np.array(
            [MAINTENANCE if s.availability == Availability.MAINTENANCE else UP for s in sources], dtype=np.int8
        )
        self.progress = np.zeros(len(sources))
        self._integrating = False  # some progress is above zero
        self._batteries = np.flatnonzero(self.is_battery)
        self.load_kw = np.zeros(len(sources))  # set by the simulator: racks on it plus test_kw
        self.test_kw = np.zeros(len(sources))  # a maintenance test discharge into a load bank

    @property
    def up(self) -> BoolArray:
        return self.state == UP

    def usable_kwh(self) -> FloatArray:
        return self.energy_kwh * self.usable_fraction

    def state_of_charge(self) -> FloatArray:
        usable = self.usable_kwh()
        return np.divide(self.stored_kwh, usable, out=np.full_like(usable, np.nan), where=usable > 0)

    def runtime_s(self) -> FloatArray:
        """Seconds each battery carries its present load; inf while it does not discharge."""
        net = np.where(self.up, self.load_kw, 0.0) - self.recharge_kw
        out = np.full(len(self.ids), np.inf)
        draining = self.is_battery & (net > 0)
        out[draining] = self.stored_kwh[draining] * 3600.0 / net[draining]
        return out

    def state_of_charge_of(self, index: int) -> float:
        usable = float(self.energy_kwh[index] * self.usable_fraction[index])
        return float(self.stored_kwh[index]) / usable if usable > 0 else math.nan

    def runtime_of(self, index: int) -> float:
        """Seconds battery `index` carries its present load; inf while it does not discharge."""
        load = float(self.load_kw[index]) if self.state[index] == UP else 0.0
        net = load - float(self.recharge_kw[index])
        return float(self.stored_kwh[index]) * 3600.0 / net if net > 0 else math.inf

    def advance(self, dt_s: float) -> SourceChanges:
        """One step of dt_s at the present load_kw. The overload element is skipped while
        no source is near pickup and none has a running integral (the common case)."""
        up = self.state == UP
        served = self.load_kw * up
        multiple = served / self.capacity_kw
        trips = _NONE
        if self._integrating or multiple.max() >= overload.DROPOFF:
            progress = overload.advance(self.progress, multiple, self.tms, self.a, self.b, dt_s) * up
            self.progress = progress
            self._integrating = bool(progress.any())
            trips = np.flatnonzero(progress >= 1.0)
            self.state[trips] = TRIPPED
        if not len(self._batteries):
            return SourceChanges(trips, _NONE, _NONE)
        b = self._batteries
        usable = self.energy_kwh[b] * self.usable_fraction[b]
        stored = np.clip(self.stored_kwh[b] + (self.recharge_kw[b] - served[b]) * (dt_s / 3600.0), 0.0, usable)
        self.stored_kwh[b] = stored
        state = self.state[b]
        dry = b[(state == UP) & (stored <= 0.0) & (served[b] > self.recharge_kw[b])]
        recovered = b[(state == EXHAUSTED) & (stored >= RESTART_SOC * usable)]
        self.state[dry] = EXHAUSTED
        self.state[recovered] = UP
        return SourceChanges(trips, dry, recovered)

    def fail(self, index: int) -> bool:
        """Lose the source; False if it was not up."""
        was_up = bool(self.state[index] == UP)
        self.state[index] = FAILED
        self.progress[index] = 0.0
        return was_up

    def restore(self, index: int) -> bool:
        """Bring the source back (repaired, reset or out of maintenance); False if it was up."""
        was_up = bool(self.state[index] == UP)
        self.state[index] = UP
        self.progress[index] = 0.0
        return not was_up
