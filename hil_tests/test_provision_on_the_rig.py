"""Bringing taps up on a rig the way an engineer does: flash them from the inventory
(fresh keys, no address), discover them on the bus, commission the site; a pair of
inputs deliberately swapped at the terminals is caught by commissioning, not by a
failover. On a serial rig these are done by hand (README, "A bench"), so they skip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from host.ops import commission
from host.sim.rig import virtual_rig as rig
from tests.taps_site import FlashedBench, flashed_bench


@pytest.fixture
def provisioned(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlashedBench]:
    """Two taps flashed by the host into sim flash directories, started on the virtual rig
    unaddressed; tap-2's feeds swapped at its terminals."""
    if request.config.getoption("--rig") != "virtual":
        pytest.skip("flashing and wiring a bench's boards is done by hand: ibt flash --port, then ibt commission")
    with flashed_bench(tmp_path, rig.build_firmware(tmp_path / "firmware")) as started:
        yield started


def test_flashed_taps_are_discovered_and_the_swapped_pair_is_caught(provisioned: FlashedBench) -> None:
    with provisioned.session() as session:
        found = commission.scan_bus(session, "seg-1")
        assert {(f.tap, f.address, f.commissioned) for f in found} == {("tap-1", None, False),
                                                                     ("tap-2", None, False)}
        reports = {r.tap: r for r in commission.commission_site(session, provisioned.site)}
        assert reports["tap-1"].ok, reports["tap-1"].problems
        assert not reports["tap-2"].ok
        assert reports["tap-2"].problems == [
            "wiring: input 1 reads the phase of ups-1 (0°), the site file says ups-2 (-120°)",
            "wiring: input 2 reads the phase of ups-2 (-120°), the site file says ups-1 (0°)",
        ]
        assert session.inventory.tap("tap-1").commissioned_at is not None
        assert session.inventory.tap("tap-2").commissioned_at is None
        status = session.client("seg-1").status(1)  # tap-1, now at its address and in the epoch
        assert status.epoch == 1 and status.active_input == 1
