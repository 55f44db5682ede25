"""The whole loop on the virtual rig (the real firmware): a controller process killed
with SIGKILL at each step of a move and started again loses no move, duplicates none
and leaves no tap unknown; a second controller fences the first out; bus A lost during
a plan; telemetry that stops for longer than a tick.

Three racks on three in-phase UPS modules, every tap wired to all three, every rack on
ups-1 at the start of each test; the move is made by taking ups-1 out for maintenance,
which empties it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from host.control.controller import Controller
from host.control.policy import ControlPolicy
from host.fleet.bus_fleet import BusFleet
from host.model.site_file import load_site_file
from host.ops.session import Session, rig_ports
from host.sim.rig import rig_layout
from host.sim.rig import virtual_rig as rig
from host.store.control_store import ControlStore
from host.store.inventory import Inventory
from host.store.records import CommandState
from tests.tap_rig import wait_until

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "tests" / "control_child.py"

SITE = """
[site]
name = "loop"
voltage_v = 400
frequency_hz = 50
""" + "".join(f"""
[[sources]]
id = "ups-{k}"
kind = "ups"
capacity_kw = 30
phase_deg = 0
""" for k in (1, 2, 3)) + "".join(f"""
[[racks]]
id = "r{i}"
priority = "{p}"
rated_kw = 8

