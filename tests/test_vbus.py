"""The virtual RS-485 bus: a pty for the host, TCP sockets for the taps, paced, half duplex, with faults.

Timing is only ever checked from below (nothing arrives before its wire time); waits use generous
timeouts so a loaded machine slows the tests down rather than failing them.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import serial

from host.sim.rig.vbus import VirtualBus, VirtualBuses
from host.sim.rig.vbus_endpoints import BITS_PER_BYTE, BusCounters
from host.wire.framing import StreamDecoder, Verdict, encode_frame

WAIT = 10.0  # seconds: an upper bound for anything that should happen, never expected to be reached
SPECIAL = bytes([0x00, 0x0A, 0x0D, 0x11, 0x13, 0xFF, 0x03, 0x04, 0x1A, 0x7F, 0x00, 0x00])
PAYLOAD = SPECIAL + bytes(range(256)) + SPECIAL

MakeBus = Callable[..., VirtualBus]


@pytest.fixture
def make_bus() -> Iterator[MakeBus]:
    buses: list[VirtualBus] = []

    def make(*args: Any, **kwargs: Any) -> VirtualBus:
        bus = VirtualBus(*args, **kwargs).start()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()
        assert bus.error is None


def connect_taps(bus: VirtualBus, n: int) -> list[socket.socket]:
    taps = [socket.create_connection(("127.0.0.1", bus.tap_port), timeout=WAIT) for _ in range(n)]
    assert bus.wait_for_taps(n, WAIT)
    return taps


def open_host(bus: VirtualBus, timeout: float = 0.2) -> serial.Serial:
    return serial.Serial(bus.host_path, bus.baud, timeout=timeout)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    deadline = time.monotonic() + WAIT
    while len(data) < n and time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_exact(port: serial.Serial, n: int) -> bytes:
    data = b""
    deadline = time.monotonic() + WAIT
    while len(data) < n and time.monotonic() < deadline:
        data += port.read(n - len(data))
    return data


def silent(sock: socket.socket, wait: float = 0.2) -> bool:
    readable, _, _ = select.select([sock], [], [], wait)
    return not readable


def wait_counters(bus: VirtualBus, done: Callable[[BusCounters], bool]) -> BusCounters:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        counters = bus.counters()
        if done(counters):
            return counters
        time.sleep(0.01)
    raise AssertionError(f"bus counters never got there: {bus.counters()}")


def settle(bus: VirtualBus, sent: int) -> BusCounters:
    """Wait until the bus has read `sent` bytes and given every one its slot and its listeners."""
    wait_counters(bus, lambda c: c.bytes_in >= sent)
    assert bus.wait_idle(WAIT)
    return bus.counters()


def body(tag: int, size: int = 40) -> bytes:
    return bytes((tag + i) % 256 for i in range(size))


def is_subsequence(short: bytes, long: bytes) -> bool:
    it = iter(long)
    return all(byte in it for byte in short)


def test_host_reaches_every_tap_byte_for_byte(make_bus: MakeBus) -> None:
    bus = make_bus("A", 115200)
    taps = connect_taps(bus, 2)
    with open_host(bus) as port:
        port.write(PAYLOAD)
        for tap in taps:
            assert recv_exact(tap, len(PAYLOAD)) == PAYLOAD
        settle(bus, len(PAYLOAD))
        assert port.read(1) == b""  # the host does not hear itself
    assert bus.counters().bytes_delivered == len(PAYLOAD)


def test_a_tap_reaches_the_host_and_the_other_taps_not_itself(make_bus: MakeBus) -> None:
    bus = make_bus("A", 115200)
    sender, other = connect_taps(bus, 2)
    with open_host(bus) as port:
        sender.sendall(PAYLOAD)
        assert read_exact(port, len(PAYLOAD)) == PAYLOAD
        assert recv_exact(other, len(PAYLOAD)) == PAYLOAD
        settle(bus, len(PAYLOAD))
        assert silent(sender)


def test_a_frame_written_with_pyserial_decodes_at_a_tap(make_bus: MakeBus) -> None:
    bus = make_bus("A", 115200)
    (tap,) = connect_taps(bus, 1)
    frames = [body(1), body(0, 7), bytes(60)]  # an all-zero body: COBS work for every byte
    wire = b"".join(encode_frame(b) for b in frames)
    with open_host(bus) as port:
        port.write(wire)
        decoder = StreamDecoder()
        assert decoder.feed(recv_exact(tap, len(wire))) == frames
        assert decoder.counts[Verdict.GOOD] == len(frames)


def test_bytes_arrive_no_earlier_than_their_wire_time(make_bus: MakeBus) -> None:
    bus = make_bus("A", 9600)
    (tap,) = connect_taps(bus, 1)
    data = bytes(i % 251 for i in range(1000))
    slack = 0.005  # clock granularity between the threads, not scheduling: the bus may only be late
    with open_host(bus) as port:
        start = time.monotonic()
        port.write(data)
        received, chunks = b"", 0
        while len(received) < len(data):
            tap.settimeout(WAIT)
            chunk = tap.recv(len(data))
            assert chunk
            elapsed = time.monotonic() - start
            received += chunk
            chunks += 1
            assert len(received) * bus.byte_time <= elapsed + slack  # each byte had its full 10 bits
    assert received == data
    assert elapsed >= len(data) * BITS_PER_BYTE / 9600 - slack  # ~1.04 s
    assert chunks > 1  # delivered as the wire carries it, not in one lump at the end


def test_two_taps_driving_at_once_corrupt_both_frames(make_bus: MakeBus) -> None:
    bus = make_bus("A", 4800)
    first, second = connect_taps(bus, 2)
    frames = [encode_frame(body(10, 150)), encode_frame(body(99, 150))]  # ~0.3 s each on the wire
    with open_host(bus) as port:
        first.sendall(frames[0])
        second.sendall(frames[1])
        counters = settle(bus, sum(map(len, frames)))
        decoder = StreamDecoder()
        heard = decoder.feed(port.read(4096))
    assert counters.collisions > 0
    assert counters.bytes_corrupted >= counters.collisions
    assert body(10, 150) not in heard and body(99, 150) not in heard
    assert decoder.counts[Verdict.GOOD] == 0


def test_bit_errors_corrupt_bytes_only_while_set(make_bus: MakeBus) -> None:
    bus = make_bus("A", 115200, seed=7)
    (tap,) = connect_taps(bus, 1)
    data = bytes(i % 256 for i in range(3000))
    with open_host(bus) as port:
        bus.set_bit_error_rate(1e-2)
        port.write(data)
        noisy = recv_exact(tap, len(data))
        counters = settle(bus, len(data))
        differing = sum(a != b for a, b in zip(noisy, data, strict=True))
        assert 0 < differing == counters.bytes_corrupted  # ~8 % of the bytes at 1 % per bit
        bus.set_bit_error_rate(0.0)
        port.write(data)
        assert recv_exact(tap, len(data)) == data
        assert settle(bus, 2 * len(data)).bytes_corrupted == counters.bytes_corrupted


def test_dropped_bytes_are_missing_and_counted(make_bus: MakeBus) -> None:
    bus = make_bus("A", 115200, seed=3)
    (tap,) = connect_taps(bus, 1)
    data = bytes(range(256)) * 8
    bus.set_drop_rate(0.1)
    with open_host(bus) as port:
        port.write(data)
        counters = settle(bus, len(data))
    assert 0 < counters.bytes_dropped < len(data)
    assert counters.bytes_delivered + counters.bytes_dropped == len(data)
    received = recv_exact(tap, counters.bytes_delivered)
    assert len(received) == len(data) - counters.bytes_dropped
    assert is_subsequence(received, data)
    assert silent(tap)


def test_a_cut_bus_delivers_nothing_until_restored(make_bus: MakeBus) -> None:
    bus = make_bus("A", 115200)
    (tap,) = connect_taps(bus, 1)
    with open_host(bus) as port:
        bus.cut(True)
        port.write(PAYLOAD)
        settle(bus, len(PAYLOAD))
        tap.sendall(PAYLOAD)  # after the host's bytes, so no slot holds two (a slot is dropped once)
        counters = settle(bus, 2 * len(PAYLOAD))
        assert counters.bytes_dropped == 2 * len(PAYLOAD)
        assert counters.bytes_delivered == 0
        assert silent(tap)
        assert port.read(1) == b""
        bus.cut(False)
        port.write(PAYLOAD)
        assert recv_exact(tap, len(PAYLOAD)) == PAYLOAD
        tap.sendall(PAYLOAD)
        assert read_exact(port, len(PAYLOAD)) == PAYLOAD


def test_a_babbler_blocks_all_traffic(make_bus: MakeBus) -> None:
    bus = make_bus("A", 115200, seed=5)
    talker, listener = connect_taps(bus, 2)
    frame = encode_frame(body(42))
    decoder = StreamDecoder()
    with open_host(bus, timeout=0.05) as port:
        bus.babble(True)
        talker.sendall(frame)
        heard = decoder.feed(port.read(256))
        wait = time.monotonic() + WAIT
        while bus.counters().collisions < len(frame) and time.monotonic() < wait:
            heard += decoder.feed(port.read(4096))  # keep reading: the babble never stops
        counters = bus.counters()
        assert counters.collisions == len(frame)  # every byte of the frame met the babble
        assert counters.bytes_corrupted == len(frame)
        assert counters.bytes_delivered > len(frame)  # the babble itself, reaching everyone
        assert heard == []
        assert recv_exact(listener, 100) != b""
        bus.babble(False)
        settle_deadline = time.monotonic() + WAIT
        talker.sendall(b"\x00" + frame)  # the leading delimiter ends whatever the babble left half done
        while not heard and time.monotonic() < settle_deadline:
            heard = decoder.feed(port.read(4096))
    assert heard == [body(42)]


def test_the_host_can_close_and_reopen_its_port(make_bus: MakeBus) -> None:
    bus = make_bus("A", 1_000_000)
    (tap,) = connect_taps(bus, 1)
    frame = encode_frame(body(5))
    with open_host(bus) as port:
        tap.sendall(frame)
        assert StreamDecoder().feed(read_exact(port, len(frame))) == [body(5)]
    stale = b"\x55" * 50_000  # more than the pty holds: the bus must forget it when the port reopens
    tap.sendall(stale)
    wait_counters(bus, lambda c: c.bytes_delivered >= len(frame) + len(stale))
    with open_host(bus) as port:
        tap.sendall(frame)
        decoder = StreamDecoder()
        assert decoder.feed(read_exact(port, len(frame))) == [body(5)]
        assert decoder.counts[Verdict.GOOD] == 1 and not decoder.last_bad
        port.write(frame)
        assert recv_exact(tap, len(frame)) == frame


def test_echo_lets_the_host_hear_itself(make_bus: MakeBus) -> None:
    bus = make_bus("A", 115200, echo=True)
    (tap,) = connect_taps(bus, 1)
    with open_host(bus) as port:
        port.write(PAYLOAD)
        assert read_exact(port, len(PAYLOAD)) == PAYLOAD
        assert recv_exact(tap, len(PAYLOAD)) == PAYLOAD
        tap.sendall(b"tap")
        assert read_exact(port, 3) == b"tap"
        settle(bus, len(PAYLOAD) + 3)
        assert silent(tap)  # the taps still do not hear themselves


def test_the_two_buses_of_a_pair_are_independent() -> None:
    with VirtualBuses(baud=115200) as buses:
        assert set(buses.host_paths) == {"A", "B"}
        tap_a = connect_taps(buses["A"], 1)[0]
        tap_b = connect_taps(buses["B"], 1)[0]
        with open_host(buses["A"]) as port:
            port.write(b"on A only")
            assert recv_exact(tap_a, 9) == b"on A only"
        settle(buses["A"], 9)
        assert silent(tap_b)
        assert buses["B"].counters().bytes_in == 0


def test_fault_settings_are_checked(make_bus: MakeBus) -> None:
    bus = make_bus("A", 115200)
    with pytest.raises(ValueError):
        bus.set_bit_error_rate(1.5)
    with pytest.raises(ValueError):
        bus.set_drop_rate(-0.1)
    with pytest.raises(ValueError):
        VirtualBus("X", 0)


def test_a_tap_may_leave_and_another_join(make_bus: MakeBus) -> None:
    bus = make_bus("A", 115200)
    (first,) = connect_taps(bus, 1)
    with open_host(bus) as port:  # first: opening the port flushes what the pty held
        first.sendall(b"bye")
        first.close()
        assert read_exact(port, 3) == b"bye"  # what it drove before leaving still goes out
        (second,) = connect_taps(bus, 1)
        assert bus.tap_count == 1
        port.write(b"hello")
        assert recv_exact(second, 5) == b"hello"


def test_close_stops_the_thread_and_frees_the_port() -> None:
    bus = VirtualBus("Z", 115200).start()
    port_number = bus.tap_port
    tap = connect_taps(bus, 1)[0]
    bus.close()
    bus.close()  # idempotent
    assert not [t for t in threading.enumerate() if t.name == "vbus-Z"]
    assert tap.recv(1) == b""  # the bus hung up on the tap
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port_number), timeout=1)
    with pytest.raises(RuntimeError):
        bus.start()
