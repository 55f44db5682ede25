"""The site inventory: one SQLite file per site holding what the controller must never
forget. What is installed (from the site file), each tap's commissioning record and
32-byte key, the next authentication counter per tap, the events read from the taps,
and the history of every command sent.

Durability is the point. The file is opened in WAL mode with `synchronous=FULL`, so a
committed transaction survives a host crash or power cut, and WAL lets readers (a
report, a second console) read while the controller writes. A signed command is safe
only if its counter is durable before the frame leaves (SPEC.md, "Authentication": a
tap refuses a counter it has seen; a host that reused one would be refused, and one
that lost track would have to ask): `commit_counter` commits before it returns, and a
counter can never go back.

The schema is versioned with `PRAGMA user_version` and built by an ordered list of
migrations; the file is marked with `PRAGMA application_id` so that another program's
SQLite file is refused rather than written into. A file from newer code is refused:
old code cannot know what a newer schema means.
"""

from __future__ import annotations

import difflib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

from host.model.site_file import SiteFile, TapRecord, TapRole
from host.store.bus_keys import BusKeyStore
from host.store.json_fields import dump as dump_json
from host.store.json_fields import load as load_json
from host.store.records import (
    NEXT_STATES,
    CommandRecord,
    CommandState,
    EventCursor,
    EventRecord,
    InventoryError,
    TapEvent,
    TapInfo,
    TapRef,
    UnknownTap,
)
from host.store.schema import COUNTER_MAX, KEY_BYTES, open_database, transaction
from protocol import catalog


