"""`ibt switch`: the one move (host/ops/move.py: every check before a SWITCH, the
journalled compare-and-swap, the wait for the transfer) from the inventory's view of the
site, and TELEMETRY afterwards for the relay's feedback and the rack's draw.

The room check counts the racks wired to the target on every bus segment of the
inventory; a rack this command cannot read counts at its rating.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from host.client.keys import NoKey
from host.client.tap_errors import FencedOut, TapRefused, TapTimeout
from host.model.errors import FencingError, NoAnswer
from host.model.fleet import Refusal
from host.model.site_file import TapRole
from host.ops.move import SiteNominal, TapWiring, move_tap
from host.ops.operate import PATIENCE_S, input_of, patiently, site_nominal, source_of
from host.ops.session import OperatorError, Session, tap_address
from host.store.records import InventoryError, TapInfo

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
    """Move the tap's rack to `source` (a source id or input number) through the one move
    (host/ops/move.py). SwitchRefused when a check fails (nothing sent) or the tap refuses;
    NoAnswer when the tap does not answer before anything is sent."""
    tap = session.tap(tap_ref)
    if tap.role != TapRole.RACK:
        raise SwitchRefused(f"tap {tap.id} is a source monitor: it switches nothing")
    target = input_of(tap, source)
    client = session.client(tap.bus)
    rated = {r["id"]: float(r["rated_kw"]) for r in session.inventory.racks()}
    wiring = TapWiring(tap.id, tap_address(tap), tap.inputs, rated.get(tap.rack or "", 0.0))
    try:
        outcome = move_tap(client, wiring, session_nominal(session), session.inventory, expected_input=None,
                           target_input=target, load_on=lambda s: _load_on(session, tap, s, rated),
                           confirm_s=confirm_s, read_patience_s=PATIENCE_S,
                           before_send=lambda state: session.align_epoch(tap, state.epoch))
    except FencedOut as exc:
        why = f"tap {tap.id}: {exc.text}: another controller owns the site; nothing more is sent"
        raise FencingError(why) from None
    except (NoKey, InventoryError) as exc:
        raise OperatorError(f"tap {tap.id}: SWITCH not sent: {exc}") from None
    result = SwitchResult(tap.id, tap.inputs[target - 1], outcome.from_input, target, outcome.checks)
    if outcome.refusal == Refusal.NO_ANSWER:
        if not outcome.sent:
            raise NoAnswer(f"{outcome.reason} (is the tap powered and on the bus?)")
        result.note = outcome.reason
        return result
    if outcome.refusal is not None:
        raise SwitchRefused(outcome.reason)
    if not outcome.changed:
        result.verified, result.note = True, f"already on input {target} ({result.source}): nothing sent"
        return result
    after = patiently(lambda: client.telemetry(wiring.address))
    result.verified = after.active_input == target and bool(after.relays_closed & (1 << (target - 1)))
    result.note = f"on input {target} ({result.source}), {after['power_W'] / 1000:.2f} kW"
    return result


def session_nominal(session: Session) -> SiteNominal:
    """What the inventory's site says of its sources, as a move checks them."""
    nominal_v, hz = site_nominal(session)
    sources = session.inventory.sources()
    return SiteNominal(nominal_v, hz, {s["id"]: float(s["phase_deg"]) for s in sources},
                       {s["id"]: float(s["capacity_kw"]) for s in sources})


def _load_on(session: Session, tap: TapInfo, source: str, rated: dict[str, float]) -> tuple[float, str]:
    """What the other racks wired to `source` draw from it, on every bus segment (TELEMETRY).
    A rack whose tap cannot be read (silent, or its segment's buses not open to this
    command) counts at its rating: it may be on the source."""
    load, guessed = 0.0, 0
    for other in session.inventory.taps():
        if other.id == tap.id or other.role != TapRole.RACK or source not in other.inputs:
            continue
        if other.address is None or other.commissioned_at is None:
            continue  # not on the bus yet: it draws nothing through a tap
        try:
            reading = session.client(other.bus).telemetry(other.address)
        except (TapTimeout, TapRefused, OperatorError):
            load, guessed = load + rated.get(other.rack or "", 0.0), guessed + 1
            continue
        if source_of(other, reading.active_input) == source:
            load += max(0.0, reading["power_W"] / 1000)
    return load, "measured on every segment" + (f", {guessed} unread rack(s) at their rating" if guessed else "")
