"""TapClient end to end: the real firmware on MicroPython behind two virtual RS-485 buses,
reached through pyserial on the buses' ptys, a RedundantLink over both, and the client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from host.bus.link import RedundantLink
from host.bus.transport import SerialSettings, SerialTransport
from host.client.discovery import SCOPE_ALL, scan
from host.client.keys import MemoryKeys
from host.client.replies import Reply, Telemetry
from host.client.tap_client import TapClient
from host.client.tap_errors import TapRefused, TapTimeout
from host.sim.rig.vbus import VirtualBus
from protocol import catalog
from tests.tap_rig import ADDRESS, EPOCH, KEY, PATIENCE_S, UNIQUE_ID, SimTap

T = TypeVar("T")

# Per bus and attempt. Generous: a slow answer costs nothing, it only has to arrive (the
# firmware answers within milliseconds; a loaded machine may take far longer).
TIMEOUT_S = 1.0


@dataclass
class Site:
    rig: SimTap
    buses: dict[str, VirtualBus]
    transports: dict[str, SerialTransport]
    link: RedundantLink
    keys: MemoryKeys

    def client(self, link: object = None, timeout: float = TIMEOUT_S) -> TapClient:
        return TapClient(link or self.link, self.keys, epoch=EPOCH, timeout=timeout)  # type: ignore[arg-type]

    def closings(self) -> list[int]:
        return [k for _, k, closed in self.rig.plant.commands if closed]


@pytest.fixture
def site(tmp_path: Path, mpy_tree: Path) -> Iterator[Site]:
    buses = {name: VirtualBus(name, seed=seed).start() for seed, name in enumerate("AB")}
    rig = SimTap(tmp_path).start(mpy_tree, bus_ports=(buses["A"].tap_port, buses["B"].tap_port))
    transports: dict[str, SerialTransport] = {}
    try:
        assert all(bus.wait_for_taps(1, PATIENCE_S) for bus in buses.values()), "the tap never joined the buses"
        for name, bus in buses.items():
            transports[name] = SerialTransport(SerialSettings(bus.host_path, name=name, usb_latency_s=0.001)).open()
        link = RedundantLink(transports["A"], transports["B"])
        yield Site(rig, buses, transports, link, MemoryKeys({ADDRESS: KEY}, {ADDRESS: 100}))
    finally:
        for transport in transports.values():
            transport.close()
        for bus in buses.values():
            bus.close()  # bus A closing ends the firmware's loop
        rig.stop()


def patiently(call: Callable[[], T]) -> T:
    """Repeat a read that timed out (bit errors on both buses) until the rig's patience runs out."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            return call()
        except TapTimeout:
            if time.monotonic() > deadline:
                raise


def wait_measured(client: TapClient) -> Telemetry:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        telemetry = patiently(lambda: client.telemetry(ADDRESS))
        if all(i["state"] & catalog.INPUT_HEALTHY for i in telemetry.inputs):
            return telemetry
    raise AssertionError("the inputs never measured healthy")


def wait_active(client: TapClient, target: int) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while patiently(lambda: client.status(ADDRESS)).active_input != target:
        assert time.monotonic() < deadline, f"input {target} never became active"


def settle(client: TapClient, sim_seconds: int) -> Telemetry:
    """Telemetry once the tap's own clock has run `sim_seconds` on: a started transfer has ended by then."""
    start = patiently(lambda: client.telemetry(ADDRESS)).uptime_s
    deadline = time.monotonic() + PATIENCE_S
    while True:
        telemetry = patiently(lambda: client.telemetry(ADDRESS))
        if telemetry.uptime_s >= start + sim_seconds:
            return telemetry
        assert time.monotonic() < deadline, "the tap's clock stopped"


class LosingLink:
    """Loses the first `n` answers after the tap has acted on the request: what a noisy return path does."""

    def __init__(self, link: RedundantLink, n: int) -> None:
        self.link = link
        self.n = n
        self.sent: list[bytes] = []

    def exchange(self, frame: bytes, timeout: float | None = None) -> bytes | None:
        self.sent.append(frame)
        answer = self.link.exchange(frame, timeout)
        if answer is not None and self.n:
            self.n -= 1
            return None
        return answer


