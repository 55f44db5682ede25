"""Site files: what is physically installed at a site, in TOML (docs/site_file.md; an
example in sites/demo.toml). Unlike a scenario nothing is generated: every source, tap
and rack is listed, because a commissioning engineer checks the file against the
installation and the inventory is loaded from it.

Loading checks everything and reports every problem at once, each as
`file:line: field.path: message` so that an editor can jump to it, e.g.
`demo.toml:42: taps[3].inputs[1]: unknown source 'ups-9' (known: ups-1, ups-2)`.
The field reader and the line finder are the scenarios' (host/model/toml_fields.py,
host/model/toml_lines.py); only the form of a problem differs.

The result is the site model (host/model/site.py: sources, rack taps, racks, feeds)
plus what the model has no place for: the commissioning record of every tap (unique
id, address, bus segment, board, role), monitor taps (which have no inputs, so are not
model taps), the phase angle of each source (to prove wiring at commissioning), the
site frequency, and each feed's impedance as given (None where unknown; the model
gets 0).
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from host.model import boards
from host.model.errors import ConfigurationError
from host.model.site import MAX_INPUTS, MIN_INPUTS, Feed, Priority, Rack, Site, SiteError, Source, SourceKind, Tap
from host.model.toml_fields import REQUIRED, FieldReader
from host.model.toml_lines import key_lines, line_of
from protocol import catalog

SECTIONS = {"site", "sources", "taps", "racks"}
SITE_FIELDS = {"name", "voltage_v", "frequency_hz"}
SOURCE_FIELDS = {"id", "kind", "capacity_kw", "energy_kwh", "recharge_kw", "curve", "tms", "phase_deg"}
TAP_FIELDS = {"id", "unique_id", "address", "bus", "board", "role", "rack", "inputs", "impedance_ohm",
              "alternates", "monitors"}
RACK_ONLY = ("rack", "inputs", "impedance_ohm", "alternates")
RACK_FIELDS = {"id", "priority", "rated_kw", "group"}
FREQUENCIES = (50, 60)
UNIQUE_ID_HEX = 16  # 8 bytes (SPEC.md, "Payloads")
MAX_ALTERNATES = 3  # SET_ALTERNATES ranks three inputs per input lost


class TapRole(StrEnum):
    RACK = "rack"  # switches its rack between its inputs
    MONITOR = "monitor"  # fitted to one source, measures it; feeds no rack


class SiteFileError(ConfigurationError, ValueError):
    """A site file refused; `problems` lists every finding as `file:line: path: message`."""

    cause = "the site file: docs/site_file.md says what it holds"

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class TapRecord:
    """What commissioning needs to know of one tap, rack tap or monitor alike.

    `inputs` are source ids in input order (input 1 first); `alternates` maps an input
    number to the inputs ranked to take over when it is lost (SET_ALTERNATES)."""

    id: str
    role: TapRole
    address: int
    bus: str
    board: str
    unique_id: bytes | None = None  # None until the tap is discovered
    rack: str | None = None
    inputs: tuple[str, ...] = ()
    impedance_ohm: tuple[float | None, ...] = ()
    alternates: dict[int, tuple[int, ...]] = field(default_factory=dict)
    monitors: str | None = None

    @property
    def unique_id_hex(self) -> str | None:
        return None if self.unique_id is None else self.unique_id.hex()


@dataclass(frozen=True)
class SiteFile:
    """A parsed site file: the model, and what the model does not carry."""

    name: str
    voltage_v: float
    frequency_hz: int
    site: Site
    taps: tuple[TapRecord, ...]
    phase_deg: dict[str, float]  # source id -> phase angle as measured at the taps

    def tap(self, tap_id: str) -> TapRecord:
        return next(t for t in self.taps if t.id == tap_id)


class _Reader(FieldReader):
    """The scenarios' field reader, with problems in the `file:line: path: message` form."""

    def __init__(self, lines: dict[str, int], name: str) -> None:
        super().__init__(lines)
        self.name = name
        self.problem_lines: list[int] = []

    def problem(self, path: str, message: str) -> None:
        line = line_of(path, self.lines) or self.lines.get(f"{path}[0]")  # [[path]]: its first header
        where = f"{self.name}:{line}" if line else self.name
        self.problems.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")
        self.problem_lines.append(line or 0)

    def in_file_order(self) -> list[str]:
        """The problems by line, so that they read top to bottom like the file."""
        order = sorted(range(len(self.problems)), key=lambda i: self.problem_lines[i])
        return [self.problems[i] for i in order]

    def identifier(self, table: dict[str, Any], path: str, key: str = "id") -> str | None:
        value = self.string(table, key, path)
        if value is not None and not value.strip():
            self.problem(f"{path}.{key}", "must not be empty")
            return None
        return value


