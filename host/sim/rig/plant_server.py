"""Lockstep link between a Plant and the sim board's HAL (firmware/hal_sim.py) over a
loopback TCP socket. Per step the HAL sends b"S", its coil bits and a flags byte; the
plant advances one block and answers with the block's start time (us, modulo 2**30 as
MicroPython ticks wrap), the feedback bits, the coil bits as the plant holds them (a
board's coil latch, read back after an MCU reset), the sample count, the board's
temperature in tenths of a degree (int16), then each
channel's samples as int16 LE (the inputs' voltages, then the output current).
Flags bit 0 ("hold") leaves the coils as they are: a board just out of reset has not
decided anything yet."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from host.sim.rig.plant import Plant

_COMMAND = 3
_HOLD = 0x01
_TICKS_MASK = (1 << 30) - 1


class PlantServer:
    """Serves one plant to one sim board; run() blocks until the board disconnects."""

    def __init__(self, plant: Plant, host: str = "127.0.0.1") -> None:
        self.plant = plant
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self.steps = 0
        self.error: BaseException | None = None
        self._connection: socket.socket | None = None
        self._closing = False

    def run(self) -> None:
        try:
            connection, _ = self._listener.accept()
            self._connection = connection
            with connection:
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if not self._closing:
                    self._serve(connection)
        except BaseException as exc:  # reported to the test that started the thread
            if not self._closing:
                self.error = exc
        finally:
            self._listener.close()

    def close(self) -> None:
        """Hang up on the board, from any thread: its next exchange finds the link closed (the
        sim board's firmware then stops at a block boundary), and run() returns."""
        self._closing = True
        for sock in (self._connection, self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def _serve(self, connection: socket.socket) -> None:
        while True:
            command = _read_exact(connection, _COMMAND)
            if command is None:
                return
            if command[0] != ord("S"):
                raise ValueError(f"unexpected command byte {command[0]:#x} from the sim board")
            coils = self.plant.coils if command[2] & _HOLD else command[1]
            start_us, feedback, counts = self.plant.step(coils)
            header = struct.pack(
                "<IBBBh", start_us & _TICKS_MASK, feedback, self.plant.coils, counts.shape[1],
                round(self.plant.temperature_c * 10),
            )
            connection.sendall(header + counts.tobytes())
            self.steps += 1


def _read_exact(connection: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = connection.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
