"""Where the tap once departed from SPEC.md: SET_LIMITS against the board's ratings and
the defaults derived from them, the events the SPEC lists (source lost, the transfer
with its dark time, overload trip with its current, relay mismatch), which refusals of
a signed command are signed, a frame that used to stop the firmware, which answers the
duplicate cache keeps, the NAK details of the error table, when HOST_LOST rises, and the
settling flag of TELEMETRY. Run on the compiled firmware on MicroPython
(tests/tap_rig.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host.ops import flash_records
from host.sim.rig.plant import Load, Plant, Source
from host.wire import messages
from protocol import catalog
from tests.protection_rig import HONGFA_HFE20, supply_gap_s
from tests.tap_rig import ADDRESS, EPOCH, KEY, PATIENCE_S, SIM_BOARD, UNIQUE_ID, SimTap

LIMITS = {
    "curve": catalog.CURVE_VERY_INVERSE,
    "pickup_mA": 20_000,
    "tms_milli": 100,
    "instantaneous_mA": 40_000,
    "undervoltage_mV": 195_500,
    "overvoltage_mV": 264_500,
    "frequency_low_cHz": 4750,
    "frequency_high_cHz": 5250,
    "thd_max_dpct": 80,
}
ALTERNATES = {"for_input": 1, "alternate_1": 2, "alternate_2": 0, "alternate_3": 0}


@pytest.fixture
def tap(tmp_path: Path, mpy_tree: Path) -> Iterator[SimTap]:
    """A sim tap on the default plant, stopped after the test."""
    started = SimTap(tmp_path).start(mpy_tree)
    yield started
    started.stop()


def _wait_healthy(tap: SimTap) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        fields = tap.ask(tap.plain("TELEMETRY")).fields()
        if all(i["state"] & catalog.INPUT_HEALTHY for i in fields["inputs"]):
            return
    raise AssertionError("the inputs never measured healthy")


def _events(tap: SimTap, code: int, count: int = 1) -> list[dict[str, Any]]:
    """Wait until the log holds `count` events of `code`; return them."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        found = tap.ask(tap.plain("READ_EVENTS", {"since": 0, "max_count": 30})).fields()["events"]
        matching = [e for e in found if e["code"] == code]
        if len(matching) >= count:
            return matching
        assert time.monotonic() < deadline, f"no event {code} in {found}"
        time.sleep(0.05)


def _limits_on_flash(tap: SimTap) -> dict[str, int]:
    # any configuration write persists the limits the tap runs on
    assert tap.ask(tap.signed("SET_ALTERNATES", ALTERNATES)).type == catalog.T_ACK
    record = flash_records.read_record(tap.flash / "config.json")
    assert record is not None
    return {name: record[name] for name in LIMITS}


# -- SET_LIMITS and the defaults: coordinated with the board's relay and fuse -------------------------


def test_default_limits_coordinate_with_the_board(tmp_path: Path, mpy_tree: Path) -> None:
    tap = SimTap(tmp_path).start(mpy_tree)
    try:
        limits = _limits_on_flash(tap)
    finally:
        tap.stop()
    # the sim board: relays rated 40 A that break 40 A, 40 A fuses
    assert SIM_BOARD["breaking_mA"] == SIM_BOARD["rated_mA"] == SIM_BOARD["fuse_mA"] == 40_000
    assert limits["instantaneous_mA"] == 40_000  # never more than the relay may break
    assert limits["pickup_mA"] == 32_000  # 80% of the weaker of relay and fuse, as host/ops/operate.py's defaults


