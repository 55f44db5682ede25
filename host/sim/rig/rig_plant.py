"""The plant of a whole virtual rig: reserve sources shared by many taps, each tap's rack
and relays, and the faults injected into them while the rig runs.

It is host/sim/rig/plant.py's single-tap plant grown to a site. Sources and racks come from the
site model (host/model/site.py); nothing is described twice. Each site source becomes a
`RigSource`: nominal phase voltage (the site's line-to-line voltage over sqrt 3), a
frequency, a phase angle, a base THD, and an internal impedance expressed as the droop
its voltage shows at full capacity (5% by default), so the voltage falls as the taps
move load onto it. Each tap gets a `TapPlant`: a `Plant` (so `PlantServer` serves it
unchanged) whose inputs are views of the sources its feeds name and whose load is its
rack's draw.

Shared sources, per-tap clocks
------------------------------
Every sim tap runs its own simulated clock, in lockstep with its own plant connection,
and the taps do not run at the same pace. So the sources hold no waveform in time: they
hold a *state* (the load the taps last published, and the injected effects), and each
tap synthesises its inputs from that state at the start of each of its blocks, on its own
clock. An injected event therefore takes effect for each tap at that tap's next step:
"now" for each. An effect with a duration is stamped with each tap's own time when that
tap first sees it and lasts that many simulated seconds for it; without a duration it
lasts until cleared.

Load sharing and droop
----------------------
After each block a tap publishes which source its conducting relay connects (the relay
states its board reports as feedback) and what its rack draws from it. A source's load
is the sum of what its taps last published, plus any injected overload; its voltage is
nominal * (1 - droop * load / capacity) for every tap that sees it, on top of which each
tap's conducting feed drops I * Z of its path impedance. Racks are IT power supplies on
one phase: their current follows the voltage they get, so the power they draw goes with
its square and a dead source carries nothing.

Monitor taps and source health
------------------------------
A tap in the monitor role is fitted to one source instead of a rack: a `MonitorPlant`
whose one input is the source as the rack taps see it (droop, sags, loss, distortion;
no feed drop, it carries nothing), whose board temperature is the source's, and whose
two extra channels are an accelerometer (`Vibration`) and the source's DC bus (`DcBus`).
Each source holds a `HealthModel`, its healthy readings by kind (host/sim/site/health.py's
no-load baselines: nothing described twice); `heat`, `vibration` and `ripple` effects
override them, with durations and `restore` as for the electrical effects, timed on each
monitor's own clock. A source kind without the sensor (a battery does not vibrate, a
generator has no DC bus) gives the monitor's channel nothing but ADC noise, as the real
one would: the firmware then reports no DC bus, and a vibration at the noise floor.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Mapping
from typing import Any

from host.model.site import Feed, Rack, Site, Source, SourceKind, Tap
from host.sim.rig.plant import RelaySpec
from host.sim.rig.rig_parts import (
    DEFAULT_DROOP,
    DEFAULT_HZ,
    DEFAULT_THD_PCT,
    DEFAULT_UTILISATION,
    DISTORTION_SHARES,
    HEALTH_EFFECTS,
    IMPACT_PEAK_RATIO,
    MAX_RIPPLE_FRACTION,
    MAX_VIBRATION_MG,
    NOISE_SHARE,
    PHASES_DEG,
    POWER_FACTOR_LAG_DEG,
    TONE_SHARE,
    Effect,
    HealthModel,
    MonitorPlant,
    RigPlantError,
    RigRack,
    RigSource,
    SharedClockPlant,
    TapInput,
    TapPlant,
    check_range,
    effect_data,
    level_as_set,
    rack_current_a,
    same_draw,
)


class RigPlant:
    """Sources shared by the taps of a site, one `TapPlant` per rack tap, and one
    `MonitorPlant` per monitor tap (`monitors`: tap id -> the source it is fitted to)."""

    def __init__(
        self,
        site: Site,
        *,
        hz: float = DEFAULT_HZ,
        phases_deg: Mapping[str, float] | None = None,
        droop: float = DEFAULT_DROOP,
        thd_pct: float = DEFAULT_THD_PCT,
        utilisation: float = DEFAULT_UTILISATION,
        relay: RelaySpec | None = None,
        realtime: bool = True,
        seed: int = 1,
        wiring: Mapping[str, tuple[str, ...]] | None = None,
        monitors: Mapping[str, str] | None = None,
    ) -> None:
        if not 0.0 <= droop < 1.0:
            raise RigPlantError(f"droop must be within 0..1 (got {droop})")
        self.site = site
        self._lock = threading.Lock()
        self._serials = itertools.count(1)
        v_phase = site.voltage_v / math.sqrt(3)
        phases = phases_deg or {}
        self.sources = {
            s.id: RigSource(s.id, s.capacity_kw, v_phase, hz, phases.get(s.id, s.phase_deg),
                            thd_pct, droop)
            for i, s in enumerate(site.sources)
        }
        for s in site.sources:
            self.sources[s.id].health = HealthModel.of_kind(s.kind)
        self.racks = {r.id: RigRack(r.id, r.rated_kw, r.rated_kw * utilisation) for r in site.racks}
        self.plants: dict[str, TapPlant] = {}
        spec = relay or RelaySpec()
        miswired = dict(wiring or {})
        for index, rack in enumerate(site.racks):
            feeds = site.feeds_of(rack.id)
            wired = miswired.pop(rack.tap_id, tuple(f.source_id for f in feeds))
            if len(wired) != len(feeds) or any(source not in self.sources for source in wired):
                raise RigPlantError(f"tap {rack.tap_id}: wiring {list(wired)} must name {len(feeds)} known sources")
            inputs = [TapInput(self.sources[s], f.impedance_ohm) for s, f in zip(wired, feeds, strict=True)]
            self.plants[rack.tap_id] = TapPlant(self, rack.tap_id, self.racks[rack.id], inputs, [spec] * len(inputs),
                                                seed=seed + index, realtime=realtime)
        if miswired:
            raise RigPlantError(f"wiring names taps the site does not have: {', '.join(sorted(miswired))}")
        self.monitors: dict[str, MonitorPlant] = {}
        for index, (tap_id, source_id) in enumerate((monitors or {}).items(), start=len(site.racks)):
            if tap_id in self.plants:
                raise RigPlantError(f"monitor tap {tap_id}: the site's rack tap has that id")
            if source_id not in self.sources:
                raise RigPlantError(f"monitor tap {tap_id}: unknown source {source_id!r} "
                                    f"(sources: {', '.join(self.sources)})")
            self.monitors[tap_id] = MonitorPlant(self, tap_id, self.sources[source_id], spec, seed=seed + index,
                                                 realtime=realtime)

    # -- lookups ---------------------------------------------------------------------------

    def source(self, source_id: str) -> RigSource:
        try:
            return self.sources[source_id]
        except KeyError:
            raise RigPlantError(f"unknown source {source_id!r} (sources: {', '.join(self.sources)})") from None

    def rack(self, rack_or_tap_id: str) -> RigRack:
        """A rack by its id, or by the id of the tap that feeds it."""
        if rack_or_tap_id in self.racks:
            return self.racks[rack_or_tap_id]
        if rack_or_tap_id in self.plants:
            return self.plants[rack_or_tap_id].rack
        raise RigPlantError(f"unknown rack or tap {rack_or_tap_id!r} (racks: {', '.join(self.racks)})")

    # -- injections: each takes effect at every tap's next step ----------------------------

    def lose(self, source_id: str, duration_s: float | None = None) -> None:
        """The source's voltage collapses (for duration_s simulated seconds, or until restored)."""
        self._set(source_id, "lost", 0.0, duration_s)

    def restore(self, source_id: str) -> None:
        """Back to normal: every injected effect on the source cleared."""
        source = self.source(source_id)
        with self._lock:
            source.effects.clear()

    def sag(self, source_id: str, fraction: float = 0.5, duration_s: float | None = None) -> None:
        """The voltage falls to `fraction` of what it would be."""
        check_range("fraction", fraction, 0.0, 2.0)
        self._set(source_id, "sag", fraction, duration_s)

    def distort(self, source_id: str, thd_pct: float = 10.0, duration_s: float | None = None) -> None:
        """Harmonics (3rd and 5th) of `thd_pct` total, instead of the base THD."""
        check_range("thd_pct", thd_pct, 0.0, 100.0)
        self._set(source_id, "distortion", thd_pct / 100.0, duration_s)

    def overload(self, source_id: str, kw: float | None = None, duration_s: float | None = None) -> None:
        """Load beyond the taps' on the source (other consumers): `kw`, by default its capacity,
        so the voltage droops as if the source were loaded twice over what the taps put on it."""
        source = self.source(source_id)
        extra = source.capacity_kw if kw is None else kw
        check_range("kw", extra, 0.0, math.inf)
        self._set(source_id, "overload", extra, duration_s)

    def load_step(self, rack_or_tap_id: str, kw: float | None = None, fraction: float | None = None,
                  duration_s: float | None = None) -> None:
        """The rack's draw steps to `kw`, or to `fraction` of its rating; with neither, back to its base draw."""
        rack = self.rack(rack_or_tap_id)
        with self._lock:
            if kw is None and fraction is None:
                rack.effect = None
                return
            value = kw if kw is not None else rack.rated_kw * (fraction or 0.0)
            check_range("kw", value, 0.0, math.inf)
            rack.effect = Effect(next(self._serials), "load", value, duration_s)

    # -- health injections: seen by the source's monitor taps at their next step -------------

    def heat(self, source_id: str, celsius: float | None = None, duration_s: float | None = None) -> None:
        """The source runs at `celsius` (a failing fan, a clogged filter); without it, back to its baseline."""
        if celsius is None:
            self._clear(source_id, "heat")
            return
        check_range("celsius", celsius, -40.0, 150.0)
        self._set(source_id, "heat", float(celsius), duration_s)

    def vibrate(self, source_id: str, rms_mg: float | None = None, impulsive: bool = False,
                duration_s: float | None = None) -> None:
        """The source's vibration: `rms_mg` of running tone and noise (its baseline's when None);
        `impulsive` adds a worn bearing's impacts. With neither, back to its baseline."""
        if rms_mg is None and not impulsive:
            self._clear(source_id, "vibration")
            return
        if not isinstance(impulsive, bool):
            raise RigPlantError(f"impulsive must be true or false (got {impulsive!r})")
        if rms_mg is not None:
            check_range("rms_mg", rms_mg, 0.0, MAX_VIBRATION_MG)
        rms = self.source(source_id).health.vibration_rms_mg if rms_mg is None else float(rms_mg)
        self._set(source_id, "vibration", rms, duration_s, impulsive=impulsive)

    def ripple(self, source_id: str, fraction: float | None = None, duration_s: float | None = None) -> None:
        """The ripple on the source's DC bus, RMS as a fraction of its voltage (ageing capacitors);
        without it, back to its baseline."""
        if fraction is None:
            self._clear(source_id, "ripple")
            return
        if self.source(source_id).health.dc_volts <= 0:
            raise RigPlantError(f"source {source_id!r} has no DC bus for a ripple (a {self._kind(source_id)})")
        check_range("fraction", fraction, 0.0, MAX_RIPPLE_FRACTION)
        self._set(source_id, "ripple", float(fraction), duration_s)

    def _kind(self, source_id: str) -> str:
        return str(self.site.source(source_id).kind)

    def _monitored(self, source_id: str) -> RigSource:
        """The source, if a monitor tap is fitted to it: a health effect on any other would show nowhere."""
        source = self.source(source_id)
        if not any(m.source is source for m in self.monitors.values()):
            fitted = ", ".join(f"{t} on {m.source.id}" for t, m in self.monitors.items()) or "none"
            raise RigPlantError(f"no monitor tap is fitted to source {source_id!r} (monitors: {fitted})")
        return source

    def _clear(self, source_id: str, kind: str) -> None:
        source = self._monitored(source_id) if kind in HEALTH_EFFECTS else self.source(source_id)
        with self._lock:
            source.effects.pop(kind, None)

    def _set(self, source_id: str, kind: str, value: float, duration_s: float | None, *,
             impulsive: bool = False) -> None:
        source = self._monitored(source_id) if kind in HEALTH_EFFECTS else self.source(source_id)
        if duration_s is not None:
            check_range("duration_s", duration_s, 0.0, math.inf)
        with self._lock:
            source.effects[kind] = Effect(next(self._serials), kind, value, duration_s, impulsive)

    # -- what the tap plants call -----------------------------------------------------------

    def refresh(self, plant: TapPlant) -> None:
        """Set the tap's inputs and rack draw for its next block, on its own clock."""
        now_us = plant.now_us
        conducting = plant.conducting_input()
        with self._lock:
            rack = plant.rack
            kw = rack.effect.value if plant.in_force(rack.effect, now_us) and rack.effect else rack.kw
            for k, tap_input in enumerate(plant.inputs, start=1):
                self._see(plant, tap_input, now_us)
                if k == conducting and tap_input.level > 0:  # the feed's path drops I * Z on the way
                    drop = rack_current_a(kw, tap_input.v_rms) * tap_input.impedance_ohm / tap_input.v_rms
                    tap_input.level = max(0.0, tap_input.level * (1.0 - drop))
        plant.rack_load.i_rms = rack_current_a(kw, plant.inputs[0].v_rms)

    def refresh_monitor(self, plant: MonitorPlant) -> None:
        """Set the monitor's input, temperature, vibration and DC bus for its next block, on its own clock."""
        now_us = plant.now_us
        with self._lock:
            self._see(plant, plant.input, now_us)
            source = plant.source
            health = source.health
            heat, vibration, ripple = (
                e if plant.in_force(e := source.effects.get(kind), now_us) else None for kind in HEALTH_EFFECTS
            )
            plant.temperature_c = heat.value if heat else health.temperature_c
            plant.vibration_rms_mg = vibration.value if vibration else health.vibration_rms_mg
            plant.impulsive = vibration.impulsive if vibration else False
            plant.dc_bus.volts = health.dc_volts
            plant.dc_bus.ripple_rms_fraction = ripple.value if ripple else health.ripple_fraction
        plant.vibration.tone_mg = TONE_SHARE * plant.vibration_rms_mg
        plant.vibration.noise_mg = NOISE_SHARE * plant.vibration_rms_mg
        plant.vibration.impact_mg = IMPACT_PEAK_RATIO * plant.vibration_rms_mg if plant.impulsive else 0.0

    def _see(self, plant: SharedClockPlant, tap_input: TapInput, now_us: int) -> None:
        source = tap_input.source
        effects = {kind: e for kind, e in source.effects.items() if plant.in_force(e, now_us)}
        if "lost" in effects:
            tap_input.level = 0.0
        else:
            extra = effects["overload"].value if "overload" in effects else 0.0
            level = source.droop_scale(extra)
            if "sag" in effects:
                level *= effects["sag"].value
            tap_input.level = level
        thd = effects["distortion"].value if "distortion" in effects else source.thd_pct / 100.0
        tap_input.harmonics = {order: share * thd for order, share in DISTORTION_SHARES.items()} if thd else {}

    def publish(self, plant: TapPlant) -> None:
        """Record what the tap's rack now draws, and from which source."""
        k = plant.conducting_input()
        drawing = None
        if k:
            tap_input = plant.inputs[k - 1]
            kw = plant.rack_load.i_rms * tap_input.v_rms * math.cos(math.radians(POWER_FACTOR_LAG_DEG)) / 1000.0
            drawing = (tap_input.source.id, kw * tap_input.level**2)
        if same_draw(drawing, plant.drawing):
            return  # most blocks: skip the lock
        with self._lock:
            if plant.drawing is not None:
                self.sources[plant.drawing[0]].load_kw -= plant.drawing[1]
            if drawing is not None:
                self.sources[drawing[0]].load_kw += drawing[1]
            plant.drawing = drawing

    # -- observation ------------------------------------------------------------------------

    def source_loads(self) -> dict[str, float]:
        """kW on each source, as the taps last published it (injected overloads not included)."""
        with self._lock:
            return {source_id: max(0.0, s.load_kw) for source_id, s in self.sources.items()}

    def snapshot(self) -> dict[str, Any]:
        """The state of every source and tap, as plain data (for `status` and logs)."""
        with self._lock:
            sources = {
                s.id: {
                    "capacity_kw": s.capacity_kw, "load_kw": round(max(0.0, s.load_kw), 3),
                    "voltage_v": round(s.v_rms * level_as_set(s), 2), "phase_deg": s.phase_deg, "hz": s.hz,
                    "effects": {e.kind: effect_data(e) for e in s.effects.values()},
                }
                for s in self.sources.values()
            }
            taps = {
                tap_id: {
                    "rack": p.rack.id, "inputs": [i.source.id for i in p.inputs], "conducting": p.conducting_input(),
                    "source": p.drawing[0] if p.drawing else None,
                    "draw_kw": round(p.drawing[1], 3) if p.drawing else 0.0,
                    "sim_time_s": p.now_us / 1e6,
                }
                for tap_id, p in self.plants.items()
            }
            monitors = {
                tap_id: {"source": m.source.id, "temperature_c": m.temperature_c,
                         "vibration_rms_mg": m.vibration_rms_mg, "impulsive": m.impulsive,
                         "ripple_fraction": m.dc_bus.ripple_rms_fraction if m.dc_bus.volts > 0 else None,
                         "sim_time_s": m.now_us / 1e6}
                for tap_id, m in self.monitors.items()
            }
        return {"sources": sources, "taps": taps, "monitors": monitors}


