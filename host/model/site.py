"""The site model: reserve sources, racks, their taps, and the feeds that wire each tap
input to a source through a path of known impedance.

Plain frozen data, validated on construction. Every problem names the item and the
field ("source 'ups-1': capacity_kw must be > 0 (got -5)"); an item refuses itself on
its own problems, and a Site reports every problem of its cross-references at once.
Inputs are numbered from 1, as the wire protocol numbers them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

from host.model.errors import ConfigurationError
from host.model.overload import CURVES

MIN_INPUTS = 2
MAX_INPUTS = 4


class SourceKind(StrEnum):
    UPS = "ups"
    BATTERY = "battery"
    GENERATOR = "generator"


class Priority(StrEnum):
    CRITICAL = "critical"
    NORMAL = "normal"
    DEFERRABLE = "deferrable"


class Availability(StrEnum):
    """Whether a source may serve at all: one in maintenance is never a target."""

    IN_SERVICE = "in_service"
    MAINTENANCE = "maintenance"


class SiteError(ConfigurationError, ValueError):
    """A site model refused; `problems` lists every finding, each naming item and field."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


def _raise_on(problems: list[str]) -> None:
    if problems:
        raise SiteError(problems)


def _coerce(item: object, name: str, enum_type: type[StrEnum], label: str) -> list[str]:
    """Turn a string field into its enum in place; a problem if it is none of the values."""
    value = getattr(item, name)
    if isinstance(value, enum_type):
        return []
    try:
        object.__setattr__(item, name, enum_type(value))
    except ValueError:
        choices = ", ".join(member.value for member in enum_type)
        return [f"{label}: {name} must be one of {choices} (got {value!r})"]
    return []


def _number(label: str, name: str, value: Any, *, minimum: float = 0.0, strict: bool = True) -> list[str]:
    """A problem unless value is a finite number above minimum (or at least it, if not strict)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return [f"{label}: {name} must be a finite number (got {value!r})"]
    if value < minimum or (strict and value == minimum):
        sign = ">" if strict else ">="
        return [f"{label}: {name} must be {sign} {minimum:g} (got {value:g})"]
    return []


def _identifier(label: str, value: Any) -> list[str]:
    if not isinstance(value, str) or not value.strip():
        return [f"{label}: id must be a non-empty string (got {value!r})"]
    return []


@dataclass(frozen=True)
class Source:
    """A reserve source. Its overload protection picks up at capacity_kw and trips on
    the IEC 60255-151 `curve` with time multiplier `tms`."""

    id: str
    kind: SourceKind
    capacity_kw: float
    energy_kwh: float | None = None  # batteries only: the energy stored when full
    recharge_kw: float = 0.0  # batteries only: what the charger puts back while the load is below it
    availability: Availability = Availability.IN_SERVICE
    curve: str = "standard_inverse"
    tms: float = 1.0
    phase_deg: float = 0.0  # its phase angle as the taps measure it (which terminal its L1 lands on)

    def __post_init__(self) -> None:
        _raise_on(self._check())

    @property
    def label(self) -> str:
        return f"source {self.id!r}"

    def _check(self) -> list[str]:
        label = self.label
        problems = _identifier(label, self.id)
        problems += _coerce(self, "kind", SourceKind, label)
        problems += _coerce(self, "availability", Availability, label)
        problems += _number(label, "capacity_kw", self.capacity_kw)
        problems += _number(label, "tms", self.tms)
        if self.curve not in CURVES:
            problems.append(f"{label}: curve must be one of {', '.join(CURVES)} (got {self.curve!r})")
        if self.kind == SourceKind.BATTERY:
            problems += _number(label, "energy_kwh", self.energy_kwh)
            problems += _number(label, "recharge_kw", self.recharge_kw, strict=False)
        else:
            if self.energy_kwh is not None:
                problems.append(f"{label}: energy_kwh is for batteries only (kind is {self.kind})")
            if self.recharge_kw != 0.0:
                problems.append(f"{label}: recharge_kw is for batteries only (kind is {self.kind})")
        return problems

    def runtime_s(self, load_kw: float, stored_kwh: float | None = None) -> float:
        """Seconds this source carries load_kw: a battery from stored_kwh (full when None),
        less what its charger puts back; infinite for the other kinds, or when the
        charger keeps up."""
        if self.kind != SourceKind.BATTERY or self.energy_kwh is None:
            return math.inf
        stored = self.energy_kwh if stored_kwh is None else stored_kwh
        net_kw = load_kw - self.recharge_kw
        return math.inf if net_kw <= 0 else stored * 3600.0 / net_kw


@dataclass(frozen=True)
class Tap:
    id: str
    n_inputs: int

    def __post_init__(self) -> None:
        label = f"tap {self.id!r}"
        problems = _identifier(label, self.id)
        if isinstance(self.n_inputs, bool) or not isinstance(self.n_inputs, int) or not (
            MIN_INPUTS <= self.n_inputs <= MAX_INPUTS
        ):
            span = f"{MIN_INPUTS} to {MAX_INPUTS}"
            problems.append(f"{label}: n_inputs must be an integer {span} (got {self.n_inputs!r})")
        _raise_on(problems)


@dataclass(frozen=True)
class Rack:
    """A rack and the tap it draws its reserve power through. rated_kw is its breaker
    rating: what it draws never exceeds it."""

    id: str
    tap_id: str
    priority: Priority = Priority.NORMAL
    rated_kw: float = 10.0
    group: str = ""  # row or hall, for selecting racks in scenarios

    def __post_init__(self) -> None:
        label = f"rack {self.id!r}"
        problems = _identifier(label, self.id)
        problems += _coerce(self, "priority", Priority, label)
        problems += _number(label, "rated_kw", self.rated_kw)
        if not isinstance(self.tap_id, str) or not self.tap_id:
            problems.append(f"{label}: tap_id must be a non-empty string (got {self.tap_id!r})")
        _raise_on(problems)


@dataclass(frozen=True)
class Feed:
    """Input `input` (1-based) of tap `tap_id` is wired to source `source_id` through a
    path of impedance_ohm (per phase)."""

    tap_id: str
    input: int
    source_id: str
    impedance_ohm: float

    @property
    def label(self) -> str:
        return f"feed {self.tap_id!r} input {self.input}"

    def __post_init__(self) -> None:
        problems = _number(self.label, "impedance_ohm", self.impedance_ohm, strict=False)
        if isinstance(self.input, bool) or not isinstance(self.input, int) or not 1 <= self.input <= MAX_INPUTS:
            problems.append(f"{self.label}: input must be an integer 1 to {MAX_INPUTS} (got {self.input!r})")
        _raise_on(problems)


@dataclass(frozen=True)
class Site:
    """A whole site. Lookups by id are built once, on first use."""

    sources: tuple[Source, ...]
    taps: tuple[Tap, ...]
    racks: tuple[Rack, ...]
    feeds: tuple[Feed, ...]
    name: str = "site"
    voltage_v: float = 400.0  # nominal line-to-line voltage of every source
    frequency_hz: float = 50.0  # nominal frequency of every source

    def __post_init__(self) -> None:
        for name in ("sources", "taps", "racks", "feeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        label = f"site {self.name!r}"
        _raise_on(_number(label, "voltage_v", self.voltage_v) + _number(label, "frequency_hz", self.frequency_hz)
                  + _cross_check(self))

    @cached_property
    def source_index(self) -> dict[str, int]:
        return {source.id: i for i, source in enumerate(self.sources)}

    @cached_property
    def rack_index(self) -> dict[str, int]:
        return {rack.id: i for i, rack in enumerate(self.racks)}

    @cached_property
    def _taps_by_id(self) -> dict[str, Tap]:
        return {tap.id: tap for tap in self.taps}

    @cached_property
    def _feeds_by_tap(self) -> dict[str, tuple[Feed, ...]]:
        grouped: dict[str, list[Feed]] = {}
        for feed in self.feeds:
            grouped.setdefault(feed.tap_id, []).append(feed)
        return {tap: tuple(sorted(feeds, key=lambda f: f.input)) for tap, feeds in grouped.items()}

    def source(self, source_id: str) -> Source:
        return self.sources[self.source_index[source_id]]

    def rack(self, rack_id: str) -> Rack:
        return self.racks[self.rack_index[rack_id]]

    def tap_of(self, rack_id: str) -> Tap:
        return self._taps_by_id[self.rack(rack_id).tap_id]

    def feeds_of(self, rack_id: str) -> tuple[Feed, ...]:
        """The feeds of the rack's tap, by input number."""
        return self._feeds_by_tap.get(self.rack(rack_id).tap_id, ())

    def reachable(self, rack_id: str) -> tuple[str, ...]:
        """The sources the rack's tap can connect it to, by input number."""
        return tuple(feed.source_id for feed in self.feeds_of(rack_id))

    @property
    def max_inputs(self) -> int:
        return max((tap.n_inputs for tap in self.taps), default=0)


