"""Why the exact allocation at 500 x 8 is not proven in 10 s: a study, with long solves.

Run from the repository root: `.venv/bin/python benchmarks/allocate_exact.py` (about 7 min
on two cores; `--seeds 1` one site, `--limit 60` the time limit of each long solve).
Prints markdown for benchmarks/RESULTS.md.

The sites are benchmarks/allocate.py's 500 x 8 ones (tight, move budget 20). For each:
1. `solve_milp` with a 10 s limit, as the benchmark runs it.
2. Stage 1 again (min U, seeded as `solve_milp` seeds it), which gives the U cap that
   stage 2 works under: stage 1's U plus U_SLACK.
3. The floor: the model without alternate variables (Hall's condition per lost source in
   their place, `HallModel`), fewest weighted moves with U under that cap, solved to
   optimality. Every plan of the full model is a plan of this one, so its optimum is a
   lower bound on the moves of every plan.
4. Each optimal plan of that model (HiGHS keeps up to three) with its alternates packed
   exactly, whole racks only: the least U they reach. If one reached the cap, stage 2
   would be proven at the floor.
5. The full model, fewest weighted moves under the cap, from stage 1's plan, for the
   long limit: the best plan found and HiGHS's own bound.
6. The full model, least U, from stage 1's plan, at HiGHS's default gap (0.01%), for the
   long limit: whether U itself can be proven exactly.

It reaches into host/allocate/milp.py's private parts on purpose: it measures them.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.allocate import IMPEDANCE_OHM, LOAD_SHARE, SIZES
from host.allocate import milp, milp_model
from host.allocate.generate import tight_problem

RACKS, SOURCES = 500, 8
EXACT_GAP = 1e-4  # HiGHS's default relative gap: "exactly"


def study(seed: int, limit_s: float) -> str:
    problem = tight_problem(RACKS, SOURCES, seed, SIZES[(RACKS, SOURCES)], load_share=LOAD_SHARE,
                            impedance_ohm=IMPEDANCE_OHM)  # fmt: skip
    t = time.perf_counter()
    solution = milp.solve_milp(problem, time_limit_s=10.0)
    solve_s = time.perf_counter() - t

    model = milp_model.Model(problem, np.zeros(problem.n_racks, dtype=bool), elastic=False)
    c_u = np.zeros(model.n_vars)
    c_u[model.u] = 1.0
    budget = milp._Budget(10.0)
    relaxed = model.solve(c_u, relax=True, time_limit_s=10.0)
    hall = milp_model.HallModel(problem, model)
    first, lower = milp._stage_one(problem, model, {}, relaxed.bound, budget, hall)
    assert first.x is not None, "the generated sites are feasible"
    u_star = float(first.x[model.u])
    u_cap = u_star * (1.0 + milp.U_SLACK) + milp.U_TOLERANCE
    c_moves = model.move_cost()
    start_cost = float(c_moves @ first.x)

    t = time.perf_counter()
    choices, floor = hall.choose(c_moves[model.x0 : model.x0 + hall.n_pairs], upper_u=u_cap, time_limit_s=limit_s,
                                 gap=EXACT_GAP)  # fmt: skip
    floor_s = time.perf_counter() - t
    choice_costs = [float(c_moves[list(ch)] @ np.array(list(ch.values()))) for ch in choices]
    packed_u = []
    for moves in choices:
        packed = model.solve(c_u, fixed=moves, time_limit_s=limit_s / 4, gap=EXACT_GAP)
        packed_u.append(float(packed.x[model.u]) if packed.x is not None else float("inf"))

    t = time.perf_counter()
    moves_run = model.solve(c_moves, upper_u=u_cap, start=first.x, time_limit_s=limit_s, gap=EXACT_GAP)
    moves_s = time.perf_counter() - t
    best_moves = float(c_moves @ moves_run.x) if moves_run.x is not None else start_cost

    t = time.perf_counter()
    u_run = model.solve(c_u, start=first.x, time_limit_s=limit_s, gap=EXACT_GAP)
    u_s = time.perf_counter() - t
    best_u = float(u_run.x[model.u]) if u_run.x is not None else u_star

    lines = [
        f"### seed {seed}",
        "",
        f"- solve_milp at 10 s: {solution.status.value} in {solve_s:.1f} s, U {solution.u:.4f}, "
        f"weighted moves {_num(solution.move_cost)} (proven floor {_num(solution.move_floor)})",
        f"- stage 1 again: U {u_star:.4f} (proven bound {lower:.4f}), so stage 2's cap is {u_cap:.4f}; "
        f"its plan costs {start_cost:.2f} weighted moves",
        f"- floor, the model without alternates to optimality: {floor:.2f} weighted moves in {floor_s:.1f} s "
        f"({'proven' if floor_s < limit_s else 'stopped at the limit'})",
        "- its optimal plans, alternates packed whole: "
        + ", ".join(f"cost {c:.2f} reaches U {u:.4f}" for c, u in zip(choice_costs, packed_u, strict=True))
        + f" (cap {u_cap:.4f}: {'one fits' if min(packed_u, default=np.inf) <= u_cap else 'none fits'})",
        f"- full model, fewest moves under the cap, {moves_s:.0f} s: best {best_moves:.2f}, HiGHS bound "
        f"{moves_run.bound:.2f} ({moves_run.message})",
        f"- full model, least U at a 0.01% gap, {u_s:.0f} s: best {best_u:.4f}, HiGHS bound {u_run.bound:.4f} "
        f"({u_run.message})",
        "",
    ]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds of the 500 x 8 site")
    parser.add_argument("--limit", type=float, default=60.0, help="time limit of each long solve, s")
    args = parser.parse_args()
    print(f"Exactness study at {RACKS} x {SOURCES}, {platform.machine()}, Python {platform.python_version()}, "
          f"highspy {version('highspy')}; long solves {args.limit:.0f} s each\n")  # fmt: skip
    for seed in (int(s) for s in args.seeds.split(",")):
        print(study(seed, args.limit), flush=True)


if __name__ == "__main__":
    main()
