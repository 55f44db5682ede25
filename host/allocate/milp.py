"""The exact method: a mixed-integer programme solved by HiGHS (highspy, its own Python interface).

Variables
- x[p] binary for every usable pair p = (rack r, source s): r is on s. Pairs over the
  voltage-drop limit, to a high-risk source or one in maintenance are not variables.
- y[p, q] binary for two usable pairs p = (r, s), q = (r, t) of the same rack: r, on
  s, goes to t if s is lost. sum_q y[p, q] = x[p], so each rack has exactly one
  alternate for its target source, and a source without variables is nobody's alternate.
- U continuous: the worst post-contingency utilisation.
- (shedding) shed[r] binary for deferrable racks; (diagnosis) non-negative slacks.

Constraints: each rack on one source (or shed); steady load <= ceiling (and battery
runtime); for every lost s and survivor t != s: load(t) + kW of s's racks whose
alternate is t <= capacity * (1 + allowance) (and battery runtime), and <= U * capacity;
the steady loads are <= U * capacity too; voluntary moves <= budget; racks under
minimum dwell or at the weekly cap keep x = 1 on their current source. Racks that must
leave their source (it is emptied, the path drop is over the limit, or the rack is
open) are exempt from budget, dwell and cap.

Finding a good plan, not proving it, is the hard part on tight sites: the LP bound equals the
counting bound (total load / n-1 capacities), and so does the model with the alternates
relaxed (x binary, y continuous), so the gap is all in packing indivisible racks into the
survivors' headroom; HiGHS alone wanders for minutes at 0.5-2% above the bound at 500 x 8
and never raises it. So stage 1 is seeded: (a) a model without y, Hall's condition per lost
source in its place (see `HallModel`), picks the racks to move; (b) with those moves
fixed the alternates are packed exactly (a fraction of a second); (c) the better of that
plan and the heuristic's is polished around its bottleneck (see `_polish`); (d) only if it
is still not within U_GAP of the bound does the full model run, from it. U is bounded below
by the LP bound and (a)'s proven bound, valid for every plan, so every gap is honest.
Stage 2 starts from stage 1's plan. Its LP bound on moves is weak (30 weighted moves
against 55 found at 500 x 8), so the same relaxation without alternates, minimising moves
with U held, first proves a floor under the moves of every plan and offers its choices,
packed exactly, as cheaper plans. Their whole-rack alternates rarely fit under the cap
(benchmarks/RESULTS.md, the exactness study), so when time allows each is repaired: polished
around its bottleneck with one more move at most, then two, then four weighted (`_repair`);
the full model then searches from the cheapest plan.
scipy.optimize.milp cannot take a start, which is why HiGHS is called through highspy.
The time limit is one budget for the whole solve (`_Budget`): stage 1 ends by
STAGE_ONE_SHARE of it, stage 2 has the rest.

Objective, lexicographic in two solves: first minimise U; then, with U held at its
optimum, minimise the weighted moves (deferrable 1, normal 2, critical 4, so two
deferrable moves cost what one normal does) plus tie-breakers worth less than one
move in all (I^2 R losses, sensitive racks on high-THD sources). Two solves rather
than one weighted sum, because a weight large enough to make U dominate moves
exactly would ruin the solver's numerics. Tolerances: stage 1 stops once U is proven
within U_GAP (0.5%) of optimal; stage 2 may give up U_SLACK (0.2%) of U for fewer moves,
and stops once the moves are proven optimal (the tie-breakers need not be). A policy's
`aim_u` relaxes the first objective to "U at most the aim": stage 1 stops at a start
within it, and stage 2 finds the fewest moves that keep U within it (a controller that
only needs the site secure, not balanced to the last percent).

When no plan covers N-1: an elastic model (slack kW on every capacity row, an orphan
slack for racks without an alternate) finds the least kW that do not fit and where;
then, if the policy allows shedding, the least deferrable kW to shed, and the plan is
made with those racks shed. A shed is first sought as racks left on their source with no
alternate (powered now, dropped by their tap only at that source's loss: a contingency
that cannot be covered darkens nothing until it happens); only when even that leaves a
steady state over its limits are deferrable racks opened now.
"""

