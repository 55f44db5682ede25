"""A site on two bus segments (each its own pair of buses A and B, addresses repeating
across them): the virtual rig runs both, every read command without a TAP reaches every
segment, the inventory keeps each segment's ports, and a switch counts the racks of the
other segment on its target."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from host.bus.link import RedundantLink
from host.bus.transport import SerialSettings, SerialTransport
from host.cli.main import cli
from host.client.keys import MemoryKeys
from host.client.tap_client import TapClient
from host.fleet.bus_fleet import BusFleet
from host.model.site_file import load_site_file
from host.ops import readings, switching
from host.ops.session import BusPorts, OperatorError, Session
from host.sim.rig import rig_layout
from host.sim.rig import virtual_rig as rig
from host.store.inventory import Inventory

# ups-1 is small: the rack on seg-2 fills half of it, so the rack of seg-1 does not fit beside it.
SITE_TOML = """
[site]
name = "two-segments"
voltage_v = 400
frequency_hz = 50

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 7
phase_deg = 0

[[sources]]
id = "ups-2"
kind = "ups"
capacity_kw = 20
phase_deg = 0

[[racks]]
id = "r1"
priority = "normal"
rated_kw = 8

[[racks]]
id = "r2"
priority = "normal"
rated_kw = 8

[[taps]]
id = "tap-1"
address = 1
bus = "seg-1"
board = "sim"
role = "rack"
rack = "r1"
inputs = ["ups-2", "ups-1"]
impedance_ohm = [0.05, 0.05]

