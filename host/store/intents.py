"""The controller's journal of moves and its account of why.

An intent is written, durably, before the move is asked of the fleet, and its outcome
after: done, refused (it did not take effect), or unknown (no answer: the rack's real
source decides, on the next reading or at the next start). `unfinished()` is what a
restart must reconcile; `moves_since(rack)` feeds the dwell and the weekly cap. The
decision log holds one row per thing the controller did or declined to do, with its
reason: the forecast, the risk or the event that caused it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from host.store.control_store import ControlStore


class IntentState(StrEnum):
    INTENDED = "intended"  # journalled; the fleet may or may not have been asked yet
    DONE = "done"  # the rack is on its target
    REFUSED = "refused"  # it did not take effect (a check, the tap, or the fleet refused)
    UNKNOWN = "unknown"  # asked, no answer: the next reading decides
    ABANDONED = "abandoned"  # found not in effect at a restart: never sent again, the next plan decides


OPEN_STATES = (IntentState.INTENDED, IntentState.UNKNOWN)


@dataclass(frozen=True)
class Intent:
    id: int
    time: float
    plan: int | None
    rack: str
    source: str | None
    target: str | None
    reason: str
    state: IntentState
    outcome: str | None


@dataclass(frozen=True)
class Decision:
    id: int
    time: float
    kind: str
    subject: str | None
    reason: str
    data: dict[str, Any]


class Intents:
    """The journal and the decision log in a `ControlStore`; `clock` stamps the rows."""

    def __init__(self, store: ControlStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def intend(self, rack: str, source: str | None, target: str | None, reason: str, plan: int | None = None) -> int:
        now = self.clock()
        with self.store.transaction():
            cursor = self.store.db.execute(
                "INSERT INTO intents (time, plan, rack, source, target, reason, state, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (now, plan, rack, source, target, reason, IntentState.INTENDED, now))
        return int(cursor.lastrowid or 0)

    def settle(self, intent_id: int, state: IntentState, outcome: str = "") -> None:
        with self.store.transaction():
            self.store.db.execute("UPDATE intents SET state = ?, outcome = ?, updated_at = ? WHERE id = ?",
                                  (state.value, outcome, self.clock(), intent_id))

    def unfinished(self) -> list[Intent]:
        return self._intents("WHERE state IN (?, ?) ORDER BY id", tuple(s.value for s in OPEN_STATES))

    def recent(self, since_s: float) -> list[Intent]:
        return self._intents("WHERE time >= ? ORDER BY id", (since_s,))

    def moves_since(self, since_s: float) -> dict[str, list[float]]:
        """Per rack, the times of its moves done since `since_s` (dwell, weekly cap)."""
        out: dict[str, list[float]] = {}
        for rack, time_s in self.store.db.execute(
                "SELECT rack, updated_at FROM intents WHERE state = ? AND updated_at >= ? ORDER BY id",
                (IntentState.DONE.value, since_s)):
            out.setdefault(rack, []).append(float(time_s))
        return out

    def _intents(self, where: str, params: tuple[Any, ...]) -> list[Intent]:
        rows = self.store.db.execute(
            f"SELECT id, time, plan, rack, source, target, reason, state, outcome FROM intents {where}", params)
        return [Intent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], IntentState(r[7]), r[8]) for r in rows]

    # -- the decision log -------------------------------------------------------------------------

    def decide(self, kind: str, reason: str, subject: str | None = None, **data: Any) -> None:
        with self.store.transaction():
            self.store.db.execute("INSERT INTO decisions (time, kind, subject, reason, data) VALUES (?, ?, ?, ?, ?)",
                                  (self.clock(), kind, subject, reason, json.dumps(data, default=str)))

    def decisions(self, since_s: float = 0.0, kind: str | None = None) -> list[Decision]:
        query = "SELECT id, time, kind, subject, reason, data FROM decisions WHERE time >= ?"
        params: tuple[Any, ...] = (since_s,)
        if kind is not None:
            query += " AND kind = ?"
            params += (kind,)
        return [Decision(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]))
                for r in self.store.db.execute(query + " ORDER BY id", params)]

    # -- small durable values ---------------------------------------------------------------------

    def value(self, name: str, default: Any = None) -> Any:
        row = self.store.db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_value(self, name: str, value: Any) -> None:
        with self.store.transaction():
            self.store.db.execute("INSERT INTO state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                                  "value = excluded.value", (name, json.dumps(value)))
