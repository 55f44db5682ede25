"""A monitor tap's HEALTH answer as the fleet's health signals of the source it is fitted
to, with each sensor's validity and age."""

from __future__ import annotations

from collections.abc import Mapping

from host.model.fleet import (
    HealthSignals,
)

# A monitor's vibration and ripple values older than this are no longer the source's state
# (its windows are about half a second; a monitor whose windows stopped reports stale ones).
HEALTH_MAX_AGE_MS = 10_000


SENSOR_TEMPERATURE, SENSOR_VIBRATION, SENSOR_RIPPLE, SENSOR_THD = 0x01, 0x02, 0x04, 0x08


def health_signals(fields: Mapping[str, int]) -> HealthSignals:
    """A HEALTH answer's fields as the fault predictor's signals (module docstring): None
    where the tap does not vouch for a sensor, or its window value is too old."""
    ok = int(fields["sensors_ok"])
    fresh = int(fields["age_ms"]) <= HEALTH_MAX_AGE_MS

    def scaled(bit: int, name: str, per_unit: int, windowed: bool = True) -> float | None:
        if not ok & bit or (windowed and not fresh):
            return None
        return int(fields[name]) / per_unit  # divided, not multiplied by 0.1: 520 dC is 52.0 C exactly

    return HealthSignals(
        temperature_c=scaled(SENSOR_TEMPERATURE, "temperature_dC", 10, windowed=False),
        vibration_rms_mg=scaled(SENSOR_VIBRATION, "vibration_rms_mg", 1),
        kurtosis=scaled(SENSOR_VIBRATION, "vibration_kurtosis_milli", 1000),
        crest_factor=scaled(SENSOR_VIBRATION, "vibration_crest_milli", 1000),
        ripple_pct=scaled(SENSOR_RIPPLE, "ripple_dpct", 10),
        thd_pct=scaled(SENSOR_THD, "thd_dpct", 10, windowed=False),
    )
