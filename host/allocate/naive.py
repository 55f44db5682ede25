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

from host.allocate.problem import Problem
from host.allocate.solution import Shortfall, Solution, Status
from host.site.arrays import FloatArray, IntArray

TOLERANCE = 0.02  # utilisation above the average that counts as balanced
TOLERANCE_KW = 1e-6


def solve_naive(problem: Problem, *, tolerance: float = TOLERANCE, lp_bound: float | None = None) -> Solution:
    """The naive plan for `problem`. `lp_bound`, when given, is kept in the solution for its gap."""
    start = time.perf_counter()
    draw, cap = problem.draw_kw, problem.capacity_kw
    allowed = problem.allowed_source
    options = [[int(t) for t in problem.reach[r][problem.usable[r]]] for r in range(problem.n_racks)]
    assign: IntArray = problem.current.copy()
    load: FloatArray = problem.loads(assign)
    base = problem.other_kw

    def util(t: int, extra: float = 0.0) -> float:
        return float((load[t] + base[t] + extra) / cap[t])

    for r in sorted(np.flatnonzero(problem.evacuate).tolist(), key=lambda r: -draw[r]):
        s = int(assign[r])
        if s >= 0:
            load[s] -= draw[r]
        if not options[r]:
            assign[r] = -1  # no usable source at all: reported as a shortfall
            continue
        t = min(options[r], key=lambda t: util(t, float(draw[r])))
        assign[r] = t
        load[t] += draw[r]

    movable = ~problem.locked & ~problem.evacuate
    total_cap = float(cap[allowed].sum())
    average = float((draw[assign >= 0].sum() + base[allowed].sum()) / total_cap) if total_cap > 0 else 0.0
    limit = average + tolerance
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
    return Solution("naive", status, assign, alternate, u, lp_bound, time.perf_counter() - start, shortfalls, note)


def _shortfalls(problem: Problem, assign: IntArray, alternate: IntArray, load: FloatArray) -> tuple[Shortfall, ...]:
    """What does not fit: racks with no usable source or no alternate, steady loads over
    the ceiling, survivors over their allowance after a loss."""
    names, draw, n = problem.source_ids, problem.draw_kw, problem.n_sources
    found: list[Shortfall] = []
    unplaced = assign < 0
    if unplaced.any():
        found.append(Shortfall(None, None, float(draw[unplaced].sum())))
    orphan = (assign >= 0) & (alternate < 0)
    for s in np.unique(assign[orphan]).tolist():
        found.append(Shortfall(names[s], None, float(draw[orphan & (assign == s)].sum())))
    steady_over = load - problem.steady_limit_kw
    found += [Shortfall(None, names[t], float(steady_over[t])) for t in np.flatnonzero(steady_over > TOLERANCE_KW)]
    flow = np.zeros((n, n))
    has = (assign >= 0) & (alternate >= 0)
    np.add.at(flow, (assign[has], alternate[has]), draw[has])
    post_over = load[None, :] + flow - problem.post_limit_kw[None, :]
    for s, t in zip(*np.nonzero(post_over > TOLERANCE_KW), strict=True):
        if s != t and load[s] > 0:
            found.append(Shortfall(names[int(s)], names[int(t)], float(post_over[s, t])))
    return tuple(found)
