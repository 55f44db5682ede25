"""The operator's commands through click, against the virtual rig: JSON out of every read,
and one line with the likely cause, and a non-zero exit, for every bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from host.cli.errors import IbtGroup
from host.cli.taps import COMMANDS
from tests.test_operate import Bench, commissioned_bench

group = IbtGroup("ibt", commands={command.name or "": command for command in COMMANDS})  # as `ibt` has them


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, mpy_tree: Path) -> Iterator[Bench]:
    yield from commissioned_bench(tmp_path_factory.mktemp("cli"), mpy_tree)


def ibt(*args: str | Path) -> Result:
    return CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_every_command_is_there() -> None:
    assert set(group.commands) == {"flash", "scan", "commission", "calibrate", "status", "monitor", "events",
                                   "switch", "limits", "alternates", "capture"}


def test_reads_print_json(bench: Bench) -> None:
    where = ("--db", bench.db, "--rig", bench.rig.workdir)
    status = ibt("status", *where, "--json")
    assert status.exit_code == 0, status.output
    rows = json.loads(status.output)
    assert [r["tap"] for r in rows] == ["tap-1", "tap-2"] and rows[0]["active_source"] == "ups-1"
    events = ibt("events", "tap-2", *where, "--json")
    assert events.exit_code == 0 and json.loads(events.output)[0]["event"] == "boot"
    monitor = ibt("monitor", "tap-1", *where, "--once", "--json")
    assert monitor.exit_code == 0 and json.loads(monitor.output)[0]["tap"] == "tap-1"
    limits = ibt("limits", "tap-1", "--db", bench.db, "--json")  # from the history: no bus needed
    assert json.loads(limits.output)["limits"]["pickup_mA"] == 32000
    assert json.loads(limits.output)["origin"] == "firmware defaults, never set by this host (no bus given)"
    limits = ibt("limits", "tap-1", *where, "--json")  # read back from the tap
    assert limits.exit_code == 0, limits.output
    assert json.loads(limits.output)["origin"] == "read from the tap"
    assert json.loads(limits.output)["limits"]["instantaneous_mA"] == 40_000  # the board's, not the firmware's 320 A
    alternates = ibt("alternates", "tap-1", *where)  # every input's ranking, read from the tap
    assert alternates.exit_code == 0, alternates.output
    assert "set (read from the tap): ups-1 -> ups-2" in alternates.output
    scan = ibt("scan", *where, "--json")
    assert scan.exit_code == 0 and json.loads(scan.output) == []  # every tap has its address
    text = ibt("status", "tap-1", *where)
    assert text.exit_code == 0 and "input 2 ups-2" in text.output


def test_switch_moves_the_rack(bench: Bench) -> None:
    result = ibt("switch", "tap-2", "ups-1", "--db", bench.db, "--rig", bench.rig.workdir)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("tap-2: input 1 -> 2 (ups-1): verified")
    assert bench.rig.plant.plants["tap-2"].conducting_input() == 2


def test_calibrate_applies_at_the_tap_and_verifies(bench: Bench) -> None:
    where = ("--db", bench.db, "--rig", bench.rig.workdir)
    shown = ibt("calibrate", "tap-1", *where)
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("tap-1: in force at the tap") and "nominal, never calibrated" in shown.output
    status = json.loads(ibt("status", "tap-1", *where, "--json").output)[0]
    reference = round(status["inputs"][0]["voltage_v"] * 0.97, 2)  # a reference meter 3% below the tap
    result = ibt("calibrate", "tap-1", "--ref", f"input1={reference}", *where, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["verified"] is True and report["sent"] == ["input1"]
    # 3% below what one status read showed (the rack's load, hence the voltage, moves a little)
    assert report["channels"]["input1"]["gain_ppm"] == pytest.approx(970_000, abs=10_000)
    text = ibt("calibrate", "tap-1", *where)
    assert text.exit_code == 0 and "input1   gain 0.97" in text.output
    back = ibt("calibrate", "tap-1", "--reset", *where)
    assert back.exit_code == 0, back.output
    assert back.output.startswith("tap-1: sent current, input1, input2") and "(1000000 ppm)" in back.output
    line = one_line_error(ibt("calibrate", "tap-1", "--ref", f"input1={reference * 1.3:.1f}", *where))
    assert "calibration refused, nothing sent: input1: gain" in line


def test_bad_input_is_one_line_and_a_failure(bench: Bench, tmp_path: Path) -> None:
    where = ("--db", bench.db, "--rig", bench.rig.workdir)
    assert one_line_error(ibt("switch", "tap-3", "ups-1", *where)) == (
        "Error: no tap 'tap-3' in the inventory " f"{bench.db} (did you mean tap-2, tap-1?)")
    line = one_line_error(ibt("status", "--db", bench.db, "--bus-a", "/dev/ibt-none-a", "--bus-b", "/dev/ibt-none-b"))
    assert "no such serial port /dev/ibt-none-a: is the adapter plugged in?" in line
    line = one_line_error(ibt("switch", "tap-1", "ups-9", *where))
    assert "tap tap-1 has no input on source 'ups-9' (inputs: 1 ups-1, 2 ups-2)" in line
    bad_site = tmp_path / "bad.toml"
    bad_site.write_text("[site]\nname = 'x'\nvoltage_v = 400\nfrequency_hz = 55\n")
    line = one_line_error(ibt("commission", "--site", bad_site, *where))
    assert line == "Error: site file refused: bad.toml: sources: at least one [[sources]] is required (and 2 more)"
    line = one_line_error(ibt("limits", "tap-1", "--set", "pickup_mA=50000", *where))
    assert "limits refused, nothing sent: pickup 50 A is above the relay's rated current 40 A" in line
    line = one_line_error(ibt("status", "--db", tmp_path / "none.db", "--rig", bench.rig.workdir))
    assert "no inventory at" in line
    line = one_line_error(ibt("status", "--db", bench.db, "--rig", tmp_path))
    assert "no virtual rig in" in line
    line = one_line_error(ibt("flash", "tap-1", "--db", bench.db, "--port", "/dev/ibt-none"))
    assert "no such serial port /dev/ibt-none" in line


def test_flash_to_a_sim_directory(bench: Bench, tmp_path: Path, mpy_tree: Path) -> None:
    result = ibt("flash", "tap-2", "--db", bench.db, "--sim", tmp_path / "flash", "--tree", mpy_tree, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["verified"] == report["files"] > 20
