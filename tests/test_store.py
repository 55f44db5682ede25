"""Persistence and the event log on MicroPython (compiled, board heap): atomic writes
that survive a reset mid-write, corrupt records loading safe defaults with a flag,
counters reserved in blocks, and the event ring's indexes."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import json_lines

OK, MISSING, CORRUPT, RECOVERED = 0, 1, 2, 3
DEFAULTS = {"address": 254, "epoch": 0, "counter_reserved": 0, "alternates": [0, 0, 0]}


def test_records_and_event_log(micropython, tmp_path: Path) -> None:
    (out,) = json_lines(micropython("store_check.py", str(tmp_path)))
    assert out["missing"] == [MISSING, DEFAULTS]
    assert out["saved"] == [OK, DEFAULTS | {"address": 17, "alternates": [2, 3, 0]}]
    assert out["recovered"] == [RECOVERED, DEFAULTS | {"address": 18, "alternates": [2, 3, 0]}]
    assert out["torn_new"] == [OK, DEFAULTS | {"address": 17, "alternates": [2, 3, 0]}]
    assert out["corrupt"] == [CORRUPT, DEFAULTS]
    wrote, reserved = out["reserve"]
    assert wrote == [True, False, False, False, True] and reserved == 116 + 64
    head, oldest, first, event, count, empty_first, empty = out["events"]
    assert (head, oldest, first, count) == (70, 6, 6, 10)
    assert event == [1006, 3, 1, 6]
    assert (empty_first, empty) == (70, [])
