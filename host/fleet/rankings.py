"""The fleet's failover rankings on the taps: one ranking per rack, for one source, as the
fleet model has it, kept on taps that hold one per input (bus_fleet.py, "Alternates").

`set` sets the ranking of the input of `for_source` and clears every other input that may
hold one: all of them the first time (the board's defaults, or another controller's),
afterwards the input of the previous `for_source`. `read` is what was last acknowledged,
checked against what the tap holds for that input (READ_ALTERNATES; the tap wins a
disagreement); before any `set`, what STATUS reports for the active input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from host.client.tap_client import TapClient
from host.client.tap_errors import FencedOut, TapError, TapRefused, TapTimeout
from host.fleet.routes import Route
from host.model.fleet import Alternates, CommandResult, Done, Refusal, Refused
from host.ops.journal import CommandJournal, journalled
from protocol import catalog


class Rankings:
    """The rankings of every rack's tap, reached by `client`, each command in `journal`."""

    def __init__(self, client_of: Callable[[Route], TapClient], routes: Mapping[str, Route],
                 journal: CommandJournal) -> None:
        self._client_of = client_of
        self._journal = journal
        self._acknowledged: dict[str, Alternates] = {}  # what this fleet last had acknowledged
        # inputs that may hold a ranking the fleet's one-ranking-per-rack model does not want
        self._to_clear: dict[str, set[int]] = {rack_id: set(route.source_of) for rack_id, route in routes.items()}

    def read(self, route: Route) -> Alternates:
        """The rack's ranking (module docstring); TapTimeout when the tap is silent and none
        was acknowledged yet."""
        record = self._acknowledged.get(route.rack_id)
        for_input = route.input_of.get(record.for_source) if record is not None and record.for_source else None
        try:
            if for_input:
                held = self._client_of(route).read_alternates(route.address, for_input)
                on_tap = _named(route, for_input, held.alternates)
            else:
                status = self._client_of(route).status(route.address)
                on_tap = _named(route, int(status.fields["alternates_for"]),
                                [int(status.fields[f"alternate_{i}"]) for i in (1, 2, 3)])
        except TapError as exc:
            if record is not None:
                return record  # the last acknowledged: the best there is while the tap is silent
            raise TapTimeout(f"the tap of rack {route.rack_id!r} did not answer: {exc}", route.address,
                             exc.request) from None
        if record is None:
            return on_tap
        if for_input and on_tap.ranked != record.ranked:  # the tap lost or changed it: the tap is the truth
            self._acknowledged[route.rack_id] = on_tap
            return on_tap
        return record

    def set(self, route: Route, for_source: str, ranked: tuple[str, ...]) -> CommandResult:
        """SET_ALTERNATES for the input of `for_source`, then clear the others it may hold;
        Done(changed) says whether the ranking differs from what it was."""
        wanted = Alternates(for_source, ranked)
        try:
            before = self.read(route)
        except TapTimeout as exc:
            return Refused(Refusal.NO_ANSWER, str(exc))
        for_input = route.input_of[for_source]
        inputs = [route.input_of[s] for s in ranked]
        try:
            self._send(route, for_input, inputs)
        except FencedOut:  # before TapRefused, which it is: not one command refused, all of them
            raise
        except TapRefused as exc:
            if exc.outcome_unknown or exc.code not in (catalog.E_OUT_OF_RANGE, catalog.E_BUSY):
                self._forget(route)
                return Refused(Refusal.NO_ANSWER, f"SET_ALTERNATES: {exc.text}")
            reason = Refusal.BAD_ALTERNATES if exc.code == catalog.E_OUT_OF_RANGE else Refusal.BUSY
            return Refused(reason, f"the tap refused: {exc.text}")
        except TapError as exc:
            self._forget(route)
            return Refused(Refusal.NO_ANSWER, f"SET_ALTERNATES: {exc}")
        previous = self._acknowledged.get(route.rack_id)
        if previous is not None and previous.for_source not in (None, for_source):
            self._to_clear[route.rack_id].add(route.input_of[previous.for_source])
        self._acknowledged[route.rack_id] = wanted
        self._to_clear[route.rack_id].discard(for_input)
        self._clear_others(route)
        return Done(changed=before != wanted)

    def _send(self, route: Route, for_input: int, inputs: list[int]) -> None:
        client = self._client_of(route)
        fields = {"for_input": for_input} | {f"alternate_{i + 1}": k for i, k in enumerate([*inputs, 0, 0, 0][:3])}
        journalled(self._journal, route.tap_id, "SET_ALTERNATES", fields,
                   partial(client.set_alternates, route.address, for_input, inputs), client)

    def _forget(self, route: Route) -> None:
        """After a SET_ALTERNATES of unknown outcome: the next read asks the tap, and the next
        set clears every other input again, as on first contact."""
        self._acknowledged.pop(route.rack_id, None)
        self._to_clear[route.rack_id] = set(route.source_of)

    def _clear_others(self, route: Route) -> None:
        """Clear the rankings the fleet's model does not want; what fails is tried next time."""
        pending = self._to_clear[route.rack_id]
        for k in sorted(pending):
            try:
                self._send(route, k, [])
            except FencedOut:
                raise
            except TapError:
                continue
            pending.discard(k)


def _named(route: Route, for_input: int, inputs: list[int]) -> Alternates:
    """A tap's ranking for one input (0s end it) by source: none if that input holds none."""
    ranked = []
    for k in inputs:
        if not k or k not in route.source_of:
            break  # the end, or an input the site does not wire: nothing the fleet can name
        ranked.append(route.source_of[k])
    if not for_input or for_input not in route.source_of or not ranked:
        return Alternates(None, ())
    return Alternates(route.source_of[for_input], tuple(ranked))
