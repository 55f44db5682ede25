"""Scanning and commissioning against the virtual rig: taps flashed by the host (no
address yet, epoch 0, keys in the inventory), one of them with its feeds swapped at the
terminals, which commissioning must catch before the tap is marked commissioned."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from host.ops import commission
from host.ops.commission import InputReading, prove_wiring
from host.store.records import CommandState
from protocol import catalog
from tests.taps_site import FlashedBench, flashed_bench

PHASES = {"ups-1": 0.0, "ups-2": -120.0, "gen-1": 120.0}
NOMINAL_V = 400 / 3**0.5


def _reading(k: int, phase: float, volts: float = NOMINAL_V, hz: float = 50.0) -> InputReading:
    return InputReading(k, volts, hz, phase, catalog.INPUT_PRESENT | catalog.INPUT_HEALTHY)


def test_proving_the_wiring_names_the_swapped_sources() -> None:
    right = [_reading(1, 0.0), _reading(2, -119.0)]
    assert prove_wiring(right, ["ups-1", "ups-2"], PHASES, NOMINAL_V, 50) == []
    swapped = [_reading(1, 0.0), _reading(2, 120.0)]  # input 1 on ups-2, input 2 on ups-1
    assert prove_wiring(swapped, ["ups-1", "ups-2"], PHASES, NOMINAL_V, 50) == [
        "input 1 reads the phase of ups-2 (-120°), the site file says ups-1 (0°)",
        "input 2 reads the phase of ups-1 (0°), the site file says ups-2 (-120°)",
    ]
    three = [_reading(1, 0.0), _reading(2, 120.0), _reading(3, -120.0)]  # gen-1 and ups-2 swapped on 2 and 3
    found = prove_wiring(three, ["ups-1", "ups-2", "gen-1"], PHASES, NOMINAL_V, 50)
    assert found == ["input 2 reads the phase of gen-1 (120°), the site file says ups-2 (-120°)",
                     "input 3 reads the phase of ups-2 (-120°), the site file says gen-1 (120°)"]
    dead = [_reading(1, 0.0), _reading(2, 0.0, volts=0.0)]
    assert "input 2 (ups-2) reads no voltage" in prove_wiring(dead, ["ups-1", "ups-2"], PHASES, NOMINAL_V, 50)[0]
    off = [_reading(1, 0.0, hz=51.2), _reading(2, -120.0, volts=180.0, hz=51.2)]
    problems = prove_wiring(off, ["ups-1", "ups-2"], PHASES, NOMINAL_V, 50)
    assert any("51.20 Hz" in p for p in problems) and any("180.0 V" in p for p in problems)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, mpy_tree: Path) -> Iterator[FlashedBench]:
    """Both taps flashed by the host, not commissioned; tap-2's feeds swapped."""
    with flashed_bench(tmp_path_factory.mktemp("commission"), mpy_tree) as started:
        yield started


def test_scan_finds_the_uncommissioned_taps(bench: FlashedBench) -> None:
    with bench.session() as session:
        found = commission.scan_bus(session, "seg-1")
    assert [(f.unique_id, f.address, f.tap, f.commissioned) for f in found] == [
        ("b0b0000000000001", None, "tap-1", False), ("b0b0000000000002", None, "tap-2", False)]
    assert all(f.n_inputs == 2 and f.board == "sim" for f in found)


def test_commissioning_the_site_catches_the_swapped_pair(bench: FlashedBench) -> None:
    with bench.session() as session:
        reports = {r.tap: r for r in commission.commission_site(session, bench.site)}
        good, bad = reports["tap-1"], reports["tap-2"]
        assert good.ok, good.problems
        assert good.steps[:2] == ["address 1 assigned", "epoch 1"] and "marked commissioned" in good.steps
        assert not bad.ok
        assert bad.problems == [
            "wiring: input 1 reads the phase of ups-1 (0°), the site file says ups-2 (-120°)",
            "wiring: input 2 reads the phase of ups-2 (-120°), the site file says ups-1 (0°)",
        ]
        inventory = session.inventory
        assert inventory.tap("tap-1").commissioned_at is not None
        assert inventory.tap("tap-1").firmware_version == "0.1.0"
        assert inventory.tap("tap-2").commissioned_at is None
        journal = [(c.tap, c.message, c.state) for c in inventory.commands()]
        assert ("tap-1", "ASSIGN_ADDRESS", CommandState.ACKNOWLEDGED) in journal
        assert ("tap-1", "RAISE_EPOCH", CommandState.ACKNOWLEDGED) in journal
        assert ("tap-1", "SET_LIMITS", CommandState.ACKNOWLEDGED) in journal
        assert ("tap-1", "SET_ALTERNATES", CommandState.ACKNOWLEDGED) in journal
        status = session.client("seg-1").status(1)
        assert status.epoch == 1 and (status.alternate_1, status.alternates_for) == (2, 1)
        # now addressed: a scan of unaddressed taps finds neither, a scan of all finds both
        assert commission.scan_bus(session, "seg-1") == []
        assert {f.address for f in commission.scan_bus(session, "seg-1", every_tap=True)} == {1, 2}
