"""SET_CALIBRATION and READ_SETTINGS on the compiled firmware on MicroPython (tests/tap_rig.py):
a gain scales what the tap measures, an offset adds counts to the RMS, values out of range
are refused with nothing changed, the calibration survives a reset, READ_SETTINGS answers
what is in force, and UNCALIBRATED follows SPEC.md."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from host.ops import flash_records
from host.wire import messages
from protocol import catalog
from tests.tap_rig import ADDRESS, EPOCH, KEY, PATIENCE_S, SIM_BOARD, SimTap
from tests.test_tap_spec import LIMITS

VOLTS = catalog.CHANNEL_INPUT_VOLTAGE
AMPS = catalog.CHANNEL_OUTPUT_CURRENT
NOMINAL = catalog.CAL_GAIN_NOMINAL_PPM


def _calibration(kind: int, index: int, gain_ppm: int, offset_counts: int = 0) -> dict[str, int]:
    return {"kind": kind, "index": index, "gain_ppm": gain_ppm, "offset_counts": offset_counts}


def _settings(tap: SimTap) -> dict[str, Any]:
    return tap.ask(tap.plain("READ_SETTINGS")).fields()


def _settled(tap: SimTap) -> None:
    """Until the tap's clock has run at least a second: five new meter windows."""
    start = tap.ask(tap.plain("TELEMETRY")).fields()["uptime_s"]
    deadline = time.monotonic() + PATIENCE_S
    while tap.ask(tap.plain("TELEMETRY")).fields()["uptime_s"] < start + 2:
        assert time.monotonic() < deadline, "the tap's clock stood still"
        time.sleep(0.05)


# The meter's windows differ by a few counts (3 counts, 146 mV, on the sim board's input 1):
# readings are compared within JITTER_MV, far below what the calibrations change.
JITTER_MV = 350


def _readings(tap: SimTap, reads: int = 8) -> dict[str, float]:
    """Mean voltage of each input and current, in mV and mA, over TELEMETRY reads of several windows."""
    samples = []
    for _ in range(reads):
        samples.append(tap.ask(tap.plain("TELEMETRY")).fields())
        time.sleep(0.1)
    assert all(i["state"] & catalog.INPUT_HEALTHY for s in samples for i in s["inputs"]), samples[-1]
    out = {f"input{k + 1}": float(np.mean([s["inputs"][k]["voltage_mV"] for s in samples]))
           for k in range(len(samples[0]["inputs"]))}
    out["current"] = float(np.mean([s["current_mA"] for s in samples]))
    return out


def _wait_healthy(tap: SimTap) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        fields = tap.ask(tap.plain("TELEMETRY")).fields()
        if fields["current_mA"] and all(i["state"] & catalog.INPUT_HEALTHY for i in fields["inputs"]):
            return
        assert time.monotonic() < deadline, "the inputs never measured healthy"


def test_gain_and_offset_change_the_readings_and_survive_a_reset(tmp_path: Path, mpy_tree: Path) -> None:
    tap = SimTap(tmp_path).start(mpy_tree)
    try:
        _wait_healthy(tap)
        _settled(tap)
        fresh = _settings(tap)
        assert [(c["kind"], c["index"], c["gain_ppm"], c["offset_counts"], c["state"]) for c in fresh["channels"]] == [
            (VOLTS, 1, NOMINAL, 0, 0), (VOLTS, 2, NOMINAL, 0, 0), (AMPS, 0, NOMINAL, 0, 0)]
        assert tap.ask(tap.plain("STATUS")).fields()["alarms"] & catalog.ALARM_UNCALIBRATED  # never calibrated
        crc = tap.ask(tap.plain("STATUS")).fields()["config_crc"]
        before = _readings(tap)
        sets = [_calibration(VOLTS, 1, 1_030_000), _calibration(VOLTS, 2, NOMINAL, 10),
                _calibration(AMPS, 0, 980_000)]
        for fields in sets:
            answer = tap.ask(tap.signed("SET_CALIBRATION", fields))
            assert answer.type == catalog.T_ACK and messages.verify(answer, KEY), answer.fields()
        status = tap.ask(tap.plain("STATUS")).fields()
        assert not status["alarms"] & catalog.ALARM_UNCALIBRATED  # every channel calibrated now
        assert status["config_crc"] != crc  # config_crc covers the calibration
        _settled(tap)
        after = _readings(tap)
        # the gain scales the reading; the offset adds counts to the RMS
        assert after["input1"] - before["input1"] == pytest.approx(before["input1"] * 0.03, abs=JITTER_MV)
        assert after["input2"] - before["input2"] == pytest.approx(10 * SIM_BOARD["mV_per_count"], abs=JITTER_MV)
        assert after["current"] == pytest.approx(before["current"] * 0.98, rel=2e-3)
        settings = _settings(tap)
        assert [(c["gain_ppm"], c["offset_counts"], c["state"]) for c in settings["channels"]] == [
            (1_030_000, 0, catalog.CAL_SET), (NOMINAL, 10, catalog.CAL_SET), (980_000, 0, catalog.CAL_SET)]
        # the capture's scale carries the gain
        capture = tap.ask(tap.plain("CAPTURE_START", {"capture_id": 5, "trigger": 0, "cycles": 1})).fields()
        scales = [c["scale_nu"] for c in capture["channels"]]
        assert scales[0] == pytest.approx(SIM_BOARD["mV_per_count"] * 1.03e6, abs=1)
        assert scales[1] == pytest.approx(SIM_BOARD["mV_per_count"] * 1e6, abs=1)
        assert scales[2] == pytest.approx(SIM_BOARD["mA_per_count"] * 0.98e6, abs=1)
        crc = status["config_crc"]
        # a reset: the calibration was persisted, and is in force again
        assert tap.ask(tap.signed("RESET", {"mode": 0})).type == catalog.T_ACK
        time.sleep(0.3)
        assert _settings(tap) == settings
        assert tap.ask(tap.plain("STATUS")).fields()["config_crc"] == crc
        _wait_healthy(tap)
        _settled(tap)
        again = _readings(tap)
        assert again["input1"] == pytest.approx(after["input1"], abs=JITTER_MV)
        assert again["input2"] == pytest.approx(after["input2"], abs=JITTER_MV)
    finally:
        tap.stop()


