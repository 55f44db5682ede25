"""The firmware compiles as it is flashed: for the RP2040 (armv6m, the reference board)
and for the unix port (x64, the sim board). Modules with @micropython.native need an
architecture; mpy-cross without -march refuses them ("invalid arch")."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.build import firmware_build


@pytest.mark.parametrize(
    ("arch", "board"),
    [(firmware_build.ARCH_RP2040, firmware_build.REFERENCE_BOARD), (firmware_build.ARCH_UNIX_X64, "sim")],
)
def test_every_module_compiles_for_its_board(tmp_path: Path, arch: str, board: str) -> None:
    built = firmware_build.compile_tree(tmp_path, arch, modules=firmware_build.sources(board=board))
    names = {p.name for p in built}
    assert {"tap.mpy", "framing.mpy", "measure.mpy", "catalog.mpy"} <= names
    assert ("hal_sim.mpy" in names) == (board == "sim")
    for path in built:
        assert path.read_bytes()[:2] == b"M\x06"  # .mpy version 6, what MicroPython 1.29 loads


def test_a_module_mpy_cross_refuses_is_reported_by_name(tmp_path: Path) -> None:
    broken = tmp_path / "firmware"
    broken.mkdir()
    (broken / "bad.py").write_text("def f(:\n    pass\n")
    with pytest.raises(firmware_build.BuildError, match=r"mpy-cross refused firmware/bad\.py"):
        firmware_build.compile_tree(tmp_path / "out", root=tmp_path, modules=[broken / "bad.py"])
