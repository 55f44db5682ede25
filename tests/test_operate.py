"""Operating commissioned taps on the virtual rig: status, events, switch (with its checks
and its verification), protection settings checked against the board, alternates,
calibration and waveform capture."""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.model.site_file import load_site_file
from host.ops import (
    channel_calibration,
    event_log,
    failover,
    operate,
    protection_limits,
    readings,
    switching,
    waveforms,
)
from host.ops.session import BusPorts, OperatorError, Session, tap_address
from host.sim.rig import rig_layout
from host.sim.rig import virtual_rig as rig
from host.store.inventory import Inventory
from host.store.records import CommandState
from tests.taps_site import write_site

PATIENCE_S = 45.0


@dataclasses.dataclass
class Bench:
    rig: rig.VirtualRig
    db: Path

    def session(self) -> Session:
        paths = self.rig.bus_paths
        return Session.open(self.db, BusPorts(paths["A"], paths["B"], self.rig.baud, virtual=True))


def commissioned_bench(work: Path, mpy_tree: Path) -> Iterator[Bench]:
    """The rig's taps as commissioned: their keys and addresses recorded in an inventory."""
    site = write_site(work)
    with rig.VirtualRig(rig_layout.load_site_file(site), work / "rig", firmware_tree=mpy_tree) as started:
        db = work / "ibt.db"
        with Inventory.open(db) as inventory:
            inventory.import_site(load_site_file(site))
            for tap in started.taps:
                inventory.set_key(tap.id, tap.key_bytes)
                inventory.mark_commissioned(tap.id, tap.address, unique_id=tap.unique_id_bytes)
        yield Bench(started, db)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, mpy_tree: Path) -> Iterator[Bench]:
    yield from commissioned_bench(tmp_path_factory.mktemp("operate"), mpy_tree)


@pytest.fixture
def session(bench: Bench) -> Iterator[Session]:
    with bench.session() as opened:
        yield opened