[[taps]]
id = "tap-2"
address = 1
bus = "seg-2"
board = "sim"
role = "rack"
rack = "r2"
inputs = ["ups-1", "ups-2"]
impedance_ohm = [0.05, 0.05]
"""


def _inventory(work: Path) -> tuple[Path, Path]:
    site = work / "two.toml"
    site.write_text(SITE_TOML)
    db = work / "ibt.db"
    with Inventory.open(db) as inventory:
        inventory.import_site(load_site_file(site))
    return site, db


def test_one_pair_of_ports_for_a_site_of_several_segments_must_say_which(tmp_path: Path) -> None:
    _, db = _inventory(tmp_path)
    with (Session.open(db, BusPorts("/dev/ttyUSB0", "/dev/ttyUSB1")) as session,
          pytest.raises(OperatorError, match=r"several bus segments \(seg-1, seg-2\): name the one")):
        session.ports_for("seg-1")
    with Session.open(db, BusPorts("/dev/ttyUSB0", "/dev/ttyUSB1"), segment="seg-2") as session:
        assert session.ports_for("seg-2").a == "/dev/ttyUSB0"
        with pytest.raises(OperatorError, match=r"no buses for segment 'seg-1'.*ibt segment set seg-1"):
            session.ports_for("seg-1")
        session.inventory.set_segment_ports("seg-1", "/dev/ttyUSB2", "/dev/ttyUSB3", 115200)
        assert session.ports_for("seg-1") == BusPorts("/dev/ttyUSB2", "/dev/ttyUSB3", 115200)


def test_segment_set_refuses_a_segment_no_tap_is_on(tmp_path: Path) -> None:
    _, db = _inventory(tmp_path)
    runner = CliRunner()
    done = runner.invoke(cli, ["segment", "set", "seg-9", "--bus-a", "x", "--bus-b", "y", "--db", str(db)])
    assert done.exit_code != 0 and "no tap of the inventory is on segment 'seg-9'" in done.output
    done = runner.invoke(cli, ["segment", "set", "seg-1", "--bus-a", "x", "--bus-b", "x", "--db", str(db)])
    assert done.exit_code != 0 and "two different ports" in done.output
    listing = runner.invoke(cli, ["segment", "list", "--json", "--db", str(db)])
    assert [(r["segment"], r["taps"], r["bus_a"]) for r in json.loads(listing.output)] == [
        ("seg-1", 1, None), ("seg-2", 1, None)]


@pytest.fixture(scope="module")
def two_segments(tmp_path_factory: pytest.TempPathFactory, mpy_tree: Path) -> Iterator[tuple[rig.VirtualRig, Path]]:
    work = tmp_path_factory.mktemp("segments")
    site, db = _inventory(work)
    with rig.VirtualRig(rig_layout.load_site_file(site), work / "rig", firmware_tree=mpy_tree) as started:
        with Inventory.open(db) as inventory:
            for tap in started.taps:
                inventory.set_key(tap.id, tap.key_bytes)
                inventory.mark_commissioned(tap.id, tap.address, unique_id=tap.unique_id_bytes)
        yield started, db


def test_the_rig_runs_each_segment_on_its_own_buses(two_segments: tuple[rig.VirtualRig, Path]) -> None:
    started, _ = two_segments
    assert set(started.segment_paths) == {"seg-1", "seg-2"}
    assert {t.id: (t.segment, t.address) for t in started.taps} == {"tap-1": ("seg-1", 1), "tap-2": ("seg-2", 1)}
    rig_file = json.loads((started.workdir / "rig.json").read_text())
    assert rig_file["segments"] == started.segment_paths


def test_status_and_events_reach_every_segment(two_segments: tuple[rig.VirtualRig, Path]) -> None:
    started, db = two_segments
    runner = CliRunner()
    done = runner.invoke(cli, ["status", "--json", "--rig", str(started.workdir), "--db", str(db)])
    assert done.exit_code == 0, done.output
    rows = json.loads(done.output)
    assert [(r["tap"], r["bus"], r["active_source"], r["error"]) for r in rows] == [
        ("tap-1", "seg-1", "ups-2", None), ("tap-2", "seg-2", "ups-1", None)]
    for segment, paths in started.segment_paths.items():  # stored once, then no options are needed
        done = runner.invoke(cli, ["segment", "set", segment, "--bus-a", paths["A"], "--bus-b", paths["B"],
                                   "--db", str(db)])
        assert done.exit_code == 0, done.output
    events = runner.invoke(cli, ["events", "--json", "--db", str(db)])
    assert events.exit_code == 0, events.output
    assert {r["tap"] for r in json.loads(events.output) if r["event"] == "boot"} == {"tap-1", "tap-2"}


def test_a_switch_counts_the_racks_of_every_segment_on_its_target(two_segments: tuple[rig.VirtualRig, Path]) -> None:
    started, db = two_segments
    with Session.open(db, rig_ports_of(started)) as session:
        assert readings.status(session, ["tap-2"])[0]["active_source"] == "ups-1"  # r2, on seg-2, draws 4 kW
        with pytest.raises(switching.SwitchRefused, match=r"source ups-1 carries [34]\.\d kW \(measured on every "
                                                          r"segment\).*exceed its 7 kW; nothing sent"):
            switching.switch(session, "tap-1", "ups-1")
        assert readings.status(session, ["tap-1"])[0]["active_source"] == "ups-2", "nothing moved"


def test_the_fleet_over_the_buses_sweeps_every_segment(two_segments: tuple[rig.VirtualRig, Path]) -> None:
    started, _ = two_segments
    clients, transports = {}, []
    for segment, paths in started.segment_paths.items():
        pair = [SerialTransport(SerialSettings(paths[n], name=n, usb_latency_s=0.001)).open() for n in ("A", "B")]
        transports += pair
        keys = MemoryKeys({t.address: t.key_bytes for t in started.taps if t.segment == segment})
        clients[segment] = TapClient(RedundantLink(*pair), keys, epoch=started.epoch, timeout=1.0)
    try:
        fleet = BusFleet(started.site, {t.rack: t for t in started.taps}, clients)
        telemetry = fleet.read_telemetry()
        assert fleet.unanswered == frozenset(), fleet.errors
        assert [telemetry.active_source(r) for r in ("r1", "r2")] == ["ups-2", "ups-1"]  # both at address 1
        with pytest.raises(ValueError, match="names segment 'seg-9'"):
            BusFleet(started.site, {"r1": _Record(1, "seg-1"), "r2": _Record(1, "seg-9")}, clients)
    finally:
        for transport in transports:
            transport.close()


class _Record:
    def __init__(self, address: int, segment: str) -> None:
        self.address, self.segment = address, segment


def rig_ports_of(started: rig.VirtualRig) -> dict[str, BusPorts]:
    return {segment: BusPorts(paths["A"], paths["B"], started.baud, virtual=True)
            for segment, paths in started.segment_paths.items()}
