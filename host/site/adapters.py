"""Source adapters: what the controller learns from a reserve source's own management
interface (a UPS, a battery monitor, a generator controller), whatever its protocol.

The concept's `ReadReserveCapacity` and `ReadHealthStatus`, one adapter per source.
Health *signals* (temperature, vibration, ripple, THD) come from the tap boards fitted
to sources in the monitor role, not from here; the fleet joins both (fleet.SourceStatus).
`SimulatedSourceAdapter` reads the site simulator's source bank.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from host.site.sources import STATE_NAMES, SourceBank

LOW_CHARGE = 0.2  # state of charge below which a battery raises `low_charge`


class SourceState(StrEnum):
    UP = "up"
    FAILED = "failed"  # lost by a fault
    TRIPPED = "tripped"  # its overload protection operated
    EXHAUSTED = "exhausted"  # a battery that ran out of energy
    MAINTENANCE = "maintenance"  # out of service by plan


class Alarm(StrEnum):
    OVERLOAD = "overload"  # load above capacity: the inverse-time element is running
    LOW_CHARGE = "low_charge"
    DISCHARGING = "discharging"  # a battery whose load exceeds what its charger puts back


@dataclass(frozen=True)
class ReserveCapacity:
    source_id: str
    time_s: float
    capacity_kw: float
    load_kw: float
    available_kw: float  # what it can take on now: capacity less load while up, else 0
    overload_progress: float  # the IEC 60255-151 integral: it trips at 1
    state_of_charge: float | None  # batteries: stored energy over the usable energy when full (faded by age)
    runtime_s: float | None  # batteries: at the present load (inf while the charger keeps up)
    stored_kwh: float | None = None  # batteries: the energy stored now, as the battery management system counts it


@dataclass(frozen=True)
class HealthStatus:
    source_id: str
    time_s: float
    state: SourceState
    alarms: frozenset[Alarm]


class SourceAdapter(Protocol):
    """One reserve source's management interface."""

    @property
    def source_id(self) -> str: ...

    def read_reserve_capacity(self) -> ReserveCapacity: ...

    def read_health_status(self) -> HealthStatus: ...


class SimulatedSourceAdapter:
    """The adapter of source `index` of a simulator's bank, on the simulator's clock."""

    def __init__(self, bank: SourceBank, index: int, clock: Callable[[], float]) -> None:
        self._bank = bank
        self._index = index
        self._clock = clock

    @property
    def source_id(self) -> str:
        return self._bank.ids[self._index]

    def read_reserve_capacity(self) -> ReserveCapacity:
        bank, i = self._bank, self._index
        up = bool(bank.up[i])
        capacity = float(bank.capacity_kw[i])
        load = float(bank.load_kw[i])
        battery = bool(bank.is_battery[i])
        return ReserveCapacity(
            source_id=self.source_id,
            time_s=self._clock(),
            capacity_kw=capacity,
            load_kw=load,
            available_kw=max(capacity - load, 0.0) if up else 0.0,
            overload_progress=float(bank.progress[i]),
            state_of_charge=bank.state_of_charge_of(i) if battery else None,
            runtime_s=bank.runtime_of(i) if battery else None,
            stored_kwh=float(bank.stored_kwh[i]) if battery else None,
        )

    def read_health_status(self) -> HealthStatus:
        bank, i = self._bank, self._index
        state = SourceState(STATE_NAMES[int(bank.state[i])])
        alarms: set[Alarm] = set()
        if state == SourceState.UP and bank.load_kw[i] > bank.capacity_kw[i]:
            alarms.add(Alarm.OVERLOAD)
        if bank.is_battery[i]:
            if bank.state_of_charge_of(i) < LOW_CHARGE:
                alarms.add(Alarm.LOW_CHARGE)
            if math.isfinite(bank.runtime_of(i)):
                alarms.add(Alarm.DISCHARGING)
        return HealthStatus(source_id=self.source_id, time_s=self._clock(), state=state, alarms=frozenset(alarms))
