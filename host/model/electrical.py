"""What the taps of the simulated site measure: each rack's current, and each input's
voltage and health. Pure functions of the site's state at one instant.

A source's voltage droops with its load and is zero while it is down. An input sees
its source's voltage, less the drop along its path while it carries the rack's
current (three-phase, balanced: sqrt(3) * I * Z per phase impedance). An input is
present above half the nominal voltage, and healthy within +-10% of it while its
source is up, as the taps' limits define it.
"""

from __future__ import annotations

import math

import numpy as np

from host.model.arrays import BoolArray, FloatArray, IntArray

POWER_FACTOR = 0.95
DROOP = 0.03  # voltage lost at full load
PRESENT_FRACTION = 0.5
TOLERANCE = 0.10


def line_current_a(draw_kw: FloatArray, voltage_v: float, *, power_factor: float = POWER_FACTOR) -> FloatArray:
    """The line current of a balanced three-phase draw at `voltage_v` line-to-line."""
    out: FloatArray = draw_kw * 1000.0 / (math.sqrt(3) * voltage_v * power_factor)
    return out


def source_voltage_v(load_kw: FloatArray, capacity_kw: FloatArray, up: BoolArray, voltage_v: float) -> FloatArray:
    out: FloatArray = np.where(up, voltage_v * (1.0 - DROOP * np.minimum(load_kw / capacity_kw, 2.0)), 0.0)
    return out


def input_readings(
    input_source: IntArray,
    impedance_ohm: FloatArray,
    active: IntArray,
    current_a: FloatArray,
    source_v: FloatArray,
    source_up: BoolArray,
    voltage_v: float,
) -> tuple[FloatArray, BoolArray, BoolArray]:
    """(voltage, present, healthy) of every input of every rack, (racks, inputs); an
    unwired input has impedance 0 and reads NaN, absent, unhealthy."""
    wired = input_source >= 0
    index = np.maximum(input_source, 0)
    carrying = input_source == active[:, None]  # never true for an unwired input: active >= 0 or the rack is open
    drop = np.where(carrying, math.sqrt(3) * current_a[:, None] * impedance_ohm, 0.0)
    volts = np.where(wired, source_v[index] - drop, np.nan)  # NaN compares false below
    present = volts > PRESENT_FRACTION * voltage_v
    healthy = present & source_up[index] & (np.abs(volts - voltage_v) <= TOLERANCE * voltage_v)
    return volts, present, healthy
