"""The controller epoch on every tap of the fleet (SPEC.md, "Controller epoch"): taking
the site over, and each tap brought to the fleet's epoch before a command.

Taking over reads every tap's epoch, picks one above all of them and the fleet's own,
makes it durable (`persist_epoch`: before any tap depends on it), and raises each tap
to it with a journalled RAISE_EPOCH. A tap that does not answer then is raised before
the fleet's first command to it (`align`). A tap already above the fleet's epoch belongs
to another controller: the fleet is fenced out and sends it nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from host.client.tap_client import TapClient
from host.client.tap_errors import FencedOut, TapError
from host.fleet.routes import Route
from host.ops.journal import CommandJournal, journalled
from protocol import catalog


class Epochs:
    def __init__(self, clients: Mapping[str, TapClient], routes: Mapping[str, Route],
                 monitors: Mapping[str, tuple[str, int]], monitor_records: Mapping[str, object],
                 journal: CommandJournal) -> None:
        self._clients = clients
        self._journal = journal
        self._taps = [(r.segment, r.address) for r in routes.values()] + list(monitors.values())
        self._tap_ids = {(r.segment, r.address): r.tap_id for r in routes.values()}
        for source_id, where in monitors.items():
            self._tap_ids[where] = str(getattr(monitor_records.get(source_id), "id", f"monitor of {source_id}"))

    def take_over(self, persist_epoch: Callable[[int], None] | None = None) -> int:
        """The new epoch, raised on every tap that answers (module docstring)."""
        highest = max(client.epoch for client in self._clients.values())
        for segment, address in self._taps:
            try:
                highest = max(highest, int(self._clients[segment].status(address).epoch))
            except TapError:
                continue
        epoch = highest + 1
        if persist_epoch is not None:
            persist_epoch(epoch)
        for client in self._clients.values():
            client.epoch = epoch
        for segment, address in self._taps:
            try:
                self._raise(segment, address)
            except FencedOut:
                raise
            except TapError:
                continue  # raised at its first command
        return epoch

    def align(self, route: Route, tap_epoch: int) -> None:
        """Before a command: a tap behind the fleet's epoch is raised to it; one ahead
        belongs to another controller (FencedOut, nothing sent)."""
        client = self._clients[route.segment]
        if tap_epoch > client.epoch:
            client.fenced = True
            raise FencedOut(route.address, "SWITCH", {"request_type": catalog.T_SWITCH,
                                                      "error": catalog.E_STALE_EPOCH, "detail": tap_epoch})
        if tap_epoch < client.epoch:
            self._raise(route.segment, route.address)

    def _raise(self, segment: str, address: int) -> None:
        client = self._clients[segment]
        tap_id = self._tap_ids.get((segment, address), f"{segment}:{address}")
        journalled(self._journal, tap_id, "RAISE_EPOCH", {"new_epoch": client.epoch},
                   partial(client.raise_epoch, address), client)
