"""The electrical world of a simulated tap: sources, the rack's load, the input relays
and the ADC, advanced in blocks of samples on a simulated clock.

It synthesises each input's voltage (amplitude, frequency, phase, harmonics, sags,
loss), the rack current drawn through whichever input's contacts conduct, and models
the relays as real parts behave: operate and release within the datasheet times,
contact bounce seen by the feedback, and an arc that keeps a live source's current
flowing after the contacts part until the next current zero. The sim board's HAL
exchanges one block per step with it (host/sim/rig/plant_server.py), so firmware and plant run
in lockstep and tests are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

ADC_MAX = 8191  # counts at full scale (14 bits signed after the driver)


class SourceLike(Protocol):
    """What the plant needs of an input: a synthesised Source or a recording."""

    hz: float
    phase_deg: float

    def voltage(self, t: np.ndarray) -> np.ndarray: ...

    def scale(self, t: float) -> float: ...


class LoadLike(Protocol):
    def current(self, t: float, source: SourceLike) -> float: ...


@dataclass
class Source:
    """One reserve source as an input of the tap sees it."""

    v_rms: float = 230.0
    hz: float = 50.0
    phase_deg: float = 0.0
    harmonics: dict[int, float] = field(default_factory=dict)  # order -> amplitude / fundamental
    lost_at_s: float | None = None  # the voltage collapses to zero from then on
    restored_at_s: float | None = None
    sags: list[tuple[float, float, float]] = field(default_factory=list)  # (start s, end s, remaining fraction)
    # commutation notches of a 6-pulse rectifier nearby: (notches per cycle, width in degrees, depth 0..1)
    notches: tuple[int, float, float] | None = None

    def scale(self, t: float) -> float:
        """What is left of the nominal voltage at time t (0 when lost)."""
        if self.lost_at_s is not None and t >= self.lost_at_s and (
            self.restored_at_s is None or t < self.restored_at_s
        ):
            return 0.0
        remaining = 1.0
        for start, end, fraction in self.sags:
            if start <= t < end:
                remaining *= fraction
        return remaining

    def scale_at(self, t: np.ndarray) -> np.ndarray:
        return np.fromiter((self.scale(float(x)) for x in t), float, len(t))

    def voltage(self, t: np.ndarray) -> np.ndarray:
        theta = 2 * math.pi * self.hz * t + math.radians(self.phase_deg)
        wave = np.sin(theta)
        for order, rel in self.harmonics.items():
            wave = wave + rel * np.sin(order * theta)
        if self.notches:
            per_cycle, width_deg, depth = self.notches
            spacing = 2 * math.pi / per_cycle
            inside = np.mod(theta - math.radians(30), spacing) < math.radians(width_deg)
            wave = np.where(inside, wave * (1 - depth), wave)
        return self.v_rms * math.sqrt(2) * self.scale_at(t) * wave


@dataclass
class Load:
    """The rack: IT power supplies draw a current locked to the voltage they get."""

    i_rms: float = 10.0
    lag_deg: float = 15.0
    harmonics: dict[int, float] = field(default_factory=dict)
    steps: list[tuple[float, float]] = field(default_factory=list)  # (from s, new i_rms)
    fault: tuple[float, float, float] | None = None  # downstream short: (start s, end s, i_rms)

    def current(self, t: float, source: SourceLike) -> float:
        """Instantaneous current at t while connected to source. The supplies draw in
        proportion to what is left of the voltage, and nothing from a dead source."""
        scale = source.scale(t)
        theta = 2 * math.pi * source.hz * t + math.radians(source.phase_deg)
        if self.fault and self.fault[0] <= t < self.fault[1]:
            return self.fault[2] * math.sqrt(2) * scale * math.sin(theta - math.radians(80))
        i_rms = self.i_rms
        for start, value in self.steps:
            if t >= start:
                i_rms = value
        theta -= math.radians(self.lag_deg)
        wave = math.sin(theta) + sum(rel * math.sin(order * theta) for order, rel in self.harmonics.items())
        return i_rms * math.sqrt(2) * scale * wave


@dataclass
class RelaySpec:
    """Datasheet times of one input's relay, in microseconds."""

    operate_us: int = 6000  # the time the model takes: set it to the datasheet maximum for worst cases
    release_us: int = 3000
    bounce_us: int = 1500


class Relay:
    """Contacts of one input: the coil command moves them after the operate or release
    time; feedback bounces after closing; after parting, current keeps flowing in an
    arc until it next crosses zero."""

    def __init__(self, spec: RelaySpec, closed: bool = False) -> None:
        self.spec = spec
        self.coil = closed
        self.mechanical = closed  # contacts touching
        self.conducting = closed  # touching, or arcing
        self._move_at_us: int | None = None
        self._bounce_until_us = 0
        self.welded = False
        self.dead = False

    def command(self, closed: bool, now_us: int) -> None:
        if closed == self.coil:
            return
        self.coil = closed
        if closed and self.dead:
            return
        if not closed and self.welded:
            return
        self._move_at_us = now_us + (self.spec.operate_us if closed else self.spec.release_us)

    def advance(self, now_us: int, current: float, previous_current: float) -> None:
        if self._move_at_us is not None and now_us >= self._move_at_us:
            self._move_at_us = None
            self.mechanical = self.coil
            if self.mechanical:
                self.conducting = True
                self._bounce_until_us = now_us + self.spec.bounce_us
        # on parted contacts the arc goes out at the current zero (at once if nothing flows)
        if self.conducting and not self.mechanical and (abs(current) < 1e-6 or current * previous_current <= 0):
            self.conducting = False

    def feedback(self, now_us: int, rng: np.random.Generator) -> bool:
        if self.mechanical and now_us < self._bounce_until_us:
            return bool(rng.random() < 0.5)
        return self.mechanical


