# HAL of the `sim` board: the ADC's sample blocks, the relay coils and their contact
# feedback, and the clock come from a plant simulator on the host, in lockstep over a
# loopback socket (host/sim/rig/plant_server.py gives the byte layout). Everything above the
# HAL is the same as on the reference board.

import errno
import socket
from array import array

from micropython import const

_TICKS_PERIOD = const(0x40000000)
_TICKS_HALF = const(0x20000000)


class SimReset(Exception):
    """An MCU reset: the firmware starts over, the hardware (plant, coils, buses) stays."""


class SimUart:
    """One RS-485 bus as the transceiver sees it: a loopback socket to the bus."""

    def __init__(self, host, port):
        self._sock = socket.socket()
        self._sock.connect(socket.getaddrinfo(host, port)[0][-1])
        self._sock.setblocking(False)
        self.closed = False

    def readinto(self, buf):
        """Bytes received since the last call (0 when none)."""
        try:
            n = self._sock.readinto(buf)
        except OSError:
            return 0
        if n is None:
            return 0
        if n == 0:
            self.closed = True
        return n

    def write(self, buf, n):
        view = memoryview(buf)[:n]
        sent = 0
        while sent < n:
            try:
                more = self._sock.write(view[sent:])
            except OSError as exc:
                if exc.args[0] != errno.EAGAIN:  # the bus hung up: the bytes go nowhere, as on a cut bus
                    self.closed = True
                    return
                more = 0
            sent += more or 0

    def close(self):
        self._sock.close()


class SimHal:
    def __init__(self, host, port, n_inputs, block, bus_ports=(), unique_id=b"\x00" * 8, n_aux=0,
                 watchdog_ms=0):
        address = socket.getaddrinfo(host, port)[0][-1]
        self._sock = socket.socket()
        self._sock.connect(address)
        self.n_inputs = n_inputs
        self.block = block
        self.volts = [array("h", bytearray(2 * block)) for _ in range(n_inputs)]
        self.amps = array("h", bytearray(2 * block))
        self.aux = [array("h", bytearray(2 * block)) for _ in range(n_aux)]  # a monitor's sensors
        self._command = bytearray(b"S\x00\x01")  # the first exchange holds the coils
        self._header = bytearray(9)
        self._coils = 0
        self._feedback = 0
        self._now = 0
        self._unique_id = unique_id
        self.uarts = [SimUart(host, p) for p in bus_ports]
        self._watchdog_us = watchdog_ms * 1000  # 0: no watchdog
        self._fed_at = 0
        self.watchdog_resets = 0
        self.exchange()
        self._fed_at = self._now
        self._coils = self._header[5]  # the coil latch, read back: it held through the reset
        self._command[2] = 0

    def exchange(self):
        """Send the coil commands, receive the next block: the ADC's DMA, simulated."""
        self._command[1] = self._coils
        self._sock.write(self._command)
        self._read_exact(self._header)
        h = self._header
        self._now = h[0] | (h[1] << 8) | (h[2] << 16) | ((h[3] & 0x3F) << 24)
        self._feedback = h[4]
        for v in self.volts:
            self._read_exact(v)
        self._read_exact(self.amps)
        for a in self.aux:
            self._read_exact(a)
        if self._watchdog_us and self.ticks_diff(self._now, self._fed_at) > self._watchdog_us:
            # the watchdog bites: the MCU resets; the relays and the plant carry on
            self._fed_at = self._now
            self.watchdog_resets += 1
            raise SimReset()

    def _read_exact(self, buf):
        got = self._sock.readinto(buf)
        if got == len(buf):
            return
        view = memoryview(buf)
        while got < len(buf):
            more = self._sock.readinto(view[got:])
            if not more:
                raise OSError("plant closed the link")
            got += more

    def ticks_us(self):
        return self._now

    @staticmethod
    def ticks_diff(a, b):
        return ((a - b + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF

    def drive(self, k, closed):
        if closed:
            self._coils |= 1 << (k - 1)
        else:
            self._coils &= ~(1 << (k - 1))

    def coil(self, k):
        return bool(self._coils & (1 << (k - 1)))

    def feedback(self, k):
        return bool(self._feedback & (1 << (k - 1)))

    def temperature_dC(self):
        t = self._header[7] | (self._header[8] << 8)
        return t - 0x10000 if t & 0x8000 else t

    def unique_id(self):
        return self._unique_id

    def wdt_feed(self):
        self._fed_at = self._now

    def reset(self):
        self._fed_at = self._now  # the watchdog starts again with the firmware
        raise SimReset()

    def close(self):
        for uart in self.uarts:
            uart.close()
        self._sock.close()
