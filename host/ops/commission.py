"""Commissioning: find new taps on a bus, give each its address and settings, and prove
that its inputs are wired to the sources the site file says.

Proving the wiring is the point of doing it at commissioning. A pair of feeds swapped
at the terminals looks healthy in every reading of its own; it shows only as a phase
that belongs to another source, and if nobody looks, it shows first during a failover,
when the rack lands on the source it was meant to leave. So, before a tap is marked
commissioned, every input must read the voltage and frequency of the site and the phase
of its source (`phase_deg` in the site file).

A tap measures phases relative to its input 1, so the absolute angle is not known: the
check tries each source's angle as input 1's and keeps the reading of the wiring that
explains the most inputs by the tap's own sources, then by any source of the site, then
the most inputs as the site file claims them. A swap then reads as "input 1 reads the phase of ups-2
(-120°), the site file says ups-1 (0°)". Sources of equal phase (a UPS and a battery on
one line) cannot be told apart by phase; voltage and frequency are all that is checked
between them.

Order of commissioning one tap: ASSIGN_ADDRESS by unique id (broadcast, epoch 0, as a
fresh tap expects; skipped when the tap already answers at its address as that unique
id), RAISE_EPOCH to the controller's, SET_LIMITS, SET_ALTERNATES, prove the wiring, and
only then `mark_commissioned` in the inventory. Every signed command is journalled.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from host.client.discovery import SCOPE_ALL, SCOPE_UNADDRESSED, scan
from host.client.replies import Telemetry
from host.client.tap_errors import TapError, TapRefused, TapTimeout
from host.model.site_file import SiteFileError, TapRole, load_site_file
from host.ops import failover, operate, protection_limits
from host.ops.session import OperatorError, Session, tap_address
from host.ops.tolerances import FREQUENCY_TOLERANCE_HZ, PHASE_TOLERANCE_DEG, VOLTAGE_TOLERANCE
from host.store.records import InventoryError, TapInfo, UnknownTap
from protocol import catalog

MEASURE_DEADLINE_S = 30.0  # wall clock for every input to be measured (a loaded machine runs the rig slowly)
READINGS = 3  # telemetry reads whose median is judged


# -- scanning -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A tap that answered DISCOVER, and what the inventory knows of its unique id."""

    unique_id: str
    board: str
    role: int
    n_inputs: int
    address: int | None  # None: no address yet (answered from 254)
    tap: str | None  # the inventory's tap of that unique id
    commissioned: bool


VIRTUAL_ANSWER_ALLOWANCE_S = 1.5


def scan_bus(session: Session, segment: str, *, every_tap: bool = False, slots: int = 16) -> list[Found]:
    """DISCOVER on bus A of the segment, splitting ranges on collisions (host/client/tap_client.py `scan`)."""
    listener = session.transports(segment)["A"]
    slot_ms = max(5, math.ceil(36 * 10 / listener.settings.baudrate * 1000 * 1.5 + 1))
    # a sim tap keeps its slot on its own clock, which falls behind the wall clock on a loaded
    # machine: on a virtual rig the host listens longer for the last slot's answer
    extra = VIRTUAL_ANSWER_ALLOWANCE_S if session.ports_for(segment).virtual else None
    result = scan(listener, scope=SCOPE_ALL if every_tap else SCOPE_UNADDRESSED, slots=slots, slot_ms=slot_ms,
                  extra_s=extra)
    if result.unresolved:
        raise OperatorError(f"discovery left {len(result.unresolved)} unique-id ranges unresolved (a noisy bus?): "
                            "scan again")
    found: list[Found] = []
    for uid, answer in sorted(result.found.items()):
        tap = _tap_by_uid(session, uid)
        address = None if answer.src == catalog.ADDR_UNASSIGNED else answer.src
        found.append(Found(uid.hex(), answer.board, int(answer.role), int(answer.n_inputs), address,
                           tap.id if tap else None, bool(tap and tap.commissioned_at is not None)))
    return found