def load_site_file(path: Path | str) -> SiteFile:
    path = Path(path)
    return parse_site_file(path.read_text(), path.name)


def parse_site_file(text: str, name: str = "<site>") -> SiteFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SiteFileError([f"{name}: TOML syntax: {error}"]) from None
    reader = _Reader(key_lines(text), name)
    reader.table(data, "", SECTIONS)
    head = _head(reader, data.get("site"))
    sources, phases = _sources(reader, data)
    known_sources = _declared(data, "sources")
    racks = _racks(reader, data)
    taps = _taps(reader, data, known_sources, head["frequency_hz"])
    _tap_rack_links(reader, data, racks)
    if reader.problems:
        raise SiteFileError(reader.in_file_order())
    try:
        site = _model(head, sources, taps, racks)
    except SiteError as error:  # should not happen: every rule is checked above
        raise SiteFileError(f"{name}: {problem}" for problem in error.problems) from None
    return SiteFile(head["name"], head["voltage_v"], head["frequency_hz"], site, tuple(taps.values()), phases)


# -- [site] ----------------------------------------------------------------------------------

def _head(reader: _Reader, raw: Any) -> dict[str, Any]:
    if raw is None:
        reader.problem("site", "a [site] table is required")
        raw = {}
    table = reader.table(raw, "site", SITE_FIELDS)
    frequency = reader.integer(table, "frequency_hz", "site")
    if frequency is not None and frequency not in FREQUENCIES:
        reader.problem("site.frequency_hz", f"must be one of {', '.join(map(str, FREQUENCIES))} (got {frequency})")
        frequency = None
    return {
        "name": reader.identifier(table, "site", "name") or "site",
        "voltage_v": reader.number(table, "voltage_v", "site", minimum=0.0, strict=True) or 400.0,
        "frequency_hz": frequency,
    }


# -- [[sources]] -----------------------------------------------------------------------------

def _sources(reader: _Reader, data: dict[str, Any]) -> tuple[list[Source], dict[str, float]]:
    """Each source is built by the model, whose own problems are mapped to their field."""
    sources: list[Source] = []
    phases: dict[str, float] = {}
    items = reader.tables(data, "sources")
    if not items:
        reader.problem("sources", "at least one [[sources]] is required")
    for path, raw in items:
        table = reader.table(raw, path, SOURCE_FIELDS)
        source_id = reader.identifier(table, path)
        kind = reader.string(table, "kind", path, choices=tuple(k.value for k in SourceKind))
        capacity = reader.number(table, "capacity_kw", path)
        phase = reader.number(table, "phase_deg", path, minimum=-180.0, maximum=360.0)
        if source_id is None or kind is None or capacity is None or phase is None:
            continue
        values = {k: v for k, v in table.items() if k in SOURCE_FIELDS}
        try:
            sources.append(Source(**values))
        except SiteError as error:
            for problem in error.problems:
                key, _, message = problem.split(": ", 1)[1].partition(" ")
                reader.problem(f"{path}.{key}", message)
            continue
        phases[source_id] = phase
    _duplicate_ids(reader, data, "sources")
    return sources, phases


# -- [[racks]] -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _RackSpec:
    id: str
    priority: Priority
    rated_kw: float
    group: str


def _racks(reader: _Reader, data: dict[str, Any]) -> dict[str, _RackSpec]:
    racks: dict[str, _RackSpec] = {}
    for path, raw in reader.tables(data, "racks"):
        table = reader.table(raw, path, RACK_FIELDS)
        rack_id = reader.identifier(table, path)
        priority = reader.string(table, "priority", path, choices=tuple(p.value for p in Priority))
        rated = reader.number(table, "rated_kw", path, minimum=0.0, strict=True)
        group = reader.string(table, "group", path, "")
        if rack_id is None or priority is None or rated is None or group is None or rack_id in racks:
            continue
        racks[rack_id] = _RackSpec(rack_id, Priority(priority), rated, group)
    _duplicate_ids(reader, data, "racks")
    return racks


