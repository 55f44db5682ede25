"""Scenario families for fault prediction: degradations of a source that end in its
failure, sudden failures with no precursor, and benign confounders that must not
raise an alarm. docs/scenarios.md says how each shows in the signals.

A Condition is plain data: which family, which source (None: every source, for a
site-wide confounder), when, how strong. health.py turns conditions into signals;
the simulator turns their failures, battery fade and test discharges into physics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from host.model.site import SourceKind


class Family(StrEnum):
    THERMAL_DRIFT = "thermal_drift"
    BEARING_WEAR = "bearing_wear"
    CAPACITOR_AGEING = "capacitor_ageing"
    BATTERY_AGEING = "battery_ageing"
    SUDDEN_FAILURE = "sudden_failure"
    HOT_AFTERNOON = "hot_afternoon"
    SENSOR_DROPOUT = "sensor_dropout"
    RECALIBRATION_JUMP = "recalibration_jump"
    MAINTENANCE_TEST = "maintenance_test"


class Shape(StrEnum):
    """How a degradation's progress grows from start_s to end_s, so that a predictor
    cannot learn one shape: steady, accelerating (exponential wear), or slow then fast
    (a knee, as a bearing's damage that suddenly spreads)."""

    LINEAR = "linear"
    ACCELERATING = "accelerating"
    KNEE = "knee"


ACCELERATION = 3.0  # exponent of the accelerating shape: a third of the rise in the last fifth
KNEE_AT, KNEE_PROGRESS = 0.7, 0.2  # the knee: 20% of the rise in the first 70% of the time


def shaped(x: float, shape: Shape) -> float:
    """Progress in [0, 1] for the elapsed fraction x in [0, 1]."""
    if shape == Shape.ACCELERATING:
        return math.expm1(ACCELERATION * x) / math.expm1(ACCELERATION)
    if shape == Shape.KNEE:
        if x < KNEE_AT:
            return KNEE_PROGRESS * x / KNEE_AT
        return KNEE_PROGRESS + (1.0 - KNEE_PROGRESS) * (x - KNEE_AT) / (1.0 - KNEE_AT)
    return x


@dataclass(frozen=True)
class FamilySpec:
    magnitude: float  # default strength, in `unit`
    unit: str
    fails: bool  # by default the source fails at end_s (sudden_failure: at start_s)
    needs_end: bool  # end_s is required
    kinds: tuple[SourceKind, ...] = tuple(SourceKind)  # the kinds of source it applies to
    needs_signal: bool = False
    site_wide: bool = False  # may omit the source: then it applies to every source
    benign: bool = False  # a confounder: a predictor must not alarm on it


FAMILIES: dict[Family, FamilySpec] = {
    Family.THERMAL_DRIFT: FamilySpec(25.0, "degC of rise at end_s", fails=True, needs_end=True),
    Family.BEARING_WEAR: FamilySpec(
        1.0, "severity (1 = typical)", fails=True, needs_end=True, kinds=(SourceKind.UPS, SourceKind.GENERATOR)
    ),
    Family.CAPACITOR_AGEING: FamilySpec(
        1.0, "severity (1 = typical)", fails=True, needs_end=True, kinds=(SourceKind.UPS, SourceKind.BATTERY)
    ),
    Family.BATTERY_AGEING: FamilySpec(
        0.4, "fraction of energy lost at end_s", fails=False, needs_end=True, kinds=(SourceKind.BATTERY,)
    ),
    Family.SUDDEN_FAILURE: FamilySpec(0.0, "unused", fails=True, needs_end=False),
    Family.HOT_AFTERNOON: FamilySpec(8.0, "degC at the peak", fails=False, needs_end=True, site_wide=True, benign=True),
    Family.SENSOR_DROPOUT: FamilySpec(0.0, "unused", fails=False, needs_end=True, needs_signal=True, benign=True),
    Family.RECALIBRATION_JUMP: FamilySpec(
        2.0, "offset, in the signal's unit", fails=False, needs_end=False, needs_signal=True, benign=True
    ),
    Family.MAINTENANCE_TEST: FamilySpec(
        50.0, "kW of test load", fails=False, needs_end=True, kinds=(SourceKind.BATTERY,), benign=True
    ),
}


# the families that degrade a source gradually, to which a Shape applies
DEGRADING = (Family.THERMAL_DRIFT, Family.BEARING_WEAR, Family.CAPACITOR_AGEING, Family.BATTERY_AGEING)


@dataclass(frozen=True)
class Condition:
    family: Family
    source: str | None  # None: every source (site-wide families only)
    start_s: float
    end_s: float | None = None
    magnitude: float | None = None  # None: the family's default
    signal: str | None = None  # a health signal name, or "all" (dropout)
    fails: bool | None = None  # None: the family's default
    shape: Shape = Shape.LINEAR  # of a degradation's progress

    @property
    def spec(self) -> FamilySpec:
        return FAMILIES[self.family]

    @property
    def strength(self) -> float:
        return self.spec.magnitude if self.magnitude is None else self.magnitude

    @property
    def failure_s(self) -> float | None:
        """When the source fails because of it, if it does."""
        if not (self.spec.fails if self.fails is None else self.fails):
            return None
        return self.start_s if self.family == Family.SUDDEN_FAILURE else self.end_s

    def progress(self, t: float) -> float:
        """0 before start_s, rising to 1 at end_s along its shape (a step at start_s without end_s)."""
        if t < self.start_s:
            return 0.0
        if self.end_s is None or self.end_s <= self.start_s:
            return 1.0
        return shaped(min((t - self.start_s) / (self.end_s - self.start_s), 1.0), self.shape)

    def within(self, t: float) -> bool:
        return self.start_s <= t and (self.end_s is None or t < self.end_s)