def _duplicates(kind: str, ids: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    problems = []
    for item_id in ids:
        if item_id in seen:
            problems.append(f"{kind} {item_id!r}: id is used twice")
        seen.add(item_id)
    return problems


def _cross_check(site: Site) -> list[str]:
    """Every reference resolves, ids are unique, each tap serves one rack and wires each
    of its inputs to a different source."""
    problems = _duplicates("source", (s.id for s in site.sources))
    problems += _duplicates("tap", (t.id for t in site.taps))
    problems += _duplicates("rack", (r.id for r in site.racks))
    if not site.sources:
        problems.append(f"site {site.name!r}: sources must not be empty")
    sources = {s.id for s in site.sources}
    taps = {t.id: t for t in site.taps}
    used_by: dict[str, str] = {}
    for rack in site.racks:
        if rack.tap_id not in taps:
            problems.append(f"rack {rack.id!r}: tap_id {rack.tap_id!r} is not a tap of the site")
        elif rack.tap_id in used_by:
            problems.append(f"rack {rack.id!r}: tap_id {rack.tap_id!r} already serves rack {used_by[rack.tap_id]!r}")
        else:
            used_by[rack.tap_id] = rack.id
    wired: dict[str, dict[int, str]] = {}
    for feed in site.feeds:
        if feed.tap_id not in taps:
            problems.append(f"{feed.label}: tap_id {feed.tap_id!r} is not a tap of the site")
            continue
        if feed.source_id not in sources:
            problems.append(f"{feed.label}: source_id {feed.source_id!r} is not a source of the site")
        inputs = wired.setdefault(feed.tap_id, {})
        if feed.input > taps[feed.tap_id].n_inputs:
            problems.append(f"{feed.label}: input must be at most the tap's n_inputs {taps[feed.tap_id].n_inputs}")
        if feed.input in inputs:
            problems.append(f"{feed.label}: input is wired twice")
        elif feed.source_id in inputs.values():
            problems.append(f"{feed.label}: source_id {feed.source_id!r} is already wired to another input")
        inputs[feed.input] = feed.source_id
    for tap_id in used_by:
        missing = [k for k in range(1, taps[tap_id].n_inputs + 1) if k not in wired.get(tap_id, {})]
        if missing:
            problems.append(f"tap {tap_id!r}: inputs {missing} have no feed")
    return problems
