"""Operating commissioned taps: read their state, switch a rack, set protection and
failover order, read events, calibrate, capture waveforms.

SWITCH is the move primitive the controller's executor stages, so it is careful in the
order the protocol allows: everything that can be known before sending is checked
first (the target is one of the tap's inputs, present, healthy, within the site's
voltage and frequency, showing the phase its source should have relative to the active
input, and its source has room for the rack), and a failed check sends nothing. Then the
compare-and-swap SWITCH on the input STATUS reported, journalled in the inventory; then
STATUS until the target is active, and TELEMETRY for its relay's feedback.

Protection settings are checked against the board before they are sent: the tap itself
refuses some values (SPEC.md, SET_LIMITS), but a setting can be within what the tap
accepts and still not coordinate with the parts: a pickup the input's fuse would beat,
an instantaneous pickup above what the relay can break, a voltage limit beyond what the
ADC measures. "The current limits" are what the tap runs on, read back with
READ_SETTINGS; only when the tap cannot be asked (no bus given, no answer, a firmware
older than protocol minor 1) are they the last SET_LIMITS it acknowledged, from the
inventory's command history, and the answer says so.

Calibration is applied at the tap (SET_CALIBRATION, SPEC.md): `calibrate` reads the
calibration in force (READ_SETTINGS) and the tap's readings, turns each reading back
into the channel's raw RMS in ADC counts, fits gain and offset of the raw values against
the reference readings (one point: a gain; two or more, kept in the controller's state
across calls: least squares), sends them signed and journalled, and then reads
TELEMETRY again until the tap's reading matches the reference within the ADC's
resolution. Status readings are therefore calibrated by the tap itself.
"""

from __future__ import annotations

import datetime
import functools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from host.client.tap_client import Reply, Settings, TapClient, TapRefused, TapTimeout, Telemetry
from host.model import boards
from host.model.site_file import TapRole
from host.ops import events as tap_events
from host.ops.session import OperatorError, Session, tap_address
from host.ops.tolerances import FREQUENCY_TOLERANCE_HZ, PHASE_TOLERANCE_DEG, SLIP_TOLERANCE_HZ, VOLTAGE_TOLERANCE
from host.store.inventory import CommandState, EventCursor, TapInfo
from protocol import catalog

T = TypeVar("T")

LIMIT_FIELDS = ("curve", "pickup_mA", "tms_milli", "instantaneous_mA", "undervoltage_mV", "overvoltage_mV",
                "frequency_low_cHz", "frequency_high_cHz", "thd_max_dpct")
PROTECTION_NAMES = {catalog.PROT_NORMAL: "normal", catalog.PROT_PICKUP: "pickup", catalog.PROT_TRIPPED: "tripped",
                    catalog.PROT_LOCKOUT: "lockout", catalog.PROT_DOWNSTREAM_FAULT: "downstream fault",
                    catalog.PROT_CHATTER: "chatter"}
ALARM_NAMES = {catalog.ALARM_HOST_LOST: "host lost", catalog.ALARM_OVERTEMPERATURE: "over-temperature",
               catalog.ALARM_RELAY_MISMATCH: "relay mismatch", catalog.ALARM_AUTH_FAILURES: "auth failures",
               catalog.ALARM_NO_HEALTHY_ALTERNATE: "no healthy alternate", catalog.ALARM_UNCALIBRATED: "uncalibrated",
               catalog.ALARM_BUS_A_SILENT: "bus A silent", catalog.ALARM_BUS_B_SILENT: "bus B silent"}
EVENT_NAMES = {catalog.EV_BOOT: "boot", catalog.EV_SOURCE_LOST: "source lost", catalog.EV_TRANSFER: "transfer",
               catalog.EV_OVERLOAD_TRIP: "overload trip", catalog.EV_LOCKOUT: "lockout",
               catalog.EV_DOWNSTREAM_FAULT: "downstream fault", catalog.EV_COMMAND: "command",
               catalog.EV_AUTH_FAILURE: "auth failure", catalog.EV_HOST_LOST: "host lost",
               catalog.EV_RELAY_MISMATCH: "relay mismatch"}
SWITCH_CONFIRM_S = 15.0  # wall clock for STATUS to show the transfer done
PATIENCE_S = 20.0
CAPTURE_CHUNK = 240
HARMONICS = 15
CALIBRATION_SETTLE_S = 2  # tap uptime to let pass after SET_CALIBRATION: at least 1 s of new meter windows
CALIBRATION_READ_GAP_S = 0.2  # between the TELEMETRY reads of a calibration: a new meter window (10 cycles) each
# The firmware's own defaults (firmware/protection.py Settings), for a tap never set by the host.
FIRMWARE_DEFAULT_LIMITS = {"curve": 1, "pickup_mA": 32000, "tms_milli": 100, "instantaneous_mA": 320000,
                           "undervoltage_mV": 195500, "overvoltage_mV": 264500, "frequency_low_cHz": 4750,
                           "frequency_high_cHz": 5250, "thd_max_dpct": 80}


def patiently(call: Callable[[], T], deadline: float | None = None) -> T:
    """A read repeated while it times out, until the deadline (a read is idempotent)."""
    end = deadline if deadline is not None else time.monotonic() + PATIENCE_S
    while True:
        try:
            return call()
        except TapTimeout:
            if time.monotonic() > end:
                raise


def _names(bits: int, names: dict[int, str]) -> list[str]:
    return [name for bit, name in names.items() if bits & bit]


def source_of(tap: TapInfo, k: int) -> str | None:
    """The source wired to input k of the tap, None if it has no such input."""
    return tap.inputs[k - 1] if 1 <= k <= len(tap.inputs) else None


def _site_nominal(session: Session) -> tuple[float, float]:
    site = session.inventory.site() or {}
    return float(site.get("voltage_v", 400.0)) / math.sqrt(3), float(site.get("frequency_hz", 50))


