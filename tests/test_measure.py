"""Measurement on MicroPython (the firmware compiled by mpy-cross, RP2040-sized heap)
against a numpy reference on synthetic waveforms with harmonics, noise, frequency
deviation and DC offset: RMS within 0.5%, frequency within 0.05 Hz, THD within 0.5
percentage points; no allocation per block; no intermediate at or above 2**30."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests import int_guard
from tests.conftest import json_lines, micropython_runner
from tests.measure_signals import MA_PER_COUNT, MV_PER_COUNT, W_PER_COUNT2, Wave, ac_rms, write_stream

SECONDS = 3.0
CASES = {
    "clean 50 Hz": ([Wave(230), Wave(228, phase_deg=-120)], Wave(20, phase_deg=-25)),
    "5% THD, noise, DC offset, 49.5 Hz": (
        [
            Wave(230, hz=49.5, harmonics={3: 0.04, 5: 0.03}, noise=0.002, dc_counts=60),
            Wave(240, hz=50.2, harmonics={5: 0.02, 7: 0.015}, dc_counts=-40),
        ],
        Wave(32, hz=49.5, phase_deg=-30, harmonics={3: 0.2, 5: 0.1}, noise=0.005),
    ),
    "60 Hz, odd harmonics to the 15th": (
        [
            Wave(120, hz=60, harmonics={3: 0.02, 5: 0.015, 7: 0.01, 9: 0.008, 11: 0.006, 13: 0.005, 15: 0.004}),
            Wave(120, hz=59.7, phase_deg=90),
        ],
        Wave(16, hz=60, phase_deg=10),
    ),
    "light load, 1 A": ([Wave(230), Wave(231)], Wave(1.0, phase_deg=-5)),
    "four inputs, 51 Hz, flat-topped": (
        [
            Wave(230, hz=51, harmonics={3: -0.05, 5: 0.01}),
            Wave(225, hz=51),
            Wave(232, hz=49.8),
            Wave(229, hz=50.1, harmonics={7: 0.03}),
        ],
        Wave(25, hz=51, phase_deg=-40),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_measurement_matches_numpy_reference(case: str, micropython, tmp_path: Path) -> None:
    inputs, current = CASES[case]
    config, samples, volts, amps = write_stream(tmp_path, inputs, current, SECONDS)
    results = json_lines(micropython("meter_run.py", str(config), str(samples)))
    summary = results.pop()
    assert summary["allocated"] == 0, f"{summary['allocated']} bytes allocated over {summary['blocks']} blocks"

    for k, wave in enumerate(inputs, start=1):
        windows = [r for r in results if r.get("input") == k][2:]  # the first windows warm up
        assert len(windows) >= int(SECONDS * wave.hz / 10) - 3
        reference_mV = ac_rms(volts[k - 1]) * MV_PER_COUNT
        for w in windows:
            assert w["voltage_mV"] == pytest.approx(reference_mV, rel=0.005), f"input {k}"
            assert abs(w["frequency_cHz"] - 100 * wave.hz) <= 5, f"input {k}"
        for w in windows[3:]:
            assert abs(w["thd_dpct"] - wave.thd_dpct()) <= 5, f"input {k}: THD {w['thd_dpct']} vs {wave.thd_dpct()}"
        if wave.hz == inputs[0].hz:
            # harmonics shift the zero crossings a little: 0.5 degree of tolerance
            expected = (wave.phase_deg - inputs[0].phase_deg + 180) % 360 - 180
            for w in windows:
                assert abs(w["phase_cdeg"] - 100 * expected) <= 50, f"input {k}: phase {w['phase_cdeg']}"

    outputs = [r for r in results if "output" in r][2:]
    assert outputs
    v = volts[0].astype(float)
    i = amps.astype(float)
    reference_mA = ac_rms(amps) * MA_PER_COUNT
    reference_W = float(np.mean((v - v.mean()) * (i - i.mean()))) * W_PER_COUNT2
    reference_VA = ac_rms(volts[0]) * ac_rms(amps) * W_PER_COUNT2
    for o in outputs:
        assert o["current_mA"] == pytest.approx(reference_mA, rel=0.005)
        assert abs(o["power_W"] - reference_W) <= 0.005 * reference_VA + 1
        assert o["apparent_VA"] == pytest.approx(reference_VA, rel=0.01, abs=1)
        assert abs(o["power_factor_milli"] - 1000 * reference_W / reference_VA) <= 10


def test_lost_input_reads_zero_and_recovers(micropython, tmp_path: Path) -> None:
    inputs = [Wave(230, dropout=(1.0, 2.0)), Wave(230)]
    config, samples, _, _ = write_stream(tmp_path, inputs, Wave(10), 3.0)
    results = json_lines(micropython("meter_run.py", str(config), str(samples)))[:-1]
    first = [r for r in results if r.get("input") == 1]
    assert any(r["voltage_mV"] < 1000 and r["frequency_cHz"] == 0 for r in first), "the dropout was not seen"
    assert first[-1]["voltage_mV"] == pytest.approx(230_000, rel=0.005)
    assert first[-1]["frequency_cHz"] == 5000


# -- the 30-bit guard ------------------------------------------------------------------

WORST_CASES = {
    "full scale, 45 Hz, square-ish, current in phase": (
        [Wave(282, hz=45, harmonics={3: 0.33, 5: 0.2, 7: 0.14, 9: 0.11}, dc_counts=30)] * 2,
        Wave(310, hz=45, harmonics={3: 0.33, 5: 0.2}),
    ),
    "full scale, 65 Hz, current in anti-phase, dropout": (
        [Wave(282, hz=65, harmonics={3: 0.3}), Wave(282, hz=65, dropout=(0.5, 1.2))],
        Wave(318, hz=65, phase_deg=180, dc_counts=-40),
    ),
    "clipped at the rails": ([Wave(400, hz=50), Wave(400, hz=47)], Wave(400, hz=50)),
}


@pytest.mark.parametrize("case", list(WORST_CASES))
def test_no_intermediate_reaches_2_to_the_30(case: str, tmp_path: Path) -> None:
    tree = int_guard.guarded_tree(tmp_path / "guarded", ("measure.py", "fixedpoint.py"))
    assert "_g(" in (tree.parent / "src" / "firmware" / "measure.py").read_text()  # instrumented, then compiled
    inputs, current = WORST_CASES[case]
    config, samples, _, _ = write_stream(tmp_path, inputs, current, 2.0)
    guarded = micropython_runner(tree)
    assert len(json_lines(guarded("meter_run.py", str(config), str(samples)))) > 10



def test_the_guard_catches_a_wide_intermediate() -> None:
    namespace: dict = {}
    exec(int_guard.instrument("def f(x):\n    return x * x\n"), namespace)
    assert namespace["f"](32767) == 32767 * 32767
    with pytest.raises(OverflowError):
        namespace["f"](32768)
    assert math.isclose(namespace["f"](2.5), 6.25)
