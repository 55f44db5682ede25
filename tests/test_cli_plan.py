"""`ibt plan`: the allocation plan of a scenario's site, shown and not executed; its JSON
is complete and consistent, and bad input gets a clear error and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from host.cli.main import cli
from host.reports.plan import build_problem
from host.sim.site.observe import observe_scenario
from host.sim.site.scenario import load_scenario

TINY = """
[scenario]
name = "plan-tiny"
seed = 5
step_s = 10
duration_s = 7200

[loads]
profile = "real"
utilisation = [0.5, 0.7]

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 60

[[sources]]
id = "ups-2"
kind = "ups"
capacity_kw = 60

[[sources]]
id = "bat-1"
kind = "battery"
capacity_kw = 50
energy_kwh = 40

[[racks]]
group = "row"
count = 10
primary = ["ups-1"]
inputs = 3
sources = ["ups-1", "ups-2", "bat-1"]
rated_kw = [3, 8]
"""

FAILING = """
[[events]]
at_s = 600
action = "fail"
source = "ups-2"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _plan(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def _assert_consistent(data: dict[str, Any], racks: int, budget: int) -> None:
    sources = set(data["util_before"])
    assert sources == set(data["util_after"]) == set(data["covered"]) == {"ups-1", "ups-2", "bat-1"}
    assert data["racks"] == racks == len(data["assignment"])
    assert all(target in sources for target in data["assignment"].values())  # every rack assigned
    assert 0.0 <= data["coverage"] <= 1.0
    assert data["coverage"] == sum(data["covered"].values()) / len(sources)
    assert data["voluntary_moves"] <= data["move_budget"] == budget
    for move in data["moves"]:
        if not move["staging"]:
            assert data["assignment"][move["rack"]] == move["to"]
    for key in ("worst_post", "lp_bound", "gap", "binding", "explanation", "alternates", "status", "draw"):
        assert key in data
    assert data["binding"]["text"]


def test_the_exact_plan_is_complete_and_covers_n1(tiny: Path) -> None:
    data = _plan("--scenario", str(tiny), "--at-s", "300", "--budget", "4")
    assert data["method"] == "auto" and data["solver"] == "milp" and data["status"] == "optimal"
    _assert_consistent(data, racks=10, budget=4)
    assert data["coverage"] == 1.0 and data["explanation"] == []
    assert data["util_before"]["ups-2"] == 0.0 and data["util_after"]["ups-2"] > 0  # all on ups-1 before
    assert data["lp_bound"] is not None and data["lp_bound"] <= data["worst_post"] + 1e-6
    assert data["gap"] is not None and data["gap"] >= -1e-6
    assert set(data["alternates"]) == set(data["assignment"])
    for rack, ranked in data["alternates"].items():
        assert ranked and ranked[0] != data["assignment"][rack]


def test_the_heuristic_keeps_to_a_zero_budget(tiny: Path) -> None:
    data = _plan("--scenario", str(tiny), "--at-s", "300", "--method", "heuristic", "--budget", "0")
    assert data["solver"] == "heuristic"
    _assert_consistent(data, racks=10, budget=0)
    assert data["moves"] == [] and set(data["assignment"].values()) == {"ups-1"}


def test_a_lost_source_is_emptied_or_explained(tmp_path: Path) -> None:
    path = tmp_path / "failing.toml"
    path.write_text(TINY + FAILING)
    data = _plan("--scenario", str(path), "--at-s", "1200")
    assert data["sources_down"] == ["ups-2"]
    _assert_consistent(data, racks=10, budget=50)
    assert "ups-2" not in data["assignment"].values()
    if data["coverage"] < 1.0:
        assert data["explanation"]


def test_the_text_report_says_it_is_not_executed(tiny: Path) -> None:
    result = CliRunner().invoke(cli, ["plan", "--scenario", str(tiny), "--at-s", "300"])
    assert result.exit_code == 0, result.output
    assert "plan-tiny" in result.output and "N-1 coverage" in result.output
    assert "binding:" in result.output and "(not executed)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "no-such-scenario.toml"], "cannot read scenario"),
        (["--method", "fastest"], "Invalid value for '--method'"),
        (["--at-s", "-5"], "--at-s must be within the scenario"),
        (["--budget", "-1"], "Invalid value for '--budget'"),
    ],
)
def test_bad_input_is_refused_clearly(tiny: Path, args: list[str], message: str) -> None:
    scenario = [] if "--scenario" in args else ["--scenario", str(tiny)]
    result = CliRunner().invoke(cli, ["plan", *scenario, *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_broken_scenario_is_refused_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nname = 5\n")
    result = CliRunner().invoke(cli, ["plan", "--scenario", str(bad)])
    assert result.exit_code != 0
    assert "scenario.name (line 2): must be a string" in result.output


AGEING = """
[[conditions]]
family = "battery_ageing"
source = "bat-1"
start_s = 0
end_s = 3600
magnitude = 0.5
"""


def test_an_aged_battery_is_planned_with_the_energy_it_stores_not_its_nameplate(tmp_path: Path) -> None:
    """Half faded and fully charged, bat-1 stores 20 of its nameplate 40 kWh; its state of
    charge (of the faded energy) is 1.0, so charge x nameplate would claim 40."""
    path = tmp_path / "aged.toml"
    path.write_text(TINY + AGEING)
    simulator, observer = observe_scenario(load_scenario(path), 3600)
    status = simulator.read_sources()["bat-1"]
    assert status.state_of_charge == pytest.approx(1.0) and status.stored_kwh == pytest.approx(20.0, rel=0.01)
    problem, _ = build_problem(simulator, observer.inputs())
    assert problem.energy_kwh[problem.source_ids.index("bat-1")] == pytest.approx(status.stored_kwh)


def test_the_heuristic_says_its_shortfall_is_not_the_least_and_bounds_the_least(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text(TINY.replace("capacity_kw = 60", "capacity_kw = 12"))
    data = _plan("--scenario", str(path), "--at-s", "300", "--method", "heuristic")
    assert data["coverage"] < 1.0 and data["shortfall_kw"] > 0
    assert data["shortfall_bound_kw"] is not None and 0 < data["shortfall_bound_kw"] <= data["shortfall_kw"] + 1e-6
    line = [e for e in data["explanation"] if e.startswith("load to shed or cap")]
    assert line == [f"load to shed or cap: {data['shortfall_kw']:.1f} kW in this plan, at least "
                    f"{data['shortfall_bound_kw']:.1f} kW on any plan (LP relaxation); "
                    "`--method exact` finds the least"]  # fmt: skip
    exact = _plan("--scenario", str(path), "--at-s", "300", "--method", "exact")
    assert exact["shortfall_bound_kw"] is None
    assert exact["shortfall_kw"] >= data["shortfall_bound_kw"] - 1e-6  # the bound holds for the exact plan too
    assert f"least load to shed or cap: {exact['shortfall_kw']:.1f} kW" in exact["explanation"]


def test_the_readmes_hall_week_example_the_ups_failing_on_day_5_is_at_risk_and_emptied() -> None:
    # README, `ibt plan`: on hall_week at 410000 s (day 4.7) ups-3, whose thermal drift fails it
    # on day 5, is at risk 0.72 and the plan empties it; no other source is near its alarm
    hall_week = Path(__file__).resolve().parent.parent / "scenarios" / "hall_week.toml"
    report = _plan("--scenario", str(hall_week), "--at-s", "410000")
    risk = report["risk"]
    assert risk["ups-3"] == pytest.approx(0.72, abs=0.01)
    assert max(p for source, p in risk.items() if source != "ups-3") < 0.05
    assert report["util_before"]["ups-3"] > 0 and report["util_after"]["ups-3"] == 0
    assert not any(move["to"] == "ups-3" for move in report["moves"])