# -- status and monitor ------------------------------------------------------------------------------


def tap_status(session: Session, tap: TapInfo) -> dict[str, Any]:
    """STATUS and TELEMETRY of one tap as plain data; `error` says why not when it did not answer."""
    out: dict[str, Any] = {"tap": tap.id, "address": tap.address, "rack": tap.rack, "bus": tap.bus,
                           "commissioned": tap.commissioned_at is not None}
    try:
        client = session.client(tap.bus)
        status = client.status(tap_address(tap))
        telemetry = client.telemetry(tap_address(tap))
    except (TapTimeout, TapRefused) as exc:
        return out | {"read_at": _now_iso(), "error": str(exc)}
    out["read_at"] = _now_iso()  # when these values were read: a monitor's rows are a time series
    active = status.active_input
    out |= {
        "active_input": active, "active_source": source_of(tap, active),
        "relays_closed": [k for k in range(1, 9) if status.relays_closed & (1 << (k - 1))],
        "protection": PROTECTION_NAMES.get(status.protection, str(status.protection)),
        "alarms": _names(status.alarms, ALARM_NAMES), "epoch": status.epoch,
        "alternates": [status[f"alternate_{i}"] for i in (1, 2, 3) if status[f"alternate_{i}"]],
        "current_a": telemetry["current_mA"] / 1000, "power_kw": telemetry["power_W"] / 1000,
        "transfers": telemetry["transfers"], "trips": telemetry["trips"], "uptime_s": telemetry["uptime_s"],
        "inputs": [{"input": k, "source": source_of(tap, k), "voltage_v": i["voltage_mV"] / 1000,
                    "frequency_hz": i["frequency_cHz"] / 100, "phase_deg": i["phase_cdeg"] / 100,
                    "thd_pct": i["thd_dpct"] / 10,
                    "present": bool(i["state"] & catalog.INPUT_PRESENT),
                    "healthy": bool(i["state"] & catalog.INPUT_HEALTHY),
                    # the values are from a window across the last change of `present` (SPEC.md)
                    "settling": bool(i["state"] & catalog.INPUT_SETTLING)}
                   for k, i in enumerate(telemetry.inputs, start=1)],
        "error": None,
    }
    return out


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def status(session: Session, tap_refs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every named tap (default: every commissioned tap) as `tap_status` reports it."""
    taps = [session.tap(ref) for ref in tap_refs] or [t for t in session.inventory.taps()
                                                       if t.commissioned_at is not None]
    if not taps:
        raise OperatorError("no commissioned taps in the inventory: name a tap, or commission the site first")
    return [tap_status(session, tap) for tap in taps]


def render_status(rows: list[dict[str, Any]]) -> str:
    """The status table as text, one line per tap and one per input."""
    lines = []
    for row in rows:
        head = f"{row['tap']:<12} addr {row['address']!s:>3}"
        if row.get("error"):
            lines.append(f"{head}  unreachable: {row['error']}")
            continue
        alarms = ", ".join(row["alarms"]) or "none"
        lines.append(f"{head}  on input {row['active_input']} ({row['active_source'] or 'open'})  "
                     f"{row['power_kw']:.2f} kW {row['current_a']:.1f} A  protection {row['protection']}  "
                     f"alarms {alarms}")
        for i in row["inputs"]:
            state = "healthy" if i["healthy"] else "present" if i["present"] else "ABSENT"
            if i.get("settling"):
                state += " (values settling)"
            lines.append(f"    input {i['input']} {i['source'] or '?':<10} {i['voltage_v']:7.1f} V "
                         f"{i['frequency_hz']:6.2f} Hz {i['phase_deg']:8.2f}°  THD {i['thd_pct']:4.1f}%  {state}")
    return "\n".join(lines)


def monitor(session: Session, tap_refs: Sequence[str], emit: Callable[[list[dict[str, Any]]], None], *,
            interval_s: float = 1.0, count: int | None = None) -> int:
    """Read status every `interval_s` and hand it to `emit`, `count` times (None: until
    interrupted); returns how many rounds ran."""
    rounds = 0
    while count is None or rounds < count:
        started = time.monotonic()
        emit(status(session, tap_refs))
        rounds += 1
        if count is not None and rounds >= count:
            break
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    return rounds


# -- events -------------------------------------------------------------------------------------------


def fetch_events(session: Session, tap: TapInfo) -> list[dict[str, Any]]:
    """Every event the tap logged since the last read, right across its reboots
    (host/ops/events.py); stored with where the read ended, and returned. Events the tap
    overwrote before we read them are counted as lost."""
    client = session.client(tap.bus)
    address = tap_address(tap)
    boot_count = patiently(lambda: client.status(address)).fields.get("boot_count")
    cursor = session.inventory.event_cursor(tap.id) or EventCursor(boot=boot_count or 1)
    batch = tap_events.read_new(lambda since, count: patiently(functools.partial(client.read_events, address, since,
                                                                                  count)), cursor, boot_count)
    session.inventory.add_events(tap.id, batch.events, cursor)
    rows = [_event_row(tap.id, e.seq, e.time_ms, e.code, e.data, e.boot) for e in batch.events]
    if batch.lost:
        rows.insert(0, {"tap": tap.id, "seq": None, "event": f"{batch.lost} events overwritten before they were read"})
    return rows


def _event_row(tap: str, seq: int, time_ms: int, code: int, data: dict[str, Any], boot: int) -> dict[str, Any]:
    return {"tap": tap, "boot": boot, "seq": seq, "time_ms": time_ms, "code": code,
            "event": EVENT_NAMES.get(code, str(code)), "input": data.get("input"), "value": data.get("value")}


def events(session: Session, tap_refs: Sequence[str] = (), *, stored: bool = False) -> list[dict[str, Any]]:
    """New events of the named taps (default: the commissioned ones); `stored`: every event
    the inventory holds for them, without touching the bus."""
    taps = [session.tap(ref) for ref in tap_refs] or [t for t in session.inventory.taps()
                                                       if t.commissioned_at is not None]
    rows: list[dict[str, Any]] = []
    for tap in taps:
        if stored:
            rows += [_event_row(r.tap, r.seq, r.time_ms, r.code, r.data, r.boot)
                     for r in session.inventory.events(tap.id)]
        else:
            rows += fetch_events(session, tap)
    return rows


# -- protection settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratings:
    """What the parts of a tap's board can take, in mA (the weakest input's)."""

    relay_rated_mA: int
    breaking_mA: int
    fuse_mA: int
    measurable_mV: int  # the largest RMS voltage the ADC reads without clipping


def ratings(tap: TapInfo) -> Ratings:
    try:
        board = boards.by_name(tap.board)
    except boards.BoardError as exc:
        raise OperatorError(f"tap {tap.id}: board {tap.board!r}: {'; '.join(exc.problems)}") from None
    relays = {r["id"]: r for r in board.raw["relays"]}
    used = [relays[i["relay"]] for i in board.raw["inputs"]]
    return Ratings(
        relay_rated_mA=round(min(r["rated_current_a"] for r in used) * 1000),
        breaking_mA=round(min(r["breaking_capacity_a"] for r in used) * 1000),
        fuse_mA=round(min(i["fuse_a"] for i in board.raw["inputs"]) * 1000),
        measurable_mV=round(board.raw["adc"]["volts_full_scale"] / math.sqrt(2) * 1000),
    )


def default_limits(session: Session, tap: TapInfo) -> dict[str, int]:
    """Settings that coordinate with the board and suit the site: pickup at 80% of the
    weakest of relay and fuse, instantaneous at the relay's breaking capacity, voltage
    ±15% and frequency ±5% of the site's nominal values."""
    rating = ratings(tap)
    nominal_v, hz = _site_nominal(session)
    pickup = int(min(rating.relay_rated_mA, rating.fuse_mA) * 0.8)
    return {"curve": catalog.CURVE_STANDARD_INVERSE, "pickup_mA": pickup, "tms_milli": 100,
            "instantaneous_mA": rating.breaking_mA, "undervoltage_mV": round(nominal_v * 850),
            "overvoltage_mV": min(round(nominal_v * 1150), rating.measurable_mV),
            "frequency_low_cHz": round(hz * 95), "frequency_high_cHz": round(hz * 105), "thd_max_dpct": 80}


