"""Inverse-time overload after IEC 60255-151, for the sources of the site simulator:

    t(M) = TMS * A / (M**B - 1),  M = I / Is

The element integrates 1/t(M) over time and operates when the integral reaches 1 (the
dependent-time behaviour of the standard, valid when the current varies). As in the
tap firmware (firmware/overload.py): reset is instantaneous below the drop-off ratio
(95% of Is), the integral holds between that and Is, and the rate stops rising above
M = 20. Pure functions over numpy arrays, one element per source.
"""

from __future__ import annotations

import math

import numpy as np

from host.model.arrays import FloatArray

CURVES: dict[str, tuple[float, float]] = {
    "standard_inverse": (0.14, 0.02),
    "very_inverse": (13.5, 1.0),
    "extremely_inverse": (80.0, 2.0),
}
DROPOFF = 0.95
M_MAX = 20.0


def trip_time_s(multiple: float, tms: float, curve: str = "standard_inverse") -> float:
    """Operate time at a constant multiple of pickup; infinite at or below pickup."""
    a, b = CURVES[curve]
    if multiple <= 1.0:
        return math.inf
    return tms * a / (min(multiple, M_MAX) ** b - 1.0)


def advance(
    progress: FloatArray, multiple: FloatArray, tms: FloatArray, a: FloatArray, b: FloatArray, dt_s: float
) -> FloatArray:
    """The integral after dt_s at the given multiples of pickup (one per element)."""
    m = np.minimum(multiple, M_MAX)
    over = m > 1.0
    rate = np.zeros_like(progress)
    rate[over] = (m[over] ** b[over] - 1.0) / (tms[over] * a[over])
    held = np.where(m < DROPOFF, 0.0, progress)
    return held + rate * dt_s
