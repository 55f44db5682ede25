"""The one move: a rack's tap from the input it is on to another, with every check the
host can make before anything is sent, the journalled compare-and-swap SWITCH, and the
wait until STATUS shows the transfer done. `ibt switch` (host/ops/switching.py) and the
fleet over the buses (host/fleet/bus_fleet.py) both call `move_tap`.

Before sending, in this order, and a failed check sends nothing:
- the tap answers STATUS, and its active input is the one expected (compare-and-swap
  on the host side first: the tap checks it again);
- its protection allows a transfer (not tripped, locked out or faulted downstream);
- the target input is present and healthy at the tap, within the site's voltage and
  frequency tolerances (host/ops/tolerances.py);
- it is synchronous with the active input and shows the phase its source should have
  relative to the active one (the site's phases): a miswired input is never closed;
- its source has room: what the other racks on it draw, on every bus segment, plus this
  rack, within its capacity times (1 + `overload_allowance`).

Opening the output (target input 0) skips the target's checks: there is no target.

Then SWITCH, journalled (host/ops/journal.py). A refusal the tap signed is final and
mapped to a `Refusal`; silence or an unverified refusal leaves the outcome unknown, so
STATUS is read until the deadline either way: the transfer is done when STATUS shows the
target active with its relay's contact feedback, and not seen done otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from host.client.replies import Status, Telemetry
from host.client.tap_client import TapClient
from host.client.tap_errors import FencedOut, TapError, TapRefused, TapTimeout
from host.model.errors import RefusalError
from host.model.fleet import Refusal
from host.ops.journal import CommandJournal, journalled
from host.ops.operate import PROTECTION_NAMES
from host.ops.tolerances import FREQUENCY_TOLERANCE_HZ, PHASE_TOLERANCE_DEG, SLIP_TOLERANCE_HZ, VOLTAGE_TOLERANCE
from protocol import catalog

STATUS_POLL_S = 0.02  # between the STATUS reads that wait for a transfer to end

_NO_TRANSFER = (catalog.PROT_LOCKOUT, catalog.PROT_TRIPPED, catalog.PROT_DOWNSTREAM_FAULT)


@dataclass(frozen=True)
class TapWiring:
    """One rack tap as a move needs it: where it is, and the source on each input."""

    tap_id: str
    address: int
    inputs: Sequence[str | None]  # the source of input k at [k - 1]; None: not wired
    rated_kw: float = 0.0  # the rack's rating: what it counts for while its output is open

    def source_of(self, k: int) -> str | None:
        return self.inputs[k - 1] if 1 <= k <= len(self.inputs) else None


@dataclass(frozen=True)
class SiteNominal:
    """What the site says its sources are: the tap-side phase voltage, the frequency,
    each source's phase angle at the taps and its capacity."""

    phase_voltage_v: float
    frequency_hz: float
    phases_deg: Mapping[str, float]
    capacity_kw: Mapping[str, float]


@dataclass
class MoveOutcome:
    """What a move did. `refusal` None: done (`changed` False when already there)."""

    tap_id: str
    from_input: int
    to_input: int
    changed: bool = False
    refusal: Refusal | None = None
    reason: str = ""
    actual_input: int | None = None  # CAS_MISMATCH: the input the tap is on
    sent: bool = False  # a SWITCH went out (its outcome may still be unknown)
    checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.refusal is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _CheckFailed(RefusalError):
    """A check before sending failed: the move is refused, nothing sent."""

    def __init__(self, refusal: Refusal, reason: str) -> None:
        super().__init__(reason)
        self.refusal, self.reason = refusal, reason


# What other racks draw from a source now, for the room check: (kW, how it was counted).
LoadOn = Callable[[str], tuple[float, str]]


