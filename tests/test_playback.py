"""Recorded waveforms played into the sim board: our CSV format and IEEE C37.111
COMTRADE (read by the `comtrade` package). The firmware measures what was recorded and
reacts to a recorded loss of source as to a synthesised one."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from host.sim.rig.plant import Plant
from host.sim.rig.playback import ProportionalLoad, RecordedLoad, RecordedSource, Recording, RecordingError
from tests.protection_rig import HONGFA_HFE20, supply_gap_s
from tests.tap_rig import PATIENCE_S, SimTap

FS = 4000


def _sines(seconds: float, lost_at: float | None) -> dict[str, np.ndarray]:
    t = np.arange(int(seconds * FS)) / FS
    v1 = 230 * math.sqrt(2) * np.sin(2 * math.pi * 50 * t)
    if lost_at is not None:
        v1[t >= lost_at] = 0.0
    v2 = 231 * math.sqrt(2) * np.sin(2 * math.pi * 50 * t - 2 * math.pi / 3)
    i = 12 * math.sqrt(2) * np.sin(2 * math.pi * 50 * t - 0.3) * (v1 != 0)
    return {"time_s": t, "v1": v1, "v2": v2, "i": i}


def write_csv(path: Path, columns: dict[str, np.ndarray]) -> Path:
    names = list(columns)
    rows = np.column_stack([columns[n] for n in names])
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(f"{x:.6f}" for x in row) for row in rows) + "\n")
    return path


def write_comtrade(directory: Path, columns: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """A 1999 ASCII COMTRADE record: VA, VB in volts, IA in amperes (a = 0.01 A per count)."""
    n = len(columns["time_s"])
    cfg = directory / "disturbance.cfg"
    cfg.write_text(
        "SUBSTATION,IBT-FIELD,1999\n3,3A,0D\n"
        "1,VA,A,,V,0.1,0.0,0,-32767,32767,1,1,P\n"
        "2,VB,B,,V,0.1,0.0,0,-32767,32767,1,1,P\n"
        "3,IA,A,,A,0.01,0.0,0,-32767,32767,1,1,P\n"
        f"50\n1\n{FS},{n}\n26/11/2026,00:00:00.000000\n26/11/2026,00:00:00.500000\nASCII\n1\n"
    )
    dat = directory / "disturbance.dat"
    lines = [
        f"{k + 1},{round(columns['time_s'][k] * 1e6)},{round(columns['v1'][k] * 10)},"
        f"{round(columns['v2'][k] * 10)},{round(columns['i'][k] * 100)}"
        for k in range(n)
    ]
    dat.write_text("\n".join(lines) + "\n")
    return cfg, dat


def _play(tmp_path: Path, mpy_tree: Path, recording: Recording, current: bool) -> SimTap:
    sources = [RecordedSource(recording, "v1"), RecordedSource(recording, "v2")]
    load = RecordedLoad(recording) if current else ProportionalLoad(12.0)
    plant = Plant(sources, load, [HONGFA_HFE20] * 2)
    plant.keep_trace = True
    return SimTap(tmp_path, plant).start(mpy_tree)


@pytest.mark.parametrize("fmt", ["csv", "comtrade"])
def test_recorded_loss_of_source_is_played_back(fmt: str, tmp_path: Path, mpy_tree: Path) -> None:
    columns = _sines(4.0, lost_at=2.0)
    if fmt == "csv":
        recording = Recording.from_csv(write_csv(tmp_path / "record.csv", columns))
    else:
        cfg, dat = write_comtrade(tmp_path, columns)
        recording = Recording.from_comtrade(cfg, dat, {"VA": "v1", "VB": "v2", "IA": "i"})
    assert recording.fs == pytest.approx(FS) and recording.seconds == pytest.approx(4.0)
    rig = _play(tmp_path, mpy_tree, recording, current=fmt == "comtrade")
    try:
        deadline = time.monotonic() + PATIENCE_S
        reading = 0
        while not reading and time.monotonic() < deadline:
            reading = rig.ask(rig.plain("TELEMETRY")).fields()["inputs"][1]["voltage_mV"]
        assert reading == pytest.approx(231_000, rel=0.005)
        rig.wait_active(2)
    finally:
        rig.stop()
    gap = supply_gap_s(rig.plant, 2.0)
    assert gap < 0.05 and rig.plant.parallel_events == []


def test_bad_recordings_are_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("t,v1\n0,1\n")
    with pytest.raises(RecordingError, match="line 1 must start with time_s"):
        Recording.from_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("time_s,v9\n0,1\n0.1,2\n")
    with pytest.raises(RecordingError, match="unknown channels"):
        Recording.from_csv(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("time_s,v1\n0,1\n0.1,2\n0.35,3\n")
    with pytest.raises(RecordingError, match="evenly spaced"):
        Recording.from_csv(tmp_path / "c.csv")
    cfg, dat = write_comtrade(tmp_path, _sines(0.1, None))
    with pytest.raises(RecordingError, match="no analog channel 'VC'"):
        Recording.from_comtrade(cfg, dat, {"VC": "v1"})
