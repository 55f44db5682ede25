"""The fast method, for large sites: greedy placement plus local search on the worst
post-contingency utilisation.

1. Racks that must leave their source (emptied, over the drop limit, or open) go,
   largest first, to the usable source with the lowest utilisation.
2. Alternates: given the assignment, each lost source's racks are an independent
   makespan problem over the survivors, solved largest-first (LPT): each rack goes to
   the usable survivor with the lowest utilisation after the loss.
3. Local search, one voluntary move at a time within the budget: at the worst cell
   (lost s, survivor t) of the post-contingency matrix, first re-route alternates of
   s's racks away from t (free: no rack moves), then move one rack off t, or one of
   s's racks that would land on t, to where the whole matrix's maximum falls most,
   cheapest priority first. Stops when nothing improves.
Every candidate is scored exactly on the (sources x sources) matrix, so the search
never claims a better U than the plan has.
"""

from __future__ import annotations

import time

import numpy as np

from host.allocate.problem import TOLERANCE_KW, Problem
from host.allocate.solution import Shortfall, Solution, Status
from host.model.arrays import FloatArray, IntArray

# racks tried per voluntary move, the cost/quality knob: at 10,000 x 16, 24 gave gaps of
# 1.3-3.4% in 0.08 s, 200 gives 0.7-1.6% in 0.35 s (benchmarks/allocate.py, 3 seeds)
CANDIDATES = 200
IMPROVEMENT = 1e-9


class _State:
    """Assignment, alternates and the aggregates the search scores with: steady loads
    and flow[s, t], the kW that go to t if s is lost."""

    def __init__(self, problem: Problem, assign: IntArray) -> None:
        self.problem = problem
        self.assign = assign
        self.alternate = np.full(problem.n_racks, -1, dtype=np.int64)
        n = problem.n_sources
        self.cap = problem.capacity_kw
        self.base = problem.other_kw
        self.load = problem.loads(assign)
        self.flow = np.zeros((n, n))
        self.options = problem.options

    def matrix(self, load: FloatArray | None = None, flow: FloatArray | None = None) -> FloatArray:
        """Utilisation of survivor t after losing s; the diagonal holds the steady state."""
        load = self.load if load is None else load
        flow = self.flow if flow is None else flow
        out: FloatArray = (load + self.base)[None, :] + flow
        return out / self.cap[None, :]

    def worst(self) -> float:
        return float(self.matrix().max()) if self.problem.n_sources > 1 else 0.0

    def set_alternates(self) -> None:
        """LPT per lost source: largest racks first, each to the survivor left least utilised."""
        draw = self.problem.draw_kw
        n = self.problem.n_sources
        flow = np.zeros((n, n))
        alternate = np.full(self.problem.n_racks, -1, dtype=np.int64)
        util = ((self.load + self.base) / self.cap).tolist()
        inv = (1.0 / self.cap).tolist()
        rows = flow.tolist()
        for r in np.argsort(-draw, kind="stable").tolist():
            s = int(self.assign[r])
            if s < 0:
                continue
            d = float(draw[r])
            row = rows[s]
            best, best_u = -1, np.inf
            for t in self.options[r]:
                if t != s:
                    u = util[t] + (row[t] + d) * inv[t]
                    if u < best_u:
                        best, best_u = t, u
            if best >= 0:
                row[best] += d
                alternate[r] = best
        self.flow = np.array(rows)
        self.alternate = alternate

    def best_alternate(self, r: int, s: int, load: FloatArray, flow: FloatArray) -> int:
        """The usable survivor of s left least utilised if rack r (on s) went to it."""
        d = self.problem.draw_kw[r]
        best, best_u = -1, np.inf
        for t in self.options[r]:
            if t != s:
                u = (load[t] + self.base[t] + flow[s, t] + d) / self.cap[t]
                if u < best_u:
                    best, best_u = t, u
        return best


def solve_heuristic(problem: Problem, *, lp_bound: float | None = None) -> Solution:
    """A plan for `problem` in well under a second for 10,000 racks. `lp_bound`, when
    given (see `milp.lp_bound`), is kept in the solution for its gap."""
    start = time.perf_counter()
    state = _State(problem, problem.current.copy())
    problem.place_evacuated(state.assign, state.load)
    state.set_alternates()
    _search(problem, state)
    before = state.worst()
    kept = (state.alternate.copy(), state.flow.copy())
    state.set_alternates()  # a fresh LPT on the final assignment is often better than the incremental one
    if state.worst() > before:
        state.alternate, state.flow = kept
    shortfalls = _shortfalls(problem, state)
    status = Status.INFEASIBLE if shortfalls else Status.FEASIBLE
    return Solution("heuristic", status, state.assign, state.alternate, state.worst(), lp_bound,
                    time.perf_counter() - start, shortfalls)  # fmt: skip


