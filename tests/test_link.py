"""RedundantLink over in-memory buses, and once over two pty-backed serial transports."""

from __future__ import annotations

import threading
import time

import pytest

from host.bus.link import BusState, NoBusError, RedundantLink
from host.bus.transport import BusCollision, PortUnavailable, SerialSettings, SerialTransport, TransportError
from host.wire import framing
from tests.test_transport import PtyTap, heartbeat, silent

REQUEST = b"request\x00"
PROBE = b"probe\x00"


class FakeBus:
    """A bus in memory: answers, stays silent, or raises, as the test sets it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self.error: TransportError | None = None
        self.sent: list[bytes] = []
        self.broadcasts: list[bytes] = []
        self.closed = False
        self.busy = 0
        self.max_busy = 0
        self.delay_s = 0.0

    def exchange(self, frame: bytes, timeout: float | None = None) -> bytes | None:
        self.busy += 1
        self.max_busy = max(self.max_busy, self.busy)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            self.sent.append(frame)
            if self.error is not None:
                raise self.error
            return b"answer from " + self.name.encode() if self.alive else None
        finally:
            self.busy -= 1

    def send(self, frame: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.broadcasts.append(frame)

    def receive(self, timeout: float) -> bytes | None:
        return None

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_link(down_after: int = 3) -> tuple[RedundantLink, FakeBus, FakeBus, Clock]:
    a, b, clock = FakeBus("A"), FakeBus("B"), Clock()
    return RedundantLink(a, b, probe_interval_s=10, down_after=down_after, clock=clock), a, b, clock


def test_a_healthy_a_carries_everything() -> None:
    link, a, b, _ = make_link()
    assert link.exchange(REQUEST) == b"answer from A"
    assert (len(a.sent), len(b.sent)) == (1, 0)
    assert link.health()["A"]["state"] == "up"
    assert link.health()["A"]["last_ok"] is not None


def test_a_silent_a_fails_over_to_b_within_the_same_call() -> None:
    link, a, b, _ = make_link()
    a.alive = False
    assert link.exchange(REQUEST) == b"answer from B"
    assert a.sent == b.sent == [REQUEST]  # the same bytes: a retry the tap can recognise
    health = link.health()
    assert health["A"]["last_ok"] is None  # never answered
    assert (health["A"]["state"], health["A"]["consecutive_failures"], health["A"]["timeouts"]) == ("suspect", 1, 1)
    assert (health["B"]["state"], health["B"]["answers"]) == ("up", 1)
    assert link.order() == ["B", "A"]  # the next request goes to B first
    assert link.exchange(REQUEST) == b"answer from B"
    assert len(a.sent) == 1


def test_an_unplugged_adapter_takes_its_bus_down_at_once() -> None:
    link, a, _, _ = make_link()
    a.error = PortUnavailable("no such serial port /dev/ttyUSB0: is the adapter plugged in?")
    assert link.exchange(REQUEST) == b"answer from B"
    health = link.health()["A"]
    assert (health["state"], health["errors"], health["timeouts"]) == ("down", 1, 0)
    assert "plugged in" in health["last_error"]


def test_a_collision_makes_a_bus_suspect_not_down() -> None:
    link, a, _, _ = make_link()
    a.error = BusCollision("A: collision")
    assert link.exchange(REQUEST) == b"answer from B"
    assert link.health()["A"]["state"] == "suspect"


def test_both_buses_silent_blames_the_tap_not_the_buses() -> None:
    link, a, b, _ = make_link()
    a.alive = b.alive = False
    assert link.exchange(REQUEST) is None
    for health in link.health().values():
        assert (health["state"], health["silent"], health["timeouts"], health["consecutive_failures"]) == (
            "up",
            1,
            0,
            0,
        )


def test_both_buses_failing_raises_a_clear_error() -> None:
    link, a, b, _ = make_link()
    a.error = PortUnavailable("no such serial port /dev/ttyUSB0: is the adapter plugged in?")
    b.error = PortUnavailable("no such serial port /dev/ttyUSB1: is the adapter plugged in?")
    with pytest.raises(NoBusError, match=r"no bus could send.*ttyUSB0.*ttyUSB1"):
        link.exchange(REQUEST)
    assert {h["state"] for h in link.health().values()} == {"down"}


def test_probing_finds_a_dead_standby_and_its_recovery() -> None:
    link, _, b, clock = make_link(down_after=3)
    assert link.maybe_probe(lambda: PROBE) == {"A": True, "B": True}  # nothing heard yet: both due
    b.alive = False
    states = []
    for _ in range(3):
        clock.now += 10
        link.exchange(REQUEST)  # traffic proves A, so only B is due
        assert link.maybe_probe(lambda: PROBE) == {"B": False}
        states.append(link.health()["B"]["state"])
    assert states == ["suspect", "suspect", "down"]
    assert link.health()["B"]["probes"] == 4
    assert link.maybe_probe(lambda: PROBE) == {}  # not due again before the interval
    b.alive = True
    clock.now += 10
    assert link.maybe_probe(lambda: PROBE) == {"A": True, "B": True}
    assert link.health()["B"]["state"] == "up"
    assert link.health()["B"]["consecutive_failures"] == 0


def test_preference_returns_to_a_once_a_answers_a_probe() -> None:
    link, a, _, clock = make_link()
    a.alive = False
    link.exchange(REQUEST)
    assert link.order() == ["B", "A"]
    a.alive = True
    clock.now += 10
    assert link.maybe_probe(lambda: PROBE)["A"] is True
    assert link.order() == ["A", "B"]
    assert link.exchange(REQUEST) == b"answer from A"


def test_a_silent_active_bus_is_probed_when_the_other_is_down() -> None:
    """With B down, A's silence is ambiguous in exchanges; a probe to a known tap settles it."""
    link, a, b, clock = make_link(down_after=1)
    b.error = PortUnavailable("gone")
    a.alive = False
    assert link.exchange(REQUEST) is None
    assert link.health()["A"]["state"] == "up"  # only silence so far, nothing to blame A for
    clock.now += 10
    assert link.maybe_probe(lambda: PROBE) == {"A": False, "B": False}
    assert link.health()["A"]["state"] == "down"


