"""The naive rebalancer of the original concept, kept as a peer for benchmarks: "move
racks off any source above the average until balanced".

1. Racks that must leave their source (emptied, over the drop limit, or open) go,
   largest first, to the usable source with the lowest utilisation (as every method
   must; these moves do not count against the budget).
2. Within the move budget: take the most loaded source above the average utilisation
   (all the racks' load over all allowed sources' capacity) plus a tolerance; move its
   largest movable rack that fits to the least loaded source it reaches, where fits
   means the target stays within its steady limit and at or below the average plus
   the tolerance. If none of its racks fits, try the next source above the average;
   stop when no source is above it or no move helps.
3. Alternates, not contingency-aware: each rack's is the usable source it reaches, other
   than its target, with the most spare capacity at plan time.

It returns the same `Solution` as the other methods, so `check` and `make_plan` score
its N-1 coverage beside theirs.
"""

from __future__ import annotations

import time

import numpy as np

from host.allocate.problem import TOLERANCE_KW, Problem
from host.allocate.solution import Shortfall, Solution, Status
from host.model.arrays import FloatArray, IntArray

TOLERANCE = 0.02  # utilisation above the average that counts as balanced


def solve_naive(problem: Problem) -> Solution:
    """The naive plan for `problem` (no LP bound: its gap is not computed)."""
    start = time.perf_counter()
    draw, cap = problem.draw_kw, problem.capacity_kw
    allowed = problem.allowed_source
    options = problem.options
    assign: IntArray = problem.current.copy()
    load: FloatArray = problem.loads(assign)
    base = problem.other_kw

    def util(t: int, extra: float = 0.0) -> float:
        return float((load[t] + base[t] + extra) / cap[t])

    problem.place_evacuated(assign, load)

    movable = ~problem.locked & ~problem.evacuate
    total_cap = float(cap[allowed].sum())
    average = float((draw[assign >= 0].sum() + base[allowed].sum()) / total_cap) if total_cap > 0 else 0.0
    limit = average + TOLERANCE
    steady = problem.steady_limit_kw
    moves = 0
    while moves < problem.policy.move_budget:
        over = [int(s) for s in np.flatnonzero(allowed) if util(int(s)) > limit + 1e-12]
        if not over:
            break
        moved = False
        for s in sorted(over, key=lambda s: -util(s)):
            racks = [int(r) for r in np.flatnonzero((assign == s) & movable)]
            for r in sorted(racks, key=lambda r: (-draw[r], r)):
                targets = [t for t in options[r] if t != s]
                if not targets:
                    continue
                t = min(targets, key=lambda t: (util(t), t))
                fits = load[t] + draw[r] <= steady[t] + TOLERANCE_KW and util(t, float(draw[r])) <= limit + 1e-12
                if fits and util(t, float(draw[r])) < util(s):
                    assign[r] = t
                    load[s] -= draw[r]
                    load[t] += draw[r]
                    moves += 1
                    moved = True
                    break
            if moved:
                break
        if not moved:
            break

    alternate = np.full(problem.n_racks, -1, dtype=np.int64)
    spare = cap - load - base  # at plan time, the final assignment's
    for r in np.flatnonzero(assign >= 0).tolist():
        others = [t for t in options[r] if t != assign[r]]
        if others:
            alternate[r] = max(others, key=lambda t: (spare[t], -t))
    shortfalls = _shortfalls(problem, assign, alternate, load)
    status = Status.INFEASIBLE if shortfalls else Status.FEASIBLE
    u = problem.worst_post(assign, alternate)
    note = f"{moves} voluntary moves, average utilisation {average:.3f}"
    return Solution("naive", status, assign, alternate, u, None, time.perf_counter() - start, shortfalls, note)


def _shortfalls(problem: Problem, assign: IntArray, alternate: IntArray, load: FloatArray) -> tuple[Shortfall, ...]:
    """What does not fit: racks with no usable source or no alternate, steady loads over
    the ceiling, survivors over their allowance after a loss."""
    names, draw = problem.source_ids, problem.draw_kw
    found: list[Shortfall] = []
    unplaced = assign < 0
    if unplaced.any():
        found.append(Shortfall(None, None, float(draw[unplaced].sum())))
    orphan = (assign >= 0) & (alternate < 0)
    for s in np.unique(assign[orphan]).tolist():
        found.append(Shortfall(names[s], None, float(draw[orphan & (assign == s)].sum())))
    steady_over = load - problem.steady_limit_kw
    found += [Shortfall(None, names[t], float(steady_over[t])) for t in np.flatnonzero(steady_over > TOLERANCE_KW)]
    post_over = load[None, :] + problem.flow_kw(assign, alternate) - problem.post_limit_kw[None, :]
    for s, t in zip(*np.nonzero(post_over > TOLERANCE_KW), strict=True):
        if s != t and load[s] > 0:
            found.append(Shortfall(names[int(s)], names[int(t)], float(post_over[s, t])))
    return tuple(found)
