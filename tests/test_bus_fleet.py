"""The fleet interface over the buses (host/fleet/bus_fleet.py): the conformance suite the site
simulator passes, run against the real firmware on a virtual rig (three taps on three
sources, one tap with three inputs), and what only taps do: a tap that does not answer,
a local failover, a move made outside the fleet.

One rig serves the whole module; `Bench.fresh_fleet` puts it back in the state every
test starts from (every source up, every rack on input 1, no rankings) and returns a new
fleet. Waits are wall-clock patience, generous for a loaded machine; no test asserts how
fast anything happened.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from host.bus.link import RedundantLink
from host.bus.transport import SerialSettings, SerialTransport
from host.client.keys import MemoryKeys
from host.client.tap_client import TapClient
from host.client.tap_errors import FencedOut
from host.fleet.bus_fleet import BusFleet
from host.model.fleet import Alternates, Done, EventKind, Fleet, Refusal, Refused
from host.model.site import Feed, Rack, Site, Source, SourceKind, Tap
from host.model.sources import SourceState
from host.sim.rig.rig_layout import RigLayout, RigTap
from host.sim.rig.virtual_rig import VirtualRig
from host.store.records import CommandState
from protocol import catalog
from tests.fleet_conformance import FleetConformance
from tests.tap_rig import NoBus, wait_until

TIMEOUT_S = 1.0  # per bus and attempt: a slow answer costs nothing, it only has to arrive
TRANSFER_TIMEOUT_S = 30.0  # a transfer takes milliseconds of the taps' time; a loaded machine stretches it

# By input: every rack starts on input 1, so each source carries one rack; tap-1 reaches
# every source (the three-input case), tap-2 and tap-3 miss one each (the unreachable case).
WIRING = {"tap-1": ("ups-a", "ups-b", "ups-c"), "tap-2": ("ups-b", "ups-c"), "tap-3": ("ups-c", "ups-a")}


def bench_site(capacity_kw: dict[str, float] | None = None, phase_deg: dict[str, float] | None = None) -> Site:
    """The rig's site; a fleet may be given one that says other capacities or phases."""
    sources = tuple(Source(s, SourceKind.UPS, (capacity_kw or {}).get(s, 30.0), phase_deg=(phase_deg or {}).get(s, 0.0))
                    for s in ("ups-a", "ups-b", "ups-c"))
    taps = tuple(Tap(tap_id, len(inputs)) for tap_id, inputs in WIRING.items())
    racks = tuple(Rack(f"rack-{i + 1}", tap_id, rated_kw=8.0) for i, tap_id in enumerate(WIRING))
    feeds = tuple(Feed(t, k + 1, s, 0.05) for t, inputs in WIRING.items() for k, s in enumerate(inputs))
    return Site(sources, taps, racks, feeds, name="bus-fleet")


