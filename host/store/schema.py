"""The inventory file itself: its SQLite schema as migrations in order, the marks that make
it ours, and opening one safely (configuration, migration, identity checks)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from host.store.records import InventoryError
from protocol import catalog

APPLICATION_ID = 0x49425431  # "IBT1": marks the file as an inventory
KEY_BYTES = 32
COUNTER_MAX = 0xFFFF_FFFF  # the trailer's counter is a u32
FIRST_COUNTER = 1  # a fresh tap has accepted counter 0; the first signed command may use any counter >= 1
BUSY_TIMEOUT_S = 10.0
SQLITE_MAGIC = b"SQLite format 3\x00"


# Schema migrations in order: migration i takes the schema from version i to i + 1.
# Never edit one that has shipped; append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # v1
        """CREATE TABLE site (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            name TEXT NOT NULL,
            voltage_v REAL NOT NULL,
            frequency_hz REAL NOT NULL
        )""",
        """CREATE TABLE sources (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('ups', 'battery', 'generator')),
            capacity_kw REAL NOT NULL,
            energy_kwh REAL,
            phase_deg REAL NOT NULL
        )""",
        """CREATE TABLE racks (
            id TEXT PRIMARY KEY,
            priority TEXT NOT NULL CHECK (priority IN ('critical', 'normal', 'deferrable')),
            rated_kw REAL NOT NULL
        )""",
        f"""CREATE TABLE taps (
            id TEXT PRIMARY KEY,
            unique_id BLOB UNIQUE CHECK (unique_id IS NULL OR length(unique_id) = 8),
            address INTEGER CHECK (address BETWEEN {catalog.ADDR_TAP_MIN} AND {catalog.ADDR_TAP_MAX}),
            bus TEXT NOT NULL,
            key BLOB CHECK (key IS NULL OR length(key) = {KEY_BYTES}),
            key_counter INTEGER NOT NULL DEFAULT {FIRST_COUNTER}
                CHECK (key_counter BETWEEN {FIRST_COUNTER} AND {COUNTER_MAX + 1}),
            board TEXT NOT NULL,
            firmware_version TEXT,
            rack TEXT REFERENCES racks (id),  -- one tap per rack: the site file ensures it
            role TEXT NOT NULL CHECK (role IN ('rack', 'monitor')),
            monitored_source TEXT REFERENCES sources (id),
            alternates TEXT NOT NULL DEFAULT '{{}}',
            commissioned_at REAL,
            UNIQUE (bus, address),
            CHECK ((role = 'rack') = (rack IS NOT NULL)),
            CHECK ((role = 'monitor') = (monitored_source IS NOT NULL))
        )""",
        """CREATE TABLE feeds (
            tap TEXT NOT NULL REFERENCES taps (id) ON DELETE CASCADE,
            input INTEGER NOT NULL CHECK (input BETWEEN 1 AND 4),
            source TEXT NOT NULL REFERENCES sources (id),
            impedance_ohm REAL,
            PRIMARY KEY (tap, input),
            UNIQUE (tap, source)
        )""",
        """CREATE TABLE events (
            tap TEXT NOT NULL REFERENCES taps (id),
            seq INTEGER NOT NULL,
            tap_time_ms INTEGER NOT NULL,
            received_at REAL NOT NULL,
            code INTEGER NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (tap, seq)
        )""",
        "CREATE INDEX events_received ON events (received_at)",
        """CREATE TABLE commands (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            tap TEXT NOT NULL REFERENCES taps (id),
            message TEXT NOT NULL,
            fields TEXT NOT NULL,
            seq INTEGER,
            counter INTEGER,
            state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'acknowledged', 'refused', 'unknown')),
            result TEXT,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX commands_tap ON commands (tap, id)",
    ),
    (  # v2: the controller's own durable values (its epoch, calibrations), beside the keys they go with
        """CREATE TABLE controller (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL  -- JSON
        )""",
    ),
    (  # v3: events keyed by boot, since a tap's indices start again at 0 after each (host/ops/event_reader.py)
        """CREATE TABLE events_by_boot (
            tap TEXT NOT NULL REFERENCES taps (id),
            boot INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            tap_time_ms INTEGER NOT NULL,
            received_at REAL NOT NULL,
            code INTEGER NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (tap, boot, seq)
        )""",
        "INSERT INTO events_by_boot SELECT tap, 1, seq, tap_time_ms, received_at, code, data FROM events",
        "DROP TABLE events",
        "ALTER TABLE events_by_boot RENAME TO events",
        "CREATE INDEX events_received ON events (received_at)",
        """CREATE TABLE event_cursors (
            tap TEXT PRIMARY KEY REFERENCES taps (id),
            boot INTEGER NOT NULL,
            next_seq INTEGER NOT NULL
        )""",
        "INSERT INTO event_cursors SELECT tap, 1, max(seq) + 1 FROM events GROUP BY tap",
    ),
    (  # v4: each bus segment's serial ports, so that a command reaches every segment of the site
        """CREATE TABLE segments (
            name TEXT PRIMARY KEY,
            bus_a TEXT NOT NULL,
            bus_b TEXT NOT NULL CHECK (bus_b != bus_a),
            baud INTEGER NOT NULL CHECK (baud BETWEEN 1200 AND 4000000)
        )""",
    ),
)


