"""A small site for the operator command tests: two sources a third of a turn apart, two
racks, each on a two-input tap of the sim board (tests/test_commission.py, test_operate.py,
test_cli_taps.py)."""

from __future__ import annotations

from pathlib import Path

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
