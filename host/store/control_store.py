"""The controller's own SQLite file: telemetry as it came in (raw, minute and hour
roll-ups, host/store/telemetry.py), the journal of the moves it decided
(host/store/intents.py) and its account of why (the decision log).

It is another file than the inventory: telemetry is written every tick and grows with
the site, the inventory holds keys and changes rarely. Same rules: WAL, synchronous FULL
(a move's intent is durable before its frame leaves), migrations in order, and a file
that is not ours is refused. `ControlStore.open(None)` keeps everything in memory (the
benchmarks on the site simulator).
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType

from host.store.schema import migrate, open_database, transaction

APPLICATION_ID = 0x49424354  # "IBCT": marks the file as a controller's store
WHAT = "controller store"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # v1
        """CREATE TABLE layouts (  -- the order of racks and sources the arrays of a row follow
            id INTEGER PRIMARY KEY,
            racks TEXT NOT NULL,  -- JSON list of rack ids
            sources TEXT NOT NULL  -- JSON list of source ids
        )""",
        """CREATE TABLE rack_raw (  -- one row per tick read; a tick not read has no row (a gap)
            time REAL PRIMARY KEY,
            layout INTEGER NOT NULL REFERENCES layouts (id),
            draw BLOB NOT NULL,  -- float64 kW per rack, NaN where no reading (no answer, output open)
            active BLOB NOT NULL  -- int32 source index per rack, -1 open, -2 unknown
        )""",
        """CREATE TABLE rack_rollup (  -- minute (60) and hour (3600) roll-ups of the readings
            width INTEGER NOT NULL,
            bucket INTEGER NOT NULL,  -- start time / width
            layout INTEGER NOT NULL REFERENCES layouts (id),
            n BLOB NOT NULL,  -- int32 readings per rack
            total BLOB NOT NULL,  -- float64 sum of readings per rack
            peak BLOB NOT NULL,  -- float64 largest reading per rack, NaN where none
            PRIMARY KEY (width, bucket)
        )""",
        """CREATE TABLE source_raw (  -- every source's status as read at a tick
            time REAL PRIMARY KEY,
            layout INTEGER NOT NULL REFERENCES layouts (id),
            statuses TEXT NOT NULL  -- JSON list, in the layout's source order
        )""",
        """CREATE TABLE intents (  -- the moves decided, journalled before they are made
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            plan INTEGER,
            rack TEXT NOT NULL,
            source TEXT,  -- where it is expected to be (NULL: output open)
            target TEXT,  -- where it goes (NULL: open the output: a shed)
            reason TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('intended', 'done', 'refused', 'unknown', 'abandoned')),
            outcome TEXT,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX intents_rack ON intents (rack, time)",
        """CREATE TABLE decisions (  -- the controller's account: what it did and why
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT,
            reason TEXT NOT NULL,
            data TEXT NOT NULL  -- JSON
        )""",
        "CREATE INDEX decisions_time ON decisions (time)",
        """CREATE TABLE state (  -- small durable values: quarantined sources, alarms, cursors
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL  -- JSON
        )""",
    ),
)


class ControlStore:
    """An open controller store: `db`, and `transaction()` around several writes."""

    def __init__(self, db: sqlite3.Connection, path: Path | None) -> None:
        self.db = db
        self.path = path

    @classmethod
    def open(cls, path: Path | str | None) -> ControlStore:
        """Open (creating, owner-only) and migrate the store at `path`; None: in memory."""
        if path is None:
            db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            migrate(db, Path(":memory:"), MIGRATIONS, APPLICATION_ID, WHAT)
            return cls(db, None)
        where = Path(path)
        db = open_database(where, MIGRATIONS, APPLICATION_ID, WHAT)
        return cls(db, where)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ControlStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def transaction(self) -> AbstractContextManager[None]:
        """All or nothing, taking the write lock at once; nested calls join the outer one."""
        return transaction(self.db)
