"""A plan from the live site: the allocation problem built from what the fleet reports
and what the observer forecasts, solved, and weighed against staying put.

The problem (host/allocate/problem.py): each rack with the largest P95 of its forecast
over the horizon (scheduled jobs in it), its current source as read, its moves of the
last week and the time since its last one (the dwell and the weekly cap); each source
with its capacity, its risk (1 when it is alarmed, quarantined or not up, so the plan
empties it and names it nobody's alternate), the THD its monitor measures, a battery's
energy as its BMS reports it now (unknown: empty, the safe side), and the policy's
limits. A rack the controller must not move now (no reading, or a move refused a
moment ago) keeps its source: its weekly moves are set to the cap.

Hysteresis: the same problem is solved with no voluntary moves (only the evacuations
every plan must make), and the plan that moves more is weighed against it: see `choose`
and docs/policy.md. The plan itself is solved for the fewest moves that bring the worst
post-contingency utilisation within the policy's aim less its margin.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from host.allocate.heuristic import solve_heuristic
from host.allocate.milp import solve_milp
from host.allocate.plan import Move, Plan, make_plan
from host.allocate.problem import Problem
from host.allocate.solution import Solution
from host.control.observer import SiteView
from host.control.policy import ControlPolicy
from host.model.fleet import FleetTelemetry, SourceStatus
from host.model.site import Availability, Priority, Site, SourceKind

EXACT_MAX_RACKS = 200  # solved exactly up to this many racks, by the heuristic above
EXACT_TIME_LIMIT_S = 10.0
WEEK_S = 7 * 86_400.0


@dataclass(frozen=True, eq=False)
class PlanChoice:
    plan: Plan
    stay: Plan  # the plan with no voluntary moves, weighed against
    chosen: str  # "plan" or "stay"
    reason: str
    problem: Problem


def build_problem(site: Site, view: SiteView, telemetry: FleetTelemetry, statuses: Mapping[str, SourceStatus],
                  policy: ControlPolicy, *, moved: Mapping[str, list[float]], unavailable: Collection[str],
                  alarmed: Collection[str], pinned: Collection[str], last_known: Mapping[str, str | None],
                  budget: int | None = None) -> Problem:
    """The allocation problem of the live site now; see the module docstring."""
    now = view.time_s
    current: list[str | None] = []
    for rack in site.racks:
        i = telemetry.index(rack.id)
        read = not math.isnan(float(telemetry.draw_kw[i]))
        active = int(telemetry.active[i])
        if read:
            current.append(None if active < 0 else telemetry.source_ids[active])
        else:
            current.append(last_known.get(rack.id))
    no_reading = {rack.id for rack in site.racks if math.isnan(float(telemetry.draw_kw[telemetry.index(rack.id)]))}
    hold = set(pinned) | no_reading
    cap = policy.moves_per_week
    moves_week, dwell = [], []
    for rack in site.racks:
        times = [t for t in moved.get(rack.id, []) if t >= now - WEEK_S]
        moves_week.append(max(cap, len(times)) if rack.id in hold else len(times))
        dwell.append(now - times[-1] if times else math.inf)
    sources = tuple(replace(s, availability=Availability.MAINTENANCE) if s.id in unavailable else s
                    for s in site.sources)
    live_site = replace(site, sources=sources)
    risk = []
    for j, source in enumerate(site.sources):
        status = statuses.get(source.id)
        down = status is not None and not status.up
        if source.id in alarmed or source.id in unavailable or down:
            risk.append(1.0)
        else:  # below its alarm: a risk the allocator weighs, never one it evacuates for
            risk.append(min(float(view.risk[j]), policy.risk_raise))
    stored = [_stored(statuses.get(s.id)) if s.kind == SourceKind.BATTERY else math.nan for s in site.sources]
    thd = [_thd(statuses.get(s.id)) for s in site.sources]
    allocation = policy.allocation()
    if budget is not None:
        allocation = replace(allocation, move_budget=budget)
    return Problem.from_site(live_site, view.draw_kw, current, policy=allocation, risk=risk, thd_pct=thd,
                             stored_kwh=stored, moves_week=moves_week, dwell_s=dwell)


def _stored(status: SourceStatus | None) -> float:
    """A battery's energy as its BMS reports it; unknown counts as empty (the safe side)."""
    if status is None or status.stored_kwh is None or not math.isfinite(status.stored_kwh):
        return 0.0
    return max(0.0, float(status.stored_kwh))


