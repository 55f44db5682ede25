"""The virtual rig: a whole site's taps running the compiled firmware on MicroPython, on
two virtual RS-485 buses, in a shared plant, with faults injected while it runs.

`VirtualRig` builds the firmware tree once (host/build/firmware_build.py; rebuilt only where a
module changed), opens buses A and B (host/sim/rig/vbus.py: the host end is a pty, opened like a
USB adapter), gives every tap a flash directory with its address, epoch and a fresh key,
and starts one plant server (host/sim/rig/plant_server.py, serving the tap's `TapPlant` of
host/sim/rig/rig_plant.py) and one `micropython` process (firmware/main_sim.py) per tap. `close()`
stops all of it: each plant link is hung up, so each firmware stops at a block boundary;
a process that does not is terminated, then killed.

The records the host needs to talk to the taps (unique id, address, epoch, key) are in
`rig.taps` and, with the buses' device paths, in `rig.json` in the work directory.

Control from another process: `serve_control()` listens on `control.sock` (a Unix socket
in the work directory) for one JSON object per line and answers each with one line:

    {"command": "inject", "kind": "sag", "target": "ups-1", "params": {"fraction": 0.6}}
    {"command": "status"}            -> the plant's sources and taps, and the processes
    {"command": "ping"}
    answers: {"ok": true, "result": ...} or {"ok": false, "error": "one line"}

`send_control(workdir, request)` is the client side (`ibt sim inject` uses it).

Monitor taps (`RigLayout.monitors`, a site file's taps with role "monitor") run the same
firmware on a board in the monitor role (one input: the source they are fitted to; an
accelerometer and a DC-bus channel), served by the plant's `MonitorPlant`; they answer
HEALTH with what the source's health model and the heat, vibration and ripple
injections say. Their records are in `rig.monitors` and under "monitors" in rig.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from host.build import firmware_build
from host.model import boards
from host.model.site import Site
from host.ops import flash_records
from host.ops.session import RIG_FILE
from host.sim.rig import rig_faults
from host.sim.rig.plant import ADC_MAX, RelaySpec
from host.sim.rig.plant_server import PlantServer
from host.sim.rig.rig_control import ControlServer, send_control
from host.sim.rig.rig_layout import CONTROL_SOCKET, RigError, RigLayout, RigTap, layout_of, safe_name, unique_id_of
from host.sim.rig.rig_parts import MONITOR_DC_FULL_SCALE_V, MONITOR_MG_PER_COUNT
from host.sim.rig.rig_plant import RigPlant
from host.sim.rig.vbus import VirtualBus, VirtualBuses
from protocol import catalog

SIM_MAIN = "firmware.main_sim"  # run from the compiled tree, as flashed
DEFAULT_EPOCH = 1
START_TIMEOUT_S = 60.0  # wall-clock: generous, a loaded 2-core machine starts N interpreters slowly
STOP_TIMEOUT_S = 10.0  # for the firmware to notice its plant link is gone, before it is terminated
READY_SIM_S = 0.5  # each tap has run this much simulated time (its meter has windows) when start() returns


# The sim board in the monitor role: no board file describes one yet, so these are what
# boards.Board.firmware_parameters() would add from a [monitor] section, with the plant's
# sensor scales. One input, no alternates: the monitor feeds no rack.
MONITOR_HEALTH_WINDOW = 2048  # samples per vibration and ripple window: about half a second at 4 kSPS


MONITOR_BOARD: dict[str, Any] = {
    "role": catalog.ROLE_SOURCE_MONITOR,
    "n_inputs": 1,
    "n_aux": 2,
    "health_window": MONITOR_HEALTH_WINDOW,
    "mg_per_count": MONITOR_MG_PER_COUNT,
    "dc_volts_per_count": MONITOR_DC_FULL_SCALE_V / ADC_MAX,
    "default_alternates": [0, 0, 0],
}


def build_firmware(dest: Path) -> Path:
    """The sim board's .mpy tree in dest, compiling only modules newer than their .mpy."""
    stale = [
        source for source in firmware_build.sources(board="sim")
        if not _newer_than(dest / source.parent.name / (source.stem + ".mpy"), source)
    ]
    if stale:
        firmware_build.compile_tree(dest, firmware_build.ARCH_UNIX_X64, modules=stale)
    return dest


