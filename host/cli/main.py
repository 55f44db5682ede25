"""`ibt`: the command line of the bus tap system, a thin skin over the host library."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from host.cli import progress
from host.cli import taps as cli_taps
from host.cli.errors import EXIT_CODES_HELP, IbtGroup, one_line
from host.cli.output import emit
from host.cli.segments import segment_group
from host.model.errors import IbtError
from host.ops.session import RIG_FILE
from host.reports import forecast as forecast_report
from host.reports import plan as plan_report
from host.reports import risk
from host.sim import tour as tour_module
from host.sim.rig import rig_control, rig_faults, rig_layout
from host.sim.rig import virtual_rig as rig
from host.wire import framing, inspect_frames, messages
from protocol import catalog

DEMO_KEY = bytes(range(32))  # a published test key: the demo moves no real relay


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"ibt: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except IbtError as exc:  # raised outside any command: the same one line
        click.echo(f"ibt: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)


@click.group(cls=IbtGroup, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="ibt", prog_name="ibt", message="%(prog)s %(version)s")
def cli() -> None:
    """Intelligent Bus Taps: firmware, protocol and host controller for reserve power."""


def _hex_arg(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value.replace(":", "").replace(" ", ""))
    except ValueError:
        raise click.BadParameter(f"{what} must be hex digits") from None


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the exchange as JSON.")
def demo(as_json: bool) -> None:
    """Show protocol v1 at work: a poll, a signed switch, a corrupted frame."""
    tap, epoch = 17, 3
    poll = messages.request(tap, "TELEMETRY", 1)
    answer = messages.response(
        poll,
        tap,
        "TELEMETRY",
        {
            "uptime_s": 3600,
            "active_input": 1,
            "relays_closed": 1,
            "protection": catalog.PROT_NORMAL,
            "alarms": 0,
            "temperature_dC": 385,
            "current_mA": 18_250,
            "power_W": 4_020,
            "apparent_VA": 4_198,
            "power_factor_milli": 958,
            "transfers": 0,
            "trips": 0,
            "frames_bad": 0,
            "n_inputs": 2,
            "inputs": [
                {"voltage_mV": 230_400, "frequency_cHz": 5000, "thd_dpct": 22, "phase_cdeg": 0, "state": 3},
                {"voltage_mV": 229_800, "frequency_cHz": 4999, "thd_dpct": 31, "phase_cdeg": -12_000, "state": 3},
            ],
        },
    )
    switch = messages.request(
        tap, "SWITCH", 2, {"expected_input": 1, "target_input": 2}, key=DEMO_KEY, epoch=epoch, counter=1
    )
    ack = messages.response(switch, tap, "ACK", {"request_type": catalog.T_SWITCH}, key=DEMO_KEY)
    corrupted = bytearray(framing.encode_frame(answer.to_body()))
    corrupted[10] ^= 0x04
    steps = [
        ("host polls tap 17", framing.encode_frame(poll.to_body())),
        ("tap 17 answers", framing.encode_frame(answer.to_body())),
        (
            "host moves the rack to input 2 (signed, compare-and-swap on input 1)",
            framing.encode_frame(switch.to_body()),
        ),
        ("tap 17 acknowledges (signed)", framing.encode_frame(ack.to_body())),
        ("the answer again with one bit flipped on the line", bytes(corrupted)),
    ]
    report: list[dict[str, Any]] = []
    lines = []
    for title, wire in steps:
        frames = inspect_frames.describe_wire(wire, DEMO_KEY)
        report.append({"step": title, "wire": wire.hex(), "frames": frames})
        lines.append(f"== {title}\n   wire ({len(wire)} bytes): {wire.hex()}")
        lines += [f"   {_summary(entry)}" for entry in frames]
    emit(report, as_json, "\n".join(lines))


@cli.group()
def frame() -> None:
    """Encode and decode single frames."""


@frame.command("decode")
@click.argument("wire_hex")
@click.option("--key", "key_hex", help="The tap's key (hex) to check tags.")
@click.option("--json", "as_json", is_flag=True)
def frame_decode(wire_hex: str, key_hex: str | None, as_json: bool) -> None:
    """Decode WIRE_HEX: the bytes seen on the bus, one or more frames."""
    key = _hex_arg(key_hex, "--key") if key_hex else None
    entries = inspect_frames.describe_wire(_hex_arg(wire_hex, "WIRE_HEX"), key)
    if not entries:
        raise click.ClickException("no complete frame in those bytes")
    emit(entries, as_json, "\n".join(_summary(e) for e in entries))


@frame.command("encode")
@click.argument("message")
@click.argument("assignments", nargs=-1)
@click.option("--dst", type=click.IntRange(1, 255), default=1, show_default=True, help="Tap address; 255 broadcasts.")
@click.option("--seq", type=click.IntRange(0, 0xFFFF), default=1, show_default=True)
@click.option("--key", "key_hex", help="The tap's key (hex), for commands that move state.")
@click.option("--epoch", type=click.IntRange(0, 0xFFFFFFFF), default=0, show_default=True)
@click.option("--counter", type=click.IntRange(0, 0xFFFFFFFF), default=0, show_default=True)
def frame_encode(
    message: str, assignments: tuple[str, ...], dst: int, seq: int, key_hex: str | None, epoch: int, counter: int
) -> None:
    """Encode a request MESSAGE with FIELD=VALUE assignments; print its wire bytes."""
    fields = inspect_frames.parse_assignments(message, assignments, response=False)
    key = _hex_arg(key_hex, "--key") if key_hex else None
    request = messages.request(dst, message, seq, fields, key=key, epoch=epoch, counter=counter)
    click.echo(framing.encode_frame(request.to_body()).hex())


@cli.command("messages")
@click.option("--json", "as_json", is_flag=True)
def list_messages(as_json: bool) -> None:
    """List the message catalogue of protocol v1."""
    rows = inspect_frames.catalogue()
    text = "\n".join(
        f"0x{r['type']:02x} {r['name']:<15} {'signed' if r['authenticated'] else '      '} "
        f"request: {', '.join(r['request']) if r['request'] else '-' if r['request'] is None else '(empty)'}"
        for r in rows
    )
    emit(rows, as_json, text)


@cli.command("risk")
@click.option("--scenario", "scenario_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=risk.DEFAULT_SCENARIO, show_default="scenarios/fault_families.toml",
              help="A site scenario (TOML) to run on the site simulator.")
@click.option("--days", type=click.FloatRange(0.5, 60), default=6.0, show_default=True, help="Simulated days to run.")
@click.option("--json", "as_json", is_flag=True)
def risk_command(scenario_path: Path, days: float, as_json: bool) -> None:
    """List the sources by predicted fault risk, with the signal and reason behind it."""
    risks = risk.assess(scenario_path, days)
    text = "\n".join(
        f"{r.source:<10} {'up' if r.up else 'DOWN':<4} p={r.probability:.2f}{'  ALARM' if r.as_dict()['alarm'] else ''}"
        f"  {r.reason()}" + (f"\n{'':<10} note: {r.notes()}" if r.steps else "")
        for r in risks
    )
    emit([r.as_dict() for r in risks], as_json, text)


@cli.command("forecast")
@click.option("--scenario", "scenario_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=forecast_report.DEFAULT_SCENARIO, show_default="scenarios/hall_week.toml",
              help="A site scenario (TOML) to run on the site simulator.")
@click.option("--rack", "rack_id", metavar="ID", help="Forecast this rack's draw.")
@click.option("--source", "source_id", metavar="ID", help="Forecast this source's load.")
@click.option("--days", type=click.FloatRange(0, min_open=True), default=None, metavar="N",
              help="Days of history before the forecast origin.  [default: the whole days that leave the horizon "
                   "inside the scenario]")
@click.option("--horizon", "horizon_min", type=click.IntRange(1, forecast_report.MAX_HORIZON_MIN),
              default=forecast_report.DEFAULT_HORIZON_MIN, show_default=True, metavar="MIN",
              help="Minutes to forecast.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
              help="Also plot history, forecast, P95 band and actuals to this PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the report, the horizon step by step, as JSON.")
def forecast_command(scenario_path: Path, rack_id: str | None, source_id: str | None, days: float | None,
                     horizon_min: int, plot_path: Path | None, as_json: bool) -> None:
    """Show a rack's or source's load forecast against the actuals on the site simulator."""
    if (rack_id is None) == (source_id is None):
        raise click.UsageError("give one of --rack ID or --source ID")
    report = forecast_report.forecast_against_actuals(
        scenario_path, rack=rack_id, source=source_id, days=days, horizon_min=horizon_min)
    if plot_path is not None:
        forecast_report.plot(report, plot_path)
    data = report.as_dict() | {"plot": str(plot_path) if plot_path else None}
    emit(data, as_json, report.as_text() + (f"\nplot: {plot_path}" if plot_path else ""))


@cli.command("plan")
@click.option("--scenario", "scenario_path", type=click.Path(path_type=Path), default=plan_report.DEFAULT_SCENARIO,
              show_default="scenarios/battery_runout.toml", help="A site scenario (TOML) to run on the site simulator.")
@click.option("--at-s", "at_s", type=float, default=plan_report.DEFAULT_AT_S, show_default=True, metavar="T",
              help="Plan the site as it is this many simulated seconds in.")
@click.option("--method", type=click.Choice(plan_report.METHODS), default="auto", show_default=True,
              help=f"exact (MILP), heuristic, or auto: exact up to {plan_report.EXACT_MAX_RACKS} racks.")
@click.option("--budget", type=click.IntRange(0), default=None, metavar="N",
              help="Voluntary moves allowed.  [default: the policy's]")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(scenario_path: Path, at_s: float, method: str, budget: int | None, as_json: bool) -> None:
    """Show the allocation plan for the site (moves, utilisation, N-1 coverage) without executing it."""
    with progress.steps("simulating to", at_s, quiet=as_json) as bar:
        report = plan_report.plan_scenario(scenario_path, at_s=at_s, method=method, budget=budget,
                                           on_step=lambda t: bar.to(t, f"{t:,.0f} s, then planning"))
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.as_text())


@cli.command("tour")
@click.option("--site", "site_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=tour_module.DEFAULT_SITE, show_default="sites/demo.toml",
              help="The site file to flash, start, commission and operate.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the inventory, firmware and rig records here (default: a temporary directory, removed).")
@click.option("--json", "as_json", is_flag=True, help="Print what the tour found as JSON at the end.")
def tour(site_path: Path, workdir: Path | None, as_json: bool) -> None:
    """The main job on a virtual site, start to end: flash the taps, start them on a virtual
    rig, commission the site (wiring proved), read their status over the buses, lose the
    source that feeds the most racks with the host silent and show the local transfers."""
    echo = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    with contextlib.ExitStack() as stack:
        where = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ibt-tour-")))
        found = tour_module.tour(site_path, where, echo)
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))


@cli.group("sim", invoke_without_command=True)
@click.option("--taps", "n_taps", type=click.IntRange(1, 247), default=3, show_default=True,
              help="Taps (one rack each) when no --site is given.")
@click.option("--sources", "n_sources", type=click.IntRange(2, 64), default=2, show_default=True,
              help="Sources (ups-1, ups-2, ...) when no --site is given.")
@click.option("--site", "site_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A site file (sites/demo.toml): its sources, racks, rack taps and monitor taps.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=rig_control.default_workdir,
              show_default="ibt-sim-<uid> in the temporary directory", help="Firmware, flash directories, rig.json.")
@click.option("--baud", type=click.IntRange(1200, 4_000_000), default=115200, show_default=True)
@click.pass_context
def sim(ctx: click.Context, n_taps: int, n_sources: int, site_path: Path | None, workdir: Path, baud: int) -> None:
    """Run a virtual rig: taps on the compiled firmware, buses A and B as ptys, until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    layout = rig_layout.load_site_file(site_path) if site_path else (n_taps, n_sources)
    virtual = rig.VirtualRig(layout, workdir, baud)
    rig_control.run_until_stopped(virtual, _print_rig, lambda tap, code: click.echo(
        f"ibt sim: tap {tap} stopped (exit {code}); its log: {virtual.tap(tap).log}", err=True))
    click.echo("stopped")


