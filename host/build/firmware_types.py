"""Type-checking the firmware side (firmware/, protocol/) against MicroPython's stubs for the
reference board, not CPython's standard library.

build_typeshed() assembles a typeshed whose `stdlib` is MicroPython's: micropython-stdlib-stubs
plus the board stubs (machine, micropython, rp2, time with sleep_ms, ...). run_mypy() runs mypy
on it with --custom-typeshed-dir, so a call that the board's MicroPython lacks is an error even
where CPython has it. Runs on CPython; nothing here goes onto a board.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import mypy

from host.build import firmware_build

ROOT = firmware_build.ROOT
BOARD_STUBS = "micropython-rp2-rpi-pico-stubs"  # the reference board: RP2040, rpi_pico
STDLIB_STUBS = "micropython-stdlib-stubs"
# Flags for modules without annotations: --check-untyped-defs, or mypy would skip the body of
# every function of the firmware (none has annotations). --no-site-packages, or a missing
# MicroPython module could be found among CPython's installed packages.
MYPY_FLAGS = (
    "--check-untyped-defs",
    "--no-site-packages",
    "--explicit-package-bases",
    "--no-error-summary",
    "--show-error-codes",
    "--no-color-output",
    "--hide-error-context",
)
MYPY_INI = "[mypy]\npython_version = 3.11\n"  # as the host's [tool.mypy], whatever Python runs mypy


def _stub_files(distribution: str) -> Iterable[tuple[PurePosixPath, Path]]:
    """(path in the distribution, installed file) of each stub file of an installed distribution."""
    dist = importlib.metadata.distribution(distribution)
    for entry in dist.files or ():
        path = PurePosixPath(str(entry))
        if path.suffix == ".pyi" or path.name == "VERSIONS":
            yield path, Path(str(dist.locate_file(entry)))


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _top_level_modules(stdlib: Path) -> list[str]:
    names = {p.stem for p in stdlib.glob("*.pyi")}
    names |= {p.parent.name for p in stdlib.glob("*/__init__.pyi")}
    return sorted(names)


def build_typeshed(dest: Path, board_stubs: str = BOARD_STUBS) -> Path:
    """Assemble a typeshed for MicroPython on the board in dest; return its directory.

    dest/stdlib: micropython-stdlib-stubs (its stdlib/ and its helper package _mpy_shed), then
    every module of the board's stub distribution, over them; each module missing from
    stdlib/VERSIONS is added, else mypy would not see it. dest/stubs: mypy's own third-party
    stubs (mypy-extensions), which mypy requires of any typeshed. dest/mypy.ini: the config
    run_mypy() uses instead of pyproject.toml's, which is the host's.
    """
    stdlib = dest / "stdlib"
    if stdlib.exists():
        shutil.rmtree(stdlib)
    stdlib.mkdir(parents=True)
    for path, source in _stub_files(STDLIB_STUBS):
        if path.parts[0] == "stubs":
            continue  # its fork of mypy-extensions: mypy's own copy below matches the mypy that runs
        _copy(source, stdlib / (path.relative_to("stdlib") if path.parts[0] == "stdlib" else path))
    for path, source in _stub_files(board_stubs):
        _copy(source, stdlib / path)
    versions = stdlib / "VERSIONS"
    if not versions.is_file():
        raise FileNotFoundError(f"{STDLIB_STUBS} has no stdlib/VERSIONS: is it installed?")
    text = versions.read_text()
    listed = {line.split(":")[0].strip() for line in text.splitlines() if ":" in line and not line.startswith("#")}
    missing = [name for name in _top_level_modules(stdlib) if name not in listed]
    versions.write_text(text.rstrip("\n") + "\n" + "".join(f"{name}: 3.0-\n" for name in missing))
    stubs = dest / "stubs"
    if stubs.exists():
        shutil.rmtree(stubs)
    shutil.copytree(Path(mypy.__file__).parent / "typeshed" / "stubs", stubs)
    (dest / "mypy.ini").write_text(MYPY_INI)
    return dest


def firmware_sources(root: Path = ROOT) -> list[Path]:
    """The modules that run on the reference board: what firmware_build compiles for it."""
    return firmware_build.sources(root, firmware_build.REFERENCE_BOARD)


def mypy_command(files: Sequence[Path], typeshed: Path, cache_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mypy",
        "--custom-typeshed-dir",
        str(typeshed),
        "--cache-dir",
        str(cache_dir),
        "--config-file",
        str(typeshed / "mypy.ini"),
        *MYPY_FLAGS,
        *(str(f) for f in files),
    ]


def run_mypy(
    files: Sequence[Path], typeshed: Path, cache_dir: Path | None = None, root: Path = ROOT
) -> tuple[int, str]:
    """Run mypy on files against the typeshed of build_typeshed(); return (exit code, output).

    Runs in root, so `from protocol import catalog` is found; its own config file, so the
    host's [tool.mypy] section of pyproject.toml does not apply. Exit code 0: no error.
    """
    command = mypy_command(files, typeshed, cache_dir or typeshed / ".mypy_cache")
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    return result.returncode, result.stdout + result.stderr


def check_firmware(work: Path, files: Sequence[Path] | None = None, root: Path = ROOT) -> tuple[int, str]:
    """Build the typeshed in work/typeshed and type-check files (default: the firmware side)."""
    typeshed = build_typeshed(work / "typeshed")
    return run_mypy(files if files is not None else firmware_sources(root), typeshed, work / "mypy_cache", root)