def default_site(n_taps: int, n_sources: int, name: str = "virtual-rig") -> Site:
    """A site of `n_sources` UPS modules (ups-1..) and `n_taps` racks, each on its own
    two-input tap wired to two different sources in turn (tap i: sources i and i+1), rated
    4, 8 and 12 kW in turn. Each source's capacity is 1.5 times its share of the ratings,
    so one lost source is carried, with a visible droop, by the others."""
    if n_sources < 2:
        raise RigPlantError(f"a rig needs 2 sources or more: each tap has inputs on two (got {n_sources})")
    if n_taps < 1:
        raise RigPlantError(f"a rig needs at least 1 tap (got {n_taps})")
    ratings = [4.0 + 4.0 * (i % 3) for i in range(n_taps)]
    capacity = max(10.0, round(1.5 * sum(ratings) / n_sources))
    source_ids = [f"ups-{k + 1}" for k in range(n_sources)]
    sources = [Source(sid, SourceKind.UPS, capacity, phase_deg=PHASES_DEG[k % len(PHASES_DEG)])
               for k, sid in enumerate(source_ids)]
    taps: list[Tap] = []
    racks: list[Rack] = []
    feeds: list[Feed] = []
    for i in range(n_taps):
        tap_id, rack_id = f"tap-{i + 1:02d}", f"rack-{i + 1:02d}"
        taps.append(Tap(tap_id, 2))
        racks.append(Rack(rack_id, tap_id, rated_kw=ratings[i]))
        for k in range(2):
            feeds.append(Feed(tap_id, k + 1, source_ids[(i + k) % n_sources], 0.05))
    return Site(tuple(sources), tuple(taps), tuple(racks), tuple(feeds), name=name)