def test_set_limits_refuses_what_the_board_cannot_honour(tmp_path: Path, mpy_tree: Path) -> None:
    # a board whose relays carry 30 A but break 40 A, behind 32 A fuses
    tap = SimTap(tmp_path, rated_mA=30_000, fuse_mA=32_000).start(mpy_tree)
    try:
        crc = tap.ask(tap.plain("STATUS")).fields()["config_crc"]
        refused = {
            "instantaneous above the breaking capacity": (LIMITS | {"instantaneous_mA": 320_000}, 4),
            "instantaneous just above it": (LIMITS | {"instantaneous_mA": 40_001}, 4),
            "instantaneous not above pickup": (LIMITS | {"pickup_mA": 25_000, "instantaneous_mA": 25_000}, 4),
            "pickup above the relay's rated current": (LIMITS | {"pickup_mA": 31_000}, 2),
            "overvoltage beyond what the board measures": (LIMITS | {"overvoltage_mV": 290_000}, 6),
            "no THD allowed": (LIMITS | {"thd_max_dpct": 0}, 9),
        }
        for why, (fields, position) in refused.items():
            answer = tap.ask(tap.signed("SET_LIMITS", fields))
            assert answer.type == catalog.T_NAK, why
            nak = answer.fields()
            assert (nak["error"], nak["detail"]) == (catalog.E_OUT_OF_RANGE, position), why
            assert messages.verify(answer, KEY), why  # a refusal after the tag checked out is signed
        assert tap.ask(tap.plain("STATUS")).fields()["config_crc"] == crc  # nothing changed
        ok = LIMITS | {"pickup_mA": 30_000, "instantaneous_mA": 40_000}
        assert tap.ask(tap.signed("SET_LIMITS", ok)).type == catalog.T_ACK
        assert tap.ask(tap.plain("STATUS")).fields()["config_crc"] != crc
    finally:
        tap.stop()


