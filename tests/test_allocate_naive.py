"""The naive rebalancer: it balances, within the move budget, but its alternates know
nothing of contingencies, so the checker finds N-1 holes the exact method does not leave."""

from __future__ import annotations

from typing import Any

import numpy as np

from host.allocate.check import check
from host.allocate.milp import solve_milp
from host.allocate.naive import solve_naive
from host.allocate.plan import make_plan
from host.allocate.problem import Policy, Problem
from host.allocate.solution import Status
from host.model.site import Priority, SourceKind


def _problem(draws: list[float], caps: list[float], current: list[int], **kwargs: Any) -> Problem:
    """Racks r0.. and sources s0..; every rack reaches every source."""
    n_racks, n_sources = len(draws), len(caps)
    reach = np.array([list(range(n_sources))] * n_racks)
    policy = kwargs.pop("policy", Policy(ceiling=1.0, overload_allowance=0.0, move_budget=10))
    return Problem(
        rack_ids=tuple(f"r{i}" for i in range(n_racks)),
        source_ids=tuple(f"s{j}" for j in range(n_sources)),
        draw_kw=np.array(draws, dtype=float),
        priority=tuple([Priority.NORMAL] * n_racks),
        current=np.array(current),
        reach=reach,
        impedance_ohm=np.full(reach.shape, 0.01),
        capacity_kw=np.array(caps, dtype=float),
        kind=tuple([SourceKind.UPS] * n_sources),
        policy=policy,
        **kwargs,
    )


def test_it_balances_a_simple_unbalanced_site() -> None:
    # 100 kW on s0, nothing on s1 and s2: the average is a third.
    problem = _problem([30, 20, 20, 10, 10, 10], [100, 100, 100], [0] * 6)
    solution = solve_naive(problem)
    result = check(problem, solution.assign, solution.alternate)
    util = np.array(result.steady_util)
    assert util.max() <= 100 / 300 + 0.1 + 1e-9  # within the largest rack of the average
    assert util.max() - util.min() <= 0.2
    assert 0 < result.moves <= problem.policy.move_budget
    assert solution.method == "naive"
    assert all(solution.alternate != solution.assign)


def test_it_keeps_to_the_move_budget_and_leaves_locked_racks() -> None:
    policy = Policy(ceiling=1.0, overload_allowance=0.0, move_budget=1)
    problem = _problem([10] * 6, [100, 100, 100], [0] * 6, policy=policy)
    solution = solve_naive(problem)
    assert check(problem, solution.assign, solution.alternate).moves == 1
    dwell = np.array([0.0] * 6)  # every rack moved a moment ago
    locked = _problem([10] * 6, [100, 100, 100], [0] * 6, dwell_s=dwell)
    assert np.array_equal(solve_naive(locked).assign, locked.current)


def test_a_balanced_site_is_left_alone() -> None:
    problem = _problem([10, 10, 10], [100, 100, 100], [0, 1, 2])
    solution = solve_naive(problem)
    assert np.array_equal(solution.assign, problem.current)


def test_balance_without_n1_awareness_leaves_a_contingency_uncovered_that_milp_covers() -> None:
    # 180 kW on three 100 kW sources. Balanced, each carries 60 kW; losing one, its 60 kW
    # fit only split 30/30 over the two survivors (40 kW spare each). The naive rebalancer
    # sends every rack of a source to the same survivor (the one with most spare).
    problem = _problem([10.0] * 18, [100, 100, 100], [0] * 9 + [1] * 9)
    naive = make_plan(problem, solve_naive(problem))
    util = np.array(naive.check.steady_util)
    assert np.allclose(util, 0.6)  # balanced
    assert naive.coverage < 1.0
    assert naive.solution.status == Status.INFEASIBLE and naive.shortfalls
    assert naive.worst_post > 1.0
    exact = make_plan(problem, solve_milp(problem, time_limit_s=20))
    assert exact.coverage == 1.0 and exact.check.ok, exact.check.problems
    assert exact.worst_post <= 0.9 + 1e-6
