"""The faults a virtual rig injects while it runs, what each takes, and where it lands:
the plant (a source, a source's health, a rack's load) or one virtual bus.

kind: lose, restore, sag (fraction), distort (thd_pct), overload (kw) on a source; heat
(celsius), vibration (rms_mg, impulsive), ripple (fraction of the DC bus) on a source a
monitor tap is fitted to, each without its value back to the source's baseline; load (kw
or fraction of the rating) on a rack or its tap; cut (on), ber (rate), drop (rate),
babble (on) on a bus: "A" or "B" of the rig's first segment, or "SEGMENT/A".
duration_s: simulated seconds, for the plant faults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from host.sim.rig.rig_layout import RigError
from host.sim.rig.rig_parts import RigPlantError
from host.sim.rig.rig_plant import RigPlant
from host.sim.rig.vbus import VirtualBus

SOURCE_FAULTS: dict[str, tuple[str, ...]] = {
    "lose": ("duration_s",),
    "restore": (),
    "sag": ("fraction", "duration_s"),
    "distort": ("thd_pct", "duration_s"),
    "overload": ("kw", "duration_s"),
}


# What a source's monitor taps measure (refused on a source no monitor tap is fitted to).
HEALTH_FAULTS: dict[str, tuple[str, ...]] = {
    "heat": ("celsius", "duration_s"),
    "vibration": ("rms_mg", "impulsive", "duration_s"),
    "ripple": ("fraction", "duration_s"),
}


RACK_FAULTS: dict[str, tuple[str, ...]] = {"load": ("kw", "fraction", "duration_s")}


BUS_FAULTS: dict[str, tuple[str, ...]] = {"cut": ("on",), "ber": ("rate",), "drop": ("rate",), "babble": ("on",)}


FAULTS = {**SOURCE_FAULTS, **HEALTH_FAULTS, **RACK_FAULTS, **BUS_FAULTS}


def inject(plant: RigPlant, bus: Callable[[str], VirtualBus], kind: str, target: str, params: dict[str, Any]) -> None:
    """Inject the fault now (each tap sees a plant fault at its next step); RigError names
    what is wrong with a request."""
    if kind not in FAULTS:
        raise RigError(f"unknown fault {kind!r} (faults: {', '.join(FAULTS)})")
    unknown = sorted(set(params) - set(FAULTS[kind]))
    if unknown:
        takes = ", ".join(FAULTS[kind]) or "nothing"
        raise RigError(f"{kind} does not take {', '.join(unknown)} (it takes {takes})")
    try:
        if kind in BUS_FAULTS:
            _bus_fault(kind, bus(target), **params)
        else:
            _plant_fault(plant, kind, target, params)
    except RigPlantError as exc:
        raise RigError(str(exc)) from None


def _plant_fault(plant: RigPlant, kind: str, target: str, params: dict[str, Any]) -> None:
    actions: dict[str, Callable[..., None]] = {
        "lose": plant.lose, "restore": plant.restore, "sag": plant.sag,
        "distort": plant.distort, "overload": plant.overload, "load": plant.load_step,
        "heat": plant.heat, "vibration": plant.vibrate, "ripple": plant.ripple,
    }
    actions[kind](target, **params)


def _bus_fault(kind: str, bus: VirtualBus, on: bool = True, rate: float = 0.0) -> None:
    try:
        if kind == "cut":
            bus.cut(bool(on))
        elif kind == "babble":
            bus.babble(bool(on))
        elif kind == "ber":
            bus.set_bit_error_rate(rate)
        else:
            bus.set_drop_rate(rate)
    except ValueError as exc:
        raise RigError(str(exc)) from None
