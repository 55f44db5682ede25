"""Flashing a tap: build its image, deploy it to a board (mpremote) or a sim board's flash
directory, and prove by hash that what landed is what was built.

An image is every file the board's filesystem gets, by path relative to its root:

- the firmware compiled by mpy-cross for the board's MCU (host/build/firmware_build.py):
  `firmware/*.mpy` and `protocol/*.mpy`, the board's own HAL and entry point only;
- `board.json`, the board description's firmware parameters (host/model/boards.py);
- `config.json` and `key.json`, the tap's records (host/ops/flash_records.py): no address
  yet (a fresh tap answers DISCOVER from 254), epoch 0, and a fresh 32-byte key.

The key is recorded in the inventory *before* anything is written (`Inventory.new_key`):
a board that holds a key the inventory lost could never be commanded again, while a key
recorded for a flash that then failed costs nothing (the next flash records another).

Verification reads each file back (a sim directory) or has the board hash its own files
(`mpremote exec` with `hashlib.sha256`) and compares with the image's SHA-256; a
mismatch names the file. The real-board path is exercised in the tests only through a
fake `mpremote` runner (no board is attached to the test machine): command construction
and hash checking are tested, the mpremote transfer itself is not.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from host.build import firmware_build
from host.model import boards
from host.model.errors import OperatorError
from host.ops import flash_records
from host.store.inventory import Inventory
from host.store.records import TapInfo
from protocol import catalog

RECORD_FILES = ("config.json", "key.json")
BOARD_FILE = "board.json"
BOOT_FILE = "main.py"  # what MicroPython runs at boot: it starts the board's entry point
MPREMOTE_TIMEOUT_S = 120.0
_ARCH_BY_MCU = {"rp2040": firmware_build.ARCH_RP2040}

Progress = Callable[[int, int, str], None]  # (files done, files in all, the file just written)


class FlashError(OperatorError):
    """The image could not be built, written or verified; one line with the cause."""


@dataclass(frozen=True)
class Image:
    """The files of one tap's flash, by path on the board, and the key in them."""

    tap: str
    board: str
    files: dict[str, bytes]
    key: bytes

    def digests(self) -> dict[str, str]:
        return {path: hashlib.sha256(data).hexdigest() for path, data in self.files.items()}


@dataclass
class FlashReport:
    tap: str
    board: str
    target: str
    files: int
    bytes: int
    verified: dict[str, str] = field(default_factory=dict)  # path -> SHA-256, as read back

    def as_dict(self) -> dict[str, object]:
        return {"tap": self.tap, "board": self.board, "target": self.target, "files": self.files,
                "bytes": self.bytes, "verified": len(self.verified)}


# -- building ------------------------------------------------------------------------------------


def arch_for(board: boards.Board) -> str:
    """mpy-cross's -march for a board: the sim board runs on this machine's unix port."""
    if board.name == "sim":
        return firmware_build.ARCH_UNIX_X64
    mcu = board.raw["board"]["mcu"]
    try:
        return _ARCH_BY_MCU[mcu]
    except KeyError:
        raise FlashError(f"no mpy-cross architecture known for MCU {mcu!r}") from None


def compile_firmware(board: boards.Board, dest: Path) -> Path:
    """The board's modules compiled into dest (firmware/, protocol/)."""
    modules = firmware_build.sources(board=board.name)
    try:
        firmware_build.compile_tree(dest, arch_for(board), modules=modules)
    except firmware_build.BuildError as exc:
        raise FlashError(str(exc)) from None
    return dest


def board_parameters(board: boards.Board, tap: TapInfo) -> dict[str, object]:
    """board.json: the board's parameters; the sim board takes the tap's number of inputs
    (it stands in for any rack tap, docs/site_file.md)."""
    params = board.firmware_parameters()
    if board.name == "sim" and tap.inputs:
        params["n_inputs"] = len(tap.inputs)
    elif tap.inputs and len(tap.inputs) > int(params["n_inputs"]):
        raise FlashError(f"tap {tap.id} has {len(tap.inputs)} inputs, board {board.name} has {params['n_inputs']}")
    return params


