"""`ibt calibrate`: each channel's gain and offset fitted against reference readings, set
at the tap (SET_CALIBRATION) and verified.

Calibration is applied at the tap (SET_CALIBRATION, SPEC.md): `calibrate` reads the
calibration in force (READ_SETTINGS) and the tap's readings, turns each reading back
into the channel's raw RMS in ADC counts, fits gain and offset of the raw values against
the reference readings (one point: a gain; two or more, kept in the controller's state
across calls: least squares), sends them signed and journalled, and then reads
TELEMETRY again until the tap's reading matches the reference within the ADC's
resolution. Status readings are therefore calibrated by the tap itself.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np

from host.client.replies import Settings, Telemetry
from host.client.tap_client import TapClient
from host.client.tap_errors import TapRefused
from host.model import boards
from host.ops.operate import PATIENCE_S, patiently, prepare
from host.ops.protection_limits import read_settings
from host.ops.session import OperatorError, Session, tap_address
from host.store.records import TapInfo
from protocol import catalog

CALIBRATION_SETTLE_S = 2  # tap uptime to let pass after SET_CALIBRATION: at least 1 s of new meter windows
CALIBRATION_READ_GAP_S = 0.2  # between the TELEMETRY reads of a calibration: a new meter window (10 cycles) each


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
    prepare(session, tap)
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
