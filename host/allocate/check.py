"""An independent check of an assignment: simulate every single source loss the way the
taps would handle it, rack by rack, and compare each survivor's load with its limits.

Deliberately plain loops over the problem's own data, sharing nothing with the
solvers' formulations, so a solver bug cannot hide behind the same bug here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from host.allocate.problem import Problem
from host.model.arrays import IntArray

TOLERANCE_KW = 1e-6


@dataclass(frozen=True)
class Check:
    """`covered[s]`: the loss of source s leaves every one of its racks on a usable
    alternate (but those `dropped`, as the policy allows) and every survivor within its
    limits. `coverage` is the share of sources covered; `worst_post` the highest
    utilisation of any survivor after any single loss (steady state included);
    `problems` says what is wrong, naming rack or source."""

    covered: tuple[bool, ...]
    coverage: float
    worst_post: float
    steady_util: tuple[float, ...]
    moves: int  # voluntary moves, as the budget counts them
    problems: tuple[str, ...]
    dropped: tuple[str, ...] = ()  # deferrable racks with no alternate: their tap drops them at their source's loss

    @property
    def ok(self) -> bool:
        return not self.problems


def check(problem: Problem, assign: IntArray, alternate: IntArray) -> Check:
    """Check `assign` (target source per rack, -1: shed) with `alternate` (where each
    rack's tap goes if its target is lost; -1 on a deferrable rack the policy lets shed:
    dropped at that loss) against every rule of the problem."""
    p = problem.policy
    sources = problem.source_ids
    n = len(sources)
    problems: list[str] = []
    load = [0.0] * n
    moved_to: dict[tuple[int, int], float] = {}  # (lost, survivor) -> kW that transfers
    moves = 0
    dropped: list[str] = []
    for r, rack in enumerate(problem.rack_ids):
        target, alt, cur = int(assign[r]), int(alternate[r]), int(problem.current[r])
        draw = float(problem.draw_kw[r])
        sheddable = problem.priority[r].value == "deferrable" and p.allow_shedding
        if target < 0:
            if not sheddable:
                problems.append(f"rack {rack!r}: shed, but only deferrable racks may be shed")
            continue
        inputs = {int(s): k for k, s in enumerate(problem.reach[r]) if s >= 0}
        if not _fits(problem, r, inputs, target):
            problems.append(f"rack {rack!r}: target {sources[target]!r} is not usable for it")
        forced = cur < 0 or not _fits(problem, r, inputs, cur)
        if target != cur and not forced:
            moves += 1
            tired = problem.dwell_s[r] < p.min_dwell_s or problem.moves_week[r] >= p.max_moves_per_week
            if tired:
                problems.append(f"rack {rack!r}: moved despite its dwell or weekly cap")
        load[target] += draw
        if alt < 0 and sheddable:
            dropped.append(rack)  # a shed at the loss, as the policy allows: nothing transfers
        elif alt == target or alt < 0 or not _fits(problem, r, inputs, alt):
            problems.append(f"rack {rack!r}: no usable alternate for the loss of {sources[target]!r}")
            moved_to[(target, -1)] = moved_to.get((target, -1), 0.0) + draw
        else:
            moved_to[(target, alt)] = moved_to.get((target, alt), 0.0) + draw
    if moves > p.move_budget:
        problems.append(f"plan: {moves} moves exceed the move budget {p.move_budget}")
    cap = [float(c) for c in problem.capacity_kw]
    other = [float(o) for o in problem.other_kw]
    steady_util = tuple((load[t] + other[t]) / cap[t] for t in range(n))
    worst = max(steady_util) if n > 1 else 0.0
    for t in range(n):
        over = load[t] - _limit(problem, t, p.ceiling)
        if over > TOLERANCE_KW:
            problems.append(f"source {sources[t]!r}: steady load over its ceiling by {over:.1f} kW")
    covered = [True] * n
    for s in range(n):
        if moved_to.get((s, -1), 0.0) > 0:
            covered[s] = False
        for t in range(n):
            if t == s:
                continue
            after = load[t] + moved_to.get((s, t), 0.0)
            worst = max(worst, (after + other[t]) / cap[t])
            over = after - _limit(problem, t, 1.0 + p.overload_allowance)
            if over > TOLERANCE_KW:
                covered[s] = False
                problems.append(f"source {sources[t]!r}: over its limit by {over:.1f} kW if {sources[s]!r} is lost")
    return Check(
        covered=tuple(covered),
        coverage=sum(covered) / n,
        worst_post=worst,
        steady_util=steady_util,
        moves=moves,
        problems=tuple(problems),
        dropped=tuple(dropped),
    )


def _fits(problem: Problem, r: int, inputs: dict[int, int], source: int) -> bool:
    """The rack's tap is wired to `source`, the source may serve, and the path drop is within the limit."""
    p = problem.policy
    if source not in inputs or not problem.available[source] or problem.risk[source] > p.risk_threshold:
        return False
    current_a = problem.draw_kw[r] * 1000.0 / (math.sqrt(3) * p.voltage_v * p.power_factor)
    drop_v = math.sqrt(3) * current_a * problem.impedance_ohm[r, inputs[source]]
    return bool(drop_v <= p.max_drop_v + 1e-9)


def _limit(problem: Problem, t: int, factor: float) -> float:
    """What source t may carry from the racks at `factor` times its capacity, batteries
    also held to the policy's minimum runtime."""
    limit = float(problem.capacity_kw[t]) * factor
    if problem.kind[t].value == "battery":
        stored_kwh = float(problem.energy_kwh[t])
        runtime_kw = float(problem.recharge_kw[t]) + stored_kwh * 3600.0 / problem.policy.min_runtime_s
        limit = min(limit, runtime_kw)
    return limit - float(problem.other_kw[t])
