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
source in its place (see `_HallModel`), picks the racks to move; (b) with those moves
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
and stops once the moves are proven optimal (the tie-breakers need not be).

When no plan covers N-1: an elastic model (slack kW on every capacity row, an orphan
slack for racks without an alternate) finds the least kW that do not fit and where;
then, if the policy allows shedding, a model that may open deferrable racks finds the
least deferrable kW to shed, and the plan is made with those racks shed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import highspy
import numpy as np
from scipy.sparse import coo_array, csr_array, vstack  # type: ignore[import-untyped]

try:  # the core class: highspy.Highs prints a banner on stdout (which would corrupt `ibt plan --json`)
    from highspy._core import _Highs
except ImportError:  # a highspy that moved it: the public class, banner and all
    _Highs = highspy.Highs  # type: ignore[misc]

from host.allocate.heuristic import solve_heuristic
from host.allocate.problem import Problem
from host.allocate.solution import Shortfall, Solution, Status
from host.model.arrays import BoolArray, FloatArray, IntArray
from host.model.site import Priority

U_TOLERANCE = 1e-6  # stage 2 may exceed stage 1's U by this much (numerical slack)
LOSS_SHARE = 0.3  # the whole loss tie-breaker is worth at most this share of one move
THD_SHARE = 0.2  # and the THD one this share
U_GAP = 5e-3  # stage 1 stops once U is proven within 0.5% of the best: proving a min-max exactly costs far more
U_SLACK = 2e-3  # stage 2 may give up this share of U for fewer moves
MOVE_SLACK = 0.45  # stage 2 stops once proven within this of the least cost: below one move, above the tie-breakers
STAGE_ONE_SHARE = 0.7  # stage 1 ends by this share of the time limit at the latest; stage 2 has the rest
RELAXED_SHARE = 0.25  # of the time limit for the relaxed-alternates solve that seeds stage 1: a start, not a proof
FLOOR_SHARE = 0.1  # of the time limit for stage 2's relaxed-alternates solve: a floor under the moves
MIN_STEP_S = 0.05  # a step late in the budget still gets this long: HiGHS returns its start, or a plan
RELAXED_GAP = 1e-3  # it stops once its U is proven within 0.1%: packing loses more than that anyway
PACK_TRIES = 3  # the relaxation's plans whose alternates are packed exactly, for a start
PACK_SHARE = 0.1  # of the time limit for each packing (they take 0.02-2 s at 500 x 8)
POLISH_SHARE = 1 / 6  # of the time limit for each round of polishing around the bottleneck
POLISH_ROUNDS = 6  # rounds at most: each moves the bottleneck, and one to three rounds sufficed at 500 x 8
REPAIR_EXTRA = (1.0, 2.0, 4.0)  # weighted moves a repair may add: one deferrable, one normal, one critical move
REPAIR_SHARE = 0.1  # of the time limit for each round of a repair
REPAIR_ROUNDS = 3  # rounds at most per added cost
REPAIR_MIN_SHARE = 0.2  # of the time limit left, at least, for a repair to be tried
HALL_ALL = 10  # Hall rows for every set of survivors up to this many sources (2^(n-1) per lost source)
HALL_MAX = 3  # above it, sets of up to this many survivors (a generated rack reaches at most 3 others)
BOUND_MARGIN = 1e-7  # a lower bound on U handed back to HiGHS is lowered by this share (its own tolerances)


_Choice = tuple[list[dict[int, float]], float]  # columns fixed to choices of moves, and a proven lower bound


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


@dataclass
class _Result:
    """What a solve returns: the solution vector (None if none was found), `status` 0 when
    proven within the gap asked for (1 stopped with a plan, 2 infeasible or stopped without
    one), HiGHS's message, and its proven lower bound on the objective."""

    x: FloatArray | None
    status: int
    message: str
    bound: float
    earlier: list[FloatArray] = field(default_factory=list)  # improving solutions before x, latest first
    infeasible: bool = False  # proven so (not merely stopped without a plan)


