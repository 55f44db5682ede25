"""Telemetry kept: every tick's readings raw for `raw_s`, minute and hour roll-ups for
`minute_s` and `hour_s`, and every source's status, so that the forecasters and the fault
monitor rebuild their state from the store after a restart.

A tick is one row of arrays in a layout's rack order (float64 draw, int32 active source):
one row per tick, whatever the size of the site. A gap is a gap: a tick not read has no
row, and a rack without a reading (no answer, output open) is NaN, never 0. A roll-up
bucket counts the readings it holds per rack, so its mean is over what was read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from host.model.arrays import FloatArray
from host.model.fleet import FleetTelemetry, HealthSignals, SourceStatus
from host.model.site import SourceKind
from host.model.sources import Alarm, SourceState
from host.store.control_store import ControlStore

MINUTE = 60
HOUR = 3600
NO_READING = -2  # active source of a rack that gave no reading


@dataclass(frozen=True)
class Retention:
    raw_s: float = 86_400.0
    minute_s: float = 30 * 86_400.0
    hour_s: float = 400 * 86_400.0
    sources_s: float = 30 * 86_400.0  # source statuses: few rows, the fault monitor's replay


class TelemetryStore:
    """Writes ticks and reads histories back; see the module docstring."""

    def __init__(self, store: ControlStore, retention: Retention | None = None) -> None:
        self.store = store
        self.retention = retention or Retention()
        self._layouts: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
        self._orders: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    # -- writing --------------------------------------------------------------------------------

    def write(self, telemetry: FleetTelemetry, statuses: Mapping[str, SourceStatus],
              risk: Mapping[str, float] | None = None) -> None:
        """One tick: the raw row, both roll-ups, the sources' statuses; old rows pruned."""
        t = float(telemetry.time_s)
        db = self.store.db
        with self.store.transaction():
            layout = self._layout(telemetry.rack_ids, telemetry.source_ids)
            powered = telemetry.active >= 0
            draw = np.where(powered, telemetry.draw_kw, np.nan).astype(np.float64)
            active = np.where(np.isnan(telemetry.draw_kw), NO_READING, telemetry.active).astype(np.int32)
            db.execute("INSERT OR REPLACE INTO rack_raw (time, layout, draw, active) VALUES (?, ?, ?, ?)",
                       (t, layout, draw.tobytes(), active.tobytes()))
            for width in (MINUTE, HOUR):
                self._roll_up(width, t, layout, telemetry.rack_ids, draw)
            rows = [_status_row(statuses[s], (risk or {}).get(s)) for s in telemetry.source_ids if s in statuses]
            db.execute("INSERT OR REPLACE INTO source_raw (time, layout, statuses) VALUES (?, ?, ?)",
                       (t, layout, json.dumps(rows)))
            self._prune(t)

    def _roll_up(self, width: int, t: float, layout: int, rack_ids: tuple[str, ...], draw: FloatArray) -> None:
        bucket = math.floor(t / width)
        db = self.store.db
        row = db.execute("SELECT layout, n, total, peak FROM rack_rollup WHERE width = ? AND bucket = ?",
                         (width, bucket)).fetchone()
        if row is None:
            n = np.zeros(len(rack_ids), dtype=np.int32)
            total = np.zeros(len(rack_ids))
            peak = np.full(len(rack_ids), np.nan)
        else:
            n, total, peak = self._in_layout(row[0], rack_ids, np.frombuffer(row[1], np.int32),
                                             np.frombuffer(row[2]), np.frombuffer(row[3]))
        read = ~np.isnan(draw)
        n = n + read
        total = total + np.where(read, draw, 0.0)
        peak = np.fmax(peak, draw)
        db.execute("INSERT OR REPLACE INTO rack_rollup (width, bucket, layout, n, total, peak) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (width, bucket, layout, n.astype(np.int32).tobytes(), total.tobytes(), peak.tobytes()))

    def _in_layout(self, stored: int, rack_ids: tuple[str, ...], n: np.ndarray, total: FloatArray,
                   peak: FloatArray) -> tuple[np.ndarray, FloatArray, FloatArray]:
        """A bucket's arrays in another layout's rack order (a rack new to it: no readings)."""
        racks = self._order(stored)[0]
        if racks == rack_ids:
            return n.copy(), total.copy(), peak.copy()
        where = {rack: i for i, rack in enumerate(racks)}
        pick = np.array([where.get(rack, -1) for rack in rack_ids])
        known = pick >= 0
        safe = np.where(known, pick, 0)
        return (np.where(known, n[safe], 0).astype(np.int32), np.where(known, total[safe], 0.0),
                np.where(known, peak[safe], np.nan))

    def _prune(self, now: float) -> None:
        keep = self.retention
        db = self.store.db
        db.execute("DELETE FROM rack_raw WHERE time < ?", (now - keep.raw_s,))
        db.execute("DELETE FROM rack_rollup WHERE width = ? AND bucket < ?", (MINUTE, (now - keep.minute_s) // MINUTE))
        db.execute("DELETE FROM rack_rollup WHERE width = ? AND bucket < ?", (HOUR, (now - keep.hour_s) // HOUR))
        db.execute("DELETE FROM source_raw WHERE time < ?", (now - keep.sources_s,))

    def _layout(self, rack_ids: tuple[str, ...], source_ids: tuple[str, ...]) -> int:
        key = (tuple(rack_ids), tuple(source_ids))
        if key in self._layouts:
            return self._layouts[key]
        racks, sources = json.dumps(list(key[0])), json.dumps(list(key[1]))
        row = self.store.db.execute("SELECT id FROM layouts WHERE racks = ? AND sources = ?",
                                    (racks, sources)).fetchone()
        if row is None:
            row = (self.store.db.execute("INSERT INTO layouts (racks, sources) VALUES (?, ?)",
                                         (racks, sources)).lastrowid,)
        self._layouts[key] = int(row[0])
        self._orders[int(row[0])] = key
        return int(row[0])

    def _order(self, layout: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if layout not in self._orders:
            racks, sources = self.store.db.execute("SELECT racks, sources FROM layouts WHERE id = ?",
                                                   (layout,)).fetchone()
            self._orders[layout] = (tuple(json.loads(racks)), tuple(json.loads(sources)))
        return self._orders[layout]

    # -- reading --------------------------------------------------------------------------------

    def latest_time(self) -> float | None:
        row = self.store.db.execute("SELECT max(time) FROM rack_raw").fetchone()
        return None if row[0] is None else float(row[0])

    def rack_history(self, rack_ids: Sequence[str], period_s: float, start_s: float,
                     end_s: float) -> tuple[FloatArray, FloatArray]:
        """(times, draws): the mean draw of each rack in every `period_s` bucket from
        `start_s` up to `end_s`, (racks, buckets), NaN where nothing was read. A period of
        a minute or more (a whole number of minutes) reads the minute roll-ups, which are
        kept longer; a shorter one reads the raw rows."""
        first, last = math.floor(start_s / period_s), math.floor(end_s / period_s)
        count = max(0, last - first + 1)
        n = np.zeros((len(rack_ids), count))
        total = np.zeros((len(rack_ids), count))
        if period_s >= MINUTE and period_s % MINUTE == 0:
            per = int(period_s // MINUTE)
            rows = self.store.db.execute(
                "SELECT bucket, layout, n, total FROM rack_rollup WHERE width = ? AND bucket BETWEEN ? AND ?",
                (MINUTE, first * per, last * per + per - 1))
            for bucket, layout, counts, sums in rows:
                column = bucket // per - first
                got_n, got_total = self._columns(layout, rack_ids, np.frombuffer(counts, np.int32),
                                                 np.frombuffer(sums))
                n[:, column] += got_n
                total[:, column] += got_total
        else:
            rows = self.store.db.execute("SELECT time, layout, draw FROM rack_raw WHERE time BETWEEN ? AND ?",
                                         (first * period_s, (last + 1) * period_s))
            for time_s, layout, blob in rows:
                column = math.floor(time_s / period_s) - first
                if not 0 <= column < count:
                    continue
                draw = np.frombuffer(blob)
                read = (~np.isnan(draw)).astype(np.int32)
                got_n, got_total = self._columns(layout, rack_ids, read, np.where(read > 0, draw, 0.0))
                n[:, column] += got_n
                total[:, column] += got_total
        times = (np.arange(first, first + count) * period_s).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return times, np.where(n > 0, total / np.maximum(n, 1), np.nan)

    def _columns(self, layout: int, rack_ids: Sequence[str], n: np.ndarray,
                 total: FloatArray) -> tuple[FloatArray, FloatArray]:
        racks = self._order(layout)[0]
        if tuple(racks) == tuple(rack_ids):
            return n.astype(np.float64), total
        where = {rack: i for i, rack in enumerate(racks)}
        pick = np.array([where.get(rack, -1) for rack in rack_ids])
        known = pick >= 0
        safe = np.where(known, pick, 0)
        return np.where(known, n[safe], 0).astype(np.float64), np.where(known, total[safe], 0.0)

    def source_history(self, since_s: float) -> list[tuple[float, dict[str, SourceStatus]]]:
        """Every stored tick's source statuses from `since_s`, oldest first."""
        out = []
        rows = self.store.db.execute("SELECT time, layout, statuses FROM source_raw WHERE time >= ? ORDER BY time",
                                     (since_s,))
        for time_s, _layout, text in rows:
            statuses = {row["id"]: _status_of(row) for row in json.loads(text)}
            out.append((float(time_s), statuses))
        return out


def _status_row(status: SourceStatus, risk: float | None) -> dict[str, Any]:
    signals = None if status.signals is None else vars(status.signals)
    return {"id": status.source_id, "kind": status.kind.value, "time": status.time_s, "state": status.state.value,
            "capacity_kw": status.capacity_kw, "load_kw": status.load_kw, "available_kw": status.available_kw,
            "overload_progress": None if math.isnan(status.overload_progress) else status.overload_progress,
            "soc": status.state_of_charge, "runtime_s": status.runtime_s,
            "alarms": sorted(a.value for a in status.alarms),
            "signals": signals, "stored_kwh": status.stored_kwh, "risk": risk}


def _status_of(row: dict[str, Any]) -> SourceStatus:
    signals = None if row["signals"] is None else HealthSignals(**row["signals"])
    progress = row["overload_progress"]
    return SourceStatus(
        source_id=row["id"], kind=SourceKind(row["kind"]), time_s=float(row["time"]), state=SourceState(row["state"]),
        capacity_kw=float(row["capacity_kw"]), load_kw=float(row["load_kw"]), available_kw=float(row["available_kw"]),
        overload_progress=math.nan if progress is None else float(progress), state_of_charge=row["soc"],
        runtime_s=row["runtime_s"], alarms=frozenset(Alarm(a) for a in row["alarms"]), signals=signals,
        stored_kwh=row["stored_kwh"],
    )
