"""The exact method's models on HiGHS (highspy): the allocation MILP with its post-
contingency rows and objectives, and the floor model (Hall's condition in place of the
alternates) that bounds the moves; with the run of one solve."""

from __future__ import annotations

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

from host.allocate.problem import Problem
from host.model.arrays import BoolArray, FloatArray, IntArray

LOSS_SHARE = 0.3  # the whole loss tie-breaker is worth at most this share of one move
THD_SHARE = 0.2  # and the THD one this share
U_GAP = 5e-3  # stage 1 stops once U is proven within 0.5% of the best: proving a min-max exactly costs far more
PACK_TRIES = 3  # the relaxation's plans whose alternates are packed exactly, for a start
HALL_ALL = 10  # Hall rows for every set of survivors up to this many sources (2^(n-1) per lost source)
HALL_MAX = 3  # above it, sets of up to this many survivors (a generated rack reaches at most 3 others)


Choice = tuple[list[dict[int, float]], float]  # columns fixed to choices of moves, and a proven lower bound


@dataclass
class SolveResult:
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
class Rows:
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


def run_model(c: FloatArray, lower: FloatArray, upper: FloatArray, matrix: Any, rows: Rows, integrality: FloatArray,
         start: FloatArray | None, time_limit_s: float, gap: float, keep: int = 0) -> SolveResult:  # fmt: skip
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
    return SolveResult(x, code, h.modelStatusToString(status), float(bound), earlier, infeasible)


class Model:
    """The programme for one problem. `sheddable` racks get a shed variable; `elastic`
    adds the diagnosis slacks. A shed is one of two kinds. `bare`: the rack stays on its
    current source with no alternate, powered now and dropped by its tap only if that
    source is lost (what a contingency that cannot be covered calls for; only racks whose
    current source is usable). Otherwise its feed is opened now (what a steady state over
    its limits calls for)."""

    def __init__(self, problem: Problem, sheddable: BoolArray, elastic: bool, *, bare: bool = False) -> None:
        self.problem = problem
        self.bare = bare
        if bare:
            sheddable = sheddable & problem.current_usable
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
        problem, rows = self.problem, Rows()
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
        bare_cols: dict[int, tuple[IntArray, FloatArray]] = {}  # a bare shed stays on its current source
        for t in allowed:
            mine = self.shed_racks[problem.current[self.shed_racks] == t] if self.bare else self.shed_racks[:0]
            bare_cols[t] = (np.array([shed_col[int(r)] for r in mine], dtype=np.int64), draw[mine])
        for t in allowed:
            on_cols = np.concatenate([self.x0 + on[t], bare_cols[t][0]])
            on_vals = np.concatenate([draw[self.pr[on[t]]], bare_cols[t][1]])
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
                cols = np.concatenate([self.x0 + on[t], bare_cols[t][0], self.y0 + moving])
                vals = np.concatenate([draw[self.pr[on[t]]], bare_cols[t][1], draw[self.pr[self.yp[moving]]]])
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
            elif self.bare:  # held where it is: it stays, with or without an alternate
                pairs = self.pair_of[r][self.pair_of[r] >= 0]
                upper[pairs[pairs != self.stay_pair[r]]] = 0.0
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
              time_limit_s: float = 60.0, gap: float = U_GAP,
              cost_cap: float | None = None) -> SolveResult:  # fmt: skip
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
            rows = Rows(lb=[*rows.lb, -np.inf], ub=[*rows.ub, cost_cap])
        return run_model(c, lower, upper, matrix, rows, integrality, None if relax else start, time_limit_s, gap)

    def encode(self, assign: IntArray, alternate: IntArray, u: float) -> FloatArray:
        """The solution vector of a plan (assign, alternate) with U = `u`: a start for HiGHS."""
        v = np.zeros(self.n_vars)
        on = assign[self.pr] == self.ps
        v[self.x0 : self.x0 + len(self.pr)] = on
        chosen = on[self.yp] & (alternate[self.pr[self.yp]] == self.ps[self.yq])
        v[self.y0 : self.y0 + len(self.yp)] = chosen
        v[self.u] = u
        if len(self.shed_racks):
            if self.bare:
                bare = (assign[self.shed_racks] == self.problem.current[self.shed_racks])
                shed = bare & (alternate[self.shed_racks] < 0)
            else:
                shed = assign[self.shed_racks] < 0
            v[self.shed0 : self.shed0 + len(self.shed_racks)] = shed
            v[self.x0 : self.x0 + len(self.pr)] *= ~np.isin(self.pr, self.shed_racks[shed])
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
        if self.bare and len(self.shed_racks):
            bare = self.shed_racks[v[self.shed0 : self.shed0 + len(self.shed_racks)] > 0.5]
            assign[bare] = self.problem.current[bare]
        return assign, alternate


class HallModel:
    """A relaxation that keeps x binary but drops the alternates: for each lost s and set T
    of survivors, the racks of s that can only go to T must fit in T's headroom (Hall's
    condition, which makes fractional alternates feasible; all sets up to HALL_ALL sources,
    else those of up to HALL_MAX survivors and all of them). A third of the integers and no
    y: HiGHS finds and proves plans here far sooner than in the full model. Every plan of
    the full model is a plan here, so a bound proven here holds for every plan. Columns: x
    per pair (as in the full model, from its x0), U, then the load of each source."""

    def __init__(self, problem: Problem, model: Model) -> None:
        self.model = model
        n_pairs, ps, pr = len(model.pr), model.ps, model.pr
        draw, cap = problem.draw_kw[pr], problem.capacity_kw
        allowed: list[int] = np.flatnonzero(problem.allowed_source).tolist()
        self.n_pairs, self.u = n_pairs, n_pairs
        load0 = n_pairs + 1
        self.n_vars = load0 + problem.n_sources
        rows = Rows()
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
               gap: float) -> Choice:  # fmt: skip
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
        found = run_model(c, self.lower, upper, self.matrix, self.rows, self.integrality, None, time_limit_s, gap,
                     keep=PACK_TRIES - 1)  # fmt: skip
        x0 = self.model.x0
        plans = [found.x] if found.x is not None else []
        choices = [{x0 + p: float(v > 0.5) for p, v in enumerate(x[: self.n_pairs])} for x in plans + found.earlier]
        return choices, found.bound
