"""Allocation optimiser benchmark: the exact MILP, the heuristic, no rebalancing and the
naive rebalancer side by side on generated tight sites, in one run.

Run from the repository root: `.venv/bin/python benchmarks/allocate.py` (about 2 min on
two cores, two seeds per size; `--sizes 100x4,1000x8` runs a subset, `--seeds 1` one site per size,
`--full-lp` also solves the LP relaxation at 10,000 x 16, about 100 s more). Prints
markdown for benchmarks/RESULTS.md.

Sites (host/allocate/generate.py): racks of 2 to 40 kW (log-uniform), each reaching 2 to
4 of the sources (30% only 2), currently on a random one of them; equal sources sized so
the load is 85% of what N-1 allows (the n - 1 survivors at capacity plus the 10%
overload allowance), so no plan can do better than a worst post-contingency utilisation
of 0.935; priorities 20% critical, 60% normal, 20% deferrable; path impedance uniform
0.01 to 0.08 ohm (at most 8.4 V of drop at 40 kW and 400 V, under the 12 V limit: every
path is usable, and the losses differ between them). The move budget is set to bind:
the column "wanted" is what the heuristic moves with no budget at all.

Methods, each scored by the independent checker (host/allocate/check.py), which
simulates every single source loss with the racks on their alternates:
- milp: `solve_milp` (HiGHS through highspy), exact up to its tolerances (U within 0.5%, then
  the least weighted moves); only at 100 x 4 and 500 x 8, with one time limit for the whole
  solve (`--milp-limit`, 30 s by default; stage 1 (min U: the LP relaxation, the
  alternates-relaxed model that seeds it with a quarter of the limit, the packings of its
  plans, polishing, the full model) ends by 70% of it, stage 2 (min moves at that U: the
  alternates-relaxed model's floor under the moves, then the full model) has the rest).
  Its time includes its own LP bound, and its bound ("proven") is the best lower bound it
  proved: the LP bound, or higher if the relaxed model or HiGHS proved more. The notes give
  its weighted moves (deferrable 1, normal 2, critical 4, plus tie-breakers worth under one
  move) against the floor it proved under them.
- heuristic: `solve_heuristic` (greedy plus local search), at every size.
- none (no rebalancing): the current assignment, no voluntary move, with the heuristic's
  contingency-aware alternates for it (the heuristic run with a move budget of 0: LPT
  alternates and their local search, cheap).
- naive: `solve_naive`, the original concept (move racks off any source above the
  average until balanced; alternates by spare capacity at plan time).

Columns: solve time (the method only, not the checker); worst post-contingency
utilisation U (steady state included) and the lower bound it is measured against: the LP
relaxation of the MILP under the same move budget (`lp_bound`, timed apart), except at
10,000 x 16 where it takes about 100 s, so the counting bound total load / (n - 1)
capacities is used there unless `--full-lp` (it is a valid lower bound; the LP bound
equals it on every site measured here); gap = U / bound - 1; voluntary moves against the
budget; racks whose target or alternate path is over the voltage-drop limit; I2R losses
of the paths in use as kW and as a share of the load; N-1 coverage: the share of sources
whose loss the checker finds covered, and the number of the checker's findings.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.allocate.check import check
from host.allocate.generate import OVERLOAD_ALLOWANCE, tight_problem
from host.allocate.heuristic import solve_heuristic
from host.allocate.milp import solve_milp
from host.allocate.milp_bounds import lp_bound
from host.allocate.naive import solve_naive
from host.allocate.problem import Problem
from host.allocate.solution import Solution

# (racks, sources) -> move budget, chosen to bind (see "wanted" in the output).
SIZES = {(100, 4): 8, (500, 8): 20, (1_000, 8): 25, (10_000, 16): 150}
EXACT = {(100, 4), (500, 8)}  # where the MILP runs
FULL_LP_MAX_RACKS = 1_000  # above this the LP bound is the counting bound unless --full-lp
IMPEDANCE_OHM = (0.01, 0.08)
LOAD_SHARE = 0.85
GOALS = (
    "Goals: 10,000 x 16 with the heuristic in under 1 s at a gap of at most 2%; "
    "500 x 8 solved exactly in under 10 s; N-1 coverage 100% wherever a feasible plan "
    "exists (the naive rebalancer's beside it)."
)


@dataclass(frozen=True)
class Row:
    size: str
    seed: int
    method: str
    status: str
    solve_s: float
    u: float
    bound: float | None
    bound_kind: str
    moves: int
    budget: int
    drop_violations: int
    loss_kw: float
    loss_share: float
    coverage: float
    findings: int

    @property
    def gap(self) -> float | None:
        return None if self.bound is None or self.bound <= 0 else self.u / self.bound - 1.0


def no_rebalancing(problem: Problem) -> Solution:
    """The current assignment with the heuristic's alternates for it: no voluntary move."""
    frozen = dataclasses.replace(problem, policy=dataclasses.replace(problem.policy, move_budget=0))
    return dataclasses.replace(solve_heuristic(frozen), method="none")


