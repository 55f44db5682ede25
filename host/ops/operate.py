"""What every operator command shares: the names of protection states, alarms and
events, reads repeated while they time out, and a tap's inputs by source. Each command
has its module beside this one: readings (status, monitor), event_log, switching,
protection_limits, failover, channel_calibration, waveforms.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

from host.client.tap_errors import TapTimeout
from host.ops.session import OperatorError, Session, tap_address
from host.store.records import TapInfo
from protocol import catalog

T = TypeVar("T")

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

PATIENCE_S = 20.0


def patiently(call: Callable[[], T], deadline: float | None = None) -> T:
    """A read repeated while it times out, until the deadline (a read is idempotent)."""
    end = deadline if deadline is not None else time.monotonic() + PATIENCE_S
    while True:
        try:
            return call()
        except TapTimeout:
            if time.monotonic() > end:
                raise


def bit_names(bits: int, names: dict[int, str]) -> list[str]:
    return [name for bit, name in names.items() if bits & bit]


def source_of(tap: TapInfo, k: int) -> str | None:
    """The source wired to input k of the tap, None if it has no such input."""
    return tap.inputs[k - 1] if 1 <= k <= len(tap.inputs) else None


def site_nominal(session: Session) -> tuple[float, float]:
    site = session.inventory.site() or {}
    return float(site.get("voltage_v", 400.0)) / math.sqrt(3), float(site.get("frequency_hz", 50))


def prepare(session: Session, tap: TapInfo) -> None:
    """Before a signed command: the tap answers, and is in the controller's epoch."""
    client = session.client(tap.bus)
    state = patiently(lambda: client.status(tap_address(tap)))
    session.align_epoch(tap, state.epoch)


def reachable_taps(session: Session, taps: list[TapInfo]) -> list[TapInfo]:
    """The taps on segments this session has buses for. When it has none for any of them,
    the one-line error that says how to give them (a command that reads several segments
    reads what it can reach, and says which it could not)."""
    reachable = [tap for tap in taps if session.can_reach(tap.bus)]
    if taps and not reachable:
        session.ports_for(taps[0].bus)  # raises, naming the options
    return reachable


def input_of(tap: TapInfo, source: str) -> int:
    """An input by its source id or its number."""
    if source in tap.inputs:
        return tap.inputs.index(source) + 1
    if source.isdigit() and 1 <= int(source) <= len(tap.inputs):
        return int(source)
    raise OperatorError(f"tap {tap.id} has no input on source {source!r} (inputs: "
                        f"{', '.join(f'{k} {s}' for k, s in enumerate(tap.inputs, start=1)) or 'none'})")