def _search(problem: Problem, state: _State) -> None:
    draw, weight = problem.draw_kw, problem.weight
    movable = ~problem.locked & ~problem.evacuate
    budget = problem.policy.move_budget
    n = problem.n_sources
    if n < 2:
        return
    while True:
        m = state.matrix()
        worst = float(m.max())
        s, t = divmod(int(m.argmax()), n)
        if s != t and _reroute(problem, state, s, t, worst):
            continue
        if budget <= 0:
            return
        on_t = state.assign == t
        heading = (state.assign == s) & (state.alternate == t) if s != t else np.zeros_like(on_t)
        pool = np.flatnonzero((on_t | heading) & movable)
        if len(pool) == 0:
            return
        # Cheapest priority first, then the racks whose size best matches the excess.
        excess = (worst - np.partition(m.ravel(), -2)[-2]) * state.cap[t] if m.size > 1 else 0.0
        order = np.lexsort((np.abs(draw[pool] - excess), weight[pool]))
        best: tuple[float, float, int, int] | None = None
        for r in pool[order[:CANDIDATES]].tolist():
            for u in state.options[r]:
                if u == state.assign[r]:
                    continue
                score = _score_move(problem, state, r, u)
                if score is not None and score < worst - IMPROVEMENT:
                    key = (score, float(weight[r]), r, u)
                    if best is None or key < best:
                        best = key
        if best is None:
            return
        _apply_move(problem, state, best[2], best[3])
        movable[best[2]] = False  # once per plan: a second move is a second supply gap
        budget -= 1


def _reroute(problem: Problem, state: _State, s: int, t: int, worst: float) -> bool:
    """Send one of s's racks bound for t elsewhere on s's loss, if that lowers the maximum."""
    draw = problem.draw_kw
    racks = np.flatnonzero((state.assign == s) & (state.alternate == t))
    for r in racks[np.argsort(-draw[racks])].tolist():
        d = draw[r]
        for u in state.options[r]:
            if u in (s, t):
                continue
            after_u = (state.load[u] + state.base[u] + state.flow[s, u] + d) / state.cap[u]
            after_t = (state.load[t] + state.base[t] + state.flow[s, t] - d) / state.cap[t]
            if max(after_u, after_t) < worst - IMPROVEMENT:
                state.flow[s, t] -= d
                state.flow[s, u] += d
                state.alternate[r] = u
                return True
    return False


def _score_move(problem: Problem, state: _State, r: int, u: int) -> float | None:
    """The whole matrix's maximum if rack r moved to u (with its best alternate there);
    None if u's steady limit would be exceeded."""
    d = problem.draw_kw[r]
    s, a = int(state.assign[r]), int(state.alternate[r])
    if state.load[u] + d > problem.steady_limit_kw[u] + 1e-9:
        return None
    load, flow = state.load.copy(), state.flow.copy()
    load[s] -= d
    load[u] += d
    if a >= 0:
        flow[s, a] -= d
    b = state.best_alternate(r, u, load, flow)
    if b < 0:
        return None
    flow[u, b] += d
    return float(state.matrix(load, flow).max())


def _apply_move(problem: Problem, state: _State, r: int, u: int) -> None:
    d = problem.draw_kw[r]
    s, a = int(state.assign[r]), int(state.alternate[r])
    state.load[s] -= d
    state.load[u] += d
    if a >= 0:
        state.flow[s, a] -= d
    b = state.best_alternate(r, u, state.load, state.flow)
    state.flow[u, b] += d
    state.assign[r], state.alternate[r] = u, b


def _shortfalls(problem: Problem, state: _State) -> tuple[Shortfall, ...]:
    """What does not fit in the heuristic's plan: racks with no usable source or no
    alternate, steady loads over the ceiling, survivors over their allowance."""
    names = problem.source_ids
    found: list[Shortfall] = []
    draw = problem.draw_kw
    unplaced = state.assign < 0
    if unplaced.any():
        found.append(Shortfall(None, None, float(draw[unplaced].sum())))
    orphan = (state.assign >= 0) & (state.alternate < 0)
    for s in np.unique(state.assign[orphan]).tolist():
        found.append(Shortfall(names[s], None, float(draw[orphan & (state.assign == s)].sum())))
    steady_over = state.load - problem.steady_limit_kw
    over = np.flatnonzero(steady_over > TOLERANCE_KW).tolist()
    found += [Shortfall(None, names[t], float(steady_over[t])) for t in over]
    post_over = state.load[None, :] + state.flow - problem.post_limit_kw[None, :]
    for s, t in zip(*np.nonzero(post_over > TOLERANCE_KW), strict=True):
        if s != t:
            found.append(Shortfall(names[int(s)], names[int(t)], float(post_over[s, t])))
    return tuple(found)