# -- [[taps]] --------------------------------------------------------------------------------

def _taps(reader: _Reader, data: dict[str, Any], sources: list[str], frequency: int | None) -> dict[str, TapRecord]:
    """Every tap's own fields, then what must be unique across taps."""
    taps: dict[str, TapRecord] = {}
    board_check = _BoardCheck(reader, frequency)
    items = reader.tables(data, "taps")
    if not items:
        reader.problem("taps", "at least one [[taps]] is required")
    for path, raw in items:
        record = _tap(reader, path, reader.table(raw, path, TAP_FIELDS), sources, board_check)
        if record is not None and record.id not in taps:
            taps[record.id] = record
    _duplicate_ids(reader, data, "taps")
    _unique_across_taps(reader, items)
    return taps


def _unique_across_taps(reader: _Reader, items: list[tuple[str, Any]]) -> None:
    """No two taps share an address on one bus segment, nor a unique id. Read from the
    raw tables, so that a clash is found even where a tap has other problems."""
    addresses: list[tuple[str, str, object, str]] = []
    unique_ids: list[tuple[str, str, object, str]] = []
    for path, raw in items:
        if not isinstance(raw, dict):
            continue
        address, bus, unique_id = raw.get("address"), raw.get("bus"), raw.get("unique_id")
        if isinstance(address, int) and isinstance(bus, str):
            addresses.append((path, "address", (bus, address), f"address {address} on bus {bus!r}"))
        if isinstance(unique_id, str) and len(unique_id) == UNIQUE_ID_HEX:
            unique_ids.append((path, "unique_id", unique_id.lower(), f"unique id {unique_id.lower()}"))
    _unique(reader, addresses)
    _unique(reader, unique_ids)


def _tap(reader: _Reader, path: str, table: dict[str, Any], sources: list[str],
         board_check: _BoardCheck) -> TapRecord | None:
    tap_id = reader.identifier(table, path)
    role = reader.string(table, "role", path, choices=tuple(r.value for r in TapRole))
    address = reader.integer(table, "address", path, minimum=catalog.ADDR_TAP_MIN, maximum=catalog.ADDR_TAP_MAX)
    bus = reader.identifier(table, path, "bus")
    board = reader.identifier(table, path, "board")
    if board is not None:
        board_check(board, f"{path}.board")
    unique_id = _unique_id(reader, table, path)
    if role is None:  # without a valid role, which fields belong is unknown: they are not checked
        return None
    if role == TapRole.MONITOR:
        for key in [k for k in RACK_ONLY if k in table]:
            reader.problem(f"{path}.{key}", "a monitor tap has no inputs and feeds no rack: remove it")
        monitors = _source_ref(reader, table, "monitors", path, sources)
        rack_fields: dict[str, Any] = {"monitors": monitors}
        complete = monitors is not None
    else:
        if "monitors" in table:
            reader.problem(f"{path}.monitors", "is for monitor taps only (role is 'rack')")
        rack_fields = _rack_tap_fields(reader, table, path, sources)
        complete = None not in rack_fields.values()
    if tap_id is None or address is None or bus is None or board is None or not complete:
        return None
    return TapRecord(tap_id, TapRole(role), address, bus, board, unique_id, **rack_fields)


def _unique_id(reader: _Reader, table: dict[str, Any], path: str) -> bytes | None:
    value = reader.string(table, "unique_id", path, None)
    if value is None:
        return None
    try:
        if len(value) != UNIQUE_ID_HEX:
            raise ValueError
        return bytes.fromhex(value)
    except ValueError:
        reader.problem(f"{path}.unique_id", f"must be {UNIQUE_ID_HEX} hex digits (8 bytes), e.g. "
                       f"'e6613852a1b2c3d4' (got {value!r})")
        return None


def _rack_tap_fields(reader: _Reader, table: dict[str, Any], path: str, sources: list[str]) -> dict[str, Any]:
    rack = reader.identifier(table, path, "rack")
    inputs = _inputs(reader, table, path, sources)
    count = len(inputs) if inputs is not None else None
    impedance = _impedances(reader, table, path, count)
    alternates = _alternates(reader, table, path, inputs)
    return {"rack": rack, "inputs": inputs, "impedance_ohm": impedance, "alternates": alternates}


