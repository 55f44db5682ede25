"""The sim board in lockstep with the plant: the firmware (compiled, on MicroPython)
measures what the plant synthesises and moves the plant's relays break-before-make."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.plant import Load, Plant, RelaySpec, Source
from host.plant_server import PlantServer
from tests.conftest import json_lines
from tests.measure_signals import MA_PER_COUNT, MV_PER_COUNT, W_PER_COUNT2

RELAY = RelaySpec(operate_us=6000, release_us=3000, bounce_us=1500)


def _run(micropython, tmp_path: Path, plant: Plant, **overrides: int) -> dict:
    config = {
        "inputs": len(plant.sources),
        "block": plant.block,
        "fs": plant.fs,
        "steps": 1500,
        "request_at_step": 1000,
        "target": 2,
        "fallback": 1,
        "zero_counts": 20,
        "mV_per_count": MV_PER_COUNT,
        "mA_per_count": MA_PER_COUNT,
        "W_per_count2": W_PER_COUNT2,
        "operate_us": RELAY.operate_us,
        "release_us": RELAY.release_us,
        "bounce_us": RELAY.bounce_us,
    } | overrides
    path = tmp_path / "sim.json"
    path.write_text(json.dumps(config))
    server = PlantServer(plant)
    thread = server.start()
    (result,) = json_lines(micropython("sim_transfer.py", str(server.port), str(path)))
    thread.join(timeout=10)
    assert server.error is None
    return result


def test_firmware_measures_the_plant_and_transfers_break_before_make(micropython, tmp_path: Path) -> None:
    plant = Plant(
        [Source(230, phase_deg=0), Source(240, phase_deg=-120, harmonics={3: 0.03})],
        Load(i_rms=16, lag_deg=20),
        [RELAY, RELAY],
        active=1,
    )
    plant.keep_trace = True
    result = _run(micropython, tmp_path, plant)
    assert result["active"] == 2 and result["state"] == 0
    assert plant.relays[1].conducting and not plant.relays[0].conducting
    assert plant.parallel_events == [], "two sources conducted together"
    (v1, f1, _), (v2, f2, thd2) = result["inputs"]
    assert v1 == pytest.approx(230_000, rel=0.005) and v2 == pytest.approx(240_000 * 1.00045, rel=0.005)
    assert f1 == f2 == 5000
    assert abs(thd2 - 30) <= 5
    assert result["current_mA"] == pytest.approx(16_000, rel=0.01)
    # confirmed within release + arc (at most half a cycle) + operate + bounce, plus a block per stage
    assert result["transfer_us"] <= 3000 + 10_000 + 6000 + 1500 + 4 * 1000
    # the rack saw no voltage only between the old contacts' arc and the new ones closing
    gap = [t for t, conducting, _, _ in plant.trace if conducting == 0]
    assert 0 < len(gap) / plant.fs <= (10_000 + 6000 + 1000) / 1e6


def test_a_relay_that_will_not_close_returns_the_rack_to_its_source(micropython, tmp_path: Path) -> None:
    plant = Plant([Source(230), Source(230, phase_deg=-120)], Load(i_rms=8), [RELAY, RELAY], active=1)
    plant.relays[1].dead = True
    result = _run(micropython, tmp_path, plant)
    assert result["active"] == 1 and plant.relays[0].conducting
    assert result["closes"] == [0, 1, 1]
    assert plant.parallel_events == []
