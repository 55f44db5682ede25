"""Fixtures shared by the tests: the firmware compiled as it is flashed, and a runner
for MicroPython's unix port with a heap like the reference board's."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from host.build import firmware_build

BOARD_HEAP = "190K"  # what an RP2040 leaves MicroPython
MP_SCRIPTS = Path(__file__).resolve().parent / "mp"

RunMicroPython = Callable[..., str]


@pytest.fixture(scope="session")
def mpy_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("mpy")
    firmware_build.compile_tree(dest, firmware_build.ARCH_UNIX_X64)
    return dest


def micropython_runner(tree: Path) -> RunMicroPython:
    """A function that runs a script of tests/mp on MicroPython with `tree` as its path."""
    command = firmware_build.micropython_command()

    def run(script: str, *args: str, heap: str = BOARD_HEAP, timeout: float = 300) -> str:
        env = dict(os.environ, MICROPYPATH=str(tree))
        result = subprocess.run(
            [command, "-X", f"heapsize={heap}", str(MP_SCRIPTS / script), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"micropython {script} failed ({result.returncode}):\n{result.stderr}{result.stdout[-2000:]}"
            )
        return result.stdout

    return run


@pytest.fixture(scope="session")
def micropython(mpy_tree: Path) -> RunMicroPython:
    """Run a script of tests/mp on MicroPython against the compiled firmware."""
    return micropython_runner(mpy_tree)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
