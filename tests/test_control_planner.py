"""The controller's plan-or-stay rule (host/control/planner.py `choose`) on hand-made sites:
a secure site is left alone, a site over the aim gets the fewest moves that reach it,
and staying never wins by opening racks that a plan keeps powered."""

from __future__ import annotations

import numpy as np
import pytest

from host.allocate.problem import Policy, Problem
from host.allocate.solution import Solution, Status
from host.control import planner
from host.control.planner import choose
from host.model.site import Priority, SourceKind

N, D = Priority.NORMAL, Priority.DEFERRABLE


def _problem(per_source: list[int], caps: list[float], kw: float = 10.0, priority: Priority = N,
             aim_u: float = 0.0) -> Problem:  # fmt: skip
    """`per_source[j]` racks of `kw` kW on source j; every rack reaches every source."""
    current = np.repeat(np.arange(len(per_source)), per_source)
    n, m = len(current), len(caps)
    reach = np.tile(np.arange(m), (n, 1))
    return Problem(
        rack_ids=tuple(f"r{i}" for i in range(n)),
        source_ids=tuple(f"s{j}" for j in range(m)),
        draw_kw=np.full(n, kw),
        priority=tuple([priority] * n),
        current=current,
        reach=reach,
        impedance_ohm=np.full(reach.shape, 0.01),
        capacity_kw=np.array(caps, dtype=float),
        kind=tuple([SourceKind.UPS] * m),
        policy=Policy(ceiling=1.0, overload_allowance=0.1, move_budget=10, aim_u=aim_u),
    )


def test_a_secure_site_within_the_aim_is_left_alone() -> None:
    # 60 kW on s0, 20 on each of three others: every loss is covered at 0.6 at worst.
    # Two moves would lower that to 0.4, far more than the margin, and are not worth making.
    unaimed = choose(_problem([6, 2, 2, 2], [100.0] * 4), 0.05)
    assert unaimed.chosen == "plan" and unaimed.plan.check.moves == 2
    aimed = choose(_problem([6, 2, 2, 2], [100.0] * 4, aim_u=0.95), 0.05)
    taken = aimed.plan if aimed.chosen == "plan" else aimed.stay
    assert taken.check.moves == 0 and all(taken.check.covered)


def test_over_the_aim_the_fewest_moves_reach_it() -> None:
    # s0 carries 90 kW, 0.9 of its capacity, above an aim of 0.8: two racks off it reach
    # 0.7 (aim less margin); the least utilisation, 0.4, takes five.
    aimed = choose(_problem([9, 1, 1, 1], [100.0] * 4, aim_u=0.7), 0.1)
    assert aimed.chosen == "plan" and aimed.plan.check.moves == 2
    assert aimed.plan.worst_post <= 0.7 + 1e-6
    unaimed = choose(_problem([9, 1, 1, 1], [100.0] * 4), 0.1)
    assert unaimed.plan.check.moves == 5


def test_staying_does_not_win_by_opening_racks_a_plan_keeps_powered() -> None:
    # 110 kW of deferrable racks on s0 (100 kW): staying must open one of them; moving two
    # to s1 and s2 opens none and covers every loss.
    choice = choose(_problem([11, 1, 1], [100.0] * 3, priority=D, aim_u=0.98), 0.02)
    assert choice.stay.shed and not choice.plan.shed
    assert choice.chosen == "plan" and choice.reason.startswith("kW opened")
    assert all(choice.plan.check.covered) and not choice.plan.exposed


def test_opening_racks_beats_staying_over_a_steady_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    # 120 kW of deferrable racks on a 100 kW source, 10 kW on one that takes 20 kW more: no
    # move fits them all. Staying is given no plan at all (as when its solve runs out of
    # time): it opens nothing but leaves s0 over its ceiling, and loses to opening racks.
    solve = planner.solve

    def stay_unsolved(problem: Problem) -> Solution:
        if problem.policy.move_budget:
            return solve(problem)
        none = np.full(problem.n_racks, -1)
        return Solution("milp", Status.INFEASIBLE, problem.current.copy(), none, np.inf, None, 0.0)

    monkeypatch.setattr(planner, "solve", stay_unsolved)
    choice = choose(_problem([12, 1], [100.0, 30.0], priority=D, aim_u=0.98), 0.02)
    assert not choice.stay.shed and choice.plan.shed
    assert choice.chosen == "plan" and choice.reason.startswith("kW over a steady ceiling"), choice.reason
    assert max(choice.plan.check.steady_util) <= 1.0 + 1e-6
