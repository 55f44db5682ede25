"""`ibt segment`: where this host reaches each bus segment's buses A and B, kept in the
inventory so that every command reaches every segment without naming ports."""

from __future__ import annotations

from pathlib import Path

import click

from host.cli.output import emit
from host.cli.taps import db_option, json_option
from host.ops.session import OperatorError, open_inventory
from host.store.records import InventoryError
from protocol import catalog


@click.group("segment")
def segment_group() -> None:
    """The serial ports of each bus segment (a pair of RS-485 buses, A and B)."""


@segment_group.command("set")
@click.argument("segment")
@click.option("--bus-a", required=True, metavar="PORT", help="Serial port of the segment's bus A.")
@click.option("--bus-b", required=True, metavar="PORT", help="Serial port of the segment's bus B.")
@click.option("--baud", type=click.IntRange(1200, 4_000_000), default=catalog.DEFAULT_BAUD, show_default=True)
@db_option
@json_option
def set_command(segment: str, bus_a: str, bus_b: str, baud: int, db: Path | None, as_json: bool) -> None:
    """Store SEGMENT's ports; commands then reach its taps without --bus-a/--bus-b."""
    with open_inventory(db) as inventory:
        known = sorted({tap.bus for tap in inventory.taps()})
        if known and segment not in known:
            raise OperatorError(f"no tap of the inventory is on segment {segment!r} (segments: {', '.join(known)}): "
                                "a typo, or import the site file first")
        try:
            inventory.set_segment_ports(segment, bus_a, bus_b, baud)
        except InventoryError as exc:
            raise OperatorError(str(exc)) from None
    emit({"segment": segment, "bus_a": bus_a, "bus_b": bus_b, "baud": baud}, as_json,
         f"segment {segment}: bus A {bus_a}, bus B {bus_b}, {baud} baud")


@segment_group.command("list")
@db_option
@json_option
def list_command(db: Path | None, as_json: bool) -> None:
    """Every segment of the inventory's taps, and its stored ports."""
    with open_inventory(db) as inventory:
        stored = inventory.segment_ports()
        counts: dict[str, int] = {}
        for tap in inventory.taps():
            counts[tap.bus] = counts.get(tap.bus, 0) + 1
    rows = [{"segment": name, "taps": counts.get(name, 0), "bus_a": stored.get(name, (None,) * 3)[0],
             "bus_b": stored.get(name, (None,) * 3)[1], "baud": stored.get(name, (None,) * 3)[2]}
            for name in sorted(set(counts) | set(stored))]
    text = "\n".join(f"{r['segment']:<12} {r['taps']:>3} taps  "
                     + (f"A {r['bus_a']}  B {r['bus_b']}  {r['baud']} baud" if r["bus_a"] else "no ports stored")
                     for r in rows) or "no segments: import a site file first"
    emit(rows, as_json, text)