class Bench:
    """The rig, a client over both buses, and the resetting between tests."""

    def __init__(self, rig: VirtualRig) -> None:
        self.rig = rig
        self.transports = {
            name: SerialTransport(SerialSettings(path, name=name, usb_latency_s=0.001)).open()
            for name, path in rig.bus_paths.items()
        }
        self.link = RedundantLink(self.transports["A"], self.transports["B"])
        self.keys = MemoryKeys({t.address: t.key_bytes for t in rig.taps})
        self.client = TapClient(self.link, self.keys, epoch=rig.epoch, timeout=TIMEOUT_S)
        self.lost: set[str] = set()

    @property
    def taps(self) -> list[RigTap]:
        return self.rig.taps

    def fleet(self, client: TapClient | None = None, taps: dict[str, int | RigTap] | None = None,
              site: Site | None = None) -> BusFleet:
        return BusFleet(
            site or self.rig.site,
            taps if taps is not None else {t.rack: t for t in self.taps},
            client or self.client,
            transfer_timeout_s=TRANSFER_TIMEOUT_S,
        )

    def fresh_fleet(self) -> BusFleet:
        """Every source up and measured healthy, every rack on input 1, no rankings; a new fleet."""
        for source_id in sorted(self.lost):
            self.rig.inject("restore", source_id)
        self.lost.clear()
        for tap in self.taps:
            wait_until(lambda tap=tap: self._all_healthy(tap.address), f"every input of {tap.id} healthy")
            active = wait_until(
                lambda tap=tap: self.client.status(tap.address).active_input or -1, f"{tap.id} reports its active input"
            )
            if active != 1:
                self.client.switch(tap.address, max(active, 0), 1)
                wait_until(lambda tap=tap: self.client.status(tap.address).active_input == 1, f"{tap.id} on input 1")
            for k in range(1, len(tap.inputs) + 1):
                self.client.set_alternates(tap.address, k, ())
        return self.fleet()

    def _all_healthy(self, address: int) -> bool:
        inputs = self.client.telemetry(address).inputs
        return all(i["state"] & catalog.INPUT_HEALTHY for i in inputs)

    def lose(self, fleet: Fleet, source_id: str) -> None:
        """Lose the source and wait until the fleet sees it down (every tap wired to it agrees)."""
        self.lost.add(source_id)
        self.rig.inject("lose", source_id)
        wait_until(lambda: fleet.read_sources()[source_id].state != SourceState.UP, f"{source_id} seen down")

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, mpy_tree: Path) -> Iterator[Bench]:
    layout = RigLayout(bench_site(), phases_deg=dict.fromkeys(WIRING["tap-1"], 0.0))  # in phase: no wait to switch
    with VirtualRig(layout, tmp_path_factory.mktemp("bus-fleet") / "rig", firmware_tree=mpy_tree) as rig:
        started = Bench(rig)
        try:
            yield started
        finally:
            started.close()


class TestBusFleetConformance(FleetConformance):
    """The rules of host/model/fleet.py, on the real firmware. The sources' loads are the
    measured draws of one sweep, reused when read within a second, and a second sweep on a
    slow machine measures again: hence a tolerance of a few percent of a rack's draw."""

    load_tolerance_kw = 0.25

    @pytest.fixture(autouse=True)
    def _bench(self, bench: Bench) -> None:
        self.bench = bench

    def make_fleet(self) -> Fleet:
        return self.bench.fresh_fleet()

    def fail_source(self, fleet: Fleet, source_id: str) -> bool:
        self.bench.lose(fleet, source_id)
        return True


# -- what only taps on buses do -------------------------------------------------------------


def test_the_fleet_names_the_taps_of_every_rack() -> None:
    site = bench_site()
    client = TapClient(RedundantLink(NoBus("A"), NoBus("B")))
    with pytest.raises(ValueError, match="no address for racks rack-3"):
        BusFleet(site, {"rack-1": 1, "tap-2": 2}, client)
    with pytest.raises(ValueError, match="share address 2"):
        BusFleet(site, {"rack-1": 2, "rack-2": 2, "rack-3": 3}, client)
    with pytest.raises(ValueError, match="neither a rack"):
        BusFleet(site, {"rack-1": 1, "rack-2": 2, "rack-3": 3, "tap-9": 4}, client)


def test_a_tap_that_does_not_answer_reads_as_unknown_and_refuses_with_no_answer(bench: Bench) -> None:
    bench.fresh_fleet()
    quick = TapClient(bench.link, bench.keys, epoch=bench.rig.epoch, timeout=0.2, retries=0)
    taps: dict[str, int | RigTap] = {t.rack: t for t in bench.taps}
    taps["rack-3"] = catalog.ADDR_TAP_MAX  # nobody there
    fleet = bench.fleet(quick, taps)
    telemetry = wait_until(lambda: _read_with_answers(fleet, {"rack-1", "rack-2"}), "racks 1 and 2 answer")
    assert fleet.unanswered == {"rack-3"}
    silent = telemetry.index("rack-3")
    assert telemetry.active[silent] == -1 and math.isnan(telemetry.draw_kw[silent])
    assert math.isnan(telemetry.current_a[silent])
    assert np.isnan(telemetry.input_voltage_v[silent, :2]).all()
    assert not telemetry.input_present[silent].any() and not telemetry.input_healthy[silent].any()
    assert telemetry.active_source("rack-1") == "ups-a" and telemetry.draw_kw[telemetry.index("rack-1")] > 0
    sources = fleet.read_sources()
    assert sources["ups-c"].load_kw == 0.0  # rack-3's draw is unknown, not counted
    assert sources["ups-c"].state == SourceState.UP  # rack-2's tap measures it
    assert math.isnan(sources["ups-a"].overload_progress) and sources["ups-a"].state_of_charge is None
    result = fleet.move("rack-3", "ups-c", "ups-a")
    assert isinstance(result, Refused) and result.reason == Refusal.NO_ANSWER, result
    result = fleet.set_alternates("rack-3", "ups-c", ["ups-a"])
    assert isinstance(result, Refused) and result.reason == Refusal.NO_ANSWER, result


