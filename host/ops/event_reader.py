"""Reading a tap's event log, right across its reboots: the one reader that `ibt events`
(host/ops/event_log.py) and the fleet over the buses (host/fleet/bus_fleet.py) share.

A tap's log lives in RAM: after a boot its indices start again at 0 (SPEC.md,
READ_EVENTS). An index therefore names an event only within one boot, and a reader that
resumed from its last index after a reboot would skip the new boot's first events, its
boot event included. So events are keyed by (boot, index), the boot being the tap's own
`boot_count` (STATUS, protocol minor 3). A tap that does not report it is followed by
its head alone: a head below the cursor is a new boot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from host.client.replies import Reply
from host.store.records import EventCursor, TapEvent

READ_MAX = 30  # events per READ_EVENTS: what fits in a frame (SPEC.md)


@dataclass
class EventBatch:
    events: list[TapEvent] = field(default_factory=list)
    lost: int = 0  # overwritten in the tap's ring before they were read
    rebooted: bool = False


def read_new(read_events: Callable[[int, int], Reply], cursor: EventCursor, boot_count: int | None) -> EventBatch:
    """Every event the tap logged after the cursor, which it advances once all are read (a
    read that fails half-way leaves it as it was, so nothing is skipped). `read_events(since,
    max_count)` is one READ_EVENTS; `boot_count` the tap's, from a STATUS read just before
    (None if the tap does not report it)."""
    batch = EventBatch()
    boot, since = cursor.boot, cursor.next_seq
    if boot_count is not None and boot_count != boot:
        boot, since, batch.rebooted = boot_count, 0, True
    while True:
        reply = read_events(since, READ_MAX)
        first, head = int(reply["first"]), int(reply["head"])
        if head < since:  # a new log from 0 that the boot count did not show
            boot, since, batch.rebooted = boot + 1, 0, True
            continue
        batch.lost += max(0, first - since)
        found = [TapEvent(first + n, int(e["time_ms"]), int(e["code"]),
                          {"input": int(e["input"]), "value": int(e["value"])}, boot)
                 for n, e in enumerate(reply["events"])]
        batch.events += found
        since = first + len(found)
        if not found or since >= head:
            break
    cursor.boot, cursor.next_seq = boot, since
    return batch