@dataclass
class _Rows:
    """A sparse constraint matrix built row by row: lb <= A @ v <= ub."""

    rows: list[IntArray] = field(default_factory=list)
    cols: list[IntArray] = field(default_factory=list)
    vals: list[FloatArray] = field(default_factory=list)
    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)

    def add(self, cols: Any, vals: Any, lb: float, ub: float) -> int:
        row = len(self.lb)
        self.rows.append(np.full(len(cols), row, dtype=np.int64))
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.asarray(vals, dtype=np.float64))
        self.lb.append(lb)
        self.ub.append(ub)
        return row

    def csr(self, n_vars: int) -> Any:
        """The matrix in compressed rows, as HiGHS takes it."""
        empty = np.zeros(0, dtype=np.int64)
        rows = np.concatenate(self.rows) if self.rows else empty
        cols = np.concatenate(self.cols) if self.cols else empty
        vals = np.concatenate(self.vals) if self.vals else np.zeros(0)
        matrix = coo_array((vals, (rows, cols)), shape=(len(self.lb), n_vars)).tocsr()
        matrix.sum_duplicates()
        return matrix


def _run(c: FloatArray, lower: FloatArray, upper: FloatArray, matrix: Any, rows: _Rows, integrality: FloatArray,
         start: FloatArray | None, time_limit_s: float, gap: float, keep: int = 0) -> _Result:  # fmt: skip
    """One HiGHS solve of min c @ v over lb <= matrix @ v <= ub, on one thread so that runs
    repeat exactly (time limits aside). `start` is tried as the first incumbent; HiGHS
    ignores it if it is not feasible. `keep`: also return up to this many earlier
    improving solutions."""
    h = _Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", float(gap))
    h.passModel(len(c), matrix.shape[0], matrix.nnz, 2, 1, 0.0, c, lower, upper,
                np.asarray(rows.lb, dtype=np.float64), np.asarray(rows.ub, dtype=np.float64),
                matrix.indptr[:-1].astype(np.int32), matrix.indices.astype(np.int32), matrix.data,
                integrality.astype(np.int32))  # fmt: skip
    if keep:
        h.setOptionValue("mip_improving_solution_save", True)
    if start is not None:
        h.setSolution(len(c), np.arange(len(c), dtype=np.int32), np.clip(start, lower, upper))
    h.run()
    info = h.getInfo()
    status = h.getModelStatus()
    has_x = info.primal_solution_status == 2  # feasible
    x = np.array(h.getSolution().col_value) if has_x else None
    optimal = status == highspy.HighsModelStatus.kOptimal
    lp_value = info.objective_function_value if optimal else -np.inf
    bound = info.mip_dual_bound if integrality.any() else lp_value  # an LP proves its optimum, a MIP its dual bound
    code = 0 if optimal and has_x else 1 if has_x else 2
    earlier = [np.array(saved.col_value) for saved in h.getSavedMipSolutions()[::-1][1 : keep + 1]] if keep else []
    infeasible = status == highspy.HighsModelStatus.kInfeasible
    return _Result(x, code, h.modelStatusToString(status), float(bound), earlier, infeasible)