def _inputs(reader: _Reader, table: dict[str, Any], path: str, sources: list[str]) -> tuple[str, ...] | None:
    raw = reader.value(table, "inputs", path, list, REQUIRED, "a list of source ids, input 1 first")
    if raw is None:
        return None
    where = f"{path}.inputs"
    if not MIN_INPUTS <= len(raw) <= MAX_INPUTS:
        reader.problem(where, f"a tap has {MIN_INPUTS} to {MAX_INPUTS} inputs (got {len(raw)})")
    good = True
    for i, source in enumerate(raw):
        if not isinstance(source, str):
            reader.problem(f"{where}[{i}]", f"must be a source id (got {source!r})")
            good = False
        elif source not in sources:
            reader.problem(f"{where}[{i}]", f"unknown source {source!r}{_known(source, sources)}")
            good = False
        elif source in raw[:i]:
            reader.problem(f"{where}[{i}]", f"source {source!r} is already input {raw.index(source) + 1}")
            good = False
    return tuple(raw) if good and MIN_INPUTS <= len(raw) <= MAX_INPUTS else None


def _impedances(reader: _Reader, table: dict[str, Any], path: str,
                count: int | None) -> tuple[float | None, ...] | None:
    """Each input's path impedance in ohms per phase; unknown (None) when not given."""
    if "impedance_ohm" not in table:
        return (None,) * (count or 0)
    raw = reader.value(table, "impedance_ohm", path, list, REQUIRED, "a list of numbers, one per input")
    if raw is None:
        return None
    good = True
    for i, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            reader.problem(f"{path}.impedance_ohm[{i}]", f"must be a number >= 0 (got {value!r})")
            good = False
    if count is not None and len(raw) != count:
        reader.problem(f"{path}.impedance_ohm", f"must have one value per input ({count}, got {len(raw)})")
        return None
    return tuple(float(v) for v in raw) if good else None


def _alternates(reader: _Reader, table: dict[str, Any], path: str,
                inputs: tuple[str, ...] | None) -> dict[int, tuple[int, ...]] | None:
    """`{ lost-source = [taker, ...] }` by source id, turned into input numbers."""
    if "alternates" not in table:
        return {}
    raw = reader.value(table, "alternates", path, dict, REQUIRED,
                       "a table: source id = [source ids to take over, best first]")
    if raw is None or inputs is None:
        return None if raw is None else {}
    result: dict[int, tuple[int, ...]] = {}
    for lost, takers in raw.items():
        where = f"{path}.alternates.{lost}"
        if lost not in inputs:
            reader.problem(where, f"{lost!r} is not an input of this tap (inputs: {', '.join(inputs)})")
            continue
        if (not isinstance(takers, list) or not 1 <= len(takers) <= MAX_ALTERNATES
                or not all(isinstance(t, str) for t in takers)):
            reader.problem(where, f"must be a list of 1 to {MAX_ALTERNATES} source ids (got {takers!r})")
            continue
        bad = [t for t in takers if t not in inputs or t == lost]
        for taker in bad:
            reader.problem(where, f"{taker!r} is not another input of this tap (inputs: {', '.join(inputs)})")
        if len(set(takers)) != len(takers):
            reader.problem(where, "names a source twice")
        elif not bad:
            result[inputs.index(lost) + 1] = tuple(inputs.index(t) + 1 for t in takers)
    return result


def _source_ref(reader: _Reader, table: dict[str, Any], key: str, path: str, sources: list[str]) -> str | None:
    value = reader.string(table, key, path)
    if value is not None and value not in sources:
        reader.problem(f"{path}.{key}", f"unknown source {value!r}{_known(value, sources)}")
        return None
    return value


class _BoardCheck:
    """Each board named is loaded once: it must exist in boards/, pass its own
    validation, and be built for the site's frequency."""

    def __init__(self, reader: _Reader, frequency: int | None) -> None:
        self.reader = reader
        self.frequency = frequency
        self.results: dict[str, str | None] = {}

    def __call__(self, name: str, where: str) -> None:
        if name not in self.results:
            self.results[name] = self._check(name)
        if self.results[name] is not None:
            self.reader.problem(where, str(self.results[name]))

    def _check(self, name: str) -> str | None:
        known = sorted(p.stem for p in boards.BOARDS_DIR.glob("*.toml"))
        if name not in known:
            return f"unknown board {name!r}{_known(name, known)}"
        try:
            board = boards.by_name(name)
        except boards.BoardError as error:
            return f"board {name!r} is refused by its own validation: {'; '.join(error.problems)}"
        nominal = board.raw["adc"]["nominal_hz"]
        if self.frequency is not None and nominal != self.frequency:
            return f"board {name!r} is built for {nominal} Hz, the site is {self.frequency} Hz"
        return None


