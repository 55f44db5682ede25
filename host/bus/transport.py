"""One RS-485 bus as the host sees it: a serial port that sends a frame and waits for its answer.

The host is the only master on a bus (SPEC.md, "Exchanges"): it sends one request and
waits for the answer or the response timeout before the next. `SerialTransport` does
exactly that on pyserial, and nothing above the framing layer: it hands back the body
of the one good frame that answers the request, and counts everything else.

Why the response timeout is computed, not guessed
-------------------------------------------------
A request of `q` encoded bytes (delimiter included) that expects at most `r` bytes back
cannot be answered sooner than

    (q + r) * bits_per_char / baud      both frames on the wire
    + TURNAROUND_MIN_CHARS chars         the tap lets the host's driver release the bus
    + turnaround_s                       the tap starts answering within 10 ms (SPEC)
    + usb_latency_s                      the adapter holds received bytes (see below)

and the timeout adds `margin_s` for the operating system's scheduling and the 1 ms USB
frames that carry the request out. `bits_per_char` is 1 start bit + data bits + 1 if
there is a parity bit + stop bits: 10 for 8N1, 11 for 8E1 or 8N2. Example, 8N1 at
115200 baud (86.8 µs a character), a TELEMETRY poll of a 4-input tap, `q` = 13 and
`r` = 95, with the defaults turnaround 10 ms, latency 16 ms, margin 5 ms:
(13 + 95 + 2) * 86.8 µs + 10 ms + 16 ms + 5 ms = 40.5 ms.

The USB latency timer
---------------------
A USB serial adapter does not pass each received byte to the host at once. An FTDI
chip sends its buffer when it holds 62 bytes or when its latency timer expires, 16 ms
after the last transfer by default; an answer shorter than that therefore arrives up
to 16 ms late, on every exchange. That is most of the time a poll takes at 115200 baud.
Lower it to 1 ms (Linux, as root, or by a udev rule):

    echo 1 > /sys/bus/usb-serial/devices/ttyUSB0/latency_timer

and set `usb_latency_s` = 0.001 to match. Adapters without such a timer (CH340, CP210x)
have a few milliseconds of their own; measure before lowering the setting.

Echo
----
Some adapters hear their own transmission (the receiver is not disabled while the
driver is on). With `echo` set, the transport reads back exactly the bytes it wrote
and compares them: a difference means another transmitter drove the bus at the same
time, a collision, and the exchange fails with `BusCollision` instead of waiting for
an answer that the tap cannot have understood. Without `echo`, an echo that arrives
anyway is harmless: it is a request frame, and only answers are accepted.

An unplugged adapter
--------------------
When the port fails (device gone, I/O error), the transport closes it, marks it down
and raises `PortUnavailable`. Calls while it is down fail at once; at most once per
`reopen_interval_s` a call tries to reopen it first, so a poller never hangs on a
missing adapter and picks it up again when it is plugged back in.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import serial  # type: ignore[import-untyped]  # pyserial ships no type information
import serial.rs485  # type: ignore[import-untyped]

from host.model.errors import LinkError
from host.wire.framing import StreamDecoder, Verdict, decode_frame
from protocol import catalog

try:  # tcflush raises termios.error, which is not an OSError; no termios on Windows
    import termios

    _DEVICE_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, termios.error)
except ImportError:  # pragma: no cover
    _DEVICE_ERRORS = (serial.SerialException, OSError)

_OPEN_ERRORS: tuple[type[BaseException], ...] = (*_DEVICE_ERRORS, ValueError)  # ValueError: bad settings

MAX_FRAME_BYTES = catalog.MAX_ENCODED + 1  # the largest frame on the wire, delimiter included
_READ_POLL_S = 0.005  # the port's read timeout: how far a wait may overshoot its deadline
_WRITE_TIMEOUT_S = 2.0  # a write that cannot drain in this long is a dead port, not a slow one
_ACK_NAK = (catalog.T_ACK, catalog.T_NAK)


class TransportError(LinkError):
    """A bus could not carry a frame: the caller should try the other bus."""


class PortUnavailable(TransportError):
    """The serial port is missing, gone, or down until its next reopen attempt."""


class BusCollision(TransportError):
    """The echo of a transmission differs from what was sent: another transmitter was on the bus."""


class Transport(Protocol):
    """What a redundant link needs of one bus; `SerialTransport` and test fakes provide it.

    `exchange` returns the CRC-checked body of the answer to `frame` (encoded wire bytes,
    delimiter included), or None if none came within the timeout; it raises
    `TransportError` when the bus itself failed.
    """

    @property
    def name(self) -> str: ...

    def exchange(self, frame: bytes, timeout: float | None = None) -> bytes | None: ...

    def send(self, frame: bytes) -> None: ...

    def receive(self, timeout: float) -> bytes | None: ...

    def close(self) -> None: ...


class SerialPort(Protocol):
    """The part of a pyserial `Serial` the transport uses (a factory may return a fake)."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def flush(self) -> None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SerialSettings:
    """How to open one bus's adapter. `port` is a device path or a pyserial URL (loop://, socket://...)."""

    port: str
    baudrate: int = catalog.DEFAULT_BAUD
    bytesize: int = serial.EIGHTBITS
    parity: str = serial.PARITY_NONE
    stopbits: float = serial.STOPBITS_ONE
    # Drive the transceiver's DE pin from RTS through the kernel's RS-485 mode. Off by
    # default: adapters that switch direction in hardware are the recommended setup,
    # and software-timed RTS on a USB adapter cuts off the end of frames.
    rs485_rts: bool = False
    echo: bool = False  # the adapter hears its own transmission; read it back and compare
    turnaround_s: float = catalog.TURNAROUND_MAX_MS / 1000  # the tap's worst response latency
    usb_latency_s: float = 0.016  # FTDI's default latency timer; 0.001 once lowered (module docstring)
    margin_s: float = 0.005  # scheduling and USB frame slack on top of the arithmetic
    reopen_interval_s: float = 1.0  # while the port is down, try to reopen it at most this often
    name: str = ""  # how logs and the link call this bus; the port by default

    @property
    def bits_per_char(self) -> float:
        """Start bit + data bits + parity bit + stop bits: 10 for 8N1, 11 with parity or two stop bits."""
        return 1 + self.bytesize + (0 if self.parity == serial.PARITY_NONE else 1) + self.stopbits

    def wire_time(self, n_bytes: int) -> float:
        """Seconds `n_bytes` take on the wire."""
        return n_bytes * self.bits_per_char / self.baudrate

    def response_timeout(self, request_bytes: int, max_response_bytes: int = MAX_FRAME_BYTES) -> float:
        """How long to wait for an answer, from the moment the request is handed to the port.

        (request + response + TURNAROUND_MIN_CHARS) character times + turnaround +
        adapter latency + margin; see the module docstring for the worked example.
        """
        chars = request_bytes + max_response_bytes + catalog.TURNAROUND_MIN_CHARS
        return self.wire_time(chars) + self.turnaround_s + self.usb_latency_s + self.margin_s


