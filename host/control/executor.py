"""A plan carried out on the fleet: rankings cleared of sources at risk first, then the
moves in the plan's order, then every affected tap's contingency ranking.

Moves run one at a time, in the plan's order (which keeps every source within its hard
limit at every step, host/allocate/plan.py), with at most `arrivals_per_source` arrivals
on one source within `stagger_s`: arrivals on a source are spread out so it never takes
many racks in one instant. Each move goes through the fleet's `move`: on the buses, the
one move of host/ops/move.py, with every check before the SWITCH. Its intent is
journalled before the fleet is asked and settled after; a refusal stops the rest of the
plan, which the controller replans around the refused rack at once. Every move is then
verified by a fresh reading of the fleet.

Rankings: the allocator gives each rack a ranked list of alternates for its target
source; each tap whose ranking differs from what it last acknowledged gets it
(SET_ALTERNATES on the buses) and the fleet reads it back. A source at risk or in
quarantine is taken out of every ranking before any rack is moved off it, so that no
tap falls over onto it meanwhile.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from host.allocate.plan import Move, Plan
from host.model.errors import FencingError
from host.model.fleet import Alternates, Done, Fleet, FleetTelemetry, Refusal, Refused
from host.store.intents import Intents, IntentState

# a hook for the whole-loop tests: called with a step name ("intended", "asked",
# "answered", "verified") and the move; a test kills the process there
StepHook = Callable[[str, Move], None]


@dataclass
class Execution:
    """What one run of a plan did."""

    done: list[Move] = field(default_factory=list)
    refused: list[tuple[Move, str]] = field(default_factory=list)
    unknown: list[Move] = field(default_factory=list)
    rankings_set: int = 0
    ranking_problems: list[str] = field(default_factory=list)
    stopped: str = ""  # why the moves stopped before the end of the plan

    @property
    def replan(self) -> bool:
        return bool(self.refused or self.unknown or self.stopped)


class Executor:
    def __init__(self, fleet: Fleet, intents: Intents, *, arrivals_per_source: int, stagger_s: float,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 on_step: StepHook | None = None) -> None:
        self.fleet = fleet
        self.intents = intents
        self.arrivals_per_source = arrivals_per_source
        self.stagger_s = stagger_s
        self.clock = clock
        self.sleep = sleep
        self.on_step = on_step or (lambda step, move: None)
        self.rankings: dict[str, Alternates] = {}  # what each rack's tap last acknowledged, by this controller
        self._arrivals: dict[str, list[float]] = {}
        self._skip: set[str] = set()

    def run(self, plan: Plan, reason: str, plan_id: int, avoid: Collection[str],
            moves: Sequence[Move] | None = None, skip: Collection[str] = ()) -> Execution:
        """Carry the plan out (module docstring); `avoid`: sources at risk or quarantined;
        `moves`: the plan's moves in another safe order (evacuations by priority); `skip`:
        racks whose tap gave no reading, whose rankings wait for the next plan."""
        out = Execution()
        self._skip = set(skip)
        self._clear_rankings_of(avoid, out)
        for move in plan.moves if moves is None else moves:
            outcome = self._move(move, reason, plan_id)
            if outcome is None:
                out.done.append(move)
            elif outcome == "unknown":
                out.unknown.append(move)
                out.stopped = f"{move.rack}: no answer to its move"
                break
            else:
                out.refused.append((move, outcome))
                out.stopped = f"{move.rack}: move refused ({outcome})"
                break
        self._verify(out)
        if not out.stopped:
            self._push_rankings(plan, avoid, out)
        return out

    def _move(self, move: Move, reason: str, plan_id: int) -> str | None:
        """None when done; else "unknown" or the refusal."""
        if move.target is not None:
            self._stagger(move.target)
        intent = self.intents.intend(move.rack, move.source, move.target, reason, plan_id)
        self.on_step("intended", move)
        try:
            result = self.fleet.move(move.rack, move.source, move.target)
        except FencingError:
            self.intents.settle(intent, IntentState.UNKNOWN, "fenced out while asking: the next reading decides")
            raise
        self.on_step("answered", move)
        if isinstance(result, Done):
            self.intents.settle(intent, IntentState.DONE, "done" if result.changed else "already there")
            if move.target is not None:
                self._arrivals.setdefault(move.target, []).append(self.clock())
            return None
        assert isinstance(result, Refused)
        if result.reason == Refusal.NO_ANSWER:
            self.intents.settle(intent, IntentState.UNKNOWN, result.detail)
            return "unknown"
        self.intents.settle(intent, IntentState.REFUSED, f"{result.reason}: {result.detail}")
        return f"{result.reason}: {result.detail}"

    def _stagger(self, target: str) -> None:
        """At most `arrivals_per_source` arrivals on `target` within `stagger_s`."""
        recent = [t for t in self._arrivals.get(target, []) if self.clock() - t < self.stagger_s]
        self._arrivals[target] = recent
        if len(recent) >= self.arrivals_per_source:
            self.sleep(max(0.0, self.stagger_s - (self.clock() - recent[-self.arrivals_per_source])))

    def _verify(self, out: Execution) -> None:
        """A fresh reading: a move counts as done only where the rack is on its target."""
        if not (out.done or out.unknown):
            return
        telemetry = self.fleet.read_telemetry()
        for move in list(out.done):
            self.on_step("verified", move)
            if telemetry.active_source(move.rack) != move.target:
                out.done.remove(move)
                out.unknown.append(move)
                out.stopped = out.stopped or f"{move.rack}: not on {move.target} after its move"
        reconcile(self.intents, telemetry)

    def _clear_rankings_of(self, avoid: Collection[str], out: Execution) -> None:
        if not avoid:
            return
        for rack, held in list(self.rankings.items()):
            if held.for_source is None or not set(held.ranked) & set(avoid):
                continue
            kept = tuple(s for s in held.ranked if s not in avoid)
            self._set_ranking(rack, held.for_source, kept, out)

    def _push_rankings(self, plan: Plan, avoid: Collection[str], out: Execution) -> None:
        for rack, for_source, ranked in plan.alternates():
            wanted = tuple(s for s in ranked if s not in avoid)
            held = self.rankings.get(rack)
            if held is not None and held == Alternates(for_source, wanted):
                continue
            self._set_ranking(rack, for_source, wanted, out)

    def _set_ranking(self, rack: str, for_source: str, ranked: tuple[str, ...], out: Execution) -> None:
        if rack in self._skip:
            return
        result = self.fleet.set_alternates(rack, for_source, ranked[:3])
        if not isinstance(result, Done):
            assert isinstance(result, Refused)
            out.ranking_problems.append(f"{rack}: ranking for {for_source} refused: {result.reason} {result.detail}")
            self.rankings.pop(rack, None)
            return
        back = self.fleet.alternates(rack)
        if back != Alternates(for_source, ranked[:3]) and ranked:
            out.ranking_problems.append(f"{rack}: the tap holds {back}, not the ranking set")
            self.rankings.pop(rack, None)
            return
        self.rankings[rack] = Alternates(for_source, ranked[:3])
        out.rankings_set += 1


def reconcile(intents: Intents, telemetry: FleetTelemetry) -> list[str]:
    """Every intent of unknown outcome against where its rack really is: done if it is on
    its target, abandoned (never sent again: the next plan decides) if not, still unknown
    while the rack gives no reading. A line per intent settled."""
    settled = []
    for intent in intents.unfinished():
        if intent.rack not in telemetry.rack_index:
            intents.settle(intent.id, IntentState.ABANDONED, "the rack is no longer in the site")
            continue
        if math.isnan(float(telemetry.draw_kw[telemetry.index(intent.rack)])):
            continue
        actual = telemetry.active_source(intent.rack)
        if actual == intent.target:
            intents.settle(intent.id, IntentState.DONE, "found on its target")
            settled.append(f"{intent.rack}: found on {intent.target or 'open'}: done")
        else:
            intents.settle(intent.id, IntentState.ABANDONED, f"found on {actual or 'open'}, not "
                                                             f"{intent.target or 'open'}: not sent again")
            settled.append(f"{intent.rack}: found on {actual or 'open'}: abandoned, not sent again")
    return settled
