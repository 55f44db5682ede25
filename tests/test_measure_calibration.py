"""The meter calibrated as the tap calibrates it (SPEC.md, SET_CALIBRATION), on MicroPython:
a gain scales a channel's reading and the power, an offset adds counts to the RMS, nothing
is allocated per block, and no intermediate reaches 2**30 at the ends of the ranges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol import catalog
from tests import int_guard
from tests.conftest import json_lines, micropython_runner
from tests.measure_signals import MA_PER_COUNT, MV_PER_COUNT, Wave, write_stream

NOMINAL = catalog.CAL_GAIN_NOMINAL_PPM
MAX_OFFSET = catalog.CAL_OFFSET_MAX_COUNTS


def _run(run, tmp_path: Path, inputs: list[Wave], current: Wave, gains: list[int], offsets: list[int]) -> dict:
    config, samples, _, _ = write_stream(tmp_path, inputs, current, 3.0)
    cfg = json.loads(config.read_text())
    config.write_text(json.dumps(cfg | {"gain_ppm": gains, "rms_offset": offsets}))
    return json_lines(run("meter_calibrated_run.py", str(config), str(samples)))[-1]


def test_gain_and_offset_scale_the_readings_and_the_power(micropython, tmp_path: Path) -> None:
    inputs, current = [Wave(230), Wave(228, phase_deg=-120)], Wave(20, phase_deg=-25)
    nominal = _run(micropython, tmp_path, inputs, current, [NOMINAL] * 3, [0] * 3)
    calibrated = _run(micropython, tmp_path, inputs, current, [1_030_000, 950_000, 1_050_000], [0, 20, -5])
    assert calibrated["allocated"] == 0 and calibrated["blocks"] >= 100  # the sample path stays allocation-free
    v1, v2 = nominal["voltage_mV"]
    assert calibrated["voltage_mV"][0] == pytest.approx(v1 * 1.03, rel=2e-4)
    assert calibrated["voltage_mV"][1] == pytest.approx((v2 + 20 * MV_PER_COUNT) * 0.95, rel=2e-4)
    assert calibrated["current_mA"] == pytest.approx((nominal["current_mA"] - 5 * MA_PER_COUNT) * 1.05, rel=5e-4)
    # input 1 is active: its voltage gain and the current's in the power
    assert calibrated["power_W"] == pytest.approx(nominal["power_W"] * 1.03 * 1.05, rel=2e-3)
    apparent = calibrated["voltage_mV"][0] * calibrated["current_mA"] / 1e6
    assert calibrated["apparent_VA"] == pytest.approx(apparent, rel=2e-3)


WORST = {
    "full scale, clipped, the largest gain and offset": (
        [Wave(400), Wave(400, hz=47)], Wave(400), [catalog.CAL_GAIN_MAX_PPM] * 3, [MAX_OFFSET] * 3),
    "tiny signals (the finest RMS fraction), the largest offset": (
        [Wave(0.2), Wave(0.3)], Wave(0.2), [catalog.CAL_GAIN_MAX_PPM] * 3, [MAX_OFFSET] * 3),
    "small signals at the top of their RMS fraction, the largest offset (the RMS gives up a bit)": (
        [Wave(4.3), Wave(2.2)], Wave(4.8), [catalog.CAL_GAIN_MAX_PPM] * 3, [MAX_OFFSET] * 3),
    "tiny signals, the most negative offset and the smallest gain": (
        [Wave(0.2), Wave(0.3)], Wave(0.2), [catalog.CAL_GAIN_MIN_PPM] * 3, [-MAX_OFFSET] * 3),
}


@pytest.mark.parametrize("case", list(WORST))
def test_calibrated_arithmetic_stays_below_2_to_the_30(case: str, tmp_path: Path) -> None:
    tree = int_guard.guarded_tree(tmp_path / "guarded", ("measure.py", "fixedpoint.py"))
    inputs, current, gains, offsets = WORST[case]
    result = _run(micropython_runner(tree), tmp_path, inputs, current, gains, offsets)
    assert result["output_windows"] > 5 and min(result["voltage_mV"]) >= 0 and result["current_mA"] >= 0