def _thd(status: SourceStatus | None) -> float:
    if status is None or status.signals is None or status.signals.thd_pct is None:
        return 0.0
    return max(0.0, float(status.signals.thd_pct))


def solve(problem: Problem) -> Solution:
    if problem.n_racks <= EXACT_MAX_RACKS:
        return solve_milp(problem, time_limit_s=EXACT_TIME_LIMIT_S)
    return solve_heuristic(problem)


def choose(problem: Problem, margin: float) -> PlanChoice:
    """The plan, or staying put (its evacuations only), by the hysteresis rule (docs/policy.md):
    less load over a steady ceiling, then less load opened now, then more single losses
    covered, then less load left with no alternate, then staying if it is within the aim,
    else the plan if it is better by the margin."""
    stay_problem = replace(problem, policy=replace(problem.policy, move_budget=0))
    stay = make_plan(stay_problem, solve(stay_problem))
    if problem.policy.move_budget == 0:
        return PlanChoice(stay, stay, "stay", "no voluntary moves allowed", problem)
    plan = make_plan(problem, solve(problem))

    def take(chosen: str, reason: str) -> PlanChoice:
        return PlanChoice(plan, stay, chosen, reason, problem)

    for what, measure, fewer in (("kW over a steady ceiling", _over_ceiling_kw, True),
                                 ("kW opened", _opened_kw, True), ("single losses covered", _covered, False),
                                 ("kW with no alternate", _exposed_kw, True)):
        mine, theirs = measure(problem, plan), measure(problem, stay)
        if abs(mine - theirs) > 1e-6:
            better = mine < theirs if fewer else mine > theirs
            return take("plan" if better else "stay", f"{what}: {mine:g} with the plan, {theirs:g} staying")
    if not plan.check.moves:
        return take("plan", "no voluntary moves needed")
    aim = problem.policy.aim_u + margin
    if problem.policy.aim_u > 0 and stay.worst_post <= aim:
        return take("stay", f"worst post-contingency utilisation {stay.worst_post:.3f} is within the aim {aim:g}")
    gain = stay.worst_post - plan.worst_post
    if gain >= margin:
        return take("plan", f"worst post-contingency utilisation {stay.worst_post:.3f} -> {plan.worst_post:.3f}, "
                            f"better by the margin {margin:g}")
    return take("stay", f"{plan.check.moves} moves would gain {gain:.3f} of worst utilisation, "
                        f"less than the margin {margin:g}")


def _over_ceiling_kw(problem: Problem, plan: Plan) -> float:
    steady = np.asarray(plan.check.steady_util)
    over = np.maximum(steady - problem.policy.ceiling, 0.0) * problem.capacity_kw
    return round(float(over.sum()), 3)


def _opened_kw(problem: Problem, plan: Plan) -> float:
    return round(float(problem.draw_kw[plan.assign < 0].sum()), 3)


def _covered(problem: Problem, plan: Plan) -> float:
    return float(sum(plan.check.covered))


def _exposed_kw(problem: Problem, plan: Plan) -> float:
    exposed = np.isin(np.asarray(problem.rack_ids), plan.exposed)  # one pass, not a search per rack
    return round(float(problem.draw_kw[exposed].sum()), 3)


PRIORITY_ORDER = {Priority.DEFERRABLE: 0, Priority.NORMAL: 1, Priority.CRITICAL: 2}


def evacuation_order(problem: Problem, moves: Sequence[Move], emptied: Collection[str]) -> tuple[Move, ...]:
    """The plan's moves with those leaving an emptied source (at risk, flagged) taken
    deferrable racks first, then normal, then critical, where that order keeps every
    source within its hard limit at every step as the plan's own order does; else the
    plan's order."""
    leaving = [m for m in moves if m.source in emptied]
    if len(leaving) < 2:
        return tuple(moves)
    priority = dict(zip(problem.rack_ids, problem.priority, strict=True))
    ranked = iter(sorted(leaving, key=lambda m: PRIORITY_ORDER[priority[m.rack]]))
    order = [next(ranked) if m.source in emptied else m for m in moves]
    index = {s: j for j, s in enumerate(problem.source_ids)}
    load = problem.loads(problem.current).astype(np.float64)
    hard = problem.hard_limit_kw
    for move in order:
        if move.source is not None:
            load[index[move.source]] -= move.kw
        if move.target is not None:
            load[index[move.target]] += move.kw
            if load[index[move.target]] > hard[index[move.target]] + 1e-6:
                return tuple(moves)
    return tuple(order)
