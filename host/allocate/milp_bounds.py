"""What the exact method proves about a site beside its plan: the LP bound on the worst
utilisation, and, when N-1 cannot be covered, the least load to shed (an elastic MILP,
and its LP relaxation as a bound on any plan)."""

from __future__ import annotations

import numpy as np

from host.allocate.milp_model import Model
from host.allocate.problem import Problem
from host.allocate.solution import Shortfall
from host.model.arrays import FloatArray, IntArray


def diagnose(problem: Problem, time_limit_s: float) -> tuple[tuple[Shortfall, ...], IntArray, IntArray]:
    """The least kW that do not fit, and where, from the elastic model; racks with no
    usable source at all are reported first."""
    sources = problem.source_ids
    found: list[Shortfall] = []
    for r in np.flatnonzero(~problem.usable.any(axis=1)):
        found.append(Shortfall(None, None, float(problem.draw_kw[r])))
    model, c = elastic_model(problem)
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


def elastic_model(problem: Problem) -> tuple[Model, FloatArray]:
    """The elastic model and its objective: kW of slack on every capacity row, plus the
    draw of every rack left without an alternate."""
    model = Model(problem, np.zeros(problem.n_racks, dtype=bool), elastic=True)
    c = np.zeros(model.n_vars)
    c[model.slack_cols] = 1.0
    c[model.orphan0 : model.orphan0 + len(model.pr)] = problem.draw_kw[model.pr]
    return model, c


def shortfall_bound(problem: Problem, *, time_limit_s: float = 60.0) -> float | None:
    """A lower bound on the least kW that do not fit on any plan (what the exact method's
    diagnosis finds): racks with no usable source at all, plus the elastic model's LP
    relaxation, fast where that diagnosis is not. A heuristic plan's own shortfall is an
    upper bound. None if the LP did not finish."""
    model, c = elastic_model(problem)
    relaxed = model.solve(c, relax=True, time_limit_s=time_limit_s)
    homeless = float(problem.draw_kw[~problem.usable.any(axis=1)].sum())
    return homeless + max(relaxed.bound, 0.0) if relaxed.status == 0 else None


def lp_bound(problem: Problem, *, time_limit_s: float = 60.0) -> float | None:
    """The LP-relaxation lower bound of the worst post-contingency utilisation under the
    same move budget (None when even the relaxation is infeasible)."""
    model = Model(problem, np.zeros(problem.n_racks, dtype=bool), elastic=False)
    return model.relaxed_u(time_limit_s=time_limit_s)