def test_reads_are_typed(site: Site) -> None:
    client = site.client()
    ident = client.identify(ADDRESS)
    assert (ident.unique_id, ident.board, ident.address, ident.epoch) == (UNIQUE_ID, "sim", ADDRESS, EPOCH)
    assert ident.n_inputs == 2 and ident.protocol_major == catalog.VERSION
    status = client.status(ADDRESS)
    assert status.active_input == 1 and status.epoch == EPOCH and status.auth_counter <= 100
    telemetry = wait_measured(client)
    assert telemetry.active_input == 1 and telemetry.relays_closed == 1
    assert telemetry.inputs[0]["voltage_mV"] == pytest.approx(230_000, rel=0.005)
    assert client.heartbeat(ADDRESS).epoch == EPOCH
    events = client.read_events(ADDRESS, since=0, max_count=5)
    assert events.events[0]["code"] == catalog.EV_BOOT
    with pytest.raises(TapRefused, match="HEALTH refused: NOT_SUPPORTED"):
        client.health(ADDRESS)  # a rack tap, not a source monitor


def test_a_switch_moves_the_relay_once_even_when_its_answer_is_lost(site: Site) -> None:
    wait_measured(site.client())
    losing = LosingLink(site.link, 1)
    client = site.client(losing)
    reply = client.switch(ADDRESS, expected_input=1, target_input=2)
    assert reply.cached and reply.src == ADDRESS  # the retry was answered from the tap's duplicate cache
    assert len(losing.sent) == 2 and losing.sent[0] == losing.sent[1]
    wait_active(client, 2)
    settle(client, 3)
    assert site.closings() == [2] and site.rig.plant.parallel_events == []
    assert client.status(ADDRESS).auth_counter == site.keys.last[ADDRESS] == 101


def test_a_switch_on_a_stale_belief_is_refused_and_changes_nothing(site: Site) -> None:
    client = site.client()
    wait_measured(client)
    with pytest.raises(TapRefused) as refused:
        client.switch(ADDRESS, expected_input=2, target_input=1)
    assert (refused.value.code, refused.value.detail, refused.value.verified) == (catalog.E_CAS_MISMATCH, 1, True)
    assert "SWITCH refused: CAS_MISMATCH" in str(refused.value)
    settle(client, 3)
    assert site.rig.plant.commands == [] and client.status(ADDRESS).active_input == 1


def test_a_cut_bus_a_is_bridged_by_b_within_one_call(site: Site) -> None:
    client = site.client()
    wait_measured(client)
    site.buses["A"].cut()
    for _ in range(4):
        assert client.status(ADDRESS).active_input == 1
    assert client.stats.retries == 0  # every call got its answer on its first attempt, over B
    health = site.link.health()
    assert health["A"]["state"] in ("suspect", "down") and health["B"]["answers"] >= 4
    client.switch(ADDRESS, 1, 2)
    wait_active(client, 2)
    assert site.closings() == [2]


def test_discovery_finds_the_tap_over_one_bus(site: Site) -> None:
    result = scan(site.transports["B"], scope=SCOPE_ALL, slots=4, slot_ms=5, extra_s=0.5)
    assert list(result.found) == [UNIQUE_ID] and result.unresolved == []
    assert result.found[UNIQUE_ID].src == ADDRESS


def test_bit_errors_on_both_buses_never_make_a_wrong_actuation(site: Site) -> None:
    client = site.client(timeout=0.3)
    wait_measured(client)
    for bus in site.buses.values():
        bus.set_bit_error_rate(1e-3)
    believed, executed, outcomes = 1, 0, []
    while client.stats.requests < 30 or executed < 2:
        target = 3 - believed
        outcome: Reply | TapRefused | TapTimeout
        try:
            outcome = client.switch(ADDRESS, believed, target)
        except (TapRefused, TapTimeout) as exc:
            outcome = exc
        moved = settle(client, 4).active_input == target  # the phase window (2 s) and the relays have passed
        if isinstance(outcome, Reply):
            assert moved, "acknowledged but not executed"
        elif isinstance(outcome, TapRefused) and not outcome.outcome_unknown:
            assert not moved, f"refused ({outcome.text}) but executed"
        outcomes.append((type(outcome).__name__, moved))
        if moved:
            executed += 1
            believed = target
        assert client.stats.requests < 200, f"no progress: {outcomes}"
    closings = site.closings()
    assert len(closings) == executed, f"{closings} for {outcomes}"  # never executed twice, never unbidden
    assert closings == [2, 1] * (executed // 2) + [2] * (executed % 2)
    assert site.rig.plant.parallel_events == []
    assert all(bus.counters().bytes_corrupted for bus in site.buses.values()), "the noise never bit"