[[taps]]
id = "tap-{i}"
address = {i}
bus = "seg-1"
board = "sim"
role = "rack"
rack = "r{i}"
inputs = ["ups-1", "ups-2", "ups-3"]
impedance_ohm = [0.05, 0.05, 0.05]
""" for i, p in ((1, "deferrable"), (2, "normal"), (3, "critical")))


@dataclass
class Loop:
    rig: rig.VirtualRig
    db: Path
    site: Path
    work: Path
    runs: int = 0

    def session(self) -> Session:
        return Session.open(self.db, rig_ports(self.rig.workdir))

    def reset(self) -> None:
        """Every rack on ups-1 (input 1), from a session of the test's own."""
        with self.session() as session:
            for tap in session.inventory.taps():
                client = session.client(tap.bus)
                assert tap.address is not None
                status = wait_until(lambda a=tap.address, c=client: c.status(a), f"{tap.id} answers")
                session.align_epoch(tap, status.epoch)
                if status.active_input != 1:
                    session.command(tap, "SWITCH", {"expected_input": status.active_input, "target_input": 1},
                                    lambda a=tap.address, s=status, c=client: c.switch(a, s.active_input, 1))
                    wait_until(lambda a=tap.address, c=client: c.status(a).active_input == 1, f"{tap.id} on input 1")

    def transfers(self) -> dict[str, int]:
        with self.session() as session:
            return {t.id: int(session.client(t.bus).telemetry(t.address or 0)["transfers"])
                    for t in session.inventory.taps()}

    def child(self, *args: str, store: Path | None = None) -> tuple[int, list[dict[str, object]]]:
        self.runs += 1
        path = store or self.work / f"control-{self.runs}.db"
        done = subprocess.run([sys.executable, str(CHILD), str(self.rig.workdir), str(self.db), str(path),
                               str(self.site), *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert done.returncode in (0, -9), done.stderr[-2000:]
        return done.returncode, lines


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, mpy_tree: Path) -> Iterator[Loop]:
    work = tmp_path_factory.mktemp("loop")
    site = work / "loop.toml"
    site.write_text(SITE)
    db = work / "ibt.db"
    with rig.VirtualRig(rig_layout.load_site_file(site), work / "rig", firmware_tree=mpy_tree) as started:
        with Inventory.open(db) as inventory:
            inventory.import_site(load_site_file(site))
            for tap in started.taps:
                inventory.set_key(tap.id, tap.key_bytes)
                inventory.mark_commissioned(tap.id, tap.address, unique_id=tap.unique_id_bytes)
        yield Loop(started, db, site, work)


def _in_process(loop: Loop, session: Session) -> tuple[BusFleet, Controller]:
    """A controller in this process over the session's buses, journalling in its inventory."""
    taps = {t.rack: t for t in session.inventory.taps() if t.rack}
    fleet = BusFleet(load_site_file(loop.site).site, taps, {"seg-1": session.client("seg-1")},
                     journal=session.inventory)
    controller = Controller(fleet, ControlStore.open(None), ControlPolicy(tick_s=1.0, stagger_s=0.0),
                            fence=lambda: fleet.take_over(session.state.set_epoch), sleep=lambda s: None)
    return fleet, controller


@pytest.mark.parametrize("step", ["intended", "sent", "answered", "verified"])
def test_a_controller_killed_at_any_step_of_a_move_loses_and_duplicates_nothing(loop: Loop, step: str) -> None:
    loop.reset()
    before = loop.transfers()
    store = loop.work / f"killed-{step}.db"
    code, _ = loop.child("--kill-at", step, "--maintain", "ups-1", "--ticks", "2", store=store)
    assert code == -9, "the controller was killed at its first move"
    code, lines = loop.child("--maintain", "ups-1", "--ticks", "3", store=store)  # the same store: a restart
    assert code == 0
    final = lines[-1]
    assert final["unfinished"] == 0 and not final["fenced"]
    assert all(source in ("ups-2", "ups-3") for source in final["final"].values()), final  # type: ignore[union-attr]
    after = loop.transfers()
    assert all(after[t] - before[t] == 1 for t in before), (before, after)  # each tap moved once: none lost, none twice
    with Inventory.open(loop.db) as inventory:
        open_rows = [c for c in inventory.commands() if c.state in (CommandState.PENDING, CommandState.SENT,
                                                                    CommandState.UNKNOWN)]
        assert open_rows == [], "no tap is left unknown"
        switches = [c for c in inventory.commands() if c.message == "SWITCH" and c.state == CommandState.ACKNOWLEDGED]
        assert all(c.seq is not None and c.counter is not None for c in switches)


def test_a_second_controller_fences_the_first_out(loop: Loop) -> None:
    loop.reset()
    with loop.session() as session:
        first_fleet, first = _in_process(loop, session)
        first.start()
        first.tick()
        where = first_fleet.read_telemetry()
        before = {r: where.active_source(r) for r in where.rack_ids}
        # another controller (another host's store, lock and adapters) takes over: the rig's
        # buses have one host end each, so the first lets go of them meanwhile
        transports = list(session.transports("seg-1").values())
        for transport in transports:
            transport.close()
        code, lines = loop.child("--ticks", "1")
        for transport in transports:
            transport.open()
        assert code == 0 and any("epoch raised" in str(line.get("start", "")) for line in lines)
        first.maintain_source("ups-1")
        first.tick()
        assert first.fenced, "the stale controller knows it is fenced out"
        assert [e.reason for e in first.intents.decisions(kind="fenced")]
        telemetry = first_fleet.read_telemetry()
        assert {r: telemetry.active_source(r) for r in telemetry.rack_ids} == before, "it moved no relay"
        assert "ups-1" in before.values(), "there was something to move off ups-1"


def test_bus_a_lost_during_a_plan_and_telemetry_that_stops(loop: Loop) -> None:
    loop.reset()
    loop.rig.inject("cut", "A")
    try:
        code, lines = loop.child("--maintain", "ups-1", "--ticks", "3")
        assert code == 0
        assert all(source in ("ups-2", "ups-3") for source in lines[-1]["final"].values()), lines[-1]  # type: ignore[union-attr]
    finally:
        loop.rig.inject("cut", "A", on=False)
    loop.reset()
    with loop.session() as session:
        fleet, controller = _in_process(loop, session)
        controller.start()
        controller.tick()
        loop.rig.inject("cut", "A")
        loop.rig.inject("cut", "B")
        try:
            controller.maintain_source("ups-1")
            for _ in range(2):
                report = controller.tick()
                assert report.moves == 0, "no rack moves while nothing is read"
        finally:
            loop.rig.inject("cut", "A", on=False)
            loop.rig.inject("cut", "B", on=False)
        wait_until(lambda: not fleet.read_telemetry() or not fleet.unanswered, "the taps answer again")
        for _ in range(3):
            controller.tick()
        telemetry = fleet.read_telemetry()
        assert all(telemetry.active_source(r) in ("ups-2", "ups-3") for r in telemetry.rack_ids)