def limit_problems(tap: TapInfo, limits: dict[str, int]) -> list[str]:
    """Why the settings do not coordinate with the tap's board; empty when they do."""
    rating = ratings(tap)
    missing = [name for name in LIMIT_FIELDS if name not in limits]
    if missing:
        return [f"missing {', '.join(missing)}"]
    pickup, instantaneous = limits["pickup_mA"], limits["instantaneous_mA"]
    checks = [
        (limits["curve"] not in (1, 2, 3), f"curve {limits['curve']} is not 1, 2 or 3"),
        (pickup <= 0, "pickup must be above 0"),
        (pickup > rating.relay_rated_mA,
         f"pickup {pickup / 1000:g} A is above the relay's rated current {rating.relay_rated_mA / 1000:g} A"),
        (pickup > rating.fuse_mA, f"pickup {pickup / 1000:g} A is above the input fuse's {rating.fuse_mA / 1000:g} A: "
         "the fuse would blow before the overload protection acts"),
        (pickup > rating.breaking_mA,
         f"pickup {pickup / 1000:g} A is above the relay's breaking capacity {rating.breaking_mA / 1000:g} A"),
        (instantaneous > rating.breaking_mA,
         f"instantaneous {instantaneous / 1000:g} A is above the relay's breaking capacity "
         f"{rating.breaking_mA / 1000:g} A: the relay could not open on the fault it detects"),
        (instantaneous <= pickup, f"instantaneous {instantaneous / 1000:g} A must be above pickup {pickup / 1000:g} A"),
        (not 50 <= limits["tms_milli"] <= 1500, f"time multiplier {limits['tms_milli'] / 1000:g} is outside 0.05..1.5"),
        (limits["undervoltage_mV"] >= limits["overvoltage_mV"], "undervoltage must be below overvoltage"),
        (limits["overvoltage_mV"] > rating.measurable_mV,
         f"overvoltage {limits['overvoltage_mV'] / 1000:g} V is above what the board measures "
         f"({rating.measurable_mV / 1000:g} V RMS)"),
        (limits["frequency_low_cHz"] >= limits["frequency_high_cHz"], "low frequency must be below high frequency"),
        (not 0 < limits["thd_max_dpct"] <= 1000, "maximum THD must be 0.1% to 100%"),
    ]
    return [message for bad, message in checks if bad]


def check_limits(session: Session, tap: TapInfo, limits: dict[str, int]) -> None:
    problems = limit_problems(tap, limits)
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        raise OperatorError(f"tap {tap.id}: limits refused, nothing sent: {problems[0]}{more}")


def read_settings(session: Session, tap: TapInfo) -> Settings:
    """READ_SETTINGS of the tap, read patiently; OperatorError when its firmware has none."""
    client = session.client(tap.bus)
    try:
        return patiently(lambda: client.read_settings(tap_address(tap)))
    except TapRefused as exc:
        if exc.code == catalog.E_UNKNOWN_TYPE:
            raise OperatorError(f"tap {tap.id}: its firmware predates READ_SETTINGS and SET_CALIBRATION "
                                "(protocol minor 0): flash a newer one") from None
        raise OperatorError(f"tap {tap.id}: READ_SETTINGS refused: {exc.text}") from None


LIMITS_FROM_TAP = "read from the tap"


