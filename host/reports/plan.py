"""The allocation plan for a scenario's site at one moment, shown and not executed
(`ibt plan` prints this).

The scenario runs on the site simulator to the chosen time while a SiteObserver
(host/allocate/plan_inputs.py) reads the fleet at every step: each rack counts with the largest
P95 of its forecast over the next hour, scheduled jobs included, at most its breaker
rating (an unpowered rack at its rating), and each source with its fault monitor's
risk (1 when it is not up, so the plan empties it and names it nobody's alternate);
batteries count with the energy they hold then. The method is the exact MILP for up to `EXACT_MAX_RACKS` racks
and the heuristic above (`auto`), or the one asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from host.allocate.heuristic import solve_heuristic
from host.allocate.milp import solve_milp
from host.allocate.milp_bounds import lp_bound, shortfall_bound
from host.allocate.plan import Plan, make_plan
from host.allocate.plan_inputs import PlanInputs
from host.allocate.problem import AllocationError, Policy, Problem
from host.model.errors import ConfigurationError
from host.model.site import SourceKind
from host.sim.site.observe import observe_scenario
from host.sim.site.scenario import ScenarioError, load_scenario
from host.sim.site.simulator import SiteSimulator

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCENARIO = ROOT / "scenarios" / "battery_runout.toml"
DEFAULT_AT_S = 1800.0  # half an hour in: before battery_runout fails its first UPS
DRAW_TEXT = "largest P95 of the next hour's forecast, at most the rack's rating; unpowered racks at their rating"
EXACT_MAX_RACKS = 200  # `auto` solves exactly up to this many racks
LP_BOUND_MAX_RACKS = 1000  # the heuristic's LP bound is computed up to this many racks
METHODS = ("auto", "exact", "heuristic")
TIME_LIMIT_S = 30.0


class PlanReportError(ConfigurationError, ValueError):
    """A plan that cannot be made: a scenario refused, a bad time or method."""


@dataclass(frozen=True, eq=False)
class PlanReport:
    scenario: str
    time_s: float
    method: str  # as asked
    problem: Problem
    plan: Plan
    down: tuple[str, ...]  # sources not up at time_s
    inputs: PlanInputs
    shortfall_bound: float | None = None  # the heuristic's: a lower bound on the least kW to shed or cap (LP)

    @property
    def shortfall_kw(self) -> float:
        """The kW this plan leaves over the limits (0 when N-1 is covered)."""
        return sum(s.kw for s in self.plan.shortfalls)

    @property
    def lp_bound(self) -> float | None:
        """The LP bound the plan's gap is to (None: not computed, or no plan covers N-1)."""
        return self.plan.solution.lp_bound

    @property
    def binding(self) -> dict[str, Any]:
        """What limits the plan: the first shortfall when N-1 is not covered, else the
        worst cell of the post-contingency matrix (steady state included), and whether
        the move budget is spent."""
        p, plan = self.problem, self.plan
        budget = p.policy.move_budget
        spent = plan.check.moves >= budget
        if plan.shortfalls:
            first = plan.shortfalls[0]
            return {"kind": "shortfall", "lost": first.lost, "source": first.source,
                    "kw": round(first.kw, 3), "text": str(first), "move_budget_spent": spent}  # fmt: skip
        names, n = p.source_ids, p.n_sources
        post = p.post_util(plan.assign, plan.alternate)
        np.fill_diagonal(post, -math.inf)
        steady = (p.loads(plan.assign) + p.other_kw) / p.capacity_kw
        lost, source = (int(i) for i in np.unravel_index(int(np.argmax(post)), post.shape))
        if n < 2 or steady.max() >= post[lost, source]:
            t = int(np.argmax(steady))
            text = f"{names[t]} in steady state at {steady[t]:.3f} (ceiling {p.policy.ceiling:g})"
            cell: dict[str, Any] = {"kind": "steady", "lost": None, "source": names[t],
                                    "utilisation": round(float(steady[t]), 4)}  # fmt: skip
        else:
            u = float(post[lost, source])
            limit = 1.0 + p.policy.overload_allowance
            text = f"{names[source]} at {u:.3f} if {names[lost]} is lost (limit {limit:g})"
            cell = {"kind": "post_contingency", "lost": names[lost], "source": names[source],
                    "utilisation": round(u, 4)}  # fmt: skip
        if spent:
            text += f"; the move budget ({budget}) is spent"
        return cell | {"text": text, "move_budget_spent": spent}

    @property
    def explanation(self) -> list[str]:
        """Why N-1 is not covered, and what to shed or cap; empty when it is."""
        plan = self.plan
        if plan.coverage >= 1.0 and not plan.shortfalls:
            return []
        out = [str(s) for s in plan.shortfalls]
        if plan.shed:
            out.append(f"shed (feeds opened): {', '.join(plan.shed)}")
        over = self.shortfall_kw
        if over > 0 and plan.solution.method == "milp":
            out.append(f"least load to shed or cap: {over:.1f} kW")
        elif over > 0:  # the heuristic's plan: its own shortfall is not the least
            least = ("not computed" if self.shortfall_bound is None
                     else f"at least {self.shortfall_bound:.1f} kW on any plan (LP relaxation)")  # fmt: skip
            out.append(f"load to shed or cap: {over:.1f} kW in this plan, {least}; `--method exact` finds the least")
        out += [p for p in plan.check.problems if p not in out][:20]
        return out

    def as_dict(self) -> dict[str, Any]:
        plan, s = self.plan, self.plan.solution
        p = self.problem
        return {
            "scenario": self.scenario,
            "time_s": self.time_s,
            "draw": DRAW_TEXT,
            "forecast": self.inputs.method,
            "history_steps": self.inputs.history_steps,
            "risk": {k: round(float(v), 4) for k, v in zip(self.inputs.source_ids, self.inputs.risk, strict=True)},
            "method": self.method,
            "solver": s.method,
            "status": str(s.status),
            "solve_s": round(s.solve_s, 4),
            "racks": p.n_racks,
            "sources_down": list(self.down),
            "move_budget": p.policy.move_budget,
            "moves": [
                {"rack": m.rack, "from": m.source, "to": m.target, "kw": round(m.kw, 3), "staging": m.staging}
                for m in plan.moves
            ],
            "blocked": [
                {"rack": m.rack, "from": m.source, "to": m.target, "kw": round(m.kw, 3)} for m in plan.blocked
            ],
            "voluntary_moves": plan.check.moves,
            "util_before": {k: round(v, 4) for k, v in plan.util_before.items()},
            "util_after": {k: round(v, 4) for k, v in plan.util_after.items()},
            "worst_post": _finite(plan.worst_post),
            "lp_bound": None if self.lp_bound is None else round(self.lp_bound, 4),
            "gap": None if s.gap is None or not math.isfinite(s.gap) else round(s.gap, 4),
            "coverage": plan.coverage,
            "covered": dict(zip(p.source_ids, plan.check.covered, strict=True)),
            "binding": self.binding,
            "assignment": {
                rack: (p.source_ids[t] if t >= 0 else None)
                for rack, t in zip(p.rack_ids, plan.assign.tolist(), strict=True)
            },
            "alternates": {rack: list(ranked) for rack, _, ranked in plan.alternates()},
            "shed": list(plan.shed),
            "shortfall_kw": round(self.shortfall_kw, 3),
            "shortfall_bound_kw": None if self.shortfall_bound is None else round(self.shortfall_bound, 3),
            "explanation": self.explanation,
        }

    def as_text(self) -> str:
        plan, s = self.plan, self.plan.solution
        head = (f"{self.scenario} at t={self.time_s:g} s, {self.problem.n_racks} racks "
                f"(draw: P95 of the next hour, {self.inputs.method}), method {self.method} -> {s.method}")  # fmt: skip
        if self.down:
            head += f", down: {', '.join(self.down)}"
        lines = [head, *plan.lines()]
        bound = "not computed" if self.lp_bound is None else f"{self.lp_bound:.3f}"
        lines.append(f"  LP bound {bound}; voluntary moves {plan.check.moves} of {self.problem.policy.move_budget}")
        lines.append(f"  binding: {self.binding['text']}")
        explanation = self.explanation
        if explanation:
            lines.append("  N-1 not covered:")
            lines += [f"    {e}" for e in explanation]
        lines.append("  (not executed)")
        return "\n".join(lines)


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def build_problem(
    simulator: SiteSimulator, inputs: PlanInputs, policy: Policy | None = None
) -> tuple[Problem, tuple[str, ...]]:
    """The allocation problem of the simulated site now, and the sources that are down."""
    site = simulator.site
    telemetry = simulator.read_telemetry()
    statuses = simulator.read_sources()
    order = [telemetry.index(rack.id) for rack in site.racks]
    active = telemetry.active[order]
    draw = inputs.draw_kw[[inputs.rack_ids.index(rack.id) for rack in site.racks]]
    current = [telemetry.source_ids[a] if a >= 0 else None for a in active.tolist()]
    down = tuple(s for s, up in zip(inputs.source_ids, inputs.up, strict=True) if not up)
    risk = [float(inputs.risk[inputs.source_ids.index(s.id)]) for s in site.sources]
    # the energy stored now, not state of charge x nameplate: an aged string's charge is of its faded energy
    stored = [(statuses[s.id].stored_kwh or 0.0) if s.kind == SourceKind.BATTERY else math.nan for s in site.sources]
    problem = Problem.from_site(site, draw, current, policy=policy, risk=risk, stored_kwh=stored)
    return problem, down


