"""A bounded log of fleet events with indices rising by one, read like the taps'
READ_EVENTS: from `max(since, oldest kept)`, at most `max_count`."""

from __future__ import annotations

from host.model.fleet import EventKind, EventPage, FleetEvent


class EventLog:
    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._events: list[FleetEvent] = []
        self._oldest = 0  # index of self._events[0]

    @property
    def head(self) -> int:
        """The index the next event will get."""
        return self._oldest + len(self._events)

    def append(
        self,
        time_s: float,
        kind: EventKind,
        rack_id: str | None = None,
        source_id: str | None = None,
        value: float = 0.0,
    ) -> FleetEvent:
        event = FleetEvent(self.head, time_s, kind, rack_id, source_id, value)
        self._events.append(event)
        if len(self._events) >= 2 * self._capacity:  # drop the oldest in bulk: appends stay O(1) amortised
            drop = len(self._events) - self._capacity
            del self._events[:drop]
            self._oldest += drop
        return event

    def read(self, since: int, max_count: int = 1000) -> EventPage:
        head = self.head
        first = min(max(since, self._oldest), head)
        start = first - self._oldest
        events = tuple(self._events[start : start + max(max_count, 0)])
        return EventPage(first=first, head=head, events=events)
