"""The parts a rig's plant is made of: its sources with their effects and health, racks,
each tap's inputs, and the plants of one rack tap and one monitor tap on the rig's
shared clock; with the rig's electrical and sensor constants."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from host.model.errors import ConfigurationError
from host.model.site import SourceKind
from host.sim.rig.plant import DcBus, Load, Plant, RelaySpec, Vibration
from host.sim.site.health import BASELINES, RIPPLE, TEMPERATURE, VIBRATION

DEFAULT_HZ = 50.0

if TYPE_CHECKING:  # the plants of one tap know the rig they run in, which is built of them
    from host.sim.rig.rig_plant import RigPlant


DEFAULT_DROOP = 0.05  # the voltage a source loses at full capacity: its internal impedance
DEFAULT_THD_PCT = 1.0  # a double-conversion UPS's output is a little distorted
DEFAULT_UTILISATION = 0.5  # what a rack draws at start, as a fraction of its rating
PHASES_DEG = (0.0, -120.0, 120.0)  # sources' phases cycle through L1, L2, L3 unless given
POWER_FACTOR_LAG_DEG = 15.0  # the rack's supplies: the Load default
# The third and fifth harmonics carry a distortion in these shares (0.6^2 + 0.8^2 = 1): THD as asked.
DISTORTION_SHARES = {3: 0.6, 5: 0.8}
SOURCE_EFFECTS = ("lost", "sag", "distortion", "overload")
HEALTH_EFFECTS = ("heat", "vibration", "ripple")  # seen by the source's monitor taps only
RACK_EFFECTS = ("load",)
# The monitor board's sensor scales (the firmware's mg_per_count and dc_volts_per_count
# are derived from these, so plant and firmware agree).
MONITOR_MG_PER_COUNT = 2.0  # the accelerometer: +-16 g over the ADC's range
MONITOR_DC_FULL_SCALE_V = 600.0  # the DC bus divider
MONITOR_DC_VOLTS = 400.0  # a UPS's DC link or a battery string, when the kind has one


# A vibration's RMS as a running tone and broadband noise in these shares (0.6^2 + 0.8^2 = 1):
# a kurtosis near 2.8, a crest factor near 3, as a healthy machine shows.
TONE_SHARE, NOISE_SHARE = 0.6, 0.8


# "impulsive": a worn bearing's impacts, each peaking at this many times the RMS, ringing down;
# kurtosis and crest factor rise well before the RMS does.
IMPACT_PEAK_RATIO = 5.0
MAX_VIBRATION_MG = 2000.0  # RMS: tone, noise and impacts stay inside the accelerometer's range
MAX_RIPPLE_FRACTION = 0.25  # of the DC bus: its peaks stay inside the divider's range


class RigPlantError(ConfigurationError, ValueError):
    """A fault named a source or rack the rig does not have, or a value out of range."""


@dataclass(frozen=True)
class Effect:
    """An injected condition. `value`: sag -> remaining fraction, distortion -> THD
    fraction, overload -> extra kW, load -> the rack's kW, heat -> degrees C, vibration ->
    RMS mg (`impulsive`: with a worn bearing's impacts), ripple -> RMS fraction of the DC
    bus. `duration_s`: simulated seconds from when each tap first sees it; None until cleared."""

    serial: int
    kind: str
    value: float
    duration_s: float | None = None
    impulsive: bool = False


@dataclass
class HealthModel:
    """What a source's monitor tap measures while nothing is injected: its temperature, the
    RMS of its vibration (0: the kind has no moving parts; the accelerometer reads noise)
    and the ripple on its DC bus (dc_volts 0: the kind has none)."""

    temperature_c: float = 30.0
    vibration_rms_mg: float = 0.0
    ripple_fraction: float = 0.0
    dc_volts: float = 0.0

    @classmethod
    def of_kind(cls, kind: SourceKind) -> HealthModel:
        """The kind's no-load baseline of the site simulator's health model, so the rig's
        sources read as the simulated ones do."""
        table = BASELINES[kind]
        vibration = table[VIBRATION][0]
        ripple_pct = table[RIPPLE][0]
        has_dc_bus = not math.isnan(ripple_pct)
        return cls(
            temperature_c=table[TEMPERATURE][0],
            vibration_rms_mg=0.0 if math.isnan(vibration) else vibration,
            ripple_fraction=ripple_pct / 100.0 if has_dc_bus else 0.0,
            dc_volts=MONITOR_DC_VOLTS if has_dc_bus else 0.0,
        )


@dataclass
class RigSource:
    """A site source as the plant holds it: electrical data and live state."""

    id: str
    capacity_kw: float
    v_rms: float
    hz: float = DEFAULT_HZ
    phase_deg: float = 0.0
    thd_pct: float = DEFAULT_THD_PCT
    droop: float = DEFAULT_DROOP
    effects: dict[str, Effect] = field(default_factory=dict)
    load_kw: float = 0.0  # the sum of the taps' last published draws
    health: HealthModel = field(default_factory=HealthModel)  # what its monitor taps read, unless injected

    def droop_scale(self, extra_kw: float) -> float:
        """What is left of the nominal voltage under the published load plus `extra_kw`."""
        return max(0.0, 1.0 - self.droop * (self.load_kw + extra_kw) / self.capacity_kw)


@dataclass
class RigRack:
    id: str
    rated_kw: float
    kw: float  # what it draws at nominal voltage, unless a load effect says otherwise
    effect: Effect | None = None


class TapInput:
    """One input of one tap: a shared source as this tap sees it during its current block
    (the plant's SourceLike). Constant over a block; refreshed at each step."""

    def __init__(self, source: RigSource, impedance_ohm: float) -> None:
        self.source = source
        self.impedance_ohm = impedance_ohm
        self.hz = source.hz
        self.phase_deg = source.phase_deg
        self.v_rms = source.v_rms
        self.level = 1.0  # fraction of nominal voltage this block
        self.harmonics: dict[int, float] = {}

    def voltage(self, t: np.ndarray) -> np.ndarray:
        theta = 2 * math.pi * self.hz * t + math.radians(self.phase_deg)
        wave = np.sin(theta)
        for order, rel in self.harmonics.items():
            wave = wave + rel * np.sin(order * theta)
        return self.v_rms * math.sqrt(2) * self.level * wave

    def scale(self, t: float) -> float:
        return self.level


def rack_current_a(kw: float, v_rms: float) -> float:
    """The RMS current a rack drawing `kw` at `v_rms` takes, at the supplies' power factor."""
    return kw * 1000.0 / (v_rms * math.cos(math.radians(POWER_FACTOR_LAG_DEG)))


class SharedClockPlant(Plant):
    """A plant of the rig (rack tap or monitor): its own simulated clock, effects stamped
    with it on first sight, and with `realtime` no running ahead of the wall clock."""

    def __init__(self, rig: RigPlant, tap_id: str, sources: list[TapInput], load: Load, relays: list[RelaySpec],
                 *, seed: int, realtime: bool, **plant_options: Any) -> None:
        self.rig = rig
        self.tap_id = tap_id
        self.realtime = realtime
        self.started: dict[int, int] = {}  # effect serial -> this tap's time (us) when it first saw it
        self._wall_start: float | None = None
        super().__init__(list(sources), load, relays, active=1, seed=seed, **plant_options)

    def in_force(self, effect: Effect | None, now_us: int) -> bool:
        """Whether an effect applies at this tap's time now_us: stamped on first sight."""
        if effect is None:
            return False
        start = self.started.setdefault(effect.serial, now_us)
        return effect.duration_s is None or now_us - start < round(effect.duration_s * 1e6)

    def _pace(self) -> None:
        """Sleep while the simulated clock is ahead of the wall clock by more than a few blocks."""
        wall = time.monotonic()
        if self._wall_start is None:
            self._wall_start = wall - self.now_us / 1e6
        ahead = self.now_us / 1e6 - (wall - self._wall_start)
        if ahead > 0.005:
            time.sleep(ahead)
        elif ahead < -1.0:
            self._wall_start = wall - self.now_us / 1e6  # far behind (a loaded machine): do not race to catch up


class TapPlant(SharedClockPlant):
    """One tap's plant in the rig. Before each block it takes the shared state as of this
    tap's clock; after it, it publishes its draw; with `realtime` it keeps its simulated
    clock from running ahead of the wall clock."""

    def __init__(self, rig: RigPlant, tap_id: str, rack: RigRack, inputs: list[TapInput], relays: list[RelaySpec],
                 *, seed: int, realtime: bool, **plant_options: Any) -> None:
        self.rack = rack
        self.inputs = inputs
        self.drawing: tuple[str, float] | None = None  # (source id, kW) as last published
        self.rack_load = Load(lag_deg=POWER_FACTOR_LAG_DEG)  # its i_rms follows the rack's kW, block by block
        super().__init__(rig, tap_id, inputs, self.rack_load, relays, seed=seed, realtime=realtime, **plant_options)

    def step(self, coils: int) -> tuple[int, int, np.ndarray]:
        self.rig.refresh(self)
        result = super().step(coils)
        self.rig.publish(self)
        if self.realtime:
            self._pace()
        return result

    def conducting_input(self) -> int:
        """The input (1-based) whose contacts carry the rack, 0 when none does."""
        return next((k + 1 for k, relay in enumerate(self.relays) if relay.conducting), 0)


class MonitorPlant(SharedClockPlant):
    """A monitor-role tap's plant: one input, the source it is fitted to (it carries no
    load), its board's temperature the source's, and after the current two extra
    channels, the source's vibration and its DC bus, refreshed from the source's health
    before each block."""

    def __init__(self, rig: RigPlant, tap_id: str, source: RigSource, relay: RelaySpec,
                 *, seed: int, realtime: bool, **plant_options: Any) -> None:
        self.input = TapInput(source, 0.0)
        self.vibration_rms_mg = source.health.vibration_rms_mg  # as of its latest block (tone and noise)
        self.impulsive = False
        self.vibration = Vibration(mg_per_count=MONITOR_MG_PER_COUNT)
        self.dc_bus = DcBus(volts_full_scale=MONITOR_DC_FULL_SCALE_V, ripple_hz=2 * source.hz)
        super().__init__(rig, tap_id, [self.input], Load(i_rms=0.0), [relay], seed=seed, realtime=realtime,
                         aux=[self.vibration, self.dc_bus], **plant_options)

    @property
    def source(self) -> RigSource:
        return self.input.source

    def step(self, coils: int) -> tuple[int, int, np.ndarray]:
        self.rig.refresh_monitor(self)
        result = super().step(coils)
        if self.realtime:
            self._pace()
        return result


def effect_data(effect: Effect) -> dict[str, Any]:
    data: dict[str, Any] = {"value": effect.value, "duration_s": effect.duration_s}
    if effect.impulsive:
        data["impulsive"] = True
    return data


def level_as_set(source: RigSource) -> float:
    """The source's voltage as a fraction of nominal with its effects as injected (durations
    aside: each tap times those on its own clock)."""
    effects = source.effects
    if "lost" in effects:
        return 0.0
    level = source.droop_scale(effects["overload"].value if "overload" in effects else 0.0)
    return level * (effects["sag"].value if "sag" in effects else 1.0)


def same_draw(a: tuple[str, float] | None, b: tuple[str, float] | None) -> bool:
    """Equal within a watt: the droop settles to a fixed point, not to identical floats."""
    if a is None or b is None:
        return a is b
    return a[0] == b[0] and abs(a[1] - b[1]) < 0.001


def check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RigPlantError(f"{name} must be a number within {low:g}..{high:g} (got {value!r})")
