"""Taps on a rig, through the host's own stack (TapClient over a RedundantLink of two
serial transports): telemetry against the plant, switching, refusals, a cut bus, bit
errors, a reboot, local transfer with the host away, and a mass transfer onto one
alternate. The same cases run on the virtual rig and on a bench (`--rig serial:...`),
each skipping what its rig cannot do."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from hil_tests.rig import INJECT_BUS, INJECT_SOURCE, PLANT_TRUTH, SWITCHING, Rig, RigTap, wait_for
from host.client.keys import MemoryKeys
from host.client.replies import Status
from host.client.tap_errors import TapRefused, TapTimeout
from protocol import catalog

MakeRig = Callable[..., Rig]


def healthy(rig: Rig, tap: RigTap) -> None:
    """Wait until the tap measures every input present and healthy (its first cycles)."""
    wait_for(lambda: rig.client.telemetry(tap.address),
             lambda t: all(i["state"] & catalog.INPUT_HEALTHY for i in t.inputs), f"{tap.id} healthy inputs")


def status(rig: Rig, tap: RigTap) -> Status:
    return rig.client.status(tap.address)


def assign_alternates(rig: Rig, taps: list[RigTap]) -> None:
    """Each tap's input 2 as the alternate of its input 1, as the host assigns them."""
    for tap in taps:
        healthy(rig, tap)
        assert rig.client.set_alternates(tap.address, 1, (2,)).request == "SET_ALTERNATES"


def test_telemetry_matches_the_plant(make_rig: MakeRig) -> None:
    rig = make_rig((2, 2))
    rig.require(PLANT_TRUTH)
    for tap in rig.taps:
        healthy(rig, tap)
        telemetry = rig.client.telemetry(tap.address)
        truth = rig.truth()
        sources = truth["sources"]
        assert telemetry.active_input == 1 and truth["taps"][tap.id]["source"] == tap.inputs[0]
        for measured, source_id in zip(telemetry.inputs, tap.inputs, strict=True):
            source = sources[source_id]
            # the conducting feed loses I.Z on its path; within 1% of the source's voltage
            assert measured["voltage_mV"] / 1000 == pytest.approx(source["voltage_v"], rel=0.01)
            assert measured["frequency_cHz"] / 100 == pytest.approx(source["hz"], abs=0.05)
        # phases relative to input 1, as the site says the sources are
        expected = sources[tap.inputs[1]]["phase_deg"] - sources[tap.inputs[0]]["phase_deg"]
        measured_deg = telemetry.inputs[1]["phase_cdeg"] / 100 - telemetry.inputs[0]["phase_cdeg"] / 100
        assert (measured_deg - expected + 180) % 360 - 180 == pytest.approx(0, abs=2)
        assert telemetry.power_W / 1000 == pytest.approx(truth["taps"][tap.id]["draw_kw"], rel=0.03)


def test_switch_moves_the_rack_and_telemetry_confirms_it(make_rig: MakeRig) -> None:
    rig = make_rig((2, 2))
    rig.require(SWITCHING)
    tap = rig.taps[0]
    healthy(rig, tap)
    assert status(rig, tap).active_input == 1
    rig.client.switch(tap.address, expected_input=1, target_input=2)
    after = wait_for(lambda: status(rig, tap), lambda s: s.active_input == 2, "the switch to input 2")
    assert after.relays_closed == 0b10
    if PLANT_TRUTH in rig.capabilities:
        assert rig.truth()["taps"][tap.id]["source"] == tap.inputs[1]
        assert rig.closings(tap.id) == [2] and rig.parallel_events(tap.id) == []  # type: ignore[attr-defined]


