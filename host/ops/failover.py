"""A tap's local failover order (its alternates): by source, acknowledged, read back from
the tap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from host.client.replies import Reply
from host.client.tap_errors import TapRefused, TapTimeout
from host.ops.operate import input_of, prepare, source_of
from host.ops.session import OperatorError, Session, tap_address
from host.store.records import CommandState, TapInfo
from protocol import catalog

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
    if session.can_reach(tap.bus):
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
    prepare(session, tap)
    send_alternates(session, tap, for_input, ranked)
    return current_alternates(session, tap)
