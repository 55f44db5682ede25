"""The inverse-time overload element on MicroPython (compiled, board heap): operating
time within 5% or one cycle of the IEC 60255-151 formula at I/Is = 2, 5 and 10 for the
three curves and a range of time multipliers; no operation at or below pickup; reset
below the drop-off; integration when the current varies; nothing allocated; no
intermediate beyond a 32-bit small int."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import int_guard
from tests.conftest import json_lines, micropython_runner

CURVES = {1: (0.14, 0.02), 2: (13.5, 1.0), 3: (80.0, 2.0)}
CYCLE_DT = 80  # quarter milliseconds in a 50 Hz cycle
CYCLE_S = 0.02
PICKUP_MA = 32_000


def formula_s(curve: int, m: float, tms: float) -> float:
    a, b = CURVES[curve]
    return tms * a / (m**b - 1)


def _cases() -> list[dict]:
    cases = []
    for curve in CURVES:
        for tms_milli in (50, 100, 500, 1000):
            for m in (2, 5, 10):
                expected = formula_s(curve, m, tms_milli / 1000)
                periods = int(expected / CYCLE_S * 1.2) + 5
                cases.append(
                    {
                        "curve": curve,
                        "pickup_mA": PICKUP_MA,
                        "tms_milli": tms_milli,
                        "m": m,
                        "expected_s": expected,
                        "phases": [[m * PICKUP_MA, CYCLE_DT, periods]],
                    }
                )
    return cases


CASES = _cases()


def _run(runner, tmp_path: Path, cases: list[dict]) -> list[dict]:
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return json_lines(runner("overload_run.py", str(path)))


def test_operating_time_follows_the_iec_curves(micropython, tmp_path: Path) -> None:
    results = _run(micropython, tmp_path, CASES)
    for case, result in zip(CASES, results, strict=True):
        label = f"curve {case['curve']} TMS {case['tms_milli'] / 1000} M {case['m']}"
        assert result["operated_at"] is not None, label
        measured = result["operated_at"] * CYCLE_S
        assert abs(measured - case["expected_s"]) <= max(0.05 * case["expected_s"], CYCLE_S), (
            f"{label}: {measured:.3f} s against {case['expected_s']:.3f} s"
        )
        assert result["allocated"] == 0


def test_no_operation_at_or_below_pickup_and_reset_below_dropoff(micropython, tmp_path: Path) -> None:
    ten_minutes = 30_000
    half_way = int(formula_s(2, 5, 0.1) / CYCLE_S / 2)
    cases = [
        {"curve": 1, "pickup_mA": PICKUP_MA, "tms_milli": 50, "phases": [[PICKUP_MA, CYCLE_DT, ten_minutes]]},
        {"curve": 3, "pickup_mA": PICKUP_MA, "tms_milli": 50, "phases": [[0, CYCLE_DT, 10]]},
        # half way to operating, a dip below the drop-off resets, half way again: no operation
        {
            "curve": 2,
            "pickup_mA": PICKUP_MA,
            "tms_milli": 100,
            "phases": [
                [5 * PICKUP_MA, CYCLE_DT, half_way],
                [int(0.9 * PICKUP_MA), CYCLE_DT, 1],
                [5 * PICKUP_MA, CYCLE_DT, half_way],
            ],
        },
        # the same with a dip that stays above the drop-off: the integral holds, so it operates
        {
            "curve": 2,
            "pickup_mA": PICKUP_MA,
            "tms_milli": 100,
            "phases": [
                [5 * PICKUP_MA, CYCLE_DT, half_way],
                [int(0.97 * PICKUP_MA), CYCLE_DT, 50],
                [5 * PICKUP_MA, CYCLE_DT, half_way + 2],
            ],
        },
    ]
    results = _run(micropython, tmp_path, cases)
    assert [r["operated_at"] is not None for r in results] == [False, False, False, True]


def test_varying_current_integrates_the_rate(micropython, tmp_path: Path) -> None:
    # a quarter of the M=10 time, then M=2 until operating: 1/4 + t2/T(2) = 1
    t10, t2 = formula_s(3, 10, 0.5), formula_s(3, 2, 0.5)
    first = round(t10 / 4 / CYCLE_S)
    case = {
        "curve": 3,
        "pickup_mA": PICKUP_MA,
        "tms_milli": 500,
        "phases": [[10 * PICKUP_MA, CYCLE_DT, first], [2 * PICKUP_MA, CYCLE_DT, int(t2 / CYCLE_S) + 10]],
    }
    (result,) = _run(micropython, tmp_path, [case])
    expected = first * CYCLE_S + (1 - first * CYCLE_S / t10) * t2
    assert abs(result["operated_at"] * CYCLE_S - expected) <= max(0.05 * expected, CYCLE_S)


@pytest.mark.parametrize("tms_milli", [50, 1500])
def test_no_intermediate_reaches_2_to_the_30(tmp_path: Path, tms_milli: int) -> None:
    tree = int_guard.guarded_tree(tmp_path / "guarded", ("overload.py",))
    cases = [
        {"curve": c, "pickup_mA": p, "tms_milli": tms_milli, "phases": [[i, 100, 40], [i // 3, 80, 40]]}
        for c in CURVES
        for p in (100, 32_000, 2_000_000)
        for i in (0, p, 20 * p, 3_000_000, 2**21 - 1)
    ]
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    guarded = micropython_runner(tree)
    assert len(json_lines(guarded("overload_run.py", str(path)))) == len(cases)