def test_bad_auth_replay_stale_epoch_and_wrong_cas_are_refused_with_nothing_changed(make_rig: MakeRig) -> None:
    rig = make_rig((1, 2))
    tap = rig.taps[0]
    healthy(rig, tap)
    before = status(rig, tap)

    forger = rig.new_client(keys=MemoryKeys({tap.address: bytes(32)}, {tap.address: before.auth_counter + 10}))
    with pytest.raises(TapRefused) as refused:
        forger.switch(tap.address, 1, 2)
    assert refused.value.name == "BAD_TAG"

    stale = rig.new_client(keys=MemoryKeys({tap.address: tap.key}, {tap.address: before.auth_counter + 20}),
                           epoch=rig.epoch - 1)
    with pytest.raises(TapRefused) as refused:
        stale.switch(tap.address, 1, 2)
    assert refused.value.name == "STALE_EPOCH"

    rig.client.sync_counter(tap.address)
    rig.client.set_alternates(tap.address, 1, (2,))  # accepted: its counter is now used
    used = status(rig, tap).auth_counter
    replayer = rig.new_client(keys=MemoryKeys({tap.address: tap.key}, {tap.address: used - 1}))
    with pytest.raises(TapRefused) as refused:
        replayer.switch(tap.address, 1, 2)  # a valid command under a counter already spent
    assert refused.value.name == "REPLAY"

    with pytest.raises(TapRefused) as refused:
        rig.client.switch(tap.address, expected_input=2, target_input=1)  # it is on 1, not 2
    assert refused.value.name == "CAS_MISMATCH"

    after = status(rig, tap)
    assert (after.active_input, after.relays_closed, after.epoch) == (1, 0b01, before.epoch)
    if PLANT_TRUTH in rig.capabilities:
        assert rig.closings(tap.id) == []


def test_bus_a_cut_control_goes_on_over_bus_b(make_rig: MakeRig) -> None:
    rig = make_rig((2, 2))
    rig.require(INJECT_BUS, SWITCHING)
    tap = rig.taps[0]
    healthy(rig, tap)
    rig.bus_fault("A", "cut")
    rig.client.switch(tap.address, 1, 2)  # answered over B within the same call
    assert wait_for(lambda: status(rig, tap), lambda s: s.active_input == 2, "the switch over bus B")
    health = rig.link.health()
    assert health["A"]["state"] in ("suspect", "down") and health["B"]["state"] == "up"


def test_bit_errors_most_exchanges_succeed_and_none_actuates_wrongly(make_rig: MakeRig) -> None:
    rig = make_rig((1, 2))
    rig.require(INJECT_BUS, PLANT_TRUTH)
    tap = rig.taps[0]
    healthy(rig, tap)
    for bus in ("A", "B"):
        rig.bus_fault(bus, "ber", rate=1e-4)
    answered = 0
    for _ in range(60):
        try:
            rig.client.status(tap.address)  # at most 1 + MAX_RETRIES tries
            answered += 1
        except TapTimeout:
            pass
    assert answered >= 0.9 * 60, f"{answered} of 60 exchanges within 3 tries at a bit error rate of 1e-4"

    for bus in ("A", "B"):
        rig.bus_fault(bus, "ber", rate=1e-3)
    rng = random.Random(7)
    acknowledged = right = 0
    for _ in range(20):
        now = wait_for(lambda: _status_or_none(rig, tap), lambda s: s is not None, "a STATUS through the noise")
        assert now is not None
        expected = now.active_input if rng.random() < 0.8 else 3 - now.active_input  # some wrong on purpose
        right += expected == now.active_input
        try:
            rig.client.switch(tap.address, expected, 3 - expected)
            acknowledged += 1
        except (TapRefused, TapTimeout):
            pass
    for bus in ("A", "B"):
        rig.bus_fault(bus, "ber", rate=0.0)
    # an acknowledged switch has started, not finished (a planned transfer between sources
    # out of phase waits for them to align, up to 2 s): let the tap's clock run 3 s more
    uptime = rig.client.telemetry(tap.address).uptime_s
    wait_for(lambda: rig.client.telemetry(tap.address).uptime_s, lambda t: t >= uptime + 3, "3 s on the tap")
    final = status(rig, tap)
    closings = rig.closings(tap.id)
    # each executed switch toggles 1 <-> 2, once: every acknowledged one ran, a wrong
    # compare-and-swap or a corrupted frame never did, and no two inputs were ever closed
    assert all(a != b for a, b in itertools.pairwise(closings))
    assert (closings[-1] if closings else 1) == final.active_input
    assert acknowledged <= len(closings) <= right
    assert rig.parallel_events(tap.id) == []  # type: ignore[attr-defined]


