"""The plan made of a solution: the moves in a safe order, the contingency tables the
taps get as ranked alternates, utilisation before and after, and N-1 coverage as the
independent checker finds it."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from host.allocate.check import Check, check
from host.allocate.problem import TOLERANCE_KW, Problem
from host.allocate.solution import Shortfall, Solution, Status
from host.model.arrays import FloatArray, IntArray

Tables = dict[str, dict[str, tuple[str, ...]]]  # lost source -> rack -> ranked alternates


@dataclass(frozen=True)
class Move:
    """Move `rack` from `source` to `target` (None: output open). A `staging` move takes
    a rack to an intermediate source to break a cycle; it counts as a move like any other."""

    rack: str
    source: str | None
    target: str | None
    kw: float
    staging: bool = False

    def __str__(self) -> str:
        how = " (staging)" if self.staging else ""
        return f"{self.rack}: {self.source or 'open'} -> {self.target or 'open'} ({self.kw:.1f} kW){how}"


@dataclass(frozen=True, eq=False)
class Plan:
    """A plan, not yet executed. `moves` are in an order in which no source ever carries
    more than its capacity (and battery runtime); `blocked` are moves no order found could
    make (a cycle with no source to stage through): do them only after the others, by
    hand. `contingency[lost][rack]` ranks where the rack's tap goes if `lost` is lost."""

    solution: Solution
    assign: IntArray
    alternate: IntArray
    moves: tuple[Move, ...]
    blocked: tuple[Move, ...]
    contingency: Tables
    util_before: dict[str, float]
    util_after: dict[str, float]
    shed: tuple[str, ...]  # opened now
    check: Check
    exposed: tuple[str, ...] = ()  # left powered with no alternate: their tap drops them if their source is lost

    @property
    def worst_post(self) -> float:
        return self.check.worst_post

    @property
    def coverage(self) -> float:
        return self.check.coverage

    @property
    def shortfalls(self) -> tuple[Shortfall, ...]:
        return self.solution.shortfalls

    def alternates(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(rack, for_source, ranked) for every rack's target source: what to push to the taps."""
        return [(rack, lost, ranked) for lost, table in self.contingency.items() for rack, ranked in table.items()]

    def lines(self) -> list[str]:
        """A short human report."""
        s = self.solution
        gap = "" if s.gap is None else f", gap to LP bound {100 * s.gap:.2f}%"
        out = [f"{s.method}: {s.status}, worst post-contingency utilisation {self.worst_post:.3f}{gap}, "
               f"N-1 coverage {100 * self.coverage:.0f}%, {len(self.moves)} moves, {s.solve_s:.2f} s"]  # fmt: skip
        out += [f"  {source}: {self.util_before[source]:.3f} -> {self.util_after[source]:.3f}"
                for source in self.util_before]  # fmt: skip
        out += [f"  move {m}" for m in self.moves]
        out += [f"  blocked {m}" for m in self.blocked]
        out += [f"  shed {rack}" for rack in self.shed]
        out += [f"  exposed {rack} (no alternate: dropped if its source is lost)" for rack in self.exposed]
        out += [f"  {shortfall}" for shortfall in s.shortfalls]
        return out


def make_plan(problem: Problem, solution: Solution) -> Plan:
    """Order the moves, rank the alternates and check the result independently."""
    assign, alternate = solution.assign, solution.alternate
    if solution.status == Status.INFEASIBLE:
        assign = np.where(assign >= 0, assign, problem.current)  # what the diagnosis found, best effort
    moves, blocked = order_moves(problem, assign)
    sources = problem.source_ids
    cap = problem.capacity_kw
    before = (problem.load_kw) / cap
    after_kw = problem.loads(assign) + problem.other_kw
    shed = tuple(problem.rack_ids[r] for r in np.flatnonzero((assign < 0) & (problem.current >= 0)))
    checked = check(problem, assign, alternate)
    # a plan that covers what can be covered leaves its dropped racks unranked, so their taps drop
    # them rather than overload a survivor; one that cannot (a diagnosis) ranks every rack, best effort
    exposed = checked.dropped if solution.status != Status.INFEASIBLE else ()
    return Plan(
        solution=solution,
        assign=assign,
        alternate=alternate,
        moves=moves,
        blocked=blocked,
        contingency=contingency_tables(problem, assign, alternate, set(exposed)),
        util_before={sources[j]: float(before[j]) for j in range(len(sources))},
        util_after={sources[j]: float(after_kw[j] / cap[j]) for j in range(len(sources))},
        shed=shed,
        check=checked,
        exposed=exposed,
    )


def contingency_tables(problem: Problem, assign: IntArray, alternate: IntArray,
                       exposed: Collection[str] = ()) -> Tables:  # fmt: skip
    """For each source, each of its racks' ranked alternates: the planned one first, then
    the rack's other usable sources by their utilisation after that loss, lowest first.
    An `exposed` rack gets none: its tap drops it at the loss."""
    sources = problem.source_ids
    post = problem.post_util(assign, alternate)
    tables: Tables = {}
    for r in np.flatnonzero(assign >= 0):
        s, alt = int(assign[r]), int(alternate[r])
        if problem.rack_ids[r] in exposed:
            tables.setdefault(sources[s], {})[problem.rack_ids[r]] = ()
            continue
        others = [t for t in problem.options[r] if t not in (s, alt)]
        others.sort(key=lambda t: post[s, t])
        ranked = ([alt] if alt >= 0 else []) + others
        tables.setdefault(sources[s], {})[problem.rack_ids[r]] = tuple(sources[t] for t in ranked)
    return tables


def order_moves(problem: Problem, assign: IntArray) -> tuple[tuple[Move, ...], tuple[Move, ...]]:
    """The moves from the current to the target assignment, ordered so no source ever
    exceeds its hard limit: sheds first (they only free capacity), then repeatedly the
    move that fits and frees the most capacity other pending moves wait for. When none
    fits (a cycle), one waiting rack is staged through a source with room; when no
    source has room, the rest are returned as blocked."""
    draw, cur = problem.draw_kw, problem.current
    names, racks = problem.source_ids, problem.rack_ids
    load = problem.loads(cur)
    hard = problem.hard_limit_kw
    where = {int(r): int(cur[r]) for r in np.flatnonzero(assign != cur)}
    goal = {r: int(assign[r]) for r in where}
    ordered: list[Move] = []

    def do(r: int, to: int, staging: bool = False) -> None:
        frm = where[r]
        if frm >= 0:
            load[frm] -= draw[r]
        if to >= 0:
            load[to] += draw[r]
        ordered.append(Move(racks[r], names[frm] if frm >= 0 else None, names[to] if to >= 0 else None,
                            float(draw[r]), staging))  # fmt: skip
        where[r] = to

    for r in [r for r in where if goal[r] < 0]:
        do(r, -1)
        del goal[r]
    pending = set(goal)
    staged = 0
    while pending:
        inbound = np.zeros(problem.n_sources)
        for r in pending:
            inbound[goal[r]] += draw[r]
        fits = [r for r in pending if load[goal[r]] + draw[r] <= hard[goal[r]] + TOLERANCE_KW]
        if fits:
            # Free first what others wait for; then keep the most headroom.
            best = max(fits, key=lambda r: (inbound[where[r]] if where[r] >= 0 else 0.0,
                                            hard[goal[r]] - load[goal[r]] - draw[r], -r))  # fmt: skip
            do(best, goal[best])
            pending.discard(best)
            continue
        stage = _staging(problem, pending, where, load, hard, inbound) if staged < len(goal) else None
        if stage is None:
            break
        staged += 1
        do(stage[0], stage[1], staging=True)
    blocked = tuple(
        Move(racks[r], names[where[r]] if where[r] >= 0 else None, names[goal[r]], float(draw[r]))
        for r in sorted(pending)
    )
    return tuple(ordered), blocked


def _staging(
    problem: Problem, pending: set[int], where: dict[int, int], load: FloatArray, hard: FloatArray, inbound: FloatArray
) -> tuple[int, int] | None:
    """(rack, intermediate source) that breaks a cycle: a waiting rack whose source others
    wait for, to a usable source with room to spare beyond what is heading there."""
    best: tuple[float, int, int] | None = None
    for r in pending:
        frm = where[r]
        if frm < 0 or inbound[frm] <= 0:
            continue
        for t in problem.options[r]:
            room = hard[t] - load[t] - problem.draw_kw[r]
            if t != frm and room >= -TOLERANCE_KW and (best is None or room - inbound[t] > best[0]):
                best = (room - inbound[t], r, t)
    return None if best is None else (best[1], best[2])