def test_broadcast_goes_out_on_every_bus_that_can() -> None:
    link, a, b, _ = make_link()
    b.error = PortUnavailable("gone")
    assert link.broadcast(b"heartbeat\x00") == ["A"]
    assert a.broadcasts == [b"heartbeat\x00"]
    assert link.health()["B"]["state"] == BusState.DOWN.value


def test_one_exchange_at_a_time_from_many_threads() -> None:
    link, a, b, _ = make_link()
    a.delay_s = b.delay_s = 0.002
    threads = [threading.Thread(target=lambda: [link.exchange(REQUEST) for _ in range(5)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(a.sent) == 20
    assert a.max_busy == 1
    assert link.health()["A"]["exchanges"] == 20


def test_the_buses_need_distinct_names_and_close_together() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        RedundantLink(FakeBus("A"), FakeBus("A"))
    link, a, b, _ = make_link()
    with link:
        pass
    assert a.closed and b.closed


def test_serial_transports_fail_over_from_a_silent_bus() -> None:
    tap_a, tap_b = PtyTap(silent), PtyTap()
    bus_a = SerialTransport(SerialSettings(tap_a.path, name="A", usb_latency_s=0.001)).open()
    bus_b = SerialTransport(SerialSettings(tap_b.path, name="B", usb_latency_s=0.001)).open()
    try:
        with RedundantLink(bus_a, bus_b) as link:
            body = link.exchange(framing.encode_frame(heartbeat(seq=9).to_body()))
    finally:
        tap_a.unplug()
        tap_b.unplug()
    assert body is not None
    assert [f.seq for f in tap_a.heard] == [f.seq for f in tap_b.heard] == [9]
    assert bus_a.counters.timeouts == 1
    assert link.health()["A"]["state"] == "suspect"
