"""When to plan: every `plan_s`, and at once when something a plan answers has changed.

Each trigger fires on a change, not on a state: a source over its limit, an uncovered
contingency or an imbalance that a plan could not resolve does not make a new plan every
tick, only when it appears (or the period comes round).

- a forecast P95 (the racks where they are, over the horizon) above a source's steady
  limit (capacity x ceiling), or above a survivor's post-contingency limit
  (capacity x (1 + overload allowance)) if some source is lost, with the alternates the
  taps hold;
- a source's risk alarm raised or cleared;
- N-1 coverage lost: a single loss that the last plan covered no longer is;
- a source changed state (lost, tripped, exhausted, restored, maintenance);
- the spread of utilisation across the sources up passes the policy's imbalance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from host.allocate.check import check
from host.allocate.problem import Problem
from host.model.arrays import IntArray
from host.model.fleet import SourceStatus
from host.model.sources import SourceState


@dataclass
class Triggers:
    plan_s: float
    imbalance: float
    last_plan_s: float | None = None
    _states: dict[str, SourceState] = field(default_factory=dict)
    _over: frozenset[str] = frozenset()
    _uncovered: frozenset[str] = frozenset()
    _imbalanced: bool = False

    def reasons(self, now_s: float, problem: Problem, alternate: IntArray, statuses: Mapping[str, SourceStatus],
                alarms_changed: Sequence[str]) -> list[str]:
        """Why a plan should be made now (empty: it need not)."""
        out: list[str] = []
        if self.last_plan_s is None:
            out.append("first plan")
        elif now_s - self.last_plan_s >= self.plan_s:
            out.append(f"period: {self.plan_s:g} s since the last plan")
        changed = [f"{s} {self._states[s]} -> {st.state}" for s, st in statuses.items()
                   if s in self._states and self._states[s] != st.state]
        self._states = {s: st.state for s, st in statuses.items()}
        if changed:
            out.append("source state: " + ", ".join(changed))
        if alarms_changed:
            out.append("risk alarm: " + ", ".join(alarms_changed))
        over = self._over_limits(problem, alternate)
        new = sorted(over - self._over)
        self._over = frozenset(over)
        if new:
            out.append("forecast over a limit: " + "; ".join(new))
        result = check(problem, problem.current, alternate)
        uncovered = frozenset(s for s, ok in zip(problem.source_ids, result.covered, strict=True) if not ok)
        lost = sorted(uncovered - self._uncovered)
        self._uncovered = uncovered
        if lost:
            out.append("N-1 coverage lost for: " + ", ".join(lost))
        spread = _spread(problem, statuses)
        imbalanced = spread > self.imbalance
        if imbalanced and not self._imbalanced:
            out.append(f"imbalance: utilisation spread {spread:.2f} above {self.imbalance:g}")
        self._imbalanced = imbalanced
        return out

    def planned(self, now_s: float, problem: Problem, alternate: IntArray) -> None:
        """A plan was made: conditions are measured from it again."""
        self.last_plan_s = now_s
        self._over = frozenset(self._over_limits(problem, alternate))
        result = check(problem, problem.current, alternate)
        self._uncovered = frozenset(s for s, ok in zip(problem.source_ids, result.covered, strict=True) if not ok)

    @staticmethod
    def _over_limits(problem: Problem, alternate: IntArray) -> set[str]:
        names = problem.source_ids
        steady = (problem.loads(problem.current) + problem.other_kw) / problem.capacity_kw
        over = np.flatnonzero(steady > problem.policy.ceiling + 1e-9)
        found = {f"{names[j]} steady at {steady[j]:.2f}" for j in over}
        post = problem.post_util(problem.current, alternate)
        np.fill_diagonal(post, -np.inf)
        limit = 1.0 + problem.policy.overload_allowance
        for lost, survivor in zip(*np.nonzero(post > limit + 1e-9), strict=True):
            found.add(f"{names[survivor]} at {post[lost, survivor]:.2f} if {names[lost]} is lost")
        return found


def _spread(problem: Problem, statuses: Mapping[str, SourceStatus]) -> float:
    up = np.array([statuses[s].up if s in statuses else True for s in problem.source_ids]) & problem.available
    if up.sum() < 2:
        return 0.0
    util = (problem.loads(problem.current) + problem.other_kw) / problem.capacity_kw
    return float(util[up].max() - util[up].min())