@dataclass
class TransportCounters:
    """What happened on one bus since the transport was made; `as_dict` for reports."""

    sent: int = 0  # frames written
    received: int = 0  # answers returned to the caller
    bad_crc: int = 0
    bad_cobs: int = 0
    bad_other: int = 0  # too short or oversize
    skipped: int = 0  # good frames that were not the awaited answer (echoes, late answers, other taps)
    timeouts: int = 0
    echo_mismatches: int = 0
    device_errors: int = 0  # the port failed and was closed
    reconnects: int = 0  # successful opens after the port was down (unplugged, or missing at the first open)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def count(self, verdict: Verdict) -> None:
        if verdict is Verdict.BAD_CRC:
            self.bad_crc += 1
        elif verdict is Verdict.BAD_COBS:
            self.bad_cobs += 1
        elif verdict is not Verdict.GOOD:
            self.bad_other += 1


PortFactory = Callable[[SerialSettings], SerialPort]


def open_pyserial(settings: SerialSettings) -> SerialPort:
    """Open `settings.port` with pyserial; URLs go through `serial_for_url`."""
    is_url = "://" in settings.port
    port = serial.serial_for_url(
        settings.port,
        baudrate=settings.baudrate,
        bytesize=settings.bytesize,
        parity=settings.parity,
        stopbits=settings.stopbits,
        timeout=_READ_POLL_S,
        write_timeout=_WRITE_TIMEOUT_S,
        # Two masters on one bus garble each other: refuse a device another program holds.
        exclusive=None if is_url else True,
    )
    if settings.rs485_rts:
        try:
            port.rs485_mode = serial.rs485.RS485Settings(rts_level_for_tx=True, rts_level_for_rx=False)
        except (ValueError, OSError) as exc:
            port.close()
            raise TransportError(
                f"{settings.port} does not support the kernel's RS-485 mode ({exc}): use an adapter that "
                "switches direction in hardware and rs485_rts=False"
            ) from None
    return port


