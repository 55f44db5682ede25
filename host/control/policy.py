"""The controller's policy: what it may do and how often, read from a TOML file
(docs/policy.md) and validated with every problem named by its field and line.

Every field has a default, so an empty file (or none) is the default policy:

    [limits]
    ceiling = 0.9               # steady-state load at most this share of a source's capacity
    overload_allowance = 0.10   # after a loss, survivors may carry capacity * (1 + this)

    [moves]
    per_plan = 20               # voluntary moves in one plan (evacuations are not counted)
    dwell_s = 21600             # a rack moved less than this ago stays where it is
    per_week = 3                # a rack moved this often in seven days stays where it is
    per_source = 2              # moves onto one source at once
    stagger_s = 2.0             # between two arrivals on one source

    [risk]
    raise = 0.5                 # a source's fault risk above this raises its alarm: emptied
    clear = 0.3                 # and the alarm clears only below this (hysteresis)

    [timing]
    tick_s = 60                 # read the fleet, store, update the forecasts and the risk
    plan_s = 3600               # a plan at least this often; triggers make one at once
    horizon_s = 3600            # a plan must hold this long: racks count with their P95 over it
    refit_s = 3600              # the forecasters' full refit
    reseason_s = 600            # their seasonal mean alone, between refits

    [plan]
    aim = 1.0                   # a site whose every single loss leaves each survivor at most this
                                # share of its capacity (forecast P95) is left alone; above it, a
                                # plan moves the fewest racks that bring it to aim - margin
    margin = 0.02               # a plan that changes assignments must lower the worst
                                # post-contingency utilisation by at least this much
    imbalance = 0.30            # spread of utilisation (most minus least loaded) that triggers a plan
    thd_limit_pct = 5.0         # sensitive racks avoid sources above this THD when they can

    [shedding]
    allowed = true              # may the controller open racks when nothing else covers N-1?
    classes = ["deferrable"]    # which priority classes it may open: deferrable, or none ([]);
                                # critical racks are never shed, and the allocator opens no
                                # normal rack

    [telemetry]
    raw_s = 86400               # raw readings kept this long
    minute_s = 2592000          # minute roll-ups kept this long (30 days)
    hour_s = 34560000           # hour roll-ups kept this long (400 days)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from host.allocate.problem import Policy
from host.model.errors import ConfigurationError
from host.model.site import Priority
from host.model.toml_fields import FieldReader
from host.model.toml_lines import key_lines

SECTIONS = {"limits", "moves", "risk", "timing", "plan", "shedding", "telemetry"}


class PolicyError(ConfigurationError, ValueError):
    """A policy file refused; `problems` names every field that is wrong."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"policy refused: {problems[0]}{more}")


@dataclass(frozen=True)
class ControlPolicy:
    """See the module docstring for each field's meaning and unit."""

    ceiling: float = 0.9
    overload_allowance: float = 0.10
    moves_per_plan: int = 20
    dwell_s: float = 6 * 3600.0
    moves_per_week: int = 3
    arrivals_per_source: int = 2
    stagger_s: float = 2.0
    risk_raise: float = 0.5
    risk_clear: float = 0.3
    tick_s: float = 60.0
    plan_s: float = 3600.0
    horizon_s: float = 3600.0
    refit_s: float = 3600.0
    reseason_s: float = 600.0
    aim: float = 1.0
    margin: float = 0.02
    imbalance: float = 0.30
    thd_limit_pct: float = 5.0
    shedding_allowed: bool = True
    shed_classes: frozenset[Priority] = field(default_factory=lambda: frozenset({Priority.DEFERRABLE}))
    raw_s: float = 86_400.0
    minute_s: float = 30 * 86_400.0
    hour_s: float = 400 * 86_400.0

    def allocation(self) -> Policy:
        """The allocator's policy (host/allocate/problem.py) this policy asks for."""
        return replace(
            Policy(), ceiling=self.ceiling, overload_allowance=self.overload_allowance,
            move_budget=self.moves_per_plan, min_dwell_s=self.dwell_s, max_moves_per_week=self.moves_per_week,
            risk_threshold=self.risk_raise, thd_limit_pct=self.thd_limit_pct,
            allow_shedding=self.shedding_allowed and bool(self.shed_classes),
            aim_u=max(self.aim - self.margin, 0.0),
        )

    def may_shed(self, priority: Priority) -> bool:
        return self.shedding_allowed and priority in self.shed_classes