def test_persisted_limits_the_board_cannot_honour_give_way_to_its_defaults(tmp_path: Path, mpy_tree: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    old = LIMITS | {"pickup_mA": 32_000, "instantaneous_mA": 320_000}  # what an older firmware kept
    flash_records.write_record(flash, "config.json", {"address": ADDRESS, "epoch": EPOCH} | old)
    flash_records.write_record(flash, "key.json", {"key": KEY.hex()})
    tap = SimTap(tmp_path).start(mpy_tree)
    try:
        assert tap.ask(tap.plain("STATUS")).fields()["alarms"] & catalog.ALARM_UNCALIBRATED
        assert _limits_on_flash(tap)["instantaneous_mA"] == 40_000
    finally:
        tap.stop()


# -- events ------------------------------------------------------------------------------------


def test_loss_of_source_logs_source_lost_and_the_transfer_with_its_dark_time(tmp_path: Path, mpy_tree: Path) -> None:
    onset = 1.5
    plant = Plant([Source(230, lost_at_s=onset), Source(230, phase_deg=-120)], Load(i_rms=16), [HONGFA_HFE20] * 2)
    plant.keep_trace = True
    tap = SimTap(tmp_path, plant).start(mpy_tree)
    try:
        _wait_healthy(tap)
        (transfer,) = _events(tap, catalog.EV_TRANSFER)
        (lost,) = _events(tap, catalog.EV_SOURCE_LOST)
    finally:
        tap.stop()
    assert lost["input"] == 1 and lost["time_ms"] == pytest.approx(onset * 1000, abs=3)
    assert transfer["input"] == 2
    dark_ms = supply_gap_s(plant, onset) * 1000
    assert 10 < dark_ms < 60
    assert transfer["value"] == pytest.approx(dark_ms, abs=2), f"the rack was dark {dark_ms:.1f} ms"


def test_overload_trip_logs_the_current_and_a_dead_relay_a_mismatch(tmp_path: Path, mpy_tree: Path) -> None:
    plant = Plant([Source(230), Source(230, phase_deg=-120)], Load(i_rms=10, steps=[(1.5, 38.0)]), [HONGFA_HFE20] * 2)
    plant.relays[1].dead = True
    tap = SimTap(tmp_path, plant).start(mpy_tree)
    try:
        _wait_healthy(tap)
        assert tap.ask(tap.signed("SET_LIMITS", LIMITS)).type == catalog.T_ACK
        assert tap.ask(tap.signed("SWITCH", {"expected_input": 1, "target_input": 2})).type == catalog.T_ACK
        (mismatch,) = _events(tap, catalog.EV_RELAY_MISMATCH)
        tap.wait_active(1)  # back on input 1, which was still healthy
        (trip,) = _events(tap, catalog.EV_OVERLOAD_TRIP)
        assert tap.ask(tap.plain("STATUS")).fields()["protection"] == catalog.PROT_TRIPPED
        log = tap.ask(tap.plain("READ_EVENTS", {"since": 0, "max_count": 30})).fields()["events"]
    finally:
        tap.stop()
    assert mismatch["input"] == 2 and mismatch["value"] == 0b10  # the relay that did not follow its command
    assert trip["input"] == 1 and trip["value"] == pytest.approx(38_000, rel=0.02)
    # the host's SWITCH is an EV_COMMAND; EV_TRANSFER is for the transfers the tap makes by itself
    assert [e["code"] for e in log].count(catalog.EV_COMMAND) == 1
    assert catalog.EV_TRANSFER not in [e["code"] for e in log]


# -- signing of refusals, and a frame that stopped the firmware ---------------------------------------


def test_refusals_before_the_tag_checks_out_are_unsigned_after_it_signed(tmp_path: Path, mpy_tree: Path) -> None:
    tap = SimTap(tmp_path).start(mpy_tree)
    try:
        forged = tap.ask(tap.signed("SET_ALTERNATES", ALTERNATES, key=bytes(32)))
        assert forged.fields()["error"] == catalog.E_BAD_TAG and forged.auth is None
        assert tap.ask(tap.signed("SET_ALTERNATES", ALTERNATES)).type == catalog.T_ACK
        tap.counter -= 5
        replay = tap.ask(tap.signed("SET_ALTERNATES", ALTERNATES))
        assert replay.fields()["error"] == catalog.E_REPLAY and messages.verify(replay, KEY)
        assert replay.auth is not None and replay.auth.counter == tap.counter
    finally:
        tap.stop()


def test_an_unknown_type_with_the_auth_flag_is_refused_not_fatal(tmp_path: Path, mpy_tree: Path) -> None:
    tap = SimTap(tmp_path).start(mpy_tree)
    try:
        body = bytes([catalog.VERSION, ADDRESS, catalog.ADDR_HOST, 0x7E, catalog.FLAG_AUTH, 9, 0]) + bytes(24)
        refused = tap.ask(body).fields()
        assert refused["error"] == catalog.E_UNKNOWN_TYPE and refused["detail"] == 0x7E
        assert tap.ask(tap.plain("IDENTIFY")).fields()["address"] == ADDRESS  # still running
    finally:
        tap.stop()


# -- the duplicate cache holds accepted commands only -------------------------------------------------


def test_replayed_old_frames_do_not_push_a_genuine_answer_out_of_the_cache(tap: SimTap) -> None:
    _wait_healthy(tap)
    # frames an eavesdropper captured, each accepted once...
    captured = [tap.signed("SET_ALTERNATES", ALTERNATES) for _ in range(4)]
    for frame in captured:
        assert tap.ask(frame).type == catalog.T_ACK
    # ... pushed out of the cache by later commands, the last of them a SWITCH
    for _ in range(3):
        assert tap.ask(tap.signed("SET_ALTERNATES", ALTERNATES)).type == catalog.T_ACK
    switch = tap.signed("SWITCH", {"expected_input": 1, "target_input": 2})
    ack = tap.ask(switch)
    assert ack.type == catalog.T_ACK
    tap.wait_active(2)
    for frame in captured:  # replayed: each refused, signed, with the last accepted counter as it is now
        refused = tap.ask(frame)
        assert refused.fields() == {"request_type": catalog.T_SET_ALTERNATES, "error": catalog.E_REPLAY,
                                    "detail": tap.counter}
        assert messages.verify(refused, KEY) and not refused.flags & catalog.FLAG_CACHED
    retry = tap.ask(switch, bus=1)  # the host's byte-identical retry of its SWITCH
    assert retry.type == catalog.T_ACK and retry.flags & catalog.FLAG_CACHED and retry.payload == ack.payload
    assert messages.verify(retry, KEY)
    assert sum(1 for _, _, closed in tap.plant.commands if closed) == 1  # executed once


def test_raise_epoch_and_short_bodies_refused_with_the_tables_detail(tap: SimTap) -> None:
    mismatched = tap.signed("RAISE_EPOCH", {"new_epoch": EPOCH + 2}, epoch=EPOCH + 1)
    refused = tap.ask(mismatched)
    # after the raise and counter checks: the counter is spent, the answer signed and cached
    assert refused.fields() == {"request_type": catalog.T_RAISE_EPOCH, "error": catalog.E_OUT_OF_RANGE,
                                "detail": 1}
    assert messages.verify(refused, KEY)
    again = tap.ask(mismatched, bus=1)
    assert again.flags & catalog.FLAG_CACHED and again.payload == refused.payload
    status = tap.ask(tap.plain("STATUS")).fields()
    assert status["epoch"] == EPOCH and status["auth_counter"] == tap.counter
    # a stale raise that also mismatches: STALE_EPOCH comes first, and nothing is consumed
    stale = tap.ask(tap.signed("RAISE_EPOCH", {"new_epoch": EPOCH + 5}, epoch=EPOCH)).fields()
    assert stale["error"] == catalog.E_STALE_EPOCH and stale["detail"] == EPOCH
    assert tap.ask(tap.plain("STATUS")).fields()["auth_counter"] == tap.counter - 1
    # a signed SWITCH too short to hold a trailer: the expected payload length, unsigned
    short = bytes([catalog.VERSION, ADDRESS, catalog.ADDR_HOST, catalog.T_SWITCH, catalog.FLAG_AUTH, 9, 0, 1, 2])
    answer = tap.ask(short)
    assert answer.fields()["error"] == catalog.E_BAD_LENGTH and answer.fields()["detail"] == 2
    assert answer.auth is None


# -- HOST_LOST is the loss of a host that was there ---------------------------------------------------


def _until_uptime(tap: SimTap, seconds: int) -> dict[str, Any]:
    """Poll with reads only (no sign of life) until the tap's uptime reaches `seconds`."""
    deadline = time.monotonic() + 120
    while True:
        telemetry = tap.ask(tap.plain("TELEMETRY")).fields()
        if telemetry["uptime_s"] >= seconds:
            return telemetry
        assert time.monotonic() < deadline, "the tap's clock stood still"
        time.sleep(0.02)


def test_host_lost_rises_only_after_a_host_was_there_and_reads_are_no_sign_of_life(tap: SimTap) -> None:
    first = _until_uptime(tap, catalog.HOST_TIMEOUT_S + 2)  # polled all along, never a heartbeat
    assert not first["alarms"] & catalog.ALARM_HOST_LOST
    status = tap.ask(tap.plain("STATUS")).fields()
    assert status["host_silent_s"] >= catalog.HOST_TIMEOUT_S + 1  # counted from boot
    beat = tap.ask(tap.plain("HEARTBEAT", {"epoch": EPOCH})).fields()
    assert tap.ask(tap.plain("STATUS")).fields()["host_silent_s"] <= 1
    # another epoch's heartbeat and reads keep nothing alive: the alarm rises
    tap.ask(tap.plain("HEARTBEAT", {"epoch": EPOCH + 1}))
    lost = _until_uptime(tap, beat["uptime_s"] + catalog.HOST_TIMEOUT_S + 2)
    assert lost["alarms"] & catalog.ALARM_HOST_LOST
    events = tap.ask(tap.plain("READ_EVENTS", {"since": 0, "max_count": 30})).fields()["events"]
    boot, host_lost = events[0], [e for e in events if e["code"] == catalog.EV_HOST_LOST]
    # booted holding input 1, its configuration record intact
    assert boot["code"] == catalog.EV_BOOT and boot["input"] == 1 and boot["value"] == 0
    assert len(host_lost) == 1 and host_lost[0]["input"] == 1 and host_lost[0]["value"] == 0
    assert host_lost[0]["time_ms"] > (beat["uptime_s"] + catalog.HOST_TIMEOUT_S) * 1000
    # a signed command in the tap's epoch is a sign of life: the alarm clears
    assert tap.ask(tap.signed("SET_ALTERNATES", ALTERNATES)).type == catalog.T_ACK
    assert not tap.ask(tap.plain("STATUS")).fields()["alarms"] & catalog.ALARM_HOST_LOST


# -- TELEMETRY: the state and the values of one window -------------------------------------------------


def test_values_from_a_window_across_a_source_loss_are_flagged_settling(tmp_path: Path, mpy_tree: Path) -> None:
    plant = Plant([Source(230, lost_at_s=1.5), Source(230, phase_deg=-120)], Load(i_rms=16), [HONGFA_HFE20] * 2)
    tap = SimTap(tmp_path, plant).start(mpy_tree)
    try:
        _wait_healthy(tap)
        readings = []
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            state_and_volts = tap.ask(tap.plain("TELEMETRY")).fields()["inputs"][0]
            readings.append((state_and_volts["state"], state_and_volts["voltage_mV"]))
            if not state_and_volts["state"] & (catalog.INPUT_PRESENT | catalog.INPUT_SETTLING):
                break
    finally:
        tap.stop()
    after = [(state, mV) for state, mV in readings if not state & catalog.INPUT_PRESENT]
    assert after, "the loss was never seen"
    assert after[0][0] & catalog.INPUT_SETTLING, "the first reading after the loss is not flagged"
    # absent with a voltage of a live source only ever comes flagged, and the flag clears on a dead reading
    assert all(state & catalog.INPUT_SETTLING for state, mV in after if mV > 10_000)
    assert not after[-1][0] & catalog.INPUT_SETTLING and after[-1][1] < 1_000
    assert all(state & catalog.INPUT_SETTLING == 0 for state, _ in readings if state & catalog.INPUT_PRESENT)


# -- capture details -----------------------------------------------------------------------------------


def test_capture_refusals_name_the_field_and_the_capture_held(tap: SimTap) -> None:
    none_held = tap.ask(tap.plain("CAPTURE_INFO", {"capture_id": 7})).fields()
    assert none_held["error"] == catalog.E_NO_CAPTURE and none_held["detail"] == catalog.NO_CAPTURE_HELD
    read = tap.ask(tap.plain("CAPTURE_READ", {"capture_id": 7, "offset": 0, "length": 255})).fields()
    assert read["error"] == catalog.E_NO_CAPTURE and read["detail"] == catalog.NO_CAPTURE_HELD
    bad_trigger = tap.ask(tap.plain("CAPTURE_START", {"capture_id": 7, "trigger": 5, "cycles": 2})).fields()
    assert bad_trigger["error"] == catalog.E_OUT_OF_RANGE and bad_trigger["detail"] == 2
    too_long = tap.ask(tap.plain("CAPTURE_START", {"capture_id": 7, "trigger": 0, "cycles": 0})).fields()
    assert too_long["error"] == catalog.E_OUT_OF_RANGE and too_long["detail"] == 3
    assert tap.ask(tap.plain("CAPTURE_START", {"capture_id": 7, "trigger": 0, "cycles": 2})).type != catalog.T_NAK
    other = tap.ask(tap.plain("CAPTURE_INFO", {"capture_id": 8})).fields()
    assert other["error"] == catalog.E_NO_CAPTURE and other["detail"] == 7


def test_field_refusals_name_the_field_and_a_wrong_length_spends_its_counter(tap: SimTap) -> None:
    _wait_healthy(tap)
    address = tap.ask(tap.signed("ASSIGN_ADDRESS", {"unique_id": UNIQUE_ID, "address": 250})).fields()
    assert address["error"] == catalog.E_OUT_OF_RANGE and address["detail"] == 2
    target = tap.ask(tap.signed("SWITCH", {"expected_input": 1, "target_input": 3})).fields()
    assert target["error"] == catalog.E_OUT_OF_RANGE and target["detail"] == 2
    tap.counter += 1
    short = messages.sign(messages.Frame(ADDRESS, 0, catalog.T_SWITCH, tap.next_seq(), b"\x01"), KEY, EPOCH,
                          tap.counter)
    refused = tap.ask(short)
    assert refused.fields()["error"] == catalog.E_BAD_LENGTH and refused.fields()["detail"] == 2
    assert messages.verify(refused, KEY)  # the tag checked out: signed
    assert tap.ask(tap.plain("STATUS")).fields()["auth_counter"] == tap.counter  # spent
    retry = tap.ask(short, bus=1)
    assert retry.flags & catalog.FLAG_CACHED and retry.payload == refused.payload
