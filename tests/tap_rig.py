"""A sim tap for tests: the compiled firmware's application (firmware/tap.py) on
MicroPython, in lockstep with a plant, with buses A and B as loopback sockets that
the test drives as the host would."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from host.build.firmware_build import micropython_command
from host.client.tap_errors import TapError
from host.model import boards
from host.ops import flash_records
from host.sim.rig.plant import Load, Plant, Source
from host.sim.rig.plant_server import PlantServer
from host.wire import framing, messages
from tests.conftest import BOARD_HEAP, MP_SCRIPTS
from tests.protection_rig import HONGFA_HFE20

T = TypeVar("T")

KEY = bytes(range(32))
UNIQUE_ID = bytes.fromhex("e6614104037a5c2b")
ADDRESS = 17
EPOCH = 3

SIM_BOARD = boards.by_name("sim").firmware_parameters()

# How long a test waits, in wall-clock seconds, for what the firmware does within a few
# simulated cycles. Only a failing test waits it out; a correct firmware on a loaded
# 2-core machine (CI beside other jobs) must not fail for want of it.
PATIENCE_S = 60.0


def wait_until(check: Callable[[], T | None], what: str, last: Callable[[], Any] | None = None) -> T:
    """check() until it gives something true (a frame lost on both buses counts as nothing
    yet); fail naming `what`, and `last()` if given, after PATIENCE_S."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            result = check()
        except TapError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}" + ("" if last is None else f" (last: {last()})"))
        time.sleep(0.05)


class NoBus:
    """A bus that is never asked: for fleets built only to be refused."""

    def __init__(self, name: str) -> None:
        self.name = name

    def exchange(self, frame: bytes, timeout: float | None = None) -> bytes | None:
        raise AssertionError("no traffic expected")

    def send(self, frame: bytes) -> None:
        raise AssertionError("no traffic expected")

    def receive(self, timeout: float) -> bytes | None:
        return None

    def close(self) -> None:
        pass


class SimTap:
    """Start with `with SimTap(tmp_path) as tap:`; tap.ask(frame) sends and returns the answer."""

    def __init__(self, tmp_path: Path, plant: Plant | None = None, n_inputs: int = 2, **board: Any) -> None:
        self.plant = plant or Plant(
            [Source(230), Source(230, phase_deg=-120)], Load(i_rms=16), [HONGFA_HFE20, HONGFA_HFE20], active=1
        )
        self.flash = tmp_path / "flash"
        self.flash.mkdir(exist_ok=True)
        if not (self.flash / "config.json").exists():
            flash_records.write_record(self.flash, "config.json", {"address": ADDRESS, "epoch": EPOCH})
            flash_records.write_record(self.flash, "key.json", {"key": KEY.hex()})
        self.board_file = tmp_path / "board.json"
        self.board_file.write_text(json.dumps(SIM_BOARD | {"n_inputs": n_inputs} | board))
        self.tree = tmp_path
        self.seq = 0
        self.counter = 100

    def start(
        self, mpy_tree: Path, hang_at_step: int | None = None, bus_ports: tuple[int, int] | None = None
    ) -> SimTap:
        """Run the firmware. Its UARTs connect to sockets this rig listens on (`send`, `receive`,
        `ask`), or, with `bus_ports`, to those TCP ports (two `VirtualBus.tap_port`s, say): then
        the host talks through the buses, and closing bus A ends the firmware before `stop`."""
        self.server = PlantServer(self.plant)
        self.thread = self.server.start()
        self.buses = [] if bus_ports else [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
        ports = bus_ports or tuple(b.getsockname()[1] for b in self.buses)
        self.process = subprocess.Popen(
            [
                micropython_command(),
                "-X",
                f"heapsize={BOARD_HEAP}",
                str(MP_SCRIPTS / "run_tap.py"),
                str(self.server.port),
                *(str(port) for port in ports),
                str(self.flash),
                str(self.board_file),
                UNIQUE_ID.hex(),
                *([] if hang_at_step is None else [str(hang_at_step)]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"MICROPYPATH": str(mpy_tree)},
        )
        self.links = []
        for bus in self.buses:
            bus.settimeout(10)
            connection, _ = bus.accept()
            connection.settimeout(0.05)
            self.links.append(connection)
        self.decoders = [framing.StreamDecoder() for _ in self.links]
        return self

    def stop(self) -> dict[str, Any]:
        for link in self.links:
            link.close()
        try:
            out, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()  # never leave a firmware process behind a failed test
            out, err = self.process.communicate()
            raise AssertionError(f"the firmware did not stop: {err[-3000:]}") from None
        finally:
            self.thread.join(timeout=10)
        assert self.process.returncode == 0, f"exit {self.process.returncode}: {err[-3000:]} {out[-3000:]}"
        return json.loads(out.strip().splitlines()[-1])

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFF
        return self.seq

    def signed(self, name: str, fields: dict[str, Any], epoch: int = EPOCH, key: bytes = KEY) -> messages.Frame:
        self.counter += 1
        return messages.request(ADDRESS, name, self.next_seq(), fields, key=key, epoch=epoch, counter=self.counter)

    def plain(self, name: str, fields: dict[str, Any] | None = None, dst: int = ADDRESS) -> messages.Frame:
        return messages.request(dst, name, self.next_seq(), fields)

    def send(self, frame: messages.Frame | bytes, bus: int = 0) -> None:
        body = frame.to_body() if isinstance(frame, messages.Frame) else frame
        self.links[bus].sendall(framing.encode_frame(body))

    def receive(self, bus: int = 0, timeout: float = PATIENCE_S) -> messages.Frame | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.links[bus].recv(4096)
            except TimeoutError:
                continue
            for body in self.decoders[bus].feed(data):
                return messages.parse_body(body)
        return None

    def ask(self, frame: messages.Frame | bytes, bus: int = 0) -> messages.Frame:
        self.send(frame, bus)
        answer = self.receive(bus)
        assert answer is not None, "no answer from the tap"
        return answer

    def wait_active(self, target: int, timeout: float = PATIENCE_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.ask(self.plain("STATUS")).fields()
            if status["active_input"] == target:
                return status
        raise AssertionError(f"input {target} never became active")