from __future__ import annotations

import time

import numpy as np

from host.allocate.heuristic import solve_heuristic
from host.allocate.milp_bounds import diagnose
from host.allocate.milp_model import U_GAP, HallModel, Model, SolveResult
from host.allocate.problem import Problem
from host.allocate.solution import Shortfall, Solution, Status
from host.model.arrays import FloatArray
from host.model.site import Priority

U_TOLERANCE = 1e-6  # stage 2 may exceed stage 1's U by this much (numerical slack)
U_SLACK = 2e-3  # stage 2 may give up this share of U for fewer moves
MOVE_SLACK = 0.45  # stage 2 stops once proven within this of the least cost: below one move, above the tie-breakers
STAGE_ONE_SHARE = 0.7  # stage 1 ends by this share of the time limit at the latest; stage 2 has the rest
RELAXED_SHARE = 0.25  # of the time limit for the relaxed-alternates solve that seeds stage 1: a start, not a proof
FLOOR_SHARE = 0.1  # of the time limit for stage 2's relaxed-alternates solve: a floor under the moves
MIN_STEP_S = 0.05  # a step late in the budget still gets this long: HiGHS returns its start, or a plan
RELAXED_GAP = 1e-3  # it stops once its U is proven within 0.1%: packing loses more than that anyway
PACK_SHARE = 0.1  # of the time limit for each packing (they take 0.02-2 s at 500 x 8)
POLISH_SHARE = 1 / 6  # of the time limit for each round of polishing around the bottleneck
POLISH_ROUNDS = 6  # rounds at most: each moves the bottleneck, and one to three rounds sufficed at 500 x 8
REPAIR_EXTRA = (1.0, 2.0, 4.0)  # weighted moves a repair may add: one deferrable, one normal, one critical move
REPAIR_SHARE = 0.1  # of the time limit for each round of a repair
REPAIR_ROUNDS = 3  # rounds at most per added cost
REPAIR_MIN_SHARE = 0.2  # of the time limit left, at least, for a repair to be tried
BOUND_MARGIN = 1e-7  # a lower bound on U handed back to HiGHS is lowered by this share (its own tolerances)


class _Budget:
    """The wall clock of one solve: each step asks for a share of the whole time limit,
    capped by what is left before a point of it (stage 1 must leave time to stage 2)."""

    def __init__(self, time_limit_s: float) -> None:
        self.time_limit_s = time_limit_s
        self.start = time.perf_counter()

    def share(self, fraction: float, until: float = 1.0) -> float:
        """Seconds for a step: `fraction` of the time limit, within what is left before
        `until` of it has passed, and at least MIN_STEP_S."""
        left = until * self.time_limit_s - (time.perf_counter() - self.start)
        return max(min(fraction * self.time_limit_s, left), MIN_STEP_S)

    def spent(self, until: float = 1.0) -> bool:
        return time.perf_counter() - self.start >= until * self.time_limit_s


def solve_milp(problem: Problem, *, time_limit_s: float = 30.0) -> Solution:
    """The exact plan for `problem`: see the module docstring for the formulation.
    `time_limit_s` is the wall-clock budget of the whole solve when a plan exists: stage 1
    (its seeding steps each a share: a quarter for the relaxation, a tenth per packing, a
    sixth per polishing round) ends by STAGE_ONE_SHARE of it, stage 2 has the rest. A
    solve stopped by it keeps its best plan, with status FEASIBLE and its gap to the best
    proven lower bound (`lp_bound` of the solution). When no plan covers N-1, diagnosing
    why and finding the least deferrable load to shed take up to the time limit each."""
    start = time.perf_counter()
    none = np.zeros(problem.n_racks, dtype=bool)
    model = Model(problem, none, elastic=False)
    solution = _optimise(problem, model, {}, start, _Budget(time_limit_s))
    if solution is not None:
        return solution
    shortfalls, assign, alternate = diagnose(problem, time_limit_s)
    deferrable = np.array([p == Priority.DEFERRABLE for p in problem.priority])
    if problem.policy.allow_shedding and deferrable.any():
        # Dropped at the loss first (powered until then); opened now only if even that cannot fit.
        for shed_model in (Model(problem, deferrable, elastic=False, bare=True),
                           Model(problem, deferrable & ~problem.locked, elastic=False)):
            solution = _least_shed(problem, shed_model, start, time_limit_s, shortfalls)
            if solution is not None:
                return solution
    return Solution("milp", Status.INFEASIBLE, assign, alternate, np.inf, None,
                    time.perf_counter() - start, shortfalls)  # fmt: skip


