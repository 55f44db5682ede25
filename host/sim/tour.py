"""The main job on a virtual site, start to end (`ibt tour`): flash every tap of a site
file, start them on a virtual rig (the compiled firmware on MicroPython, buses A and B as
ptys, the plant), commission the site (addresses, limits, alternates, each input's wiring
proved), read every tap's status over the buses, then lose the source that feeds the most
racks with the host silent and show what the taps did by themselves: each rack moved to
its first ranked alternate, the transfer logged with the time its rack went dark. Then
everything started stops.

It uses the same library calls as `ibt flash`, `ibt sim`, `ibt commission`, `ibt status`
and `ibt events`; nothing here is specific to a demonstration but the order."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host.model import boards
from host.model.errors import IbtError
from host.model.site_file import TapRole, load_site_file
from host.ops import commission, event_log, flash, operate, readings
from host.ops.session import BusPorts, Session
from host.sim.rig import rig_layout
from host.sim.rig import virtual_rig as rig
from host.store.inventory import Inventory

DEFAULT_SITE = Path(__file__).resolve().parents[2] / "sites" / "demo.toml"
TRANSFER_WAIT_S = 20.0  # wall clock for the local transfers: the taps need about a tenth of a second
METER_SETTLE_S = 1.0  # a meter window is 10 cycles, up to a few hundred ms on a lost input (no crossings)


class TourError(IbtError):
    """A step of the tour failed; the message says which and why."""


def most_fed(racks_on: dict[str, list[str]]) -> str:
    """The source that feeds the most racks now (ties: the first in the site file)."""
    return max(racks_on, key=lambda s: len(racks_on[s]))


def tour(site_path: Path, workdir: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """Run the tour on `site_path` in `workdir`, reporting each step through `echo`;
    returns what it found, as plain data. TourError when a step fails."""
    parsed = load_site_file(site_path)
    db = workdir / "ibt.db"
    flashed: dict[str, Path] = {}
    with Inventory.open(db) as inventory:
        inventory.import_site(parsed)
        for tap in parsed.taps:
            flashed[tap.id] = workdir / "flash" / tap.id
            flash.flash(inventory, tap.id, sim_dir=flashed[tap.id])
    echo(f"flashed {len(flashed)} taps of site {parsed.name!r} (a fresh key each, in {db})")
    layout = dataclasses.replace(rig_layout.load_site_file(site_path), flashed=flashed)
    with rig.VirtualRig(layout, workdir / "rig") as virtual:
        segments = virtual.segment_paths
        buses = "; ".join(f"{s}: bus A {p['A']}, bus B {p['B']}" for s, p in segments.items())
        echo(f"virtual rig up ({buses}), {len(virtual.taps)} rack taps, "
             f"{len(virtual.monitors)} monitor taps, each a MicroPython process")
        ports = {s: BusPorts(p["A"], p["B"], virtual.baud, virtual=True) for s, p in segments.items()}
        with Session.open(db, ports) as session:
            return _operate(session, virtual, site_path, [t.id for t in parsed.taps if t.role == TapRole.RACK],
                            echo)  # fmt: skip


def _operate(session: Session, virtual: rig.VirtualRig, site_path: Path, rack_taps: list[str],
             echo: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    reports = commission.commission_site(session, site_path, say=echo)
    for report in reports:
        echo(f"commission {report.tap}: {'done' if report.ok else 'REFUSED'} ({'; '.join(report.steps)})")
        for problem in report.problems:
            echo(f"  {problem}")
    if not all(r.ok for r in reports):
        raise TourError("commissioning failed; nothing else is done (see above)")
    before = readings.status(session, rack_taps)
    echo("status, read over the buses:\n" + readings.render_status(before))
    racks_on: dict[str, list[str]] = {}
    for row in before:
        racks_on.setdefault(row["active_source"], []).append(row["tap"])
    lost = most_fed(racks_on)
    moving = racks_on[lost]
    event_log.events(session, rack_taps)  # read so far: what follows is the loss's
    echo(f"losing {lost}, which feeds {', '.join(moving)}; the host sends nothing until they have moved")
    virtual.inject("lose", lost)
    lost_input = {t: operate.input_of(session.tap(t), lost) for t in moving}
    deadline = time.monotonic() + TRANSFER_WAIT_S
    while any(virtual.plant.plants[t].conducting_input() in (0, lost_input[t]) for t in moving):
        if time.monotonic() > deadline:
            raise TourError(f"the taps on {lost} did not transfer within {TRANSFER_WAIT_S:.0f} s")
        time.sleep(0.05)
    transfers: list[dict[str, Any]] = []
    while {e["tap"] for e in transfers} != set(moving):  # logged once the new relay has closed and settled
        if time.monotonic() > deadline:
            raise TourError(f"the taps on {lost} moved but did not log their transfers within {TRANSFER_WAIT_S:.0f} s")
        transfers += [e for e in event_log.events(session, moving) if e.get("event") == "transfer"]
    time.sleep(METER_SETTLE_S)  # the meters' windows that still hold samples from before the loss close
    after = readings.status(session, rack_taps)
    echo(f"status after the loss of {lost}:\n" + readings.render_status(after))
    for event in transfers:
        tap = session.tap(event["tap"])
        budget_ms = boards.by_name(tap.board).transfer_ms
        over = event["value"] > boards.RIDE_THROUGH_MS
        event |= {"dark_ms": event["value"], "budget_ms": round(budget_ms, 1),
                  "ride_through_ms": boards.RIDE_THROUGH_MS, "over_ride_through": over}
        verdict = (f"OVER the {boards.RIDE_THROUGH_MS:.0f} ms that IT power supplies ride through"
                   if over else f"within the {boards.RIDE_THROUGH_MS:.0f} ms ride-through")
        echo(f"{event['tap']}: transferred by itself to input {event['input']} "
             f"({operate.source_of(tap, event['input']) or '?'}), the rack dark for {event['value']} ms: {verdict} "
             f"(board {tap.board}: at most {budget_ms:.1f} ms from its relays' datasheet maxima)")
    virtual.inject("restore", lost)
    echo(f"{lost} restored; the racks stay where they are until the host moves them (ibt switch)")
    return {"commissioned": [r.as_dict() for r in reports], "before": before, "lost": lost, "after": after,
            "transfers": transfers}