def plan_scenario(
    scenario_path: Path, *, at_s: float = DEFAULT_AT_S, method: str = "auto", budget: int | None = None,
    on_step: Callable[[float], None] = lambda time_s: None,
) -> PlanReport:
    """Run the scenario to `at_s` and plan its site then, without executing the plan;
    `on_step` follows the simulated time on the way there."""
    if method not in METHODS:
        raise PlanReportError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    try:
        scenario = load_scenario(scenario_path)
    except OSError as exc:
        raise PlanReportError(f"cannot read scenario {str(scenario_path)!r}: {exc.strerror or exc}") from None
    except ScenarioError as exc:
        raise PlanReportError(str(exc)) from None
    if not 0 <= at_s <= scenario.duration_s:
        raise PlanReportError(f"--at-s must be within the scenario, 0 to {scenario.duration_s:g} s (got {at_s:g})")
    simulator, observer = observe_scenario(scenario, at_s, on_step)
    inputs = observer.inputs()
    try:
        policy = Policy() if budget is None else replace(Policy(), move_budget=budget)
        problem, down = build_problem(simulator, inputs, policy)
    except AllocationError as exc:
        raise PlanReportError(f"the site cannot be planned: {exc}") from None
    exact = method == "exact" or (method == "auto" and problem.n_racks <= EXACT_MAX_RACKS)
    least: float | None = None  # the heuristic's lower bound on the kW to shed or cap, when its plan falls short
    if exact:
        solution = solve_milp(problem, time_limit_s=TIME_LIMIT_S)  # its lp_bound is None when the plan is infeasible
    else:
        small = problem.n_racks <= LP_BOUND_MAX_RACKS
        bound = lp_bound(problem, time_limit_s=TIME_LIMIT_S) if small else None
        solution = solve_heuristic(problem, lp_bound=bound)
        if solution.shortfalls and small:
            least = shortfall_bound(problem, time_limit_s=TIME_LIMIT_S)
    plan = make_plan(problem, solution)
    return PlanReport(scenario.name, simulator.time_s, method, problem, plan, down, inputs, least)
