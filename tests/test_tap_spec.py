"""Where the tap once departed from SPEC.md: SET_LIMITS against the board's ratings and
the defaults derived from them, the events the SPEC lists (source lost, the transfer
with its dark time, overload trip with its current, relay mismatch), which refusals of
a signed command are signed, and a frame that used to stop the firmware. Run on the
compiled firmware on MicroPython (tests/tap_rig.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from host import flash_records, messages
from host.plant import Load, Plant, Source
from protocol import catalog
from tests.protection_rig import HONGFA_HFE20, supply_gap_s
from tests.tap_rig import ADDRESS, EPOCH, KEY, PATIENCE_S, SIM_BOARD, SimTap

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
    assert limits["pickup_mA"] == 32_000  # 80% of the weaker of relay and fuse, as host/operate.py's defaults


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
