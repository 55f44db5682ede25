"""The site simulator's source adapter (host/model/sources.py): a source of the simulator's
bank read through the adapter interface, on the simulator's clock."""

from __future__ import annotations

import math
from collections.abc import Callable

from host.model.sources import Alarm, HealthStatus, ReserveCapacity, SourceState
from host.sim.site.sources import STATE_NAMES, SourceBank

LOW_CHARGE = 0.2  # state of charge below which a battery raises `low_charge`


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
