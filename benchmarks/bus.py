"""Time of one telemetry sweep on the virtual bus, against the wire time of the same bytes, and
against pymodbus RTU polling the same values on the same kind of bus.

docs/polling.md budgets a sweep of 32 taps from the wire time of each exchange plus the taps'
answer latency. This benchmark measures what a sweep really takes end to end, on the virtual bus
(host/sim/rig/vbus.py, paced at the baud rate), so that the budget can be checked against something:

1. Ours: a `VirtualRig` (host/sim/rig/virtual_rig.py) of `--taps` taps running the firmware on MicroPython, polled
   on bus A through `SerialTransport` and `TapClient.telemetry`, one tap after the other.
2. Peer: pymodbus, the usual Python Modbus stack. Its RTU client (`ModbusSerialClient`) polls
   holding registers holding the same values as each tap's TELEMETRY answer (each field rounded up
   to whole registers, as benchmarks/codec.py counts them) from pymodbus RTU servers on a
   `VirtualBus` of the same baud rate. Two set-ups: one server per device id, each on its own
   connection to the bus as a tap is; and pymodbus's own way to simulate an RS-485 line, one server
   answering every device id.

Per sweep: wall time; the wire-time lower bound of the same bytes; their ratio; host CPU time per
exchanged frame (`time.process_time` of this process, which holds nothing but the host side: the
rig and the Modbus servers run in child processes); exchanges that failed.

The lower bound is what the line needs at the very least: for ours, request and answer
(encoded, delimiters included) plus the SPEC's two 2-character turnarounds of every exchange (the
tap's before it answers, the host's before its next request); for Modbus RTU, request (8 bytes) and
answer (5 + 2 x registers) plus a silence of 3.5 characters before each frame. Both at 10 bits a
character (8N1). Neither side retries: a failed exchange costs one response timeout, the same for
both (`SerialSettings.response_timeout` of a TELEMETRY request, with `usb_latency_s=0`: a pty has
no USB latency timer).

Run: `.venv/bin/python benchmarks/bus.py [--sweeps 20] [--taps 32] [--baud 115200] [--no-realtime]`
(pymodbus comes with the `bench` extra). Prints markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from host.bus.transport import SerialSettings, SerialTransport
from host.client.tap_client import TapClient
from host.client.tap_errors import TapError
from host.sim.rig.vbus import VirtualBus
from host.sim.rig.virtual_rig import VirtualRig
from host.wire import framing, messages
from protocol import catalog

SOURCES = 2  # the rig's default site: every tap has two inputs, on two sources
CHILD_READY_S = 180.0  # wall clock for a child to build, start and connect N taps or servers
CHILD_STOP_S = 30.0  # for a child to stop what it started (the rig waits up to 10 s per tap process)
MODBUS_REQUEST_BYTES = 8  # address, function, start, count, CRC-16
MODBUS_ANSWER_OVERHEAD = 5  # address, function, byte count, CRC-16
MODBUS_SILENT_CHARS = 3.5  # t3.5 before each frame
IBT_TURNAROUND_CHARS = 2 * catalog.TURNAROUND_MIN_CHARS  # the tap's wait and the host's, per exchange
BENCH = Path(__file__).resolve()


# -- the values of a TELEMETRY answer as Modbus registers ------------------------------------------


def field_registers(code: str, value: Any) -> list[int]:
    """One field as 16-bit registers, big-endian, rounded up to whole registers (a u8 takes one)."""
    raw = struct.pack(">" + code, value)
    raw = bytes(len(raw) % 2) + raw
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def telemetry_registers(body: bytes) -> list[int]:
    """The fields of a TELEMETRY answer, in catalogue order, as the registers a Modbus tap would serve."""
    frame = messages.parse_body(body)
    layout = messages.MESSAGES[frame.type].response
    if layout is None or frame.type != catalog.T_TELEMETRY:
        raise ValueError(f"not a TELEMETRY answer: {frame.name}")
    values = frame.fields()
    registers = [
        r for name, code in zip(layout.names, layout.codes, strict=True) for r in field_registers(code, values[name])
    ]
    if layout.group is not None:
        name, _, element = layout.group
        for item in values[name]:
            registers += [
                r for n, c in zip(element.names, element.codes, strict=True) for r in field_registers(c, item[n])
            ]
    return registers


# -- child processes: the rig, the Modbus servers ----------------------------------------------------


def _reply(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that the `finally` that stops the rig or the servers runs."""

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)


