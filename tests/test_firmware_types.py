"""mypy on the firmware side (firmware/, protocol/) against the MicroPython stubs of the reference
board (RP2040, rpi_pico) instead of CPython's standard library; and a check that this catches
what the board lacks, so that a clean run means something."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.build import firmware_types

BAD_MODULE = """\
import machine
import time


def blink():  # unannotated, like the firmware: its body is checked all the same
    led = machine.Pin(25)
    led.valu(1)
    time.sleep_ms("x")
"""


@pytest.fixture(scope="module")
def typeshed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return firmware_types.build_typeshed(tmp_path_factory.mktemp("mp-typeshed"))


def test_firmware_type_checks_against_the_board_stubs(typeshed: Path, tmp_path: Path) -> None:
    files = firmware_types.firmware_sources()
    assert {p.parent.name for p in files} == {"firmware", "protocol"}
    code, output = firmware_types.run_mypy(files, typeshed, tmp_path / "cache")
    assert code == 0, f"mypy on the firmware side:\n{output}"


def test_a_call_the_board_lacks_is_an_error(typeshed: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad_board.py"
    bad.write_text(BAD_MODULE)
    code, output = firmware_types.run_mypy([bad], typeshed, tmp_path / "cache")
    assert code == 1, output
    assert 'bad_board.py:7: error: "Pin" has no attribute "valu"' in output
    assert 'bad_board.py:8: error: Argument 1 to "sleep_ms" has incompatible type "str"; expected "int"' in output
