"""The controller's store (host/store/control_store.py, telemetry.py, intents.py): ticks
kept raw and rolled up, gaps kept as gaps, retention, histories read back for the
forecasters, the source statuses replayed, and the journal of intents."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from host.model.arrays import frozen
from host.model.fleet import FleetTelemetry, HealthSignals, SourceStatus
from host.model.site import SourceKind
from host.model.sources import Alarm, SourceState
from host.store.control_store import ControlStore
from host.store.intents import Intents, IntentState
from host.store.records import InventoryError
from host.store.telemetry import Retention, TelemetryStore

RACKS = ("r1", "r2", "r3")
SOURCES = ("ups-1", "ups-2")


def _telemetry(t: float, draw: list[float], active: list[int], racks: tuple[str, ...] = RACKS) -> FleetTelemetry:
    n = len(racks)
    return FleetTelemetry(t, racks, SOURCES, {r: i for i, r in enumerate(racks)}, frozen(np.array(active)),
                          frozen(np.array(draw, dtype=float)), frozen(np.zeros(n)), frozen(np.zeros((n, 2), int)),
                          frozen(np.zeros((n, 2))), frozen(np.ones((n, 2), bool)), frozen(np.ones((n, 2), bool)))


def _status(source: str, t: float, state: SourceState = SourceState.UP) -> SourceStatus:
    return SourceStatus(source, SourceKind.UPS, t, state, 100.0, 10.0, 90.0, math.nan, None, None,
                        frozenset({Alarm.OVERLOAD}), HealthSignals(31.5, None, None, None, 1.2, 2.5))


def _statuses(t: float) -> dict[str, SourceStatus]:
    return {s: _status(s, t) for s in SOURCES}


def test_minute_means_count_only_what_was_read_and_a_gap_stays_a_gap() -> None:
    store = TelemetryStore(ControlStore.open(None))
    store.write(_telemetry(0.0, [1.0, 2.0, 5.0], [0, 1, -1]), _statuses(0.0))  # r3 open: no reading
    store.write(_telemetry(30.0, [3.0, math.nan, 5.0], [0, -1, 0]), _statuses(30.0))  # r2 silent
    # minute 1 not read at all; minute 2 read once
    store.write(_telemetry(120.0, [4.0, 4.0, 4.0], [0, 1, 1]), _statuses(120.0))
    times, draws = store.rack_history(RACKS, 60.0, 0.0, 120.0)
    assert times.tolist() == [0.0, 60.0, 120.0]
    assert draws[0].tolist()[0] == 2.0 and draws[1].tolist()[0] == 2.0 and draws[2].tolist()[0] == 5.0
    assert np.isnan(draws[:, 1]).all(), "a minute with no reading is a gap, never 0"
    assert draws[:, 2].tolist() == [4.0, 4.0, 4.0]
    _, by_tick = store.rack_history(RACKS, 30.0, 0.0, 30.0)  # shorter than a minute: the raw rows
    assert by_tick[0].tolist() == [1.0, 3.0] and math.isnan(by_tick[1, 1]) and math.isnan(by_tick[2, 0])


def test_retention_drops_old_raw_rows_and_keeps_the_roll_ups() -> None:
    store = TelemetryStore(ControlStore.open(None), Retention(raw_s=60.0, minute_s=600.0, hour_s=86_400.0))
    for k in range(20):
        store.write(_telemetry(60.0 * k, [1.0, 1.0, 1.0], [0, 0, 0]), _statuses(60.0 * k))
    raw = store.store.db.execute("SELECT count(*) FROM rack_raw").fetchone()[0]
    minutes = store.store.db.execute("SELECT count(*) FROM rack_rollup WHERE width = 60").fetchone()[0]
    assert raw == 2 and minutes == 11
    _, hours = store.rack_history(RACKS, 3600.0, 0.0, 0.0)
    assert hours[:, 0].tolist() == [1.0, 1.0, 1.0]  # an hour is 60 minutes: read back from the minutes kept


def test_a_new_layout_keeps_each_racks_history() -> None:
    store = TelemetryStore(ControlStore.open(None))
    store.write(_telemetry(0.0, [1.0, 2.0, 3.0], [0, 0, 0]), _statuses(0.0))
    store.write(_telemetry(50.0, [5.0, 9.0], [0, 0], racks=("r3", "r4")), _statuses(50.0))  # r1 gone, r4 new
    store.write(_telemetry(70.0, [7.0, 9.0], [0, 0], racks=("r3", "r4")), _statuses(70.0))
    _, draws = store.rack_history(("r1", "r3", "r4"), 60.0, 0.0, 60.0)
    assert draws[1:, 0].tolist() == [4.0, 9.0] and math.isnan(draws[0, 0])  # the minute follows the new layout
    assert draws[1:, 1].tolist() == [7.0, 9.0]


def test_source_statuses_come_back_as_they_were_written(tmp_path: Path) -> None:
    path = tmp_path / "control.db"
    with ControlStore.open(path) as opened:
        TelemetryStore(opened).write(_telemetry(5.0, [1.0, 1.0, 1.0], [0, 0, 0]), _statuses(5.0), {"ups-1": 0.25})
    with ControlStore.open(path) as reopened:
        ((t, statuses),) = TelemetryStore(reopened).source_history(0.0)
    assert t == 5.0 and statuses["ups-1"].signals == _statuses(5.0)["ups-1"].signals
    assert statuses["ups-2"].alarms == {Alarm.OVERLOAD} and math.isnan(statuses["ups-2"].overload_progress)


def test_a_file_that_is_not_a_controller_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not sqlite at all")
    with pytest.raises(InventoryError, match="not an controller store database"):
        ControlStore.open(path)


def test_intents_are_journalled_settled_and_counted_for_the_dwell() -> None:
    clock = iter(range(100, 200)).__next__
    intents = Intents(ControlStore.open(None), lambda: float(clock()))
    first = intents.intend("r1", "ups-1", "ups-2", "plan 1")
    second = intents.intend("r2", "ups-1", None, "shed")
    intents.settle(first, IntentState.DONE, "done")
    assert [i.id for i in intents.unfinished()] == [second]
    assert intents.moves_since(0.0) == {"r1": [102.0]}
    intents.decide("plan", "stay: below the margin", None, moves=[])
    assert [(d.kind, d.reason, d.data) for d in intents.decisions()] == [("plan", "stay: below the margin",
                                                                          {"moves": []})]
    intents.set_value("quarantined", {"ups-1": "lost"})
    assert intents.value("quarantined") == {"ups-1": "lost"} and intents.value("missing", 7) == 7
