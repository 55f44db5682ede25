"""Source adapters: what the controller learns from a reserve source's own management
interface (a UPS, a battery monitor, a generator controller), whatever its protocol.

The concept's `ReadReserveCapacity` and `ReadHealthStatus`, one adapter per source.
Health *signals* (temperature, vibration, ripple, THD) come from the tap boards fitted
to sources in the monitor role, not from here; the fleet joins both (fleet.SourceStatus).
The site simulator's adapter is host/sim/site/adapters.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


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