class _Model:
    """The programme for one problem. `sheddable` racks get a shed variable; `elastic`
    adds the diagnosis slacks."""

    def __init__(self, problem: Problem, sheddable: BoolArray, elastic: bool) -> None:
        self.problem = problem
        pr_, pk = np.nonzero(problem.usable)
        self.pr: IntArray = pr_.astype(np.int64)
        self.pk: IntArray = pk.astype(np.int64)  # the input of each pair
        self.ps: IntArray = problem.reach[pr_, pk].astype(np.int64)
        n_pairs = len(self.pr)
        pair_of = np.full(problem.usable.shape, -1, dtype=np.int64)
        pair_of[pr_, pk] = np.arange(n_pairs)
        ya, yb = [], []
        width = int(problem.reach.shape[1])
        for a in range(width):
            for b in range(width):
                if a != b:
                    both = (pair_of[:, a] >= 0) & (pair_of[:, b] >= 0)
                    ya.append(pair_of[both, a])
                    yb.append(pair_of[both, b])
        self.yp: IntArray = np.concatenate(ya) if ya else np.zeros(0, dtype=np.int64)
        self.yq: IntArray = np.concatenate(yb) if yb else np.zeros(0, dtype=np.int64)
        self.pair_of = pair_of
        self.shed_racks: IntArray = np.flatnonzero(sheddable)
        self.x0, self.y0 = 0, n_pairs
        self.u = n_pairs + len(self.yp)
        self.shed0 = self.u + 1
        self.n_vars = self.shed0 + len(self.shed_racks)
        self.elastic = elastic
        self.matrix: Any = None  # built once, on the first solve
        self.slack_rows: list[tuple[int | None, int | None]] = []  # (lost, survivor) per capacity slack
        self.slack_cols: list[int] = []
        self.orphan0 = 0
        self._build()

    def _new_slack(self, lost: int | None, survivor: int | None) -> int:
        self.slack_rows.append((lost, survivor))
        self.slack_cols.append(self.n_vars)
        self.n_vars += 1
        return self.n_vars - 1

    def _build(self) -> None:
        problem, rows = self.problem, _Rows()
        draw = problem.draw_kw
        n_pairs = len(self.pr)
        shed_col = {int(r): self.shed0 + i for i, r in enumerate(self.shed_racks)}
        # Each rack on one source, or shed.
        for r in range(problem.n_racks):
            members = [int(v) for v in self.pair_of[r][self.pair_of[r] >= 0]]
            if r in shed_col:
                members.append(shed_col[r])
            if members or not self.elastic:  # no usable source: an empty row makes the model infeasible, as it is
                rows.add(np.array(members, dtype=np.int64), np.ones(len(members)), 1.0, 1.0)
        # Exactly one alternate for the target (an orphan slack in the elastic model).
        order = np.argsort(self.yp, kind="stable")
        starts = np.searchsorted(self.yp[order], np.arange(n_pairs + 1))
        if self.elastic:
            self.orphan0 = self.n_vars
            self.n_vars += n_pairs
        cols: Any
        vals: Any
        for p in range(n_pairs):
            ys = self.y0 + order[starts[p] : starts[p + 1]]
            cols = np.concatenate([ys, [self.x0 + p]])
            vals = np.concatenate([np.ones(len(ys)), [-1.0]])
            if self.elastic:
                cols, vals = np.append(cols, self.orphan0 + p), np.append(vals, 1.0)
            rows.add(cols, vals, 0.0, 0.0)
        # Steady capacity, and U above every steady utilisation.
        allowed: list[int] = np.flatnonzero(problem.allowed_source).tolist()
        on = {t: np.flatnonzero(self.ps == t) for t in allowed}
        cap = problem.capacity_kw
        for t in allowed:
            on_cols, on_vals = self.x0 + on[t], draw[self.pr[on[t]]]
            cols, vals = on_cols, on_vals
            limit = float(problem.steady_limit_kw[t])
            if self.elastic:
                cols, vals = np.append(cols, self._new_slack(None, int(t))), np.append(vals, -1.0)
            rows.add(cols, vals, -np.inf, limit)
            rows.add(np.append(on_cols, self.u), np.append(on_vals, -cap[t]), -np.inf, -float(problem.other_kw[t]))
        # Every single loss: survivors within the allowance, and under U.
        ys_t, yq_t = self.ps[self.yp], self.ps[self.yq]
        for s in allowed:
            from_s = ys_t == s
            for t in allowed:
                if t == s:
                    continue
                moving = np.flatnonzero(from_s & (yq_t == t))
                if len(moving) == 0:
                    continue  # nothing of s can go to t: the steady rows above cover t
                cols = np.concatenate([self.x0 + on[t], self.y0 + moving])
                vals = np.concatenate([draw[self.pr[on[t]]], draw[self.pr[self.yp[moving]]]])
                limit = float(problem.post_limit_kw[t])
                rows.add(np.append(cols, self.u), np.append(vals, -cap[t]), -np.inf, -float(problem.other_kw[t]))
                if self.elastic:
                    cols, vals = np.append(cols, self._new_slack(int(s), int(t))), np.append(vals, -1.0)
                rows.add(cols, vals, -np.inf, limit)
        # The move budget: voluntary moves are the counted racks that leave their source.
        counted = np.flatnonzero(problem.current_usable)
        stay = self.pair_of[counted, np.argmax(problem.reach[counted] == problem.current[counted, None], axis=1)]
        self.stay_pair: dict[int, int] = dict(zip(counted.tolist(), stay.tolist(), strict=True))
        if len(counted):
            cols = self.x0 + stay
            vals = -np.ones(len(stay))
            shed_here = [shed_col[int(r)] for r in counted if int(r) in shed_col]
            cols, vals = np.append(cols, shed_here), np.append(vals, -np.ones(len(shed_here)))
            rows.add(cols, vals, -np.inf, float(problem.policy.move_budget - len(counted)))
        self.rows = rows

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        lower, upper = np.zeros(self.n_vars), np.ones(self.n_vars)
        upper[self.u] = np.inf
        upper[self.slack_cols] = np.inf
        sheddable = set(self.shed_racks.tolist())
        for r in np.flatnonzero(self.problem.locked).tolist():
            if r not in sheddable:
                lower[self.stay_pair[r]] = 1.0
        return lower, upper

    def integrality(self) -> FloatArray:
        out = np.ones(self.n_vars)
        out[self.u] = 0.0
        out[self.shed0 + len(self.shed_racks) :] = 0.0  # slacks
        return out

    def move_cost(self) -> FloatArray:
        """Weighted moves (the weight on every pair but the one it stays on) plus the tie-breakers."""
        problem = self.problem
        c = np.zeros(self.n_vars)
        counted = np.zeros(problem.n_racks, dtype=bool)
        counted[list(self.stay_pair)] = True
        c[self.x0 : self.x0 + len(self.pr)] = np.where(counted[self.pr], problem.weight[self.pr], 0.0)
        c[list(self.stay_pair.values())] = 0.0
        loss = problem.loss_kw[self.pr, self.pk]
        worst_total = float(np.sum(np.max(np.where(problem.usable, problem.loss_kw, 0.0), axis=1)))
        if worst_total > 0:
            c[self.x0 : self.x0 + len(self.pr)] += LOSS_SHARE * loss / worst_total
        poor = problem.sensitive[self.pr] & (problem.thd_pct[self.ps] > problem.policy.thd_limit_pct)
        c[self.x0 : self.x0 + len(self.pr)] += THD_SHARE * poor / max(int(problem.sensitive.sum()), 1)
        return c

    def solve(self, c: FloatArray, *, relax: bool = False, upper_u: float = np.inf, lower_u: float = 0.0,
              fixed: dict[int, float] | None = None, start: FloatArray | None = None,
              time_limit_s: float = 60.0, gap: float = U_GAP, cost_cap: float | None = None) -> _Result:  # fmt: skip
        """Minimise c @ v. `relax`: the LP relaxation; `fixed` pins columns; `start` is
        tried as the first incumbent; `cost_cap`: weighted moves (`move_cost`) at most this."""
        lower, upper = self.bounds()
        upper[self.u] = upper_u
        lower[self.u] = max(lower_u, 0.0)
        for col, value in (fixed or {}).items():
            lower[col] = upper[col] = value
        integrality = np.zeros(self.n_vars) if relax else self.integrality()
        if self.matrix is None:
            self.matrix = self.rows.csr(self.n_vars)
        matrix, rows = self.matrix, self.rows
        if cost_cap is not None:  # one more row, on copies: the model's own rows stay as built
            matrix = vstack([matrix, csr_array(self.move_cost().reshape(1, -1))]).tocsr()
            rows = _Rows(lb=[*rows.lb, -np.inf], ub=[*rows.ub, cost_cap])
        return _run(c, lower, upper, matrix, rows, integrality, None if relax else start, time_limit_s, gap)

    def encode(self, assign: IntArray, alternate: IntArray, u: float) -> FloatArray:
        """The solution vector of a plan (assign, alternate) with U = `u`: a start for HiGHS."""
        v = np.zeros(self.n_vars)
        on = assign[self.pr] == self.ps
        v[self.x0 : self.x0 + len(self.pr)] = on
        chosen = on[self.yp] & (alternate[self.pr[self.yp]] == self.ps[self.yq])
        v[self.y0 : self.y0 + len(self.yp)] = chosen
        v[self.u] = u
        if len(self.shed_racks):
            v[self.shed0 : self.shed0 + len(self.shed_racks)] = assign[self.shed_racks] < 0
        return v

    def relaxed_u(self, *, fixed: dict[int, float] | None = None, time_limit_s: float = 60.0) -> float | None:
        """U at the optimum of the LP relaxation: a lower bound on it (None when even the
        relaxation is infeasible)."""
        c = np.zeros(self.n_vars)
        c[self.u] = 1.0
        relaxed = self.solve(c, relax=True, fixed=fixed, time_limit_s=time_limit_s)
        return relaxed.bound if relaxed.status == 0 else None

    def decode(self, v: FloatArray) -> tuple[IntArray, IntArray]:
        """(assign, alternate) per rack from a solution vector."""
        n = self.problem.n_racks
        assign, alternate = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
        on = v[self.x0 : self.x0 + len(self.pr)] > 0.5
        assign[self.pr[on]] = self.ps[on]
        chosen = (v[self.y0 : self.y0 + len(self.yp)] > 0.5) & on[self.yp]
        alternate[self.pr[self.yp[chosen]]] = self.ps[self.yq[chosen]]
        return assign, alternate


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
    model = _Model(problem, none, elastic=False)
    solution = _optimise(problem, model, {}, start, _Budget(time_limit_s))
    if solution is not None:
        return solution
    shortfalls, assign, alternate = _diagnose(problem, time_limit_s)
    deferrable = np.array([p == Priority.DEFERRABLE for p in problem.priority]) & ~problem.locked
    if problem.policy.allow_shedding and deferrable.any():
        shed_model = _Model(problem, deferrable, elastic=False)
        c = np.zeros(shed_model.n_vars)
        c[shed_model.shed0 : shed_model.shed0 + len(shed_model.shed_racks)] = problem.draw_kw[shed_model.shed_racks]
        found = shed_model.solve(c, time_limit_s=time_limit_s)
        if found.x is not None:
            shed = found.x[shed_model.shed0 : shed_model.shed0 + len(shed_model.shed_racks)] > 0.5
            fixed = {shed_model.shed0 + i: float(s) for i, s in enumerate(shed)}
            solution = _optimise(problem, shed_model, fixed, start, _Budget(time_limit_s), shortfalls)
            if solution is not None:
                return solution
    return Solution("milp", Status.INFEASIBLE, assign, alternate, np.inf, None,
                    time.perf_counter() - start, shortfalls)  # fmt: skip


