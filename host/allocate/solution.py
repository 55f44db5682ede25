"""What a method returns: a target source and an alternate per rack, and when no plan
covers every contingency, the shortfalls that say why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from host.model.arrays import IntArray


class Status(StrEnum):
    OPTIMAL = "optimal"  # proven optimal (within the solver's gap)
    FEASIBLE = "feasible"  # N-1 covered, optimality not proven (heuristic, or a time limit)
    SHED = "shed"  # N-1 covered only with the deferrable racks in `shed` opened
    INFEASIBLE = "infeasible"  # some contingency is not covered: see `shortfalls`


@dataclass(frozen=True)
class Shortfall:
    """kW that do not fit: with `lost` gone (None: in steady state), on survivor `source`
    (None: the racks of `lost` that have no usable alternate at all)."""

    lost: str | None
    source: str | None
    kw: float

    def __str__(self) -> str:
        if self.lost is None and self.source is None:
            return f"racks with no usable source at all: {self.kw:.1f} kW"
        when = "in steady state" if self.lost is None else f"if {self.lost!r} is lost"
        where = f"{self.source!r} is short by" if self.source else "racks with no usable alternate carry"
        return f"{when}, {where} {self.kw:.1f} kW"


@dataclass(frozen=True, eq=False)
class Solution:
    """`assign[r]`: the rack's target source (-1: shed, its feed opened); `alternate[r]`:
    where its tap transfers it if its target is lost (-1: none). `u` is the worst
    post-contingency utilisation and `lp_bound` the LP-relaxation bound on it under
    the same move budget (None when not computed). The exact method also gives
    `move_cost`, its plan's weighted moves (deferrable 1, normal 2, critical 4, plus
    tie-breakers worth less than one move), and `move_floor`, a proven lower bound on
    that cost for every plan at its U."""

    method: str
    status: Status
    assign: IntArray
    alternate: IntArray
    u: float
    lp_bound: float | None
    solve_s: float
    shortfalls: tuple[Shortfall, ...] = ()
    note: str = ""
    move_cost: float | None = None
    move_floor: float | None = None

    @property
    def gap(self) -> float | None:
        """Relative gap of `u` to the LP bound."""
        if self.lp_bound is None or self.lp_bound <= 0:
            return None
        return (self.u - self.lp_bound) / self.lp_bound