def _open_error(settings: SerialSettings, exc: BaseException) -> PortUnavailable:
    """One line that says what is wrong with the port and what to check."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT:
        return PortUnavailable(f"no such serial port {settings.port}: is the adapter plugged in?")
    if code == errno.EACCES:
        return PortUnavailable(f"permission denied on serial port {settings.port}: is this user in the dialout group?")
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
        return PortUnavailable(f"serial port {settings.port} is in use by another program")
    return PortUnavailable(f"cannot open serial port {settings.port}: {exc}")


class _RequestKey:
    """Which answers fit a request: dst 0, RESPONSE set, the request's seq, its tap and type (SPEC, "Exchanges")."""

    def __init__(self, frame: bytes) -> None:
        verdict, body = decode_frame(frame.strip(b"\x00"))  # a sender may lead with a delimiter too
        self.known = verdict is Verdict.GOOD and body is not None
        self.dst = self.type = self.seq = 0
        if self.known and body is not None:
            self.dst, self.type, self.seq = body[1], body[3], int.from_bytes(body[5:7], "little")

    def matches(self, body: bytes) -> bool:
        if not _is_answer(body):
            return False
        if not self.known:
            return True
        seq = int.from_bytes(body[5:7], "little")
        # ASSIGN_ADDRESS is answered from the new address (broadcast or re-addressing a
        # tap): the transport cannot check src; the client checks it against the new one.
        src_ok = self.dst == catalog.ADDR_BROADCAST or self.type == catalog.T_ASSIGN_ADDRESS or body[2] == self.dst
        return src_ok and seq == self.seq and body[3] in (self.type, *_ACK_NAK)


def _is_answer(body: bytes) -> bool:
    """A frame for the host: dst 0 and the RESPONSE flag (an echo of a request has neither)."""
    return len(body) >= catalog.HEADER_LEN and body[1] == catalog.ADDR_HOST and bool(body[4] & catalog.FLAG_RESPONSE)