def current_limits(session: Session, tap: TapInfo) -> tuple[dict[str, int], str]:
    """The limits in force at the tap (READ_SETTINGS), and where they come from. When the
    tap cannot be asked (no bus given) or does not answer, the last limits it acknowledged
    (the command history), else the firmware's defaults; the origin then says why."""
    why = "no bus given"
    if session.ports is not None:
        try:
            return session.client(tap.bus).read_settings(tap_address(tap)).limits, LIMITS_FROM_TAP
        except TapTimeout:
            why = "the tap did not answer READ_SETTINGS"
        except TapRefused as exc:
            why = f"the tap refused READ_SETTINGS: {exc.name}"
    for record in reversed(session.inventory.commands(tap.id)):
        if record.message == "SET_LIMITS" and record.state == CommandState.ACKNOWLEDGED:
            return {k: int(record.fields[k]) for k in LIMIT_FIELDS}, f"last set, from the command history ({why})"
    return dict(FIRMWARE_DEFAULT_LIMITS), f"firmware defaults, never set by this host ({why})"


def send_limits(session: Session, tap: TapInfo, limits: dict[str, int]) -> Reply:
    check_limits(session, tap, limits)
    client = session.client(tap.bus)
    values = {k: int(limits[k]) for k in LIMIT_FIELDS}
    return session.command(tap, "SET_LIMITS", values, lambda: client.set_limits(tap_address(tap), values))


def set_limits(session: Session, tap_ref: str, changes: dict[str, int]) -> dict[str, int]:
    """Change some settings (the others as in force at the tap); checked, aligned to the epoch, sent."""
    tap = session.tap(tap_ref)
    unknown = sorted(set(changes) - set(LIMIT_FIELDS))
    if unknown:
        raise OperatorError(f"unknown setting {', '.join(unknown)} (settings: {', '.join(LIMIT_FIELDS)})")
    limits = current_limits(session, tap)[0] | changes
    check_limits(session, tap, limits)
    _prepare(session, tap)
    send_limits(session, tap, limits)
    return limits


def _prepare(session: Session, tap: TapInfo) -> None:
    """Before a signed command: the tap answers, and is in the controller's epoch."""
    client = session.client(tap.bus)
    state = patiently(lambda: client.status(tap_address(tap)))
    session.align_epoch(tap, state.epoch)


# -- alternates ------------------------------------------------------------------------------------------


def input_of(tap: TapInfo, source: str) -> int:
    """An input by its source id or its number."""
    if source in tap.inputs:
        return tap.inputs.index(source) + 1
    if source.isdigit() and 1 <= int(source) <= len(tap.inputs):
        return int(source)
    raise OperatorError(f"tap {tap.id} has no input on source {source!r} (inputs: "
                        f"{', '.join(f'{k} {s}' for k, s in enumerate(tap.inputs, start=1)) or 'none'})")


ALTERNATES_FROM_TAP = "read from the tap"


def _acknowledged_alternates(session: Session, tap: TapInfo) -> dict[int, list[int]]:
    """Per input, the ranking of the last SET_ALTERNATES the tap acknowledged (command history)."""
    acknowledged: dict[int, list[int]] = {}
    for record in session.inventory.commands(tap.id):
        if record.message == "SET_ALTERNATES" and record.state == CommandState.ACKNOWLEDGED:
            ranked = [record.fields[f"alternate_{i}"] for i in (1, 2, 3)]
            acknowledged[int(record.fields["for_input"])] = [k for k in ranked if k]
    return acknowledged


def _held_alternates(session: Session, tap: TapInfo) -> tuple[dict[int, list[int]], str]:
    """Per input, the ranking the tap holds (READ_ALTERNATES, every input), and where it comes
    from. When the tap cannot be asked (no bus given), does not answer or predates the message,
    the last rankings it acknowledged (the command history); the origin then says why."""
    why = "no bus given"
    if session.ports is not None:
        client = session.client(tap.bus)
        try:
            held = {k: client.read_alternates(tap_address(tap), k).alternates for k in range(1, len(tap.inputs) + 1)}
            return {k: v for k, v in held.items() if v}, ALTERNATES_FROM_TAP
        except TapTimeout:
            why = "the tap did not answer READ_ALTERNATES"
        except TapRefused as exc:
            why = ("its firmware predates READ_ALTERNATES (protocol minor 2)" if exc.code == catalog.E_UNKNOWN_TYPE
                   else f"the tap refused READ_ALTERNATES: {exc.name}")
    return _acknowledged_alternates(session, tap), f"last set, from the command history ({why})"


def current_alternates(session: Session, tap: TapInfo) -> dict[str, Any]:
    """The failover order as planned (site file) and as the tap holds it (`set`, read from the
    tap when a bus is given; `origin` says where it came from); `differs` lists the inputs
    whose two rankings disagree."""
    held, origin = _held_alternates(session, tap)

    def named(ranking: Sequence[int]) -> list[str]:
        return [source_of(tap, k) or str(k) for k in ranking]

    inputs = sorted(set(held) | set(tap.alternates))
    differs = [k for k in inputs if list(held.get(k, [])) != list(tap.alternates.get(k, []))]
    return {
        "tap": tap.id,
        "planned": {source_of(tap, k) or str(k): named(v) for k, v in sorted(tap.alternates.items())},
        "set": {source_of(tap, k) or str(k): named(v) for k, v in sorted(held.items())},
        "origin": origin,
        "differs": [source_of(tap, k) or str(k) for k in differs],
    }


def send_alternates(session: Session, tap: TapInfo, for_input: int, ranked: Sequence[int]) -> Reply:
    if len(ranked) > 3 or len(set(ranked)) != len(ranked) or for_input in ranked or not all(
            1 <= k <= len(tap.inputs) for k in [for_input, *ranked]):
        raise OperatorError(f"tap {tap.id}: alternates for input {for_input} must be up to 3 other inputs of the "
                            f"tap, each once (got {list(ranked)}); nothing sent")
    client = session.client(tap.bus)
    fields = {"for_input": for_input} | {f"alternate_{i + 1}": k for i, k in enumerate([*ranked, 0, 0, 0][:3])}
    return session.command(tap, "SET_ALTERNATES", fields,
                           lambda: client.set_alternates(tap_address(tap), for_input, list(ranked)))


