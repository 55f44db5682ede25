"""The predictive controller (host/control/) closing the loop on the site simulator:
losses covered and quarantined, a predicted fault emptied ahead of time, hysteresis, a
refused move replanned around, fencing, leadership, and a restart that loses and
duplicates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.control.controller import ControlError, Controller
from host.control.leadership import LocalLock
from host.control.policy import ControlPolicy
from host.model.errors import FencingError
from host.model.fleet import CommandResult, Refusal, Refused
from host.sim.site.scenario import parse_scenario
from host.sim.site.simulator import SiteSimulator
from host.store.control_store import ControlStore
from host.store.intents import IntentState

# 24 racks on two UPS modules, a battery string beside them; ups-1 fails at 20 minutes
# and comes back at 50 (its repair: the controller must not trust it until restored).
ROW = """
[scenario]
name = "row"
seed = 5
step_s = 60
duration_s = 86400

[loads]
profile = "flat"
utilisation = [0.5, 0.6]
noise = 0.0
common_noise = 0.0
bursts_per_day = 0.0

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 200

[[sources]]
id = "ups-2"
kind = "ups"
capacity_kw = 200

[[sources]]
id = "bat-1"
kind = "battery"
capacity_kw = 150
energy_kwh = 400

[[racks]]
group = "row"
count = 24
priority = { critical = 0.25, normal = 0.5, deferrable = 0.25 }
primary = ["ups-1", "ups-2"]
inputs = 3
sources = ["ups-1", "ups-2", "bat-1"]
rated_kw = [4, 10]
"""

# every rack starts on ups-1, which carries more than its ceiling: the first plan must move some
CROWDED = ROW.replace('primary = ["ups-1", "ups-2"]', 'primary = ["ups-1"]').replace(
    'id = "ups-1"\nkind = "ups"\ncapacity_kw = 200', 'id = "ups-1"\nkind = "ups"\ncapacity_kw = 110')

LOSS = """
[[events]]
at_s = 1200
action = "fail"
source = "ups-1"