def build_image(inventory: Inventory, tap_ref: str, tree: Path | None = None, *,
                board_name: str | None = None) -> Image:
    """The image for a tap: compiled firmware (from `tree` if given, else built now), its
    board description, and records with a fresh key, recorded in the inventory first."""
    tap = inventory.tap(tap_ref)
    name = board_name or tap.board
    try:
        board = boards.by_name(name)
    except boards.BoardError as exc:
        raise FlashError(f"board {name!r}: {'; '.join(exc.problems)}") from None
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="ibt-flash-") as scratch:
        built = tree or compile_firmware(board, Path(scratch) / "mpy")
        wanted = {(p.parent.name, p.stem) for p in firmware_build.sources(board=board.name)}
        for package, stem in sorted(wanted):
            compiled = built / package / f"{stem}.mpy"
            if not compiled.is_file():
                raise FlashError(f"{compiled} is missing from the firmware tree: build it again")
            files[f"{package}/{stem}.mpy"] = compiled.read_bytes()
        files[BOARD_FILE] = json.dumps(board_parameters(board, tap), sort_keys=True).encode()
        key = inventory.new_key(tap.id)  # recorded before anything reaches the board
        records = Path(scratch) / "records"
        records.mkdir()
        flash_records.write_record(records, "config.json", {"address": catalog.ADDR_UNASSIGNED, "epoch": 0})
        flash_records.write_record(records, "key.json", {"key": key.hex()})
        for name_ in RECORD_FILES:
            files[name_] = (records / name_).read_bytes()
    entry = f"main_{board.name}"
    if ("firmware", entry) in wanted:  # MicroPython boots /main.py, a source file (a .mpy is not run at boot)
        files[BOOT_FILE] = f"from firmware import {entry}\n\n{entry}.main()\n".encode()
    return Image(tap.id, board.name, files, key)


# -- a sim board's flash directory ---------------------------------------------------------------


def deploy_sim(image: Image, flash_dir: Path, progress: Progress | None = None) -> FlashReport:
    """Write the image into a sim board's flash directory, then read every file back and
    compare its hash. Records the rig or a previous flash left there are replaced."""
    flash_dir.mkdir(parents=True, exist_ok=True)
    total = len(image.files)
    for done, (path, data) in enumerate(sorted(image.files.items()), start=1):
        target = flash_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if progress is not None:
            progress(done, total, path)
    for stale in RECORD_FILES:  # a half-written record of an earlier firmware must not win over ours
        (flash_dir / (stale + ".new")).unlink(missing_ok=True)
    read_back = {path: _file_digest(flash_dir / path) for path in image.files}
    _compare(image, read_back, str(flash_dir))
    return FlashReport(image.tap, image.board, str(flash_dir), total, sum(map(len, image.files.values())), read_back)


def verify_sim(image: Image, flash_dir: Path) -> dict[str, str]:
    """Hash the flash directory's copy of the image again (FlashError on any difference)."""
    read_back = {path: _file_digest(flash_dir / path) for path in image.files}
    _compare(image, read_back, str(flash_dir))
    return read_back


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


# -- a real board, through mpremote ----------------------------------------------------------------


class Runner(Protocol):
    """Runs one mpremote command line; returns its standard output, raises FlashError on failure."""

    def __call__(self, args: Sequence[str]) -> str: ...


def mpremote_runner(args: Sequence[str]) -> str:
    """The real runner: `python -m mpremote ...` of this environment."""
    command = [sys.executable, "-m", "mpremote", *args]
    if shutil.which("mpremote", path=str(Path(sys.executable).parent)) is None and not _has_mpremote():
        raise FlashError("mpremote is not installed: pip install mpremote")
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=MPREMOTE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise FlashError(f"mpremote did not finish within {MPREMOTE_TIMEOUT_S:g} s: is the board responding?") from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise FlashError(f"mpremote {' '.join(args[2:4])} failed: {lines[-1] if lines else 'no output'}")
    return result.stdout


