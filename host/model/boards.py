"""Board descriptions (boards/*.toml): loaded, validated, and turned into the
parameters the firmware runs with.

Every problem is reported with the field it concerns, all at once, so an engineer
fixes a description in one pass. Timing claims are computed from the relays' datasheet
maxima only. A rack tap is refused unless an MCU reset cannot drop the rack (latching
relays, or coils held by a driver that keeps its state through a reset, powered from a
logic supply fed by every input) and every relay has contact feedback; a production
rack tap is refused if its worst transfer exceeds the 20 ms that IT power supplies
ride through. A development board gets that last finding as a warning.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.model.errors import ConfigurationError

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"
RIDE_THROUGH_MS = 20.0  # ITIC/CBEMA: IT power supplies ride through about 20 ms at zero volts
TARGET_MS = 12.0  # the best relay-based rack transfer switch (APC AP44xx)
DETECTION_MS = 2.0  # 1 ms below the threshold, plus one 1 ms block of latency
DIODE_RELEASE_FACTOR = 5.0  # a plain flyback diode: release 2 to 5 times longer (boards/PARTS.md)
ADC_MAX = 8191
SUPPRESSION = {"none": 1.0, "diode_zener": 1.0, "tvs": 1.0, "driver": 1.0, "diode": DIODE_RELEASE_FACTOR}


class BoardError(ConfigurationError, ValueError):
    """A description the build refuses; `problems` lists every finding with its field."""

    cause = "the board description in boards/"

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(f"{path.name}: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Board:
    path: Path
    raw: dict[str, Any]
    transfer_ms: float  # detection + the slowest release + operate + bounce, from datasheet maxima
    warnings: tuple[str, ...]

    @property
    def name(self) -> str:
        return str(self.raw["board"]["name"])

    def firmware_parameters(self) -> dict[str, Any]:
        """What firmware/tap.py takes as `board` (written to board.json on the flash)."""
        raw = self.raw
        adc = raw["adc"]
        relays = raw["relays"]
        role = raw["board"]["role"]
        params = {
            "name": raw["board"]["name"],
            "role": 1 if role == "source_monitor" else 0,
            "n_inputs": len(raw["inputs"]),
            "fs": adc["sample_rate_hz"],
            "block": raw["board"]["block_samples"],
            "nominal_hz": adc["nominal_hz"],
            "mV_per_count": adc["volts_full_scale"] / ADC_MAX * 1000,
            "mA_per_count": adc["amps_full_scale"] / ADC_MAX * 1000,
            "counts_per_amp_q8": int(ADC_MAX / adc["amps_full_scale"] * 256),
            "operate_us": round(max(r["operate_ms_max"] for r in relays) * 1000),
            "release_us": round(max(_release_ms(r) for r in relays) * 1000),
            "bounce_us": round(max(r["bounce_ms_max"] for r in relays) * 1000),
            "breaking_mA": round(min(r["breaking_capacity_a"] for r in relays) * 1000),
            "rated_mA": round(min(r["rated_current_a"] for r in relays) * 1000),
            "fuse_mA": round(min(i["fuse_a"] for i in raw["inputs"]) * 1000),
            "loss_fraction": adc["loss_fraction"],
            "default_alternates": list(raw["protection"]["default_alternates"]),
            "capture_samples": adc["capture_samples"],
            "watchdog_ms": raw["watchdog"]["timeout_ms"],
        }
        if role == "source_monitor":
            monitor = raw["monitor"]
            params |= {"n_aux": 2, "health_window": monitor["window_samples"],
                       "mg_per_count": monitor["mg_per_count"], "dc_volts_per_count": monitor["dc_volts_per_count"]}
        return params


def _release_ms(relay: dict[str, Any]) -> float:
    return float(relay["release_ms_max"]) * SUPPRESSION.get(relay["suppression"], 1.0)


def load(path: Path) -> Board:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise BoardError(path, [f"cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise BoardError(path, [f"not TOML: {exc}"]) from None
    problems: list[str] = []
    _check_shape(raw, problems)
    if problems:
        raise BoardError(path, problems)
    transfer_ms = DETECTION_MS + max(_release_ms(r) for r in raw["relays"]) + max(
        r["operate_ms_max"] + r["bounce_ms_max"] for r in raw["relays"]
    )
    warnings = _check_safety(raw, transfer_ms, problems)
    if problems:
        raise BoardError(path, problems)
    return Board(path, raw, transfer_ms, tuple(warnings))


def by_name(name: str) -> Board:
    path = BOARDS_DIR / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in BOARDS_DIR.glob("*.toml")))
        raise BoardError(path, [f"no such board; boards: {known}"])
    return load(path)


# -- shape: every field present with its type and range -------------------------------------

_SECTIONS: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "board": {"name": (str, None), "purpose": (str, ("production", "development")), "mcu": (str, ("rp2040",)),
              "role": (str, ("rack_tap", "source_monitor")), "heap_budget_kb": (int, (32, 512)),
              "block_samples": (int, (1, 64))},
    "adc": {"driver": (str, None), "part": (str, None), "sample_rate_hz": (int, (2000, 32000)),
            "nominal_hz": (int, (50, 60)), "capture_samples": (int, (80, 4000)),
            "volts_full_scale": ((int, float), (100, 1000)), "amps_full_scale": ((int, float), (1, 5000)),
            "loss_fraction": ((int, float), (0.3, 0.95))},
    "protection": {"default_alternates": (list, None)},
    "watchdog": {"timeout_ms": (int, (10, 8000))},
}
_RELAY: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "id": (str, None), "part": (str, None), "operate_ms_max": ((int, float), (0.1, 200)),
    "release_ms_max": ((int, float), (0.1, 200)), "bounce_ms_max": ((int, float), (0, 50)),
    "breaking_capacity_a": ((int, float), (1, 10000)), "rated_current_a": ((int, float), (1, 10000)),
    "poles": (int, (1, 4)), "latching": (bool, None), "suppression": (str, tuple(SUPPRESSION)),
    "feedback": (str, ("mirror", "auxiliary", "none")), "hardware_interlock": (bool, None),
}
_INPUT: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "index": (int, (1, 4)), "fuse_a": ((int, float), (1, 1000)), "relay": (str, None),
}
_UART: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "bus": (str, ("A", "B")), "id": (int, (0, 1)), "baud": (int, (9600, 921600)), "de_pin": (int, (0, 29)),
}


def _check_fields(where: str, table: Any, spec: dict[str, tuple[type | tuple[type, ...], Any]],
                  problems: list[str]) -> None:
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table")
        return
    for field, (kind, allowed) in spec.items():
        name = f"{where}.{field}"
        if field not in table:
            problems.append(f"{name}: missing")
            continue
        value = table[field]
        if (kind is not bool and isinstance(value, bool)) or not isinstance(value, kind):
            problems.append(f"{name}: must be {_kind_name(kind)}, not {value!r}")
        elif isinstance(allowed, tuple) and isinstance(allowed[0], str) and value not in allowed:
            problems.append(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        elif isinstance(allowed, tuple) and not isinstance(allowed[0], str) and not allowed[0] <= value <= allowed[1]:
            problems.append(f"{name}: {value} is outside {allowed[0]}..{allowed[1]}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return "a number"
    return {str: "text", int: "a whole number", bool: "true or false", list: "a list"}.get(kind, kind.__name__)


def _check_shape(raw: dict[str, Any], problems: list[str]) -> None:
    for section, spec in _SECTIONS.items():
        _check_fields(section, raw.get(section), spec, problems)
    for key, spec in (("relays", _RELAY), ("inputs", _INPUT), ("uarts", _UART)):
        items = raw.get(key)
        if not isinstance(items, list) or not items:
            problems.append(f"{key}: at least one [[{key}]] entry is needed")
            continue
        for n, item in enumerate(items, start=1):
            _check_fields(f"{key}[{n}]", item, spec, problems)
    if raw.get("board", {}).get("role") == "source_monitor":
        _check_fields("monitor", raw.get("monitor"), {
            "window_samples": (int, (256, 8192)), "mg_per_count": ((int, float), (0.01, 100)),
            "dc_volts_per_count": ((int, float), (0.001, 10))}, problems)


# -- safety: what the description claims, against the rules ------------------------------------

def _check_safety(raw: dict[str, Any], transfer_ms: float, problems: list[str]) -> list[str]:
    warnings: list[str] = []
    relays = {r["id"]: r for r in raw["relays"]}
    inputs = raw["inputs"]
    if sorted(i["index"] for i in inputs) != list(range(1, len(inputs) + 1)):
        problems.append("inputs: indexes must be 1..n, each once")
    for n, item in enumerate(inputs, start=1):
        relay = relays.get(item["relay"])
        if relay is None:
            problems.append(f"inputs[{n}].relay: no relay with id {item['relay']!r}")
            continue
        if item["fuse_a"] > relay["rated_current_a"]:
            problems.append(f"inputs[{n}].fuse_a: a {item['fuse_a']} A fuse does not protect relay {relay['id']} "
                            f"rated {relay['rated_current_a']} A")
    if sorted(u["bus"] for u in raw["uarts"]) != ["A", "B"]:
        problems.append("uarts: one UART for bus A and one for bus B")
    alternates = raw["protection"]["default_alternates"]
    if len(alternates) != 3 or any(not isinstance(a, int) or not 0 <= a <= len(inputs) for a in alternates):
        problems.append(f"protection.default_alternates: three input numbers 0..{len(inputs)}")
    if raw["board"]["role"] != "rack_tap":
        return warnings
    for n, relay in enumerate(raw["relays"], start=1):
        if relay["poles"] != 2:
            problems.append(f"relays[{n}].poles: a rack tap switches line and neutral: 2, not {relay['poles']}")
        if relay["feedback"] == "none":
            problems.append(f"relays[{n}].feedback: a rack tap needs contact feedback (mirror or auxiliary contacts)")
    if not all(r["latching"] for r in raw["relays"]):
        supply = raw.get("logic_supply", {})
        held = raw.get("coil_drive", {}).get("held_through_reset") is True
        if not (supply.get("fed_from_all_inputs") is True and supply.get("holdup_ms", 0) >= 100 and held):
            problems.append("relays: non-latching relays need [coil_drive] held_through_reset = true and a "
                            "[logic_supply] fed_from_all_inputs = true with holdup_ms >= 100, or an MCU reset "
                            "drops the rack")
    budget = (f"transfer budget {transfer_ms:.1f} ms from datasheet maxima (detection {DETECTION_MS:.0f} + "
              f"release + operate + bounce) exceeds the {RIDE_THROUGH_MS:.0f} ms ride-through of IT power supplies")
    if transfer_ms > RIDE_THROUGH_MS:
        if raw["board"]["purpose"] == "production":
            problems.append(f"relays: {budget}")
        else:
            warnings.append(budget)
    elif transfer_ms > TARGET_MS:
        warnings.append(f"transfer budget {transfer_ms:.1f} ms is above the {TARGET_MS:.0f} ms goal")
    return warnings