def serve_rig(taps: int, baud: int, realtime: bool) -> None:
    """Child: run a rig, report bus A's path and the taps' addresses, then answer "stats" lines until
    stdin closes. The rig lives here, not in the measuring process, so its plant threads do not
    count as host CPU time."""
    _stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bus-bench-") as work:
        rig = VirtualRig((taps, SOURCES), Path(work) / "rig", baud, realtime=realtime)
        try:
            rig.start()
            _reply({"path": rig.bus_paths["A"], "addresses": [t.address for t in rig.taps]})
            for _ in sys.stdin:
                sim_s = [plant.now_us / 1e6 for plant in rig.plant.plants.values()]
                _reply(
                    {
                        "wall_s": time.monotonic(),
                        "bus": asdict(rig.bus("A").counters()),
                        "sim_s": sim_s,
                        "dead": rig.dead_taps(),
                        "rig_cpu_s": time.process_time(),  # plant servers and the buses' threads
                        "taps_cpu_s": _processes_cpu_s(list(rig.pids.values())),
                    }
                )
        finally:
            rig.close()


def _processes_cpu_s(pids: list[int]) -> float | None:
    """CPU seconds the tap processes have used so far, from /proc (None where there is no /proc)."""
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def serve_modbus(baud: int, one_server: bool) -> None:
    """Child: a VirtualBus and pymodbus RTU servers on it. The first stdin line maps device ids to
    their registers; then "stats" lines are answered until stdin closes."""
    _stop_on_sigterm()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # failures are counted by the client
    registers = {int(k): v for k, v in json.loads(sys.stdin.readline()).items()}
    with VirtualBus("A", baud) as bus:
        asyncio.run(_modbus_servers(bus, registers, one_server))


async def _modbus_servers(bus: VirtualBus, registers: dict[int, list[int]], one_server: bool) -> None:
    from pymodbus import FramerType
    from pymodbus.server import ModbusSerialServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    # pymodbus turns a server's lowercase socket:// port into a TCP listener; the bus listens, so
    # the server must dial out, as a tap does. pyserial lowercases the scheme, pymodbus does not.
    port = f"SOCKET://127.0.0.1:{bus.tap_port}"
    devices = {
        dev: SimDevice(id=dev, simdata=[SimData(0, values=values, datatype=DataType.REGISTERS)])
        for dev, values in registers.items()
    }
    if one_server:
        groups = [(list(devices.values()), None)]
    else:
        groups = [(device, _only_device(dev)) for dev, device in devices.items()]
    servers = []
    try:
        for device, trace in groups:
            server = ModbusSerialServer(device, framer=FramerType.RTU, port=port, baudrate=bus.baud, trace_pdu=trace)
            servers.append(server)
            await server.serve_forever(background=True)
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, bus.wait_for_taps, len(servers), CHILD_READY_S):
            raise RuntimeError(f"only {bus.tap_count} of {len(servers)} Modbus servers reached the bus")
        _reply({"path": bus.host_path, "addresses": sorted(registers)})
        while await loop.run_in_executor(None, sys.stdin.readline):
            _reply({"wall_s": time.monotonic(), "bus": asdict(bus.counters())})
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                await server.shutdown()


def _only_device(dev: int) -> Callable[[bool, Any], Any]:
    """A server on a shared line must ignore requests to other ids. pymodbus 3.16 answers them with
    an exception response (its `ignore_missing_devices` does not reach the simulator datastore),
    which would collide with the addressed server's answer; its PDU hook drops them instead."""

    def trace(sending: bool, pdu: Any) -> Any:
        return pdu if sending or pdu.dev_id == dev else None

    return trace


