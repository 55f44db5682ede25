"""A small site for the operator command tests: two sources a third of a turn apart, two
racks, each on a two-input tap of the sim board (tests/test_commission.py, test_operate.py,
test_cli_taps.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from host.model.site_file import load_site_file
from host.ops import flash
from host.ops.session import BusPorts, Session
from host.sim.rig import rig_layout
from host.sim.rig import virtual_rig as rig
from host.store.inventory import Inventory

SITE_TOML = """
[site]
name = "bench"
voltage_v = 400
frequency_hz = 50

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 20
phase_deg = 0

[[sources]]
id = "ups-2"
kind = "ups"
capacity_kw = 20
phase_deg = -120

[[racks]]
id = "r1"
priority = "critical"
rated_kw = 4

[[racks]]
id = "r2"
priority = "normal"
rated_kw = 8

[[taps]]
id = "tap-1"
unique_id = "b0b0000000000001"
address = 1
bus = "seg-1"
board = "sim"
role = "rack"
rack = "r1"
inputs = ["ups-1", "ups-2"]
impedance_ohm = [0.05, 0.05]
alternates = { ups-1 = ["ups-2"] }

[[taps]]
id = "tap-2"
unique_id = "b0b0000000000002"
address = 2
bus = "seg-1"
board = "sim"
role = "rack"
rack = "r2"
inputs = ["ups-2", "ups-1"]
impedance_ohm = [0.05, 0.05]
alternates = { ups-2 = ["ups-1"] }
"""


def write_site(directory: Path) -> Path:
    path = directory / "bench.toml"
    path.write_text(SITE_TOML)
    return path


@dataclasses.dataclass
class FlashedBench:
    """A virtual rig whose taps the host flashed (no address yet, epoch 0, keys in the
    inventory `db`), tap-2's feeds swapped at its terminals, and the site file."""

    rig: rig.VirtualRig
    db: Path
    site: Path

    def session(self) -> Session:
        paths = self.rig.bus_paths
        return Session.open(self.db, BusPorts(paths["A"], paths["B"], self.rig.baud, virtual=True))


@contextmanager
def flashed_bench(work: Path, tree: Path) -> Iterator[FlashedBench]:
    """Flash both taps of the site from an inventory, then run them on a virtual rig."""
    site = write_site(work)
    db = work / "ibt.db"
    flashed: dict[str, Path] = {}
    with Inventory.open(db) as inventory:
        inventory.import_site(load_site_file(site))
        for tap_id in ("tap-1", "tap-2"):
            flashed[tap_id] = work / "flash" / tap_id
            flash.flash(inventory, tap_id, sim_dir=flashed[tap_id], tree=tree)
    layout = dataclasses.replace(rig_layout.load_site_file(site), flashed=flashed, wiring={"tap-2": ("ups-1", "ups-2")})
    with rig.VirtualRig(layout, work / "rig", firmware_tree=tree) as started:
        yield FlashedBench(started, db, site)