def _least_shed(problem: Problem, model: Model, start: float, time_limit_s: float,
                shortfalls: tuple[Shortfall, ...]) -> Solution | None:  # fmt: skip
    """The plan with the least deferrable kW shed in `model`'s way (None: none found)."""
    if not len(model.shed_racks):
        return None
    c = np.zeros(model.n_vars)
    c[model.shed0 : model.shed0 + len(model.shed_racks)] = problem.draw_kw[model.shed_racks]
    found = model.solve(c, time_limit_s=time_limit_s)
    if found.x is None:
        return None
    shed = found.x[model.shed0 : model.shed0 + len(model.shed_racks)] > 0.5
    fixed = {model.shed0 + i: float(s) for i, s in enumerate(shed)}
    return _optimise(problem, model, fixed, start, _Budget(time_limit_s), shortfalls)


def _optimise(problem: Problem, model: Model, fixed: dict[int, float], start: float, budget: _Budget,
              shortfalls: tuple[Shortfall, ...] = ()) -> Solution | None:  # fmt: skip
    """Stage 1 (min U, seeded: see the module docstring), stage 2 (min moves at that U)
    and the LP bound; None if infeasible."""
    c_u = np.zeros(model.n_vars)
    c_u[model.u] = 1.0
    relaxed = model.solve(c_u, relax=True, fixed=fixed, time_limit_s=budget.share(1.0, STAGE_ONE_SHARE))
    if relaxed.infeasible:
        return None  # not even the relaxation is feasible
    bound = relaxed.bound if relaxed.status == 0 else -np.inf  # -inf: the LP stopped at the time limit
    hall = None if fixed else HallModel(problem, model)  # the seeds know nothing of shedding
    first, lower = _stage_one(problem, model, fixed, bound, budget, hall)
    if first.x is None:
        return None
    u_star = float(first.x[model.u])
    u_cap = max(u_star * (1.0 + U_SLACK) + U_TOLERANCE, problem.policy.aim_u)
    second, floor = _stage_two(model, fixed, first.x, u_cap, lower, hall, budget)
    best = second.x if second.x is not None else first.x
    assign, alternate = model.decode(best)
    proven = first.status == 0 and second.status == 0
    status = Status.SHED if fixed and any(fixed.values()) else Status.OPTIMAL if proven else Status.FEASIBLE
    note = "" if proven else f"stopped at the time limit: {first.message if first.status else second.message}"
    u = problem.worst_post(assign, alternate)
    proven_bound = max(bound, lower) if np.isfinite(max(bound, lower)) else None
    return Solution("milp", status, assign, alternate, u, proven_bound, time.perf_counter() - start,
                    shortfalls, note, float(model.move_cost() @ best), floor)  # fmt: skip