def move_tap(client: TapClient, tap: TapWiring, nominal: SiteNominal, journal: CommandJournal, *,
             expected_input: int | None, target_input: int, load_on: LoadOn, overload_allowance: float = 0.0,
             confirm_s: float = 5.0, read_patience_s: float = 0.0,
             before_send: Callable[[Status], None] | None = None) -> MoveOutcome:
    """Move `tap` to `target_input` (0: open the output) if it is on `expected_input`
    (None: whatever it is on); see the module docstring. FencedOut is raised: another
    controller owns the site, and nothing more may be sent."""
    outcome = MoveOutcome(tap.tap_id, -1, target_input)
    try:
        state = _read(lambda: client.status(tap.address), read_patience_s)
    except TapError as exc:
        return _refused(outcome, Refusal.NO_ANSWER, f"tap {tap.tap_id}: STATUS: {exc}")
    outcome.from_input = active = state.active_input
    if expected_input is not None and expected_input != active:
        outcome.actual_input = active
        return _refused(outcome, Refusal.CAS_MISMATCH, f"tap {tap.tap_id} is on input {active}, not {expected_input}")
    if active == target_input:
        outcome.reason = f"already on input {target_input}: nothing sent"
        return outcome
    if target_input:
        try:
            telemetry = _read(lambda: client.telemetry(tap.address), read_patience_s)
            outcome.checks = _checks(tap, nominal, state.protection, telemetry, active, target_input, load_on,
                                     overload_allowance)
        except TapError as exc:
            return _refused(outcome, Refusal.NO_ANSWER, f"tap {tap.tap_id}: TELEMETRY: {exc}")
        except _CheckFailed as failed:
            return _refused(outcome, failed.refusal, failed.reason)
    if before_send is not None:
        before_send(state)
    fields = {"expected_input": active, "target_input": target_input}
    outcome.sent = True
    try:
        journalled(journal, tap.tap_id, "SWITCH", fields, lambda: client.switch(tap.address, active, target_input),
                   client)
    except FencedOut:
        raise
    except TapRefused as exc:
        if not exc.outcome_unknown:
            return _tap_refusal(outcome, tap, exc)
    except TapTimeout:
        pass  # the outcome is unknown until STATUS says
    return _await_transfer(client, tap, outcome, confirm_s)


def _read(call: Callable[[], Any], patience_s: float) -> Any:
    """A read, repeated while it times out for up to `patience_s` (a read is idempotent)."""
    end = time.monotonic() + patience_s
    while True:
        try:
            return call()
        except TapTimeout:
            if time.monotonic() >= end:
                raise


def _refused(outcome: MoveOutcome, refusal: Refusal, reason: str) -> MoveOutcome:
    outcome.refusal, outcome.reason = refusal, reason
    return outcome


def _checks(tap: TapWiring, nominal: SiteNominal, protection: int, telemetry: Telemetry, active: int, target: int,
            load_on: LoadOn, allowance: float) -> list[str]:
    source = tap.source_of(target)
    where = f"tap {tap.tap_id}: input {target} ({source})"
    if source is None:
        raise _CheckFailed(Refusal.UNREACHABLE_SOURCE, f"tap {tap.tap_id} has no input {target} wired; nothing sent")
    if protection in _NO_TRANSFER:
        raise _CheckFailed(Refusal.PROTECTION, f"tap {tap.tap_id}: protection is {PROTECTION_NAMES[protection]}: "
                                               "no transfer until it clears; nothing sent")
    reading = telemetry.inputs[target - 1]
    volts, freq = reading["voltage_mV"] / 1000, reading["frequency_cHz"] / 100
    if not reading["state"] & catalog.INPUT_PRESENT:
        raise _CheckFailed(Refusal.SOURCE_UNHEALTHY, f"{where} is absent ({volts:.0f} V): source {source} is lost "
                                                     "or disconnected; nothing sent")
    if not reading["state"] & catalog.INPUT_HEALTHY:
        thd = reading["thd_dpct"] / 10
        raise _CheckFailed(Refusal.SOURCE_UNHEALTHY, f"{where} is outside the tap's limits ({volts:.1f} V, "
                                                     f"{freq:.2f} Hz, THD {thd:.1f}%); nothing sent")
    checks = ["present and healthy"]
    nominal_v = nominal.phase_voltage_v
    if abs(volts - nominal_v) > nominal_v * VOLTAGE_TOLERANCE:
        raise _CheckFailed(Refusal.SOURCE_UNHEALTHY, f"{where} reads {volts:.1f} V, outside ±{VOLTAGE_TOLERANCE:.0%} "
                                                     f"of {nominal_v:.1f} V; nothing sent")
    if abs(freq - nominal.frequency_hz) > FREQUENCY_TOLERANCE_HZ:
        raise _CheckFailed(Refusal.SOURCE_UNHEALTHY, f"{where} reads {freq:.2f} Hz, the site is "
                                                     f"{nominal.frequency_hz:g} Hz; nothing sent")
    checks.append(f"{volts:.1f} V {freq:.2f} Hz")
    if active:
        checks.append(_phase_check(tap, nominal, telemetry, active, target))
    checks.append(_room_check(tap, nominal, source, telemetry, active, load_on, allowance))
    return checks