def _has_mpremote() -> bool:
    return importlib.util.find_spec("mpremote") is not None  # optional: only real boards need it


def hash_script(paths: Sequence[str]) -> str:
    """MicroPython code that prints `<sha256 hex> <path>` for each file on the board."""
    return (
        "import hashlib, binascii\n"
        f"for p in {list(paths)!r}:\n"
        "    h = hashlib.sha256()\n"
        "    try:\n"
        "        f = open(p, 'rb')\n"
        "    except OSError:\n"
        "        print('missing', p)\n"
        "        continue\n"
        "    while True:\n"
        "        b = f.read(512)\n"
        "        if not b:\n"
        "            break\n"
        "        h.update(b)\n"
        "    f.close()\n"
        "    print(binascii.hexlify(h.digest()).decode(), p)\n"
    )


def parse_hashes(output: str) -> dict[str, str]:
    """`<digest> <path>` lines as printed by `hash_script` (other lines are ignored)."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        digest, _, path = line.strip().partition(" ")
        if path and (digest == "missing" or (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest))):
            found[path] = digest
    return found


def check_port(port: str) -> None:
    """A device path that does not exist is refused at once (mpremote names, URLs and COM ports pass)."""
    if port.startswith("/") and not Path(port).exists():
        raise FlashError(f"no such serial port {port}: is the board plugged in?")


def deploy_board(image: Image, port: str, runner: Runner = mpremote_runner,
                 progress: Progress | None = None) -> FlashReport:
    """Copy the image onto the board at `port` with mpremote, then have the board hash every
    file and compare. Directories are made first (an existing one is fine)."""
    check_port(port)
    connect = ["connect", port]
    with tempfile.TemporaryDirectory(prefix="ibt-flash-") as scratch:
        local = Path(scratch)
        for directory in sorted({str(Path(p).parent) for p in image.files if "/" in p}):
            runner([*connect, "exec", f"import os\ntry:\n    os.mkdir({directory!r})\nexcept OSError:\n    pass\n"])
        total = len(image.files)
        for done, (path, data) in enumerate(sorted(image.files.items()), start=1):
            source = local / path.replace("/", "__")
            source.write_bytes(data)
            runner([*connect, "fs", "cp", str(source), f":{path}"])
            if progress is not None:
                progress(done, total, path)
        read_back = parse_hashes(runner([*connect, "exec", hash_script(sorted(image.files))]))
    _compare(image, read_back, port)
    return FlashReport(image.tap, image.board, port, len(image.files), sum(map(len, image.files.values())), read_back)


# -- both ----------------------------------------------------------------------------------------------


def _compare(image: Image, read_back: dict[str, str], where: str) -> None:
    expected = image.digests()
    bad = sorted(path for path, digest in expected.items() if read_back.get(path) != digest)
    if bad:
        what = "missing" if read_back.get(bad[0], "missing") == "missing" else "differs from the image"
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise FlashError(f"verification failed on {where}: {bad[0]} {what}{more}; flash again")


def flash(inventory: Inventory, tap_ref: str, *, port: str | None = None, sim_dir: Path | None = None,
          tree: Path | None = None, runner: Runner = mpremote_runner, progress: Progress | None = None) -> FlashReport:
    """Build the tap's image (a fresh key, recorded first) and deploy it to exactly one target."""
    if (port is None) == (sim_dir is None):
        raise FlashError("give exactly one target: a serial port (--port) or a sim board's flash directory (--sim)")
    if port is not None:
        check_port(port)  # before a key is spent on a board that is not there
    image = build_image(inventory, tap_ref, tree)
    if sim_dir is not None:
        report = deploy_sim(image, sim_dir, progress)
    else:
        assert port is not None
        report = deploy_board(image, port, runner, progress)
    return report