# (section, key) -> (field, kind, minimum, maximum); kinds: "number", "positive", "integer", "fraction"
_FIELDS: dict[tuple[str, str], tuple[str, str, float | None, float | None]] = {
    ("limits", "ceiling"): ("ceiling", "fraction", 0.0, 1.0),
    ("limits", "overload_allowance"): ("overload_allowance", "number", 0.0, 1.0),
    ("moves", "per_plan"): ("moves_per_plan", "integer", 0, 10_000),
    ("moves", "dwell_s"): ("dwell_s", "number", 0.0, None),
    ("moves", "per_week"): ("moves_per_week", "integer", 0, 1000),
    ("moves", "per_source"): ("arrivals_per_source", "integer", 1, 1000),
    ("moves", "stagger_s"): ("stagger_s", "number", 0.0, 3600.0),
    ("risk", "raise"): ("risk_raise", "fraction", 0.0, 1.0),
    ("risk", "clear"): ("risk_clear", "number", 0.0, 1.0),
    ("timing", "tick_s"): ("tick_s", "positive", 0.0, 86_400.0),
    ("timing", "plan_s"): ("plan_s", "positive", 0.0, 7 * 86_400.0),
    ("timing", "horizon_s"): ("horizon_s", "positive", 0.0, 7 * 86_400.0),
    ("timing", "refit_s"): ("refit_s", "positive", 0.0, 7 * 86_400.0),
    ("timing", "reseason_s"): ("reseason_s", "positive", 0.0, 7 * 86_400.0),
    ("plan", "aim"): ("aim", "number", 0.0, 2.0),
    ("plan", "margin"): ("margin", "number", 0.0, 1.0),
    ("plan", "imbalance"): ("imbalance", "fraction", 0.0, 1.0),
    ("plan", "thd_limit_pct"): ("thd_limit_pct", "number", 0.0, 100.0),
    ("telemetry", "raw_s"): ("raw_s", "positive", 0.0, None),
    ("telemetry", "minute_s"): ("minute_s", "positive", 0.0, None),
    ("telemetry", "hour_s"): ("hour_s", "positive", 0.0, None),
}


def parse_policy(text: str, name: str = "policy") -> ControlPolicy:
    """A policy from TOML text; PolicyError naming every wrong field (and its line)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([f"{name}: TOML syntax: {exc}"]) from None
    reader = FieldReader(key_lines(text))
    reader.table(data, "", SECTIONS)
    values: dict[str, Any] = {}
    for section in SECTIONS:
        raw = data.get(section, {})
        allowed = {key for sec, key in _FIELDS if sec == section} | ({"allowed", "classes"} if section == "shedding"
                                                                       else set())
        table = reader.table(raw, section, allowed)
        for (sec, key), (attr, kind, low, high) in _FIELDS.items():
            if sec != section or key not in table:
                continue
            if kind == "integer":
                value = reader.integer(table, key, section, minimum=int(low or 0),
                                       maximum=None if high is None else int(high))
            else:
                value = reader.number(table, key, section, minimum=low, strict=kind in ("positive", "fraction"),
                                      maximum=high)
            if value is not None:
                values[attr] = value
        if section == "shedding":
            _shedding(reader, table, values)
    policy = ControlPolicy(**values) if not reader.problems else ControlPolicy()
    if policy.risk_clear >= policy.risk_raise:
        reader.problem("risk.clear", f"must be below risk.raise ({policy.risk_raise:g}): the alarm needs "
                                     f"hysteresis (got {policy.risk_clear:g})")
    if policy.plan_s < policy.tick_s:
        reader.problem("timing.plan_s", f"must be at least timing.tick_s ({policy.tick_s:g} s)")
    if policy.raw_s < policy.tick_s:
        reader.problem("telemetry.raw_s", f"must keep at least one tick ({policy.tick_s:g} s)")
    if reader.problems:
        raise PolicyError([f"{name}: {p}" for p in reader.problems])
    return policy


def _shedding(reader: FieldReader, table: dict[str, Any], values: dict[str, Any]) -> None:
    if "allowed" in table:
        if isinstance(table["allowed"], bool):
            values["shedding_allowed"] = table["allowed"]
        else:
            reader.problem("shedding.allowed", f"must be true or false (got {table['allowed']!r})")
    if "classes" in table:
        raw = table["classes"]
        choices = [p.value for p in Priority]
        if not isinstance(raw, list) or not all(isinstance(c, str) and c in choices for c in raw):
            reader.problem("shedding.classes", f"must be a list of {', '.join(choices)} (got {raw!r})")
        elif Priority.CRITICAL.value in raw:
            reader.problem("shedding.classes", "critical racks are never shed: leave 'critical' out")
        elif Priority.NORMAL.value in raw:  # host/allocate: only deferrable racks may be opened
            reader.problem("shedding.classes", "the allocator opens deferrable racks only: 'normal' cannot be shed "
                                               "by the controller")
        else:
            values["shed_classes"] = frozenset(Priority(c) for c in raw)


def load_policy(path: Path | str | None) -> ControlPolicy:
    """The policy in `path`, or the default policy for None."""
    if path is None:
        return ControlPolicy()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyError([f"cannot read policy file {path}: {exc.strerror or exc}"]) from None
    return parse_policy(text, Path(path).name)
