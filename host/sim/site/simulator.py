"""The site simulator: a fast, deterministic stand-in for a whole site that implements
the fleet interface (fleet.Fleet), so the controller runs against it unchanged.

A simulated clock advances in steps of `step_s` (1 to 60 s is typical). Rack draws
are arrays (loads.py); each source's load is the bincount of the draws by active
source. Per step: sources integrate their overload and batteries their discharge
(sources.py); a source that trips, runs dry or fails by scenario drops its racks, and
each of their taps transfers by itself to the first of its ranked alternates whose
source is up, if the ranking was set for the source it lost; else the rack is
unpowered until the controller moves it. Scenario actions take effect at the first
step boundary at or after their time.

Everything random comes from generators seeded by `seed`: loads from one stream in
order, health noise from a generator per step, so reads never change the outcome.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from host.model.arrays import FloatArray, IntArray, frozen
from host.model.electrical import input_readings, line_current_a, source_voltage_v
from host.model.events import EventLog
from host.model.fleet import (
    Alternates,
    CommandResult,
    Done,
    EventKind,
    EventPage,
    FleetTelemetry,
    Refusal,
    Refused,
    SourceStatus,
    UnknownRackError,
    UnknownSourceError,
    alternates_refusal,
)
from host.model.site import Priority, Site
from host.model.sources import SourceAdapter
from host.sim.site.adapters import SimulatedSourceAdapter
from host.sim.site.conditions import Condition, Family
from host.sim.site.health import health_signals, to_signals
from host.sim.site.loads import Job, LoadConfig, LoadStep, RackLoads
from host.sim.site.scenario import Scenario
from host.sim.site.sources import STATE_NAMES, UP, SourceBank, SourceChanges, SourceEvent

PRIORITIES = tuple(Priority)
THERMAL_TAU_S = 1200.0  # thermal lag of the sources' temperatures behind their load


@dataclass(frozen=True)
class SimStats:
    time_s: float
    unserved_kwh: Mapping[Priority, float]  # energy the racks wanted while unpowered
    racks_unpowered: int
    dark_rack_s: float = 0.0  # rack-seconds unpowered, every rack summed
    overload_s: Mapping[str, float] | None = None  # per source: seconds carrying more than its capacity
    worst_utilisation: float = 0.0  # the highest load over capacity any source carried at a step


@dataclass(frozen=True)
class _Action:
    at_s: float
    order: int
    kind: str  # fail, restore, test_start, test_end
    source: int
    value: float = 0.0


class SiteSimulator:
    def __init__(
        self,
        site: Site,
        *,
        step_s: float = 60.0,
        seed: int = 0,
        loads: LoadConfig | None = None,
        jobs: Sequence[Job] = (),
        load_steps: Sequence[LoadStep] = (),
        source_events: Sequence[SourceEvent] = (),
        conditions: Sequence[Condition] = (),
        event_capacity: int = 200_000,
        overload_allowance: float = 0.0,
    ) -> None:
        if not step_s > 0:
            raise ValueError(f"step_s must be > 0 (got {step_s})")
        self._site = site
        self.step_s = float(step_s)
        self.seed = seed
        self.overload_allowance = overload_allowance  # a move may load its target to capacity * (1 + this)
        self._k = 0
        self._bank = SourceBank(site.sources)
        self._input_source, self._impedance = _wiring(site)
        self._rack_ids = tuple(rack.id for rack in site.racks)
        self._rack_index = MappingProxyType(site.rack_index)
        self._input_source_view = frozen(self._input_source)  # the wiring never changes
        up = self._bank.up
        self._active = _first_up_input(self._input_source, up)
        self._alt_for = np.full(len(site.racks), -1, dtype=np.int64)
        self._alts = np.full((len(site.racks), max(site.max_inputs - 1, 1)), -1, dtype=np.int64)
        rated = np.array([rack.rated_kw for rack in site.racks], dtype=float)
        self._priority = np.array([PRIORITIES.index(rack.priority) for rack in site.racks], dtype=np.int64)
        self._loads = RackLoads(rated, loads or LoadConfig(), self.step_s, seed, jobs, load_steps)
        self._demand = self._loads.row(0)
        self._log = EventLog(event_capacity)
        self._conditions = tuple(conditions)
        self._ageing = [(site.source_index[c.source], c) for c in conditions
                        if c.family == Family.BATTERY_AGEING and c.source is not None]
        self._actions = _actions(site, source_events, self._conditions)
        self._next_action = 0
        self._unserved = np.zeros(len(PRIORITIES))
        self._dark_rack_s = 0.0
        self._overload_s = np.zeros(len(site.sources))
        self._worst_utilisation = 0.0
        self._unpowered_kw = 0.0  # what the unpowered racks want now, set by _refresh_load
        self._thermal_alpha = 1.0 - math.exp(-self.step_s / THERMAL_TAU_S)
        self._health_cache: tuple[int, FloatArray] | None = None
        self._adapters = tuple(
            SimulatedSourceAdapter(self._bank, i, lambda: self.time_s) for i in range(len(site.sources))
        )
        self._apply_due_actions()  # those at time 0
        self._refresh_load()
        self._load_fraction = (self._bank.load_kw / self._bank.capacity_kw) * self._bank.up

    @classmethod
    def from_scenario(cls, scenario: Scenario, **overrides: Any) -> SiteSimulator:
        """A simulator of the scenario; keyword arguments override its settings (step_s, seed...)."""
        settings: dict[str, Any] = {
            "step_s": scenario.step_s,
            "seed": scenario.seed,
            "loads": scenario.loads,
            "jobs": scenario.jobs,
            "load_steps": scenario.load_steps,
            "source_events": scenario.source_events,
            "conditions": scenario.conditions,
        }
        return cls(scenario.site, **(settings | overrides))

    # -- the clock ---------------------------------------------------------------

    @property
    def time_s(self) -> float:
        return self._k * self.step_s

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self._step()

    def run_until(self, t_s: float) -> None:
        while self.time_s + 1e-9 < t_s:
            self._step()

    def _step(self) -> None:
        dt = self.step_s
        bank = self._bank
        if self._unpowered_kw > 0:
            unpowered = self._active < 0
            self._unserved += np.bincount(
                self._priority[unpowered], weights=self._demand[unpowered], minlength=len(PRIORITIES)
            ) * (dt / 3600.0)
            self._dark_rack_s += float(unpowered.sum()) * dt
        for index, condition in self._ageing:
            bank.usable_fraction[index] = 1.0 - condition.strength * condition.progress(self.time_s)
        multiple = bank.load_kw / bank.capacity_kw
        carried = multiple * (bank.state == UP)
        self._overload_s += (carried > 1.0) * dt
        self._worst_utilisation = max(self._worst_utilisation, float(carried.max()))
        changes = bank.advance(dt)
        self._load_fraction += self._thermal_alpha * (multiple * (bank.state == UP) - self._load_fraction)
        self._k += 1
        if len(changes.tripped) or len(changes.exhausted) or len(changes.recovered):
            self._log_changes(changes, multiple)
        self._demand = self._loads.row(self._k)
        self._apply_due_actions()
        self._refresh_load()

    def _log_changes(self, changes: SourceChanges, multiple: FloatArray) -> None:
        t, ids = self.time_s, self._bank.ids
        for i in changes.tripped:
            self._log.append(t, EventKind.SOURCE_TRIPPED, source_id=ids[i], value=float(multiple[i]))
        for i in changes.exhausted:
            self._log.append(t, EventKind.SOURCE_EXHAUSTED, source_id=ids[i])
        for i in changes.recovered:
            self._log.append(t, EventKind.SOURCE_RESTORED, source_id=ids[i])
        if len(changes.lost):
            self._drop_racks(changes.lost)

    def _refresh_load(self) -> None:
        by_source = np.bincount(self._active + 1, weights=self._demand, minlength=len(self._bank.ids) + 1)
        self._unpowered_kw = float(by_source[0])
        self._bank.load_kw = by_source[1:] + self._bank.test_kw

    def _apply_due_actions(self) -> None:
        while self._next_action < len(self._actions) and self._actions[self._next_action].at_s <= self.time_s + 1e-9:
            action = self._actions[self._next_action]
            self._next_action += 1
            if action.kind == "fail":
                self._fail(action.source)
            elif action.kind == "restore":
                self._restore(action.source)
            else:
                self._bank.test_kw[action.source] = action.value if action.kind == "test_start" else 0.0

    # -- scenario hooks ------------------------------------------------------------

    def fail_source(self, source_id: str) -> None:
        self._fail(self._source(source_id))
        self._refresh_load()

    def restore_source(self, source_id: str) -> None:
        self._restore(self._source(source_id))
        self._refresh_load()

    def _source(self, source_id: str) -> int:
        try:
            return self._site.source_index[source_id]
        except KeyError:
            raise UnknownSourceError(source_id) from None

    def _fail(self, index: int) -> None:
        if self._bank.fail(index):
            self._log.append(self.time_s, EventKind.SOURCE_FAILED, source_id=self._bank.ids[index])
            self._drop_racks(np.array([index]))

    def _restore(self, index: int) -> None:
        if self._bank.restore(index):
            self._log.append(self.time_s, EventKind.SOURCE_RESTORED, source_id=self._bank.ids[index])

    def _drop_racks(self, lost: IntArray) -> None:
        """The racks on lost sources: each tap transfers to its first alternate that is
        up, if its ranking is for the source it lost; else the rack is unpowered."""
        lost_mask = np.zeros(len(self._bank.ids) + 1, dtype=bool)
        lost_mask[np.asarray(lost) + 1] = True
        racks = np.flatnonzero(lost_mask[self._active + 1])
        if not len(racks):
            return
        was = self._active[racks]
        chosen = self._failover_targets(racks, was)
        self._active[racks] = chosen
        t, ids, rack_ids = self.time_s, self._bank.ids, self._site.racks
        for r, before, after in zip(racks.tolist(), was.tolist(), chosen.tolist(), strict=True):
            demand = float(self._demand[r])
            if after >= 0:
                self._log.append(t, EventKind.TRANSFER, rack_ids[r].id, ids[after], demand)
            else:
                self._log.append(t, EventKind.RACK_UNPOWERED, rack_ids[r].id, ids[before], demand)
        self._refresh_load()

    def _failover_targets(self, racks: IntArray, lost: IntArray) -> IntArray:
        """Where each rack's tap goes on losing its source `lost` (per rack): the first of
        its ranked alternates that is up, if the ranking is for that source; else -1."""
        candidates = self._alts[racks]
        usable = (candidates >= 0) & self._bank.up[np.maximum(candidates, 0)] & (candidates != lost[:, None])
        usable &= (self._alt_for[racks] == lost)[:, None]
        return np.where(usable.any(axis=1), candidates[np.arange(len(racks)), usable.argmax(axis=1)], -1)

    # -- the fleet interface: reads ------------------------------------------------

    @property
    def site(self) -> Site:
        return self._site

    def read_telemetry(self) -> FleetTelemetry:
        site, bank = self._site, self._bank
        draw = np.where(self._active >= 0, self._demand, 0.0)
        current = line_current_a(draw, site.voltage_v)
        source_v = source_voltage_v(bank.load_kw, bank.capacity_kw, bank.up, site.voltage_v)
        volts, present, healthy = input_readings(
            self._input_source, self._impedance, self._active, current, source_v, bank.up, site.voltage_v
        )
        return FleetTelemetry(
            time_s=self.time_s,
            rack_ids=self._rack_ids,
            source_ids=bank.ids,
            rack_index=self._rack_index,
            active=frozen(self._active),
            draw_kw=frozen(draw),
            current_a=frozen(current),
            input_source=self._input_source_view,
            input_voltage_v=frozen(volts),
            input_present=frozen(present),
            input_healthy=frozen(healthy),
        )

    def read_sources(self) -> dict[str, SourceStatus]:
        health = self._health()
        return {
            adapter.source_id: SourceStatus.join(
                self._site.sources[i].kind,
                adapter.read_reserve_capacity(),
                adapter.read_health_status(),
                to_signals(health[i]),
            )
            for i, adapter in enumerate(self._adapters)
        }

    def adapter(self, source_id: str) -> SourceAdapter:
        return self._adapters[self._source(source_id)]

    def _health(self) -> FloatArray:
        if self._health_cache is None or self._health_cache[0] != self._k:
            rng = np.random.default_rng([self.seed, 4, self._k])
            kinds = [source.kind for source in self._site.sources]
            values = health_signals(
                self.time_s, kinds, self._load_fraction, self._conditions, self._site.source_index, rng
            )
            self._health_cache = (self._k, values)
        return self._health_cache[1]

    def alternates(self, rack_id: str) -> Alternates:
        r = self._rack(rack_id)
        if r is None:
            raise UnknownRackError(rack_id)
        for_source = int(self._alt_for[r])
        ranked = tuple(self._bank.ids[s] for s in self._alts[r] if s >= 0)
        return Alternates(None if for_source < 0 else self._bank.ids[for_source], ranked)

    def read_events(self, since: int, max_count: int = 1000) -> EventPage:
        return self._log.read(since, max_count)

    def stats(self) -> SimStats:
        unserved = {priority: float(self._unserved[i]) for i, priority in enumerate(PRIORITIES)}
        overload = dict(zip(self._bank.ids, self._overload_s.tolist(), strict=True))
        return SimStats(self.time_s, unserved, int((self._active < 0).sum()), self._dark_rack_s, overload,
                        self._worst_utilisation)

    def single_losses(self, survivor_limit: float = 1.0) -> tuple[int, int, float]:
        """The site's N-1 standing now, as its taps would act: for every source that is
        up and carries racks, whether losing it alone leaves every one of its racks on
        an alternate that is up (ranked for that source) and every survivor within
        `survivor_limit` times its capacity. Returns (survivable, losses weighed, the
        stranded reserve in kW: capacity up that no single loss would use)."""
        bank, active = self._bank, self._active
        up = bank.up
        n = len(bank.ids)
        load = np.where(up, bank.load_kw, 0.0)
        worst_inflow = np.zeros(n)
        survivable = weighed = 0
        for s in np.flatnonzero(up & (np.bincount(active + 1, minlength=n + 1)[1:] > 0)).tolist():
            racks = np.flatnonzero(active == s)
            target = self._failover_targets(racks, np.full(len(racks), s))
            carried = target >= 0
            inflow = np.bincount(target[carried], weights=self._demand[racks][carried], minlength=n)
            worst_inflow = np.maximum(worst_inflow, inflow)
            weighed += 1
            within = (load + inflow <= survivor_limit * bank.capacity_kw + 1e-9) | (inflow == 0)
            if carried.all() and bool(within[np.arange(n) != s].all()):
                survivable += 1
        spare = np.where(up, bank.capacity_kw - load - worst_inflow, 0.0)
        return survivable, weighed, float(np.clip(spare, 0.0, None).sum())

    # -- the fleet interface: commands ---------------------------------------------

    def _rack(self, rack_id: str) -> int | None:
        return self._site.rack_index.get(rack_id)

    def _source_name(self, index: int) -> str | None:
        return None if index < 0 else self._bank.ids[index]

    def move(self, rack_id: str, expected: str | None, target: str | None) -> CommandResult:
        r = self._rack(rack_id)
        if r is None:
            return Refused(Refusal.UNKNOWN_RACK, f"no rack {rack_id!r}")
        if target is not None and target not in self._site.source_index:
            return Refused(Refusal.UNKNOWN_SOURCE, f"no source {target!r}")
        before = int(self._active[r])
        actual = self._source_name(before)
        if expected != actual:
            return Refused(Refusal.CAS_MISMATCH, f"rack {rack_id!r} is on {actual!r}, not {expected!r}", actual)
        if target == actual:
            return Done(changed=False)
        after = -1
        if target is not None:
            after = self._site.source_index[target]
            if after not in self._input_source[r]:
                return Refused(Refusal.UNREACHABLE_SOURCE, f"no input of rack {rack_id!r} reaches {target!r}")
            if not self._bank.up[after]:
                state = STATE_NAMES[int(self._bank.state[after])]
                return Refused(Refusal.SOURCE_UNHEALTHY, f"source {target!r} is {state}")
        demand = float(self._demand[r])
        if after >= 0:
            limit = float(self._bank.capacity_kw[after]) * (1.0 + self.overload_allowance)
            carried = float(self._bank.load_kw[after])
            if carried + demand > limit:
                return Refused(Refusal.NO_ROOM, f"source {target!r} carries {carried:.1f} kW; with rack {rack_id!r}'s "
                                                f"{demand:.1f} kW it would exceed its {limit:g} kW")
        self._active[r] = after
        for index, sign in ((before, -1.0), (after, 1.0)):
            if index >= 0:
                self._bank.load_kw[index] += sign * demand
            else:
                self._unpowered_kw += sign * demand
        self._log.append(self.time_s, EventKind.MOVED, rack_id, target, demand)
        return Done(changed=True)

    def set_alternates(self, rack_id: str, for_source: str, ranked: Sequence[str]) -> CommandResult:
        r = self._rack(rack_id)
        if r is None:
            return Refused(Refusal.UNKNOWN_RACK, f"no rack {rack_id!r}")
        ranked = tuple(ranked)
        reachable = set(self._site.reachable(rack_id))
        refusal = alternates_refusal(self._site, rack_id, for_source, ranked, reachable, self._alts.shape[1])
        if refusal is not None:
            return refusal
        index = self._site.source_index
        row = np.full(self._alts.shape[1], -1, dtype=np.int64)
        row[: len(ranked)] = [index[s] for s in ranked]
        changed = bool(self._alt_for[r] != index[for_source] or (self._alts[r] != row).any())
        self._alt_for[r] = index[for_source]
        self._alts[r] = row
        if changed:
            self._log.append(self.time_s, EventKind.ALTERNATES_SET, rack_id, for_source)
        return Done(changed=changed)


def _wiring(site: Site) -> tuple[IntArray, FloatArray]:
    """The source of every input of every rack's tap (-1: none) and its path impedance."""
    shape = (len(site.racks), max(site.max_inputs, 1))
    sources = np.full(shape, -1, dtype=np.int64)
    impedance = np.zeros(shape)
    index = site.source_index
    for r, rack in enumerate(site.racks):
        for feed in site.feeds_of(rack.id):
            sources[r, feed.input - 1] = index[feed.source_id]
            impedance[r, feed.input - 1] = feed.impedance_ohm
    return sources, impedance


def _first_up_input(input_source: IntArray, up: np.ndarray) -> IntArray:
    """Each rack starts on its lowest-numbered input whose source is up (-1: none is)."""
    usable = (input_source >= 0) & up[np.maximum(input_source, 0)]
    first = usable.argmax(axis=1)
    chosen: IntArray = np.where(usable.any(axis=1), input_source[np.arange(len(input_source)), first], -1)
    return chosen


def _actions(site: Site, events: Sequence[SourceEvent], conditions: Sequence[Condition]) -> list[_Action]:
    index = site.source_index
    actions = [_Action(e.at_s, 0, e.action, index[e.source]) for e in events]
    for c in conditions:
        if c.source is None:
            continue
        failure = c.failure_s
        if failure is not None:
            actions.append(_Action(failure, 0, "fail", index[c.source]))
        if c.family == Family.MAINTENANCE_TEST and c.end_s is not None:
            actions.append(_Action(c.start_s, 0, "test_start", index[c.source], c.strength))
            actions.append(_Action(c.end_s, 0, "test_end", index[c.source]))
    ordered = [_Action(a.at_s, i, a.kind, a.source, a.value) for i, a in enumerate(actions)]
    return sorted(ordered, key=lambda a: (a.at_s, a.order))