def _status_or_none(rig: Rig, tap: RigTap) -> Status | None:
    try:
        return status(rig, tap)
    except TapTimeout:
        return None


def test_a_tap_reboots_with_its_state_and_its_rack_powered(make_rig: MakeRig) -> None:
    rig = make_rig((1, 2))
    rig.require(SWITCHING)
    tap = rig.taps[0]
    assign_alternates(rig, [tap])
    rig.client.switch(tap.address, 1, 2)
    wait_for(lambda: status(rig, tap), lambda s: s.active_input == 2, "the switch to input 2")
    up = wait_for(lambda: rig.client.telemetry(tap.address).uptime_s, lambda t: t >= 2, "2 s of uptime")
    before = status(rig, tap)
    rig.client.reset(tap.address)
    wait_for(lambda: _uptime_or_none(rig, tap), lambda t: t is not None and t < up, "the tap's restart")
    after = status(rig, tap)
    assert (after.active_input, after.epoch, after.config_crc) == (2, before.epoch, before.config_crc)
    assert (after.alternates_for, after.alternate_1) == (before.alternates_for, before.alternate_1)
    if PLANT_TRUTH in rig.capabilities:
        assert rig.closings(tap.id) == [2]  # the reset moved no relay: the rack stayed on input 2


def _uptime_or_none(rig: Rig, tap: RigTap) -> int | None:
    try:
        return int(rig.client.telemetry(tap.address).uptime_s)
    except TapTimeout:
        return None  # the tap is restarting


def test_a_source_lost_with_the_host_away_is_transferred_locally(make_rig: MakeRig) -> None:
    rig = make_rig((2, 2))
    rig.require(INJECT_SOURCE, PLANT_TRUTH)
    on_lost = rig.on_source("ups-1")
    assign_alternates(rig, rig.taps)
    with rig.host_disconnected():
        rig.lose("ups-1")
        wait_for(lambda: all(rig.truth()["taps"][t.id]["source"] == t.inputs[1] for t in on_lost), lambda ok: ok,
                 "the local transfer of the racks on ups-1")
    for tap in on_lost:
        assert status(rig, tap).active_input == 2
        assert rig.parallel_events(tap.id) == []  # type: ignore[attr-defined]


def test_a_lost_source_moves_its_taps_onto_one_alternate_and_leaves_those_on_it_alone(make_rig: MakeRig) -> None:
    rig = make_rig((4, 2))  # taps 1 and 3 start on ups-1, taps 2 and 4 on ups-2
    rig.require(INJECT_SOURCE, PLANT_TRUTH)
    movers, stayers = rig.on_source("ups-1"), rig.on_source("ups-2")
    assert len(movers) == 2 and len(stayers) == 2
    assign_alternates(rig, rig.taps)
    rig.lose("ups-1")
    for tap in movers:
        wait_for(lambda t=tap: status(rig, t), lambda s: s.active_input == 2, f"{tap.id} on its alternate")
    for tap in stayers:
        assert status(rig, tap).active_input == 1 and rig.closings(tap.id) == []  # not disturbed
    truth = rig.truth()
    assert all(truth["taps"][t.id]["source"] == "ups-2" for t in rig.taps)
    assert truth["sources"]["ups-1"]["load_kw"] == pytest.approx(0.0, abs=0.01)