def set_alternates(session: Session, tap_ref: str, lost: str, takers: Sequence[str]) -> dict[str, Any]:
    """Rank `takers` (source ids or input numbers) to take over when `lost` is lost."""
    tap = session.tap(tap_ref)
    for_input = input_of(tap, lost)
    ranked = [input_of(tap, t) for t in takers]
    _prepare(session, tap)
    send_alternates(session, tap, for_input, ranked)
    return current_alternates(session, tap)


# -- switch ------------------------------------------------------------------------------------------------


@dataclass
class SwitchResult:
    tap: str
    source: str
    from_input: int
    to_input: int
    checks: list[str] = field(default_factory=list)
    verified: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SwitchRefused(OperatorError):
    """A pre-check failed (nothing was sent) or the tap refused the SWITCH."""


def switch(session: Session, tap_ref: str, source: str, *, confirm_s: float = SWITCH_CONFIRM_S) -> SwitchResult:
    """Move the tap's rack to `source` (a source id or input number): checks, signed
    compare-and-swap, verification. SwitchRefused when a check fails or the tap refuses."""
    tap = session.tap(tap_ref)
    if tap.role != TapRole.RACK:
        raise SwitchRefused(f"tap {tap.id} is a source monitor: it switches nothing")
    target = input_of(tap, source)
    client = session.client(tap.bus)
    address = tap_address(tap)
    state = patiently(lambda: client.status(address))
    telemetry = patiently(lambda: client.telemetry(address))
    result = SwitchResult(tap.id, tap.inputs[target - 1], state.active_input, target)
    if state.active_input == target:
        result.verified, result.note = True, f"already on input {target} ({result.source}): nothing sent"
        return result
    result.checks = _switch_checks(session, tap, state.protection, telemetry, state.active_input, target)
    session.align_epoch(tap, state.epoch)
    try:
        session.command(tap, "SWITCH", {"expected_input": state.active_input, "target_input": target},
                        lambda: client.switch(address, state.active_input, target))
    except TapRefused as exc:
        raise SwitchRefused(_refusal(tap, exc, target)) from None
    except TapTimeout:
        pass  # the outcome is unknown until STATUS says: verified below
    deadline = time.monotonic() + confirm_s
    while time.monotonic() < deadline:
        try:
            now = client.status(address)
        except TapTimeout:
            continue
        if now.active_input == target and now.relays_closed == 1 << (target - 1):
            result.verified = True
            break
        time.sleep(0.1)
    if not result.verified:
        result.note = (f"not confirmed within {confirm_s:g} s: STATUS does not show input {target} active; "
                       "read `ibt status` before trying again")
        return result
    after = patiently(lambda: client.telemetry(address))
    result.verified = after.active_input == target and bool(after.relays_closed & (1 << (target - 1)))
    result.note = f"on input {target} ({result.source}), {after['power_W'] / 1000:.2f} kW"
    return result


def _switch_checks(session: Session, tap: TapInfo, protection: int, telemetry: Telemetry, active: int,
                   target: int) -> list[str]:
    """Every check before a SWITCH; SwitchRefused (nothing sent) on the first that fails."""
    source = tap.inputs[target - 1]
    where = f"tap {tap.id}: input {target} ({source})"
    nominal_v, hz = _site_nominal(session)
    if protection in (catalog.PROT_LOCKOUT, catalog.PROT_TRIPPED, catalog.PROT_DOWNSTREAM_FAULT):
        raise SwitchRefused(f"tap {tap.id}: protection is {PROTECTION_NAMES[protection]}: no transfer until it "
                            "clears; nothing sent")
    reading = telemetry.inputs[target - 1]
    volts, freq = reading["voltage_mV"] / 1000, reading["frequency_cHz"] / 100
    if not reading["state"] & catalog.INPUT_PRESENT:
        raise SwitchRefused(f"{where} is absent ({volts:.0f} V): source {source} is lost or disconnected; "
                            "nothing sent")
    if not reading["state"] & catalog.INPUT_HEALTHY:
        raise SwitchRefused(f"{where} is outside the tap's limits ({volts:.1f} V, {freq:.2f} Hz, THD "
                            f"{reading['thd_dpct'] / 10:.1f}%); nothing sent")
    checks = ["present and healthy"]
    if abs(volts - nominal_v) > nominal_v * VOLTAGE_TOLERANCE:
        raise SwitchRefused(f"{where} reads {volts:.1f} V, outside ±{VOLTAGE_TOLERANCE:.0%} of {nominal_v:.1f} V; "
                            "nothing sent")
    if abs(freq - hz) > FREQUENCY_TOLERANCE_HZ:
        raise SwitchRefused(f"{where} reads {freq:.2f} Hz, the site is {hz:g} Hz; nothing sent")
    checks.append(f"{volts:.1f} V {freq:.2f} Hz")
    if active:
        checks.append(_phase_check(session, tap, telemetry, active, target))
    checks.append(_capacity_check(session, tap, source, telemetry["power_W"] / 1000))
    return checks


