"""The one event reader (host/ops/event_reader.py) on a tap's log as READ_EVENTS serves it: a
ring of RAM that starts again at index 0 on every boot."""

from __future__ import annotations

from typing import Any

import pytest

from host.client.tap_errors import TapTimeout
from host.ops.event_reader import READ_MAX, read_new
from host.store.records import EventCursor


class Log:
    """A tap's log: `capacity` events in a ring, a boot count, a reboot that empties it."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self.boot_count = 1
        self.events: list[dict[str, int]] = []
        self.head = 0
        self.fail_after: int | None = None
        self.reads = 0

    def log(self, code: int, n: int = 1) -> None:
        for _ in range(n):
            self.events.append({"time_ms": 10 * self.head, "code": code, "input": 1, "value": self.head})
            self.head += 1

    def reboot(self) -> None:
        self.boot_count += 1
        self.events, self.head = [], 0
        self.log(1)  # the boot event, index 0

    def read(self, since: int, max_count: int) -> dict[str, Any]:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise TapTimeout("no answer", 7, "READ_EVENTS")
        oldest = max(0, self.head - self.capacity)
        first = max(since, oldest)
        count = max(0, min(max_count, READ_MAX, self.head - first))
        return {"first": first, "head": self.head, "events": self.events[first:first + count]}


def test_a_reboot_that_logged_as_many_events_as_before_is_seen_by_its_boot_count() -> None:
    tap = Log()
    tap.log(1)
    cursor = EventCursor(boot=tap.boot_count)
    assert [e.seq for e in read_new(tap.read, cursor, tap.boot_count).events] == [0]
    tap.reboot()  # the head is 1 again: by index alone, nothing new
    batch = read_new(tap.read, cursor, tap.boot_count)
    assert batch.rebooted and [(e.boot, e.seq, e.code) for e in batch.events] == [(2, 0, 1)]
    assert (cursor.boot, cursor.next_seq) == (2, 1)


def test_without_a_boot_count_a_fallen_head_is_a_new_boot() -> None:
    tap = Log()
    tap.log(7, 5)
    cursor = EventCursor()
    read_new(tap.read, cursor, None)
    tap.reboot()
    batch = read_new(tap.read, cursor, None)
    assert batch.rebooted and [(e.boot, e.seq) for e in batch.events] == [(2, 0)]


def test_pages_overwritten_events_and_a_read_that_fails_half_way() -> None:
    tap = Log(capacity=40)
    tap.log(7, 100)  # 60 of them overwritten before the first read
    cursor = EventCursor()
    batch = read_new(tap.read, cursor, 1)
    assert batch.lost == 60 and [e.seq for e in batch.events] == list(range(60, 100)) and cursor.next_seq == 100
    tap.log(7, 35)
    tap.fail_after = tap.reads + 1  # the second page gets no answer
    with pytest.raises(TapTimeout):
        read_new(tap.read, cursor, 1)
    assert cursor.next_seq == 100  # nothing skipped: the next read starts where the last one ended
    tap.fail_after = None
    assert [e.seq for e in read_new(tap.read, cursor, 1).events] == list(range(100, 135))
