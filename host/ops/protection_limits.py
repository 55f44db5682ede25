"""A tap's protection limits: the defaults that coordinate with its board, the checks
against the board's ratings, reading them back and setting them.

Protection settings are checked against the board before they are sent: the tap itself
refuses some values (SPEC.md, SET_LIMITS), but a setting can be within what the tap
accepts and still not coordinate with the parts: a pickup the input's fuse would beat,
an instantaneous pickup above what the relay can break, a voltage limit beyond what the
ADC measures. "The current limits" are what the tap runs on, read back with
READ_SETTINGS; only when the tap cannot be asked (no bus given, no answer, a firmware
older than protocol minor 1) are they the last SET_LIMITS it acknowledged, from the
inventory's command history, and the answer says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from host.client.replies import Reply, Settings
from host.client.tap_errors import TapRefused, TapTimeout
from host.model import boards
from host.ops.operate import patiently, prepare, site_nominal
from host.ops.session import OperatorError, Session, tap_address
from host.store.records import CommandState, TapInfo
from protocol import catalog

LIMIT_FIELDS = ("curve", "pickup_mA", "tms_milli", "instantaneous_mA", "undervoltage_mV", "overvoltage_mV",
                "frequency_low_cHz", "frequency_high_cHz", "thd_max_dpct")


# The firmware's own defaults (firmware/protection.py Settings), for a tap never set by the host.
FIRMWARE_DEFAULT_LIMITS = {"curve": 1, "pickup_mA": 32000, "tms_milli": 100, "instantaneous_mA": 320000,
                           "undervoltage_mV": 195500, "overvoltage_mV": 264500, "frequency_low_cHz": 4750,
                           "frequency_high_cHz": 5250, "thd_max_dpct": 80}


@dataclass(frozen=True)
class Ratings:
    """What the parts of a tap's board can take, in mA (the weakest input's)."""

    relay_rated_mA: int
    breaking_mA: int
    fuse_mA: int
    measurable_mV: int  # the largest RMS voltage the ADC reads without clipping


def ratings(tap: TapInfo) -> Ratings:
    try:
        board = boards.by_name(tap.board)
    except boards.BoardError as exc:
        raise OperatorError(f"tap {tap.id}: board {tap.board!r}: {'; '.join(exc.problems)}") from None
    relays = {r["id"]: r for r in board.raw["relays"]}
    used = [relays[i["relay"]] for i in board.raw["inputs"]]
    return Ratings(
        relay_rated_mA=round(min(r["rated_current_a"] for r in used) * 1000),
        breaking_mA=round(min(r["breaking_capacity_a"] for r in used) * 1000),
        fuse_mA=round(min(i["fuse_a"] for i in board.raw["inputs"]) * 1000),
        measurable_mV=round(board.raw["adc"]["volts_full_scale"] / math.sqrt(2) * 1000),
    )


def default_limits(session: Session, tap: TapInfo) -> dict[str, int]:
    """Settings that coordinate with the board and suit the site: pickup at 80% of the
    weakest of relay and fuse, instantaneous at the relay's breaking capacity, voltage
    ±15% and frequency ±5% of the site's nominal values."""
    rating = ratings(tap)
    nominal_v, hz = site_nominal(session)
    pickup = int(min(rating.relay_rated_mA, rating.fuse_mA) * 0.8)
    return {"curve": catalog.CURVE_STANDARD_INVERSE, "pickup_mA": pickup, "tms_milli": 100,
            "instantaneous_mA": rating.breaking_mA, "undervoltage_mV": round(nominal_v * 850),
            "overvoltage_mV": min(round(nominal_v * 1150), rating.measurable_mV),
            "frequency_low_cHz": round(hz * 95), "frequency_high_cHz": round(hz * 105), "thd_max_dpct": 80}