def _phase_check(session: Session, tap: TapInfo, telemetry: Telemetry, active: int, target: int) -> str:
    """The target is synchronous with the active input and shows its source's phase relative to it."""
    phases = {s["id"]: float(s["phase_deg"]) for s in session.inventory.sources()}
    now, then = telemetry.inputs[active - 1], telemetry.inputs[target - 1]
    slip = abs(now["frequency_cHz"] - then["frequency_cHz"]) / 100
    if slip > SLIP_TOLERANCE_HZ:
        raise SwitchRefused(f"tap {tap.id}: input {target} runs {slip:.2f} Hz off the active input: not in phase; "
                            "nothing sent")
    measured = (then["phase_cdeg"] - now["phase_cdeg"]) / 100
    expected = phases[tap.inputs[target - 1]] - phases[tap.inputs[active - 1]]
    error = abs((measured - expected + 180) % 360 - 180)
    if error > PHASE_TOLERANCE_DEG:
        raise SwitchRefused(f"tap {tap.id}: input {target} is at {measured:.0f}° from the active input, the site file "
                            f"says {expected:.0f}°: the wiring does not match; nothing sent")
    return f"in phase ({measured:.0f}° from input {active}, as the site file says)"


def _capacity_check(session: Session, tap: TapInfo, source: str, rack_kw: float) -> str:
    """The source carries what the racks on it draw now plus this rack. Racks of the
    segment are read (TELEMETRY); one that does not answer counts at its rating."""
    capacity = next((float(s["capacity_kw"]) for s in session.inventory.sources() if s["id"] == source), None)
    if capacity is None:
        raise SwitchRefused(f"source {source!r} is not in the inventory's site: import the site file again")
    rated = {r["id"]: float(r["rated_kw"]) for r in session.inventory.racks()}
    load = 0.0
    for other in session.inventory.taps():
        if other.id == tap.id or other.role != TapRole.RACK or source not in other.inputs or other.bus != tap.bus:
            continue
        if other.address is None or other.commissioned_at is None:
            continue
        try:
            reading = session.client(other.bus).telemetry(other.address)
        except (TapTimeout, TapRefused):
            load += rated.get(other.rack or "", 0.0)
            continue
        if source_of(other, reading.active_input) == source:
            load += max(0.0, reading["power_W"] / 1000)
    own = max(rack_kw, 0.0)
    if load + own > capacity:
        raise SwitchRefused(f"source {source} carries {load:.1f} kW; with this rack's {own:.1f} kW it would exceed "
                            f"its {capacity:g} kW capacity; nothing sent")
    return f"capacity: {load + own:.1f} of {capacity:g} kW on {source}"


def _refusal(tap: TapInfo, exc: TapRefused, target: int) -> str:
    reasons = {
        catalog.E_CAS_MISMATCH: f"the active input changed meanwhile (now input {exc.detail}): read status, try again",
        catalog.E_SOURCE_UNHEALTHY: f"input {target} is not healthy at the tap (state bits {exc.detail})",
        catalog.E_PROTECTION_LOCKOUT: "protection forbids a transfer (lockout or trip)",
        catalog.E_DOWNSTREAM_FAULT: "the fault is on the rack side",
        catalog.E_BUSY: "a transfer is already in progress",
    }
    why = reasons.get(exc.code, exc.text)
    unknown = " (unverified refusal: read status)" if exc.outcome_unknown else ""
    return f"tap {tap.id} refused SWITCH to input {target}: {exc.name}: {why}{unknown}"


# -- calibration ------------------------------------------------------------------------------------------


def channel_names(tap: TapInfo) -> list[str]:
    """The tap's calibration channels: input1..inputN (volts), then current (amperes)."""
    return [f"input{k}" for k in range(1, len(tap.inputs) + 1)] + ["current"]


def _channel_id(channel: str) -> tuple[int, int]:
    """(kind, index) of a channel name, as SET_CALIBRATION and READ_SETTINGS name it."""
    if channel == "current":
        return catalog.CHANNEL_OUTPUT_CURRENT, 0
    return catalog.CHANNEL_INPUT_VOLTAGE, int(channel[len("input"):])


def _per_count(tap: TapInfo) -> dict[str, float]:
    """Each channel's nominal scale, volts or amperes per ADC count, from the board description."""
    try:
        params = boards.by_name(tap.board).firmware_parameters()
    except boards.BoardError as exc:
        raise OperatorError(f"tap {tap.id}: board {tap.board!r}: {'; '.join(exc.problems)}") from None
    volts, amps = float(params["mV_per_count"]) / 1000, float(params["mA_per_count"]) / 1000
    return {name: amps if name == "current" else volts for name in channel_names(tap)}


def _reading(telemetry: Telemetry, channel: str) -> float:
    """A channel's reading in volts or amperes."""
    if channel == "current":
        return float(telemetry["current_mA"]) / 1000
    return float(telemetry.inputs[int(channel[len("input"):]) - 1]["voltage_mV"]) / 1000


