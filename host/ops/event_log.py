"""`ibt events`: the taps' events read across their reboots (host/ops/event_reader.py),
stored in the inventory."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from host.ops import event_reader as tap_events
from host.ops.operate import EVENT_NAMES, patiently, reachable_taps
from host.ops.session import Session, tap_address
from host.store.records import EventCursor, TapInfo


def fetch_events(session: Session, tap: TapInfo) -> list[dict[str, Any]]:
    """Every event the tap logged since the last read, right across its reboots
    (host/ops/event_reader.py); stored with where the read ended, and returned. Events the tap
    overwrote before we read them are counted as lost."""
    client = session.client(tap.bus)
    address = tap_address(tap)
    boot_count = patiently(lambda: client.status(address)).fields.get("boot_count")
    cursor = session.inventory.event_cursor(tap.id) or EventCursor(boot=boot_count or 1)
    batch = tap_events.read_new(lambda since, count: patiently(functools.partial(client.read_events, address, since,
                                                                                  count)), cursor, boot_count)
    session.inventory.add_events(tap.id, batch.events, cursor)
    rows = [_event_row(tap.id, e.seq, e.time_ms, e.code, e.data, e.boot) for e in batch.events]
    if batch.lost:
        rows.insert(0, {"tap": tap.id, "seq": None, "event": f"{batch.lost} events overwritten before they were read"})
    return rows


def _event_row(tap: str, seq: int, time_ms: int, code: int, data: dict[str, Any], boot: int) -> dict[str, Any]:
    return {"tap": tap, "boot": boot, "seq": seq, "time_ms": time_ms, "code": code,
            "event": EVENT_NAMES.get(code, str(code)), "input": data.get("input"), "value": data.get("value")}


def events(session: Session, tap_refs: Sequence[str] = (), *, stored: bool = False) -> list[dict[str, Any]]:
    """New events of the named taps (default: the commissioned ones); `stored`: every event
    the inventory holds for them, without touching the bus."""
    taps = [session.tap(ref) for ref in tap_refs] or [t for t in session.inventory.taps()
                                                       if t.commissioned_at is not None]
    rows: list[dict[str, Any]] = []
    reachable = taps if stored else reachable_taps(session, taps)
    for tap in taps:
        if stored:
            rows += [_event_row(r.tap, r.seq, r.time_ms, r.code, r.data, r.boot)
                     for r in session.inventory.events(tap.id)]
        elif tap in reachable:
            rows += fetch_events(session, tap)
        else:
            rows.append({"tap": tap.id, "seq": None, "event": f"not read: no buses for segment {tap.bus!r} "
                                                              "(`ibt segment set` stores them)"})
    return rows
