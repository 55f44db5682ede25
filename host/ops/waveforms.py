"""`ibt capture`: a waveform capture read from a tap, its harmonics, and a plot."""

from __future__ import annotations

import functools
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from host.client.tap_errors import TapRefused
from host.ops.operate import patiently, site_nominal
from host.ops.session import OperatorError, Session, tap_address
from protocol import catalog

CAPTURE_CHUNK = 240
HARMONICS = 15


def capture(session: Session, tap_ref: str, *, cycles: int = 4, png: Path | None = None,
            deadline_s: float = 30.0) -> dict[str, Any]:
    """Capture `cycles` mains cycles of every channel, its harmonics (numpy FFT) and, with
    `png`, a plot of the waveforms and the spectrum."""
    tap = session.tap(tap_ref)
    client = session.client(tap.bus)
    address = tap_address(tap)
    capture_id = random.randrange(1, 0x10000)
    deadline = time.monotonic() + deadline_s
    try:
        info = patiently(lambda: client.capture_start(address, capture_id, catalog.TRIGGER_NOW, cycles), deadline)
        while info["state"] != catalog.CAPTURE_READY:
            if time.monotonic() > deadline:
                raise OperatorError(f"tap {tap.id}: capture {capture_id} not ready within {deadline_s:g} s")
            time.sleep(0.1)
            info = patiently(lambda: client.capture_info(address, capture_id), deadline)
        data = bytearray()
        while len(data) < info["total_bytes"]:
            offset = len(data)
            read = functools.partial(client.capture_read, address, capture_id, offset, CAPTURE_CHUNK)
            chunk = patiently(read, deadline)
            if not chunk["data"]:
                break
            data += bytes(chunk["data"])
    except TapRefused as exc:
        raise OperatorError(f"tap {tap.id}: capture refused: {exc.name} (detail {exc.detail})") from None
    channels = list(info["channels"])
    samples = np.frombuffer(bytes(data[: len(data) - len(data) % (2 * len(channels))]), dtype="<i2")
    waves = samples.reshape(-1, len(channels)).T.astype(float)
    fs = float(info["sample_rate_hz"])
    _, hz = site_nominal(session)
    result: dict[str, Any] = {"tap": tap.id, "capture_id": capture_id, "sample_rate_hz": fs,
                              "samples_per_channel": int(waves.shape[1]), "channels": []}
    for channel, wave in zip(channels, waves, strict=True):
        scaled = wave * channel["scale_nu"] / 1e9
        name = (f"input {channel['index']} V" if channel["kind"] == catalog.CHANNEL_INPUT_VOLTAGE else "current A")
        result["channels"].append({"name": name, "rms": float(np.sqrt(np.mean(scaled**2)))}
                                  | harmonics(scaled, fs, hz))
        channel["wave"] = scaled
    if png is not None:
        plot_capture(result, [c["wave"] for c in channels], fs, png)
        result["png"] = str(png)
    return result


def harmonics(wave: np.ndarray, fs: float, hz: float, count: int = HARMONICS) -> dict[str, Any]:
    """RMS of the fundamental and harmonics 2..count as % of it, and THD (odd and even)."""
    n = len(wave)
    if n < 4:
        return {"fundamental_rms": 0.0, "harmonics_pct": {}, "thd_pct": 0.0}
    spectrum = np.abs(np.fft.rfft(wave - wave.mean())) * 2 / n / math.sqrt(2)
    resolution = fs / n

    def at(order: int) -> float:
        center = order * hz / resolution
        low, high = max(0, math.floor(center - 1)), min(len(spectrum) - 1, math.ceil(center + 1))
        return float(np.sqrt(np.sum(spectrum[low:high + 1] ** 2))) if low <= high else 0.0

    fundamental = at(1)
    table = {str(h): (100 * at(h) / fundamental if fundamental else 0.0) for h in range(2, count + 1)
             if h * hz < fs / 2}
    thd = math.sqrt(sum(v**2 for v in table.values()))
    return {"fundamental_rms": fundamental, "harmonics_pct": table, "thd_pct": thd}


def plot_capture(result: dict[str, Any], waves: list[np.ndarray], fs: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7))
    for channel, wave in zip(result["channels"], waves, strict=True):
        top.plot(np.arange(len(wave)) / fs * 1000, wave, label=channel["name"])
    top.set_xlabel("ms")
    top.set_title(f"tap {result['tap']}: capture {result['capture_id']}")
    top.legend(loc="upper right", fontsize="small")
    width = 0.8 / max(1, len(result["channels"]))
    for i, channel in enumerate(result["channels"]):
        orders = [int(h) for h in channel["harmonics_pct"]]
        bottom.bar([o + i * width for o in orders], list(channel["harmonics_pct"].values()), width,
                   label=f"{channel['name']} (THD {channel['thd_pct']:.1f}%)")
    bottom.set_xlabel("harmonic order")
    bottom.set_ylabel("% of fundamental")
    bottom.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(png)
    plt.close(figure)