[[events]]
at_s = 3000
action = "restore"
source = "ups-1"
"""


def _controller(text: str, store: ControlStore | None = None, **policy: object) -> tuple[SiteSimulator, Controller]:
    scenario = parse_scenario(text)
    sim = SiteSimulator.from_scenario(scenario)
    chosen = ControlPolicy(tick_s=scenario.step_s, **policy)  # type: ignore[arg-type]
    controller = Controller(sim, store or ControlStore.open(None), chosen, jobs=scenario.jobs,
                            clock=lambda: sim.time_s, sleep=lambda s: None)
    return sim, controller


def _run(sim: SiteSimulator, controller: Controller, until_s: float) -> None:
    while sim.time_s < until_s:
        controller.tick()
        sim.step()


def test_a_source_loss_is_ridden_through_and_the_source_quarantined_until_restored() -> None:
    sim, controller = _controller(ROW + LOSS)
    _run(sim, controller, 1200)
    assert all(rank.ranked for rank in controller.executor.rankings.values()), "every tap holds a ranking"
    _run(sim, controller, 2400)
    assert sim.stats().racks_unpowered == 0 and sum(sim.stats().unserved_kwh.values()) == 0.0
    assert "ups-1" in controller.quarantined
    lost = controller.intents.decisions(kind="source_lost")
    assert len(lost) == 1 and lost[0].subject == "ups-1" and "quarantined" in lost[0].reason
    _run(sim, controller, 4 * 3600)  # ups-1 is back at 50 minutes: nothing goes onto it unasked
    telemetry = sim.read_telemetry()
    assert not [r for r in telemetry.rack_ids if telemetry.active_source(r) == "ups-1"]
    assert all("ups-1" not in rank.ranked for rank in controller.executor.rankings.values())
    controller.restore_source("ups-1")
    _run(sim, controller, 5 * 3600)
    telemetry = sim.read_telemetry()
    assert [r for r in telemetry.rack_ids if telemetry.active_source(r) == "ups-1"], "in use again once restored"


def test_a_plan_that_gains_less_than_the_margin_is_not_made_and_nothing_oscillates() -> None:
    sim, controller = _controller(ROW)
    _run(sim, controller, 6 * 3600)
    plans = controller.intents.decisions(kind="plan")
    assert len(plans) >= 6, "a plan every hour"
    assert all(p.reason.startswith(("stay", "plan: no voluntary")) for p in plans[1:]), [p.reason for p in plans]
    moved = controller.intents.moves_since(0.0)
    assert all(len(times) == 1 for times in moved.values()), "no rack moved twice"


class RefusingFleet(SiteSimulator):
    """The simulator, whose first `refuse` moves are refused as a busy tap would."""

    refuse = 1
    fenced_after: int | None = None
    moves = 0

    def move(self, rack_id: str, expected: str | None, target: str | None) -> CommandResult:
        self.moves += 1
        if self.fenced_after is not None and self.moves > self.fenced_after:
            raise FencingError("STALE_EPOCH: another controller owns the site")
        if self.refuse > 0:
            self.refuse -= 1
            return Refused(Refusal.BUSY, "a transfer is already in progress")
        return super().move(rack_id, expected, target)


def _refusing(text: str) -> tuple[RefusingFleet, Controller]:
    scenario = parse_scenario(text)
    sim = RefusingFleet.from_scenario(scenario)
    assert isinstance(sim, RefusingFleet)
    controller = Controller(sim, ControlStore.open(None), ControlPolicy(tick_s=60.0), clock=lambda: sim.time_s,
                            sleep=lambda s: None)
    return sim, controller


def test_a_refused_move_is_replanned_around_at_once() -> None:
    _, controller = _refusing(CROWDED)
    report = controller.tick()
    assert report.refused == 1 and report.moves > 0
    refused = [i for i in controller.intents.recent(0.0) if i.state == IntentState.REFUSED]
    assert len(refused) == 1 and "busy" in (refused[0].outcome or "")
    assert controller.intents.decisions(kind="replan"), "the rest was replanned"
    moved = controller.intents.moves_since(0.0)
    assert refused[0].rack not in moved, "the refused rack stays put until its pin expires"


def test_a_fenced_controller_moves_nothing_again() -> None:
    sim, controller = _refusing(CROWDED)
    sim.refuse, sim.fenced_after = 0, 2
    controller.tick()
    assert controller.fenced and "moves no relay" in controller.intents.decisions(kind="fenced")[0].reason
    calls = sim.moves
    controller.restore_source("ups-2")  # would make it plan again
    for _ in range(5):
        sim.step()
        controller.tick()
    assert sim.moves == calls


def test_leadership_is_one_controller_at_a_time(tmp_path: Path) -> None:
    held = LocalLock(tmp_path / "control.lock")
    assert held.acquire()
    scenario = parse_scenario(ROW)
    sim = SiteSimulator.from_scenario(scenario)
    second = Controller(sim, ControlStore.open(None), ControlPolicy(), leadership=LocalLock(tmp_path / "control.lock"))
    with pytest.raises(ControlError, match=r"another controller holds the site \(pid \d+\)"):
        second.start()
    held.release()
    assert second.start() is not None


def test_a_restart_reconciles_the_journal_and_rebuilds_from_the_store(tmp_path: Path) -> None:
    path = tmp_path / "control.db"
    sim, first = _controller(ROW + LOSS, ControlStore.open(path))
    _run(sim, first, 2400)
    assert first.observer.forecaster is not None and "ups-1" in first.quarantined
    telemetry = sim.read_telemetry()
    rack = next(r for r in telemetry.rack_ids if telemetry.active_source(r) == "ups-2")
    other = next(r for r in telemetry.rack_ids if telemetry.active_source(r) == "ups-2" and r != rack)
    # a crash between journalling and asking, and one between asking and settling
    never_sent = first.intents.intend(other, "ups-2", "bat-1", "test: crashed before the frame left")
    made = first.intents.intend(rack, "ups-2", "bat-1", "test: crashed before the answer was journalled")
    assert sim.move(rack, "ups-2", "bat-1").ok
    del first
    second = Controller(sim, ControlStore.open(path), ControlPolicy(tick_s=60.0), clock=lambda: sim.time_s,
                        sleep=lambda s: None)
    notes = second.start()
    states = {i.id: i.state for i in second.intents.recent(0.0)}
    assert states[made] == IntentState.DONE and states[never_sent] == IntentState.ABANDONED
    assert any("forecasters rebuilt" in n for n in notes) and second.observer.forecaster is not None
    assert "ups-1" in second.quarantined, "the quarantine survives the restart"
    assert second.intents.unfinished() == []


DRIFT = ROW.replace("step_s = 60", "step_s = 300").replace("duration_s = 86400", "duration_s = 432000") + """
[[conditions]]
family = "thermal_drift"  # ups-1 heats up from day 1 and fails on day 4
source = "ups-1"
start_s = 86400
end_s = 345600
"""


def test_a_predicted_fault_is_emptied_ahead_of_time_deferrable_racks_first() -> None:
    sim, controller = _controller(DRIFT)
    _run(sim, controller, 3.5 * 86400)
    (alarm,) = controller.intents.decisions(kind="risk_alarm")
    assert alarm.subject == "ups-1" and alarm.time < 3.0 * 86400, "raised a day or more before the failure"
    assert "ups-1" in controller.flagged
    telemetry = sim.read_telemetry()
    assert not [r for r in telemetry.rack_ids if telemetry.active_source(r) == "ups-1"], "emptied before it fails"
    leaving = [i for i in controller.intents.recent(alarm.time) if i.source == "ups-1" and i.state == IntentState.DONE]
    order = {"deferrable": 0, "normal": 1, "critical": 2}
    ranks = [order[sim.site.rack(i.rack).priority.value] for i in leaving]
    assert leaving and ranks == sorted(ranks), "deferrable racks first, then normal, then critical"
    _run(sim, controller, 4.5 * 86400)
    assert sum(sim.stats().unserved_kwh.values()) == 0.0 and sim.stats().racks_unpowered == 0