def _read_with_answers(fleet: BusFleet, racks: set[str]) -> object:
    telemetry = fleet.read_telemetry()
    return telemetry if racks.isdisjoint(fleet.unanswered) else None


def test_a_local_failover_shows_as_a_transfer_and_the_source_as_failed(bench: Bench) -> None:
    fleet = bench.fresh_fleet()
    assert fleet.set_alternates("rack-1", "ups-a", ["ups-c", "ups-b"]) == Done(changed=True)
    assert fleet.read_sources()["ups-a"].up
    head = fleet.read_events(0).head
    bench.lose(fleet, "ups-a")
    wait_until(lambda: fleet.read_telemetry().active_source("rack-1") == "ups-c", "rack-1 failed over to ups-c")
    assert fleet.read_telemetry().active_source("rack-3") == "ups-c", "rack-3 stays where it was"
    events = fleet.read_events(head).events
    kinds = [(e.kind, e.rack_id, e.source_id) for e in events]
    assert (EventKind.TRANSFER, "rack-1", "ups-c") in kinds, kinds
    assert (EventKind.SOURCE_FAILED, None, "ups-a") in kinds, kinds
    assert fleet.alternates("rack-1") == Alternates("ups-a", ("ups-c", "ups-b")), "the ranking of ups-a stays"
    bench.rig.inject("restore", "ups-a")
    bench.lost.discard("ups-a")
    wait_until(lambda: fleet.read_sources()["ups-a"].up, "ups-a seen up again")
    assert EventKind.SOURCE_RESTORED in [e.kind for e in fleet.read_events(head).events]


def test_a_switch_made_outside_the_fleet_is_collected_as_a_move(bench: Bench) -> None:
    fleet = bench.fresh_fleet()
    head = fleet.read_events(0).head  # the fleet has met every tap: their events count from here
    tap = bench.rig.tap("rack-2")
    bench.client.switch(tap.address, 1, 2)  # as if the fleet's answer had been lost
    wait_until(lambda: fleet.read_telemetry().active_source("rack-2") == "ups-c", "rack-2 on ups-c")
    moved = [(e.rack_id, e.source_id) for e in fleet.read_events(head).events if e.kind == EventKind.MOVED]
    assert moved == [("rack-2", "ups-c")]
    assert fleet.move("rack-2", "ups-c", "ups-b") == Done(changed=True)
    moved = [(e.rack_id, e.source_id) for e in fleet.read_events(head).events if e.kind == EventKind.MOVED]
    assert moved == [("rack-2", "ups-c"), ("rack-2", "ups-b")], "the fleet's own move is logged once"


def test_setting_alternates_for_another_source_clears_the_first(bench: Bench) -> None:
    fleet = bench.fresh_fleet()
    tap = bench.rig.tap("rack-1")
    assert fleet.set_alternates("rack-1", "ups-a", ["ups-b"]).ok
    assert fleet.set_alternates("rack-1", "ups-b", ["ups-c"]).ok
    assert fleet.alternates("rack-1") == Alternates("ups-b", ("ups-c",))
    status = bench.client.status(tap.address)  # on input 1, ups-a: its ranking is gone from the tap
    assert (status.alternates_for, status.alternate_1) == (1, 0)
    # another controller ranks ups-b's input (not the active one) behind this fleet's back:
    # READ_ALTERNATES shows it, and the tap wins
    bench.client.set_alternates(tap.address, tap.inputs.index("ups-b") + 1, (tap.inputs.index("ups-a") + 1,))
    assert fleet.alternates("rack-1") == Alternates("ups-b", ("ups-a",))


