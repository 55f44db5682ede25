"""The allocation problem: racks, sources and policy as plain validated arrays.

Racks and sources are numbered as in the site model (`host.model.site.Site`); each
rack reaches up to K sources (its tap's inputs), stored as (racks, K) arrays padded
with -1. Bad input is refused with an `AllocationError` listing every problem, each
naming the rack, source or policy field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from host.model.arrays import BoolArray, FloatArray, IntArray, frozen
from host.model.electrical import POWER_FACTOR, line_current_a
from host.model.errors import ConfigurationError
from host.model.site import Availability, Priority, Site, SourceKind

# What one move costs in the objective: every move is a supply gap, worst for critical racks.
MOVE_WEIGHT = {Priority.DEFERRABLE: 1.0, Priority.NORMAL: 2.0, Priority.CRITICAL: 4.0}
SQRT3 = math.sqrt(3.0)
TOLERANCE_KW = 1e-6  # kW over a limit that still counts as within it


class AllocationError(ConfigurationError, ValueError):
    """Refused input; `problems` lists every finding, each naming the item and field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Policy:
    """What a plan must respect. Utilisations are fractions of capacity."""

    ceiling: float = 0.9  # steady-state load at most this share of capacity
    move_budget: int = 50  # voluntary moves per plan (evacuations are not counted)
    min_dwell_s: float = 6 * 3600.0  # a rack moved more recently stays put
    max_moves_per_week: int = 3  # a rack moved this often stays put
    voltage_v: float = 400.0  # nominal line-to-line, three-phase
    power_factor: float = POWER_FACTOR
    max_drop_fraction: float = 0.03  # path drop sqrt(3)*I*Z at most this share of nominal
    overload_allowance: float = 0.10  # survivors may briefly carry capacity * (1 + this)
    min_runtime_s: float = 900.0  # a battery must carry its load at least this long
    risk_threshold: float = 0.5  # a source above this fault risk is emptied and nobody's alternate
    thd_limit_pct: float = 5.0  # sensitive racks avoid sources above this when there is a choice
    allow_shedding: bool = True  # deferrable racks may be opened when nothing else covers N-1
    aim_u: float = 0.0  # a plan need not lower U below this: the fewest moves that reach it (0: the least U)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name, low, high in (
            ("ceiling", 0.0, 1.0),
            ("max_drop_fraction", 0.0, 1.0),
            ("risk_threshold", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if not _finite(value) or not low < value <= high:
                problems.append(f"policy: {name} must be in ({low:g}, {high:g}] (got {value!r})")
        for name in ("voltage_v", "power_factor", "min_runtime_s"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                problems.append(f"policy: {name} must be a finite number > 0 (got {value!r})")
        for name in ("min_dwell_s", "overload_allowance", "thd_limit_pct", "aim_u"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                problems.append(f"policy: {name} must be a finite number >= 0 (got {value!r})")
        if _finite(self.power_factor) and self.power_factor > 1:
            problems.append(f"policy: power_factor must be at most 1 (got {self.power_factor!r})")
        for name in ("move_budget", "max_moves_per_week"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"policy: {name} must be an integer >= 0 (got {value!r})")
        if problems:
            raise AllocationError(problems)

    @property
    def max_drop_v(self) -> float:
        return self.max_drop_fraction * self.voltage_v


def _unset() -> Any:
    """The default of an optional per-item array: empty, then filled with its default."""
    return np.empty(0)


def _given(values: object) -> bool:
    return not (isinstance(values, np.ndarray) and values.size == 0)


def _finite(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _check_array(
    problems: list[str], ids: Sequence[str], kind: str, name: str, values: FloatArray, *, low: float, high: float
) -> None:
    """Name every item whose value is not finite or outside [low, high]."""
    bad = ~np.isfinite(values) | (values < low) | (values > high)
    for i in np.flatnonzero(bad).tolist():
        bound = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        problems.append(f"{kind} {ids[i]!r}: {name} must be a finite number {bound} (got {values[i]!r})")


def _as_float(problems: list[str], name: str, values: object, shape: tuple[int, ...]) -> FloatArray:
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        problems.append(f"{name} must be numbers (got {values!r})")
        return np.zeros(shape)
    if array.shape != shape:
        problems.append(f"{name} must have shape {shape} (got {array.shape})")
        return np.zeros(shape)
    return array


def _as_int(problems: list[str], name: str, values: object, shape: tuple[int, ...]) -> IntArray:
    array = _as_float(problems, name, values, shape)
    if np.any(~np.isfinite(array)) or np.any(array != np.round(array)):
        problems.append(f"{name} must be integers")
        return np.zeros(shape, dtype=np.int64)
    return array.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Problem:
    """One allocation problem. Arrays are read-only copies.

    Racks: `draw_kw` (conservative, e.g. P95), `priority`, `current` (source index, -1
    while its output is open), `reach` (racks, K) source indices padded with -1 and
    `impedance_ohm` beside it, `moves_week` (moves in the last week), `dwell_s` (time on
    its current source), `sensitive` (keep off high-THD sources when possible).
    Sources: `capacity_kw`, `kind`, `energy_kwh` (stored now; NaN except batteries),
    `recharge_kw`, `load_kw` (measured now, for reporting), `other_kw` (load on it from
    outside this problem, carried always), `risk` (fault probability, 0..1), `thd_pct`,
    `available` (False: in maintenance, never a target).
    """

    rack_ids: tuple[str, ...]
    source_ids: tuple[str, ...]
    draw_kw: FloatArray
    priority: tuple[Priority, ...]
    current: IntArray
    reach: IntArray
    impedance_ohm: FloatArray
    capacity_kw: FloatArray
    kind: tuple[SourceKind, ...]
    policy: Policy = field(default_factory=Policy)
    moves_week: IntArray = field(default_factory=_unset)
    dwell_s: FloatArray = field(default_factory=_unset)
    sensitive: BoolArray = field(default_factory=_unset)
    energy_kwh: FloatArray = field(default_factory=_unset)
    recharge_kw: FloatArray = field(default_factory=_unset)
    load_kw: FloatArray = field(default_factory=_unset)
    other_kw: FloatArray = field(default_factory=_unset)
    risk: FloatArray = field(default_factory=_unset)
    thd_pct: FloatArray = field(default_factory=_unset)
    available: BoolArray = field(default_factory=_unset)

    def __post_init__(self) -> None:
        problems: list[str] = []
        racks, sources = tuple(self.rack_ids), tuple(self.source_ids)
        object.__setattr__(self, "rack_ids", racks)
        object.__setattr__(self, "source_ids", sources)
        r, s = len(racks), len(sources)
        for kind, ids in (("rack", racks), ("source", sources)):
            if len(set(ids)) != len(ids):
                problems.append(f"{kind} ids must be unique")
        if s == 0:
            problems.append("sources must not be empty")
        reach = np.array(self.reach, dtype=np.float64)
        k = reach.shape[1] if reach.ndim == 2 else 0
        floats = {
            "draw_kw": (self.draw_kw, (r,), 0.0),
            "impedance_ohm": (self.impedance_ohm, (r, k), 0.0),
            "dwell_s": (self.dwell_s, (r,), math.inf),
            "capacity_kw": (self.capacity_kw, (s,), None),
            "energy_kwh": (self.energy_kwh, (s,), math.nan),
            "recharge_kw": (self.recharge_kw, (s,), 0.0),
            "other_kw": (self.other_kw, (s,), 0.0),
            "risk": (self.risk, (s,), 0.0),
            "thd_pct": (self.thd_pct, (s,), 0.0),
        }
        for name, (values, shape, default) in floats.items():
            given = values if _given(values) or default is None else np.full(shape, default)
            object.__setattr__(self, name, _as_float(problems, name, given, shape))
        object.__setattr__(self, "reach", _as_int(problems, "reach", reach if k else np.zeros((r, 0)), (r, k)))
        object.__setattr__(self, "current", _as_int(problems, "current", self.current, (r,)))
        weekly = self.moves_week if _given(self.moves_week) else np.zeros(r)
        object.__setattr__(self, "moves_week", _as_int(problems, "moves_week", weekly, (r,)))
        for name, default in (("sensitive", False), ("available", True)):
            values = getattr(self, name)
            shape = (r,) if name == "sensitive" else (s,)
            array = np.array(values, dtype=bool) if _given(values) else np.full(shape, default)
            if array.shape != shape:
                problems.append(f"{name} must have shape {shape} (got {array.shape})")
                array = np.full(shape, default)
            object.__setattr__(self, name, array)
        measured = _given(self.load_kw)
        load = self.load_kw if measured else np.zeros(s)
        object.__setattr__(self, "load_kw", _as_float(problems, "load_kw", load, (s,)))
        priorities = []
        for i, value in enumerate(self.priority):
            try:
                priorities.append(Priority(value))
            except ValueError:
                choices = ", ".join(p.value for p in Priority)
                problems.append(f"rack {racks[i] if i < r else i!r}: priority must be one of {choices} (got {value!r})")
        object.__setattr__(self, "priority", tuple(priorities))
        if len(self.priority) != r:
            problems.append(f"priority must have one entry per rack ({r}, got {len(self.priority)})")
        if len(self.kind) != s:
            problems.append(f"kind must have one entry per source ({s}, got {len(self.kind)})")
        if problems:
            raise AllocationError(problems)
        self._check_values(problems)
        if problems:
            raise AllocationError(problems)
        if not measured:  # not measured: what the racks' draws put on each source now
            object.__setattr__(self, "load_kw", self.loads(self.current) + self.other_kw)
        for name in (
            "draw_kw", "current", "reach", "impedance_ohm", "capacity_kw", "moves_week", "dwell_s", "sensitive",
            "energy_kwh", "recharge_kw", "load_kw", "other_kw", "risk", "thd_pct", "available",
        ):  # fmt: skip
            object.__setattr__(self, name, frozen(getattr(self, name)))

    def _check_values(self, problems: list[str]) -> None:
        racks, sources = self.rack_ids, self.source_ids
        s = len(sources)
        inf = math.inf
        _check_array(problems, racks, "rack", "draw_kw", self.draw_kw, low=0.0, high=inf)
        dwell = np.where(np.isposinf(self.dwell_s), 0.0, self.dwell_s)  # inf: never moved
        _check_array(problems, racks, "rack", "dwell_s", dwell, low=0.0, high=inf)
        _check_array(problems, sources, "source", "capacity_kw", self.capacity_kw, low=1e-9, high=inf)
        _check_array(problems, sources, "source", "recharge_kw", self.recharge_kw, low=0.0, high=inf)
        _check_array(problems, sources, "source", "load_kw", self.load_kw, low=0.0, high=inf)
        _check_array(problems, sources, "source", "other_kw", self.other_kw, low=0.0, high=inf)
        _check_array(problems, sources, "source", "risk", self.risk, low=0.0, high=1.0)
        _check_array(problems, sources, "source", "thd_pct", self.thd_pct, low=0.0, high=inf)
        for i, rack in enumerate(racks):
            label = f"rack {rack!r}"
            row = [int(v) for v in self.reach[i] if v >= 0]
            if any(v < -1 or v >= s for v in self.reach[i]):
                problems.append(f"{label}: reach must hold source indices 0 to {s - 1} or -1 (got {self.reach[i]})")
                continue
            if len(set(row)) != len(row):
                problems.append(f"{label}: reach names a source twice")
            if not row:
                problems.append(f"{label}: reach must name at least one source")
            z = self.impedance_ohm[i][self.reach[i] >= 0]
            if np.any(~np.isfinite(z) | (z < 0)):
                problems.append(f"{label}: impedance_ohm must be finite numbers >= 0 (got {z})")
            if self.current[i] != -1 and int(self.current[i]) not in row:
                problems.append(f"{label}: current source {self.current[i]} is not one it reaches {row}")
            if self.moves_week[i] < 0:
                problems.append(f"{label}: moves_week must be >= 0 (got {self.moves_week[i]})")
        for j, source in enumerate(sources):
            is_battery = self.kind[j] == SourceKind.BATTERY
            energy = self.energy_kwh[j]
            if is_battery and not (math.isfinite(energy) and energy >= 0):
                problems.append(f"source {source!r}: energy_kwh must be a finite number >= 0 (got {energy!r})")
            if not is_battery and not math.isnan(energy):
                problems.append(f"source {source!r}: energy_kwh is for batteries only (kind is {self.kind[j]})")

    # Derived quantities, built once.

    @property
    def n_racks(self) -> int:
        return len(self.rack_ids)

    @property
    def n_sources(self) -> int:
        return len(self.source_ids)

    @cached_property
    def weight(self) -> FloatArray:
        """What moving each rack costs."""
        return np.array([MOVE_WEIGHT[p] for p in self.priority], dtype=np.float64)

    @cached_property
    def current_a(self) -> FloatArray:
        """Each rack's line current at its draw."""
        return line_current_a(self.draw_kw, self.policy.voltage_v, power_factor=self.policy.power_factor)

    @cached_property
    def drop_v(self) -> FloatArray:
        """(racks, K): the path voltage drop sqrt(3) * I * Z on each input, at the rack's draw."""
        out: FloatArray = SQRT3 * self.current_a[:, None] * self.impedance_ohm
        return out

    @cached_property
    def loss_kw(self) -> FloatArray:
        """(racks, K): the I^2 R loss of each path, three phases, at the rack's draw."""
        out: FloatArray = 3.0 * self.current_a[:, None] ** 2 * self.impedance_ohm / 1000.0
        return out

    @cached_property
    def allowed_source(self) -> BoolArray:
        """Sources that may carry racks and be alternates: in service and below the risk threshold."""
        out: BoolArray = self.available & (self.risk <= self.policy.risk_threshold)
        return out

    @cached_property
    def usable(self) -> BoolArray:
        """(racks, K): wired, to an allowed source, within the voltage-drop limit."""
        wired = self.reach >= 0
        allowed = self.allowed_source[np.maximum(self.reach, 0)]
        out: BoolArray = wired & allowed & (self.drop_v <= self.policy.max_drop_v + 1e-9)
        return out

    @cached_property
    def options(self) -> tuple[tuple[int, ...], ...]:
        """Per rack, the sources it may be on or go to (its usable inputs' sources), in input order."""
        return tuple(tuple(int(t) for t in row[ok]) for row, ok in zip(self.reach, self.usable, strict=True))

    @cached_property
    def is_battery(self) -> BoolArray:
        """Sources that are battery strings."""
        return np.array([k == SourceKind.BATTERY for k in self.kind])

    @cached_property
    def runtime_limit_kw(self) -> FloatArray:
        """What each battery string can carry for the policy's minimum runtime (recharge
        included); the values of other sources are not used."""
        energy = np.where(self.is_battery, np.nan_to_num(self.energy_kwh), 0.0)
        out: FloatArray = self.recharge_kw + energy * 3600.0 / self.policy.min_runtime_s
        return out

    @cached_property
    def steady_limit_kw(self) -> FloatArray:
        """What each source may carry from this problem's racks in steady state. A battery
        string carries no more than its charger puts back: above that it discharges, and
        it is a reserve for the contingencies, not a place to park racks."""
        ceiling = self.capacity_kw * self.policy.ceiling
        limit = np.where(self.is_battery, np.minimum(ceiling, self.recharge_kw), ceiling)
        return self._battery_cap(limit) - self.other_kw

    @cached_property
    def post_limit_kw(self) -> FloatArray:
        """What each survivor may carry from this problem's racks just after another source is lost."""
        return self._battery_cap(self.capacity_kw * (1.0 + self.policy.overload_allowance)) - self.other_kw

    @cached_property
    def hard_limit_kw(self) -> FloatArray:
        """What a source may carry at any instant of the move sequence: its capacity (and battery runtime)."""
        return self._battery_cap(self.capacity_kw.copy()) - self.other_kw

    def _battery_cap(self, limit: FloatArray) -> FloatArray:
        out: FloatArray = np.where(self.is_battery, np.minimum(limit, self.runtime_limit_kw), limit)
        return out

    @cached_property
    def current_usable(self) -> BoolArray:
        """Racks whose current source is still a usable place for them."""
        hit = (self.reach == self.current[:, None]) & self.usable
        out: BoolArray = hit.any(axis=1) & (self.current >= 0)
        return out

    @cached_property
    def evacuate(self) -> BoolArray:
        """Racks that must move whatever the policy says: on a source to be emptied, over
        the drop limit, or open. Their moves do not count against the budget."""
        out: BoolArray = ~self.current_usable
        return out

    @cached_property
    def locked(self) -> BoolArray:
        """Racks that stay put: moved too recently or too often, and not forced to move."""
        p = self.policy
        tired = (self.dwell_s < p.min_dwell_s) | (self.moves_week >= p.max_moves_per_week)
        out: BoolArray = tired & self.current_usable
        return out

    def loads(self, assign: IntArray) -> FloatArray:
        """The load each source carries from this problem's racks under `assign` (-1: open)."""
        on = assign >= 0
        out = np.bincount(assign[on], weights=self.draw_kw[on], minlength=self.n_sources)
        return out.astype(np.float64)

    def flow_kw(self, assign: IntArray, alternate: IntArray) -> FloatArray:
        """(sources, sources): the kW that go to survivor t if s is lost, each rack on s
        (under `assign`) going to its `alternate` (-1: none)."""
        n = self.n_sources
        has = (assign >= 0) & (alternate >= 0)
        flow = np.zeros((n, n))
        np.add.at(flow, (assign[has], alternate[has]), self.draw_kw[has])
        return flow

    def post_util(self, assign: IntArray, alternate: IntArray) -> FloatArray:
        """(sources, sources): the utilisation of survivor t after losing s (outside load
        included); the diagonal is the steady state when no rack's alternate is its target."""
        load = self.loads(assign) + self.other_kw
        out: FloatArray = (load[None, :] + self.flow_kw(assign, alternate)) / self.capacity_kw[None, :]
        return out

    def worst_post(self, assign: IntArray, alternate: IntArray) -> float:
        """The highest utilisation of any source, steady or after any single loss, when
        each rack on a lost source goes to its alternate."""
        return float(self.post_util(assign, alternate).max()) if self.n_sources > 1 else 0.0

    def place_evacuated(self, assign: IntArray, load: FloatArray) -> None:
        """Move the racks that must leave their source, largest first, each to the usable
        source left least utilised (outside load included) among those it fits under their
        steady limit, else to the one it overloads least, updating `assign` and this
        problem's `load` per source in place; a rack with no usable source is opened (-1).
        The steady limit first: an idle battery string is the least utilised source of all,
        and a rack parked on it drains the reserve the contingencies count on."""
        draw, base, cap, limit = self.draw_kw, self.other_kw, self.capacity_kw, self.steady_limit_kw
        for r in sorted(np.flatnonzero(self.evacuate).tolist(), key=lambda r: -draw[r]):
            s = int(assign[r])
            if s >= 0:
                load[s] -= draw[r]
            options = self.options[r]
            if not options:
                assign[r] = -1  # no usable source at all: reported as a shortfall
                continue
            d = float(draw[r])
            t = min(options, key=lambda t: (max(load[t] + d - limit[t], 0.0), (load[t] + base[t] + d) / cap[t]))
            assign[r] = t
            load[t] += d

    @classmethod
    def from_site(
        cls,
        site: Site,
        draw_kw: Sequence[float] | FloatArray,
        current: Sequence[str | None] | IntArray,
        *,
        policy: Policy | None = None,
        risk: Sequence[float] | FloatArray | None = None,
        thd_pct: Sequence[float] | FloatArray | None = None,
        stored_kwh: Sequence[float] | FloatArray | None = None,
        load_kw: Sequence[float] | FloatArray | None = None,
        moves_week: Sequence[int] | IntArray | None = None,
        dwell_s: Sequence[float] | FloatArray | None = None,
        sensitive: Sequence[bool] | BoolArray | None = None,
    ) -> Problem:
        """The problem for a site: per-rack arrays in `site.racks` order, per-source arrays
        in `site.sources` order; `current` as source ids (None: open) or indices (-1).
        Batteries are full unless `stored_kwh` says otherwise; the policy's voltage is the site's."""
        index = site.source_index
        width = max(site.max_inputs, 1)
        reach = np.full((len(site.racks), width), -1, dtype=np.int64)
        impedance = np.zeros((len(site.racks), width))
        for i, rack in enumerate(site.racks):
            for k, feed in enumerate(site.feeds_of(rack.id)):
                reach[i, k] = index[feed.source_id]
                impedance[i, k] = feed.impedance_ohm
        problems: list[str] = []
        now = np.full(len(site.racks), -1, dtype=np.int64)
        for i, value in enumerate(current):
            if value is None or isinstance(value, str):
                if value is not None and value not in index:
                    problems.append(f"rack {site.racks[i].id!r}: current source {value!r} is not a source of the site")
                now[i] = -1 if value is None else index.get(value, -1)
            else:
                now[i] = int(value)
        if len(current) != len(site.racks):
            problems.append(f"current must have one entry per rack ({len(site.racks)}, got {len(current)})")
        if problems:
            raise AllocationError(problems)
        battery = [s.kind == SourceKind.BATTERY for s in site.sources]
        full = np.array([s.energy_kwh if b else math.nan for s, b in zip(site.sources, battery, strict=True)])
        energy = full if stored_kwh is None else np.where(battery, np.asarray(stored_kwh, dtype=np.float64), np.nan)
        base = policy or Policy()
        optional = {
            "moves_week": moves_week, "dwell_s": dwell_s, "sensitive": sensitive, "load_kw": load_kw,
            "risk": risk, "thd_pct": thd_pct,
        }  # fmt: skip
        given = {name: np.asarray(values) for name, values in optional.items() if values is not None}
        return cls(
            rack_ids=tuple(r.id for r in site.racks),
            source_ids=tuple(s.id for s in site.sources),
            draw_kw=np.asarray(draw_kw, dtype=np.float64),
            priority=tuple(r.priority for r in site.racks),
            current=now,
            reach=reach,
            impedance_ohm=impedance,
            capacity_kw=np.array([s.capacity_kw for s in site.sources]),
            kind=tuple(s.kind for s in site.sources),
            policy=replace(base, voltage_v=site.voltage_v),
            energy_kwh=energy,
            recharge_kw=np.array([s.recharge_kw for s in site.sources]),
            available=np.array([s.availability == Availability.IN_SERVICE for s in site.sources]),
            **given,
        )
