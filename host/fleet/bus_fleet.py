"""The fleet interface (host/model/fleet.py) over the buses: the real taps, reached by a
`TapClient`, behave for the controller as the site simulator does, and pass the same
conformance suite (tests/fleet_conformance.py).

Mapping
-------
Racks and sources keep their site ids; each rack's tap has a bus address (`taps`, by
rack id or tap id), and the site's feeds say which source is on which input of each
tap. A site source becomes the input number wired to it on that tap, and back: `move`
sends SWITCH with the inputs of `expected` and `target` (None: input 0, output open),
`set_alternates` sends SET_ALTERNATES with input numbers. Nothing is guessed: a source
no input of the tap is wired to is refused before anything is sent.

Polling
-------
`read_telemetry` is one sweep: one TELEMETRY per tap, one tap at a time in the site's
rack order (docs/polling.md), then, if the link is a `RedundantLink`, its probe of a
bus that carried no traffic lately (a STATUS to a tap that just answered). A tap that
does not answer is not invented: its row reads as the data model allows an unknown
row to read (draw, current and voltages NaN, inputs neither present nor healthy) and
its rack is listed in `unanswered`. The arrays have no "unknown" value for the active
source column, so it holds -1 there, which elsewhere means output open: a consumer
must tell the two apart by the NaN draw (or by `unanswered`).

Measured values are what the taps measure: draw is the tap's real power, current its
RMS output current, an input's voltage its RMS voltage times `voltage_scale` (the taps
measure phase to neutral; the site's voltage, which the simulator reports, is line to
line: sqrt 3 by default).

Sources
-------
`read_sources` joins each source's adapter (host/sim/site/adapters.py) where one is given;
without one (the virtual rig has no UPS controllers) the status is derived from the
latest sweep (host/fleet/derived_sources.py says how, and what it leaves unknown).

Health signals come from the source's monitor tap (`monitors`: source id -> the address
of the monitor-role tap fitted to it), with or without an adapter: one HEALTH per
monitored source and `read_sources`, in the site's source order, turned into the fault
predictor's signals and units (host/model/fleet.py `HealthSignals`: degrees C, mg, plain
kurtosis and crest factor, percent). A signal the tap does not vouch for (its
`sensors_ok` bit clear: no sensor, or no window measured yet) is None, as is a window
value older than `HEALTH_MAX_AGE_MS`; a value the tap saturated at its field's maximum
is passed on as it is (a lower bound: far above any threshold). A source with no
monitor, or whose monitor did not answer, has `signals` None (why: `monitor_errors`).

`read_sources` logs SOURCE_FAILED, SOURCE_TRIPPED, SOURCE_EXHAUSTED and SOURCE_RESTORED
when it sees a source's state change from what the previous `read_sources` saw.

Commands and their answers
--------------------------
Refusals the host can decide from the site model (unknown rack or source, a source the
tap is not wired to, a source in maintenance or down by its adapter, malformed rankings)
are made before anything is sent. A move is then the one move of host/ops/move.py: the
checks the live readings allow (compare-and-swap, protection, the target present,
healthy, in tolerance and in phase, room on it by the latest sweep: NO_ROOM), the
journalled SWITCH (every command goes to `journal`), and STATUS until the target is
active. NAKs map to the fleet's refusals: CAS_MISMATCH (detail: the active input,
turned back into a source), SOURCE_UNHEALTHY, PROTECTION_LOCKOUT / DOWNSTREAM_FAULT /
INTERNAL -> PROTECTION, BUSY, OUT_OF_RANGE -> UNREACHABLE_SOURCE (SWITCH) or
BAD_ALTERNATES (SET_ALTERNATES). Silence, an unsigned refusal, a REPLAY to a resend, or
any other NAK is NO_ANSWER unless STATUS then shows the move done: the outcome is
unknown, re-read, then retry (compare-and-swap makes that safe). STALE_EPOCH is no
refusal of one command: another controller owns the site, and the client's `FencedOut`
is raised.

A SWITCH's ACK means the transfer started; `move` reads STATUS until the target input
is active (up to `transfer_timeout_s`) before it answers Done, so a telemetry read
after it shows the move. Moving to the active source is a STATUS read, not a command.

Alternates
----------
A tap keeps a ranking per input; the fleet keeps one per rack, for one source
(host/fleet/rankings.py says how the two are kept in step).

Events and `since`
------------------
Event indices are the host's own: one log (host/model/events.py) numbered from 0 when
the fleet is made. `read_events` first collects what every tap logged since its
cursor (READ_EVENTS, one tap at a time, paged), appends it in the order collected,
then answers from the host log exactly as the simulator does: from `max(since, oldest
kept)`. So `since` counts host events across all taps; a tap's own indices never show.
Each tap's cursor starts at the tap's head when the fleet first talks to it (the fleet
reports what happens while it runs, not the taps' history). Events of a tap that did
not answer are collected at a later call, after other taps' later events; a time is
the host clock when collected (never earlier than the previous event's), not when it
happened on the tap. Events the tap overwrote before they were read are counted in
`lost_events`. A tap that rebooted is read from 0 of its new boot: its STATUS
`boot_count` changed, or (a tap that does not report one) its head fell below the cursor
(host/ops/event_reader.py, the reader `ibt events` uses too).

What goes into the log: MOVED when `move` confirms a transfer (the tap's matching
EV_COMMAND is then skipped; an EV_COMMAND of a SWITCH this fleet did not see confirmed,
an answer lost, say, becomes MOVED when collected), ALTERNATES_SET when
`set_alternates` changed the ranking, TRANSFER for the tap's EV_TRANSFER, and
RACK_UNPOWERED for an overload trip, a lockout or a downstream fault (the tap's
protection opened or blocked the rack's feed). Other tap events (boot, host lost,
authentication failure, relay mismatch) have no kind in the fleet's model and are
only counted in `other_events`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import MappingProxyType

import numpy as np

from host.client.replies import Telemetry
from host.client.tap_client import TapClient
from host.client.tap_errors import TapError
from host.fleet.derived_sources import derived_status
from host.fleet.epochs import Epochs
from host.fleet.event_harvest import EventHarvest
from host.fleet.monitor_health import health_signals
from host.fleet.rankings import Rankings
from host.fleet.routes import HasAddress, Route, input_sources, monitor_addresses, routes_for
from host.model.arrays import frozen
from host.model.events import EventLog
from host.model.fleet import (
    Alternates,
    CommandResult,
    Done,
    EventKind,
    EventPage,
    FleetTelemetry,
    HealthSignals,
    Refusal,
    Refused,
    SourceStatus,
    UnknownRackError,
    alternates_refusal,
)
from host.model.site import Availability, Site
from host.model.sources import SourceAdapter, SourceState
from host.ops.journal import CommandJournal, MemoryJournal
from host.ops.move import SiteNominal, TapWiring, move_tap
from host.wire import framing, messages
from protocol import catalog

MAX_ALTERNATES = 3  # SET_ALTERNATES carries three
DEFAULT_TRANSFER_TIMEOUT_S = 5.0  # a planned transfer waits up to the tap's phase_wait_ms (2 s), then breaks and makes
DEFAULT_SOURCES_MAX_AGE_S = 1.0  # `read_sources` reuses a sweep this young: one poll period
_SOURCE_EVENTS = {
    SourceState.FAILED: EventKind.SOURCE_FAILED,
    SourceState.TRIPPED: EventKind.SOURCE_TRIPPED,
    SourceState.EXHAUSTED: EventKind.SOURCE_EXHAUSTED,
}


_UNPOWERING_CODES = (catalog.EV_OVERLOAD_TRIP, catalog.EV_LOCKOUT, catalog.EV_DOWNSTREAM_FAULT)


class BusFleet:
    """The fleet interface over the buses; see the module docstring.

    `taps` maps each rack (by rack id or by its tap's id) to its tap's address or a
    record with an `address`. `source_adapters` (by source id) replace the derived
    source status where given. `monitors` maps a source id to the address (or record) of
    the monitor tap fitted to it: its health signals. `clock` stamps telemetry and events
    (wall clock by default). `transfer_timeout_s` is how long `move` waits for a started
    transfer. Every command is journalled in `journal` (the inventory, for a durable
    one; in memory by default), and a move may load its target up to its capacity times
    (1 + `overload_allowance`).
    """

    def __init__(
        self,
        site: Site,
        taps: Mapping[str, int | HasAddress],
        client: TapClient | Mapping[str, TapClient],
        source_adapters: Mapping[str, SourceAdapter] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S,
        sources_max_age_s: float = DEFAULT_SOURCES_MAX_AGE_S,
        voltage_scale: float = math.sqrt(3),
        event_capacity: int = 100_000,
        monitors: Mapping[str, int | HasAddress] | None = None,
        journal: CommandJournal | None = None,
        overload_allowance: float = 0.0,
    ) -> None:
        self._site = site
        self._clients: dict[str, TapClient] = {"": client} if isinstance(client, TapClient) else dict(client)
        if not self._clients:
            raise ValueError("a fleet over the buses needs a client for at least one segment")
        self._clock = clock
        self.transfer_timeout_s = transfer_timeout_s
        self.sources_max_age_s = sources_max_age_s
        self.voltage_scale = voltage_scale
        self.journal: CommandJournal = journal if journal is not None else MemoryJournal(clock=clock)
        self.overload_allowance = overload_allowance  # a move may load its target to capacity * (1 + this)
        self._nominal = SiteNominal(site.voltage_v / voltage_scale, site.frequency_hz,
                                    {s.id: s.phase_deg for s in site.sources},
                                    {s.id: s.capacity_kw for s in site.sources})
        self._adapters = dict(source_adapters or {})
        unknown = sorted(set(self._adapters) - set(site.source_index))
        if unknown:
            raise ValueError(f"adapters for sources the site does not have: {', '.join(unknown)}")
        self._routes = routes_for(site, taps, tuple(self._clients))
        self._monitors = monitor_addresses(site, monitors or {}, self._routes, tuple(self._clients))
        self._rack_ids = tuple(rack.id for rack in site.racks)
        self._rack_index = MappingProxyType(dict(site.rack_index))
        self._source_ids = tuple(source.id for source in site.sources)
        self._input_source = input_sources(site, self._routes)
        self._log = EventLog(event_capacity)
        self._last_event_time = -math.inf
        self._latest: tuple[float, FleetTelemetry] | None = None  # (monotonic time, sweep) of the last sweep
        self._draw = dict.fromkeys(self._rack_ids, math.nan)  # each rack's last measured draw
        self._source_states: dict[str, SourceState] = {}
        self.unanswered: frozenset[str] = frozenset()  # racks whose tap did not answer the last sweep
        self.errors: dict[str, str] = {}  # rack -> why its tap did not answer, last sweep
        self.monitor_errors: dict[str, str] = {}  # source -> why its monitor gave no signals, last read_sources
        self._rankings = Rankings(self.client_of, self._routes, self.journal)
        self._epochs = Epochs(self._clients, self._routes, self._monitors, monitors or {}, self.journal)
        self._events_in = EventHarvest(self.client_of, self._routes, self._rack_ids, self._source_at, self._append,
                                       self._draw)
        self.lost_events = self._events_in.lost_events  # per rack: overwritten before they were read
        self.other_events = self._events_in.other_events  # per rack: tap events the fleet log has no kind for

    # -- reads ----------------------------------------------------------------------------

    @property
    def site(self) -> Site:
        return self._site

    def read_telemetry(self) -> FleetTelemetry:
        """One sweep: TELEMETRY from each tap in rack order; see the module docstring."""
        n_racks, width = self._input_source.shape
        time_s = self._clock()
        active = np.full(n_racks, -1, dtype=np.int64)
        draw = np.full(n_racks, math.nan)
        current = np.full(n_racks, math.nan)
        volts = np.full((n_racks, width), math.nan)
        present = np.zeros((n_racks, width), dtype=bool)
        healthy = np.zeros((n_racks, width), dtype=bool)
        errors: dict[str, str] = {}
        readings = self._sweep(errors)
        for r, rack_id in enumerate(self._rack_ids):
            route = self._routes[rack_id]
            reading = readings.get(rack_id)
            if reading is None:
                continue
            inputs = reading.inputs
            active_input = reading.active_input
            if active_input and active_input not in route.source_of:
                errors[rack_id] = f"the tap reports input {active_input} active, which the site does not wire"
                continue
            if active_input:
                active[r] = self._site.source_index[route.source_of[active_input]]
                draw[r] = max(float(reading.fields["power_W"]), 0.0) / 1000.0
                current[r] = float(reading.fields["current_mA"]) / 1000.0
            else:  # output open: nothing flows, whatever noise the meter shows
                draw[r] = 0.0
                current[r] = 0.0
            for k, values in enumerate(inputs[: route.n_inputs], start=1):
                if k not in route.source_of:
                    continue
                if not values["state"] & catalog.INPUT_SETTLING:  # else a window across a loss: no reading
                    volts[r, k - 1] = values["voltage_mV"] / 1000.0 * self.voltage_scale
                present[r, k - 1] = bool(values["state"] & catalog.INPUT_PRESENT)
                healthy[r, k - 1] = bool(values["state"] & catalog.INPUT_HEALTHY)
            self._draw[rack_id] = float(draw[r])
        self.errors = errors
        self.unanswered = frozenset(errors)
        telemetry = FleetTelemetry(
            time_s=time_s,
            rack_ids=self._rack_ids,
            source_ids=self._source_ids,
            rack_index=self._rack_index,
            active=frozen(active),
            draw_kw=frozen(draw),
            current_a=frozen(current),
            input_source=frozen(self._input_source),
            input_voltage_v=frozen(volts),
            input_present=frozen(present),
            input_healthy=frozen(healthy),
        )
        self._latest = (time.monotonic(), telemetry)
        return telemetry

    def client_of(self, route: Route) -> TapClient:
        """The client of the route's bus segment."""
        return self._clients[route.segment]

    def _sweep(self, errors: dict[str, str]) -> dict[str, Telemetry]:
        """TELEMETRY from every rack's tap: one segment's taps one at a time in rack order,
        the segments at once (each is its own pair of buses); then each segment's probe of
        a bus that carried no traffic lately. A tap that does not answer goes in `errors`."""
        by_segment: dict[str, list[Route]] = {}
        for rack_id in self._rack_ids:
            route = self._routes[rack_id]
            by_segment.setdefault(route.segment, []).append(route)

        def sweep(routes: list[Route]) -> tuple[dict[str, Telemetry], dict[str, str]]:
            got: dict[str, Telemetry] = {}
            failed: dict[str, str] = {}
            for route in routes:
                try:
                    got[route.rack_id] = self.client_of(route).telemetry(route.address)
                except TapError as exc:
                    failed[route.rack_id] = str(exc)
            if got:
                first = next(r for r in routes if r.rack_id in got)
                self._maybe_probe(self.client_of(first), first.address)
            return got, failed

        if len(by_segment) == 1:
            results = [sweep(next(iter(by_segment.values())))]
        else:
            with ThreadPoolExecutor(max_workers=len(by_segment)) as pool:
                results = list(pool.map(sweep, by_segment.values()))
        readings: dict[str, Telemetry] = {}
        for got, failed in results:
            readings.update(got)
            errors.update(failed)
        return readings

    def read_sources(self) -> dict[str, SourceStatus]:
        """Each source from its adapter, or derived from the latest sweep (a new one if the
        last is older than `sources_max_age_s` or a command came since), with the health
        signals of its monitor tap, read now (module docstring)."""
        telemetry = self._fresh_telemetry() if len(self._adapters) < len(self._source_ids) else None
        out: dict[str, SourceStatus] = {}
        self.monitor_errors = {}
        for source in self._site.sources:
            signals = self._read_signals(source.id)
            adapter = self._adapters.get(source.id)
            if adapter is not None:
                status = SourceStatus.join(
                    source.kind, adapter.read_reserve_capacity(), adapter.read_health_status(), signals
                )
            else:
                assert telemetry is not None
                status = derived_status(self._site, source.id, telemetry, signals,
                                        self._source_states.get(source.id))
            out[source.id] = status
            self._note_source_state(source.id, status)
        return out

    def alternates(self, rack_id: str) -> Alternates:
        route = self._routes.get(rack_id)
        if route is None:
            raise UnknownRackError(rack_id)
        return self._rankings.read(route)

    def read_events(self, since: int, max_count: int = 1000) -> EventPage:
        for rack_id in self._rack_ids:
            self._events_in.collect(rack_id)
        return self._log.read(since, max_count)

    # -- commands -------------------------------------------------------------------------

    def move(self, rack_id: str, expected: str | None, target: str | None) -> CommandResult:
        """The one move (host/ops/move.py), after the refusals the site model decides."""
        route = self._routes.get(rack_id)
        if route is None:
            return Refused(Refusal.UNKNOWN_RACK, f"no rack {rack_id!r}")
        if target is not None:
            if target not in self._site.source_index:
                return Refused(Refusal.UNKNOWN_SOURCE, f"no source {target!r}")
            if target not in route.input_of:
                return Refused(Refusal.UNREACHABLE_SOURCE, f"no input of rack {rack_id!r} reaches {target!r}")
        expected_input = 0 if expected is None else route.input_of.get(expected)
        if expected_input is None:  # a source this tap has no input on: it cannot be the active one
            expected_input = -1
        if target != expected:
            refusal = self._unhealthy_by_adapter(target)
            if refusal is not None:
                return refusal
        telemetry = self._fresh_telemetry()  # what the other racks draw: the room check counts them
        self._latest = None  # whatever happens next, the last sweep may no longer be the truth
        self._events_in.ensure_cursor(rack_id)
        outcome = move_tap(
            self.client_of(route), self._wiring(route), self._nominal, self.journal,
            expected_input=expected_input, target_input=0 if target is None else route.input_of[target],
            load_on=partial(self._load_on, telemetry, rack_id), overload_allowance=self.overload_allowance,
            confirm_s=self.transfer_timeout_s, before_send=lambda status: self._epochs.align(route, int(status.epoch)))
        if outcome.refusal == Refusal.CAS_MISMATCH:
            actual = self._source_at(route, outcome.actual_input or 0)
            return Refused(Refusal.CAS_MISMATCH, f"rack {rack_id!r} is on {actual!r}, not {expected!r} "
                                                 f"({outcome.reason})", actual)
        if outcome.refusal is not None:
            return Refused(outcome.refusal, outcome.reason)
        if outcome.changed:
            self._events_in.confirm_move(route.rack_id)
            draw = self._draw[route.rack_id]
            self._append(EventKind.MOVED, route.rack_id, target, 0.0 if math.isnan(draw) else draw)
        return Done(changed=outcome.changed)

    def take_over(self, persist_epoch: Callable[[int], None] | None = None) -> int:
        """Fence every other controller out: host/fleet/epochs.py `Epochs.take_over`."""
        return self._epochs.take_over(persist_epoch)

    def heartbeat(self) -> None:
        """The controller's sign of life to every tap, on every bus of every segment."""
        for client in self._clients.values():
            client.broadcast_heartbeat()

    def set_alternates(self, rack_id: str, for_source: str, ranked: Sequence[str]) -> CommandResult:
        route = self._routes.get(rack_id)
        if route is None:
            return Refused(Refusal.UNKNOWN_RACK, f"no rack {rack_id!r}")
        ranked = tuple(ranked)
        refusal = alternates_refusal(self._site, rack_id, for_source, ranked, route.input_of, MAX_ALTERNATES)
        if refusal is not None:
            return refusal
        self._events_in.ensure_cursor(rack_id)
        result = self._rankings.set(route, for_source, ranked)
        if isinstance(result, Done) and result.changed:
            self._append(EventKind.ALTERNATES_SET, rack_id, for_source)
        return result

    # -- internals: reads -------------------------------------------------------------------

    def _fresh_telemetry(self) -> FleetTelemetry:
        if self._latest is not None and time.monotonic() - self._latest[0] <= self.sources_max_age_s:
            return self._latest[1]
        return self.read_telemetry()

    def _read_signals(self, source_id: str) -> HealthSignals | None:
        """HEALTH from the source's monitor tap as the predictor's signals; None without a
        monitor or an answer (the reason in `monitor_errors`)."""
        found = self._monitors.get(source_id)
        if found is None:
            return None
        segment, address = found
        try:
            reply = self._clients[segment].health(address)
        except TapError as exc:
            self.monitor_errors[source_id] = str(exc)
            return None
        return health_signals(reply.fields)

    def _note_source_state(self, source_id: str, status: SourceStatus) -> None:
        """Log a change of state since the previous read_sources (none at the first)."""
        before = self._source_states.get(source_id)
        self._source_states[source_id] = status.state
        if before is None or before == status.state:
            return
        if status.state == SourceState.UP:
            self._append(EventKind.SOURCE_RESTORED, source_id=source_id)
        elif before == SourceState.UP and status.state in _SOURCE_EVENTS:
            self._append(_SOURCE_EVENTS[status.state], source_id=source_id)

    @staticmethod
    def _maybe_probe(client: TapClient, address: int) -> None:
        """Let a redundant link probe its idle bus with a STATUS to a tap that just answered."""
        probe = getattr(client.link, "maybe_probe", None)
        if probe is None:
            return

        def frame() -> bytes:
            request = messages.request(address, "STATUS", client.next_seq())
            return framing.encode_frame(request.to_body())

        probe(frame, client.timeout)

    # -- internals: commands ----------------------------------------------------------------

    def _source_at(self, route: Route, active_input: int) -> str | None:
        return route.source_of.get(active_input) if active_input else None

    def _wiring(self, route: Route) -> TapWiring:
        rated = self._site.racks[self._rack_index[route.rack_id]].rated_kw
        inputs = [route.source_of.get(k) for k in range(1, max(route.source_of, default=0) + 1)]
        return TapWiring(route.tap_id, route.address, inputs, rated)

    def _load_on(self, telemetry: FleetTelemetry, moving: str, source_id: str) -> tuple[float, str]:
        """What the other racks draw from a source, by the latest sweep: a rack whose tap did
        not answer counts at its rating when the source is wired to it (it may be on it)."""
        index = self._site.source_index[source_id]
        load, guessed = 0.0, 0
        for r, rack in enumerate(self._site.racks):
            if rack.id == moving:
                continue
            if rack.id in self.unanswered:
                if source_id in self._routes[rack.id].input_of:
                    load, guessed = load + rack.rated_kw, guessed + 1
            elif telemetry.active[r] == index:
                load += float(telemetry.draw_kw[r])
        return load, "measured" + (f", {guessed} silent rack(s) at their rating" if guessed else "")

    def _unhealthy_by_adapter(self, target: str | None) -> Refused | None:
        """A target in maintenance by the site model, or not up by its adapter: refused here."""
        if target is None:
            return None
        if self._site.source(target).availability == Availability.MAINTENANCE:
            return Refused(Refusal.SOURCE_UNHEALTHY, f"source {target!r} is in maintenance")
        adapter = self._adapters.get(target)
        if adapter is not None:
            state = adapter.read_health_status().state
            if state != SourceState.UP:
                return Refused(Refusal.SOURCE_UNHEALTHY, f"source {target!r} is {state}")
        return None

    # -- internals: events ------------------------------------------------------------------

    def _append(
        self, kind: EventKind, rack_id: str | None = None, source_id: str | None = None, value: float = 0.0
    ) -> None:
        t = max(self._clock(), self._last_event_time)  # indices and times rise together
        self._last_event_time = t
        self._log.append(t, kind, rack_id, source_id, value)
