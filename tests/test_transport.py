"""SerialTransport against a tap played on the far side of a pseudo-terminal, and on pyserial's loop://.

The pty is a real tty to pyserial (termios, flush, select), so these tests exercise what
a USB adapter's device node does, short of the wire. Time bounds are lower bounds only,
or generous ceilings that catch a hang: the machine running the tests may be loaded.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import serial  # type: ignore[import-untyped]
from cobs import cobs

from host.bus.transport import (
    BusCollision,
    PortUnavailable,
    SerialPort,
    SerialSettings,
    SerialTransport,
    TransportError,
    open_pyserial,
)
from host.wire import framing, messages

ADDRESS = 17
EPOCH = 3
HANG_S = 5.0  # a call that takes this long has hung; only a broken transport gets near it

Responder = Callable[[messages.Frame, bytes], list[bytes]]


def heartbeat(seq: int = 1, dst: int = ADDRESS) -> messages.Frame:
    return messages.request(dst, "HEARTBEAT", seq, {"epoch": EPOCH})


def answer(to: messages.Frame, uptime_s: int = 42) -> bytes:
    """The wire bytes of a tap's HEARTBEAT answer to `to`."""
    frame = messages.response(to, ADDRESS, "HEARTBEAT", {"epoch": EPOCH, "uptime_s": uptime_s, "alarms": 0})
    return framing.encode_frame(frame.to_body())


def with_bad_crc(wire: bytes) -> bytes:
    """The same frame with its CRC off by one: COBS intact, so the verdict is exactly bad_crc."""
    decoded = bytearray(cobs.decode(wire[:-1]))
    decoded[-4] ^= 0x01
    return cobs.encode(bytes(decoded)) + b"\x00"


def answers(request: messages.Frame, raw: bytes) -> list[bytes]:
    return [answer(request)]


def silent(request: messages.Frame, raw: bytes) -> list[bytes]:
    return []


class PtyTap:
    """A tap on the master side of a pty: decodes requests and writes what `respond` returns.

    With `echo`, it first writes back every byte it reads, as an adapter that hears
    itself would (`echo_with` may alter those bytes, to make a collision).
    """

    def __init__(
        self, respond: Responder = answers, echo: bool = False, echo_with: Callable[[bytes], bytes] | None = None
    ) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.respond = respond
        self.echo = echo or echo_with is not None
        self.echo_with = echo_with or (lambda data: data)
        self.heard: list[messages.Frame] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        """Close both ends, as when the adapter disappears: the transport's port gets EIO."""
        self._stop.set()
        self._thread.join(timeout=HANG_S)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):  # the transport may have hit EIO first; closing twice is fine
                os.close(fd)

    def _run(self) -> None:
        decoder = framing.StreamDecoder()
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if self.echo:
                self.write(self.echo_with(data))
            for body in decoder.feed(data):
                request = messages.parse_body(body)
                self.heard.append(request)
                for out in self.respond(request, data):
                    self.write(out)


@pytest.fixture
def tap() -> Iterator[PtyTap]:
    tap = PtyTap()
    yield tap
    tap.unplug()


def transport_for(path: str, **settings: Any) -> SerialTransport:
    return SerialTransport(SerialSettings(port=path, usb_latency_s=0.001, **settings))


def test_exchange_returns_the_answer(tap: PtyTap) -> None:
    request = heartbeat(seq=7)
    with transport_for(tap.path) as transport:
        body = transport.exchange(framing.encode_frame(request.to_body()))
    assert body is not None
    reply = messages.parse_body(body)
    assert (reply.seq, reply.src, reply.fields()["uptime_s"]) == (7, ADDRESS, 42)
    assert tap.heard == [request]
    assert transport.counters.sent == 1
    assert transport.counters.received == 1


def test_a_corrupt_answer_is_counted_and_skipped_and_a_later_good_one_taken() -> None:
    def bad_then_good(request: messages.Frame, raw: bytes) -> list[bytes]:
        return [with_bad_crc(answer(request, uptime_s=1)), b"\x17garbage\x00", answer(request)]

    tap = PtyTap(bad_then_good)
    try:
        with transport_for(tap.path) as transport:
            body = transport.exchange(framing.encode_frame(heartbeat().to_body()), timeout=HANG_S)
    finally:
        tap.unplug()
    assert body is not None
    assert messages.parse_body(body).fields()["uptime_s"] == 42
    assert transport.counters.bad_crc == 1
    assert transport.counters.bad_cobs + transport.counters.bad_other == 1


