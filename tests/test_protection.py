"""Local protection of the sim board (firmware compiled, on MicroPython, in lockstep
with the plant): loss of source swept over the whole cycle, no false transfers, a
downstream fault blocks the transfer, a fault above the breaking capacity locks out
and opens only once cleared, an overload trips after the IEC curve and stays open."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from host.sim.rig.plant import Load, Source
from protocol import catalog
from tests import int_guard
from tests.conftest import micropython_runner
from tests.protection_rig import FS, HONGFA_HFE20, TE_T92, Scenario, run, supply_gap_s

ONSET_S = 0.6  # after the meter's first windows, so the alternates are known healthy
CYCLE_S = 0.02


def _detection_budget_s(scenario: Scenario) -> float:
    return scenario.loss_persist / FS + 2e-3  # persistence, plus a block of latency each way


@pytest.mark.parametrize("relay", [TE_T92, HONGFA_HFE20], ids=["TE T92", "Hongfa HFE20"])
def test_loss_of_source_swept_over_the_cycle(micropython, tmp_path: Path, relay) -> None:
    gaps = []
    for degrees in range(0, 360, 30):
        onset = ONSET_S + degrees / 360 * CYCLE_S
        scenario = Scenario([Source(230, lost_at_s=onset), Source(230, phase_deg=-120)], Load(i_rms=16), relay, 0.75)
        result, plant = run(micropython, tmp_path, scenario)
        assert result["active"] == 2 and result["transfers"] == 1, f"onset at {degrees} deg"
        assert plant.parallel_events == []
        opened_at = next(us for us, k, closed in plant.commands if k == 1 and not closed) / 1e6
        assert opened_at - onset <= _detection_budget_s(scenario), f"detection at {degrees} deg"
        gap = supply_gap_s(plant, onset)
        budget = _detection_budget_s(scenario) + (relay.release_us + relay.operate_us + relay.bounce_us) / 1e6 + 2e-3
        assert gap <= budget, f"{gap * 1000:.1f} ms at {degrees} deg against {budget * 1000:.1f} ms"
        gaps.append(gap)
    # recorded for the team: with these relays the 20 ms ride-through is NOT met (boards/PARTS.md)
    print(f"\n{relay}: gap worst {max(gaps) * 1000:.1f} ms, median {statistics.median(gaps) * 1000:.1f} ms")


@pytest.mark.parametrize(
    "source",
    [
        Source(230, harmonics={3: 0.04, 5: 0.03}),  # 5% THD
        Source(230, harmonics={5: 0.05}, notches=(6, 5.0, 0.2)),  # notches at IEEE 519 general-system depth
        Source(230, sags=[(0.5, 0.8, 0.9), (1.0, 1.3, 1.1)]),  # -10% and +10% steps
    ],
    ids=["5% THD", "commutation notches", "+-10% steps"],
)
def test_no_false_transfers(micropython, tmp_path: Path, source: Source) -> None:
    scenario = Scenario([source, Source(230, phase_deg=-120)], Load(i_rms=16), HONGFA_HFE20, 1.5)
    result, plant = run(micropython, tmp_path, scenario)
    assert result["transfers"] == 0 and result["active"] == 1
    assert plant.commands == []


def test_downstream_fault_blocks_the_transfer(micropython, tmp_path: Path) -> None:
    # a short on the rack side draws 300 A; the upstream breaker clears it 8 ms later
    fault_at = 0.6
    scenario = Scenario(
        [Source(230, lost_at_s=fault_at + 0.008), Source(230, phase_deg=-120)],
        Load(i_rms=16, fault=(fault_at, 1.0, 300.0)),
        HONGFA_HFE20,
        0.8,
        settings={"instantaneous_mA": 100_000},
    )
    result, plant = run(micropython, tmp_path, scenario)
    assert result["protection"] == catalog.PROT_DOWNSTREAM_FAULT
    assert result["transfers"] == 0 and result["blocked"] == 1
    assert not any(k == 2 and closed for _, k, closed in plant.commands), "the short was moved onto input 2"


def test_fault_above_breaking_capacity_locks_out_and_opens_once_cleared(micropython, tmp_path: Path) -> None:
    # 60 A through a relay rated to break 40 A: the overload operates while the current
    # is above what the relay may break, so nothing opens until the fault has gone
    settings = {"curve": catalog.CURVE_VERY_INVERSE, "tms_milli": 50}
    scenario = Scenario(
        [Source(230), Source(230, phase_deg=-120)],
        Load(i_rms=16, fault=(0.5, 1.5, 60.0)),
        HONGFA_HFE20,
        1.8,
        settings=settings,
    )
    result, plant = run(micropython, tmp_path, scenario)
    assert result["protection"] == catalog.PROT_LOCKOUT and result["active"] == 0
    opened = [us / 1e6 for us, k, closed in plant.commands if k == 1 and not closed]
    assert len(opened) == 1 and opened[0] >= 1.5, "opened while the fault current flowed"
    assert result["transfers"] == 0


def test_overload_trips_after_the_curve_and_stays_open(micropython, tmp_path: Path) -> None:
    step_at = 0.5
    settings = {"curve": catalog.CURVE_VERY_INVERSE, "tms_milli": 100, "pickup_mA": 20_000}
    scenario = Scenario(
        [Source(230), Source(230, phase_deg=-120)],
        Load(i_rms=10, steps=[(step_at, 38.0)]),
        HONGFA_HFE20,
        2.5,
        settings=settings,
    )
    result, plant = run(micropython, tmp_path, scenario)
    assert result["protection"] == catalog.PROT_TRIPPED and result["active"] == 0 and result["trips"] == 1
    expected = 0.1 * 13.5 / (38 / 20 - 1)
    opened = next(us for us, k, closed in plant.commands if k == 1 and not closed) / 1e6
    assert abs((opened - step_at) - expected) <= max(0.05 * expected, CYCLE_S) + 0.002
    assert not any(closed for _, _, closed in plant.commands), "reclosed after an overload trip"


def test_no_intermediate_reaches_2_to_the_30_in_protection(tmp_path: Path) -> None:
    # full-scale voltages, a fault current at the ADC's limit, an overload and a loss
    modules = ("protection.py", "loss.py", "overload.py", "relays.py", "measure.py", "fixedpoint.py")
    guarded = micropython_runner(int_guard.guarded_tree(tmp_path / "guarded", modules))
    scenario = Scenario(
        [Source(282, lost_at_s=0.9), Source(282, phase_deg=-120, harmonics={3: 0.3})],
        Load(i_rms=16, fault=(0.5, 0.7, 320.0), steps=[(0.75, 40.0)]),
        HONGFA_HFE20,
        1.2,
        settings={"instantaneous_mA": 100_000, "tms_milli": 50},
    )
    result, _ = run(guarded, tmp_path, scenario)
    assert result["trips"] + result["blocked"] + result["transfers"] >= 1


def test_chatter_stops_automatic_transfers_on_the_last_good_source(micropython, tmp_path: Path) -> None:
    # two sources that fail in turn, each back soon after: the third transfer in a minute is refused
    flapping = [
        Source(230, lost_at_s=0.6, restored_at_s=0.75),
        Source(230, phase_deg=-120, lost_at_s=1.2, restored_at_s=1.35),
    ]
    flapping[0].sags.append((1.8, 1.95, 0.0))
    scenario = Scenario(flapping, Load(i_rms=10), HONGFA_HFE20, 2.2, board_settings={"max_transfers_per_minute": 2})
    result, plant = run(micropython, tmp_path, scenario)
    assert result["transfers"] == 2 and result["blocked"] == 1
    assert result["protection"] == catalog.PROT_CHATTER and result["active"] == 1
    assert plant.parallel_events == []


@pytest.mark.parametrize(("seconds_high", "transfers"), [(0.3, 0), (1.5, 1)])
def test_over_voltage_moves_the_rack_only_after_the_delay(
    micropython, tmp_path: Path, seconds_high: float, transfers: int
) -> None:
    high = Source(230, sags=[(0.6, 0.6 + seconds_high, 270 / 230)])
    scenario = Scenario([high, Source(230, phase_deg=-120)], Load(i_rms=10), HONGFA_HFE20, 2.4)
    result, plant = run(micropython, tmp_path, scenario)
    assert result["transfers"] == transfers
    if transfers:
        moved = next(us for us, k, closed in plant.commands if k == 1 and not closed) / 1e6
        assert 0.6 + 0.5 <= moved <= 0.6 + 0.5 + 0.45  # the delay, plus up to two 200 ms windows


@pytest.mark.parametrize(("host_present", "returns"), [(False, True), (True, False)])
def test_return_to_the_preferred_source_only_without_a_host(
    micropython, tmp_path: Path, host_present: bool, returns: bool
) -> None:
    scenario = Scenario(
        [Source(230, lost_at_s=0.6, restored_at_s=0.8), Source(230, phase_deg=-120)],
        Load(i_rms=10),
        HONGFA_HFE20,
        2.6,
        preferred=1,
        host_present=host_present,
        # locked 120 degrees apart, the phase window never comes: go after waiting 300 ms
        board_settings={"return_delay_s": 1, "min_dwell_s": 1, "phase_wait_ms": 300},
    )
    result, plant = run(micropython, tmp_path, scenario)
    assert result["active"] == (1 if returns else 2)
    assert result["transfers"] == (2 if returns else 1)
    if returns:
        back = [us / 1e6 for us, k, closed in plant.commands if k == 1 and closed]
        assert back and back[-1] >= 0.8 + 1.0 + 0.3
    assert plant.parallel_events == []


def test_measure_protect_and_switch_allocate_nothing_per_block(micropython, tmp_path: Path) -> None:
    # a loss, a transfer and an overload pickup: every path of the block, with the gc watching
    scenario = Scenario(
        [Source(230, lost_at_s=0.6, harmonics={3: 0.04}), Source(230, phase_deg=-120)],
        Load(i_rms=36, harmonics={3: 0.3}),
        HONGFA_HFE20,
        1.0,
    )
    result, _ = run(micropython, tmp_path, scenario)
    assert result["transfers"] == 1
    assert result["measured_blocks"] == 900
    assert result["allocated"] == 0, f"{result['allocated']} bytes over {result['measured_blocks']} blocks"


def test_delayed_transfers_wait_for_the_minimum_dwell(micropython, tmp_path: Path) -> None:
    # input 2 goes over-voltage 0.1 s after the rack was moved onto it: with a 1 s dwell
    # the tap stays until the dwell is over, then leaves (input 1 is back by then)
    scenario = Scenario(
        [Source(230, lost_at_s=0.6, restored_at_s=0.7), Source(230, phase_deg=-120, sags=[(0.7, 3.0, 270 / 230)])],
        Load(i_rms=10),
        HONGFA_HFE20,
        2.2,
        board_settings={"min_dwell_s": 1},
    )
    result, plant = run(micropython, tmp_path, scenario)
    assert result["transfers"] == 2 and result["active"] == 1
    second = [us / 1e6 for us, k, closed in plant.commands if k == 2 and not closed]
    assert second and second[0] >= 0.6 + 1.0
