"""The allocation's inputs from a site followed step by step: conservative draws from
the forecaster's P95 with scheduled jobs, ratings for unpowered racks, risk 1 for a
source that is down."""

from __future__ import annotations

import numpy as np
import pytest

from host.allocate.plan_inputs import SiteObserver
from host.sim.site.observe import observe_scenario
from host.sim.site.scenario import parse_scenario
from host.sim.site.simulator import SiteSimulator

SCENARIO = """
[scenario]
name = "inputs"
seed = 5
step_s = 60
duration_s = 172800

[loads]
profile = "real"
utilisation = [0.4, 0.6]

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 400

[[sources]]
id = "ups-2"
kind = "ups"
capacity_kw = 400

[[racks]]
group = "row"
count = 12
primary = ["ups-1", "ups-2"]
inputs = 2
rated_kw = [6, 12]

[[jobs]]
start_s = 97200  # day 2, 03:00 to 05:00
duration_s = 7200
fraction = 0.3
priority = "normal"
share = 1.0
"""


def observed(until_s: float, text: str = SCENARIO) -> SiteObserver:
    return observe_scenario(parse_scenario(text, "inputs"), until_s)[1]


def test_draws_are_upper_quantiles_within_the_rating() -> None:
    observer = observed(86_400.0 + 600.0)  # a day and a few minutes: the daily seasonal naive at least
    inputs = observer.inputs()
    rated = observer.rated_kw
    assert inputs.method == "seasonal regression + AR" or inputs.method.startswith("seasonal naive")
    assert (inputs.draw_kw >= inputs.draw_now_kw - 1e-9).mean() > 0.9  # an upper quantile, above the draw now
    assert (inputs.draw_kw <= rated + 1e-9).all()
    assert inputs.up == (True, True) and (inputs.risk < 0.5).all()


def test_a_scheduled_job_in_the_horizon_raises_its_racks_draw() -> None:
    observer = observed(97_200.0 - 1800.0)  # the job starts half an hour from now
    hour_with, short_with = observer.inputs(horizon_s=3600.0), observer.inputs(horizon_s=600.0)
    observer.jobs = ()
    hour_without, short_without = observer.inputs(horizon_s=3600.0), observer.inputs(horizon_s=600.0)
    extra = hour_with.draw_kw - hour_without.draw_kw
    capped = hour_with.draw_kw >= observer.rated_kw - 1e-9
    # the job adds 30% of the rating while it runs; the hour's largest P95 without it may
    # lie elsewhere in the hour, a little above the P95 under the job
    assert (extra[~capped] > 0.2 * observer.rated_kw[~capped]).all()
    np.testing.assert_allclose(short_with.draw_kw, short_without.draw_kw)  # ten minutes end before the job


def test_a_lost_source_has_risk_one_and_its_unpowered_racks_count_at_their_rating() -> None:
    text = SCENARIO + '\n[[events]]\nat_s = 3600\naction = "fail"\nsource = "ups-1"\n'
    observer = observed(7200.0, text)
    inputs = observer.inputs()
    assert inputs.up == (False, True)
    assert inputs.risk[0] == 1.0
    unpowered = np.isnan(inputs.draw_now_kw)
    assert unpowered.any(), "the scenario's racks on ups-1 have no alternates and stay unpowered"
    np.testing.assert_allclose(inputs.draw_kw[unpowered], observer.rated_kw[unpowered])


def test_inputs_need_a_reading_and_every_rack_a_rating() -> None:
    scenario = parse_scenario(SCENARIO, "inputs")
    simulator = SiteSimulator.from_scenario(scenario)
    with pytest.raises(ValueError, match="no rating for racks"):
        SiteObserver(simulator, {}, 60.0)
    observer = SiteObserver(simulator, {r.id: r.rated_kw for r in scenario.site.racks}, 60.0)
    with pytest.raises(ValueError, match="no readings yet"):
        observer.inputs()