SCHEMA_VERSION = len(MIGRATIONS)


def open_database(path: Path, migrations: tuple[tuple[str, ...], ...] = MIGRATIONS,
                  application_id: int = APPLICATION_ID, what: str = "inventory") -> sqlite3.Connection:
    """Open the database at `path`, creating it readable by its owner only (it may hold
    keys), configured (WAL, synchronous FULL) and migrated; a file not ours is refused."""
    refuse_foreign_file(path, what)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise InventoryError(f"{path}: cannot open: {error}") from None
    try:
        configure(db, path, what)
        migrate(db, path, migrations, application_id, what)
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction around several calls: all or nothing. It takes the write
    lock at once (BEGIN IMMEDIATE), so it never fails half-way on a busy file; a nested
    one joins the outer."""
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def refuse_foreign_file(path: Path, what: str = "inventory") -> None:
    """A non-empty file that is not SQLite at all is refused before SQLite sees it."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise InventoryError(f"{path}: not an {what} database (not an SQLite file)")


def configure(db: sqlite3.Connection, path: Path, what: str = "inventory") -> None:
    try:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise InventoryError(f"{path}: not an {what} database ({error})") from None
    if str(mode).lower() != "wal":
        raise InventoryError(f"{path}: cannot use WAL journal mode (got {mode}); is it on a network file system?")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA synchronous = FULL")


def migrate(db: sqlite3.Connection, path: Path, migrations: tuple[tuple[str, ...], ...] = MIGRATIONS,
            application_id: int = APPLICATION_ID, what: str = "inventory") -> None:
    """Bring the schema to the last of `migrations`, one migration per transaction,
    refusing a file that is newer or another program's (another application id)."""
    while True:
        db.execute("BEGIN IMMEDIATE")  # re-read under the write lock: another process may migrate too
        try:
            version = check_identity(db, path, len(migrations), application_id, what)
            if version == len(migrations):
                db.execute("COMMIT")
                return
            for statement in migrations[version]:
                db.execute(statement)
            db.execute(f"PRAGMA application_id = {application_id}")
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def check_identity(db: sqlite3.Connection, path: Path, latest: int = SCHEMA_VERSION,
                   application_id: int = APPLICATION_ID, what: str = "inventory") -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    application = int(db.execute("PRAGMA application_id").fetchone()[0])
    if version == 0 and application == 0:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if tables:
            raise InventoryError(f"{path}: not an {what} database (an SQLite file with tables "
                                 f"{', '.join(tables[:5])})")
        return 0
    if application != application_id:
        raise InventoryError(f"{path}: not an {what} database (SQLite application id {application:#x})")
    if version > latest:
        raise InventoryError(f"{path}: {what} schema version {version} is newer than this software knows "
                             f"({latest}); use the newer software, or a backup made by this version")
    return version
