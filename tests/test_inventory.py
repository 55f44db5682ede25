"""The inventory: what a site file imports, keys and counters that never go back and
survive a crash, command history and events, and the refusals that keep the file sound."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.model.site_file import SiteFile, TapRole, parse_site_file
from host.store.inventory import Inventory
from host.store.records import CommandState, InventoryError, KeyStore, TapEvent, UnknownTap
from host.store.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
DEMO_TEXT = (ROOT / "sites" / "demo.toml").read_text()


def demo(*edits: tuple[str, str]) -> SiteFile:
    text = DEMO_TEXT
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return parse_site_file(text, "demo.toml")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "site.db"


@pytest.fixture
def inv(path: Path) -> Iterator[Inventory]:
    inventory = Inventory.open(path)
    inventory.import_site(demo())
    yield inventory
    inventory.close()


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, to compare a file before and after."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def test_a_site_file_round_trips_through_the_inventory(inv: Inventory, path: Path) -> None:
    inv.close()
    with Inventory.open(path) as again:
        assert again.site() == {"name": "demo", "voltage_v": 400.0, "frequency_hz": 50.0}
        assert {s["id"]: s["phase_deg"] for s in again.sources()} == {"ups-1": 0.0, "gen-1": 120.0, "bat-1": 0.0}
        assert {s["id"]: s["energy_kwh"] for s in again.sources()}["bat-1"] == 20.0
        assert [(r["id"], r["priority"]) for r in again.racks()] == [
            ("r1", "critical"), ("r2", "normal"), ("r3", "normal"), ("r4", "deferrable")]
        taps = again.taps()
        assert [(t.id, t.address) for t in taps] == [
            ("tap-r1", 1), ("tap-r2", 2), ("tap-r3", 3), ("tap-r4", 4), ("mon-ups-1", 10)]
        r1 = again.tap("tap-r1")
        assert (r1.role, r1.rack, r1.bus, r1.board) == (TapRole.RACK, "r1", "seg-1", "sim")
        assert r1.inputs == ("ups-1", "gen-1", "bat-1")
        assert r1.alternates == {1: (3, 2), 2: (1, 3), 3: (1,)}
        assert r1.unique_id == bytes.fromhex("e661385200000001")
        assert (r1.has_key, r1.key_counter, r1.commissioned_at, r1.firmware_version) == (False, 1, None, None)
        monitor = again.tap("mon-ups-1")
        assert (monitor.role, monitor.monitored_source, monitor.inputs, monitor.rack) == (
            TapRole.MONITOR, "ups-1", (), None)


def test_the_file_is_wal_with_full_sync_and_foreign_keys_and_private(inv: Inventory, path: Path) -> None:
    assert inv.settings() == {"journal_mode": "wal", "synchronous": "full", "foreign_keys": True}
    assert inv.schema_version == SCHEMA_VERSION
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds keys


def test_a_newer_schema_is_refused(inv: Inventory, path: Path) -> None:
    inv.close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(InventoryError, match=f"schema version {SCHEMA_VERSION + 1} is newer than this software"):
        Inventory.open(path)


def test_a_file_that_is_not_an_inventory_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(InventoryError, match=r"not an inventory database \(not an SQLite file"):
        Inventory.open(garbage)
    assert garbage.read_bytes() == bytes(range(256)) * 8  # untouched
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE photos (name TEXT)")
    with pytest.raises(InventoryError, match=r"not an inventory database \(an SQLite file with tables photos"):
        Inventory.open(other)
    marked = tmp_path / "marked.db"
    with sqlite3.connect(marked) as db:
        db.execute("PRAGMA application_id = 1234")
    with pytest.raises(InventoryError, match="application id 0x4d2"):
        Inventory.open(marked)


def test_an_empty_file_becomes_an_inventory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with Inventory.open(empty) as inv:
        assert inv.schema_version == SCHEMA_VERSION and inv.taps() == []


def test_the_controllers_values_survive_reopening(inv: Inventory, path: Path) -> None:
    assert inv.controller_value("epoch", 1) == 1
    inv.set_controller_value("epoch", 7)
    inv.set_controller_value("calibration", {"tap-r1": {"input1": [1.001, 0.0]}})
    inv.close()
    with Inventory.open(path) as again:
        assert again.controller_value("epoch") == 7
        assert again.controller_value("calibration") == {"tap-r1": {"input1": [1.001, 0.0]}}


def test_a_version_1_file_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    from host.store import schema as module

    old = tmp_path / "v1.db"
    with sqlite3.connect(old) as db:
        db.execute(f"PRAGMA application_id = {module.APPLICATION_ID}")
        for statement in module.MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO sources VALUES ('ups-1', 'ups', 100, NULL, 0)")
        db.execute("INSERT INTO taps (id, bus, board, role, monitored_source) "
                   "VALUES ('mon-1', 'seg-1', 'sim', 'monitor', 'ups-1')")
        db.execute("INSERT INTO events VALUES ('mon-1', 4, 900, 1.0, 2, '{}')")
        db.execute("PRAGMA user_version = 1")
    with Inventory.open(old) as inv:
        assert inv.schema_version == SCHEMA_VERSION == 4
        assert inv.segment_ports() == {}  # v4: no segment's ports stored yet
        assert [s["id"] for s in inv.sources()] == ["ups-1"]
        # v3 keys events by boot: the old ones are the first boot, and reading resumes after them
        assert [(e.boot, e.seq) for e in inv.events("mon-1")] == [(1, 4)]
        cursor = inv.event_cursor("mon-1")
        assert cursor is not None and (cursor.boot, cursor.next_seq) == (1, 5)
        inv.set_controller_value("epoch", 3)
        assert inv.controller_value("epoch") == 3


def test_counters_only_go_up_and_survive_reopening(inv: Inventory, path: Path) -> None:
    key = inv.new_key("tap-r1")
    assert len(key) == 32 and inv.tap("tap-r1").has_key
    assert inv.key_for(1) == (key, 1)
    inv.commit_counter(1, 1)
    assert inv.key_for(1) == (key, 2)
    with pytest.raises(InventoryError, match="counter 1 is below the next unused counter 2; counters never go back"):
        inv.commit_counter(1, 1)
    inv.commit_counter(1, 40)  # the tap reported 40 in STATUS: carry on above it
    inv.close()
    with Inventory.open(path) as again:
        assert again.key_for(1) == (key, 41)
        assert again.take_counter(1) == (key, 41)
        assert again.key_for(1) == (key, 42)
        with pytest.raises(InventoryError, match="a counter is 0 to 4294967295"):
            again.commit_counter(1, 2**32)


def test_a_committed_counter_survives_a_crash(inv: Inventory, path: Path) -> None:
    """commit_counter returns only once the counter is in the file: a process that dies
    right after it (no close, no clean exit) loses nothing."""
    inv.new_key("tap-r2")
    script = (
        "import os, sys\n"
        "from host.store.inventory import Inventory\n"
        "inv = Inventory.open(sys.argv[1])\n"
        "inv.commit_counter(2, 77)\n"
        "inv.record_command('tap-r2', 'SWITCH', {'to_input': 2}, seq=9, counter=77)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, cwd=ROOT, timeout=60)
    assert inv.key_for(2)[1] == 78
    assert [(c.counter, c.state) for c in inv.commands("tap-r2")] == [(77, CommandState.PENDING)]


def test_a_key_without_a_tap_key_is_refused_and_set_key_keeps_the_counter(inv: Inventory) -> None:
    with pytest.raises(InventoryError, match=r"tap 'tap-r3' \(address 3\) has no key"):
        inv.key_for(3)
    inv.set_key(3, bytes(32))
    inv.commit_counter(3, 5)
    inv.set_key("tap-r3", bytes(range(32)))  # SET_KEY acknowledged: the counter carries on
    assert inv.key_for(3) == (bytes(range(32)), 6)
    with pytest.raises(InventoryError, match="a key is 32 bytes"):
        inv.set_key(3, b"short")


def test_a_key_store_per_bus_segment(inv: Inventory) -> None:
    inv.import_site(demo(('id = "tap-r4"\naddress = 4  # not yet discovered: no unique_id\nbus = "seg-1"',
                          'id = "tap-r4"\naddress = 1\nbus = "seg-2"')))
    inv.set_key("tap-r1", bytes([1]) * 32)
    inv.set_key("tap-r4", bytes([4]) * 32)
    with pytest.raises(InventoryError, match=r"address 1 is used on several buses \(seg-1, seg-2\): name the bus"):
        inv.key_for(1)
    store: KeyStore = inv.key_store("seg-2")
    assert store.key_for(1) == (bytes([4]) * 32, 1)
    store.commit_counter(1, 1)
    assert inv.key_store("seg-1").key_for(1) == (bytes([1]) * 32, 1)
    assert inv.tap("tap-r4").key_counter == 2


def test_command_history_survives_reopening(inv: Inventory, path: Path) -> None:
    first = inv.record_command("tap-r1", "SWITCH", {"to_input": 2, "expect": 1}, seq=1, counter=1)
    second = inv.record_command(2, "SET_KEY", {"wrapped_key": bytes(32), "key_check": b"\x01\x02\x03\x04"},
                                seq=2, counter=2)
    inv.update_command(first, CommandState.SENT)
    inv.update_command(first, "acknowledged", "ACK")
    inv.update_command(second, "sent")
    inv.update_command(second, "unknown", "no answer on A or B")
    inv.update_command(second, "refused", "STATUS: key unchanged")
    inv.close()
    with Inventory.open(path) as again:
        history = again.commands()
        assert [(c.id, c.tap, c.message, c.state, c.result) for c in history] == [
            (first, "tap-r1", "SWITCH", CommandState.ACKNOWLEDGED, "ACK"),
            (second, "tap-r2", "SET_KEY", CommandState.REFUSED, "STATUS: key unchanged")]
        assert history[1].fields == {"wrapped_key": bytes(32), "key_check": b"\x01\x02\x03\x04"}  # bytes come back
        assert (history[0].seq, history[0].counter) == (1, 1)
        assert [c.id for c in again.commands("tap-r2")] == [second]
        with pytest.raises(InventoryError, match="cannot go from acknowledged to refused"):
            again.update_command(first, "refused")
        with pytest.raises(InventoryError, match="no command 99"):
            again.update_command(99, "sent")


def test_an_unknown_tap_names_the_closest(inv: Inventory) -> None:
    with pytest.raises(UnknownTap) as caught:
        inv.tap("tap-r7")
    assert caught.value.suggestions[0] in {"tap-r1", "tap-r2", "tap-r3", "tap-r4"}
    assert "did you mean tap-r" in str(caught.value)
    with pytest.raises(UnknownTap, match=r"no tap 'mon-ups1' in the inventory \(did you mean mon-ups-1"):
        inv.tap("mon-ups1")
    with pytest.raises(UnknownTap, match="no tap 200"):
        inv.tap(200)
    assert inv.tap("e661385200000002").id == "tap-r2"
    assert inv.tap(bytes.fromhex("e661385200000010")).id == "mon-ups-1"
    assert inv.tap(10, bus="seg-1").id == "mon-ups-1"


def test_reimporting_the_same_file_changes_nothing(inv: Inventory, path: Path) -> None:
    inv.new_key("tap-r1")
    inv.mark_commissioned("tap-r1", 1, at=1000.0)
    inv.record_command("tap-r1", "SWITCH", {"to_input": 2})
    before = dump(path)
    inv.import_site(demo())
    assert dump(path) == before


def test_reimporting_an_edited_file_updates(inv: Inventory) -> None:
    inv.import_site(demo(
        ('capacity_kw = 60', 'capacity_kw = 90'),
        ('"e661385200000002"\naddress = 2', '"e661385200000002"\naddress = 3'),  # tap-r2 and tap-r3 swap
        ('"e661385200000003"\naddress = 3', '"e661385200000003"\naddress = 2'),  # addresses (not commissioned)
        ('inputs = ["ups-1", "bat-1"]  # no impedance_ohm', 'inputs = ["bat-1", "gen-1"]  # no impedance_ohm'),
    ))
    assert {s["id"]: s["capacity_kw"] for s in inv.sources()}["ups-1"] == 90.0
    assert (inv.tap(3).id, inv.tap(2).id) == ("tap-r2", "tap-r3")
    assert inv.tap("tap-r4").inputs == ("bat-1", "gen-1")


def test_moving_a_commissioned_tap_is_refused_and_nothing_changes(inv: Inventory, path: Path) -> None:
    inv.mark_commissioned("tap-r1", 1, unique_id=bytes.fromhex("e661385200000001"), at=1000.0)
    before = dump(path)
    moved = demo(('capacity_kw = 60', 'capacity_kw = 90'), ('address = 1\n', 'address = 7\n'))
    with pytest.raises(InventoryError, match=r"tap 'tap-r1' is commissioned at address 1 on bus 'seg-1', but the "
                                             r"site file says address 7 on bus 'seg-1': re-address the tap"):
        inv.import_site(moved)
    assert dump(path) == before  # the whole import was rolled back
    swapped = demo(('unique_id = "e661385200000001"', 'unique_id = "e6613852000000ff"'))
    with pytest.raises(InventoryError, match="commissioned as unique id e661385200000001, but the site file says "
                                             "e6613852000000ff"):
        inv.import_site(swapped)
    inv.mark_commissioned("tap-r1", 7, at=2000.0)  # re-addressed on the bus: now the file may say so
    inv.import_site(moved)
    assert inv.tap(7).id == "tap-r1" and inv.tap("tap-r1").commissioned_at == 2000.0


def test_commissioning_refusals(inv: Inventory) -> None:
    with pytest.raises(InventoryError, match="address 2 on bus 'seg-1' belongs to tap 'tap-r2'"):
        inv.mark_commissioned("tap-r1", 2)
    with pytest.raises(InventoryError, match="unique id e661385200000001 in the inventory, not 0000000000000000"):
        inv.mark_commissioned("tap-r1", 1, unique_id=bytes(8))
    with pytest.raises(InventoryError, match="unique id e661385200000002 belongs to tap 'tap-r2'"):
        inv.mark_commissioned("tap-r4", 4, unique_id=bytes.fromhex("e661385200000002"))
    inv.mark_commissioned("tap-r4", 4, unique_id=bytes.fromhex("e6613852000000aa"), at=5.0)
    assert inv.tap("e6613852000000aa").id == "tap-r4"
    inv.set_firmware("tap-r4", "1.2.3")
    assert inv.tap(4).firmware_version == "1.2.3"


def test_a_tap_dropped_from_the_file(inv: Inventory) -> None:
    monitor = DEMO_TEXT[DEMO_TEXT.index("[[taps]]\nid = \"mon-ups-1\""):]
    without_monitor = demo((monitor, ""))
    inv.record_command("mon-ups-1", "RESET", {})
    with pytest.raises(InventoryError, match="tap 'mon-ups-1' is not in the site file, but the inventory has"):
        inv.import_site(without_monitor)
    without_r4 = DEMO_TEXT[DEMO_TEXT.index("[[taps]]\nid = \"tap-r4\""):DEMO_TEXT.index("[[taps]]\nid = \"mon-ups-1\"")]
    rack_r4 = '[[racks]]\nid = "r4"\npriority = "deferrable"\nrated_kw = 5\n\n'
    inv.import_site(demo((without_r4, ""), (rack_r4, "")))  # no past: dropped, with its rack
    assert [t.id for t in inv.taps()] == ["tap-r1", "tap-r2", "tap-r3", "mon-ups-1"]
    assert [r["id"] for r in inv.racks()] == ["r1", "r2", "r3"]


def test_events_are_deduplicated_by_the_taps_sequence(inv: Inventory, path: Path) -> None:
    inv.close()
    now = [100.0]
    inv = Inventory.open(path, clock=lambda: now[0])
    first = [TapEvent(0, 5, 1, {"input": 0, "value": 0}), TapEvent(1, 900, 3, {"input": 2, "value": 1})]
    assert inv.add_events("tap-r1", first) == 2
    now[0] = 200.0
    assert inv.add_events("tap-r1", [*first, TapEvent(2, 950, 2, {"input": 1, "value": 0})]) == 1
    assert inv.add_events("tap-r2", [TapEvent(0, 7, 1, {})]) == 1
    assert [(e.tap, e.seq, e.code) for e in inv.events()] == [
        ("tap-r1", 0, 1), ("tap-r1", 1, 3), ("tap-r1", 2, 2), ("tap-r2", 0, 1)]
    assert [(e.tap, e.seq) for e in inv.events(since=150.0)] == [("tap-r1", 2), ("tap-r2", 0)]
    assert [e.data for e in inv.events("tap-r1", since=150.0)] == [{"input": 1, "value": 0}]
    assert (inv.last_event_seq("tap-r1"), inv.last_event_seq("tap-r3")) == (2, None)
    inv.close()


def test_a_reader_reads_while_a_writer_holds_the_file(inv: Inventory, path: Path) -> None:
    with Inventory.open(path) as reader:
        with inv.transaction():
            inv.record_command("tap-r1", "SWITCH", {"to_input": 2})
            assert len(inv.commands()) == 1
            assert reader.commands() == []  # the last committed state, without waiting for the writer
            assert len(reader.taps()) == 5
        assert len(reader.commands()) == 1  # committed: now visible


def test_a_failed_transaction_leaves_nothing(inv: Inventory) -> None:
    with pytest.raises(RuntimeError), inv.transaction():
        inv.record_command("tap-r1", "SWITCH", {"to_input": 2})
        raise RuntimeError("interrupted")
    assert inv.commands() == []


def test_the_key_store_speaks_the_clients_names_too(inv: Inventory) -> None:
    """credentials/commit/replace_key, as host/client/tap_client.py's TapKeys names them: there a
    commit also catches up with a counter the tap reports, so a lower one is ignored."""
    store = inv.key_store("seg-1")
    inv.set_key("tap-r2", bytes([2]) * 32)
    assert store.credentials(2) == (bytes([2]) * 32, 1)
    store.commit(2, 1)
    store.commit(2, 1)  # again, or lower: nothing changes, nothing is refused
    store.commit(2, 0)
    assert store.credentials(2)[1] == 2
    store.commit(2, 30)  # REPLAY, detail 30: catch up
    store.replace_key(2, bytes([3]) * 32)
    assert store.credentials(2) == (bytes([3]) * 32, 31)