def _stage_one(problem: Problem, model: Model, fixed: dict[int, float], bound: float, budget: _Budget,
               hall: HallModel | None) -> tuple[SolveResult, float]:  # fmt: skip
    """Min U from a good start; also the best proven lower bound on U. Every bound used is
    valid for every plan, so U >= it cuts no plan and the gap HiGHS reports is honest."""
    c_u = np.zeros(model.n_vars)
    c_u[model.u] = 1.0
    lower = bound
    starts: list[FloatArray] = []
    if hall is not None:
        choices, relaxed_bound = hall.choose(None, time_limit_s=budget.share(RELAXED_SHARE, STAGE_ONE_SHARE),
                                             gap=RELAXED_GAP)  # fmt: skip
        if np.isfinite(relaxed_bound):  # infinite if infeasible: the full model then says so itself
            lower = max(lower, relaxed_bound)
        for moves in choices:
            packed = model.solve(c_u, fixed=moves, lower_u=_below(lower),
                                 time_limit_s=budget.share(PACK_SHARE, STAGE_ONE_SHARE), gap=U_GAP / 10)  # fmt: skip
            if packed.x is not None:
                starts.append(packed.x)
    if not fixed:  # the heuristic knows nothing of shedding
        plan = solve_heuristic(problem)
        if plan.u < np.inf and not plan.shortfalls:
            starts.append(model.encode(plan.assign, plan.alternate, plan.u + U_TOLERANCE))
    best = min(starts, key=lambda v: float(v[model.u]), default=None)
    if best is not None and not fixed:
        best = _polish(problem, model, best, lower, budget)
    if best is not None and float(best[model.u]) <= lower * (1.0 + U_GAP):
        return SolveResult(best, 0, "start within the gap", lower), lower
    if best is not None and float(best[model.u]) <= problem.policy.aim_u:
        return SolveResult(best, 0, "start within the aim", lower), lower  # lower U is not asked for
    first = model.solve(c_u, fixed=fixed, lower_u=_below(lower), start=best,
                        time_limit_s=budget.share(1.0, STAGE_ONE_SHARE))  # fmt: skip
    lower = max(lower, first.bound if np.isfinite(first.bound) else lower)
    return first, lower


def _stage_two(model: Model, fixed: dict[int, float], first: FloatArray, u_cap: float, lower_u: float,
               hall: HallModel | None, budget: _Budget) -> tuple[SolveResult, float | None]:  # fmt: skip
    """Min weighted moves (and tie-breakers) with U <= u_cap, from stage 1's plan. First in
    the relaxation without alternates: its proven optimum bounds the cost of every plan, and
    a choice of its that packs under u_cap within MOVE_SLACK of that bound is the answer,
    proven without the full model, whose LP bound on moves is far too weak to prove
    anything at 500 x 8 (30 against 55 weighted moves). A choice that packs over u_cap is
    repaired if REPAIR_MIN_SHARE of the time limit is left. Then the full model, from the
    cheapest plan so far."""
    c_u = np.zeros(model.n_vars)
    c_u[model.u] = 1.0
    c_moves = model.move_cost()
    best, cost = first, float(c_moves @ first)
    floor = -np.inf  # a proven lower bound on the cost of every plan with U <= u_cap
    if hall is not None:
        c_pairs = c_moves[model.x0 : model.x0 + hall.n_pairs]
        choices, floor = hall.choose(c_pairs, upper_u=u_cap, time_limit_s=budget.share(FLOOR_SHARE),
                                     gap=MOVE_SLACK / max(cost, MOVE_SLACK))  # fmt: skip
        for i, moves in enumerate(choices):
            if float(c_moves[list(moves)] @ np.array(list(moves.values()))) >= cost - U_TOLERANCE:
                continue  # no cheaper than the plan in hand: not worth packing
            if moves in choices[:i]:
                continue  # HiGHS can keep the same plan twice
            packed = model.solve(c_u, fixed=moves, lower_u=_below(lower_u), time_limit_s=budget.share(PACK_SHARE),
                                 gap=U_GAP / 10)  # the least U these moves allow, under the cap or not  # fmt: skip
            if packed.x is None:
                continue
            plan: FloatArray | None = packed.x
            if float(packed.x[model.u]) > u_cap:
                # a repair takes 2-3 s at 500 x 8: with less time left, the full model below uses it better
                enough = budget.share(1.0) >= REPAIR_MIN_SHARE * budget.time_limit_s
                plan = _repair(model.problem, model, packed.x, u_cap, lower_u, budget) if enough else None
            if plan is not None and float(c_moves @ plan) < cost:
                best, cost = plan, float(c_moves @ plan)
        if cost <= floor + MOVE_SLACK:
            return SolveResult(best, 0, "proven by the relaxation without alternates", floor), floor
    gap = MOVE_SLACK / max(cost, MOVE_SLACK)  # the plan in hand bounds the optimum's cost
    second = model.solve(c_moves, upper_u=u_cap, fixed=fixed, start=best, time_limit_s=budget.share(1.0),
                         gap=min(gap, 0.5))  # fmt: skip
    if second.x is not None and np.isfinite(second.bound):
        floor = max(floor, second.bound)  # HiGHS's own, when it found a plan and a finite bound
    if second.x is None or float(c_moves @ second.x) > cost:
        second.x = best
    if second.status and float(c_moves @ second.x) <= floor + MOVE_SLACK:
        second.status = 0  # the relaxation's bound proves what the full model could not
    return second, floor if np.isfinite(floor) else None