def test_an_answer_with_another_seq_or_source_is_skipped() -> None:
    def late_then_right(request: messages.Frame, raw: bytes) -> list[bytes]:
        late = messages.Frame(0, ADDRESS, request.type, request.seq - 1, request.payload)
        other_tap = messages.response(request, ADDRESS + 1, "HEARTBEAT", {"epoch": 0, "uptime_s": 0, "alarms": 0})
        stale = messages.response(late, ADDRESS, "HEARTBEAT", {"epoch": 0, "uptime_s": 9, "alarms": 0})
        return [framing.encode_frame(f.to_body()) for f in (stale, other_tap)] + [answer(request)]

    tap = PtyTap(late_then_right)
    try:
        with transport_for(tap.path) as transport:
            body = transport.exchange(framing.encode_frame(heartbeat(seq=5).to_body()), timeout=HANG_S)
    finally:
        tap.unplug()
    assert body is not None
    assert messages.parse_body(body).fields()["uptime_s"] == 42
    assert transport.counters.skipped == 2


def test_no_answer_gives_none_after_the_computed_timeout() -> None:
    tap = PtyTap(silent)
    try:
        with transport_for(tap.path) as transport:
            frame = framing.encode_frame(heartbeat().to_body())
            expected = transport.response_timeout(len(frame))
            start = time.monotonic()
            body = transport.exchange(frame)
            elapsed = time.monotonic() - start
    finally:
        tap.unplug()
    assert body is None
    assert elapsed >= expected
    assert transport.counters.timeouts == 1
    assert len(tap.heard) == 1


def test_echo_mode_discards_exactly_the_echo() -> None:
    tap = PtyTap(echo=True)
    try:
        with transport_for(tap.path, echo=True) as transport:
            body = transport.exchange(framing.encode_frame(heartbeat(seq=3).to_body()), timeout=HANG_S)
    finally:
        tap.unplug()
    assert body is not None
    assert messages.parse_body(body).seq == 3
    assert transport.counters.echo_mismatches == 0
    assert transport.counters.skipped == 0  # the echo never reached the frame decoder


def test_an_echo_that_differs_is_a_collision() -> None:
    def garble(data: bytes) -> bytes:
        return data[:2] + bytes([data[2] ^ 0x40 or 1]) + data[3:]

    tap = PtyTap(silent, echo_with=garble)
    try:
        with transport_for(tap.path, echo=True) as transport:
            with pytest.raises(BusCollision, match="collision"):
                transport.exchange(framing.encode_frame(heartbeat().to_body()), timeout=HANG_S)
            assert transport.is_open  # a collision is the bus's moment, not a dead port
    finally:
        tap.unplug()
    assert transport.counters.echo_mismatches == 1


def test_stale_input_is_flushed_before_the_request() -> None:
    tap = PtyTap()
    ports: list[SerialPort] = []

    def keep(settings: SerialSettings) -> SerialPort:
        ports.append(open_pyserial(settings))
        return ports[-1]

    request = heartbeat(seq=11)
    try:
        with SerialTransport(SerialSettings(tap.path, usb_latency_s=0.001), port_factory=keep) as transport:
            tap.write(b"\x13\x37\x00" + answer(request, uptime_s=999))  # noise, then a stale answer that would fit
            deadline = time.monotonic() + HANG_S
            while ports[0].in_waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert ports[0].in_waiting > 0
            body = transport.exchange(framing.encode_frame(request.to_body()), timeout=HANG_S)
    finally:
        tap.unplug()
    assert body is not None
    assert messages.parse_body(body).fields()["uptime_s"] == 42


def test_a_missing_port_is_one_clear_line(tmp_path: Path) -> None:
    path = str(tmp_path / "ttyUSB9")
    with pytest.raises(PortUnavailable) as caught:
        SerialTransport(SerialSettings(path)).open()
    assert str(caught.value) == f"no such serial port {path}: is the adapter plugged in?"
    assert isinstance(caught.value, TransportError)