def _optimise(problem: Problem, model: _Model, fixed: dict[int, float], start: float, budget: _Budget,
              shortfalls: tuple[Shortfall, ...] = ()) -> Solution | None:  # fmt: skip
    """Stage 1 (min U, seeded: see the module docstring), stage 2 (min moves at that U)
    and the LP bound; None if infeasible."""
    c_u = np.zeros(model.n_vars)
    c_u[model.u] = 1.0
    relaxed = model.solve(c_u, relax=True, fixed=fixed, time_limit_s=budget.share(1.0, STAGE_ONE_SHARE))
    if relaxed.infeasible:
        return None  # not even the relaxation is feasible
    bound = relaxed.bound if relaxed.status == 0 else -np.inf  # -inf: the LP stopped at the time limit
    hall = None if fixed else _HallModel(problem, model)  # the seeds know nothing of shedding
    first, lower = _stage_one(problem, model, fixed, bound, budget, hall)
    if first.x is None:
        return None
    u_star = float(first.x[model.u])
    u_cap = u_star * (1.0 + U_SLACK) + U_TOLERANCE
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


def _stage_one(problem: Problem, model: _Model, fixed: dict[int, float], bound: float, budget: _Budget,
               hall: _HallModel | None) -> tuple[_Result, float]:  # fmt: skip
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
        return _Result(best, 0, "start within the gap", lower), lower
    first = model.solve(c_u, fixed=fixed, lower_u=_below(lower), start=best,
                        time_limit_s=budget.share(1.0, STAGE_ONE_SHARE))  # fmt: skip
    lower = max(lower, first.bound if np.isfinite(first.bound) else lower)
    return first, lower