def _polish(problem: Problem, model: Model, plan: FloatArray, lower: float, budget: _Budget, *,
            target: float | None = None, until: float = STAGE_ONE_SHARE, share: float = POLISH_SHARE,
            rounds: int = POLISH_ROUNDS, cost_cap: float | None = None) -> FloatArray:  # fmt: skip
    """Improve a plan around its bottleneck: the full model with every rack fixed except
    those on the lost source and the survivor of the worst cell, and those already moved
    (about 140 of 500 racks at 500 x 8), all alternates free, from the plan. HiGHS does
    in seconds on this neighbourhood what it cannot in minutes on the whole model. Repeats
    while it improves, up to `rounds` times, each with `share` of the time limit, until
    `until` of it has passed; stops once U is at most `target` (by default within U_GAP
    of `lower`). `cost_cap`: weighted moves at most this (stage 2's repair, `_repair`)."""
    c_u = np.zeros(model.n_vars)
    c_u[model.u] = 1.0
    n = problem.n_sources
    target = lower * (1.0 + U_GAP) if target is None else target
    for _ in range(rounds):
        u = float(plan[model.u])
        if u <= target or budget.spent(until):
            break
        assign, alternate = model.decode(plan)
        s, t = divmod(int(problem.post_util(assign, alternate).argmax()), n)
        free = (assign == s) | (assign == t) | (assign != problem.current)
        keep = np.flatnonzero(~free[model.pr])
        fixed = {int(model.x0 + p): float(plan[model.x0 + p] > 0.5) for p in keep}
        # gap below U_GAP: being within U_GAP of this neighbourhood's bound says nothing of the global one
        found = model.solve(c_u, fixed=fixed, lower_u=_below(lower), start=plan,
                            time_limit_s=budget.share(share, until), gap=U_GAP / 10, cost_cap=cost_cap)  # fmt: skip
        if found.x is None or float(found.x[model.u]) >= u - U_TOLERANCE:
            break
        plan = found.x
    return plan


def _repair(problem: Problem, model: Model, plan: FloatArray, u_cap: float, lower: float,
            budget: _Budget) -> FloatArray | None:  # fmt: skip
    """Stage 2's way from a cheap plan over `u_cap` to one under it: polished around its
    bottleneck with its weighted moves capped at its own plus one deferrable move, then one
    normal, then one critical (REPAIR_EXTRA). The cheap plans are the floor model's, whose
    alternates do not pack under the cap; at 500 x 8 one or two more moves make them fit
    (55.2 weighted moves down to 34.2 on seed 1). Each larger cap starts again from the
    plan. A repair may run to the end of the time limit: ending them by 90% of it, to leave
    the full model time, lost seed 3's at 30 s (41.2 weighted moves, not 17.2). None if no
    cap brings it under."""
    base = float(model.move_cost() @ plan)
    # `lower` just under the cap: HiGHS stops once near it, not at the neighbourhood's best; a plan
    # left just over the cap goes on to the next round, or the next added cost
    near_cap = max(lower, u_cap * (1.0 - U_GAP / 10))
    for extra in REPAIR_EXTRA:
        if budget.spent():
            break
        repaired = _polish(problem, model, plan, near_cap, budget, target=u_cap, until=1.0, share=REPAIR_SHARE,
                           rounds=REPAIR_ROUNDS, cost_cap=base + extra + U_TOLERANCE)  # fmt: skip
        if float(repaired[model.u]) <= u_cap:
            return repaired
    return None


def _below(bound: float) -> float:
    """A proven lower bound eased by HiGHS's tolerances, so that it cannot cut the optimum."""
    return bound * (1.0 - BOUND_MARGIN) - U_TOLERANCE
