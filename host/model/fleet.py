"""The fleet interface: everything the controller reads from the site or does to it.

Defined once, here. The site simulator implements it (host/sim/site/simulator.py), and so
will the real taps over RS-485; tests/fleet_conformance.py checks every implementation
against the same rules:

- Reads: `read_telemetry()` (per rack: active source, draw, current, each input's
  voltage and health, as arrays over all racks), `read_sources()` (per source:
  capacity, load, state, alarms, battery charge and runtime, health signals),
  `alternates(rack)`, `read_events(since)`.
- Commands return a `CommandResult`, never raise for a refusal: `Done` or `Refused`
  with a `Refusal` reason. A refused command changes nothing.
- `move(rack, expected, target)` is compare-and-swap on the rack's active source
  (None = output open), like the protocol's SWITCH: it is refused with CAS_MISMATCH
  (and the actual source) unless `expected` is active. `Done` means the target is
  active: a telemetry read after it shows it.
- `set_alternates(rack, for_source, ranked)`: the sources the tap transfers to by
  itself, in order, when `for_source` is active and is lost (SET_ALTERNATES). The
  ranking applies only while `for_source` is active; an empty ranking clears it.
- Reads with an unknown rack id raise `UnknownRackError`; commands return
  `Refused(UNKNOWN_RACK)`.
- Events carry indices rising by one; `read_events(since)` returns those from
  `max(since, oldest kept)`, like the taps' READ_EVENTS.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from host.model.arrays import BoolArray, FloatArray, IntArray
from host.model.errors import OperatorError
from host.model.site import Site, SourceKind
from host.model.sources import Alarm, HealthStatus, ReserveCapacity, SourceState


class FleetError(OperatorError):
    """Base of the fleet's exceptions."""


class UnknownRackError(FleetError, LookupError):
    def __init__(self, rack_id: str) -> None:
        super().__init__(f"no rack {rack_id!r} in this fleet")
        self.rack_id = rack_id


class UnknownSourceError(FleetError, LookupError):
    def __init__(self, source_id: str) -> None:
        super().__init__(f"no source {source_id!r} in this fleet")
        self.source_id = source_id


class Refusal(StrEnum):
    CAS_MISMATCH = "cas_mismatch"  # `expected` is not the active source; `actual` says which is
    UNKNOWN_RACK = "unknown_rack"
    UNKNOWN_SOURCE = "unknown_source"
    UNREACHABLE_SOURCE = "unreachable_source"  # no input of the rack's tap is wired to it
    SOURCE_UNHEALTHY = "source_unhealthy"  # down, absent, out of tolerance or out of phase
    NO_ROOM = "no_room"  # the target would carry more than its capacity (and the allowed overload)
    BAD_ALTERNATES = "bad_alternates"  # repeated, too many, or the for_source itself
    BUSY = "busy"  # a transfer is in progress
    PROTECTION = "protection"  # the tap's protection forbids a transfer (lockout, downstream fault)
    NO_ANSWER = "no_answer"  # the tap did not answer: re-read, then retry (compare-and-swap makes it safe)


@dataclass(frozen=True)
class Done:
    changed: bool  # False when nothing needed doing (the target was already active)

    @property
    def ok(self) -> bool:
        return True


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    detail: str = ""
    actual: str | None = None  # CAS_MISMATCH: the source actually active (None: output open)

    @property
    def ok(self) -> bool:
        return False


CommandResult = Done | Refused


def alternates_refusal(
    site: Site, rack_id: str, for_source: str, ranked: tuple[str, ...], reachable: Collection[str], max_alternates: int
) -> Refused | None:
    """Why ranked alternates for `rack_id` cannot be set, or None: the checks every Fleet
    makes before acting on set_alternates (unknown and unreachable sources, too many,
    repeats). `reachable` are the sources the rack's tap has inputs on; `max_alternates`
    what the implementation can hold."""
    unknown = [s for s in (for_source, *ranked) if s not in site.source_index]
    if unknown:
        return Refused(Refusal.UNKNOWN_SOURCE, f"no source {unknown[0]!r}")
    unreachable = [s for s in (for_source, *ranked) if s not in reachable]
    if unreachable:
        return Refused(Refusal.UNREACHABLE_SOURCE, f"no input of rack {rack_id!r} reaches {unreachable[0]!r}")
    limit = min(max_alternates, len(reachable) - 1)
    if len(ranked) > limit:
        return Refused(Refusal.BAD_ALTERNATES, f"at most {limit} alternates for rack {rack_id!r}")
    if len(set(ranked)) != len(ranked) or for_source in ranked:
        return Refused(Refusal.BAD_ALTERNATES, "alternates must be distinct and differ from for_source")
    return None


@dataclass(frozen=True)
class Alternates:
    for_source: str | None  # the ranking applies only while this source is active
    ranked: tuple[str, ...]


@dataclass(frozen=True)
class InputReading:
    input: int  # 1-based
    source_id: str
    voltage_v: float
    present: bool
    healthy: bool


@dataclass(frozen=True)
class RackTelemetry:
    rack_id: str
    active_source: str | None  # None: output open, the rack is unpowered
    draw_kw: float
    current_a: float
    inputs: tuple[InputReading, ...]


