"""The tap's uptime across the 2**30 ms a 32-bit MCU's small ints hold (12.4 days after
boot): on MicroPython, with every arithmetic result of firmware/uptime.py checked against
that range (tests/int_guard.py), since the 64-bit unix port would hide a long int."""

from __future__ import annotations

import json
from pathlib import Path

from tests import int_guard
from tests.conftest import micropython_runner

WRAP = 2**30 - 1


def test_uptime_crosses_the_small_int_wrap_in_small_ints(tmp_path: Path) -> None:
    tree = int_guard.guarded_tree(tmp_path / "guarded", ("uptime.py",))
    assert "_g(" in (tree.parent / "src" / "firmware" / "uptime.py").read_text()
    out = json.loads(micropython_runner(tree)("uptime_run.py", "1500"))
    assert out["start_ms"] == WRAP - 499 and out["ms"] == 1000  # wrapped, and still counting
    assert out["s"] == out["start_s"] + 2  # 500 ms into a second, then 1.5 s more
    assert out["gap_ms"] == 1500 and out["before_ms"] == 300  # differences across the wrap