def _phase_check(tap: TapWiring, nominal: SiteNominal, telemetry: Telemetry, active: int, target: int) -> str:
    """The target is synchronous with the active input and shows its source's phase relative to it."""
    now, then = telemetry.inputs[active - 1], telemetry.inputs[target - 1]
    slip = abs(now["frequency_cHz"] - then["frequency_cHz"]) / 100
    if slip > SLIP_TOLERANCE_HZ:
        raise _CheckFailed(Refusal.SOURCE_UNHEALTHY, f"tap {tap.tap_id}: input {target} runs {slip:.2f} Hz off the "
                                                     "active input: not in phase; nothing sent")
    measured = (then["phase_cdeg"] - now["phase_cdeg"]) / 100
    expected = (nominal.phases_deg.get(tap.source_of(target) or "", 0.0)
                - nominal.phases_deg.get(tap.source_of(active) or "", 0.0))
    error = abs((measured - expected + 180) % 360 - 180)
    if error > PHASE_TOLERANCE_DEG:
        raise _CheckFailed(Refusal.SOURCE_UNHEALTHY, f"tap {tap.tap_id}: input {target} is at {measured:.0f}° from "
                                                     f"the active input, the site says {expected:.0f}°: the wiring "
                                                     "does not match; nothing sent")
    return f"in phase ({measured:.0f}° from input {active}, as the site says)"


def _room_check(tap: TapWiring, nominal: SiteNominal, source: str, telemetry: Telemetry, active: int,
                load_on: LoadOn, allowance: float) -> str:
    capacity = nominal.capacity_kw.get(source)
    if capacity is None:
        raise _CheckFailed(Refusal.UNKNOWN_SOURCE, f"source {source!r} is not in the site: import the site file again")
    load, counted = load_on(source)
    own = max(telemetry["power_W"] / 1000, 0.0) if active else tap.rated_kw
    limit = capacity * (1.0 + allowance)
    if load + own > limit:
        raise _CheckFailed(Refusal.NO_ROOM, f"source {source} carries {load:.1f} kW ({counted}); with this rack's "
                                            f"{own:.1f} kW it would exceed its {limit:g} kW; nothing sent")
    return f"capacity: {load + own:.1f} of {limit:g} kW on {source} ({counted})"


def _tap_refusal(outcome: MoveOutcome, tap: TapWiring, exc: TapRefused) -> MoveOutcome:
    """A SWITCH the tap refused, and signed: it did not run."""
    target = outcome.to_input
    reasons = {
        catalog.E_CAS_MISMATCH: (Refusal.CAS_MISMATCH, f"the active input changed meanwhile (now input {exc.detail}): "
                                                       "read status, try again"),
        catalog.E_SOURCE_UNHEALTHY: (Refusal.SOURCE_UNHEALTHY, f"input {target} is not healthy at the tap (state bits "
                                                               f"{exc.detail:#x})"),
        catalog.E_PROTECTION_LOCKOUT: (Refusal.PROTECTION, "protection forbids a transfer (lockout or trip)"),
        catalog.E_DOWNSTREAM_FAULT: (Refusal.PROTECTION, "the fault is on the rack side"),
        catalog.E_INTERNAL: (Refusal.PROTECTION, exc.text),
        catalog.E_BUSY: (Refusal.BUSY, "a transfer is already in progress"),
        catalog.E_OUT_OF_RANGE: (Refusal.UNREACHABLE_SOURCE, f"the tap has no input {target}"),
    }
    refusal, why = reasons.get(exc.code, (Refusal.NO_ANSWER, exc.text))
    if exc.code == catalog.E_CAS_MISMATCH:
        outcome.actual_input = exc.detail
    return _refused(outcome, refusal, f"tap {tap.tap_id} refused SWITCH to input {target}: {exc.name}: {why}")


def _await_transfer(client: TapClient, tap: TapWiring, outcome: MoveOutcome, confirm_s: float) -> MoveOutcome:
    """STATUS until the target input is active with its relay's feedback, or the deadline."""
    target = outcome.to_input
    relays = 1 << (target - 1) if target else 0
    deadline = time.monotonic() + confirm_s
    last = "no STATUS answered"
    while True:
        try:
            now = client.status(tap.address)
        except TapError as exc:
            last = str(exc)
        else:
            if now.active_input == target and now.relays_closed == relays:
                outcome.changed = True
                return outcome
            last = f"active input {now.active_input}, relays {now.relays_closed:#x}"
        if time.monotonic() > deadline:
            return _refused(outcome, Refusal.NO_ANSWER,
                            f"tap {tap.tap_id}: the transfer to input {target} was not seen done within "
                            f"{confirm_s:g} s ({last}): read its status before trying again")
        time.sleep(STATUS_POLL_S)
