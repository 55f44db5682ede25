"""Synthetic mains waveforms for the measurement tests and benchmark: numpy builds
them, quantises them to ADC counts and writes the block stream tests/mp/meter_run.py
reads; the reference values come from the same numbers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FS = 4000
FULL_SCALE_V = 400.0  # volts at 8191 counts
FULL_SCALE_A = 450.0  # amps at 8191 counts
MV_PER_COUNT = FULL_SCALE_V / 8191 * 1000
MA_PER_COUNT = FULL_SCALE_A / 8191 * 1000
W_PER_COUNT2 = (FULL_SCALE_V / 8191) * (FULL_SCALE_A / 8191)


@dataclass
class Wave:
    rms: float  # volts or amps, of the fundamental
    hz: float = 50.0
    phase_deg: float = 0.0
    harmonics: dict[int, float] = field(default_factory=dict)  # order -> amplitude relative to fundamental
    noise: float = 0.0  # RMS of white noise, relative to the fundamental's RMS
    dc_counts: float = 0.0
    dropout: tuple[float, float] | None = None  # seconds: the signal is 0 meanwhile

    def counts(self, seconds: float, per_count: float, rng: np.random.Generator) -> np.ndarray:
        t = np.arange(int(seconds * FS)) / FS
        peak = self.rms * math.sqrt(2) / per_count
        w = 2 * math.pi * self.hz
        phi = math.radians(self.phase_deg)
        x = peak * np.sin(w * t + phi)
        for order, rel in self.harmonics.items():
            x += rel * peak * np.sin(order * (w * t + phi))
        x += rng.normal(0, self.noise * peak / math.sqrt(2), t.size) + self.dc_counts
        if self.dropout:
            x[(t >= self.dropout[0]) & (t < self.dropout[1])] = 0
        return np.clip(np.round(x), -8192, 8191).astype("<i2")

    def thd_dpct(self) -> float:
        return 1000 * math.sqrt(sum(a * a for h, a in self.harmonics.items() if h % 2 and h >= 3))


def write_stream(
    tmp: Path,
    inputs: list[Wave],
    current: Wave,
    seconds: float,
    active: int = 1,
    block: int = 40,
    seed: int = 1,
    hysteresis: int = 200,
) -> tuple[Path, Path, list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    volts = [w.counts(seconds, MV_PER_COUNT / 1000, rng) for w in inputs]
    amps = current.counts(seconds, MA_PER_COUNT / 1000, rng)
    blocks = len(amps) // block
    stream = np.stack([*volts, amps])[:, : blocks * block].reshape(len(inputs) + 1, blocks, block)
    samples = tmp / "samples.bin"
    samples.write_bytes(stream.transpose(1, 0, 2).astype("<i2").tobytes())
    config = tmp / "meter.json"
    config.write_text(
        json.dumps(
            {
                "fs": FS,
                "nominal_hz": 50,
                "block": block,
                "inputs": len(inputs),
                "active": active,
                "offset": 0,
                "mV_per_count": MV_PER_COUNT,
                "mA_per_count": MA_PER_COUNT,
                "W_per_count2": W_PER_COUNT2,
                "hysteresis": hysteresis,
                "warmup_blocks": 2 * FS // block,
            }
        )
    )
    return config, samples, volts, amps


def ac_rms(x: np.ndarray) -> float:
    x = x.astype(float)
    return float(np.sqrt(np.mean((x - x.mean()) ** 2)))
