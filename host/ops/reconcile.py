"""At a controller's start, every journalled command whose outcome is not known (pending,
sent or unknown: the host stopped between the intent and the answer) is settled against
the tap's real state, and never sent again:

- SWITCH: STATUS shows the target input active with its relay closed: acknowledged
  ("in effect"); else refused ("not in effect: not sent again");
- SET_ALTERNATES: READ_ALTERNATES of that input holds the ranking sent, or not;
- RAISE_EPOCH: STATUS shows the tap at that epoch or above, or not;
- SET_LIMITS: READ_SETTINGS holds the values sent, or not.

A tap that does not answer keeps its commands unknown, and says so; so does a command
whose effect no read shows (a key or an address change): the operator's to check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from host.client.tap_client import TapClient
from host.client.tap_errors import TapError
from host.store.inventory import Inventory
from host.store.records import CommandRecord, CommandState

OPEN = (CommandState.PENDING, CommandState.SENT, CommandState.UNKNOWN)


def reconcile_commands(inventory: Inventory, reach: Callable[[str], tuple[TapClient, int] | None]) -> list[str]:
    """Settle every open command of the journal; `reach(tap_id)` gives the client and
    address of a tap (None: not reachable now). A line per command looked at."""
    lines = []
    for command in inventory.commands():
        if command.state not in OPEN:
            continue
        where = reach(command.tap)
        if where is None:
            lines.append(f"{command.tap}: {command.message} #{command.id} still unknown: its bus is not reachable")
            continue
        client, address = where
        try:
            verdict = _in_effect(client, address, command)
        except TapError as exc:
            lines.append(f"{command.tap}: {command.message} #{command.id} still unknown: {exc}")
            continue
        if verdict is None:
            lines.append(f"{command.tap}: {command.message} #{command.id} still unknown: no read shows its effect")
            continue
        if command.state == CommandState.PENDING:  # journalled, maybe never sent: a PENDING row moves on through SENT
            inventory.update_command(command.id, CommandState.SENT)
        state = CommandState.ACKNOWLEDGED if verdict else CommandState.REFUSED
        note = "in effect at the tap (found at start)" if verdict else "not in effect at the tap: not sent again"
        inventory.update_command(command.id, state, note)
        lines.append(f"{command.tap}: {command.message} #{command.id} {note}")
    return lines


def _in_effect(client: TapClient, address: int, command: CommandRecord) -> bool | None:
    fields: dict[str, Any] = command.fields
    if command.message == "SWITCH":
        status = client.status(address)
        target = int(fields["target_input"])
        relays = 1 << (target - 1) if target else 0
        return status.active_input == target and status.relays_closed == relays
    if command.message == "SET_ALTERNATES":
        held = client.read_alternates(address, int(fields["for_input"])).alternates
        return held == [int(fields[f"alternate_{i}"]) for i in (1, 2, 3) if fields.get(f"alternate_{i}")]
    if command.message == "RAISE_EPOCH":
        return int(client.status(address).epoch) >= int(fields["new_epoch"])
    if command.message == "SET_LIMITS":
        limits = client.read_settings(address).limits
        return all(int(limits.get(name, -1)) == int(value) for name, value in fields.items())
    return None
