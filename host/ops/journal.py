"""Every signed command journalled: recorded before it is sent, then moved on as its
answer says (pending, sent, then acknowledged, refused, or unknown when no verified
answer came). The inventory is the durable journal (host/store/inventory.py); a fleet
without one keeps a `MemoryJournal`, so its commands are still accounted for.

A REPLAY to a first copy means the tap's counter was ahead of ours (after a tap's reset,
say): the client has caught its counter up and the command did not run, so it is sent
once more, under the same journal entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from host.client.keys import NoKey
from host.client.replies import Reply
from host.client.tap_client import TapClient
from host.client.tap_errors import FencedOut, TapRefused, TapTimeout
from host.store.records import NEXT_STATES, CommandState, InventoryError
from protocol import catalog


class CommandJournal(Protocol):
    """Where commands are journalled: the inventory, or a `MemoryJournal`."""

    def record_command(self, tap: str, message: str, fields: dict[str, Any]) -> int: ...

    def update_command(self, command_id: int, state: CommandState, result: str | None = None) -> None: ...

    def note_frame(self, command_id: int, seq: int, counter: int) -> None:
        """The signed frame's sequence number and counter, durable before it leaves."""


@dataclass
class JournalEntry:
    id: int
    time: float
    tap: str
    message: str
    fields: dict[str, Any]
    state: CommandState = CommandState.PENDING
    result: str | None = None
    seq: int | None = None
    counter: int | None = None


@dataclass
class MemoryJournal:
    """A journal kept in memory, with the inventory's rules for moving a command on."""

    entries: list[JournalEntry] = field(default_factory=list)
    clock: Callable[[], float] = time.time

    def record_command(self, tap: str, message: str, fields: dict[str, Any]) -> int:
        self.entries.append(JournalEntry(len(self.entries) + 1, self.clock(), tap, message, dict(fields)))
        return len(self.entries)

    def update_command(self, command_id: int, state: CommandState, result: str | None = None) -> None:
        entry = self.entries[command_id - 1]
        if state != entry.state and state not in NEXT_STATES[entry.state]:
            raise ValueError(f"command {command_id}: cannot go from {entry.state} to {state}")
        entry.state, entry.result = state, result if result is not None else entry.result

    def note_frame(self, command_id: int, seq: int, counter: int) -> None:
        entry = self.entries[command_id - 1]
        entry.seq, entry.counter = seq, counter


def journalled(journal: CommandJournal, tap_id: str, message: str, fields: dict[str, Any],
               send: Callable[[], Reply], client: TapClient | None = None) -> Reply:
    """Send one signed command, journalled; once more on a REPLAY to the first copy.
    With the `client` that signs it, the frame's seq and counter are journalled before
    it leaves. Refusals and timeouts are re-raised after the journal has them."""
    command_id = journal.record_command(tap_id, message, fields)
    if client is not None:
        saved = client.on_signed
        client.on_signed = lambda address, seq, counter: journal.note_frame(command_id, seq, counter)
    try:
        return _send(journal, command_id, send)
    finally:
        if client is not None:
            client.on_signed = saved


def _send(journal: CommandJournal, command_id: int, send: Callable[[], Reply]) -> Reply:
    journal.update_command(command_id, CommandState.SENT)
    try:
        try:
            reply = send()
        except TapRefused as exc:
            if isinstance(exc, FencedOut) or exc.code != catalog.E_REPLAY or exc.outcome_unknown:
                raise
            reply = send()  # the client caught its counter up: this copy is fresh
    except TapRefused as exc:
        state = CommandState.UNKNOWN if exc.outcome_unknown else CommandState.REFUSED
        journal.update_command(command_id, state, exc.text)
        raise
    except TapTimeout as exc:
        journal.update_command(command_id, CommandState.UNKNOWN, str(exc))
        raise
    except (NoKey, InventoryError) as exc:  # no key or counter: the frame was never built
        journal.update_command(command_id, CommandState.REFUSED, f"not sent: {exc}")
        raise
    except BaseException as exc:
        journal.update_command(command_id, CommandState.UNKNOWN, f"not confirmed: {exc}")
        raise
    journal.update_command(command_id, CommandState.ACKNOWLEDGED, "cached" if reply.cached else "ack")
    return reply