class Inventory:
    """One site's inventory file. Not shared between threads: open one per thread or
    process; WAL lets them work on the same file."""

    def __init__(self, db: sqlite3.Connection, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.path = path
        self._clock = clock

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, clock: Callable[[], float] = time.time) -> Inventory:
        """Open the inventory at path, creating it (readable by its owner only: it holds
        keys) if it does not exist, and migrating it to the current schema."""
        path = Path(path)
        db = open_database(path)
        return cls(db, path, clock)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Inventory:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def settings(self) -> dict[str, Any]:
        """The connection settings durability depends on, for checks and diagnostics."""
        return {
            "journal_mode": str(self._db.execute("PRAGMA journal_mode").fetchone()[0]),
            "synchronous": {0: "off", 1: "normal", 2: "full", 3: "extra"}.get(
                self._db.execute("PRAGMA synchronous").fetchone()[0], "?"),
            "foreign_keys": bool(self._db.execute("PRAGMA foreign_keys").fetchone()[0]),
        }

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction around several calls: all or nothing (schema.transaction)."""
        return transaction(self._db)

    # -- the site ------------------------------------------------------------------------------

    def import_site(self, parsed: SiteFile) -> None:
        """Load or update everything from a site file, in one transaction.

        Importing the same file again changes nothing; an edited file updates the
        inventory. Keys, counters, firmware versions, commissioning, events and command
        history are kept. Refused (and nothing changed): moving a commissioned tap to
        another address or bus, or giving it another unique id, which the tap itself
        would not know of; and dropping a tap that has been commissioned or has history."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO site (id, name, voltage_v, frequency_hz) VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET name = excluded.name, voltage_v = excluded.voltage_v, frequency_hz = excluded.frequency_hz",
                (parsed.name, parsed.voltage_v, parsed.frequency_hz))
            self._import_sources(parsed)
            self._import_racks(parsed)
            self._import_taps(parsed)
            self._drop_missing("racks", [r.id for r in parsed.site.racks])
            self._drop_missing("sources", [s.id for s in parsed.site.sources])

    def site(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT name, voltage_v, frequency_hz FROM site").fetchone()
        return None if row is None else {"name": row[0], "voltage_v": row[1], "frequency_hz": row[2]}

    def sources(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id, kind, capacity_kw, energy_kwh, phase_deg FROM sources ORDER BY id")
        return [dict(zip(("id", "kind", "capacity_kw", "energy_kwh", "phase_deg"), row, strict=True)) for row in rows]

    def racks(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id, priority, rated_kw FROM racks ORDER BY id")
        return [dict(zip(("id", "priority", "rated_kw"), row, strict=True)) for row in rows]

    def _import_sources(self, parsed: SiteFile) -> None:
        for source in parsed.site.sources:
            self._db.execute(
                "INSERT INTO sources (id, kind, capacity_kw, energy_kwh, phase_deg) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, capacity_kw = excluded.capacity_kw, "
                "energy_kwh = excluded.energy_kwh, phase_deg = excluded.phase_deg",
                (source.id, source.kind.value, source.capacity_kw, source.energy_kwh, parsed.phase_deg[source.id]))

    def _import_racks(self, parsed: SiteFile) -> None:
        for rack in parsed.site.racks:
            self._db.execute(
                "INSERT INTO racks (id, priority, rated_kw) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET priority = excluded.priority, rated_kw = excluded.rated_kw",
                (rack.id, rack.priority.value, rack.rated_kw))

    def _import_taps(self, parsed: SiteFile) -> None:
        existing = {row[0]: row for row in self._db.execute(
            "SELECT id, address, bus, unique_id, commissioned_at FROM taps")}
        for record in parsed.taps:
            if record.id in existing:
                _refuse_moving(record, *existing[record.id][1:])
        self._drop_missing_taps([t.id for t in parsed.taps])
        # Addresses or unique ids may be swapped between taps in one import: free every
        # one that changes first, so that uniqueness holds at each step.
        for record in parsed.taps:
            row = existing.get(record.id)
            if row is not None and (row[1], row[2]) != (record.address, record.bus):
                self._db.execute("UPDATE taps SET address = NULL WHERE id = ?", (record.id,))
            if row is not None and record.unique_id is not None and row[3] not in (None, record.unique_id):
                self._db.execute("UPDATE taps SET unique_id = NULL WHERE id = ?", (record.id,))
        for record in parsed.taps:
            self._upsert_tap(record)
            self._db.execute("DELETE FROM feeds WHERE tap = ?", (record.id,))
            self._db.executemany(
                "INSERT INTO feeds (tap, input, source, impedance_ohm) VALUES (?, ?, ?, ?)",
                [(record.id, n, source, impedance)
                 for n, (source, impedance) in enumerate(zip(record.inputs, record.impedance_ohm, strict=True), 1)])

    def _upsert_tap(self, record: TapRecord) -> None:
        alternates = json.dumps({str(k): list(v) for k, v in sorted(record.alternates.items())})
        try:
            self._db.execute(
                "INSERT INTO taps (id, unique_id, address, bus, board, rack, role, monitored_source, alternates) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "unique_id = coalesce(excluded.unique_id, taps.unique_id), address = excluded.address, "
                "bus = excluded.bus, board = excluded.board, rack = excluded.rack, role = excluded.role, "
                "monitored_source = excluded.monitored_source, alternates = excluded.alternates",
                (record.id, record.unique_id, record.address, record.bus, record.board, record.rack,
                 record.role.value, record.monitors, alternates))
        except sqlite3.IntegrityError as error:
            holder = self._holder(record)
            raise InventoryError(f"tap {record.id!r}: {holder or error}") from None

    def _holder(self, record: TapRecord) -> str | None:
        """Who already holds what the record claims, for a clear refusal."""
        row = self._db.execute("SELECT id FROM taps WHERE unique_id = ? AND id != ?",
                               (record.unique_id, record.id)).fetchone()
        if row is not None and record.unique_id is not None:
            return f"unique id {record.unique_id.hex()} already belongs to tap {row[0]!r} in the inventory"
        row = self._db.execute("SELECT id FROM taps WHERE bus = ? AND address = ? AND id != ?",
                               (record.bus, record.address, record.id)).fetchone()
        if row is not None:
            return f"address {record.address} on bus {record.bus!r} already belongs to tap {row[0]!r}"
        return None

    def _drop_missing_taps(self, keep: list[str]) -> None:
        """A tap gone from the file is dropped, unless it has a past worth keeping."""
        for (tap_id,) in self._db.execute("SELECT id FROM taps").fetchall():
            if tap_id in keep:
                continue
            past = self._db.execute(
                "SELECT t.commissioned_at IS NOT NULL OR t.key IS NOT NULL "
                "OR EXISTS (SELECT 1 FROM events WHERE tap = t.id) OR EXISTS (SELECT 1 FROM commands WHERE tap = t.id) "
                "FROM taps t WHERE t.id = ?", (tap_id,)).fetchone()[0]
            if past:
                raise InventoryError(f"tap {tap_id!r} is not in the site file, but the inventory has its key, "
                                     "commissioning or history: put it back in the file (it stays on record)")
            self._db.execute("DELETE FROM taps WHERE id = ?", (tap_id,))

    def _drop_missing(self, table: str, keep: list[str]) -> None:
        marks = ", ".join("?" * len(keep))
        try:
            self._db.execute(f"DELETE FROM {table} WHERE id NOT IN ({marks})", keep)
        except sqlite3.IntegrityError:
            raise InventoryError(f"{table} removed from the site file are still referred to by taps "
                                 "kept in the inventory") from None

    # -- taps ---------------------------------------------------------------------------------

    def tap(self, ref: TapRef, bus: str | None = None) -> TapInfo:
        """A tap by id, by address (on `bus` when addresses repeat across segments), or by
        unique id (8 bytes or 16 hex digits)."""
        return self._tap_info(self._tap_id(ref, bus))

    def taps(self) -> list[TapInfo]:
        return [self._tap_info(row[0]) for row in self._db.execute("SELECT id FROM taps ORDER BY bus, address, id")]

    def _tap_id(self, ref: TapRef, bus: str | None = None) -> str:
        rows: list[tuple[str]] = []
        if isinstance(ref, bool):
            pass
        elif isinstance(ref, int):
            query = "SELECT id FROM taps WHERE address = ?" + (" AND bus = ?" if bus is not None else "")
            rows = self._db.execute(query, (ref, bus) if bus is not None else (ref,)).fetchall()
            if len(rows) > 1:
                buses = sorted(r[0] for r in self._db.execute("SELECT bus FROM taps WHERE address = ?", (ref,)))
                raise InventoryError(f"address {ref} is used on several buses ({', '.join(buses)}): name the bus")
        elif isinstance(ref, bytes):
            rows = self._db.execute("SELECT id FROM taps WHERE unique_id = ?", (ref,)).fetchall()
        else:
            rows = self._db.execute("SELECT id FROM taps WHERE id = ?", (ref,)).fetchall()
            if not rows and _is_unique_id(ref):
                rows = self._db.execute("SELECT id FROM taps WHERE unique_id = ?", (bytes.fromhex(ref),)).fetchall()
        if not rows:
            ids = [row[0] for row in self._db.execute("SELECT id FROM taps")]
            raise UnknownTap(ref, difflib.get_close_matches(str(ref), ids, n=3) if isinstance(ref, str) else ())
        return rows[0][0]

    def _tap_info(self, tap_id: str) -> TapInfo:
        row = self._db.execute(
            "SELECT id, role, address, bus, board, unique_id, rack, monitored_source, alternates, key IS NOT NULL, "
            "key_counter, firmware_version, commissioned_at FROM taps WHERE id = ?", (tap_id,)).fetchone()
        inputs = tuple(r[0] for r in self._db.execute("SELECT source FROM feeds WHERE tap = ? ORDER BY input",
                                                      (tap_id,)))
        alternates = {int(k): tuple(v) for k, v in json.loads(row[8]).items()}
        return TapInfo(row[0], TapRole(row[1]), row[2], row[3], row[4], row[5], row[6], row[7], inputs, alternates,
                       bool(row[9]), row[10], row[11], row[12])

    def set_firmware(self, tap: TapRef, version: str) -> None:
        tap_id = self._tap_id(tap)
        with self.transaction():
            self._db.execute("UPDATE taps SET firmware_version = ? WHERE id = ?", (version, tap_id))

    def mark_commissioned(self, tap: TapRef, address: int, *, unique_id: bytes | None = None,
                          at: float | None = None) -> None:
        """Record that the tap answers at `address` (after ASSIGN_ADDRESS) and, when
        given, that it is the board with `unique_id`. A unique id other than the one on
        record is refused: that is another board, which needs its own key."""
        tap_id = self._tap_id(tap)
        if not catalog.ADDR_TAP_MIN <= address <= catalog.ADDR_TAP_MAX:
            raise InventoryError(f"tap {tap_id!r}: address must be {catalog.ADDR_TAP_MIN} to {catalog.ADDR_TAP_MAX}")
        with self.transaction():
            bus, known_uid = self._db.execute("SELECT bus, unique_id FROM taps WHERE id = ?", (tap_id,)).fetchone()
            if unique_id is not None and known_uid is not None and unique_id != known_uid:
                raise InventoryError(f"tap {tap_id!r} is unique id {known_uid.hex()} in the inventory, not "
                                     f"{unique_id.hex()}: a replaced board needs the site file updated first")
            holder = self._db.execute("SELECT id FROM taps WHERE bus = ? AND address = ? AND id != ?",
                                      (bus, address, tap_id)).fetchone()
            if holder is not None:
                raise InventoryError(f"tap {tap_id!r}: address {address} on bus {bus!r} belongs to tap {holder[0]!r}")
            holder = self._db.execute("SELECT id FROM taps WHERE unique_id = ? AND id != ?",
                                      (unique_id, tap_id)).fetchone()
            if holder is not None and unique_id is not None:
                raise InventoryError(f"tap {tap_id!r}: unique id {unique_id.hex()} belongs to tap {holder[0]!r}")
            self._db.execute(
                "UPDATE taps SET address = ?, unique_id = coalesce(?, unique_id), commissioned_at = ? WHERE id = ?",
                (address, unique_id, self._clock() if at is None else at, tap_id))

    # -- keys and counters ------------------------------------------------------------------

    def set_key(self, tap: TapRef, key: bytes) -> None:
        """Record the tap's key (flashed, or after SET_KEY was acknowledged). The counter
        carries on: the sequence continues across a key change (SPEC.md)."""
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise InventoryError(f"a key is {KEY_BYTES} bytes")
        tap_id = self._tap_id(tap)
        with self.transaction():
            self._db.execute("UPDATE taps SET key = ? WHERE id = ?", (key, tap_id))

    def new_key(self, tap: TapRef) -> bytes:
        """A fresh random key, recorded for the tap before it is returned to be flashed."""
        key = secrets.token_bytes(KEY_BYTES)
        self.set_key(tap, key)
        return key

    def key_store(self, bus: str | None = None) -> BusKeyStore:
        """The key store for a client of one bus segment (addresses are per segment)."""
        return BusKeyStore(self, bus)

    def key_for(self, address: int, bus: str | None = None) -> tuple[bytes, int]:
        """The key of the tap at address and the next counter to sign with."""
        tap_id = self._tap_id(address, bus)
        key, counter = self._db.execute("SELECT key, key_counter FROM taps WHERE id = ?", (tap_id,)).fetchone()
        if key is None:
            raise InventoryError(f"tap {tap_id!r} (address {address}) has no key in the inventory: "
                                 "record the key it was flashed with (set_key)")
        return bytes(key), int(counter)

    def commit_counter(self, address: int, counter: int, bus: str | None = None) -> None:
        """Record, durably, that `counter` is used (about to be sent, or seen at the tap in
        IDENTIFY/STATUS): the next counter becomes counter + 1. Returns only once that is
        on disk, so call it before the frame is sent. A counter below the next one is
        refused: it may have been sent already, and a tap must never see one twice."""
        tap_id = self._tap_id(address, bus)
        if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter <= COUNTER_MAX:
            raise InventoryError(f"tap {tap_id!r}: a counter is 0 to {COUNTER_MAX} (got {counter!r})")
        with self.transaction():
            (next_counter,) = self._db.execute("SELECT key_counter FROM taps WHERE id = ?", (tap_id,)).fetchone()
            if counter < next_counter:
                raise InventoryError(f"tap {tap_id!r}: counter {counter} is below the next unused counter "
                                     f"{next_counter}; counters never go back")
            self._db.execute("UPDATE taps SET key_counter = ? WHERE id = ?", (counter + 1, tap_id))

    def catch_up_counter(self, address: int, counter: int, bus: str | None = None) -> None:
        """Make sure the next counter is above `counter` (one the tap reports having
        accepted, e.g. in a REPLAY refusal); a lower value changes nothing. Unlike
        commit_counter, a value below the next one is not a mistake here."""
        tap_id = self._tap_id(address, bus)
        if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter <= COUNTER_MAX:
            raise InventoryError(f"tap {tap_id!r}: a counter is 0 to {COUNTER_MAX} (got {counter!r})")
        with self.transaction():
            self._db.execute("UPDATE taps SET key_counter = max(key_counter, ?) WHERE id = ?", (counter + 1, tap_id))

    def take_counter(self, address: int, bus: str | None = None) -> tuple[bytes, int]:
        """key_for and commit_counter as one transaction: the key and a counter that no
        other caller, in this process or another, will be given."""
        with self.transaction():
            key, counter = self.key_for(address, bus)
            self.commit_counter(address, counter, bus)
        return key, counter

    # -- command history -------------------------------------------------------------------

    def record_command(self, tap: TapRef, message: str, fields: dict[str, Any], *, seq: int | None = None,
                       counter: int | None = None, state: CommandState | str = CommandState.PENDING) -> int:
        """Journal a command (durably) and return its id; record it before sending it."""
        tap_id = self._tap_id(tap)
        now = self._clock()
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO commands (time, tap, message, fields, seq, counter, state, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (now, tap_id, message, dump_json(fields), seq, counter, CommandState(state).value, now))
        return int(cursor.lastrowid or 0)

    def update_command(self, command_id: int, state: CommandState | str, result: str | None = None) -> None:
        """Move a command on (pending, sent, then acknowledged, refused or unknown; unknown
        may still resolve). A known outcome is final: changing it is refused."""
        new = CommandState(state)
        with self.transaction():
            row = self._db.execute("SELECT state FROM commands WHERE id = ?", (command_id,)).fetchone()
            if row is None:
                raise InventoryError(f"no command {command_id} in the history")
            old = CommandState(row[0])
            if new != old and new not in NEXT_STATES[old]:
                raise InventoryError(f"command {command_id}: cannot go from {old} to {new}")
            self._db.execute("UPDATE commands SET state = ?, result = coalesce(?, result), updated_at = ? WHERE id = ?",
                             (new.value, result, self._clock(), command_id))

    def note_frame(self, command_id: int, seq: int, counter: int) -> None:
        """A journalled command's signed frame: its sequence number and counter, durable
        before the frame leaves (reconciliation after a crash knows which frame it was)."""
        with self.transaction():
            self._db.execute("UPDATE commands SET seq = ?, counter = ?, updated_at = ? WHERE id = ?",
                             (seq, counter, self._clock(), command_id))

    def commands(self, tap: TapRef | None = None) -> list[CommandRecord]:
        query = "SELECT id, time, tap, message, fields, seq, counter, state, result, updated_at FROM commands"
        params: tuple[Any, ...] = ()
        if tap is not None:
            query += " WHERE tap = ?"
            params = (self._tap_id(tap),)
        return [CommandRecord(r[0], r[1], r[2], r[3], load_json(r[4]), r[5], r[6], CommandState(r[7]), r[8], r[9])
                for r in self._db.execute(query + " ORDER BY id", params)]

    # -- events --------------------------------------------------------------------------------

    def add_events(self, tap: TapRef, events: Iterable[TapEvent], cursor: EventCursor | None = None) -> int:
        """Store events read from a tap; ones already stored (same boot and seq) are skipped,
        so reading overlapping ranges is harmless. With `cursor`, where the reader now is, in
        the same transaction. Returns how many were new."""
        tap_id = self._tap_id(tap)
        now = self._clock()
        with self.transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO events (tap, boot, seq, tap_time_ms, received_at, code, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(tap_id, e.boot, e.seq, e.time_ms, now, e.code, dump_json(e.data)) for e in events])
            added = self._db.total_changes - before
            if cursor is not None:
                self._db.execute(
                    "INSERT INTO event_cursors (tap, boot, next_seq) VALUES (?, ?, ?) "
                    "ON CONFLICT (tap) DO UPDATE SET boot = excluded.boot, next_seq = excluded.next_seq",
                    (tap_id, cursor.boot, cursor.next_seq))
            return added

    def event_cursor(self, tap: TapRef) -> EventCursor | None:
        """Where the last read of the tap's log ended; None if it was never read."""
        row = self._db.execute("SELECT boot, next_seq FROM event_cursors WHERE tap = ?",
                               (self._tap_id(tap),)).fetchone()
        return None if row is None else EventCursor(int(row[0]), int(row[1]))

    def events(self, tap: TapRef | None = None, since: float | None = None) -> list[EventRecord]:
        """Events by tap and sequence, optionally only those received at or after `since`."""
        clauses: list[str] = []
        params: list[Any] = []
        if tap is not None:
            clauses.append("tap = ?")
            params.append(self._tap_id(tap))
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(since)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT tap, seq, tap_time_ms, received_at, code, data, boot FROM events{where} "
            "ORDER BY received_at, tap, boot, seq", params)
        return [EventRecord(r[0], r[1], r[2], r[3], r[4], load_json(r[5]), r[6]) for r in rows]

    def last_event_seq(self, tap: TapRef) -> int | None:
        """The highest event seq stored for the tap in its latest boot."""
        row = self._db.execute("SELECT max(seq) FROM events WHERE tap = ? AND boot = "
                               "(SELECT max(boot) FROM events WHERE tap = ?)",
                               (self._tap_id(tap), self._tap_id(tap))).fetchone()
        return None if row[0] is None else int(row[0])

    # -- bus segments ----------------------------------------------------------------------------

    def set_segment_ports(self, segment: str, bus_a: str, bus_b: str, baud: int) -> None:
        """Where this host reaches a segment's buses A and B (serial devices), and at what baud."""
        if not segment or bus_a == bus_b:
            raise InventoryError(f"segment {segment!r}: buses A and B need a name and two different ports")
        with self.transaction():
            self._db.execute("INSERT INTO segments (name, bus_a, bus_b, baud) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT (name) DO UPDATE SET bus_a = excluded.bus_a, bus_b = excluded.bus_b, "
                             "baud = excluded.baud", (segment, bus_a, bus_b, baud))

    def segment_ports(self) -> dict[str, tuple[str, str, int]]:
        """Each segment whose ports are stored: (bus A, bus B, baud)."""
        return {row[0]: (row[1], row[2], int(row[3]))
                for row in self._db.execute("SELECT name, bus_a, bus_b, baud FROM segments ORDER BY name")}

    # -- the controller's own values -----------------------------------------------------------

    def controller_value(self, name: str, default: Any = None) -> Any:
        """A value the controller keeps (JSON), e.g. its epoch; `default` when never set."""
        row = self._db.execute("SELECT value FROM controller WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_controller_value(self, name: str, value: Any) -> None:
        """Durable when it returns (synchronous FULL): a signed command may depend on it."""
        with self.transaction():
            self._db.execute("INSERT INTO controller (name, value) VALUES (?, ?) "
                             "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, json.dumps(value)))


def _refuse_moving(record: TapRecord, address: int | None, bus: str, unique_id: bytes | None,
                   commissioned_at: float | None) -> None:
    """A commissioned tap answers at its address and is one board: the file cannot move
    it silently. Re-addressing is a commissioning step (ASSIGN_ADDRESS), not an edit."""
    if commissioned_at is None:
        return
    if (address, bus) != (record.address, record.bus):
        raise InventoryError(
            f"tap {record.id!r} is commissioned at address {address} on bus {bus!r}, but the site file says "
            f"address {record.address} on bus {record.bus!r}: re-address the tap (ASSIGN_ADDRESS, then "
            "mark_commissioned) or correct the file")
    if unique_id is not None and record.unique_id is not None and unique_id != record.unique_id:
        raise InventoryError(
            f"tap {record.id!r} is commissioned as unique id {unique_id.hex()}, but the site file says "
            f"{record.unique_id.hex()}: a replaced board must be commissioned again")


def _is_unique_id(text: str) -> bool:
    try:
        return len(text) == 16 and len(bytes.fromhex(text)) == 8
    except ValueError:
        return False
