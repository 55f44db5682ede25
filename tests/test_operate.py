"""Operating commissioned taps on the virtual rig: status, events, switch (with its checks
and its verification), protection settings checked against the board, alternates,
calibration and waveform capture."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host import operate, rig
from host.inventory import CommandState, Inventory
from host.session import BusPorts, OperatorError, Session
from host.site_file import load_site_file
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
    with rig.VirtualRig(rig.load_site_file(site), work / "rig", firmware_tree=mpy_tree) as started:
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
        row = operate.status(session, [tap])[0]
        if not row.get("error") and all(i["healthy"] for i in row["inputs"]):
            return
        time.sleep(0.2)
    raise AssertionError(f"{tap}: inputs never healthy")


def test_status_and_events(session: Session) -> None:
    rows = operate.status(session)
    assert [r["tap"] for r in rows] == ["tap-1", "tap-2"]
    first = rows[0]
    assert first["error"] is None and first["active_input"] == 1 and first["active_source"] == "ups-1"
    assert [i["source"] for i in first["inputs"]] == ["ups-1", "ups-2"]
    json.dumps(rows)  # plain data
    assert "tap-1" in operate.render_status(rows)
    new = operate.events(session, ["tap-1"])
    assert new and new[0]["event"] == "boot" and new[0]["seq"] == 0
    assert operate.events(session, ["tap-1"]) == []  # read once, stored
    assert [r["seq"] for r in operate.events(session, ["tap-1"], stored=True)] == [r["seq"] for r in new]


def test_switch_moves_the_rack_and_verifies_it(bench: Bench, session: Session) -> None:
    _wait_healthy(session, "tap-1")
    result = operate.switch(session, "tap-1", "ups-2")
    assert result.verified and (result.from_input, result.to_input) == (1, 2), result
    assert any(c.startswith("in phase") for c in result.checks) and any("capacity" in c for c in result.checks)
    assert bench.rig.plant.plants["tap-1"].conducting_input() == 2
    journal = [(c.message, c.state) for c in session.inventory.commands("tap-1")]
    assert journal[-1] == ("SWITCH", CommandState.ACKNOWLEDGED)
    _wait_healthy(session, "tap-1")
    back = operate.switch(session, "tap-1", "1")  # by input number
    assert back.verified and bench.rig.plant.plants["tap-1"].conducting_input() == 1
    again = operate.switch(session, "tap-1", "ups-1")
    assert again.verified and "nothing sent" in again.note


def test_switch_to_a_lost_source_is_refused_before_anything_is_sent(bench: Bench, session: Session) -> None:
    before = len(session.inventory.commands())
    bench.rig.inject("lose", "ups-2")
    try:
        deadline = time.monotonic() + PATIENCE_S
        while operate.status(session, ["tap-1"])[0]["inputs"][1]["present"]:
            assert time.monotonic() < deadline, "the loss never showed"
            time.sleep(0.1)
        with pytest.raises(operate.SwitchRefused, match=r"input 2 \(ups-2\) is absent .*nothing sent"):
            operate.switch(session, "tap-1", "ups-2")
        with pytest.raises(OperatorError, match=r"no input on source 'ups-9' \(inputs: 1 ups-1, 2 ups-2\)"):
            operate.switch(session, "tap-1", "ups-9")
        assert len(session.inventory.commands()) == before
    finally:
        bench.rig.inject("restore", "ups-2")


def test_limits_that_do_not_coordinate_with_the_board_are_refused(session: Session) -> None:
    _, origin = operate.current_limits(session, session.tap("tap-1"))
    assert origin.startswith("firmware defaults")
    before = len(session.inventory.commands())
    with pytest.raises(OperatorError, match=r"pickup 50 A is above the relay's rated current 40 A.*breaking capacity"):
        operate.set_limits(session, "tap-1", {"pickup_mA": 50_000})
    with pytest.raises(OperatorError, match=r"instantaneous 320 A is above the relay's breaking capacity 40 A"):
        operate.set_limits(session, "tap-1", {"pickup_mA": 30_000})  # the firmware's default instantaneous
    assert len(session.inventory.commands()) == before
    wanted = operate.default_limits(session, session.tap("tap-1")) | {"pickup_mA": 25_000}
    assert operate.set_limits(session, "tap-1", wanted) == wanted
    assert operate.current_limits(session, session.tap("tap-1")) == (wanted, "last set")


def test_alternates_are_set_by_source_and_read_back(session: Session) -> None:
    result = operate.set_alternates(session, "tap-2", "ups-1", ["ups-2"])
    assert result["set"] == {"ups-1": ["ups-2"]} and result["planned"] == {"ups-2": ["ups-1"]}
    with pytest.raises(OperatorError, match="must be up to 3 other inputs"):
        operate.set_alternates(session, "tap-2", "ups-1", ["ups-1"])


def test_capture_calibrate(session: Session, tmp_path: Path) -> None:
    png = tmp_path / "capture.png"
    result = operate.capture(session, "tap-1", cycles=4, png=png)
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    volts = result["channels"][0]
    assert volts["name"] == "input 1 V" and 200 < volts["rms"] < 245
    assert volts["fundamental_rms"] == pytest.approx(volts["rms"], rel=0.02)
    assert volts["thd_pct"] < 5 and set(volts["harmonics_pct"]) >= {"3", "5", "15"}
    calibration = operate.calibrate(session, "tap-1", {"input1": 240.0}, reads=2)
    gain = calibration["channels"]["input1"]["gain"]
    assert 0.95 < gain < 1.1 and calibration["channels"]["input1"]["offset"] == 0.0
    assert session.state.calibration("tap-1") is not None