def _wait_healthy(session: Session, tap: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        row = readings.status(session, [tap])[0]
        if not row.get("error") and all(i["healthy"] for i in row["inputs"]):
            return
        time.sleep(0.2)
    raise AssertionError(f"{tap}: inputs never healthy")


def test_status_and_events(session: Session) -> None:
    rows = readings.status(session)
    assert [r["tap"] for r in rows] == ["tap-1", "tap-2"]
    first = rows[0]
    assert first["error"] is None and first["active_input"] == 1 and first["active_source"] == "ups-1"
    assert [i["source"] for i in first["inputs"]] == ["ups-1", "ups-2"]
    assert all(0 <= i["thd_pct"] < 8 for i in first["inputs"]) and "THD" in readings.render_status(rows)
    assert datetime.datetime.fromisoformat(first["read_at"]).tzinfo is not None  # a monitor's rows are a series
    json.dumps(rows)  # plain data
    assert "tap-1" in readings.render_status(rows)
    new = event_log.events(session, ["tap-1"])
    assert new and new[0]["event"] == "boot" and new[0]["seq"] == 0
    assert event_log.events(session, ["tap-1"]) == []  # read once, stored
    assert [r["seq"] for r in event_log.events(session, ["tap-1"], stored=True)] == [r["seq"] for r in new]


def test_switch_moves_the_rack_and_verifies_it(bench: Bench, session: Session) -> None:
    _wait_healthy(session, "tap-1")
    result = switching.switch(session, "tap-1", "ups-2")
    assert result.verified and (result.from_input, result.to_input) == (1, 2), result
    assert any(c.startswith("in phase") for c in result.checks) and any("capacity" in c for c in result.checks)
    assert bench.rig.plant.plants["tap-1"].conducting_input() == 2
    journal = [(c.message, c.state) for c in session.inventory.commands("tap-1")]
    assert journal[-1] == ("SWITCH", CommandState.ACKNOWLEDGED)
    last = session.inventory.commands("tap-1")[-1]
    assert last.seq is not None and last.counter is not None, "the frame's seq and counter, journalled before it left"
    _wait_healthy(session, "tap-1")
    back = switching.switch(session, "tap-1", "1")  # by input number
    assert back.verified and bench.rig.plant.plants["tap-1"].conducting_input() == 1
    again = switching.switch(session, "tap-1", "ups-1")
    assert again.verified and "nothing sent" in again.note


def test_switch_to_a_lost_source_is_refused_before_anything_is_sent(bench: Bench, session: Session) -> None:
    before = len(session.inventory.commands())
    bench.rig.inject("lose", "ups-2")
    try:
        deadline = time.monotonic() + PATIENCE_S
        while readings.status(session, ["tap-1"])[0]["inputs"][1]["present"]:
            assert time.monotonic() < deadline, "the loss never showed"
            time.sleep(0.1)
        with pytest.raises(switching.SwitchRefused, match=r"input 2 \(ups-2\) is absent .*nothing sent"):
            switching.switch(session, "tap-1", "ups-2")
        with pytest.raises(OperatorError, match=r"no input on source 'ups-9' \(inputs: 1 ups-1, 2 ups-2\)"):
            switching.switch(session, "tap-1", "ups-9")
        assert len(session.inventory.commands()) == before
    finally:
        bench.rig.inject("restore", "ups-2")


def test_limits_that_do_not_coordinate_with_the_board_are_refused(bench: Bench, session: Session) -> None:
    in_force, origin = protection_limits.current_limits(session, session.tap("tap-1"))
    # read back from the tap: the defaults it derived from its board (80% of the 40 A relays and fuses)
    assert origin == protection_limits.LIMITS_FROM_TAP and in_force["pickup_mA"] == 32_000
    assert in_force["instantaneous_mA"] == 40_000
    with Session.open(bench.db) as offline:  # no bus: the command history, and it says so
        assert protection_limits.current_limits(offline, offline.tap("tap-1"))[1] == (
            "firmware defaults, never set by this host (no bus given)")
    before = len(session.inventory.commands())
    with pytest.raises(OperatorError, match=r"pickup 50 A is above the relay's rated current 40 A.*breaking capacity"):
        protection_limits.set_limits(session, "tap-1", {"pickup_mA": 50_000})
    with pytest.raises(OperatorError, match=r"instantaneous 320 A is above the relay's breaking capacity 40 A"):
        protection_limits.set_limits(session, "tap-1", {"instantaneous_mA": 320_000})
    assert len(session.inventory.commands()) == before
    wanted = protection_limits.default_limits(session, session.tap("tap-1")) | {"pickup_mA": 25_000}
    assert protection_limits.set_limits(session, "tap-1", wanted) == wanted
    in_force = protection_limits.current_limits(session, session.tap("tap-1"))
    assert in_force == (wanted, protection_limits.LIMITS_FROM_TAP)
    # the others stay as in force at the tap
    assert protection_limits.set_limits(session, "tap-1", {"tms_milli": 200}) == wanted | {"tms_milli": 200}
    assert protection_limits.current_limits(session, session.tap("tap-1"))[0]["tms_milli"] == 200
    with Session.open(bench.db) as offline:
        assert protection_limits.current_limits(offline, offline.tap("tap-1")) == (
            wanted | {"tms_milli": 200}, "last set, from the command history (no bus given)")


def test_alternates_are_set_by_source_and_read_back(bench: Bench, session: Session) -> None:
    result = failover.set_alternates(session, "tap-2", "ups-1", ["ups-2"])
    # read from the tap, every input: input 1 (ups-2) still on the board's default ranking
    assert result["set"] == {"ups-2": ["ups-1"], "ups-1": ["ups-2"]} and result["planned"] == {"ups-2": ["ups-1"]}
    assert result["origin"] == failover.ALTERNATES_FROM_TAP and result["differs"] == ["ups-1"]
    with Session.open(bench.db) as offline:
        known = failover.current_alternates(offline, offline.tap("tap-2"))
    assert known["set"] == {"ups-1": ["ups-2"]}  # only what this host acknowledged
    assert known["origin"] == "last set, from the command history (no bus given)"
    with pytest.raises(OperatorError, match="must be up to 3 other inputs"):
        failover.set_alternates(session, "tap-2", "ups-1", ["ups-1"])


def test_capture(session: Session, tmp_path: Path) -> None:
    png = tmp_path / "capture.png"
    result = waveforms.capture(session, "tap-1", cycles=4, png=png)
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    volts = result["channels"][0]
    assert volts["name"] == "input 1 V" and 200 < volts["rms"] < 245
    assert volts["fundamental_rms"] == pytest.approx(volts["rms"], rel=0.02)
    assert volts["thd_pct"] < 5 and set(volts["harmonics_pct"]) >= {"3", "5", "15"}


def _voltage(session: Session, tap: str, k: int, reads: int = 5) -> float:
    return sum(readings.status(session, [tap])[0]["inputs"][k - 1]["voltage_v"] for _ in range(reads)) / reads


def test_calibration_is_applied_at_the_tap_and_verified(session: Session) -> None:
    _wait_healthy(session, "tap-2")
    shown = channel_calibration.calibrate(session, "tap-2", {})  # nothing given: what the tap runs on
    assert shown["sent"] == [] and not any(c["set"] for c in shown["channels"].values())
    assert shown["channels"]["input2"]["gain_ppm"] == 1_000_000
    reads = _voltage(session, "tap-2", 2)
    reference = round(reads * 1.03, 2)  # a reference meter 3% above the tap
    result = channel_calibration.calibrate(session, "tap-2", {"input2": reference}, reads=3)
    row = result["channels"]["input2"]
    assert result["sent"] == ["input2"] and result["verified"] is True, result
    assert row["set"] and row["gain_ppm"] == pytest.approx(1_030_000, abs=300) and row["offset_counts"] == 0
    # within one count (49 mV), widened by the meter's own scatter between windows (a few counts)
    assert row["reading"] == pytest.approx(reference, abs=row["tolerance"]) and row["tolerance"] < 0.5
    assert _voltage(session, "tap-2", 2) == pytest.approx(reference, abs=0.5)  # status reads calibrated values
    journal = [(c.message, c.state, c.fields) for c in session.inventory.commands("tap-2")]
    assert journal[-1][:2] == ("SET_CALIBRATION", CommandState.ACKNOWLEDGED)
    assert journal[-1][2]["gain_ppm"] == row["gain_ppm"]
    # a second point, of a tap that now reads calibrated values: the fit is of the raw counts
    second = channel_calibration.calibrate(session, "tap-2", {"input2": reference}, reads=3)
    assert second["channels"]["input2"]["points"] == 2 and second["verified"] is True
    assert second["channels"]["input2"]["gain_ppm"] == pytest.approx(row["gain_ppm"], abs=300)
    # out of range: nothing sent
    before = len(session.inventory.commands())
    refused = r"calibration refused, nothing sent: input1: gain .* is outside 0\.95\.\.1\.05"
    with pytest.raises(OperatorError, match=refused):
        channel_calibration.calibrate(session, "tap-2", {"input1": _voltage(session, "tap-2", 1) * 1.2}, reset=True)
    assert len(session.inventory.commands()) == before
    with pytest.raises(OperatorError, match=r"no channel input3"):
        channel_calibration.calibrate(session, "tap-2", {"input3": 230.0})
    # back to the nominal scale
    nominal = channel_calibration.calibrate(session, "tap-2", {}, reset=True)
    assert sorted(nominal["sent"]) == ["current", "input1", "input2"]
    assert all(c["gain_ppm"] == 1_000_000 and c["offset_counts"] == 0 and c["set"]
               for c in nominal["channels"].values())
    assert session.state.calibration_points("tap-2") == {}


def test_events_are_read_right_across_a_reboot_of_the_tap(session: Session) -> None:
    # last in this module: it restarts tap-2, whose fresh meter the tests above should not see
    event_log.events(session, ["tap-2"])  # everything of this boot, stored
    tap = session.tap("tap-2")
    client = session.client(tap.bus)
    address = tap_address(tap)
    before = client.telemetry(address)["uptime_s"]
    session.align_epoch(tap, client.status(address).epoch)
    session.command(tap, "RESET", {"mode": 0}, lambda: client.reset(address))
    deadline = time.monotonic() + PATIENCE_S
    while operate.patiently(lambda: client.telemetry(address))["uptime_s"] > before:
        assert time.monotonic() < deadline, "the tap never restarted"
        time.sleep(0.1)
    # the new boot's log starts again at 0: its boot event is read, not skipped as an old index
    new = event_log.events(session, ["tap-2"])
    assert new and new[0]["event"] == "boot" and new[0]["seq"] == 0 and new[0]["boot"] == 2
    stored = event_log.events(session, ["tap-2"], stored=True)
    assert [(r["boot"], r["seq"]) for r in stored if r["event"] == "boot"] == [(1, 0), (2, 0)]
    assert event_log.events(session, ["tap-2"]) == []  # and read once
    # the restarted tap resumes its counter above the block it had reserved (SPEC.md): catch up,
    # so the tests after this one sign above it
    assert client.keys is not None
    client.keys.commit(address, client.status(address).auth_counter)