def _print_rig(virtual: rig.VirtualRig) -> None:
    segments = virtual.segment_paths
    for segment, paths in segments.items():
        where = f"segment {segment} " if len(segments) > 1 else ""  # one segment: as every rig printed it
        for name, path in paths.items():
            click.echo(f"{where}bus {name}: {path}")
    for tap in virtual.taps:
        click.echo(f"tap {tap.id}: address {tap.address}, unique id {tap.unique_id}, rack {tap.rack}, "
                   f"inputs {' '.join(tap.inputs)}, segment {tap.segment}")
    for monitor in virtual.monitors:
        click.echo(f"monitor {monitor.id}: address {monitor.address}, unique id {monitor.unique_id}, "
                   f"fitted to {monitor.monitors}, segment {monitor.segment}")
    click.echo(f"records, keys included: {virtual.workdir / RIG_FILE}")
    click.echo(f"faults: ibt sim inject --workdir {virtual.workdir} KIND TARGET; Ctrl-C stops the rig")


@sim.command("inject")
@click.argument("kind", type=click.Choice(list(rig_faults.FAULTS)), metavar="KIND")
@click.argument("target")
@click.option("--fraction", type=float, help="sag: what is left of the voltage; load: of the rack's rating; "
              "ripple: RMS ripple over the DC bus's voltage.")
