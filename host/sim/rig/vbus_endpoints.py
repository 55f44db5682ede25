"""The two ends of a virtual RS-485 bus: the host's pseudo-terminal and each tap's TCP
port, paced at the baud rate, with the counters of what the bus did to the bytes."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import socket
import struct
import termios
import tty
from dataclasses import dataclass

BITS_PER_BYTE = 10  # 8N1: a start bit, 8 data bits, a stop bit
READ_SIZE = 65536
TAP_OUTBOX_LIMIT = 1 << 20  # a tap process that stalls loses what is beyond this
HOST_OUTBOX_LIMIT = 1 << 16  # on top of the pty's own buffer: a closed port should not hoard old bytes
TIOCPKT = getattr(termios, "TIOCPKT", None)
TIOCPKT_FLUSHREAD = getattr(termios, "TIOCPKT_FLUSHREAD", 1)


@dataclass(frozen=True)
class BusCounters:
    """Totals since the bus was made; slot counts are per slot, whatever the number of listeners."""

    bytes_in: int  # read from the endpoints, to be driven onto the wire
    bytes_delivered: int  # slots that reached the listeners (a babbler's included)
    bytes_corrupted: int  # delivered slots that are not what their one driver sent: collisions, bit errors
    bytes_dropped: int  # slots that reached nobody: the drop rate or a cut bus
    collisions: int  # slots with more than one driver (the babbler counts as one)
    overruns: int  # bytes a listener lost because it did not read them in time


class Endpoint:
    """One transceiver: what it drives waits in `pending`, what it hears waits in `outbox`."""

    outbox_limit = TAP_OUTBOX_LIMIT

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: collections.deque[tuple[float, bytearray]] = collections.deque()
        self.outbox = bytearray()
        self.closed = False
        self.wants_write = False  # registered with the selector for write readiness

    def fileno(self) -> int:
        raise NotImplementedError

    def read(self) -> bytes | None:
        """Bytes the endpoint drove (b"" when none); None when its peer has gone."""
        raise NotImplementedError

    def write(self, data: bytes | bytearray) -> int:
        """Hand over what it can of `data`; return how many bytes were taken."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def queue(self, data: bytes, now: float) -> None:
        self.pending.append((now, bytearray(data)))

    def ready(self, at: float) -> bool:
        """Whether a byte of this endpoint's was on hand by time `at` to drive a slot starting then."""
        return bool(self.pending) and self.pending[0][0] <= at

    def take(self) -> int:
        chunk = self.pending[0][1]
        byte = chunk[0]
        del chunk[:1]  # cheap: a bytearray drops bytes from its front without copying
        if not chunk:
            self.pending.popleft()
        return byte


class HostEndpoint(Endpoint):
    """The pty master; the host opens the slave with pyserial."""

    outbox_limit = HOST_OUTBOX_LIMIT

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no byte translated, no echo, no flow control: a binary line
        os.set_blocking(self.master, False)
        self.packet_mode = TIOCPKT is not None
        if TIOCPKT is not None:
            fcntl.ioctl(self.master, TIOCPKT, struct.pack("i", 1))
        self.path = os.ttyname(self.slave)

    def fileno(self) -> int:
        return self.master

    def read(self) -> bytes | None:
        try:
            data = os.read(self.master, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            return b""  # EIO cannot last: the bus holds the slave open itself
        if not self.packet_mode or not data:
            return data
        if data[0] != 0:  # a status packet, not data
            if data[0] & TIOCPKT_FLUSHREAD:
                self.outbox.clear()  # the host threw its input away; what we still hold is as stale
            return b""
        return data[1:]

    def write(self, data: bytes | bytearray) -> int:
        try:
            return os.write(self.master, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return len(data)  # never expected with the slave held open; losing bytes beats closing the pty

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class TapEndpoint(Endpoint):
    """One tap's TCP connection."""

    def __init__(self, name: str, sock: socket.socket) -> None:
        super().__init__(name)
        self.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # chunks of a few bytes go out at once

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> bytes | None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            return None
        return data or None

    def write(self, data: bytes | bytearray) -> int:
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    def close(self) -> None:
        self.sock.close()


def probability(p: float, what: str) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} must be within 0..1, not {p}")
    return float(p)


def drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