# -- across sections -------------------------------------------------------------------------

def _tap_rack_links(reader: _Reader, data: dict[str, Any], racks: dict[str, _RackSpec]) -> None:
    """Every rack has exactly one tap, and every rack tap names a rack of the file.

    Read from the raw tables, so that a tap with problems of its own still counts as
    the tap of the rack it names, and its rack is not also reported as having none."""
    declared = _declared(data, "racks")
    served: dict[str, int] = {}
    raw_taps = data.get("taps", [])
    for i, tap in enumerate(raw_taps if isinstance(raw_taps, list) else []):
        if not isinstance(tap, dict) or not isinstance(tap.get("rack"), str) or tap.get("role") == TapRole.MONITOR:
            continue
        rack = tap["rack"]
        if rack not in declared:
            reader.problem(f"taps[{i}].rack", f"unknown rack {rack!r}{_known(rack, declared)}")
        elif rack in served:
            reader.problem(f"taps[{i}].rack", f"rack {rack!r} already has a tap (taps[{served[rack]}]): "
                           "a rack has exactly one tap")
        else:
            served[rack] = i
    for i, rack_id in _indexed(data, "racks"):
        if rack_id not in served and rack_id in racks:
            reader.problem(f"racks[{i}]", f"rack {rack_id!r} has no tap (no [[taps]] has rack = {rack_id!r})")
            served[rack_id] = -1  # a duplicate rack id is reported once, as a duplicate


def _model(head: dict[str, Any], sources: list[Source], taps: dict[str, TapRecord],
           racks: dict[str, _RackSpec]) -> Site:
    rack_taps = [t for t in taps.values() if t.role == TapRole.RACK]
    by_rack = {t.rack: t.id for t in rack_taps}
    return Site(
        sources=tuple(sources),
        taps=tuple(Tap(t.id, len(t.inputs)) for t in rack_taps),
        racks=tuple(Rack(r.id, by_rack[r.id], r.priority, r.rated_kw, r.group) for r in racks.values()),
        feeds=tuple(Feed(t.id, n, source, impedance or 0.0)
                    for t in rack_taps
                    for n, (source, impedance) in enumerate(zip(t.inputs, t.impedance_ohm, strict=True), start=1)),
        name=head["name"],
        voltage_v=head["voltage_v"],
        frequency_hz=head["frequency_hz"],
    )


def _indexed(data: dict[str, Any], key: str) -> list[tuple[int, str]]:
    raw = data.get(key, [])
    items = raw if isinstance(raw, list) else []
    return [(i, t["id"]) for i, t in enumerate(items) if isinstance(t, dict) and isinstance(t.get("id"), str)]


def _declared(data: dict[str, Any], key: str) -> list[str]:
    """Every id declared in a section, whether or not its item has problems of its own,
    so that references to it are not reported too."""
    return list(dict.fromkeys(item_id for _, item_id in _indexed(data, key)))


def _duplicate_ids(reader: _Reader, data: dict[str, Any], key: str) -> None:
    first: dict[str, int] = {}
    for i, item_id in _indexed(data, key):
        if item_id in first:
            reader.problem(f"{key}[{i}].id", f"{item_id!r} is used twice (first at {key}[{first[item_id]}])")
        else:
            first[item_id] = i


def _unique(reader: _Reader, items: list[tuple[str, str, object, str]]) -> None:
    """A problem at every later item whose value an earlier one has already."""
    first: dict[object, str] = {}
    for path, key, value, label in items:
        if value in first:
            reader.problem(f"{path}.{key}", f"{label} is already used by {first[value]}")
        else:
            first[value] = path


def _known(value: str, known: list[str]) -> str:
    """` (known: a, b)`, led by the closest match when there is one."""
    if not known:
        return " (none declared)"
    shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    close = difflib.get_close_matches(value, known, n=1)
    return f" (did you mean {close[0]!r}? known: {shown})" if close else f" (known: {shown})"