@click.option("--thd", "thd_pct", type=float, help="distort: total harmonic distortion, percent.")
@click.option("--kw", type=float, help="overload: extra load on the source; load: the rack's draw.")
@click.option("--celsius", type=float, help="heat: the source's temperature.")
@click.option("--rms", "rms_mg", type=float, help="vibration: RMS of the running tone and noise, mg.")
@click.option("--impulsive", is_flag=True, help="vibration: with a worn bearing's impacts.")
@click.option("--duration", "duration_s", type=float, help="Simulated seconds (plant faults); default: until cleared.")
@click.option("--rate", type=float, help="ber, drop: probability per bit or byte.")
@click.option("--off", is_flag=True, help="cut, babble: end it.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=rig_control.default_workdir,
              show_default="as ibt sim's")
def sim_inject(kind: str, target: str, workdir: Path, off: bool, impulsive: bool, **values: float | None) -> None:
    """Inject a fault into the running rig: KIND lose, restore, sag, distort, overload (TARGET a
    source); heat, vibration, ripple (a source a monitor tap is fitted to; without a value, back
    to its baseline); load (a rack or tap); cut, ber, drop, babble (bus A or B)."""
    params: dict[str, Any] = {name: value for name, value in values.items() if value is not None}
    if off:
        params["on"] = False
    if impulsive:
        params["impulsive"] = True
    rig_control.send_control(workdir, {"command": "inject", "kind": kind, "target": target, "params": params})
    click.echo(f"injected {kind} on {target}")