@dataclass(frozen=True, eq=False)
class FleetTelemetry:
    """One reading of every rack, as arrays in the order of `rack_ids`. Source columns
    hold indices into `source_ids`, -1 for none (output open, or a tap with fewer
    inputs than the widest). Arrays are read-only."""

    time_s: float
    rack_ids: tuple[str, ...]
    source_ids: tuple[str, ...]
    rack_index: Mapping[str, int]
    active: IntArray  # (racks,)
    draw_kw: FloatArray  # (racks,)
    current_a: FloatArray  # (racks,)
    input_source: IntArray  # (racks, inputs)
    input_voltage_v: FloatArray  # (racks, inputs), nan where there is no input
    input_present: BoolArray  # (racks, inputs)
    input_healthy: BoolArray  # (racks, inputs)

    def index(self, rack_id: str) -> int:
        try:
            return self.rack_index[rack_id]
        except KeyError:
            raise UnknownRackError(rack_id) from None

    def active_source(self, rack_id: str) -> str | None:
        active = int(self.active[self.index(rack_id)])
        return None if active < 0 else self.source_ids[active]

    def rack(self, rack_id: str) -> RackTelemetry:
        i = self.index(rack_id)
        inputs = tuple(
            InputReading(
                input=k + 1,
                source_id=self.source_ids[int(source)],
                voltage_v=float(self.input_voltage_v[i, k]),
                present=bool(self.input_present[i, k]),
                healthy=bool(self.input_healthy[i, k]),
            )
            for k, source in enumerate(self.input_source[i])
            if source >= 0
        )
        return RackTelemetry(
            rack_id=rack_id,
            active_source=self.active_source(rack_id),
            draw_kw=float(self.draw_kw[i]),
            current_a=float(self.current_a[i]),
            inputs=inputs,
        )


@dataclass(frozen=True)
class HealthSignals:
    """What a monitor-role tap measures on its source (the protocol's HEALTH); None
    where the sensor is absent or its reading is not valid."""

    temperature_c: float | None
    vibration_rms_mg: float | None
    kurtosis: float | None
    crest_factor: float | None
    ripple_pct: float | None
    thd_pct: float | None


@dataclass(frozen=True)
class SourceStatus:
    """A source as the controller sees it: its adapter's readings joined with its
    monitor's health signals."""

    source_id: str
    kind: SourceKind
    time_s: float
    state: SourceState
    capacity_kw: float
    load_kw: float
    available_kw: float
    overload_progress: float
    state_of_charge: float | None
    runtime_s: float | None
    alarms: frozenset[Alarm]
    signals: HealthSignals | None
    stored_kwh: float | None = None  # batteries: the energy stored now (state_of_charge is of the faded usable energy)

    @property
    def up(self) -> bool:
        return self.state == SourceState.UP

    @classmethod
    def join(
        cls, kind: SourceKind, capacity: ReserveCapacity, health: HealthStatus, signals: HealthSignals | None
    ) -> SourceStatus:
        return cls(
            source_id=capacity.source_id,
            kind=kind,
            time_s=capacity.time_s,
            state=health.state,
            capacity_kw=capacity.capacity_kw,
            load_kw=capacity.load_kw,
            available_kw=capacity.available_kw,
            overload_progress=capacity.overload_progress,
            state_of_charge=capacity.state_of_charge,
            runtime_s=capacity.runtime_s,
            alarms=health.alarms,
            signals=signals,
            stored_kwh=capacity.stored_kwh,
        )


class EventKind(StrEnum):
    MOVED = "moved"  # a commanded move done (source_id: the target, None: output opened)
    ALTERNATES_SET = "alternates_set"
    TRANSFER = "transfer"  # a local failover by the tap (source_id: the alternate it took)
    RACK_UNPOWERED = "rack_unpowered"  # its source was lost and no alternate was up (source_id: the lost one)
    SOURCE_FAILED = "source_failed"
    SOURCE_TRIPPED = "source_tripped"  # value: the overload multiple when it tripped
    SOURCE_EXHAUSTED = "source_exhausted"
    SOURCE_RESTORED = "source_restored"


@dataclass(frozen=True)
class FleetEvent:
    index: int
    time_s: float
    kind: EventKind
    rack_id: str | None = None
    source_id: str | None = None
    value: float = 0.0


@dataclass(frozen=True)
class EventPage:
    first: int  # index of the first event returned; above `since` if older ones were dropped
    head: int  # the index the next event will get
    events: tuple[FleetEvent, ...]


@runtime_checkable
class Fleet(Protocol):
    """All the controller reads from the site and does to it. See the module docstring."""

    @property
    def site(self) -> Site: ...

    def read_telemetry(self) -> FleetTelemetry: ...

    def read_sources(self) -> Mapping[str, SourceStatus]: ...

    def move(self, rack_id: str, expected: str | None, target: str | None) -> CommandResult: ...

    def set_alternates(self, rack_id: str, for_source: str, ranked: Sequence[str]) -> CommandResult: ...

    def alternates(self, rack_id: str) -> Alternates: ...

    def read_events(self, since: int, max_count: int = 1000) -> EventPage: ...
