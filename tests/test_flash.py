"""Flashing: a sim board's flash directory written and verified by hash, and the real-board
path through a fake mpremote (no board is attached here): the commands it builds, and the
board-side hash script, run on MicroPython's unix port over a directory standing in for
the board's filesystem."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from host.build import firmware_build
from host.model.site_file import load_site_file
from host.ops import flash, flash_records
from host.store.inventory import Inventory
from protocol import catalog
from tests.taps_site import write_site


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    opened = Inventory.open(tmp_path / "ibt.db")
    opened.import_site(load_site_file(write_site(tmp_path)))
    return opened


def test_a_sim_flash_directory_is_written_verified_and_keyed(inventory: Inventory, tmp_path: Path,
                                                              mpy_tree: Path) -> None:
    target = tmp_path / "flash"
    seen: list[tuple[int, int, str]] = []
    report = flash.flash(inventory, "tap-1", sim_dir=target, tree=mpy_tree, progress=lambda *a: seen.append(a))
    assert report.files == len(seen) and seen[-1][:2] == (report.files, report.files)
    assert (target / "firmware" / "tap.mpy").is_file() and (target / "firmware" / "main_sim.mpy").is_file()
    assert not (target / "firmware" / "tap.py").exists()
    assert (target / "main.py").read_text() == "from firmware import main_sim\n\nmain_sim.main()\n"  # booted
    key = flash_records.read_record(target / "key.json")
    config = flash_records.read_record(target / "config.json")
    assert key is not None and bytes.fromhex(key["key"]) == inventory.key_for(1)[0]
    assert config == {"address": catalog.ADDR_UNASSIGNED, "epoch": 0}
    assert json.loads((target / "board.json").read_text())["n_inputs"] == 2
    assert set(report.verified) == {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()}

    again = flash.build_image(inventory, "tap-1", mpy_tree)  # a new flash is a new key
    assert again.key != bytes.fromhex(key["key"]) and inventory.key_for(1)[0] == again.key
    flash.deploy_sim(again, target)
    (target / "firmware" / "measure.mpy").write_bytes(b"garbage")  # damaged after writing
    with pytest.raises(flash.FlashError, match=r"verification failed on .*: firmware/measure.mpy differs"):
        flash.verify_sim(again, target)


class FakeBoard:
    """mpremote as a board would answer it: `fs cp` stores a file, `exec` runs the code on
    MicroPython's unix port with the board's files as its current directory."""

    def __init__(self, root: Path, damage: str | None = None) -> None:
        self.root = root
        self.damage = damage
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str]) -> str:
        self.calls.append(list(args))
        assert args[:2] == ["connect", "/dev/ttyACM0"]
        if args[2:4] == ["fs", "cp"]:
            local, remote = args[4], args[5]
            assert remote.startswith(":")
            data = Path(local).read_bytes()
            if remote[1:] == self.damage:
                data = data[:-1] + bytes([data[-1] ^ 1])  # one bit lost on the way
            (self.root / remote[1:]).write_bytes(data)
            return ""
        assert args[2] == "exec"
        result = subprocess.run([firmware_build.micropython_command(), "-c", args[3]], cwd=self.root,
                                capture_output=True, text=True, check=True, timeout=60)
        return result.stdout


def test_a_board_is_flashed_with_mpremote_and_verified_by_its_own_hashes(inventory: Inventory, tmp_path: Path,
                                                                          mpy_tree: Path, monkeypatch) -> None:
    board = tmp_path / "board"
    board.mkdir()
    monkeypatch.setattr(flash, "check_port", lambda port: None)
    runner = FakeBoard(board)
    report = flash.flash(inventory, "tap-1", port="/dev/ttyACM0", tree=mpy_tree, runner=runner)
    assert report.target == "/dev/ttyACM0" and len(report.verified) == report.files
    copies = [c for c in runner.calls if c[2:4] == ["fs", "cp"]]
    assert len(copies) == report.files and {c[5] for c in copies} >= {":firmware/tap.mpy", ":key.json",
                                                                      ":board.json", ":protocol/catalog.mpy"}
    assert (board / "firmware" / "tap.mpy").read_bytes() == (mpy_tree / "firmware" / "tap.mpy").read_bytes()
    assert runner.calls[-1][2] == "exec" and "hashlib" in runner.calls[-1][3]

    damaged = FakeBoard(tmp_path, damage="key.json")
    (tmp_path / "firmware").mkdir(exist_ok=True)
    (tmp_path / "protocol").mkdir(exist_ok=True)
    with pytest.raises(flash.FlashError, match=r"key\.json differs from the image"):
        flash.flash(inventory, "tap-2", port="/dev/ttyACM0", tree=mpy_tree, runner=damaged)


def test_a_port_that_does_not_exist_is_refused_before_a_key_is_spent(inventory: Inventory, mpy_tree: Path) -> None:
    with pytest.raises(flash.FlashError, match="no such serial port /dev/ibt-no-such-port"):
        flash.flash(inventory, "tap-1", port="/dev/ibt-no-such-port", tree=mpy_tree)
    assert not inventory.tap("tap-1").has_key
    assert flash.parse_hashes("boot noise\nmissing key.json\n" + "ab" * 32 + " board.json\n") == {
        "key.json": "missing", "board.json": "ab" * 32}