def test_out_of_range_is_refused_with_nothing_changed_and_settings_read_back(tmp_path: Path, mpy_tree: Path) -> None:
    tap = SimTap(tmp_path).start(mpy_tree)
    try:
        assert tap.ask(tap.signed("SET_LIMITS", LIMITS)).type == catalog.T_ACK
        assert tap.ask(tap.signed("SET_CALIBRATION", _calibration(VOLTS, 2, 1_012_345, -7))).type == catalog.T_ACK
        settings = _settings(tap)
        assert {name: settings[name] for name in LIMITS} == LIMITS
        assert settings["n_channels"] == 3 and settings["channels"][1] == _calibration(VOLTS, 2, 1_012_345, -7) | {
            "state": catalog.CAL_SET}
        crc = tap.ask(tap.plain("STATUS")).fields()["config_crc"]
        refused = {
            "no such kind": (_calibration(2, 1, NOMINAL), 1),
            "no input 3": (_calibration(VOLTS, 3, NOMINAL), 2),
            "no input 0": (_calibration(VOLTS, 0, NOMINAL), 2),
            "the current is index 0": (_calibration(AMPS, 1, NOMINAL), 2),
            "gain just below -5%": (_calibration(VOLTS, 1, catalog.CAL_GAIN_MIN_PPM - 1), 3),
            "gain just above +5%": (_calibration(AMPS, 0, catalog.CAL_GAIN_MAX_PPM + 1), 3),
            "offset too large": (_calibration(VOLTS, 2, NOMINAL, catalog.CAL_OFFSET_MAX_COUNTS + 1), 4),
            "offset too negative": (_calibration(VOLTS, 2, NOMINAL, -catalog.CAL_OFFSET_MAX_COUNTS - 1), 4),
        }
        for why, (fields, position) in refused.items():
            answer = tap.ask(tap.signed("SET_CALIBRATION", fields))
            assert answer.type == catalog.T_NAK, why
            nak = answer.fields()
            assert (nak["error"], nak["detail"]) == (catalog.E_OUT_OF_RANGE, position), why
            assert messages.verify(answer, KEY), why  # refused after the tag checked out: signed
        assert _settings(tap) == settings  # nothing changed
        assert tap.ask(tap.plain("STATUS")).fields()["config_crc"] == crc
        # the edges of the ranges are accepted
        for fields in (_calibration(VOLTS, 1, catalog.CAL_GAIN_MIN_PPM, -catalog.CAL_OFFSET_MAX_COUNTS),
                       _calibration(AMPS, 0, catalog.CAL_GAIN_MAX_PPM, catalog.CAL_OFFSET_MAX_COUNTS)):
            assert tap.ask(tap.signed("SET_CALIBRATION", fields)).type == catalog.T_ACK
        # unsigned, it is refused before anything else
        message = messages.message_named("SET_CALIBRATION")
        payload = messages.encode_payload(message, _calibration(VOLTS, 1, NOMINAL), response=False)
        unsigned = tap.ask(messages.Frame(ADDRESS, catalog.ADDR_HOST, message.type, tap.next_seq(), payload))
        assert unsigned.fields()["error"] == catalog.E_AUTH_REQUIRED
    finally:
        tap.stop()


def test_an_unusable_persisted_calibration_gives_way_to_the_nominal_scale(tmp_path: Path, mpy_tree: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    kept = [[1_200_000, 0], [1_010_000, 3], None]  # input 1 out of range (another firmware's, say)
    flash_records.write_record(flash, "config.json", {"address": ADDRESS, "epoch": EPOCH, "calibration": kept})
    flash_records.write_record(flash, "key.json", {"key": KEY.hex()})
    tap = SimTap(tmp_path).start(mpy_tree)
    try:
        channels = _settings(tap)["channels"]
        assert [(c["gain_ppm"], c["offset_counts"], c["state"]) for c in channels] == [(NOMINAL, 0, 0)] * 3
        assert tap.ask(tap.plain("STATUS")).fields()["alarms"] & catalog.ALARM_UNCALIBRATED
    finally:
        tap.stop()
