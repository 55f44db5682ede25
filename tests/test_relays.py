"""The relay state machine on MicroPython (compiled, board heap) through randomized
episodes: transfers requested at any time, relays that weld, never close, close late,
feedback that lies, hardware interlock or not, and MCU resets mid-transfer. No close
is ever commanded while another relay is commanded closed or reads closed, and a
transfer is confirmed only on closed contacts. A deliberately broken copy of the
state machine is caught by the same harness, so the property has teeth."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from host.build import firmware_build
from tests.conftest import BOARD_HEAP, MP_SCRIPTS, json_lines


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_interlock_holds_across_random_episodes(micropython, seed: int) -> None:
    (result,) = json_lines(micropython("relay_props.py", str(seed), "300", "800"))
    assert result["violations"] == []
    # the episodes did exercise what they claim to
    assert result["completed"] > 500 and result["faults"] > 20 and result["resets"] > 300


def test_the_harness_catches_a_broken_interlock(mpy_tree: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(mpy_tree, broken)
    source = (firmware_build.ROOT / "firmware" / "relays.py").read_text()
    # close without waiting for the old contacts, and without the check in _close
    waits = "if self.hal.feedback(k):\n                if self._diff(now, self._since) > self.release_limit:"
    checks = "if j != k and (self.commanded[j] or self.hal.feedback(j)):"
    assert waits in source and checks in source
    mutated = source.replace(waits, waits.replace("self.hal.feedback(k)", "False")).replace(checks, "if False:")
    (broken / "firmware" / "relays.mpy").unlink()
    (broken / "firmware" / "relays.py").write_text(mutated)
    run = subprocess.run(
        [
            firmware_build.micropython_command(),
            "-X",
            f"heapsize={BOARD_HEAP}",
            str(MP_SCRIPTS / "relay_props.py"),
            "1",
            "100",
            "800",
        ],
        capture_output=True,
        text=True,
        env={"MICROPYPATH": str(broken)},
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["violations"], "the broken state machine went unnoticed"
