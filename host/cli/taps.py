"""The operator's commands for taps: flash, scan, commission, calibrate, status, monitor,
events, switch, limits, alternates, capture. Each is a few lines over host/ops/flash.py,
host/ops/ (commission, readings, switching, ...); every failure is one line and a non-zero exit.
`COMMANDS` is what the `ibt` group registers."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from host.cli import progress
from host.cli.output import emit
from host.model.errors import EXIT_NOT_CONFIRMED
from host.ops import (
    channel_calibration,
    commission,
    event_log,
    failover,
    flash,
    protection_limits,
    readings,
    switching,
    waveforms,
)
from host.ops.session import OperatorError, Session, bus_ports
from protocol import catalog

F = TypeVar("F", bound=Callable[..., Any])


# -- shared options and error handling -----------------------------------------------------------------


def db_option(function: F) -> F:
    return click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="Inventory file (default: $IBT_DB, else ibt.db here).")(function)


@dataclass(frozen=True)
class BusChoice:
    """The bus options of a command: serial ports of one segment, or a rig directory, or
    nothing (the inventory's stored ports serve)."""

    bus_a: str | None = None
    bus_b: str | None = None
    baud: int = catalog.DEFAULT_BAUD
    rig_dir: Path | None = None
    segment: str | None = None

    @property
    def given(self) -> bool:
        return bool(self.bus_a or self.bus_b or self.rig_dir)


def bus_options(function: F) -> F:
    """--bus-a/--bus-b/--baud/--segment, or --rig DIR, and --db; the command gets them as `buses`."""

    @functools.wraps(function)
    def with_buses(*args: Any, bus_a: str | None, bus_b: str | None, baud: int, rig_dir: Path | None,
                   segment: str | None, **kwargs: Any) -> Any:
        return function(*args, buses=BusChoice(bus_a, bus_b, baud, rig_dir, segment), **kwargs)

    command: Any = with_buses
    for option in reversed((
        click.option("--bus-a", metavar="PORT", help="Serial port of bus A (default: the inventory's, per segment)."),
        click.option("--bus-b", metavar="PORT", help="Serial port of bus B."),
        click.option("--baud", type=click.IntRange(1200, 4_000_000), default=catalog.DEFAULT_BAUD, show_default=True),
        click.option("--segment", metavar="NAME",
                     help="The bus segment --bus-a/--bus-b serve (default: the inventory's only one)."),
        click.option("--rig", "rig_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
                     help="Use the buses of every segment of the virtual rig running in DIR (its rig.json)."),
    )):
        command = option(command)
    return db_option(command)  # type: ignore[no-any-return]


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(function)


@contextmanager
def _session(db: Path | None, buses: BusChoice | None = None, *, offline: bool = False,
             create: bool = False) -> Iterator[Session]:
    """The inventory, and the buses (`offline`: none, not even the inventory's stored ports)."""
    choice = buses or BusChoice()
    ports = None if offline else bus_ports(choice.bus_a, choice.bus_b, choice.baud, choice.rig_dir)
    session = Session.open(db, ports, create=create, segment=choice.segment, offline=offline)
    try:
        yield session
    finally:
        session.close()


def _assignments(values: tuple[str, ...], what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected NAME=NUMBER", param_hint=what) from None
    return out


# -- flash -------------------------------------------------------------------------------------------------


@click.command("flash")
@click.argument("tap")
@click.option("--port", metavar="PORT", help="The board's USB serial port (mpremote).")
@click.option("--sim", "sim_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="A sim board's flash directory.")
@click.option("--tree", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR",
              help="An already compiled firmware tree (default: compile now).")
@db_option
@json_option
def flash_command(tap: str, port: str | None, sim_dir: Path | None, tree: Path | None, db: Path | None,
                  as_json: bool) -> None:
    """Build TAP's firmware with a fresh key (recorded first) and deploy it, verified by hash."""
    with _session(db, offline=True) as session:
        tap_id = session.tap(tap).id
        bar: Any = None
        progress = None
        if not as_json and sys.stderr.isatty():
            def progress(done: int, total: int, name: str) -> None:
                nonlocal bar
                if bar is None:
                    bar = click.progressbar(length=total, label="flashing", file=sys.stderr)
                    bar.__enter__()
                bar.update(1)
        try:
            report = flash.flash(session.inventory, tap_id, port=port, sim_dir=sim_dir, tree=tree, progress=progress)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    emit(report.as_dict(), as_json, f"flashed {report.tap} ({report.board}) to {report.target}: "
          f"{report.files} files, {report.bytes} bytes, every hash verified; key recorded in the inventory")


# -- scan and commission ---------------------------------------------------------------------------------------


@click.command("scan")
@bus_options
@click.option("--all", "every_tap", is_flag=True, help="Every tap, not only those without an address.")
@json_option
def scan_command(db: Path | None, buses: BusChoice,
                 every_tap: bool, as_json: bool) -> None:
    """Discover uncommissioned taps on a bus (collisions resolved by splitting the id range)."""
    with _session(db, buses) as session:
        found = commission.scan_bus(session, _segment(session, buses.segment), every_tap=every_tap)
    rows = [vars(f) for f in found]
    text = "\n".join(
        f"{f.unique_id}  {f.board:<12} {f.n_inputs} inputs  "
        f"{'no address' if f.address is None else f'address {f.address}'}  "
        f"{('tap ' + f.tap + (' (commissioned)' if f.commissioned else '')) if f.tap else 'not in the inventory'}"
        for f in found) or "no taps answered"
    emit(rows, as_json, text)


def _segment(session: Session, segment: str | None) -> str:
    if segment:
        return segment
    segments = session.segments()
    if len(segments) > 1:
        raise OperatorError(f"the inventory has several bus segments ({', '.join(segments)}): name one with --segment")
    return segments[0] if segments else "default"


@click.command("commission")
@click.argument("tap", required=False)
@click.option("--unique-id", "unique_id", metavar="HEX", help="The tap's unique id, as `ibt scan` shows it.")
@click.option("--site", "site_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Import the site file and commission every tap in it.")
@bus_options
@json_option
def commission_command(tap: str | None, unique_id: str | None, site_path: Path | None,
                       db: Path | None, buses: BusChoice, as_json: bool) -> None:
    """Assign the address, set limits and alternates, and prove each input's wiring."""
    if (tap is None) == (site_path is None):
        raise click.UsageError("name one TAP, or give --site FILE for every tap of a site")
    uid = None
    if unique_id is not None:
        try:
            uid = bytes.fromhex(unique_id)
            if len(uid) != 8:
                raise ValueError
        except ValueError:
            raise click.BadParameter("16 hex digits (8 bytes)", param_hint="--unique-id") from None
    with _session(db, buses, create=site_path is not None) as session:
        if site_path is not None:
            with progress.steps("commissioning", None, quiet=as_json) as bar:
                reports = commission.commission_site(session, site_path, say=lambda line: click.echo(line, err=True),
                                                     progress=lambda tap, done, total: bar.to(done, tap, total))
        else:
            assert tap is not None
            reports = [commission.commission_tap(session, tap, uid)]
    lines = []
    for report in reports:
        verdict = "commissioned" if report.ok else "NOT commissioned"
        lines.append(f"{report.tap}: {verdict} ({'; '.join(report.steps) or 'nothing done'})")
        lines += [f"  {problem}" for problem in report.problems]
    emit([r.as_dict() for r in reports], as_json, "\n".join(lines))
    if not all(r.ok for r in reports):
        failed = [r.tap for r in reports if not r.ok]
        click.echo(f"ibt: {len(failed)} of {len(reports)} taps not commissioned: {', '.join(failed)}", err=True)
        sys.exit(EXIT_NOT_CONFIRMED)


@click.command("calibrate")
@click.argument("tap")
@click.option("--ref", "refs", multiple=True, metavar="CHANNEL=VALUE",
              help="A reference reading: input1=230.4 (volts), current=17.2 (amperes). Repeatable.")
@click.option("--reset", is_flag=True,
              help="Forget the points taken so far; without --ref, put every channel back on its nominal scale.")
@bus_options
@json_option
def calibrate_command(tap: str, refs: tuple[str, ...], reset: bool,
                      db: Path | None, buses: BusChoice, as_json: bool) -> None:
    """Gain and offset per channel against a reference meter's reading, applied at the tap and
    verified; without --ref, the calibration the tap runs on."""
    references = _assignments(refs, "--ref")
    with _session(db, buses) as session:
        result = channel_calibration.calibrate(session, tap, references, reset=reset)
    lines = [f"{result['tap']}: " + (f"sent {', '.join(result['sent'])}" if result["sent"] else "in force at the tap")]
    for channel, c in result["channels"].items():
        line = (f"  {channel:<8} gain {c['gain']:.6f} ({c['gain_ppm']} ppm) offset {c['offset_counts']:+d} counts "
                f"({c['offset']:+.3f} {'A' if channel == 'current' else 'V'})"
                + ("" if c["set"] else "  nominal, never calibrated"))
        if "points" in c:
            line += f"  [{c['points']} point{'' if c['points'] == 1 else 's'}]"
        if "reference" in c:
            reading = "no reading" if c["reading"] is None else f"reads {c['reading']:.3f}"
            line += (f"\n           {reading}, reference {c['reference']:.3f} (±{c['tolerance']:.3f}): "
                     + ("verified" if c["verified"] else "NOT verified"))
        lines.append(line)
    emit(result, as_json, "\n".join(lines))
    if result["verified"] is False:
        sys.exit(EXIT_NOT_CONFIRMED)


# -- reading ----------------------------------------------------------------------------------------------------


@click.command("status")
@click.argument("taps", nargs=-1)
@bus_options
@json_option
def status_command(taps: tuple[str, ...], db: Path | None, buses: BusChoice, as_json: bool) -> None:
    """Active input, relays, protection, alarms and every input's readings."""
    with _session(db, buses) as session:
        rows = readings.status(session, taps)
    emit(rows, as_json, readings.render_status(rows))
    if any(row.get("error") for row in rows):
        sys.exit(EXIT_NOT_CONFIRMED)


@click.command("monitor")
@click.argument("taps", nargs=-1)
@click.option("--interval", type=click.FloatRange(0.1), default=1.0, show_default=True, help="Seconds between reads.")
@click.option("--once", is_flag=True, help="Read once and stop.")
@click.option("--count", type=click.IntRange(1), default=None, help="Stop after this many reads.")
@bus_options
@json_option
def monitor_command(taps: tuple[str, ...], interval: float, once: bool, count: int | None,
                    db: Path | None, buses: BusChoice, as_json: bool) -> None:
    """Status, refreshed in place on a terminal (one JSON line per read with --json)."""
    redraw = sys.stdout.isatty() and not as_json

    def emit(rows: list[dict[str, Any]]) -> None:
        if as_json:
            click.echo(json.dumps(rows, default=str))
            return
        if redraw:
            click.clear()
        click.echo(readings.render_status(rows) + ("" if redraw else "\n"))

    with _session(db, buses) as session, suppress(KeyboardInterrupt):
        readings.monitor(session, taps, emit, interval_s=interval, count=1 if once else count)


@click.command("events")
@click.argument("taps", nargs=-1)
@click.option("--stored", is_flag=True, help="Every event the inventory holds, without reading the taps.")
@bus_options
@json_option
def events_command(taps: tuple[str, ...], stored: bool, db: Path | None, buses: BusChoice, as_json: bool) -> None:
    """Read the taps' new events (since the last stored) into the inventory, and print them."""
    with _session(db, buses, offline=stored) as session:
        rows = event_log.events(session, taps, stored=stored)
    text = "\n".join(
        f"{r['tap']:<12} #{r['seq']!s:<6} {r.get('time_ms', '')!s:>10} ms  {r['event']}"
        + (f" input {r['input']}" if r.get("input") else "") + (f" value {r['value']}" if r.get("value") else "")
        for r in rows) or "no new events"
    emit(rows, as_json, text)


# -- commands that move things --------------------------------------------------------------------------------


@click.command("switch")
@click.argument("tap")
@click.argument("source")
@bus_options
@json_option
def switch_command(tap: str, source: str, db: Path | None, buses: BusChoice, as_json: bool) -> None:
    """Move TAP's rack to SOURCE (a source id or input number): checked, signed, verified."""
    with _session(db, buses) as session:
        result = switching.switch(session, tap, source)
    emit(result.as_dict(), as_json, f"{result.tap}: input {result.from_input} -> {result.to_input} ({result.source})"
          f": {'verified' if result.verified else 'NOT verified'}; {result.note}"
          + (f"\n  checks: {'; '.join(result.checks)}" if result.checks else ""))
    if not result.verified:
        sys.exit(EXIT_NOT_CONFIRMED)


@click.command("limits")
@click.argument("tap")
@click.option("--set", "changes", multiple=True, metavar="FIELD=VALUE",
              help=f"Change a setting ({', '.join(protection_limits.LIMIT_FIELDS)}); the others stay as in force.")
@bus_options
@json_option
def limits_command(tap: str, changes: tuple[str, ...], db: Path | None, buses: BusChoice, as_json: bool) -> None:
    """Show (read from the tap; from the command history without a bus) or set protection
    settings; ones that do not coordinate with the board are refused."""
    values = {k: int(v) for k, v in _assignments(changes, "--set").items()}
    with _session(db, buses) as session:
        if values:
            limits, origin = protection_limits.set_limits(session, tap, values), "set now"
        else:
            limits, origin = protection_limits.current_limits(session, session.tap(tap))
    emit({"tap": tap, "origin": origin, "limits": limits}, as_json,
          f"{tap} ({origin}): " + ", ".join(f"{k}={v}" for k, v in limits.items()))


@click.command("alternates")
@click.argument("tap")
@click.argument("lost", required=False)
@click.argument("takers", nargs=-1)
@bus_options
@json_option
def alternates_command(tap: str, lost: str | None, takers: tuple[str, ...],
                       db: Path | None, buses: BusChoice, as_json: bool) -> None:
    """Show the failover order (read from the tap; from the command history without a bus),
    or set it: LOST TAKER... (source ids or input numbers)."""
    if lost is not None and not takers:
        raise click.UsageError("name the sources to take over when LOST is lost, best first")
    with _session(db, buses) as session:
        if lost is not None:
            result = failover.set_alternates(session, tap, lost, takers)
        else:
            result = failover.current_alternates(session, session.tap(tap))
    lines = [f"{label}: " + ("; ".join(f"{k} -> {', '.join(v)}" for k, v in result[kind].items()) or "none")
             for kind, label in (("planned", "planned"), ("set", f"set ({result['origin']})"))]
    if result["differs"]:
        lines.append(f"differs from the plan for: {', '.join(result['differs'])}")
    emit(result, as_json, "\n".join(lines))


@click.command("capture")
@click.argument("tap")
@click.option("--cycles", type=click.IntRange(1, 50), default=4, show_default=True)
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE", help="Plot to this PNG.")
@bus_options
@json_option
def capture_command(tap: str, cycles: int, png: Path | None, db: Path | None, buses: BusChoice, as_json: bool) -> None:
    """Capture waveforms, print the harmonic spectrum, optionally plot it."""
    with _session(db, buses) as session:
        result = waveforms.capture(session, tap, cycles=cycles, png=png)
    lines = [f"{result['tap']}: {result['samples_per_channel']} samples per channel at {result['sample_rate_hz']:g} Hz"]
    for channel in result["channels"]:
        top = sorted(channel["harmonics_pct"].items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"  {channel['name']:<12} rms {channel['rms']:8.2f}  THD {channel['thd_pct']:5.2f}%  "
                     + ", ".join(f"h{h} {v:.2f}%" for h, v in top))
    if png is not None:
        lines.append(f"  plot: {png}")
    emit(result, as_json, "\n".join(lines))


COMMANDS: tuple[click.Command, ...] = (
    flash_command, scan_command, commission_command, calibrate_command, status_command, monitor_command,
    events_command, switch_command, limits_command, alternates_command, capture_command,
)