def _stage_two(model: _Model, fixed: dict[int, float], first: FloatArray, u_cap: float, lower_u: float,
               hall: _HallModel | None, budget: _Budget) -> tuple[_Result, float | None]:  # fmt: skip
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
            return _Result(best, 0, "proven by the relaxation without alternates", floor), floor
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


def _polish(problem: Problem, model: _Model, plan: FloatArray, lower: float, budget: _Budget, *,
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


def _repair(problem: Problem, model: _Model, plan: FloatArray, u_cap: float, lower: float,
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


class _HallModel:
    """A relaxation that keeps x binary but drops the alternates: for each lost s and set T
    of survivors, the racks of s that can only go to T must fit in T's headroom (Hall's
    condition, which makes fractional alternates feasible; all sets up to HALL_ALL sources,
    else those of up to HALL_MAX survivors and all of them). A third of the integers and no
    y: HiGHS finds and proves plans here far sooner than in the full model. Every plan of
    the full model is a plan here, so a bound proven here holds for every plan. Columns: x
    per pair (as in the full model, from its x0), U, then the load of each source."""

    def __init__(self, problem: Problem, model: _Model) -> None:
        self.model = model
        n_pairs, ps, pr = len(model.pr), model.ps, model.pr
        draw, cap = problem.draw_kw[pr], problem.capacity_kw
        allowed: list[int] = np.flatnonzero(problem.allowed_source).tolist()
        self.n_pairs, self.u = n_pairs, n_pairs
        load0 = n_pairs + 1
        self.n_vars = load0 + problem.n_sources
        rows = _Rows()
        for r in range(problem.n_racks):
            members = model.pair_of[r][model.pair_of[r] >= 0]
            rows.add(members, np.ones(len(members)), 1.0, 1.0)
        for t in range(problem.n_sources):
            on = np.flatnonzero(ps == t)
            rows.add(np.append(on, load0 + t), np.append(draw[on], -1.0), 0.0, 0.0)
        for t in allowed:
            rows.add([load0 + t, self.u], [1.0, -cap[t]], -np.inf, -float(problem.other_kw[t]))
            rows.add([load0 + t], [1.0], -np.inf, float(problem.steady_limit_kw[t]))
        reaches = np.zeros((problem.n_racks, problem.n_sources), dtype=bool)  # rack r may be on or go to source t
        for r, options in enumerate(problem.options):
            reaches[r, list(options)] = True
        for s in allowed:
            survivors = [t for t in allowed if t != s]
            mine = np.flatnonzero(ps == s)
            sizes = range(1, len(survivors) + 1)
            if len(allowed) > HALL_ALL:
                sizes = range(1, min(HALL_MAX, len(survivors)) + 1)
            subsets = [t for k in sizes for t in combinations(survivors, k)]
            if len(allowed) > HALL_ALL and len(survivors) > HALL_MAX:
                subsets.append(tuple(survivors))
            for subset in subsets:
                outside = np.ones(problem.n_sources, dtype=bool)
                outside[[s, *subset]] = False
                confined = mine[~reaches[pr[mine]][:, outside].any(axis=1)].tolist()
                if not confined:
                    continue  # the steady rows cover it
                loads = [load0 + t for t in subset]
                cols = np.array(loads + confined + [self.u])
                vals = np.concatenate([np.ones(len(loads)), draw[confined], [-cap[list(subset)].sum()]])
                rows.add(cols, vals, -np.inf, -float(problem.other_kw[list(subset)].sum()))
                rows.add(cols[:-1], vals[:-1], -np.inf, float(problem.post_limit_kw[list(subset)].sum()))
        counted = list(model.stay_pair)
        if counted:
            stay = [model.stay_pair[r] for r in counted]
            rows.add(stay, -np.ones(len(stay)), -np.inf, float(problem.policy.move_budget - len(counted)))
        self.rows, self.matrix = rows, rows.csr(self.n_vars)
        self.lower, self.upper = np.zeros(self.n_vars), np.ones(self.n_vars)
        full_lower, full_upper = model.bounds()
        self.lower[:n_pairs] = full_lower[model.x0 : model.x0 + n_pairs]
        self.upper[:n_pairs] = full_upper[model.x0 : model.x0 + n_pairs]
        self.upper[self.u :] = np.inf
        alone = reaches[pr].sum(axis=1) < 2
        self.upper[:n_pairs][alone] = 0.0  # a rack with one usable source has no alternate: the full model has no plan
        self.integrality = np.zeros(self.n_vars)
        self.integrality[:n_pairs] = 1.0

    def choose(self, c_pairs: FloatArray | None, *, upper_u: float = np.inf, time_limit_s: float,
               gap: float) -> _Choice:  # fmt: skip
        """Minimise U (`c_pairs` None) or c_pairs @ x with U <= upper_u. Returns x fixed to each
        choice (columns of the full model; the best and up to PACK_TRIES - 1 earlier ones,
        since which of them packs best is luck) and the proven lower bound on the objective."""
        c = np.zeros(self.n_vars)
        if c_pairs is None:
            c[self.u] = 1.0
        else:
            c[: self.n_pairs] = c_pairs
        upper = self.upper.copy()
        upper[self.u] = upper_u
        found = _run(c, self.lower, upper, self.matrix, self.rows, self.integrality, None, time_limit_s, gap,
                     keep=PACK_TRIES - 1)  # fmt: skip
        x0 = self.model.x0
        plans = [found.x] if found.x is not None else []
        choices = [{x0 + p: float(v > 0.5) for p, v in enumerate(x[: self.n_pairs])} for x in plans + found.earlier]
        return choices, found.bound


def _below(bound: float) -> float:
    """A proven lower bound eased by HiGHS's tolerances, so that it cannot cut the optimum."""
    return bound * (1.0 - BOUND_MARGIN) - U_TOLERANCE


def _diagnose(problem: Problem, time_limit_s: float) -> tuple[tuple[Shortfall, ...], IntArray, IntArray]:
    """The least kW that do not fit, and where, from the elastic model; racks with no
    usable source at all are reported first."""
    sources = problem.source_ids
    found: list[Shortfall] = []
    for r in np.flatnonzero(~problem.usable.any(axis=1)):
        found.append(Shortfall(None, None, float(problem.draw_kw[r])))
    model, c = _elastic(problem)
    slack_cols = model.slack_cols
    result = model.solve(c, time_limit_s=time_limit_s)
    n = problem.n_racks
    if result.x is None:
        return tuple(found), np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    v = result.x
    for (lost, survivor), col in zip(model.slack_rows, slack_cols, strict=True):
        if v[col] > 1e-6:
            name = None if lost is None else sources[lost]
            found.append(Shortfall(name, None if survivor is None else sources[survivor], float(v[col])))
    orphans = v[model.orphan0 : model.orphan0 + len(model.pr)] > 0.5
    by_lost: dict[int, float] = {}
    for p in np.flatnonzero(orphans):
        s = int(model.ps[p])
        by_lost[s] = by_lost.get(s, 0.0) + float(problem.draw_kw[model.pr[p]])
    found += [Shortfall(sources[s], None, kw) for s, kw in sorted(by_lost.items())]
    assign, alternate = model.decode(v)
    return tuple(found), assign, alternate


def _elastic(problem: Problem) -> tuple[_Model, FloatArray]:
    """The elastic model and its objective: kW of slack on every capacity row, plus the
    draw of every rack left without an alternate."""
    model = _Model(problem, np.zeros(problem.n_racks, dtype=bool), elastic=True)
    c = np.zeros(model.n_vars)
    c[model.slack_cols] = 1.0
    c[model.orphan0 : model.orphan0 + len(model.pr)] = problem.draw_kw[model.pr]
    return model, c


def shortfall_bound(problem: Problem, *, time_limit_s: float = 60.0) -> float | None:
    """A lower bound on the least kW that do not fit on any plan (what the exact method's
    diagnosis finds): racks with no usable source at all, plus the elastic model's LP
    relaxation, fast where that diagnosis is not. A heuristic plan's own shortfall is an
    upper bound. None if the LP did not finish."""
    model, c = _elastic(problem)
    relaxed = model.solve(c, relax=True, time_limit_s=time_limit_s)
    homeless = float(problem.draw_kw[~problem.usable.any(axis=1)].sum())
    return homeless + max(relaxed.bound, 0.0) if relaxed.status == 0 else None


def lp_bound(problem: Problem, *, time_limit_s: float = 60.0) -> float | None:
    """The LP-relaxation lower bound of the worst post-contingency utilisation under the
    same move budget (None when even the relaxation is infeasible)."""
    model = _Model(problem, np.zeros(problem.n_racks, dtype=bool), elastic=False)
    return model.relaxed_u(time_limit_s=time_limit_s)