@dataclass
class Vibration:
    """An accelerometer on a fan or a bearing: the shaft's running tone, broadband noise
    and, as a bearing wears, periodic impacts that ring down (they raise kurtosis and
    crest factor long before they raise the RMS)."""

    tone_mg: float = 150.0  # RMS of the running tone
    tone_hz: float = 24.5
    noise_mg: float = 40.0  # RMS
    impact_mg: float = 0.0  # peak of each impact
    impact_hz: float = 87.0  # the defect frequency
    ring_hz: float = 1800.0
    ring_decay_s: float = 0.0015
    mg_per_count: float = 2.0

    def sample(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = self.tone_mg * math.sqrt(2) * np.sin(2 * math.pi * self.tone_hz * t)
        x = x + rng.normal(0, self.noise_mg, t.size)
        if self.impact_mg:
            since = np.mod(t, 1 / self.impact_hz)
            x = x + self.impact_mg * np.exp(-since / self.ring_decay_s) * np.sin(2 * math.pi * self.ring_hz * since)
        return x / self.mg_per_count


@dataclass
class DcBus:
    """A UPS's DC link or a battery string: its voltage and the ripple on it (at twice
    the mains frequency, growing as the capacitors age)."""

    volts: float = 400.0
    ripple_rms_fraction: float = 0.01
    ripple_hz: float = 100.0
    volts_full_scale: float = 600.0

    def sample(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        ripple = self.volts * self.ripple_rms_fraction * math.sqrt(2) * np.sin(2 * math.pi * self.ripple_hz * t)
        return (self.volts + ripple) * ADC_MAX / self.volts_full_scale


@dataclass
class AdcScale:
    volts_full_scale: float = 400.0  # peak volts at ADC_MAX
    amps_full_scale: float = 450.0
    noise_counts: float = 0.5


class Plant:
    """One tap's world. Call step(coils) once per block: it applies the coil commands,
    advances `block` samples and returns (time at block start in us, feedback bits,
    samples[channel][sample]) with channels: each input's voltage, then the current."""

    def __init__(
        self,
        sources: list[SourceLike],
        load: LoadLike,
        relays: list[RelaySpec],
        active: int = 1,
        fs: int = 4000,
        block: int = 4,
        adc: AdcScale | None = None,
        seed: int = 1,
        aux: list[Vibration | DcBus] | None = None,
    ) -> None:
        if len(relays) != len(sources):
            raise ValueError("one relay per input")
        self.sources = sources
        self.load = load
        self.relays = [Relay(spec, closed=(k + 1 == active)) for k, spec in enumerate(relays)]
        self.fs = fs
        self.block = block
        self.adc = adc or AdcScale()
        self.aux = aux or []  # a source monitor's extra channels, after the current
        self.rng = np.random.default_rng(seed)
        self.sample_index = 0
        self._current = 0.0
        self.parallel_events: list[float] = []  # times two inputs conducted together
        self.output_dead_s = 0.0  # time with no voltage at the rack while it draws
        self.trace: list[tuple[float, int, float, float]] = []  # (t, conducting input, v_out, i_out)
        self.keep_trace = False
        self.temperature_c = 35.0  # what the board's sensor reads
        self.commands: list[tuple[int, int, bool]] = []  # (us, input 1..n, closed): every coil change

    @property
    def coils(self) -> int:
        return sum(1 << k for k, relay in enumerate(self.relays) if relay.coil)

    @property
    def now_us(self) -> int:
        return self.sample_index * 1_000_000 // self.fs

    def step(self, coils: int) -> tuple[int, int, np.ndarray]:
        start_us = self.now_us
        for k, relay in enumerate(self.relays):
            closed = bool(coils >> k & 1)
            if closed != relay.coil:
                self.commands.append((start_us, k + 1, closed))
            relay.command(closed, start_us)
        n = self.block
        t = (self.sample_index + np.arange(n)) / self.fs
        volts = np.stack([s.voltage(t) for s in self.sources])
        amps = np.zeros(n)
        for j in range(n):
            now_us = (self.sample_index + j) * 1_000_000 // self.fs
            conducting = [k for k, r in enumerate(self.relays) if r.conducting]
            if len(conducting) > 1:
                self.parallel_events.append(float(t[j]))
            current = 0.0
            if conducting:
                k = conducting[0]
                current = self.load.current(float(t[j]), self.sources[k])
            amps[j] = current
            for relay in self.relays:
                relay.advance(now_us, current, self._current)
            self._current = current
            if self.keep_trace:
                v_out = float(volts[conducting[0], j]) if conducting else 0.0
                self.trace.append((float(t[j]), conducting[0] + 1 if conducting else 0, v_out, current))
        self.sample_index += n
        feedback = 0
        for k, relay in enumerate(self.relays):
            if relay.feedback(self.now_us, self.rng):
                feedback |= 1 << k
        return start_us, feedback, self._to_counts(volts, amps, t)

    def _to_counts(self, volts: np.ndarray, amps: np.ndarray, t: np.ndarray) -> np.ndarray:
        scale_v = ADC_MAX / self.adc.volts_full_scale
        scale_a = ADC_MAX / self.adc.amps_full_scale
        channels = [volts * scale_v, amps[None, :] * scale_a]
        channels += [signal.sample(t, self.rng)[None, :] for signal in self.aux]
        counts = np.vstack(channels)
        counts += self.rng.normal(0, self.adc.noise_counts, counts.shape)
        return np.clip(np.round(counts), -ADC_MAX - 1, ADC_MAX).astype("<i2")