def _in_force(tap: TapInfo, settings: Settings, per_count: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Every channel's calibration as the tap runs on it, with gain and offset in readable units."""
    out: dict[str, dict[str, Any]] = {}
    for name in channel_names(tap):
        c = settings.channel(*_channel_id(name))
        gain = c["gain_ppm"] / catalog.CAL_GAIN_NOMINAL_PPM
        out[name] = {"gain_ppm": c["gain_ppm"], "offset_counts": c["offset_counts"], "gain": gain,
                     "offset": c["offset_counts"] * per_count[name] * gain,
                     "set": bool(c["state"] & catalog.CAL_SET)}
    return out


def read_calibration(session: Session, tap_ref: str) -> dict[str, Any]:
    """The calibration every channel of the tap runs on (READ_SETTINGS)."""
    tap = session.tap(tap_ref)
    channels = _in_force(tap, read_settings(session, tap), _per_count(tap))
    return {"tap": tap.id, "channels": channels, "sent": [], "verified": None}


def calibrate(session: Session, tap_ref: str, references: dict[str, float], *, reads: int = 5,
              reset: bool = False) -> dict[str, Any]:
    """Gain and offset per channel against reference readings, applied at the tap and verified.

    `references`: channel `input<k>` (volts) or `current` (amperes) to what a reference meter
    reads. Each call adds one (raw RMS in counts, reference) point per channel named; one
    point gives a gain (offset 0), two or more a least-squares gain and offset (unless they
    lie at nearly one level, which gives a gain only: `FIT_SPREAD`). The result is sent
    with SET_CALIBRATION (journalled) and checked: the tap's reading must then match the
    reference within the ADC's resolution (`_verify`). `reset` forgets the points; without
    references it also puts every channel back on its nominal scale. Neither: the
    calibration in force is read and returned.
    """
    tap = session.tap(tap_ref)
    names = channel_names(tap)
    unknown = sorted(set(references) - set(names))
    if unknown:
        raise OperatorError(f"tap {tap.id} has no channel {', '.join(unknown)} (channels: {', '.join(names)})")
    if not references and not reset:
        return read_calibration(session, tap.id)
    client = session.client(tap.bus)
    address = tap_address(tap)
    per_count = _per_count(tap)
    before = _in_force(tap, read_settings(session, tap), per_count)
    points = {} if reset else session.state.calibration_points(tap.id)
    spread: dict[str, float] = {}
    if references:
        samples = _samples(client, address, reads)
        for channel, reference in references.items():
            readings = [_reading(s, channel) for s in samples]
            measured = float(np.mean(readings))
            if measured <= 0:
                raise OperatorError(f"tap {tap.id}: {channel} reads 0: nothing to calibrate against")
            scale = per_count[channel] * before[channel]["gain"]  # units per count as the tap reads now
            raw = measured / scale - before[channel]["offset_counts"]
            points.setdefault(channel, []).append([raw, float(reference)])
            spread[channel] = max(readings) - min(readings)
    targets: dict[str, dict[str, Any]]
    if references:
        targets = {channel: _fit(points[channel], per_count[channel]) for channel in references}
    else:
        targets = {channel: {"gain_ppm": catalog.CAL_GAIN_NOMINAL_PPM, "offset_counts": 0, "gain": 1.0, "offset": 0.0,
                             "points": 0} for channel in names}
    problems = [problem for channel, fit in targets.items() for problem in _calibration_problems(channel, fit)]
    if problems:
        raise OperatorError(f"tap {tap.id}: calibration refused, nothing sent: {'; '.join(problems)}")
    session.state.set_calibration_points(tap.id, points)
    _prepare(session, tap)
    for channel, fit in targets.items():
        kind, index = _channel_id(channel)
        fields = {"kind": kind, "index": index, "gain_ppm": fit["gain_ppm"], "offset_counts": fit["offset_counts"]}
        send = functools.partial(client.set_calibration, address, kind, index, fit["gain_ppm"], fit["offset_counts"])
        try:
            session.command(tap, "SET_CALIBRATION", fields, send)
        except TapRefused as exc:
            raise OperatorError(f"tap {tap.id} refused SET_CALIBRATION of {channel}: {exc.text}") from None
    result: dict[str, Any] = {"tap": tap.id, "channels": _in_force(tap, read_settings(session, tap), per_count),
                              "sent": sorted(targets), "verified": None}
    for channel, fit in targets.items():
        result["channels"][channel]["points"] = fit["points"]
    if references:
        result["verified"] = _verify(session, tap, references, spread, result["channels"], per_count, reads)
    return result


FIT_SPREAD = 0.1  # points closer together than this fraction of their level give a gain only


def _fit(points: list[list[float]], per_count: float) -> dict[str, Any]:
    """reference = a x (raw + b / a): gain a / nominal in ppm, offset b / a in counts. Points
    at nearly one level cannot tell an offset from a gain: they give a gain (mean ratio)."""
    raw = np.array([p[0] for p in points])
    reference = np.array([p[1] for p in points])
    if len(points) == 1 or np.ptp(raw) < FIT_SPREAD * float(np.mean(np.abs(raw))):
        slope, intercept = float(np.mean(reference / raw)), 0.0
    else:
        slope, intercept = (float(v) for v in np.polyfit(raw, reference, 1))
    gain_ppm = round(slope / per_count * catalog.CAL_GAIN_NOMINAL_PPM)
    offset_counts = round(intercept / slope) if slope > 0 else 0
    return {"gain_ppm": gain_ppm, "offset_counts": offset_counts, "gain": gain_ppm / catalog.CAL_GAIN_NOMINAL_PPM,
            "offset": intercept, "points": len(points)}


def _calibration_problems(channel: str, fit: dict[str, Any]) -> list[str]:
    """Why the tap would refuse this calibration (SPEC.md, SET_CALIBRATION); empty when it would not."""
    problems = []
    if not catalog.CAL_GAIN_MIN_PPM <= fit["gain_ppm"] <= catalog.CAL_GAIN_MAX_PPM:
        problems.append(f"{channel}: gain {fit['gain']:.4f} is outside {catalog.CAL_GAIN_MIN_PPM / 1e6:g}.."
                        f"{catalog.CAL_GAIN_MAX_PPM / 1e6:g} of the board's nominal scale (check the reference "
                        "and the wiring)")
    if abs(fit["offset_counts"]) > catalog.CAL_OFFSET_MAX_COUNTS:
        problems.append(f"{channel}: offset {fit['offset_counts']} counts is beyond "
                        f"±{catalog.CAL_OFFSET_MAX_COUNTS} (points too close together, or a bad reference)")
    return problems


def _samples(client: TapClient, address: int, reads: int) -> list[Telemetry]:
    """`reads` TELEMETRY answers, CALIBRATION_READ_GAP_S apart (of different meter windows)."""
    out = []
    for n in range(reads):
        if n:
            time.sleep(CALIBRATION_READ_GAP_S)
        out.append(patiently(lambda: client.telemetry(address)))
    return out


def _verify(session: Session, tap: TapInfo, references: dict[str, float], spread: dict[str, float],
            rows: dict[str, dict[str, Any]], per_count: dict[str, float], reads: int) -> bool:
    """After SET_CALIBRATION: let the tap's meter close new windows (its uptime advances by
    CALIBRATION_SETTLE_S), then read it `reads` times; each channel's mean reading must be
    within the ADC's resolution of its reference: one count at the new gain, widened by the
    scatter of the tap's own readings (the larger spread, before or after: the meter's
    windows differ by a few counts). Writes reading, reference, tolerance and verdict into `rows`."""
    client = session.client(tap.bus)
    address = tap_address(tap)
    start = patiently(lambda: client.telemetry(address))["uptime_s"]
    deadline = time.monotonic() + PATIENCE_S
    settled = False
    while time.monotonic() < deadline:
        if patiently(lambda: client.telemetry(address))["uptime_s"] >= start + CALIBRATION_SETTLE_S:
            settled = True
            break
        time.sleep(0.1)
    samples = _samples(client, address, reads) if settled else []
    verified = settled
    for channel, reference in references.items():
        row = rows[channel]
        readings = [_reading(s, channel) for s in samples]
        scatter = max(spread[channel], max(readings) - min(readings) if readings else 0.0)
        tolerance = per_count[channel] * row["gain"] + scatter
        reading = float(np.mean(readings)) if readings else None
        ok = reading is not None and abs(reading - reference) <= tolerance
        row |= {"reference": float(reference), "reading": reading, "tolerance": tolerance, "verified": ok}
        verified = verified and ok
    return verified


# -- capture --------------------------------------------------------------------------------------------------


def capture(session: Session, tap_ref: str, *, cycles: int = 4, png: Path | None = None,
            deadline_s: float = 30.0) -> dict[str, Any]:
    """Capture `cycles` mains cycles of every channel, its harmonics (numpy FFT) and, with
    `png`, a plot of the waveforms and the spectrum."""
    tap = session.tap(tap_ref)
    client = session.client(tap.bus)
    address = tap_address(tap)
    capture_id = random.randrange(1, 0x10000)
    deadline = time.monotonic() + deadline_s
    try:
        info = patiently(lambda: client.capture_start(address, capture_id, catalog.TRIGGER_NOW, cycles), deadline)
        while info["state"] != catalog.CAPTURE_READY:
            if time.monotonic() > deadline:
                raise OperatorError(f"tap {tap.id}: capture {capture_id} not ready within {deadline_s:g} s")
            time.sleep(0.1)
            info = patiently(lambda: client.capture_info(address, capture_id), deadline)
        data = bytearray()
        while len(data) < info["total_bytes"]:
            offset = len(data)
            read = functools.partial(client.capture_read, address, capture_id, offset, CAPTURE_CHUNK)
            chunk = patiently(read, deadline)
            if not chunk["data"]:
                break
            data += bytes(chunk["data"])
    except TapRefused as exc:
        raise OperatorError(f"tap {tap.id}: capture refused: {exc.name} (detail {exc.detail})") from None
    channels = list(info["channels"])
    samples = np.frombuffer(bytes(data[: len(data) - len(data) % (2 * len(channels))]), dtype="<i2")
    waves = samples.reshape(-1, len(channels)).T.astype(float)
    fs = float(info["sample_rate_hz"])
    _, hz = _site_nominal(session)
    result: dict[str, Any] = {"tap": tap.id, "capture_id": capture_id, "sample_rate_hz": fs,
                              "samples_per_channel": int(waves.shape[1]), "channels": []}
    for channel, wave in zip(channels, waves, strict=True):
        scaled = wave * channel["scale_nu"] / 1e9
        name = (f"input {channel['index']} V" if channel["kind"] == catalog.CHANNEL_INPUT_VOLTAGE else "current A")
        result["channels"].append({"name": name, "rms": float(np.sqrt(np.mean(scaled**2)))}
                                  | harmonics(scaled, fs, hz))
        channel["wave"] = scaled
    if png is not None:
        plot_capture(result, [c["wave"] for c in channels], fs, png)
        result["png"] = str(png)
    return result


def harmonics(wave: np.ndarray, fs: float, hz: float, count: int = HARMONICS) -> dict[str, Any]:
    """RMS of the fundamental and harmonics 2..count as % of it, and THD (odd and even)."""
    n = len(wave)
    if n < 4:
        return {"fundamental_rms": 0.0, "harmonics_pct": {}, "thd_pct": 0.0}
    spectrum = np.abs(np.fft.rfft(wave - wave.mean())) * 2 / n / math.sqrt(2)
    resolution = fs / n

    def at(order: int) -> float:
        center = order * hz / resolution
        low, high = max(0, math.floor(center - 1)), min(len(spectrum) - 1, math.ceil(center + 1))
        return float(np.sqrt(np.sum(spectrum[low:high + 1] ** 2))) if low <= high else 0.0

    fundamental = at(1)
    table = {str(h): (100 * at(h) / fundamental if fundamental else 0.0) for h in range(2, count + 1)
             if h * hz < fs / 2}
    thd = math.sqrt(sum(v**2 for v in table.values()))
    return {"fundamental_rms": fundamental, "harmonics_pct": table, "thd_pct": thd}


def plot_capture(result: dict[str, Any], waves: list[np.ndarray], fs: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7))
    for channel, wave in zip(result["channels"], waves, strict=True):
        top.plot(np.arange(len(wave)) / fs * 1000, wave, label=channel["name"])
    top.set_xlabel("ms")
    top.set_title(f"tap {result['tap']}: capture {result['capture_id']}")
    top.legend(loc="upper right", fontsize="small")
    width = 0.8 / max(1, len(result["channels"]))
    for i, channel in enumerate(result["channels"]):
        orders = [int(h) for h in channel["harmonics_pct"]]
        bottom.bar([o + i * width for o in orders], list(channel["harmonics_pct"].values()), width,
                   label=f"{channel['name']} (THD {channel['thd_pct']:.1f}%)")
    bottom.set_xlabel("harmonic order")
    bottom.set_ylabel("% of fundamental")
    bottom.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(png)
    plt.close(figure)
