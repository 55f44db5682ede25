"""Recorded waveforms played into the sim board's ADC channels, so that a disturbance
captured in the field can be replayed against the firmware.

Two formats:

* IEEE C37.111 COMTRADE (.cfg + .dat, 1991/1999/2013, ASCII or binary), read by the
  `comtrade` package; `mapping` names which analog channel feeds which tap channel.
* Our CSV, for records made by hand or by another tool. Its first line is a header:
  `time_s` and any of `v1` .. `v4` (the instantaneous voltage of inputs 1 to 4, volts)
  and `i` (the instantaneous output current, amperes); then one row per sample, evenly
  spaced in time:

      time_s,v1,v2,i
      0.00000000,0.0,-281.7,0.0
      0.00025000,25.5,-293.4,0.8

The plant resamples a recording to its own rate by linear interpolation. A recorded
voltage becomes a source (`RecordedSource`); a recorded current becomes the rack's
load (`RecordedLoad`), or the rack draws in proportion to the recorded voltage
(`ProportionalLoad`) when the record has no current.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host.model.errors import ConfigurationError
from host.sim.rig.plant import SourceLike

TAP_CHANNELS = ("v1", "v2", "v3", "v4", "i")


class RecordingError(ConfigurationError, ValueError):
    """A recording that cannot be played: the message names the file, line or channel."""


@dataclass
class Recording:
    fs: float  # samples per second
    channels: dict[str, np.ndarray]  # tap channel name -> instantaneous values, SI units

    @property
    def seconds(self) -> float:
        return len(next(iter(self.channels.values()))) / self.fs

    @classmethod
    def from_csv(cls, path: Path) -> Recording:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows or rows[0][:1] != ["time_s"]:
            raise RecordingError(f"{path}: line 1 must start with time_s, then channels of {TAP_CHANNELS}")
        names = rows[0][1:]
        unknown = [n for n in names if n not in TAP_CHANNELS]
        if unknown or not names:
            raise RecordingError(f"{path}: line 1: unknown channels {unknown}; use {TAP_CHANNELS}")
        try:
            data = np.array([[float(x) for x in row] for row in rows[1:]])
        except ValueError as exc:
            raise RecordingError(f"{path}: a row that is not numbers ({exc})") from None
        if data.ndim != 2 or data.shape[1] != len(names) + 1 or len(data) < 2:
            raise RecordingError(f"{path}: every row needs time_s and {len(names)} values")
        return cls(_rate(data[:, 0], path), {name: data[:, k + 1] for k, name in enumerate(names)})

    @classmethod
    def from_comtrade(cls, cfg: Path, dat: Path, mapping: dict[str, str]) -> Recording:
        """mapping: COMTRADE channel id -> tap channel (for example {"VA": "v1", "IA": "i"})."""
        import comtrade  # only this path needs it

        record = comtrade.Comtrade()
        record.load(str(cfg), str(dat))
        channels = {}
        for source_name, tap_name in mapping.items():
            if tap_name not in TAP_CHANNELS:
                raise RecordingError(f"{tap_name!r} is not a tap channel; use {TAP_CHANNELS}")
            if source_name not in record.analog_channel_ids:
                raise RecordingError(f"{cfg}: no analog channel {source_name!r}; it has {record.analog_channel_ids}")
            channels[tap_name] = np.asarray(record.analog[record.analog_channel_ids.index(source_name)], float)
        return cls(_rate(np.asarray(record.time, float), cfg), channels)

    def at(self, name: str, t: np.ndarray) -> np.ndarray:
        """Values of a channel at times t (s), zero outside the recording."""
        values = self.channels[name]
        times = np.arange(len(values)) / self.fs
        return np.interp(t, times, values, left=0.0, right=0.0)


def _rate(times: np.ndarray, where: Path) -> float:
    steps = np.diff(times)
    if np.any(steps <= 0) or np.ptp(steps) > 0.01 * float(np.mean(steps)):
        raise RecordingError(f"{where}: samples are not evenly spaced in time")
    return 1.0 / float(np.mean(steps))


class RecordedSource:
    """An input whose voltage is a recording's channel."""

    def __init__(self, recording: Recording, channel: str, nominal_v_rms: float = 230.0, hz: float = 50.0) -> None:
        if channel not in recording.channels:
            raise RecordingError(f"the recording has no channel {channel!r}")
        self.recording = recording
        self.channel = channel
        self.hz = hz
        self.phase_deg = 0.0
        # what is left of the nominal voltage, cycle by cycle: for the rack's draw
        values = recording.channels[channel]
        per_cycle = max(1, round(recording.fs / hz))
        padded = np.concatenate([np.zeros(per_cycle - 1), values**2])
        rms = np.sqrt(np.convolve(padded, np.ones(per_cycle) / per_cycle, mode="valid"))
        self._remaining = rms / nominal_v_rms

    def voltage(self, t: np.ndarray) -> np.ndarray:
        return self.recording.at(self.channel, t)

    def scale(self, t: float) -> float:
        index = int(t * self.recording.fs)
        if not 0 <= index < len(self._remaining):
            return 0.0
        return float(self._remaining[index]) if self._remaining[index] > 0.1 else 0.0


class RecordedLoad:
    """The rack current as recorded, whichever input it flows through."""

    def __init__(self, recording: Recording, channel: str = "i") -> None:
        if channel not in recording.channels:
            raise RecordingError(f"the recording has no channel {channel!r}")
        self.recording = recording
        self.channel = channel

    def current(self, t: float, source: SourceLike) -> float:
        return float(self.recording.at(self.channel, np.array([t]))[0])


class ProportionalLoad:
    """A resistive rack on whatever voltage it gets: i_rms at the nominal voltage."""

    def __init__(self, i_rms: float, nominal_v_rms: float = 230.0) -> None:
        self.i_per_volt = i_rms / nominal_v_rms

    def current(self, t: float, source: SourceLike) -> float:
        return float(source.voltage(np.array([t]))[0]) * self.i_per_volt
