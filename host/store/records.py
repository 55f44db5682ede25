"""What the inventory hands out and takes in: taps, their events and the reader's cursor,
journalled commands and their states, and its errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from host.model.errors import OperatorError
from host.model.site_file import TapRole


class InventoryError(OperatorError):
    """The inventory refused an operation; the message says what to do instead."""


class UnknownTap(InventoryError, LookupError):
    """No tap by that id, address or unique id; `suggestions` are the closest tap ids."""

    def __init__(self, ref: object, suggestions: Sequence[str]) -> None:
        self.ref = ref
        self.suggestions = tuple(suggestions)
        hint = f" (did you mean {', '.join(self.suggestions)}?)" if self.suggestions else ""
        super().__init__(f"no tap {ref!r} in the inventory{hint}")


class CommandState(StrEnum):
    PENDING = "pending"  # journalled, not yet on the wire
    SENT = "sent"  # on the wire, no answer yet
    ACKNOWLEDGED = "acknowledged"  # the tap answered that it executed it
    REFUSED = "refused"  # the tap (or the controller) refused it: it did not take effect
    UNKNOWN = "unknown"  # no verified answer: STATUS must tell whether it took effect


# Which state may follow which; a command's outcome, once known, is final.
NEXT_STATES: dict[CommandState, frozenset[CommandState]] = {
    CommandState.PENDING: frozenset({CommandState.SENT, CommandState.REFUSED, CommandState.UNKNOWN}),
    CommandState.SENT: frozenset({CommandState.ACKNOWLEDGED, CommandState.REFUSED, CommandState.UNKNOWN}),
    CommandState.UNKNOWN: frozenset({CommandState.ACKNOWLEDGED, CommandState.REFUSED}),
    CommandState.ACKNOWLEDGED: frozenset(),
    CommandState.REFUSED: frozenset(),
}


class KeyStore(Protocol):
    """What a client needs to sign commands to the taps of one bus."""

    def key_for(self, address: int) -> tuple[bytes, int]: ...

    def commit_counter(self, address: int, counter: int) -> None: ...


@dataclass(frozen=True)
class TapInfo:
    """A tap as the inventory knows it. The key itself is left out on purpose: listings
    are printed and logged; `key_for` is the one way to a key."""

    id: str
    role: TapRole
    address: int | None
    bus: str
    board: str
    unique_id: bytes | None
    rack: str | None
    monitored_source: str | None
    inputs: tuple[str, ...]  # source ids, input 1 first
    alternates: dict[int, tuple[int, ...]]
    has_key: bool
    key_counter: int  # the next counter to sign with
    firmware_version: str | None
    commissioned_at: float | None


@dataclass(frozen=True)
class TapEvent:
    """An event as read from a tap (READ_EVENTS): `seq` is its index in the tap's log of
    boot `boot` (the host's count of the tap's boots), which makes reading the same event
    twice harmless."""

    seq: int
    time_ms: int  # the tap's clock, since that boot
    code: int
    data: dict[str, Any]
    boot: int = 1  # the tap's boot_count (STATUS) when it logged the event


@dataclass(frozen=True)
class EventRecord:
    tap: str
    seq: int
    time_ms: int
    received_at: float  # host time, seconds since the epoch
    code: int
    data: dict[str, Any]
    boot: int = 1


@dataclass
class EventCursor:
    """Where a reader is in one tap's event log (host/ops/event_reader.py)."""

    boot: int = 1  # the tap's boot_count (STATUS) of the boot being read
    next_seq: int = 0


@dataclass(frozen=True)
class CommandRecord:
    id: int
    time: float
    tap: str
    message: str
    fields: dict[str, Any]
    seq: int | None
    counter: int | None
    state: CommandState
    result: str | None
    updated_at: float


TapRef = str | int | bytes  # a tap id, an address, or a unique id (bytes, or 16 hex digits)