def _newer_than(target: Path, source: Path) -> bool:
    try:
        return target.stat().st_mtime >= source.stat().st_mtime
    except OSError:
        return False


class VirtualRig:
    """`with VirtualRig((3, 2), workdir) as rig:` starts 3 taps on 2 sources; see the module docstring."""

    def __init__(
        self,
        site: Site | RigLayout | tuple[int, int],
        workdir: Path,
        baud: int = 115200,
        *,
        firmware_tree: Path | None = None,
        realtime: bool = True,
        epoch: int = DEFAULT_EPOCH,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.layout = layout_of(site)
        self.site = self.layout.site
        n_taps = len(self.site.racks) + len(self.layout.monitors or {})
        if n_taps > catalog.ADDR_TAP_MAX - catalog.ADDR_TAP_MIN + 1:
            raise RigError(f"{n_taps} taps do not fit the bus's addresses")
        self.workdir = Path(workdir).resolve()
        self.baud = baud
        self.epoch = epoch
        self.start_timeout_s = start_timeout_s
        self.firmware_tree = firmware_tree
        self.board = boards.by_name("sim")
        params = self.board.firmware_parameters()
        relay = RelaySpec(params["operate_us"], params["release_us"], params["bounce_us"])
        self.plant = RigPlant(self.site, hz=self.layout.hz, phases_deg=self.layout.phases_deg, relay=relay,
                              realtime=realtime, wiring=self.layout.wiring, monitors=self.layout.monitors)
        self.taps: list[RigTap] = []
        self.monitors: list[RigTap] = []  # the monitor taps' records
        self.segment_buses: dict[str, VirtualBuses] = {}  # per bus segment, its buses A and B
        self.exit_codes: dict[str, int] = {}
        self._servers: dict[str, PlantServer] = {}
        self._threads: list[threading.Thread] = []
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        self._control: ControlServer | None = None
        self._started = False
        self._closed = False

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> VirtualRig:
        """Build, wire and start everything; return once every tap runs. On any failure what
        was started is stopped again and the error raised."""
        if self._closed or self._started:
            raise RigError("a rig starts once")
        self._started = True
        try:
            self._refuse_running_rig()
            self.workdir.mkdir(parents=True, exist_ok=True)
            tree = self.firmware_tree or build_firmware(self.workdir / "mpy")
            for index, segment in enumerate(self.layout.segment_names):
                self.segment_buses[segment] = VirtualBuses(("A", "B"), self.baud, seed=2 * index).start()
            for index, rack in enumerate(self.site.racks):
                self._start_tap(index, rack.id, rack.tap_id, tree)
            for index, (tap_id, source_id) in enumerate((self.layout.monitors or {}).items(), len(self.site.racks)):
                self._start_monitor(index, tap_id, source_id, tree)
            self._wait_ready()
            self._write_rig_file()
        except firmware_build.BuildError as exc:  # mpy-cross or micropython missing or refusing
            self.close()
            raise RigError(str(exc)) from None
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop everything the rig started: processes, threads, sockets, ptys. Idempotent;
        a KeyboardInterrupt halfway still leaves no process behind."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._control is not None:
                self._control.close()
            for server in self._servers.values():
                server.close()
            self._stop_processes()
        finally:
            for thread in self._threads:
                thread.join(timeout=5)
            for buses in self.segment_buses.values():
                buses.close()
            for log in self._logs:
                log.close()

    def __enter__(self) -> VirtualRig:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def buses(self) -> VirtualBuses | None:
        """The buses of the first segment (the only one of most rigs); None before start."""
        return next(iter(self.segment_buses.values()), None)

    @property
    def bus_paths(self) -> dict[str, str]:
        """The host-side device of each bus ("A", "B") of the first segment: open it with pyserial."""
        if self.buses is None:
            raise RigError("the rig has not started")
        return self.buses.host_paths

    @property
    def segment_paths(self) -> dict[str, dict[str, str]]:
        """Per bus segment, the host-side device of its buses A and B."""
        if not self.segment_buses:
            raise RigError("the rig has not started")
        return {segment: buses.host_paths for segment, buses in self.segment_buses.items()}

    def bus(self, name: str) -> VirtualBus:
        """A bus by name: "A" or "B" of the first segment, or "SEGMENT/A"."""
        if self.buses is None:
            raise RigError("the rig has not started")
        segment, _, bus = name.rpartition("/")
        buses = self.segment_buses.get(segment) if segment else self.buses
        if buses is None or bus.upper() not in ("A", "B"):
            names = ", ".join(f"{s}/A, {s}/B" for s in self.segment_buses)
            raise RigError(f"unknown bus {name!r} (buses: A, B, {names})")
        return buses[bus.upper()]

    def tap(self, tap_id: str) -> RigTap:
        """A rack tap by its id or its rack's, or a monitor tap by its id."""
        for record in self.taps:
            if record.id == tap_id or record.rack == tap_id:
                return record
        for record in self.monitors:
            if record.id == tap_id:
                return record
        known = ", ".join(t.id for t in [*self.taps, *self.monitors])
        raise RigError(f"unknown tap {tap_id!r} (taps: {known})")

    def monitor_of(self, source_id: str) -> RigTap:
        """The (first) monitor tap fitted to a source."""
        for record in self.monitors:
            if record.monitors == source_id:
                return record
        fitted = ", ".join(f"{t.id} on {t.monitors}" for t in self.monitors) or "none"
        raise RigError(f"no monitor tap is fitted to source {source_id!r} (monitors: {fitted})")

    @property
    def pids(self) -> dict[str, int]:
        """The MicroPython process of each tap, by tap id."""
        return {tap_id: process.pid for tap_id, process in self._processes.items()}

    def dead_taps(self) -> dict[str, int]:
        """Taps whose process has ended while the rig runs: tap id -> exit code."""
        return {tap_id: code for tap_id, p in self._processes.items() if (code := p.poll()) is not None}

    # -- faults --------------------------------------------------------------------------

    def inject(self, kind: str, target: str, **params: Any) -> None:
        """Inject a fault now (host/sim/rig/rig_faults.py says which, on what, with which values)."""
        rig_faults.inject(self.plant, self.bus, kind, target, params)

    def status(self) -> dict[str, Any]:
        """The plant's sources and taps, the buses and which tap processes still run."""
        snapshot = self.plant.snapshot()
        dead = self.dead_taps()
        for tap_id, tap_state in [*snapshot["taps"].items(), *snapshot["monitors"].items()]:
            tap_state["running"] = tap_id not in dead
        snapshot["buses"] = self.bus_paths if self.buses is not None else {}
        snapshot["segments"] = self.segment_paths if self.segment_buses else {}
        return snapshot

    # -- control from another process ------------------------------------------------------

    def serve_control(self) -> Path:
        """Take commands on workdir/control.sock (module docstring); return its path."""
        if self._control is None:
            self._control = ControlServer(self.workdir / CONTROL_SOCKET, self._handle_control)
            self._threads.append(self._control.start())
        return self._control.path

    def _handle_control(self, request: dict[str, Any]) -> Any:
        command = request.get("command")
        if command == "ping":
            return "pong"
        if command == "status":
            return self.status()
        if command == "inject":
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise RigError("params must be an object")
            self.inject(str(request.get("kind")), str(request.get("target")), **params)
            return None
        raise RigError(f"unknown command {command!r} (commands: inject, status, ping)")

    # -- starting --------------------------------------------------------------------------

    def _refuse_running_rig(self) -> None:
        path = self.workdir / CONTROL_SOCKET
        if not path.exists():
            return
        try:
            send_control(self.workdir, {"command": "ping"}, timeout=2.0)
        except RigError:
            path.unlink(missing_ok=True)  # left by a rig that did not stop cleanly
            return
        raise RigError(f"a rig is already running in {self.workdir}")

    def _start_tap(self, index: int, rack_id: str, tap_id: str, tree: Path) -> None:
        tap = self.site.tap_of(rack_id)
        home, flash = self._home(index, tap_id)
        record = RigTap(
            id=tap_id, rack=rack_id,
            address=(self.layout.addresses or {}).get(tap_id, catalog.ADDR_TAP_MIN + index),
            unique_id=(self.layout.unique_ids or {}).get(tap_id, unique_id_of(self.site.name, tap_id)).hex(),
            key=secrets.token_bytes(catalog.KEY_LEN).hex(), epoch=self.epoch,
            inputs=self.site.reachable(rack_id), flash=str(flash), log=str(home / "tap.log"),
            segment=self.layout.segment_of(tap_id),
        )
        record = self._write_flash(record, flash)
        self._launch(record, home, self.board.firmware_parameters() | {"n_inputs": tap.n_inputs},
                     PlantServer(self.plant.plants[tap_id]), tree)
        self.taps.append(record)

    def _start_monitor(self, index: int, tap_id: str, source_id: str, tree: Path) -> None:
        """A monitor tap: the sim board in the monitor role, fitted to source_id. Without an
        address from the layout it takes the lowest one no other tap of the rig has."""
        home, flash = self._home(index, tap_id)
        address = (self.layout.addresses or {}).get(tap_id)
        if address is None:
            taken = {t.address for t in [*self.taps, *self.monitors]} | set((self.layout.addresses or {}).values())
            address = next(a for a in range(catalog.ADDR_TAP_MIN, catalog.ADDR_TAP_MAX + 1) if a not in taken)
        record = RigTap(
            id=tap_id, rack="", address=address,
            unique_id=(self.layout.unique_ids or {}).get(tap_id, unique_id_of(self.site.name, tap_id)).hex(),
            key=secrets.token_bytes(catalog.KEY_LEN).hex(), epoch=self.epoch,
            inputs=(source_id,), flash=str(flash), log=str(home / "tap.log"), monitors=source_id,
            segment=self.layout.segment_of(tap_id),
        )
        record = self._write_flash(record, flash)
        self._launch(record, home, self.board.firmware_parameters() | MONITOR_BOARD,
                     PlantServer(self.plant.monitors[tap_id]), tree)
        self.monitors.append(record)

    def _home(self, index: int, tap_id: str) -> tuple[Path, Path]:
        """The tap's directory and its flash directory, emptied: a new rig is a new fleet
        (fresh keys, no counters of a previous run)."""
        home = self.workdir / "taps" / safe_name(index, tap_id)
        flash = home / "flash"
        flash.mkdir(parents=True, exist_ok=True)
        for old in flash.iterdir():
            if old.is_file():
                old.unlink()
        return home, flash

    def _write_flash(self, record: RigTap, flash: Path) -> RigTap:
        """The tap's config and key on its flash: the rig's, or those the host flashed."""
        flashed = (self.layout.flashed or {}).get(record.id)
        if flashed is not None:
            return self._flashed_record(record, Path(flashed), flash)
        flash_records.write_record(flash, "config.json", {"address": record.address, "epoch": record.epoch})
        flash_records.write_record(flash, "key.json", {"key": record.key})
        return record

    def _launch(self, record: RigTap, home: Path, board: dict[str, Any], server: PlantServer, tree: Path) -> None:
        """Start the tap's plant server and its MicroPython process."""
        tap_id = record.id
        flash = Path(record.flash)
        board_file = home / "board.json"
        board_file.write_text(json.dumps(board))
        self._servers[tap_id] = server
        self._threads.append(server.start())
        log = open(record.log, "wb")  # noqa: SIM115  # closed by close(), after the process
        self._logs.append(log)
        ports = self.segment_buses[record.segment].tap_ports
        heap = f"{self.board.raw['board']['heap_budget_kb']}K"
        here = self.workdir
        # Paths relative to the work directory: the firmware fills nearly all of a board's heap,
        # and MicroPython keeps each imported module's path in it, so a long path costs a tap its start.
        self._processes[tap_id] = subprocess.Popen(
            [firmware_build.micropython_command(), "-X", f"heapsize={heap}", "-m", SIM_MAIN, str(server.port),
             str(ports["A"]), str(ports["B"]), os.path.relpath(flash, here), os.path.relpath(board_file, here),
             record.unique_id],
            cwd=here, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={"MICROPYPATH": os.path.relpath(tree, here)},
            start_new_session=True,  # a Ctrl-C at the terminal reaches the rig, which stops the taps itself
        )

    @staticmethod
    def _flashed_record(record: RigTap, source: Path, flash: Path) -> RigTap:
        """The tap's records as the host flashed them into `source`, copied to its flash."""
        config = flash_records.read_record(source / "config.json")
        key = flash_records.read_record(source / "key.json")
        if config is None or key is None or not isinstance(key.get("key"), str):
            raise RigError(f"tap {record.id}: no intact config.json and key.json in {source} (flash it first)")
        for name in ("config.json", "key.json"):
            (flash / name).write_bytes((source / name).read_bytes())
        return replace(record, address=int(config.get("address", catalog.ADDR_UNASSIGNED)),
                       epoch=int(config.get("epoch", 0)), key=key["key"])

    def _wait_ready(self) -> None:
        """Until every tap is on both buses and has run READY_SIM_S on its own clock."""
        deadline = time.monotonic() + self.start_timeout_s
        for segment, buses in self.segment_buses.items():
            n = sum(1 for t in [*self.taps, *self.monitors] if t.segment == segment)
            for name in ("A", "B"):
                while not buses[name].wait_for_taps(n, 0.2):
                    self._check_processes()
                    if time.monotonic() > deadline:
                        raise RigError(f"only {buses[name].tap_count} of {n} taps connected to bus {name} of "
                                       f"segment {segment}")
        for tap_id, plant in [*self.plant.plants.items(), *self.plant.monitors.items()]:
            while plant.now_us < READY_SIM_S * 1e6:
                self._check_processes()
                if time.monotonic() > deadline:
                    log = self.tap(tap_id).log
                    raise RigError(f"tap {tap_id} did not run within {self.start_timeout_s:g} s (log: {log})")
                time.sleep(0.05)

    def _check_processes(self) -> None:
        for tap_id, code in self.dead_taps().items():
            log = Path(self.tap(tap_id).log)
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise RigError(f"tap {tap_id} stopped at start (exit {code}): {' '.join(tail) or 'no output'}")

    def _write_rig_file(self) -> None:
        data = {
            "site": self.site.name, "pid": os.getpid(), "baud": self.baud, "buses": self.bus_paths,
            "segments": self.segment_paths,
            "control": str(self.workdir / CONTROL_SOCKET), "taps": [asdict(t) for t in self.taps],
            "monitors": [asdict(t) for t in self.monitors],
        }
        path = self.workdir / RIG_FILE
        path.write_text(json.dumps(data, indent=2) + "\n")
        path.chmod(0o600)  # it holds the taps' keys

    # -- stopping ---------------------------------------------------------------------------

    def _stop_processes(self) -> None:
        """Each firmware ends on its own once its plant hangs up; terminate, then kill, the rest."""
        try:
            _wait_all(self._processes.values(), STOP_TIMEOUT_S)
            for process in self._processes.values():
                if process.poll() is None:
                    process.terminate()
            _wait_all(self._processes.values(), 2.0)
        finally:
            for tap_id, process in self._processes.items():
                if process.poll() is None:
                    process.kill()
                self.exit_codes[tap_id] = process.wait()


def _wait_all(processes: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
