"""Generated tight sites for the allocation tests and benchmark.

Racks of 2 to 40 kW (log-uniform), each reaching 2 to 4 of the sources (30% only 2),
currently on the first source it reaches; sources of equal capacity sized so that the
load is `load_share` (85% by default) of what N-1 allows: the total over the n - 1
survivors at capacity times (1 + the overload allowance, 10%). Priorities 20% critical,
60% normal, 20% deferrable. Path impedance 0.02 ohm unless `impedance_ohm` gives a
range (uniform within it, drawn after everything else so the default sites do not change).
"""

from __future__ import annotations

import numpy as np

from host.allocate.problem import Policy, Problem
from host.model.site import Priority, SourceKind

OVERLOAD_ALLOWANCE = Policy.overload_allowance  # the policy's default


def tight_problem(
    n_racks: int,
    n_sources: int,
    seed: int,
    budget: int,
    *,
    load_share: float = 0.85,
    impedance_ohm: tuple[float, float] = (0.02, 0.02),
) -> Problem:
    """A tight generated site as a `Problem` with a move budget of `budget`."""
    rng = np.random.default_rng(seed)
    draws = np.exp(rng.uniform(np.log(2.0), np.log(40.0), n_racks))
    reach = np.full((n_racks, 4), -1)
    for r in range(n_racks):
        k = 2 if rng.random() < 0.3 else int(rng.integers(2, 5))
        reach[r, :k] = rng.choice(n_sources, k, replace=False)
    cap = draws.sum() / load_share / (n_sources - 1) / (1.0 + OVERLOAD_ALLOWANCE)
    levels = np.array([Priority.CRITICAL, Priority.NORMAL, Priority.DEFERRABLE])
    pri = rng.choice(levels, n_racks, p=[0.2, 0.6, 0.2])
    low, high = impedance_ohm
    z = rng.uniform(low, high, reach.shape) if high > low else np.full(reach.shape, low)
    return Problem(
        rack_ids=tuple(f"r{i}" for i in range(n_racks)),
        source_ids=tuple(f"s{j}" for j in range(n_sources)),
        draw_kw=draws,
        priority=tuple(pri),
        current=reach[:, 0].copy(),
        reach=reach,
        impedance_ohm=np.where(reach >= 0, z, 0.0),
        capacity_kw=np.full(n_sources, cap),
        kind=tuple([SourceKind.UPS] * n_sources),
        policy=Policy(ceiling=1.0, overload_allowance=OVERLOAD_ALLOWANCE, move_budget=budget),
    )