def test_a_controller_of_an_older_epoch_is_fenced_out(bench: Bench) -> None:
    bench.fresh_fleet()
    stale = TapClient(bench.link, bench.keys, epoch=bench.rig.epoch - 1, timeout=TIMEOUT_S)
    fleet = bench.fleet(stale)
    with pytest.raises(FencedOut):
        fleet.move("rack-1", "ups-a", "ups-b")
    assert fleet.read_telemetry().active_source("rack-1") == "ups-a", "reads still work; nothing moved"
    with pytest.raises(FencedOut):
        fleet.set_alternates("rack-1", "ups-a", ["ups-b"])


def test_every_command_of_the_fleet_is_journalled(bench: Bench) -> None:
    fleet = bench.fresh_fleet()
    assert fleet.move("rack-1", "ups-a", "ups-b") == Done(changed=True)
    assert fleet.set_alternates("rack-1", "ups-b", ["ups-a"]).ok
    journal = [(e.tap, e.message, e.state) for e in fleet.journal.entries]  # type: ignore[attr-defined]
    assert journal[0] == ("tap-1", "SWITCH", CommandState.ACKNOWLEDGED)
    assert all(e.seq is not None and e.counter is not None for e in fleet.journal.entries)  # type: ignore[attr-defined]
    assert ("tap-1", "SET_ALTERNATES", CommandState.ACKNOWLEDGED) in journal[1:]


def test_a_move_onto_a_source_without_room_is_refused_before_anything_is_sent(bench: Bench) -> None:
    bench.fresh_fleet()
    fleet = bench.fleet(site=bench_site(capacity_kw={"ups-b": 0.5}))  # rack-2 is on ups-b and draws more
    result = fleet.move("rack-1", "ups-a", "ups-b")
    assert isinstance(result, Refused) and result.reason == Refusal.NO_ROOM, result
    assert "nothing sent" in result.detail and fleet.journal.entries == []  # type: ignore[attr-defined]
    assert fleet.read_telemetry().active_source("rack-1") == "ups-a"
    lenient = bench.fleet(site=bench_site(capacity_kw={"ups-b": 0.5}))
    lenient.overload_allowance = 1000.0  # the policy may let survivors carry more
    assert lenient.move("rack-1", "ups-a", "ups-b") == Done(changed=True)


def test_a_move_onto_an_input_out_of_the_site_phase_is_refused(bench: Bench) -> None:
    bench.fresh_fleet()
    fleet = bench.fleet(site=bench_site(phase_deg={"ups-b": 120.0}))  # the rig's ups-b is at 0 degrees
    result = fleet.move("rack-1", "ups-a", "ups-b")
    assert isinstance(result, Refused) and result.reason == Refusal.SOURCE_UNHEALTHY, result
    assert "the wiring does not match" in result.detail
    assert fleet.read_telemetry().active_source("rack-1") == "ups-a"


def test_taking_over_fences_the_previous_controller_out(bench: Bench) -> None:
    """Last in the module: it leaves the rig's taps in a higher epoch than the bench's."""
    first = bench.fresh_fleet()
    assert first.move("rack-1", "ups-a", "ups-b") == Done(changed=True)
    second_client = TapClient(bench.link, bench.keys, epoch=bench.rig.epoch, timeout=TIMEOUT_S)
    second = bench.fleet(second_client)
    persisted: list[int] = []
    epoch = second.take_over(persisted.append)
    assert epoch == bench.rig.epoch + 1 and persisted == [epoch], "durable before any tap depends on it"
    assert all(bench.client.status(t.address).epoch == epoch for t in bench.taps)
    raised = [e for e in second.journal.entries if e.message == "RAISE_EPOCH"]  # type: ignore[attr-defined]
    assert len(raised) == len(bench.taps) and all(e.state == CommandState.ACKNOWLEDGED for e in raised)
    with pytest.raises(FencedOut):
        first.move("rack-1", "ups-b", "ups-a")
    assert second.read_telemetry().active_source("rack-1") == "ups-b", "the fenced controller moved nothing"
    second.heartbeat()
    assert second.move("rack-1", "ups-b", "ups-a") == Done(changed=True)