class Child:
    """A child process of this script: JSON lines out, commands in, stopped by closing its stdin."""

    def __init__(self, args: list[str], log: IO[str], first_line: str | None = None) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            if first_line is not None:
                self._send(first_line)
            self.ready = self._answer(CHILD_READY_S)
        except BaseException:
            self.close()
            raise

    def stats(self) -> dict[str, Any]:
        self._send("stats")
        return self._answer(30.0)

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def _answer(self, timeout: float) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            self.log.flush()
            tail = Path(self.log.name).read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError("child process did not answer: " + (" | ".join(tail) or "no output"))
        answer: dict[str, Any] = json.loads(result[0])
        return answer

    def close(self) -> None:
        """Close stdin (the child stops what it started), then terminate and kill if it lingers."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(CHILD_STOP_S)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(CHILD_STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def child(args: list[str], first_line: str | None = None) -> Iterator[Child]:
    with tempfile.NamedTemporaryFile("w+", prefix="bus-bench-", suffix=".log") as log:
        process = Child(args, log, first_line)
        try:
            yield process
        finally:
            process.close()


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Side:
    """What one set-up did over the measured sweeps."""

    name: str
    taps: int
    bytes_per_exchange: list[tuple[int, int]]  # (request, answer) on the wire, per polled address
    silent_chars: float  # per exchange, in the lower bound
    baud: int
    sweeps_s: list[float] = field(default_factory=list)
    exchanges_s: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    frames: int = 0  # requests sent plus answers received
    failed: int = 0
    bus_bytes: int = 0  # bytes driven onto bus A over the measured sweeps
    sim_rate: float | None = None  # simulated seconds per wall second, slowest tap (ours only)
    rig_cpu: float | None = None  # CPU seconds per wall second of the rig's process (ours only)
    taps_cpu: float | None = None  # the same for all MicroPython tap processes together
    notes: list[str] = field(default_factory=list)

    @property
    def lower_bound_s(self) -> float:
        chars = sum(q + r + self.silent_chars for q, r in self.bytes_per_exchange)
        return chars * catalog.BITS_PER_CHAR / self.baud


def sweeps(side: Side, addresses: list[int], n: int, poll: Callable[[int], bool]) -> None:
    """n sweeps over `addresses`, one `poll` at a time; wall and CPU time, failures, frames."""
    cpu0 = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        for address in addresses:
            t0 = time.perf_counter()
            ok = poll(address)
            side.exchanges_s.append(time.perf_counter() - t0)
            side.frames += 2 if ok else 1
            side.failed += not ok
        side.sweeps_s.append(time.perf_counter() - start)
    side.cpu_s = time.process_time() - cpu0


def response_timeout(baud: int, request_bytes: int) -> float:
    """The transport's own timeout for this request: used by both sides, so a failure costs the same."""
    return SerialSettings(port="", baudrate=baud, usb_latency_s=0.0).response_timeout(request_bytes)


