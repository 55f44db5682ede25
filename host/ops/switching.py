"""`ibt switch`: every check before a SWITCH (health, tolerance, phase, the target's room),
the signed compare-and-swap, and its verification.

SWITCH is the move primitive the controller's executor stages, so it is careful in the
order the protocol allows: everything that can be known before sending is checked
first (the target is one of the tap's inputs, present, healthy, within the site's
voltage and frequency, showing the phase its source should have relative to the active
input, and its source has room for the rack), and a failed check sends nothing. Then the
compare-and-swap SWITCH on the input STATUS reported, journalled in the inventory; then
STATUS until the target is active, and TELEMETRY for its relay's feedback.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from host.client.replies import Telemetry
from host.client.tap_errors import TapRefused, TapTimeout
from host.model.site_file import TapRole
from host.ops.operate import PROTECTION_NAMES, input_of, patiently, site_nominal, source_of
from host.ops.session import OperatorError, Session, tap_address
from host.ops.tolerances import FREQUENCY_TOLERANCE_HZ, PHASE_TOLERANCE_DEG, SLIP_TOLERANCE_HZ, VOLTAGE_TOLERANCE
from host.store.records import TapInfo
from protocol import catalog

SWITCH_CONFIRM_S = 15.0  # wall clock for STATUS to show the transfer done


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
    nominal_v, hz = site_nominal(session)
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
