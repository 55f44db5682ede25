"""Scenarios for the site simulator, in TOML (docs/scenarios.md describes the format;
scenarios/ holds examples). Loading validates everything and reports every problem at
once, each with its field path and line: `sources[2].capacity_kw (line 14): must be
> 0 (got -5)`. Unknown fields are problems too, with the closest known name.

The result is plain data: the site (built from the sources and rack groups), the load
settings, and jobs, load steps, source events and conditions with their rack
selections resolved, deterministically for the scenario's seed.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from host.model.arrays import IntArray
from host.model.errors import ConfigurationError
from host.model.site import MAX_INPUTS, MIN_INPUTS, Priority, Site, SiteError, Source, SourceKind
from host.model.toml_fields import REQUIRED, FieldReader
from host.model.toml_lines import key_lines
from host.sim.site.build import RackGroup, build_site
from host.sim.site.conditions import DEGRADING, FAMILIES, Condition, Family, Shape
from host.sim.site.health import SIGNALS
from host.sim.site.loads import PROFILES, Job, LoadConfig, LoadStep
from host.sim.site.sources import ACTIONS, SourceEvent

SECTIONS = {"scenario", "loads", "sources", "racks", "events", "jobs", "conditions"}
SELECTOR = {"priority", "group", "share"}


class ScenarioError(ConfigurationError, ValueError):
    """A scenario refused; `problems` lists every finding with its field path and line."""

    cause = "the scenario file: docs/scenarios.md says what it holds"

    def __init__(self, name: str, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(f"{name}: " + "; ".join(problems))


@dataclass(frozen=True, eq=False)
class Scenario:
    name: str
    seed: int
    step_s: float
    duration_s: float
    site: Site
    loads: LoadConfig
    jobs: tuple[Job, ...] = ()
    load_steps: tuple[LoadStep, ...] = ()
    source_events: tuple[SourceEvent, ...] = ()
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class _Selector:
    priority: Priority | None
    group: str | None
    share: float

    def resolve(self, site: Site, rng: np.random.Generator) -> IntArray:
        chosen = [i for i, rack in enumerate(site.racks)
                  if (self.priority is None or rack.priority == self.priority)
                  and (self.group is None or rack.group == self.group)]
        picks = np.array(chosen, dtype=np.int64)
        if self.share < 1.0:
            picks = np.sort(rng.permutation(picks)[: round(self.share * len(picks))])
        return picks


@dataclass(frozen=True)
class _StepSpec:
    selector: _Selector
    at_s: float
    factor: float
    until_s: float | None


@dataclass(frozen=True)
class _JobSpec:
    selector: _Selector
    start_s: float
    duration_s: float
    fraction: float
    every_s: float | None
    until_s: float | None


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    return parse_scenario(path.read_text(), path.name)


def parse_scenario(text: str, name: str = "<scenario>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(name, [f"TOML syntax: {error}"]) from None
    reader = FieldReader(key_lines(text))
    reader.table(data, "", SECTIONS)
    head = _head(reader, data.get("scenario", {}))
    loads = _loads(reader, data.get("loads", {}))
    sources = _sources(reader, data)
    ids = _declared_kinds(data)
    groups = _groups(reader, data, list(ids))
    groups_known = {g.name for g in groups}
    events = [_event(reader, path, item, ids, groups_known) for path, item in reader.tables(data, "events")]
    jobs = [_job(reader, path, item, groups_known) for path, item in reader.tables(data, "jobs")]
    conditions = [_condition(reader, path, item, ids) for path, item in reader.tables(data, "conditions")]
    site: Site | None = None
    if not reader.problems:
        try:
            site = build_site(sources, groups, head["seed"], head["name"], head["voltage_v"])
        except SiteError as error:
            reader.problems.extend(error.problems)
    if reader.problems or site is None:
        raise ScenarioError(name, reader.problems)
    return _resolve(head, site, loads, events, jobs, conditions)


def _head(reader: FieldReader, raw: Any) -> dict[str, Any]:
    table = reader.table(raw, "scenario", {"name", "seed", "step_s", "duration_s", "voltage_v"})
    return {
        "name": reader.string(table, "name", "scenario", "scenario"),
        "seed": reader.integer(table, "seed", "scenario", 0, minimum=0),
        "step_s": reader.number(table, "step_s", "scenario", 60.0, minimum=0.0, strict=True, maximum=3600.0),
        "duration_s": reader.number(table, "duration_s", "scenario", 7 * 86_400.0, minimum=0.0, strict=True),
        "voltage_v": reader.number(table, "voltage_v", "scenario", 400.0, minimum=0.0, strict=True),
    }


def _loads(reader: FieldReader, raw: Any) -> LoadConfig:
    names = {f.name for f in fields(LoadConfig)}
    table = reader.table(raw, "loads", names)
    default = LoadConfig()
    values: dict[str, Any] = {}
    for key in names & set(table):
        if key == "profile":
            values[key] = reader.string(table, key, "loads", default.profile, PROFILES)
        elif key == "utilisation":
            values[key] = reader.pair(table, key, "loads", default.utilisation)
            if values[key] and values[key][1] > 1.0:
                reader.problem("loads.utilisation", f"must be at most 1 (got {values[key][1]:g})")
        else:
            values[key] = reader.number(table, key, "loads", minimum=0.0)
    return LoadConfig(**{k: v for k, v in values.items() if v is not None})


def _sources(reader: FieldReader, data: dict[str, Any]) -> list[Source]:
    allowed = {f.name for f in fields(Source)}
    sources = []
    items = reader.tables(data, "sources")
    if not items:
        reader.problem("sources", "at least one [[sources]] is required")
    for path, raw in items:
        table = reader.table(raw, path, allowed)
        if any(key not in table for key in ("id", "kind", "capacity_kw")):
            for key in ("id", "kind", "capacity_kw"):
                reader.value(table, key, path, object, REQUIRED, "")
            continue
        try:
            sources.append(Source(**{k: v for k, v in table.items() if k in allowed}))
        except SiteError as error:
            for problem in error.problems:
                field, _, message = problem.split(": ", 1)[1].partition(" ")
                reader.problem(f"{path}.{field}", message)
        except TypeError as error:
            reader.problem(path, str(error))
    for dup in {s.id for s in sources if [t.id for t in sources].count(s.id) > 1}:
        reader.problem("sources", f"id {dup!r} is used twice")
    return sources


def _declared_kinds(data: dict[str, Any]) -> dict[str, SourceKind | None]:
    """Every source id declared, with its kind if valid: references are checked against
    these even where a source has problems of its own, so that one error is reported once."""
    kinds = {kind.value: kind for kind in SourceKind}
    declared: dict[str, SourceKind | None] = {}
    raw = data.get("sources", [])
    for table in raw if isinstance(raw, list) else []:
        if isinstance(table, dict) and isinstance(table.get("id"), str):
            kind = table.get("kind")
            declared[table["id"]] = kinds.get(kind) if isinstance(kind, str) else None
    return declared


def _groups(reader: FieldReader, data: dict[str, Any], ids: list[str]) -> list[RackGroup]:
    allowed = {"group", "count", "priority", "sources", "primary", "inputs", "rated_kw", "impedance_ohm"}
    groups = []
    items = reader.tables(data, "racks")
    if not items:
        reader.problem("racks", "at least one [[racks]] group is required")
    for path, raw in items:
        table = reader.table(raw, path, allowed)
        name = reader.string(table, "group", path)
        count = reader.integer(table, "count", path, minimum=1, maximum=1_000_000)
        inputs = reader.integer(table, "inputs", path, 2, minimum=MIN_INPUTS, maximum=MAX_INPUTS)
        pool = table.get("sources", ids)
        if not isinstance(pool, list) or not all(isinstance(s, str) for s in pool) or not pool:
            reader.problem(f"{path}.sources", "must be a non-empty list of source ids")
            pool = ids
        for unknown in [s for s in pool if s not in ids]:
            reader.problem(f"{path}.sources", f"{unknown!r} is not a source of the scenario")
        primary = table.get("primary", pool)
        if not isinstance(primary, list) or not all(isinstance(s, str) for s in primary) or not primary:
            reader.problem(f"{path}.primary", "must be a non-empty list of source ids")
            primary = pool
        for unknown in [s for s in primary if s not in pool]:
            reader.problem(f"{path}.primary", f"{unknown!r} is not one of the group's sources")
        if inputs is not None and len(set(pool)) < inputs:
            reader.problem(f"{path}.inputs", f"{inputs} inputs need as many sources, the group has {len(set(pool))}")
        priorities = _priorities(reader, table, path)
        rated = reader.pair(table, "rated_kw", path, (2.0, 40.0), minimum=0.001)
        impedance = reader.pair(table, "impedance_ohm", path, (0.01, 0.05))
        if name is None or count is None or inputs is None or priorities is None or rated is None or impedance is None:
            continue
        groups.append(RackGroup(name, count, priorities, tuple(pool), tuple(primary), inputs, rated, impedance))
    return groups


def _priorities(reader: FieldReader, table: dict[str, Any], path: str) -> tuple[tuple[Priority, float], ...] | None:
    raw = table.get("priority", "normal")
    choices = tuple(p.value for p in Priority)
    if isinstance(raw, str):
        raw = {raw: 1.0}
    if not isinstance(raw, dict):
        example = "{ critical = 0.2, normal = 0.8 }"
        reader.problem(f"{path}.priority", f"must be a priority or a table of shares, e.g. {example}")
        return None
    shares = []
    for key, share in raw.items():
        if key not in choices:
            reader.problem(f"{path}.priority.{key}", f"must be one of {', '.join(choices)}")
        elif isinstance(share, bool) or not isinstance(share, int | float) or share < 0:
            reader.problem(f"{path}.priority.{key}", f"share must be a number >= 0 (got {share!r})")
        else:
            shares.append((Priority(key), float(share)))
    if raw and sum(s for _, s in shares) <= 0:
        reader.problem(f"{path}.priority", "shares must add up to more than 0")
        return None
    return tuple(shares)


def _selector(reader: FieldReader, table: dict[str, Any], path: str, groups: set[str]) -> _Selector:
    priority = reader.string(table, "priority", path, None, tuple(p.value for p in Priority))
    group = reader.string(table, "group", path, None)
    if group is not None and group not in groups:
        reader.problem(f"{path}.group", f"{group!r} is not a rack group of the scenario")
    share = reader.number(table, "share", path, 1.0, minimum=0.0, strict=True, maximum=1.0)
    return _Selector(Priority(priority) if priority else None, group, share if share is not None else 1.0)


def _source_ref(reader: FieldReader, table: dict[str, Any], path: str, sources: dict[str, SourceKind | None],
                default: Any = REQUIRED) -> Any:
    source = reader.string(table, "source", path, default)
    if source is not None and source not in sources:
        reader.problem(f"{path}.source", f"{source!r} is not a source of the scenario")
        return None
    return source


def _event(
    reader: FieldReader, path: str, raw: Any, sources: dict[str, SourceKind | None], groups: set[str]
) -> SourceEvent | _StepSpec | None:
    table = reader.table(raw, path, {"at_s", "action", "source", "factor", "until_s"} | SELECTOR)
    at_s = reader.number(table, "at_s", path, minimum=0.0)
    action = reader.string(table, "action", path, choices=(*ACTIONS, "load_step"))
    if action == "load_step":
        factor = reader.number(table, "factor", path, minimum=0.0)
        until_s = reader.number(table, "until_s", path, None, minimum=0.0)
        if until_s is not None and at_s is not None and until_s <= at_s:
            reader.problem(f"{path}.until_s", f"must be after at_s ({at_s:g})")
        selector = _selector(reader, table, path, groups)
        return None if at_s is None or factor is None else _StepSpec(selector, at_s, factor, until_s)
    for key in ("factor", "until_s", *SELECTOR):
        if key in table:
            reader.problem(f"{path}.{key}", f"is for load_step events only (action is {action!r})")
    source = _source_ref(reader, table, path, sources)
    return SourceEvent(at_s, action, source) if None not in (at_s, action, source) else None


def _job(reader: FieldReader, path: str, raw: Any, groups: set[str]) -> _JobSpec | None:
    table = reader.table(raw, path, {"start_s", "duration_s", "every_s", "until_s", "fraction"} | SELECTOR)
    start = reader.number(table, "start_s", path, minimum=0.0)
    duration = reader.number(table, "duration_s", path, minimum=0.0, strict=True)
    every = reader.number(table, "every_s", path, None, minimum=0.0, strict=True)
    until = reader.number(table, "until_s", path, None, minimum=0.0)
    fraction = reader.number(table, "fraction", path, minimum=0.0, maximum=1.0)
    if every is not None and duration is not None and duration > every:
        reader.problem(f"{path}.duration_s", f"must be at most every_s ({every:g})")
    selector = _selector(reader, table, path, groups)
    if start is None or duration is None or fraction is None:
        return None
    return _JobSpec(selector, start, duration, fraction, every, until)


def _condition(reader: FieldReader, path: str, raw: Any, sources: dict[str, SourceKind | None]) -> Condition | None:
    fields = {"family", "source", "start_s", "end_s", "magnitude", "signal", "fails", "shape"}
    table = reader.table(raw, path, fields)
    family_name = reader.string(table, "family", path, choices=tuple(f.value for f in Family))
    if family_name is None:
        return None
    family = Family(family_name)
    spec = FAMILIES[family]
    source = _source_ref(reader, table, path, sources, None if spec.site_wide else REQUIRED)
    kind = sources.get(source) if source is not None else None
    if kind is not None and kind not in spec.kinds:
        kinds = ", ".join(k.value for k in spec.kinds)
        reader.problem(f"{path}.source", f"{family} applies to {kinds} sources ({source!r} is {kind})")
    start = reader.number(table, "start_s", path, minimum=0.0)
    end = reader.number(table, "end_s", path, REQUIRED if spec.needs_end else None, minimum=0.0)
    if start is not None and end is not None and end <= start:
        reader.problem(f"{path}.end_s", f"must be after start_s ({start:g})")
    magnitude = reader.number(table, "magnitude", path, None)
    signal = reader.string(table, "signal", path, REQUIRED if spec.needs_signal else None, (*SIGNALS, "all"))
    fails = reader.value(table, "fails", path, bool, None, "true or false")
    if not spec.needs_signal and "signal" in table:
        reader.problem(f"{path}.signal", f"is not used by {family}")
    shape = reader.string(table, "shape", path, None, tuple(s.value for s in Shape))
    if family not in DEGRADING and "shape" in table:
        reader.problem(f"{path}.shape", f"is not used by {family} (only by gradual degradations)")
    if start is None:
        return None
    return Condition(family, source, start, end, magnitude, signal, fails, Shape(shape or Shape.LINEAR))


def _resolve(
    head: dict[str, Any],
    site: Site,
    loads: LoadConfig,
    events: list[SourceEvent | _StepSpec | None],
    jobs: list[_JobSpec | None],
    conditions: list[Condition | None],
) -> Scenario:
    """Rack selections become rack indices, each with its own generator from the seed."""
    seed = head["seed"]

    def racks(selector: _Selector, salt: int) -> IntArray:
        return selector.resolve(site, np.random.default_rng([seed, 5, salt]))

    step_specs = [e for e in events if isinstance(e, _StepSpec)]
    job_specs = [j for j in jobs if j is not None]
    return Scenario(
        name=head["name"],
        seed=seed,
        step_s=head["step_s"],
        duration_s=head["duration_s"],
        site=site,
        loads=loads,
        jobs=tuple(
            Job(racks(j.selector, 10_000 + i), j.start_s, j.duration_s, j.fraction, j.every_s, j.until_s)
            for i, j in enumerate(job_specs)
        ),
        load_steps=tuple(
            LoadStep(racks(e.selector, i), e.at_s, e.factor, e.until_s) for i, e in enumerate(step_specs)
        ),
        source_events=tuple(e for e in events if isinstance(e, SourceEvent)),
        conditions=tuple(c for c in conditions if c is not None),
    )