def run_ours(n_taps: int, n_sweeps: int, baud: int, realtime: bool) -> tuple[Side, dict[int, list[int]]]:
    """Sweeps of TELEMETRY over the rig's taps; also each tap's values as registers, for the peer."""
    args = ["--serve", "rig", "--taps", str(n_taps), "--baud", str(baud)] + ([] if realtime else ["--no-realtime"])
    with child(args) as rig:
        path, addresses = rig.ready["path"], rig.ready["addresses"]
        settings = SerialSettings(port=path, baudrate=baud, usb_latency_s=0.0, name="A")
        with SerialTransport(settings) as transport:
            client = TapClient(transport, retries=0)
            answers: dict[int, bytes] = {}
            wire: dict[int, tuple[int, int]] = {}
            for address in addresses:  # warm-up sweep: answer sizes and values, not timed
                request = framing.encode_frame(messages.request(address, "TELEMETRY", 0).to_body())
                body = transport.exchange(request)
                if body is not None:
                    answers[address] = body
                    wire[address] = (len(request), len(framing.encode_frame(body)))
            if not answers:
                raise RuntimeError("no tap answered the warm-up sweep")
            typical = next(iter(wire.values()))
            side = Side(
                f"ours: IBT TELEMETRY, {n_taps} MicroPython taps" + ("" if realtime else " (no pacing)"),
                n_taps,
                [wire.get(a, typical) for a in addresses],
                IBT_TURNAROUND_CHARS,
                baud,
            )

            def poll(address: int) -> bool:
                try:
                    client.telemetry(address)
                except TapError:
                    return False
                return True

            before = rig.stats()
            sweeps(side, addresses, n_sweeps, poll)
            after = rig.stats()
        side.bus_bytes = after["bus"]["bytes_in"] - before["bus"]["bytes_in"]
        wall = after["wall_s"] - before["wall_s"]
        side.sim_rate = min(b - a for a, b in zip(before["sim_s"], after["sim_s"], strict=True)) / wall
        side.rig_cpu = (after["rig_cpu_s"] - before["rig_cpu_s"]) / wall
        if after["taps_cpu_s"] is not None and before["taps_cpu_s"] is not None:
            side.taps_cpu = (after["taps_cpu_s"] - before["taps_cpu_s"]) / wall
        if after["dead"]:
            side.notes.append(f"tap processes ended during the run: {after['dead']}")
        if after["bus"]["collisions"] > before["bus"]["collisions"]:
            side.notes.append(f"{after['bus']['collisions'] - before['bus']['collisions']} colliding byte slots")
    fallback = telemetry_registers(next(iter(answers.values())))
    registers = {a: telemetry_registers(answers[a]) if a in answers else fallback for a in addresses}
    return side, registers


def run_peer(registers: dict[int, list[int]], n_sweeps: int, baud: int, one_server: bool) -> Side:
    """Sweeps of read-holding-registers (0x03) over the Modbus servers, with pymodbus's sync client."""
    from pymodbus import FramerType
    from pymodbus.client import ModbusSerialClient
    from pymodbus.exceptions import ModbusException

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # failures are counted below
    args = ["--serve", "modbus", "--baud", str(baud)] + (["--one-server"] if one_server else [])
    with child(args, json.dumps(registers)) as servers:
        addresses = servers.ready["addresses"]
        timeout = response_timeout(baud, MODBUS_REQUEST_BYTES)
        client = ModbusSerialClient(
            servers.ready["path"], framer=FramerType.RTU, baudrate=baud, timeout=timeout, retries=0
        )
        if not client.connect():
            raise RuntimeError(f"pymodbus could not open {servers.ready['path']}")
        try:

            def poll(address: int) -> bool:
                expected = registers[address]
                try:
                    answer = client.read_holding_registers(0, count=len(expected), device_id=address)
                except ModbusException:
                    return False
                return not answer.isError() and answer.registers == expected

            for address in addresses:  # warm-up sweep, as for ours
                poll(address)
            wire = [(MODBUS_REQUEST_BYTES, MODBUS_ANSWER_OVERHEAD + 2 * len(registers[a])) for a in addresses]
            how = "one server for all ids" if one_server else f"{len(addresses)} servers, one per id"
            side = Side(
                f"pymodbus {_version('pymodbus')} RTU 0x03, {how}", len(addresses), wire, 2 * MODBUS_SILENT_CHARS, baud
            )
            before = servers.stats()
            sweeps(side, addresses, n_sweeps, poll)
            after = servers.stats()
        finally:
            client.close()
    side.bus_bytes = after["bus"]["bytes_in"] - before["bus"]["bytes_in"]
    if after["bus"]["collisions"] > before["bus"]["collisions"]:
        side.notes.append(f"{after['bus']['collisions'] - before['bus']['collisions']} colliding byte slots")
    return side


