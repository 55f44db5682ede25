"""A scenario run on the site simulator, its fleet read at every step by the plan inputs'
observer (host/allocate/plan_inputs.py): what `ibt plan` and the tests plan from."""

from __future__ import annotations

from collections.abc import Callable

from host.allocate.plan_inputs import SiteObserver
from host.sim.site.scenario import Scenario
from host.sim.site.simulator import SiteSimulator


def observe_scenario(scenario: Scenario, until_s: float, on_step: Callable[[float], None] = lambda time_s: None
                     ) -> tuple[SiteSimulator, SiteObserver]:
    """The scenario run on the site simulator to `until_s`, its fleet read at every step;
    `on_step` gets the simulated time after each (for a progress bar)."""
    simulator = SiteSimulator.from_scenario(scenario)
    observer = SiteObserver(simulator, {r.id: r.rated_kw for r in scenario.site.racks}, scenario.step_s,
                            scenario.jobs)
    observer.record()
    while simulator.time_s + 1e-9 < until_s:
        simulator.step()
        observer.record()
        on_step(simulator.time_s)
    return simulator, observer