def score(problem: Problem, solution: Solution, size: str, seed: int, bound: float | None, kind: str) -> Row:
    result = check(problem, solution.assign, solution.alternate)
    racks = np.arange(problem.n_racks)
    placed = solution.assign >= 0
    k_target = np.argmax(problem.reach == solution.assign[:, None], axis=1)
    k_alt = np.argmax(problem.reach == solution.alternate[:, None], axis=1)
    limit = problem.policy.max_drop_v + 1e-9
    over_target = placed & (problem.drop_v[racks, k_target] > limit)
    has_alt = solution.alternate >= 0
    over_alt = has_alt & (problem.drop_v[racks, k_alt] > limit)
    loss = float(problem.loss_kw[racks, k_target][placed].sum())
    load = float(problem.draw_kw[placed].sum())
    return Row(
        size=size, seed=seed, method=solution.method, status=str(solution.status), solve_s=solution.solve_s,
        u=result.worst_post, bound=bound, bound_kind=kind, moves=result.moves, budget=problem.policy.move_budget,
        drop_violations=int((over_target | over_alt).sum()), loss_kw=loss, loss_share=loss / load if load else 0.0,
        coverage=result.coverage, findings=len(result.problems),
    )  # fmt: skip


def counting_bound(problem: Problem) -> float:
    """Losing any one of n equal sources puts the whole load on the n - 1 others."""
    cap = problem.capacity_kw
    return float(problem.draw_kw.sum() / (cap.sum() - cap.max()))


def run_size(racks: int, sources: int, seed: int, milp_limit_s: float, full_lp: bool) -> tuple[list[Row], str]:
    budget = SIZES[(racks, sources)]
    problem = tight_problem(racks, sources, seed, budget, load_share=LOAD_SHARE, impedance_ohm=IMPEDANCE_OHM)
    size = f"{racks:,} x {sources}"
    free = dataclasses.replace(problem, policy=dataclasses.replace(problem.policy, move_budget=racks))
    unbound = solve_heuristic(free)
    wanted = check(free, unbound.assign, unbound.alternate).moves
    if racks <= FULL_LP_MAX_RACKS or full_lp:
        start = time.perf_counter()
        bound = lp_bound(problem, time_limit_s=600.0)
        lp_s = time.perf_counter() - start
        kind, note = "LP", f"LP bound {bound:.4f} in {lp_s:.2f} s"
    else:
        bound, kind = counting_bound(problem), "count"
        note = f"LP skipped (about 100 s here), counting bound {bound:.4f}"
    note += f"; heuristic moves with no budget: {wanted} (budget {budget})"
    methods: list[tuple[Callable[[Problem], Solution], bool]] = []
    if (racks, sources) in EXACT:
        methods.append((lambda p: solve_milp(p, time_limit_s=milp_limit_s), True))
    methods += [(solve_heuristic, False), (no_rebalancing, False), (solve_naive, False)]
    rows = []
    for solve, own_bound in methods:
        solution = solve(problem)
        if own_bound and solution.lp_bound is not None:
            rows.append(score(problem, solution, size, seed, solution.lp_bound, "proven"))
        else:
            rows.append(score(problem, solution, size, seed, bound, kind))
        if own_bound and solution.move_cost is not None:
            floor = "none proven" if solution.move_floor is None else f"proven floor {solution.move_floor:.2f}"
            note += f"; milp weighted moves {solution.move_cost:.2f} ({floor})"
        if solution.note and own_bound:
            note += f"; milp: {solution.note}"
    return rows, note