def limit_problems(tap: TapInfo, limits: dict[str, int]) -> list[str]:
    """Why the settings do not coordinate with the tap's board; empty when they do."""
    rating = ratings(tap)
    missing = [name for name in LIMIT_FIELDS if name not in limits]
    if missing:
        return [f"missing {', '.join(missing)}"]
    pickup, instantaneous = limits["pickup_mA"], limits["instantaneous_mA"]
    checks = [
        (limits["curve"] not in (1, 2, 3), f"curve {limits['curve']} is not 1, 2 or 3"),
        (pickup <= 0, "pickup must be above 0"),
        (pickup > rating.relay_rated_mA,
         f"pickup {pickup / 1000:g} A is above the relay's rated current {rating.relay_rated_mA / 1000:g} A"),
        (pickup > rating.fuse_mA, f"pickup {pickup / 1000:g} A is above the input fuse's {rating.fuse_mA / 1000:g} A: "
         "the fuse would blow before the overload protection acts"),
        (pickup > rating.breaking_mA,
         f"pickup {pickup / 1000:g} A is above the relay's breaking capacity {rating.breaking_mA / 1000:g} A"),
        (instantaneous > rating.breaking_mA,
         f"instantaneous {instantaneous / 1000:g} A is above the relay's breaking capacity "
         f"{rating.breaking_mA / 1000:g} A: the relay could not open on the fault it detects"),
        (instantaneous <= pickup, f"instantaneous {instantaneous / 1000:g} A must be above pickup {pickup / 1000:g} A"),
        (not 50 <= limits["tms_milli"] <= 1500, f"time multiplier {limits['tms_milli'] / 1000:g} is outside 0.05..1.5"),
        (limits["undervoltage_mV"] >= limits["overvoltage_mV"], "undervoltage must be below overvoltage"),
        (limits["overvoltage_mV"] > rating.measurable_mV,
         f"overvoltage {limits['overvoltage_mV'] / 1000:g} V is above what the board measures "
         f"({rating.measurable_mV / 1000:g} V RMS)"),
        (limits["frequency_low_cHz"] >= limits["frequency_high_cHz"], "low frequency must be below high frequency"),
        (not 0 < limits["thd_max_dpct"] <= 1000, "maximum THD must be 0.1% to 100%"),
    ]
    return [message for bad, message in checks if bad]


def check_limits(session: Session, tap: TapInfo, limits: dict[str, int]) -> None:
    problems = limit_problems(tap, limits)
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        raise OperatorError(f"tap {tap.id}: limits refused, nothing sent: {problems[0]}{more}")


def read_settings(session: Session, tap: TapInfo) -> Settings:
    """READ_SETTINGS of the tap, read patiently; OperatorError when its firmware has none."""
    client = session.client(tap.bus)
    try:
        return patiently(lambda: client.read_settings(tap_address(tap)))
    except TapRefused as exc:
        if exc.code == catalog.E_UNKNOWN_TYPE:
            raise OperatorError(f"tap {tap.id}: its firmware predates READ_SETTINGS and SET_CALIBRATION "
                                "(protocol minor 0): flash a newer one") from None
        raise OperatorError(f"tap {tap.id}: READ_SETTINGS refused: {exc.text}") from None


LIMITS_FROM_TAP = "read from the tap"


def current_limits(session: Session, tap: TapInfo) -> tuple[dict[str, int], str]:
    """The limits in force at the tap (READ_SETTINGS), and where they come from. When the
    tap cannot be asked (no bus given) or does not answer, the last limits it acknowledged
    (the command history), else the firmware's defaults; the origin then says why."""
    why = "no bus given"
    if session.can_reach(tap.bus):
        try:
            return session.client(tap.bus).read_settings(tap_address(tap)).limits, LIMITS_FROM_TAP
        except TapTimeout:
            why = "the tap did not answer READ_SETTINGS"
        except TapRefused as exc:
            why = f"the tap refused READ_SETTINGS: {exc.name}"
    for record in reversed(session.inventory.commands(tap.id)):
        if record.message == "SET_LIMITS" and record.state == CommandState.ACKNOWLEDGED:
            return {k: int(record.fields[k]) for k in LIMIT_FIELDS}, f"last set, from the command history ({why})"
    return dict(FIRMWARE_DEFAULT_LIMITS), f"firmware defaults, never set by this host ({why})"


def send_limits(session: Session, tap: TapInfo, limits: dict[str, int]) -> Reply:
    check_limits(session, tap, limits)
    client = session.client(tap.bus)
    values = {k: int(limits[k]) for k in LIMIT_FIELDS}
    return session.command(tap, "SET_LIMITS", values, lambda: client.set_limits(tap_address(tap), values))


def set_limits(session: Session, tap_ref: str, changes: dict[str, int]) -> dict[str, int]:
    """Change some settings (the others as in force at the tap); checked, aligned to the epoch, sent."""
    tap = session.tap(tap_ref)
    unknown = sorted(set(changes) - set(LIMIT_FIELDS))
    if unknown:
        raise OperatorError(f"unknown setting {', '.join(unknown)} (settings: {', '.join(LIMIT_FIELDS)})")
    limits = current_limits(session, tap)[0] | changes
    check_limits(session, tap, limits)
    prepare(session, tap)
    send_limits(session, tap, limits)
    return limits