@sim.command("status")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=rig_control.default_workdir,
              show_default="as ibt sim's")
@click.option("--json", "as_json", is_flag=True)
def sim_status(workdir: Path, as_json: bool) -> None:
    """Show the running rig's sources (load, voltage, faults) and taps (which source each draws from)."""
    state = rig_control.send_control(workdir, {"command": "status"})
    lines = [f"source {sid}: {s['load_kw']:.2f} of {s['capacity_kw']:g} kW, {s['voltage_v']:.1f} V"
             + (f", {', '.join(s['effects'])}" if s["effects"] else "") for sid, s in state["sources"].items()]
    lines += [f"tap {tid}: input {t['conducting']} ({t['source'] or 'none'}), {t['draw_kw']:.2f} kW, "
              f"{t['sim_time_s']:.1f} s simulated" + ("" if t["running"] else ", STOPPED")
              for tid, t in state["taps"].items()]
    lines += [f"monitor {mid}: {m['source']}, {m['temperature_c']:.1f} degC, {m['vibration_rms_mg']:.0f} mg"
              + (" impulsive" if m["impulsive"] else "") + f", ripple {100 * m['ripple_fraction']:.1f}%"
              + ("" if m["running"] else ", STOPPED") for mid, m in state.get("monitors", {}).items()]
    emit(state, as_json, "\n".join(lines))


def _summary(entry: dict[str, Any]) -> str:
    if "message" not in entry:
        if "error" in entry:
            return f"frame intact but refused: {entry['error']} ({entry['detail']})"
        return f"frame dropped: {entry['verdict']}"
    auth = ""
    if "auth" in entry:
        tag_state = {True: "tag ok", False: "TAG WRONG"}.get(entry["auth"].get("tag_ok"), "tag unchecked")
        auth = f" [epoch {entry['auth']['epoch']} counter {entry['auth']['counter']}, {tag_state}]"
    head = f"{entry['message']} {entry['direction']} {entry['src']}->{entry['dst']} seq {entry['seq']}{auth}"
    if "refusal" in entry:
        return f"{head}: {entry['refusal']}"
    return f"{head}: {json.dumps(entry['fields'])}"


for _command in cli_taps.COMMANDS:  # flash, scan, commission, ... over the buses (host/cli/taps.py)
    cli.add_command(_command)
cli.add_command(segment_group)


if __name__ == "__main__":
    main()
