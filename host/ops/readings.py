"""`ibt status` and `ibt monitor`: every tap's STATUS and TELEMETRY as plain data, and as text."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from typing import Any

from host.client.tap_errors import TapRefused, TapTimeout
from host.ops.operate import ALARM_NAMES, PROTECTION_NAMES, bit_names, reachable_taps, source_of
from host.ops.session import OperatorError, Session, tap_address
from host.store.records import TapInfo
from protocol import catalog


def tap_status(session: Session, tap: TapInfo) -> dict[str, Any]:
    """STATUS and TELEMETRY of one tap as plain data; `error` says why not when it did not answer."""
    out: dict[str, Any] = {"tap": tap.id, "address": tap.address, "rack": tap.rack, "bus": tap.bus,
                           "commissioned": tap.commissioned_at is not None}
    if not session.can_reach(tap.bus):
        return out | {"read_at": _now_iso(), "error": f"no buses for segment {tap.bus!r} (`ibt segment set` "
                                                      "stores them)"}
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
        "alarms": bit_names(status.alarms, ALARM_NAMES), "epoch": status.epoch,
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
    reachable_taps(session, taps)  # none at all: the one line that says how to reach them
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
