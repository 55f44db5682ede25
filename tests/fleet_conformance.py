"""The fleet conformance suite: the rules of host/model/fleet.py, written once and run
against every implementation of the fleet interface (the site simulator now, the real
taps' fleet on a rig later).

Use: subclass `FleetConformance` in a test module (the subclass's name starts with
`Test`) and implement `make_fleet()`, which returns a fresh fleet for each test. The
fleet must hold at least one rack that is on a source that is up and whose tap
reaches another source that is up; tests that need more (a source some rack cannot
reach, a rack with three inputs) skip when the fleet has none. Override
`fail_source()` where the fleet can lose a source on demand, to run the test of moves
onto an unhealthy source. `load_tolerance_kw` is how far a source's load may differ
from the draw of its racks read a moment apart (0 for a simulator between steps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from host.model.fleet import (
    Alternates,
    Done,
    EventKind,
    Fleet,
    FleetTelemetry,
    Refusal,
    Refused,
    UnknownRackError,
)

NO_SUCH_RACK = "no-such-rack-\u2603"
NO_SUCH_SOURCE = "no-such-source-\u2603"


class FleetConformance:
    load_tolerance_kw: float = 1e-6

    def make_fleet(self) -> Fleet:
        raise NotImplementedError

    def fail_source(self, fleet: Fleet, source_id: str) -> bool:
        """Lose source_id now; False where this fleet cannot (the test then skips)."""
        return False

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def up_sources(fleet: Fleet) -> set[str]:
        return {source_id for source_id, status in fleet.read_sources().items() if status.up}

    def movable(self, fleet: Fleet) -> tuple[str, str, str]:
        """A rack, its active source and another source it can move to, both up."""
        telemetry = fleet.read_telemetry()
        up = self.up_sources(fleet)
        for rack in fleet.site.racks:
            active = telemetry.active_source(rack.id)
            others = [s for s in fleet.site.reachable(rack.id) if s != active and s in up]
            if active in up and others:
                return rack.id, str(active), others[0]
        pytest.fail("the fleet has no rack that can move between two sources that are up")

    @staticmethod
    def unreachable(fleet: Fleet) -> tuple[str, str, str | None]:
        """A rack, a source of the site its tap does not reach, and its active source."""
        telemetry = fleet.read_telemetry()
        for rack in fleet.site.racks:
            others = [s.id for s in fleet.site.sources if s.id not in fleet.site.reachable(rack.id)]
            if others:
                return rack.id, others[0], telemetry.active_source(rack.id)
        pytest.skip("every rack reaches every source of this fleet")

    @staticmethod
    def snapshot(fleet: Fleet, rack_id: str) -> tuple[FleetTelemetry, Alternates, int]:
        """What a refused command must leave as it is: placement, the rack's alternates, the event head."""
        return fleet.read_telemetry(), fleet.alternates(rack_id), fleet.read_events(0).head

    @staticmethod
    def assert_unchanged(fleet: Fleet, rack_id: str, snapshot: tuple[FleetTelemetry, Alternates, int]) -> None:
        before, alternates, head = snapshot
        after = fleet.read_telemetry()
        assert np.array_equal(after.active, before.active), "a refused command moved a rack"
        assert fleet.alternates(rack_id) == alternates, "a refused command changed the alternates"
        assert fleet.read_events(head).events == (), "a refused command logged an event"

    # -- reads -------------------------------------------------------------------------

    def test_is_a_fleet(self) -> None:
        assert isinstance(self.make_fleet(), Fleet)

    def test_telemetry_and_sources_name_the_site(self) -> None:
        fleet = self.make_fleet()
        telemetry = fleet.read_telemetry()
        assert set(telemetry.rack_ids) == {rack.id for rack in fleet.site.racks}
        assert set(fleet.read_sources()) == {source.id for source in fleet.site.sources}
        assert set(telemetry.source_ids) == {source.id for source in fleet.site.sources}

    def test_telemetry_agrees_with_the_wiring(self) -> None:
        fleet = self.make_fleet()
        telemetry = fleet.read_telemetry()
        for rack in fleet.site.racks:
            reading = telemetry.rack(rack.id)
            feeds = fleet.site.feeds_of(rack.id)
            assert [(i.input, i.source_id) for i in reading.inputs] == [(f.input, f.source_id) for f in feeds]
            assert reading.active_source is None or reading.active_source in fleet.site.reachable(rack.id)
            assert reading.draw_kw >= 0 and reading.current_a >= 0
            if reading.active_source is None:
                assert reading.draw_kw == 0

    def test_source_loads_add_up_to_their_racks(self) -> None:
        self.check_loads(self.make_fleet())

    def check_loads(self, fleet: Fleet) -> None:
        telemetry, sources = fleet.read_telemetry(), fleet.read_sources()
        for index, source_id in enumerate(telemetry.source_ids):
            on_it = float(telemetry.draw_kw[telemetry.active == index].sum())
            assert math.isclose(sources[source_id].load_kw, on_it, rel_tol=1e-9, abs_tol=self.load_tolerance_kw)

    def test_unknown_rack_raises_on_reads(self) -> None:
        fleet = self.make_fleet()
        with pytest.raises(UnknownRackError):
            fleet.read_telemetry().rack(NO_SUCH_RACK)
        with pytest.raises(UnknownRackError):
            fleet.alternates(NO_SUCH_RACK)

    # -- moves ---------------------------------------------------------------------

    def test_unknown_rack_is_refused(self) -> None:
        fleet = self.make_fleet()
        _, source, other = self.movable(fleet)
        head = fleet.read_events(0).head
        result = fleet.move(NO_SUCH_RACK, source, other)
        assert isinstance(result, Refused) and result.reason == Refusal.UNKNOWN_RACK
        result = fleet.set_alternates(NO_SUCH_RACK, source, [other])
        assert isinstance(result, Refused) and result.reason == Refusal.UNKNOWN_RACK
        assert fleet.read_events(head).events == ()

    def test_move_with_the_wrong_expected_source_is_refused_and_changes_nothing(self) -> None:
        fleet = self.make_fleet()
        rack, source, other = self.movable(fleet)
        snapshot = self.snapshot(fleet, rack)
        for wrong in (other, None):
            result = fleet.move(rack, wrong, other)
            assert isinstance(result, Refused) and result.reason == Refusal.CAS_MISMATCH, result
            assert result.actual == source
            assert not result.ok
        self.assert_unchanged(fleet, rack, snapshot)

    def test_move_to_an_unreachable_source_is_refused_and_changes_nothing(self) -> None:
        fleet = self.make_fleet()
        rack, target, active = self.unreachable(fleet)
        snapshot = self.snapshot(fleet, rack)
        result = fleet.move(rack, active, target)
        assert isinstance(result, Refused) and result.reason == Refusal.UNREACHABLE_SOURCE, result
        self.assert_unchanged(fleet, rack, snapshot)

    def test_move_to_an_unknown_source_is_refused_and_changes_nothing(self) -> None:
        fleet = self.make_fleet()
        rack, source, _ = self.movable(fleet)
        snapshot = self.snapshot(fleet, rack)
        result = fleet.move(rack, source, NO_SUCH_SOURCE)
        assert isinstance(result, Refused) and result.reason == Refusal.UNKNOWN_SOURCE, result
        self.assert_unchanged(fleet, rack, snapshot)

    def test_move_to_an_unhealthy_source_is_refused_and_changes_nothing(self) -> None:
        fleet = self.make_fleet()
        rack, source, other = self.movable(fleet)
        if not self.fail_source(fleet, other):
            pytest.skip("this fleet cannot lose a source on demand")
        snapshot = self.snapshot(fleet, rack)
        result = fleet.move(rack, source, other)
        assert isinstance(result, Refused) and result.reason == Refusal.SOURCE_UNHEALTHY, result
        self.assert_unchanged(fleet, rack, snapshot)

    def test_move_to_the_active_source_is_done_without_change(self) -> None:
        fleet = self.make_fleet()
        rack, source, _ = self.movable(fleet)
        before, head = fleet.read_telemetry(), fleet.read_events(0).head
        assert fleet.move(rack, source, source) == Done(changed=False)
        assert np.array_equal(fleet.read_telemetry().active, before.active)
        assert fleet.read_events(head).events == ()

    def test_a_move_shows_in_telemetry_sources_and_events(self) -> None:
        fleet = self.make_fleet()
        rack, source, other = self.movable(fleet)
        before, head = fleet.read_telemetry(), fleet.read_events(0).head
        result = fleet.move(rack, source, other)
        assert result == Done(changed=True) and result.ok
        after = fleet.read_telemetry()
        assert after.active_source(rack) == other
        moved = [r for r in after.rack_ids if after.active_source(r) != before.active_source(r)]
        assert moved == [rack], "only the rack commanded moved"
        events = [e for e in fleet.read_events(head).events if e.kind == EventKind.MOVED]
        assert [(e.rack_id, e.source_id) for e in events] == [(rack, other)]
        self.check_loads(fleet)

    def test_a_stale_move_is_refused_after_a_move(self) -> None:
        fleet = self.make_fleet()
        rack, source, other = self.movable(fleet)
        assert fleet.move(rack, source, other).ok
        stale = fleet.move(rack, source, other)
        assert isinstance(stale, Refused) and stale.reason == Refusal.CAS_MISMATCH and stale.actual == other
        assert fleet.move(rack, other, source) == Done(changed=True)
        assert fleet.read_telemetry().active_source(rack) == source

    # -- alternates ------------------------------------------------------------------

    def test_alternates_round_trip(self) -> None:
        fleet = self.make_fleet()
        rack, source, other = self.movable(fleet)
        head = fleet.read_events(0).head
        assert fleet.set_alternates(rack, source, [other]) == Done(changed=True)
        assert fleet.alternates(rack) == Alternates(source, (other,))
        assert fleet.set_alternates(rack, source, [other]) == Done(changed=False)
        assert [e.kind for e in fleet.read_events(head).events] == [EventKind.ALTERNATES_SET]
        assert fleet.set_alternates(rack, source, []).ok
        assert fleet.alternates(rack) == Alternates(source, ())

    def test_alternates_keep_their_rank(self) -> None:
        fleet = self.make_fleet()
        for rack in fleet.site.racks:
            reach = fleet.site.reachable(rack.id)
            if len(reach) >= 3:
                ranked = list(reversed(reach[1:]))
                assert fleet.set_alternates(rack.id, reach[0], ranked).ok
                assert fleet.alternates(rack.id) == Alternates(reach[0], tuple(ranked))
                return
        pytest.skip("no rack of this fleet has three inputs")

    def test_bad_alternates_are_refused_and_change_nothing(self) -> None:
        fleet = self.make_fleet()
        rack, source, other = self.movable(fleet)
        assert fleet.set_alternates(rack, source, [other]).ok
        snapshot = self.snapshot(fleet, rack)
        bad = {
            Refusal.BAD_ALTERNATES: [(source, [source]), (source, [other, other])],
            Refusal.UNKNOWN_SOURCE: [(source, [NO_SUCH_SOURCE]), (NO_SUCH_SOURCE, [other])],
        }
        unreachable = [s.id for s in fleet.site.sources if s.id not in fleet.site.reachable(rack)]
        if unreachable:
            bad[Refusal.UNREACHABLE_SOURCE] = [(source, [unreachable[0]]), (unreachable[0], [other])]
        for reason, cases in bad.items():
            for for_source, ranked in cases:
                result = fleet.set_alternates(rack, for_source, ranked)
                assert isinstance(result, Refused) and result.reason == reason, (for_source, ranked, result)
        too_many = [s for s in fleet.site.reachable(rack) if s != source] + [source]
        result = fleet.set_alternates(rack, source, too_many)
        assert isinstance(result, Refused) and result.reason == Refusal.BAD_ALTERNATES
        self.assert_unchanged(fleet, rack, snapshot)

    # -- events ----------------------------------------------------------------------

    def test_events_are_numbered_one_by_one(self) -> None:
        fleet = self.make_fleet()
        rack, source, other = self.movable(fleet)
        start = fleet.read_events(0).head
        fleet.move(rack, source, other)
        fleet.set_alternates(rack, other, [source])
        fleet.move(rack, other, source)
        page = fleet.read_events(start)
        indices = [e.index for e in page.events]
        assert indices == list(range(start, start + len(indices))) and len(indices) >= 3
        assert page.first == start and page.head == start + len(indices)
        assert all(a.time_s <= b.time_s for a, b in zip(page.events, page.events[1:], strict=False))

    def test_read_events_pages_and_bounds(self) -> None:
        fleet = self.make_fleet()
        rack, source, other = self.movable(fleet)
        start = fleet.read_events(0).head
        for _ in range(3):
            fleet.move(rack, source, other)
            fleet.move(rack, other, source)
        first = fleet.read_events(start, max_count=2)
        assert [e.index for e in first.events] == [start, start + 1] and first.head == start + 6
        rest = fleet.read_events(first.events[-1].index + 1)
        assert [e.index for e in rest.events] == list(range(start + 2, start + 6))
        for since in (first.head, first.head + 100):
            assert fleet.read_events(since).events == ()
        whole = fleet.read_events(0, max_count=10**6)
        assert whole.first >= 0 and [e.index for e in whole.events] == list(range(whole.first, whole.head))