def _tap_by_uid(session: Session, uid: bytes) -> TapInfo | None:
    try:
        return session.inventory.tap(uid)
    except UnknownTap:
        return None


# -- proving the wiring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputReading:
    """One input as measured: RMS volts, hertz, degrees relative to input 1, state bits."""

    input: int
    voltage_v: float
    frequency_hz: float
    phase_deg: float
    state: int


def readings(telemetry: Telemetry) -> list[InputReading]:
    return [InputReading(k, i["voltage_mV"] / 1000, i["frequency_cHz"] / 100, i["phase_cdeg"] / 100, i["state"])
            for k, i in enumerate(telemetry.inputs, start=1)]


def _angle(a: float, b: float) -> float:
    """|a - b| on the circle, degrees."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def prove_wiring(measured: list[InputReading], claimed: list[str], phases: dict[str, float], nominal_v: float,
                 hz: float, tolerance_deg: float = PHASE_TOLERANCE_DEG) -> list[str]:
    """What is wrong with the wiring, one line per finding; empty when it is as the site says.

    `claimed` are the source ids of inputs 1..n as the site file says; `phases` every
    site source's phase. Voltage and frequency are judged per input; phase as described
    in the module docstring."""
    problems: list[str] = []
    if len(measured) != len(claimed):
        return [f"the tap reports {len(measured)} inputs, the site file gives it {len(claimed)}"]
    live: list[InputReading] = []
    for reading, source in zip(measured, claimed, strict=True):
        where = f"input {reading.input} ({source})"
        if not reading.state & catalog.INPUT_PRESENT or reading.voltage_v < nominal_v * 0.5:
            problems.append(f"{where} reads no voltage ({reading.voltage_v:.0f} V): is it connected and the "
                            "source running?")
            continue
        if abs(reading.voltage_v - nominal_v) > nominal_v * VOLTAGE_TOLERANCE:
            problems.append(f"{where} reads {reading.voltage_v:.1f} V, the site's phase voltage is {nominal_v:.1f} V "
                            f"(±{VOLTAGE_TOLERANCE:.0%})")
        if abs(reading.frequency_hz - hz) > FREQUENCY_TOLERANCE_HZ:
            problems.append(f"{where} reads {reading.frequency_hz:.2f} Hz, the site is {hz:g} Hz")
        live.append(reading)
    if len(live) < 2 or measured[0] not in live:
        return problems  # phases are relative to input 1: nothing to compare
    problems += _phase_findings(live, claimed, phases, tolerance_deg)
    return problems


def _phase_findings(live: list[InputReading], claimed: list[str], phases: dict[str, float],
                    tolerance_deg: float) -> list[str]:
    def sources_at(angle: float) -> list[str]:
        return [s for s, p in phases.items() if _angle(angle, p) <= tolerance_deg]

    best: tuple[int, int, int, bool] | None = None
    best_offset = phases[claimed[0]]
    for offset in dict.fromkeys([phases[claimed[0]], *phases.values()]):
        own = sum(1 for r in live if set(sources_at(r.phase_deg + offset)) & set(claimed))
        mapped = sum(1 for r in live if sources_at(r.phase_deg + offset))
        matched = sum(1 for r in live if _angle(r.phase_deg + offset, phases[claimed[r.input - 1]]) <= tolerance_deg)
        score = (own, mapped, matched, offset == phases[claimed[0]])
        if best is None or score > best:
            best, best_offset = score, offset
    findings: list[str] = []
    for reading in live:
        source = claimed[reading.input - 1]
        angle = _wrap(reading.phase_deg + best_offset)
        if _angle(angle, phases[source]) <= tolerance_deg:
            continue
        candidates = sources_at(angle)
        ours = [s for s in candidates if s in claimed] or candidates
        what = (f"the phase of {' or '.join(ours)} ({_deg(phases[ours[0]])})" if ours
                else f"a phase of {_deg(angle)}, which no source of the site has")
        findings.append(f"input {reading.input} reads {what}, the site file says {source} ({_deg(phases[source])})")
    return findings


def _wrap(angle: float) -> float:
    return (angle + 180.0) % 360.0 - 180.0


def _deg(angle: float) -> str:
    return f"{_wrap(angle):g}°"


def measure_inputs(session: Session, tap: TapInfo, deadline_s: float = MEASURE_DEADLINE_S) -> list[InputReading]:
    """The tap's inputs once every present input has a frequency (phases need it), as the
    median of a few reads; after the deadline, whatever is measured."""
    client = session.client(tap.bus)
    address = tap_address(tap)
    deadline = time.monotonic() + deadline_s
    while True:
        telemetry = operate.patiently(lambda: client.telemetry(address), deadline)
        ready = all(i["frequency_cHz"] > 0 for i in telemetry.inputs if i["state"] & catalog.INPUT_PRESENT)
        if ready or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    samples = [readings(telemetry)]
    for _ in range(READINGS - 1):
        time.sleep(0.1)
        samples.append(readings(operate.patiently(lambda: client.telemetry(address), deadline + 10)))
    return [
        InputReading(k + 1, statistics.median(s[k].voltage_v for s in samples),
                     statistics.median(s[k].frequency_hz for s in samples),
                     _circular_median([s[k].phase_deg for s in samples]), samples[-1][k].state)
        for k in range(len(samples[0]))
    ]


def _circular_median(angles: list[float]) -> float:
    """The median of angles around the first one (a phase near ±180° must not average to 0)."""
    ref = angles[0]
    return _wrap(ref + statistics.median(_wrap(a - ref) for a in angles))


# -- commissioning -----------------------------------------------------------------------------------


@dataclass
class CommissionReport:
    tap: str
    ok: bool
    address: int | None = None
    unique_id: str | None = None
    steps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def commission_tap(session: Session, tap_ref: str, unique_id: bytes | None = None,
                   limits: dict[str, int] | None = None) -> CommissionReport:
    """Commission one tap; the report says what was done and, if not ok, why the tap was
    not marked commissioned. OperatorError for what stops it before anything is sent."""
    tap = session.tap(tap_ref)
    uid = unique_id or tap.unique_id
    if uid is None:
        raise OperatorError(f"tap {tap.id}: no unique id known: run `ibt scan` and give the new tap's with "
                            "--unique-id (or put it in the site file)")
    if tap.unique_id is not None and tap.unique_id != uid:
        raise OperatorError(f"tap {tap.id} is unique id {tap.unique_id.hex()} in the inventory, not {uid.hex()}: "
                            "a replaced board needs the site file updated first")
    address = tap_address(tap)
    settings = limits or protection_limits.default_limits(session, tap)
    protection_limits.check_limits(session, tap, settings)  # before anything is sent
    report = CommissionReport(tap.id, False, address, uid.hex())
    try:
        _address(session, tap, uid, report)
        session.align_epoch(tap, session.client(tap.bus).identify(address).epoch)
        report.steps.append(f"epoch {session.epoch}")
        if tap.role == TapRole.RACK:
            protection_limits.send_limits(session, tap, settings)
            report.steps.append("limits set")
            for for_input, ranked in sorted(tap.alternates.items()):
                failover.send_alternates(session, tap, for_input, ranked)
            report.steps.append(f"alternates set for {len(tap.alternates)} inputs")
            _prove(session, tap, report)
    except (TapError, OperatorError) as exc:
        report.problems.append(_one_line(exc))
    if report.problems:
        return report
    try:
        session.inventory.mark_commissioned(tap.id, address, unique_id=uid)
        identity = session.client(tap.bus).identify(address)
        session.inventory.set_firmware(tap.id, identity.firmware)
    except (InventoryError, TapError) as exc:
        report.problems.append(_one_line(exc))
        return report
    report.steps.append("marked commissioned")
    report.ok = True
    return report


def _address(session: Session, tap: TapInfo, uid: bytes, report: CommissionReport) -> None:
    """ASSIGN_ADDRESS unless the tap already answers at its address as that unique id."""
    client = session.client(tap.bus)
    address = tap_address(tap)
    try:
        identity = client.identify(address)
    except TapTimeout:
        identity = None
    if identity is not None:
        if identity.unique_id != uid:
            raise OperatorError(f"address {address} already answers as unique id {identity.unique_id.hex()}, "
                                f"not {uid.hex()}: two taps would share it; check the site file")
        report.steps.append(f"already at address {address}")
        return
    fields = {"unique_id": uid, "address": address}
    with session.epoch_of(tap.bus, 0) as fresh:  # a fresh tap is in epoch 0 (SPEC.md, "Discovery")
        session.command(tap, "ASSIGN_ADDRESS", fields, lambda: fresh.assign_address(uid, address))
    report.steps.append(f"address {address} assigned")


def _prove(session: Session, tap: TapInfo, report: CommissionReport) -> None:
    site = session.inventory.site() or {}
    nominal_v = float(site.get("voltage_v", 400.0)) / math.sqrt(3)
    hz = float(site.get("frequency_hz", 50))
    phases = {s["id"]: float(s["phase_deg"]) for s in session.inventory.sources()}
    measured = measure_inputs(session, tap)
    report.inputs = [asdict(r) | {"source": s} for r, s in zip(measured, tap.inputs, strict=False)]
    findings = prove_wiring(measured, list(tap.inputs), phases, nominal_v, hz)
    if findings:
        report.problems += [f"wiring: {line}" for line in findings]
    else:
        report.steps.append(f"wiring proved on {len(measured)} inputs")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, TapRefused):
        return f"{exc.request} refused: {exc.name} (detail {exc.detail})"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def commission_site(session: Session, site_path: Path, *, say: Callable[[str], None] = lambda line: None,
                    progress: Callable[[str, int, int], None] = lambda tap, done, total: None
                    ) -> list[CommissionReport]:
    """Import the site file into the inventory, then commission its taps one by one; a
    tap that fails is reported and the next one is tried. A tap the site file gives no
    unique id is then found by a scan of its segment (`_identify_new_taps`). `say` gets
    what the scan found, `progress` (tap id, taps done, taps in all) as each tap starts."""
    try:
        parsed = load_site_file(site_path)
    except OSError as exc:
        raise OperatorError(f"cannot read site file {site_path}: {exc.strerror}") from None
    except SiteFileError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        raise OperatorError(f"site file refused: {exc.problems[0]}{more}") from None
    try:
        session.inventory.import_site(parsed)
    except InventoryError as exc:
        raise OperatorError(f"site file not imported: {exc}") from None
    reports: list[CommissionReport] = []
    for done, record in enumerate(parsed.taps):
        progress(record.id, done, len(parsed.taps))
        try:
            reports.append(commission_tap(session, record.id))
        except OperatorError as exc:
            reports.append(CommissionReport(record.id, False, record.address, record.unique_id_hex,
                                            problems=[str(exc)]))
    return _identify_new_taps(session, reports, say)


def _identify_new_taps(session: Session, reports: list[CommissionReport],
                       echo: Callable[[str], None]) -> list[CommissionReport]:  # fmt: skip
    """A tap the site file gives no unique id (as a real site leaves a new tap's out) is
    found with DISCOVER (`ibt scan`) and commissioned by the id it reports, when the scan
    leaves no doubt which tap it is: one such tap and one new tap on its segment."""
    out = list(reports)
    for i, report in enumerate(reports):
        tap = session.tap(report.tap)
        if report.ok or tap.unique_id is not None:
            continue
        new = [f for f in scan_bus(session, tap.bus) if f.tap is None and f.address is None]
        echo(f"scan of {tap.bus}: {len(new)} new tap(s) without an address"
             + "".join(f", unique id {f.unique_id} ({f.board}, {f.n_inputs} inputs)" for f in new))
        if len(new) != 1:
            continue  # which is which is the operator's call (the label on the board)
        out[i] = commission_tap(session, report.tap, bytes.fromhex(new[0].unique_id))
    return out

