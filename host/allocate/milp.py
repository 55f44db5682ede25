"""The exact method: a mixed-integer programme solved by HiGHS through scipy.optimize.milp.

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
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp  # type: ignore[import-untyped]
from scipy.sparse import coo_array  # type: ignore[import-untyped]

from host.allocate.problem import Problem
from host.allocate.solution import Shortfall, Solution, Status
from host.site.arrays import BoolArray, FloatArray, IntArray
from host.site.model import Priority

U_TOLERANCE = 1e-6  # stage 2 may exceed stage 1's U by this much (numerical slack)
LOSS_SHARE = 0.3  # the whole loss tie-breaker is worth at most this share of one move
THD_SHARE = 0.2  # and the THD one this share
U_GAP = 5e-3  # stage 1 stops once U is proven within 0.5% of the best: proving a min-max exactly costs far more
U_SLACK = 2e-3  # stage 2 may give up this share of U for fewer moves
MOVE_SLACK = 0.45  # stage 2 stops once proven within this of the least cost: below one move, above the tie-breakers


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

    def constraint(self, n_vars: int) -> LinearConstraint:
        empty = np.zeros(0, dtype=np.int64)
        rows = np.concatenate(self.rows) if self.rows else empty
        cols = np.concatenate(self.cols) if self.cols else empty
        vals = np.concatenate(self.vals) if self.vals else np.zeros(0)
        matrix = coo_array((vals, (rows, cols)), shape=(len(self.lb), n_vars)).tocsr()
        return LinearConstraint(matrix, np.array(self.lb), np.array(self.ub))


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

    def solve(self, c: FloatArray, *, relax: bool = False, upper_u: float = np.inf,
              fixed: dict[int, float] | None = None, time_limit_s: float = 60.0,
              gap: float = U_GAP) -> OptimizeResult:  # fmt: skip
        lower, upper = self.bounds()
        upper[self.u] = upper_u
        for col, value in (fixed or {}).items():
            lower[col] = upper[col] = value
        integrality = np.zeros(self.n_vars) if relax else self.integrality()
        return milp(c, integrality=integrality, bounds=Bounds(lower, upper),
                    constraints=self.rows.constraint(self.n_vars),
                    options={"time_limit": time_limit_s, "mip_rel_gap": gap})  # fmt: skip

    def relaxed_u(self, *, fixed: dict[int, float] | None = None, time_limit_s: float = 60.0) -> float | None:
        """U at the optimum of the LP relaxation: a lower bound on it (None when even the
        relaxation is infeasible)."""
        c = np.zeros(self.n_vars)
        c[self.u] = 1.0
        relaxed = self.solve(c, relax=True, fixed=fixed, time_limit_s=time_limit_s)
        return float(relaxed.x[self.u]) if relaxed.x is not None else None

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
    `time_limit_s` applies to each of the (up to five) solves; a solve stopped by it
    keeps its best plan, with status FEASIBLE and its gap to the LP bound."""
    start = time.perf_counter()
    none = np.zeros(problem.n_racks, dtype=bool)
    model = _Model(problem, none, elastic=False)
    solution = _optimise(problem, model, {}, start, time_limit_s)
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
            solution = _optimise(problem, shed_model, fixed, start, time_limit_s, shortfalls)
            if solution is not None:
                return solution
    return Solution("milp", Status.INFEASIBLE, assign, alternate, np.inf, None,
                    time.perf_counter() - start, shortfalls)  # fmt: skip


def _optimise(problem: Problem, model: _Model, fixed: dict[int, float], start: float, time_limit_s: float,
              shortfalls: tuple[Shortfall, ...] = ()) -> Solution | None:  # fmt: skip
    """Stage 1 (min U), stage 2 (min moves at that U) and the LP bound; None if infeasible."""
    c_u = np.zeros(model.n_vars)
    c_u[model.u] = 1.0
    first = model.solve(c_u, fixed=fixed, time_limit_s=time_limit_s)
    if first.x is None:
        return None
    u_star = float(first.x[model.u])
    u_cap = u_star * (1.0 + U_SLACK) + U_TOLERANCE
    c_moves = model.move_cost()
    gap = MOVE_SLACK / max(float(c_moves @ first.x), MOVE_SLACK)  # stage 1's plan bounds stage 2's cost
    second = model.solve(c_moves, upper_u=u_cap, fixed=fixed, time_limit_s=time_limit_s, gap=min(gap, 0.5))
    best = second if second.x is not None else first
    bound = model.relaxed_u(fixed=fixed, time_limit_s=time_limit_s)
    assign, alternate = model.decode(best.x)
    proven = first.status == 0 and second.status == 0
    status = Status.SHED if fixed and any(fixed.values()) else Status.OPTIMAL if proven else Status.FEASIBLE
    note = "" if proven else f"stopped at the time limit: {first.message}"
    u = problem.worst_post(assign, alternate)
    return Solution("milp", status, assign, alternate, u, bound, time.perf_counter() - start,
                    shortfalls, note)  # fmt: skip


def _diagnose(problem: Problem, time_limit_s: float) -> tuple[tuple[Shortfall, ...], IntArray, IntArray]:
    """The least kW that do not fit, and where, from the elastic model; racks with no
    usable source at all are reported first."""
    sources = problem.source_ids
    found: list[Shortfall] = []
    for r in np.flatnonzero(~problem.usable.any(axis=1)):
        found.append(Shortfall(None, None, float(problem.draw_kw[r])))
    model = _Model(problem, np.zeros(problem.n_racks, dtype=bool), elastic=True)
    c = np.zeros(model.n_vars)
    slack_cols = model.slack_cols
    c[slack_cols] = 1.0
    c[model.orphan0 : model.orphan0 + len(model.pr)] = problem.draw_kw[model.pr]
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


def lp_bound(problem: Problem, *, time_limit_s: float = 60.0) -> float | None:
    """The LP-relaxation lower bound of the worst post-contingency utilisation under the
    same move budget (None when even the relaxation is infeasible)."""
    model = _Model(problem, np.zeros(problem.n_racks, dtype=bool), elastic=False)
    return model.relaxed_u(time_limit_s=time_limit_s)