class SerialTransport:
    """The host's end of one bus: one request out, its answer back, one caller at a time."""

    def __init__(
        self,
        settings: SerialSettings,
        port_factory: PortFactory = open_pyserial,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.counters = TransportCounters()
        self._factory = port_factory
        self._clock = clock
        self._port: SerialPort | None = None
        self._closed = False  # close() was called: no reopening behind the caller's back
        self._down_since: float | None = None
        self._last_attempt = float("-inf")
        self._last_error = ""
        self._decoder = StreamDecoder()
        self._backlog: deque[bytes] = deque()  # answers that arrived in the same read as an earlier one
        self._last_rx = float("-inf")
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        return self.settings.name or self.settings.port

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def response_timeout(self, request_bytes: int, max_response_bytes: int = MAX_FRAME_BYTES) -> float:
        return self.settings.response_timeout(request_bytes, max_response_bytes)

    # -- opening and closing ---------------------------------------------------------

    def open(self) -> SerialTransport:
        """Open the port now; `PortUnavailable` with a one-line reason if it cannot be."""
        with self._lock:
            self._closed = False
            if self._port is None:
                self._reopen()
            return self

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_port()

    def __enter__(self) -> SerialTransport:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- traffic -----------------------------------------------------------------------

    def exchange(self, frame: bytes, timeout: float | None = None) -> bytes | None:
        """Send one encoded request and return the body of its answer, or None after the timeout.

        Input is flushed first, so a stale byte or a late answer to an earlier request is
        not taken for this one; answers whose seq, source or type do not fit are skipped.
        """
        if timeout is None:
            timeout = self.response_timeout(len(frame))
        key = _RequestKey(frame)
        with self._lock:
            port = self._ready_port()
            deadline: float = self._guarded(lambda: self._transmit(port, frame, timeout))
            answer = self._guarded(lambda: self._read_until(port, deadline, key.matches))
            if answer is None:
                self.counters.timeouts += 1
            return answer

    def send(self, frame: bytes) -> None:
        """Send a frame that gets no answer (a broadcast); with echo, still check for collision."""
        with self._lock:
            port = self._ready_port()
            self._guarded(lambda: self._transmit(port, frame, self.response_timeout(len(frame), 0)))

    def receive(self, timeout: float) -> bytes | None:
        """The next answer-shaped frame (dst 0, RESPONSE) within `timeout`, e.g. DISCOVER answers."""
        with self._lock:
            if self._backlog:
                self.counters.received += 1
                return self._backlog.popleft()
            port = self._ready_port()
            deadline = self._clock() + timeout
            return self._guarded(lambda: self._read_until(port, deadline, _is_answer))

    # -- internals -----------------------------------------------------------------------

    def _transmit(self, port: SerialPort, frame: bytes, timeout: float) -> float:
        """Flush stale input, write `frame`, check its echo; return the deadline for its answer."""
        self._keep_gap()
        port.reset_input_buffer()
        self._decoder.reset()
        self._backlog.clear()
        deadline = self._clock() + timeout
        port.write(frame)
        port.flush()
        self.counters.sent += 1
        if self.settings.echo:
            self._discard_echo(port, frame, deadline)
        return deadline

    def _keep_gap(self) -> None:
        """SPEC "Timing": the host waits 2 character times after an answer before sending again."""
        wait = self._last_rx + self.settings.wire_time(catalog.TURNAROUND_MIN_CHARS) - self._clock()
        if wait > 0:
            time.sleep(wait)

    def _discard_echo(self, port: SerialPort, sent: bytes, deadline: float) -> None:
        """Read back exactly the bytes just written; anything else is a collision."""
        echo = bytearray()
        while len(echo) < len(sent) and self._clock() < deadline:
            echo += port.read(len(sent) - len(echo))
        if echo == sent:
            return
        self.counters.echo_mismatches += 1
        port.reset_input_buffer()
        self._decoder.reset()
        what = "no echo" if not echo else f"an echo of {len(echo)} bytes that differs"
        raise BusCollision(
            f"{self.name}: sent {len(sent)} bytes, read back {what}: a collision on the bus "
            "(or an adapter that does not echo, with echo=True)"
        )

    def _read_until(self, port: SerialPort, deadline: float, wanted: Callable[[bytes], bool]) -> bytes | None:
        while self._clock() < deadline:
            chunk = port.read(port.in_waiting or 1)  # returns after at most the poll timeout
            if not chunk:
                continue
            self._last_rx = self._clock()
            for verdict, body in self._decoder.feed_classified(chunk):
                self.counters.count(verdict)
                if body is None:
                    continue
                if wanted(body):
                    self._backlog.append(body)
                else:
                    self.counters.skipped += 1
            if self._backlog:
                self.counters.received += 1
                return self._backlog.popleft()
        return None

    def _ready_port(self) -> SerialPort:
        """The open port, or reopen it if it is down and the interval has passed; else fail fast."""
        if self._port is not None:
            return self._port
        if self._closed:
            raise PortUnavailable(f"serial port {self.settings.port}: the transport is closed")
        now = self._clock()
        if now - self._last_attempt < self.settings.reopen_interval_s:
            since = "" if self._down_since is None else f" for {now - self._down_since:.1f} s"
            retry = self._last_attempt + self.settings.reopen_interval_s - now
            raise PortUnavailable(
                f"serial port {self.settings.port} is down{since} ({self._last_error}); next reopen in {retry:.1f} s"
            )
        return self._reopen()

    def _reopen(self) -> SerialPort:
        was_down = self._down_since is not None
        self._last_attempt = self._clock()
        try:
            port = self._factory(self.settings)
        except TransportError as exc:
            self._mark_down(str(exc))
            raise
        except _OPEN_ERRORS as exc:
            error = _open_error(self.settings, exc)
            self._mark_down(str(error))
            raise error from None
        self._port = port
        self._decoder.reset()
        self._backlog.clear()
        if was_down:
            self.counters.reconnects += 1
        self._down_since = None
        self._last_error = ""
        return port

    def _guarded(self, action: Callable[[], Any]) -> Any:
        """Run a port operation; a device error closes the port and becomes `PortUnavailable`."""
        try:
            return action()
        except TransportError:
            raise
        except _DEVICE_ERRORS as exc:
            self.counters.device_errors += 1
            self._drop_port()
            self._last_attempt = self._clock()
            self._mark_down(f"{exc}")
            raise PortUnavailable(
                f"serial port {self.settings.port} failed ({exc}): adapter unplugged or reset? "
                f"reopening at most every {self.settings.reopen_interval_s:g} s"
            ) from None

    def _mark_down(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = self._clock()
        self._last_error = reason

    def _drop_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(*_DEVICE_ERRORS):  # a vanished device may fail even to close
                port.close()