def test_an_unplugged_adapter_fails_fast_and_is_reopened_when_back(tmp_path: Path) -> None:
    where = {"path": ""}
    opened: list[str] = []

    def factory(settings: SerialSettings) -> SerialPort:
        opened.append(where["path"])
        return open_pyserial(SerialSettings(where["path"], usb_latency_s=settings.usb_latency_s))

    first = PtyTap()
    where["path"] = first.path
    settings = SerialSettings("bus-a-adapter", usb_latency_s=0.001, reopen_interval_s=0.2)
    transport = SerialTransport(settings, port_factory=factory).open()
    frame = framing.encode_frame(heartbeat().to_body())
    assert transport.exchange(frame, timeout=HANG_S) is not None

    first.unplug()
    where["path"] = str(tmp_path / "gone")
    start = time.monotonic()
    with pytest.raises(PortUnavailable, match="adapter unplugged"):
        transport.exchange(frame, timeout=HANG_S)
    with pytest.raises(PortUnavailable, match="is down"):
        transport.exchange(frame, timeout=HANG_S)  # within the reopen interval: no attempt at all
    assert time.monotonic() - start < HANG_S  # failed on the error, not on the timeout
    assert len(opened) == 1

    time.sleep(0.25)
    with pytest.raises(PortUnavailable, match="no such serial port"):
        transport.exchange(frame, timeout=HANG_S)  # one reopen attempt, the device is still missing
    assert len(opened) == 2

    second = PtyTap()
    where["path"] = second.path
    time.sleep(0.25)
    try:
        assert transport.exchange(frame, timeout=HANG_S) is not None
    finally:
        transport.close()
        second.unplug()
    assert transport.counters.device_errors == 1
    assert transport.counters.reconnects == 1
    assert len(opened) == 3


def test_a_closed_transport_refuses_without_reopening(tap: PtyTap) -> None:
    transport = transport_for(tap.path).open()
    transport.close()
    with pytest.raises(PortUnavailable, match="closed"):
        transport.exchange(framing.encode_frame(heartbeat().to_body()))


def test_loop_url_hears_its_own_request_and_skips_it() -> None:
    frame = framing.encode_frame(heartbeat().to_body())
    with SerialTransport(SerialSettings("loop://", usb_latency_s=0.001)) as transport:
        assert transport.exchange(frame) is None
    assert transport.counters.skipped == 1  # the request came back: not an answer
    assert transport.counters.timeouts == 1


def test_loop_url_in_echo_mode_discards_the_echo() -> None:
    frame = framing.encode_frame(heartbeat().to_body())
    with SerialTransport(SerialSettings("loop://", usb_latency_s=0.001, echo=True)) as transport:
        assert transport.exchange(frame) is None
        transport.send(frame)
    assert transport.counters.echo_mismatches == 0
    assert transport.counters.skipped == 0
    assert transport.counters.sent == 2


def test_receive_hands_out_answers_that_came_in_one_read() -> None:
    def two_at_once(request: messages.Frame, raw: bytes) -> list[bytes]:
        return [answer(request, uptime_s=1) + answer(request, uptime_s=2)]

    tap = PtyTap(two_at_once)
    try:
        with transport_for(tap.path) as transport:
            transport.send(framing.encode_frame(heartbeat().to_body()))
            first = transport.receive(HANG_S)
            second = transport.receive(HANG_S)
    finally:
        tap.unplug()
    assert first is not None and second is not None
    assert [messages.parse_body(b).fields()["uptime_s"] for b in (first, second)] == [1, 2]


def test_rs485_rts_on_a_port_without_kernel_support_says_so(tap: PtyTap) -> None:
    with pytest.raises(TransportError, match="RS-485 mode"):
        transport_for(tap.path, rs485_rts=True).open()


def test_response_timeout_arithmetic() -> None:
    # 8N1 at 115200: 10 bits a character, 86.8 us. TELEMETRY poll of a 4-input tap:
    # 13 bytes out, 95 back, 2 characters of turnaround guard = 110 characters
    # = 9.549 ms, + 10 ms turnaround + 16 ms USB latency + 5 ms margin = 40.549 ms.
    settings = SerialSettings("loop://")
    assert settings.bits_per_char == 10
    assert settings.response_timeout(13, 95) == pytest.approx(0.0095486 + 0.010 + 0.016 + 0.005, abs=1e-6)
    # 8E1 and 8N2 take 11 bits a character. At 9600 with a 1 ms latency timer and no
    # margin: 110 x 11 / 9600 = 126.04 ms, + 10 ms + 1 ms = 137.04 ms.
    base = SerialSettings("loop://", baudrate=9600, usb_latency_s=0.001, margin_s=0)
    for slow in (replace(base, parity=serial.PARITY_EVEN), replace(base, stopbits=serial.STOPBITS_TWO)):
        assert slow.bits_per_char == 11
        assert slow.response_timeout(13, 95) == pytest.approx(0.12604 + 0.011, abs=1e-5)
    # With no answer size given, the largest frame: 327 bytes.
    assert settings.response_timeout(13) == pytest.approx((13 + 327 + 2) * 10 / 115200 + 0.031)
