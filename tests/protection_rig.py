"""Runs the sim board's protection against a plant: one MicroPython process in
lockstep with one Plant, as tests/mp/sim_protect.py wires them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.sim.rig.plant import ADC_MAX, AdcScale, Load, Plant, RelaySpec, Source
from host.sim.rig.plant_server import PlantServer
from tests.conftest import json_lines
from tests.measure_signals import MA_PER_COUNT, MV_PER_COUNT, W_PER_COUNT2

FS = 4000
BLOCK = 4  # 1 ms per lockstep exchange
NOMINAL_PEAK_COUNTS = 230 * math.sqrt(2) * ADC_MAX / AdcScale().volts_full_scale

# Relays as documented in boards/PARTS.md (datasheet maxima, microseconds)
TE_T92 = RelaySpec(operate_us=25_000, release_us=25_000, bounce_us=0)  # bounce is inside its 25 ms
HONGFA_HFE20 = RelaySpec(operate_us=15_000, release_us=15_000, bounce_us=2_000)  # bounce not stated: 2 ms assumed


@dataclass
class Scenario:
    sources: list[Source]
    load: Load
    relay: RelaySpec
    seconds: float
    rankings: list[list[int]] = field(default_factory=lambda: [[2, 0, 0], [1, 0, 0]])
    settings: dict[str, int] = field(default_factory=dict)
    board_settings: dict[str, int] = field(default_factory=dict)
    preferred: int = 0
    host_present: bool = True
    breaking_mA: int = 40_000
    loss_persist: int = 4  # samples: 1 ms
    loss_fraction: float = 0.7


def run(micropython: Callable[..., str], tmp_path: Path, scenario: Scenario) -> tuple[dict[str, Any], Plant]:
    plant = Plant(
        scenario.sources, scenario.load, [scenario.relay] * len(scenario.sources), active=1, fs=FS, block=BLOCK
    )
    plant.keep_trace = True
    counts_per_amp = ADC_MAX / AdcScale().amps_full_scale
    config = {
        "inputs": len(scenario.sources),
        "block": BLOCK,
        "fs": FS,
        "steps": int(scenario.seconds * 1000),
        "mV_per_count": MV_PER_COUNT,
        "mA_per_count": MA_PER_COUNT,
        "W_per_count2": W_PER_COUNT2,
        "operate_us": scenario.relay.operate_us,
        "release_us": scenario.relay.release_us,
        "bounce_us": scenario.relay.bounce_us,
        "zero_counts": 20,
        "loss_threshold_counts": int(scenario.loss_fraction * NOMINAL_PEAK_COUNTS),
        "loss_persist": scenario.loss_persist,
        "settings": scenario.settings,
        "counts_per_amp_q8": int(counts_per_amp * 256),
        "breaking_mA": scenario.breaking_mA,
        "rankings": scenario.rankings,
        "preferred": scenario.preferred,
        "host_present": scenario.host_present,
        "board_settings": scenario.board_settings,
    }
    path = tmp_path / "protect.json"
    path.write_text(json.dumps(config))
    server = PlantServer(plant)
    thread = server.start()
    (result,) = json_lines(micropython("sim_protect.py", str(server.port), str(path)))
    thread.join(timeout=10)
    if server.error is not None:
        raise server.error
    return result, plant


def supply_gap_s(plant: Plant, after_s: float) -> float:
    """How long the rack had no live source after after_s: from then to the first
    sample where a source with voltage conducts again."""
    for t, conducting, _, _ in plant.trace:
        if t >= after_s and conducting and plant.sources[conducting - 1].scale(t) > 0:
            return t - after_s
    return math.inf
