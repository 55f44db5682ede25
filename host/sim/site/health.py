"""Health signals of the simulated sources, as a monitor-role tap would report them:
temperature, vibration RMS, kurtosis, crest factor, DC ripple and THD.

Each kind of source has a healthy baseline that follows its load (smoothed by the
simulator: thermal lag) and the daily swing of the ambient temperature, plus Gaussian
noise; conditions (conditions.py) add their trends, steps and dropouts. A pure
function of time, load and conditions; its noise comes from a generator seeded by the
simulator per step, so a reading does not disturb the rest of the simulation.
NaN marks a sensor the kind has not got (no vibration on a battery string, no DC
ripple on a generator) or a dropout; `to_signals` turns it into None.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from host.model.arrays import FloatArray
from host.model.fleet import HealthSignals
from host.model.site import SourceKind
from host.sim.site.conditions import Condition, Family

SIGNALS = tuple(field.name for field in dataclasses.fields(HealthSignals))
TEMPERATURE, VIBRATION, KURTOSIS, CREST, RIPPLE, THD = range(len(SIGNALS))
NO_SENSOR = (math.nan, 0.0, 0.0)
AMBIENT_SWING_C = 2.5  # half the daily swing of the room temperature
AMBIENT_PEAK_S = 15 * 3600.0  # the room is warmest at 15:00

# per kind, per signal: (value with no load, rise at full load, noise standard deviation)
BASELINES: dict[SourceKind, tuple[tuple[float, float, float], ...]] = {
    SourceKind.UPS: ((27.0, 12.0, 0.3), (15.0, 5.0, 1.0), (3.0, 0.0, 0.08), (3.2, 0.0, 0.06), (0.8, 0.6, 0.03),
                     (1.2, 1.8, 0.05)),
    SourceKind.BATTERY: ((24.0, 8.0, 0.2), NO_SENSOR, NO_SENSOR, NO_SENSOR, (0.4, 0.5, 0.03), (1.5, 1.5, 0.05)),
    SourceKind.GENERATOR: ((68.0, 18.0, 0.5), (280.0, 60.0, 10.0), (3.0, 0.0, 0.1), (3.4, 0.0, 0.08), NO_SENSOR,
                           (2.5, 2.5, 0.08)),
}


def baseline(kinds: Sequence[SourceKind], load_fraction: FloatArray, t: float) -> tuple[FloatArray, FloatArray]:
    """Healthy mean of every signal of every source at t, and the noise's standard deviations."""
    table = np.array([BASELINES[kind] for kind in kinds])  # (sources, signals, 3)
    mean = table[:, :, 0] + table[:, :, 1] * np.clip(load_fraction, 0.0, 2.0)[:, None]
    mean[:, TEMPERATURE] += AMBIENT_SWING_C * math.cos(2 * math.pi * (t - AMBIENT_PEAK_S) / 86_400.0)
    return mean, table[:, :, 2]


def _columns(signal: str | None) -> list[int]:
    return list(range(len(SIGNALS))) if signal in (None, "all") else [SIGNALS.index(str(signal))]


def _apply(values: FloatArray, rows: list[int], condition: Condition, t: float, load_fraction: FloatArray) -> None:
    """Add one condition's effect at t to the rows (sources) it concerns, in place."""
    x = condition.progress(t)
    m = condition.strength
    family = condition.family
    if family == Family.THERMAL_DRIFT:
        values[rows, TEMPERATURE] += m * x
    elif family == Family.BEARING_WEAR:  # impacts first (kurtosis, crest factor), then the RMS and heat
        early = min(1.0, 2.0 * x)
        values[rows, KURTOSIS] += 4.0 * m * early
        values[rows, CREST] += 2.5 * m * early
        values[rows, VIBRATION] *= 1.0 + 3.0 * m * x * x
        values[rows, TEMPERATURE] += 4.0 * m * x
    elif family == Family.CAPACITOR_AGEING:  # ESR up, capacitance down: ripple, then THD and heat
        values[rows, RIPPLE] *= 1.0 + 4.0 * m * x
        values[rows, THD] += 2.0 * m * x
        values[rows, TEMPERATURE] += 5.0 * m * x
    elif family == Family.BATTERY_AGEING:  # internal resistance up: ripple, and heat under discharge
        values[rows, RIPPLE] *= 1.0 + 2.0 * m * x
        values[rows, TEMPERATURE] += 15.0 * m * x * load_fraction[rows]
    elif family == Family.HOT_AFTERNOON and condition.within(t):
        values[rows, TEMPERATURE] += m * math.sin(math.pi * x)
    elif family == Family.SENSOR_DROPOUT and condition.within(t):
        for column in _columns(condition.signal):
            values[rows, column] = math.nan
    elif family == Family.RECALIBRATION_JUMP and t >= condition.start_s:
        for column in _columns(condition.signal):
            values[rows, column] += m


def health_signals(
    t: float,
    kinds: Sequence[SourceKind],
    load_fraction: FloatArray,
    conditions: Sequence[Condition],
    source_index: Mapping[str, int],
    rng: np.random.Generator,
) -> FloatArray:
    """Every signal of every source at t, (sources, signals); NaN where there is no reading."""
    mean, sd = baseline(kinds, load_fraction, t)
    values: FloatArray = mean + sd * rng.standard_normal(mean.shape)
    everyone = list(range(len(kinds)))
    for condition in conditions:
        rows = everyone if condition.source is None else [source_index[condition.source]]
        _apply(values, rows, condition, t, load_fraction)
    return values


def to_signals(row: FloatArray) -> HealthSignals:
    readings = [None if math.isnan(v) else float(v) for v in row]
    return HealthSignals(*readings)
