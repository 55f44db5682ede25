"""The fleet's side of the taps' event logs: where it is in each, read right across a
tap's reboots (host/ops/event_reader.py), and each tap event as an event of the fleet's
log (MOVED, TRANSFER, RACK_UNPOWERED), counting what it cannot say and what was lost."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from host.client.tap_client import TapClient
from host.client.tap_errors import TapError
from host.fleet.routes import Route
from host.model.fleet import EventKind
from host.ops import event_reader as tap_events
from host.store.records import EventCursor
from protocol import catalog

_UNPOWERING_CODES = (catalog.EV_OVERLOAD_TRIP, catalog.EV_LOCKOUT, catalog.EV_DOWNSTREAM_FAULT)


@dataclass
class _Harvest:
    """Where this fleet is in one tap's event log."""

    cursor: EventCursor | None = None  # where the next events are; None: not yet contacted
    confirmed_moves: int = 0  # moves confirmed by STATUS whose EV_COMMAND is yet to be collected


class EventHarvest:
    """Collects each rack tap's events into the fleet's log through `append`."""

    def __init__(self, client_of: Callable[[Route], TapClient], routes: Mapping[str, Route], rack_ids: Sequence[str],
                 source_at: Callable[[Route, int], str | None], append: Callable[..., None],
                 draw: Mapping[str, float]) -> None:
        self._client_of = client_of
        self._routes = routes
        self._source_at = source_at
        self._append = append
        self._draw = draw  # each rack's last measured draw, as the fleet keeps it
        self._harvest = {rack_id: _Harvest() for rack_id in rack_ids}
        self.lost_events: dict[str, int] = dict.fromkeys(rack_ids, 0)
        self.other_events: dict[str, int] = dict.fromkeys(rack_ids, 0)

    def confirm_move(self, rack_id: str) -> None:
        """A move confirmed by STATUS: its EV_COMMAND, when collected, is not logged again."""
        self._harvest[rack_id].confirmed_moves += 1

    def ensure_cursor(self, rack_id: str) -> bool:
        """Set the tap's cursor at its head on first contact; False if it did not answer."""
        harvest = self._harvest[rack_id]
        if harvest.cursor is not None:
            return True
        route = self._routes[rack_id]
        address = route.address
        try:
            boot = self._boot_count(route)  # first, so that the head read next is of this boot
            head = int(self._client_of(route).read_events(address, 0, 0).fields["head"])
        except TapError:
            return False
        harvest.cursor = EventCursor(boot=boot or 1, next_seq=head)  # what happens from now on
        return True

    def _boot_count(self, route: Route) -> int | None:
        """The tap's boot count (STATUS, protocol minor 3), which names its event log's boot."""
        boot_count = self._client_of(route).status(route.address).fields.get("boot_count")
        return None if boot_count is None else int(boot_count)

    def collect(self, rack_id: str) -> None:
        """Everything the tap logged since the cursor, into the host log."""
        if not self.ensure_cursor(rack_id):
            return
        harvest = self._harvest[rack_id]
        route = self._routes[rack_id]
        assert harvest.cursor is not None
        try:
            batch = tap_events.read_new(partial(self._client_of(route).read_events, route.address), harvest.cursor,
                                        self._boot_count(route))
        except TapError:
            return  # collected at a later call
        if batch.rebooted:
            harvest.confirmed_moves = 0  # their EV_COMMANDs went with the old boot's log
        self.lost_events[rack_id] += batch.lost
        for event in batch.events:
            self._translate(route, harvest, {"code": event.code, **event.data})

    def _translate(self, route: Route, harvest: _Harvest, event: Mapping[str, int]) -> None:
        code, k = int(event["code"]), int(event["input"])
        rack_id = route.rack_id
        if code == catalog.EV_COMMAND and event["value"] == catalog.T_SWITCH:
            if harvest.confirmed_moves > 0:
                harvest.confirmed_moves -= 1  # logged as MOVED when `move` confirmed it
                return
            self._append(EventKind.MOVED, rack_id, self._source_at(route, k))
        elif code == catalog.EV_TRANSFER:
            draw = self._draw[rack_id]
            self._append(EventKind.TRANSFER, rack_id, self._source_at(route, k), 0.0 if math.isnan(draw) else draw)
        elif code in _UNPOWERING_CODES:
            self._append(EventKind.RACK_UNPOWERED, rack_id, self._source_at(route, k), float(event["value"]) / 1000.0)
        else:
            self.other_events[rack_id] += 1
