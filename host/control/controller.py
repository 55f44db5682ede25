"""The controller's loop: one `tick()` per period, on the site simulator's clock or in
real time on the buses, through the `Fleet` interface only.

A tick:
1. renews leadership (a controller that lost it, or is fenced out by the taps, moves
   no relay again and says so); sends the fleet's sign of life where it has one;
2. reads the fleet (telemetry, sources, events) and stores it (host/control/observer.py);
3. learns of losses: a source that failed, tripped or ran out (its event, its state,
   or its monitor) is quarantined: nothing moves onto it until an operator restores it;
   racks its taps could not carry elsewhere show up unpowered and are covered by the
   next plan; the account goes to the decision log;
4. updates the risks and their alarms: a source whose alarm rises is flagged for
   maintenance and emptied ahead of its failure (deferrable racks first: the
   allocator's move weights), and stays flagged until restored;
5. plans when a trigger or the period says so (host/control/triggers.py), weighs the plan
   against staying put (host/control/planner.py) and carries out the one chosen
   (host/control/executor.py); a refused move is replanned around at once.

Every decision goes to the decision log with its reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from host.allocate.problem import AllocationError, Problem
from host.control.executor import Execution, Executor, StepHook, reconcile
from host.control.leadership import Leadership, SoleController
from host.control.observer import LiveObserver
from host.control.planner import PlanChoice, build_problem, choose, evacuation_order
from host.control.policy import ControlPolicy
from host.control.risk_alarms import RiskAlarms
from host.control.triggers import Triggers
from host.model.arrays import IntArray
from host.model.errors import FencingError, IbtError
from host.model.fleet import EventKind, Fleet, FleetTelemetry, SourceStatus
from host.model.schedule import Job
from host.model.sources import SourceState
from host.store.control_store import ControlStore
from host.store.intents import Intents
from host.store.telemetry import Retention, TelemetryStore

LOSS_EVENTS = (EventKind.SOURCE_FAILED, EventKind.SOURCE_TRIPPED, EventKind.SOURCE_EXHAUSTED)
LOST_STATES = (SourceState.FAILED, SourceState.TRIPPED, SourceState.EXHAUSTED)
MAX_REPLANS = 3  # a refused move is replanned around at once, this many times per tick


class ControlError(IbtError):
    """The controller cannot start or go on; the message says why in one line."""


@dataclass
class TickReport:
    time_s: float
    reasons: list[str] = field(default_factory=list)
    chosen: str | None = None  # "plan" or "stay" when a plan was made
    moves: int = 0
    refused: int = 0
    notes: list[str] = field(default_factory=list)


class Controller:
    """See the module docstring. `clock` stamps the journal (the simulator's time in a
    simulation); `fence` raises this controller's epoch on every tap at start (the
    fleet over the buses); `heartbeat` is the fleet's sign of life, sent every tick;
    `choose_plan` weighs a plan against staying put (planner.choose)."""

    def __init__(self, fleet: Fleet, store: ControlStore, policy: ControlPolicy | None = None, *,
                 jobs: Sequence[Job] = (), clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, leadership: Leadership | None = None,
                 fence: Callable[[], None] | None = None, heartbeat: Callable[[], None] | None = None,
                 on_step: StepHook | None = None, seed: int = 0,
                 choose_plan: Callable[[Problem, float], PlanChoice] = choose) -> None:
        self.fleet = fleet
        self.site = fleet.site
        self.policy = policy or ControlPolicy()
        p = self.policy
        self.clock = clock
        self.intents = Intents(store, clock)
        self.telemetry_store = TelemetryStore(store, Retention(p.raw_s, p.minute_s, p.hour_s))
        self.observer = LiveObserver(self.site, self.telemetry_store, tick_s=p.tick_s, horizon_s=p.horizon_s,
                                     refit_s=p.refit_s, reseason_s=p.reseason_s, jobs=jobs)
        self.alarms = RiskAlarms(p.risk_raise, p.risk_clear, release_s=p.plan_s, seed=seed)
        self.triggers = Triggers(p.plan_s, p.imbalance)
        self.executor = Executor(fleet, self.intents, arrivals_per_source=p.arrivals_per_source,
                                 stagger_s=p.stagger_s, clock=clock, sleep=sleep, on_step=on_step)
        self.leadership = leadership or SoleController()
        self._fence = fence
        self._choose = choose_plan  # the hysteresis rule; a benchmark puts a peer's rule here
        self._heartbeat = heartbeat
        self.fenced = ""  # why this controller moves nothing (empty: it may)
        self.quarantined: dict[str, str] = {}  # source -> why nothing moves onto it
        self.flagged: dict[str, str] = {}  # source -> why it is flagged for maintenance (emptied, kept empty)
        self.held: set[str] = set()  # racks an operator holds: never moved
        self._pinned: dict[str, float] = {}  # rack -> until when it stays put (a move of it was refused)
        self._last_known: dict[str, str | None] = {}
        self._states: dict[str, SourceState] = {}
        self._event_cursor = 0
        self._plan_id = 0
        self._replan = ""
        self._rebalance = False  # the next plan balances (lowers the worst utilisation) whatever the aim
        self._stranded_at_plan: set[str] = set()  # racks on emptied sources that could move, at the last look
        self._exposed: frozenset[str] = frozenset()  # racks the last plan left with no alternate
        self.last_choice: PlanChoice | None = None
        self.last_execution: Execution | None = None
        self.started = False

    # -- starting ------------------------------------------------------------------------------------

    def start(self) -> list[str]:
        """Take the site: leadership, fencing, the journal reconciled, the state rebuilt.
        The lines say what was found."""
        if not self.leadership.acquire():
            holder = getattr(self.leadership, "holder", lambda: "unknown")()
            raise ControlError(f"another controller holds the site (pid {holder}): this one starts nothing")
        notes = []
        if self._fence is not None:
            self._fence()
            notes.append("epoch raised on every tap: a controller of an older epoch is refused")
        telemetry = self.fleet.read_telemetry()
        for line in reconcile(self.intents, telemetry):
            notes.append(line)
            self.intents.decide("reconciled", line)
        now = telemetry.time_s
        fed = self.observer.rebuild(now)
        if fed:
            notes.append(f"forecasters rebuilt from {fed} stored buckets")
        self.quarantined = dict(self.intents.value("quarantined", {}))
        self.flagged = dict(self.intents.value("flagged", {}))
        self.held = set(self.intents.value("held", []))
        self.alarms.restore(self.intents.value("alarms", []), now)
        self._plan_id = int(self.intents.value("plan_id", 0))
        self.executor.rankings = {rack.id: self.fleet.alternates(rack.id) for rack in self.site.racks}
        self._event_cursor = self.fleet.read_events(0, 1).head
        self.started = True
        self.intents.decide("start", "controller started", notes=notes)
        return notes

    # -- operator requests ------------------------------------------------------------------------------

    def restore_source(self, source_id: str) -> None:
        """An operator returns a source to service: unquarantined, unflagged."""
        self.site.source(source_id)  # an unknown source is refused
        self.quarantined.pop(source_id, None)
        self.flagged.pop(source_id, None)
        self._save_flags()
        self.intents.decide("restored", "returned to service by an operator", source_id)
        self._replan = f"{source_id} restored by an operator"
        self._rebalance = True  # an operator who returns a source expects it to carry load again

    def maintain_source(self, source_id: str, why: str = "maintenance by an operator") -> None:
        """An operator takes a source out: emptied safely and kept empty."""
        self.site.source(source_id)
        self.flagged[source_id] = why
        self._save_flags()
        self.intents.decide("maintenance", why, source_id)
        self._replan = f"{source_id} taken out: {why}"

    def hold_rack(self, rack_id: str, hold: bool = True) -> None:
        """An operator takes a rack (never moved by the controller) or hands it back."""
        self.site.rack(rack_id)
        (self.held.add if hold else self.held.discard)(rack_id)
        self.intents.set_value("held", sorted(self.held))
        self.intents.decide("hold" if hold else "release", "by an operator", rack_id)

    # -- the tick ----------------------------------------------------------------------------------------

    def tick(self) -> TickReport:
        if not self.started:
            self.start()
        if not self.fenced and not self.leadership.renew():
            self._fenced_out("leadership lost")
        if self._heartbeat is not None and not self.fenced:
            self._heartbeat()
        telemetry = self.fleet.read_telemetry()
        statuses = dict(self.fleet.read_sources())
        report = TickReport(telemetry.time_s)
        if np.isnan(telemetry.draw_kw).all() and telemetry.rack_ids:
            self.observer.record(telemetry, statuses)  # stored as a gap
            report.notes.append("no rack answered: a gap in telemetry, nothing is concluded or moved")
            return report
        self._learn_losses(telemetry, statuses, report)
        self._remember(telemetry)
        self.observer.record(telemetry, statuses)
        risk = {s: self.observer.predicted_risk(s) for s in self.observer.source_ids}
        raised, cleared = self.alarms.update(telemetry.time_s, risk)
        for source in raised:
            why = f"fault risk {risk[source]:.2f} above {self.policy.risk_raise:g}: emptied ahead of its failure"
            self.flagged[source] = why
            self.intents.decide("risk_alarm", why, source, risk=risk[source])
        for source in cleared:
            self.intents.decide("risk_clear", f"fault risk {risk[source]:.2f} below {self.policy.risk_clear:g} "
                                              "long enough: alarm cleared (the maintenance flag stays)", source)
        if raised or cleared:
            self._save_flags()
        self._pinned = {r: until for r, until in self._pinned.items() if until > telemetry.time_s}
        problem = self._problem(telemetry, statuses)
        if problem is None:
            report.notes.append("the site cannot be planned now (see the decision log)")
            return report
        reasons = self.triggers.reasons(telemetry.time_s, problem, self._alternates(problem), statuses,
                                        [*raised, *cleared])
        if self._replan:
            reasons.append(self._replan)
            self._replan = ""
        stranded = self._stranded(telemetry)
        if stranded - self._stranded_at_plan:
            reasons.append("racks that can move are still on an emptied source: " + ", ".join(sorted(stranded)[:5]))
        self._stranded_at_plan = stranded
        report.reasons = reasons
        if reasons and not self.fenced:
            self._plan_and_execute(problem, telemetry, statuses, reasons, report)
        return report

    def _plan_and_execute(self, problem: Problem, telemetry: FleetTelemetry, statuses: dict[str, SourceStatus],
                          reasons: list[str], report: TickReport) -> None:
        if self._rebalance:
            problem = replace(problem, policy=replace(problem.policy, aim_u=0.0))
            self._rebalance = False
        for attempt in range(MAX_REPLANS):
            choice = self._choose(problem, self.policy.margin)
            plan = choice.plan if choice.chosen == "plan" else choice.stay
            self._plan_id += 1
            self.intents.set_value("plan_id", self._plan_id)
            why = "; ".join(reasons)
            self.intents.decide("plan", f"{choice.chosen}: {choice.reason}", None, plan=self._plan_id, triggers=reasons,
                                moves=[str(m) for m in plan.moves], coverage=plan.coverage,
                                worst_post=plan.worst_post, shed=list(plan.shed),
                                shortfalls=[str(s) for s in plan.shortfalls])
            for rack in plan.shed:
                self.intents.decide("shed", "opened: " + ("; ".join(str(s) for s in plan.shortfalls)
                                                          or "no source covers it"), rack)
            exposed = frozenset(plan.exposed)
            for rack in sorted(exposed - self._exposed):
                self.intents.decide("exposed", "left powered with no alternate, dropped by its tap only if its "
                                    "source is lost: " + ("; ".join(str(s) for s in plan.shortfalls)
                                                          or "no survivor has room for it"), rack)
            for rack in sorted(self._exposed - exposed):
                self.intents.decide("covered", "has an alternate again", rack)
            self._exposed = exposed
            report.chosen = choice.chosen
            self.last_choice = choice
            try:
                moves = evacuation_order(choice.problem, plan.moves, set(self.flagged))
                unread = {r for r in telemetry.rack_ids if math.isnan(float(telemetry.draw_kw[telemetry.index(r)]))}
                execution = self.executor.run(plan, why, self._plan_id, self._avoid(), moves, skip=unread)
            except FencingError as exc:
                self._fenced_out(str(exc))
                return
            self.last_execution = execution
            report.moves += len(execution.done)
            report.refused += len(execution.refused)
            self.triggers.planned(telemetry.time_s, problem, self._alternates(problem))
            for problem_text in execution.ranking_problems:
                self.intents.decide("ranking", problem_text)
            if not execution.replan:
                return
            for move, _ in execution.refused:
                self._pinned[move.rack] = telemetry.time_s + self.policy.plan_s
            for move in execution.unknown:
                self._pinned[move.rack] = telemetry.time_s + self.policy.plan_s
            reasons = [f"replan around: {execution.stopped}"]
            self.intents.decide("replan", execution.stopped, None, attempt=attempt + 1)
            telemetry = self.fleet.read_telemetry()
            self._remember(telemetry)
            rebuilt = self._problem(telemetry, statuses)
            if rebuilt is None:
                return
            problem = rebuilt

    # -- what the plan is made from -------------------------------------------------------------------

    def _problem(self, telemetry: FleetTelemetry, statuses: dict[str, SourceStatus]) -> Problem | None:
        view = self.observer.view()
        pinned = set(self._pinned) | self.held
        try:
            return build_problem(self.site, view, telemetry, statuses, self.policy,
                                 moved=self.intents.moves_since(telemetry.time_s - 7 * 86_400.0),
                                 unavailable=set(self.quarantined), alarmed=set(self.flagged), pinned=pinned,
                                 last_known=self._last_known)
        except AllocationError as exc:
            self.intents.decide("unplannable", str(exc))
            return None

    def _alternates(self, problem: Problem) -> IntArray:
        """Each rack's first alternate as its tap holds it for its current source (-1: none)."""
        index = {s: j for j, s in enumerate(problem.source_ids)}
        out = np.full(problem.n_racks, -1, dtype=np.int64)
        for r, rack in enumerate(problem.rack_ids):
            held = self.executor.rankings.get(rack)
            current = int(problem.current[r])
            if held is None or current < 0 or held.for_source != problem.source_ids[current] or not held.ranked:
                continue
            out[r] = index.get(held.ranked[0], -1)
        return out

    def _stranded(self, telemetry: FleetTelemetry) -> set[str]:
        """Racks read on a quarantined or flagged source that nothing holds in place: an
        evacuation that a blackout or a refusal interrupted resumes once they appear."""
        avoid = self._avoid()
        hold = set(self._pinned) | self.held
        return {r for r in telemetry.rack_ids if r not in hold and telemetry.active_source(r) in avoid
                and not math.isnan(float(telemetry.draw_kw[telemetry.index(r)]))}

    def _avoid(self) -> set[str]:
        return set(self.quarantined) | set(self.flagged)

    def _remember(self, telemetry: FleetTelemetry) -> None:
        read = ~np.isnan(telemetry.draw_kw)
        for r in np.flatnonzero(read).tolist():
            active = int(telemetry.active[r])
            self._last_known[telemetry.rack_ids[r]] = None if active < 0 else telemetry.source_ids[active]

    # -- losses ------------------------------------------------------------------------------------------

    def _learn_losses(self, telemetry: FleetTelemetry, statuses: dict[str, SourceStatus], report: TickReport) -> None:
        page = self.fleet.read_events(self._event_cursor)
        self._event_cursor = page.head
        lost = {e.source_id: e.kind.value for e in page.events if e.kind in LOSS_EVENTS and e.source_id}
        transfers = [e for e in page.events if e.kind == EventKind.TRANSFER]
        unpowered = [e for e in page.events if e.kind == EventKind.RACK_UNPOWERED]
        for source, status in statuses.items():
            before = self._states.get(source)
            if status.state in LOST_STATES and before not in LOST_STATES:
                lost.setdefault(source, f"state {status.state}")
        self._states = {s: st.state for s, st in statuses.items()}
        for source, how in sorted(lost.items()):
            if source in self.quarantined:
                continue
            on_it = [r for r in telemetry.rack_ids if telemetry.active_source(r) == source]
            dark = [r for r in telemetry.rack_ids if telemetry.active_source(r) is None
                    and not math.isnan(float(telemetry.draw_kw[telemetry.index(r)]))]
            self.quarantined[source] = f"lost ({how}): nothing moves onto it until an operator restores it"
            account = (f"{source} lost ({how}): {len(transfers)} racks transferred by their taps, {len(dark)} racks "
                       f"unpowered, {len(on_it)} still shown on it; quarantined, replanning")
            self.intents.decide("source_lost", account, source, transferred=[e.rack_id for e in transfers],
                                unpowered=dark, still_on=on_it)
            report.notes.append(account)
            self._replan = f"{source} lost"
        if lost:
            self._save_flags()
        if unpowered and not lost:
            self.intents.decide("racks_unpowered", f"{len(unpowered)} racks lost power",
                                racks=[e.rack_id for e in unpowered])
            self._replan = self._replan or "racks unpowered"

    def _save_flags(self) -> None:
        self.intents.set_value("quarantined", self.quarantined)
        self.intents.set_value("flagged", self.flagged)
        self.intents.set_value("alarms", sorted(self.alarms.raised))

    def _fenced_out(self, why: str) -> None:
        if not self.fenced:
            self.fenced = why
            self.intents.decide("fenced", f"{why}: this controller moves no relay again")