def table(rows: list[Row]) -> list[str]:
    out = [
        "| site | seed | method | status | solve s | worst post-contingency U | bound | gap | moves / budget "
        "| V-drop violations | I2R loss kW (share) | N-1 coverage | checker findings |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        gap = "" if r.gap is None else f"{100 * r.gap:.2f}%"
        bound = "" if r.bound is None else f"{r.bound:.4f} ({r.bound_kind})"
        out.append(
            f"| {r.size} | {r.seed} | {r.method} | {r.status} | {r.solve_s:.3f} | {r.u:.4f} | {bound} | {gap} "
            f"| {r.moves} / {r.budget} | {r.drop_violations} | {r.loss_kw:.2f} ({100 * r.loss_share:.2f}%) "
            f"| {100 * r.coverage:.1f}% | {r.findings} |"
        )
    return out


def goals(rows: list[Row]) -> list[str]:
    out = []
    big = [r for r in rows if r.size == "10,000 x 16" and r.method == "heuristic"]
    if big:
        ok = all(r.solve_s < 1.0 and r.gap is not None and r.gap <= 0.02 for r in big)
        worst_s = max(r.solve_s for r in big)
        worst_gap = max(r.gap or 0.0 for r in big)
        kinds = sorted({r.bound_kind for r in big})
        out.append(f"- 10,000 x 16, heuristic under 1 s at a gap of at most 2%: {'met' if ok else 'NOT met'} "
                   f"(slowest {worst_s:.3f} s, largest gap {100 * worst_gap:.2f}% to the {'/'.join(kinds)} bound)")
    exact = [r for r in rows if r.size == "500 x 8" and r.method == "milp"]
    if exact:
        ok = all(r.solve_s < 10.0 and r.status == "optimal" for r in exact)
        out.append(f"- 500 x 8 exactly in under 10 s: {'met' if ok else 'NOT met'} "
                   f"({', '.join(f'{r.solve_s:.2f} s {r.status}' for r in exact)})")
    for method in ("milp", "heuristic", "none", "naive"):
        mine = [r for r in rows if r.method == method]
        if mine:
            full = sum(1 for r in mine if r.coverage == 1.0 and r.findings == 0)
            low = min(r.coverage for r in mine)
            out.append(f"- {method}: N-1 covered with no checker finding on {full} of {len(mine)} sites "
                       f"(lowest coverage {100 * low:.1f}%)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(f"{r}x{s}" for r, s in SIZES),
                        help="comma-separated RACKSxSOURCES among " + ", ".join(f"{r}x{s}" for r, s in SIZES))
    parser.add_argument("--seeds", default="1,2", help="comma-separated generator seeds (default 1,2)")
    parser.add_argument("--milp-limit", type=float, default=30.0, help="MILP time limit, whole solve, s (default 30)")
    parser.add_argument("--full-lp", action="store_true", help="also solve the LP relaxation at 10,000 x 16")
    args = parser.parse_args()
    sizes = []
    for item in args.sizes.split(","):
        racks, sources = (int(v) for v in item.strip().lower().split("x"))
        if (racks, sources) not in SIZES:
            parser.error(f"unknown size {item!r}")
        sizes.append((racks, sources))
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    print(f"Allocation optimiser, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"highspy {version('highspy')} (HiGHS); MILP time limit {args.milp_limit:g} s per site")
    print()
    print(f"Tight sites: load {100 * LOAD_SHARE:.0f}% of what N-1 allows (overload allowance "
          f"{100 * OVERLOAD_ALLOWANCE:.0f}%), so U >= {LOAD_SHARE * (1 + OVERLOAD_ALLOWANCE):.3f} for any plan.")
    print()
    rows: list[Row] = []
    notes: list[str] = []
    for racks, sources in sizes:
        for seed in seeds:
            found, note = run_size(racks, sources, seed, args.milp_limit, args.full_lp)
            rows += found
            notes.append(f"- {racks:,} x {sources}, seed {seed}: {note}")
            print(f"<!-- {racks} x {sources} seed {seed} done at {time.perf_counter() - start:.0f} s -->", flush=True)
    print()
    print("\n".join(table(rows)))
    print()
    print("\n".join(notes))
    print()
    print(GOALS)
    print()
    print("\n".join(goals(rows)))
    print()
    print(f"Whole run: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