# -- report ------------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def side_row(side: Side) -> list[str]:
    bound = side.lower_bound_s
    median = statistics.median(side.sweeps_s)
    q, r = side.bytes_per_exchange[0]
    exchanges = len(side.exchanges_s)
    expected_bytes = len(side.sweeps_s) * sum(a + b for a, b in side.bytes_per_exchange)
    return [
        side.name,
        f"{q} + {r}",
        f"{side.bus_bytes / expected_bytes:.2f}" if expected_bytes else "",
        f"{bound * 1000:.1f}",
        f"{median * 1000:.1f} ({min(side.sweeps_s) * 1000:.1f}-{max(side.sweeps_s) * 1000:.1f})",
        f"{median / bound:.2f}x",
        f"{statistics.median(side.exchanges_s) * 1000:.2f} / {_p95(side.exchanges_s) * 1000:.2f}",
        f"{side.cpu_s / side.frames * 1e6:.0f}" if side.frames else "",
        f"{side.failed} of {exchanges}",
    ]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def report(sides: list[Side], baud: int) -> str:
    header = [
        f"sweep @ {baud} 8N1",
        "wire B per exchange (request + answer)",
        "bytes driven / expected",
        "lower bound ms/sweep",
        "sweep ms: median (min-max)",
        "ratio median / bound",
        "exchange ms: median / p95",
        "host CPU µs/frame",
        "exchanges failed",
    ]
    lines = [table(header, [side_row(s) for s in sides])]
    for side in sides:
        if side.sim_rate is not None:
            lines.append(f"{side.name}: slowest tap's simulated clock ran at {side.sim_rate:.2f}x the wall clock")
        if side.rig_cpu is not None:
            taps = "" if side.taps_cpu is None else f", the {side.taps} MicroPython processes {side.taps_cpu:.2f}"
            lines.append(
                f"{side.name}: CPU seconds per wall second: rig process (plants, buses) {side.rig_cpu:.2f}"
                f"{taps}, host {side.cpu_s / sum(side.sweeps_s):.2f}"
            )
        lines += [f"{side.name}: {note}" for note in side.notes]
    return "\n\n".join(lines)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}, "
        f"pyserial {_version('pyserial')}, pymodbus {_version('pymodbus')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=20, help="timed sweeps per set-up (after one warm-up sweep)")
    parser.add_argument("--taps", type=int, default=32, help="taps, and Modbus servers, on the bus")
    parser.add_argument("--baud", type=int, default=catalog.DEFAULT_BAUD)
    parser.add_argument("--no-realtime", action="store_true", help="the rig's taps run unpaced, as fast as they can")
    parser.add_argument("--serve", choices=("rig", "modbus"), help=argparse.SUPPRESS)  # a child of this script
    parser.add_argument("--one-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "rig":
        serve_rig(args.taps, args.baud, not args.no_realtime)
        return
    if args.serve == "modbus":
        serve_modbus(args.baud, args.one_server)
        return
    if _version("pymodbus") == "not installed":
        parser.error("pymodbus is needed for the peer: .venv/bin/pip install -e '.[bench]'")

    print(f"machine: {machine()}")
    print(f"{args.taps} taps, {args.sweeps} sweeps, {args.baud} baud, rig pacing {'off' if args.no_realtime else 'on'}")
    started = time.monotonic()
    ours, registers = run_ours(args.taps, args.sweeps, args.baud, not args.no_realtime)
    peers = [run_peer(registers, args.sweeps, args.baud, one_server) for one_server in (False, True)]
    print(
        f"registers per Modbus answer: {len(next(iter(registers.values())))}; "
        f"response timeout of both sides: {response_timeout(args.baud, ours.bytes_per_exchange[0][0]) * 1000:.1f} ms"
        f" (ours), {response_timeout(args.baud, MODBUS_REQUEST_BYTES) * 1000:.1f} ms (pymodbus)\n"
    )
    print(report([ours, *peers], args.baud))
    print(f"\ntook {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
