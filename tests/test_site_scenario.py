"""Scenario files: the examples load and run; a scenario with errors is refused with
every problem named by field path and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from host.model.site import Priority, SourceKind
from host.model.toml_lines import key_lines, line_of
from host.sim.site.conditions import Family
from host.sim.site.scenario import ScenarioError, load_scenario, parse_scenario
from host.sim.site.simulator import SiteSimulator

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

GOOD = """\
[scenario]
name = "tiny"
seed = 5
step_s = 30

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 100

[[sources]]
id = "bat-1"
kind = "battery"
capacity_kw = 50
energy_kwh = 20

[[sources]]
id = "gen-1"
kind = "generator"
capacity_kw = 100

[[racks]]
group = "a"
count = 20
priority = { critical = 0.25, deferrable = 0.75 }
primary = ["ups-1", "gen-1"]
inputs = 3
rated_kw = [2, 8]

[[racks]]
group = "b"
count = 4
sources = ["ups-1", "gen-1"]

[[jobs]]
start_s = 60
duration_s = 120
every_s = 600
fraction = 0.5
priority = "deferrable"
share = 0.5

[[events]]
at_s = 90
action = "load_step"
group = "b"
factor = 2.0

[[conditions]]
family = "battery_ageing"
source = "bat-1"
start_s = 0
end_s = 1000
"""

BAD = """\
[scenario]
step_s = -1
dration_s = 5

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 100

[[sources]]
id = "ups-2"
kind = "ups"
capcity_kw = 100

[[sources]]
id = "bat-1"
kind = "battery"
capacity_kw = -5
energy_kwh = 10

[[racks]]
group = "a"
count = 10
inputs = 5
sources = ["ups-1", "gen-9"]

[[events]]
at_s = 10
action = "explode"
source = "ups-1"

[[events]]
at_s = 10
action = "fail"
source = "ups-7"

[[conditions]]
family = "bearing_wear"
source = "bat-1"
start_s = 100
end_s = 50

[[conditions]]
family = "sensor_dropout"
source = "ups-1"
start_s = 0
end_s = 10
signal = "smell"
"""


def test_a_scenario_builds_its_site_and_resolves_its_selections() -> None:
    scenario = parse_scenario(GOOD)
    site = scenario.site
    assert (scenario.name, scenario.seed, scenario.step_s, scenario.duration_s) == ("tiny", 5, 30.0, 7 * 86_400.0)
    assert len(site.racks) == 24 and {r.group for r in site.racks} == {"a", "b"}
    group_a = [r for r in site.racks if r.group == "a"]
    assert sum(r.priority == Priority.CRITICAL for r in group_a) == 5
    assert all(2.0 <= r.rated_kw <= 8.0 for r in group_a)
    assert all(site.reachable(r.id)[0] in ("ups-1", "gen-1") and len(site.reachable(r.id)) == 3 for r in group_a)
    assert all(set(site.reachable(r.id)) == {"ups-1", "gen-1"} for r in site.racks if r.group == "b")
    (job,) = scenario.jobs
    assert len(job.racks) == round(0.5 * 15) and all(site.racks[i].priority == Priority.DEFERRABLE for i in job.racks)
    (step,) = scenario.load_steps
    assert [site.racks[i].group for i in step.racks] == ["b"] * 4 and step.factor == 2.0 and step.end_s is None
    (condition,) = scenario.conditions
    assert condition.family == Family.BATTERY_AGEING and condition.strength == 0.4
    assert site.source("bat-1").kind == SourceKind.BATTERY


def test_a_scenario_is_built_the_same_way_for_the_same_seed() -> None:
    one, two = parse_scenario(GOOD), parse_scenario(GOOD)
    assert one.site == two.site
    assert np.array_equal(one.jobs[0].racks, two.jobs[0].racks)
    other = parse_scenario(GOOD.replace("seed = 5", "seed = 6"))
    assert other.site != one.site


def test_a_scenario_with_errors_names_every_field_and_line() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(BAD, "bad.toml")
    problems = caught.value.problems
    expected = [
        "scenario.step_s (line 2): must be > 0 (got -1)",
        "scenario.dration_s (line 3): unknown field (did you mean 'duration_s'?)",
        "sources[1].capcity_kw (line 13): unknown field (did you mean 'capacity_kw'?)",
        "sources[1].capacity_kw (line 10): is required",
        "sources[2].capacity_kw (line 18): must be > 0 (got -5)",
        "racks[0].inputs (line 24): must be 2 to 4 (got 5)",
        "racks[0].sources (line 25): 'gen-9' is not a source of the scenario",
        "events[0].action (line 29): must be one of fail, restore, load_step (got 'explode')",
        "events[1].source (line 35): 'ups-7' is not a source of the scenario",
        "conditions[0].source (line 39): bearing_wear applies to ups, generator sources ('bat-1' is battery)",
        "conditions[0].end_s (line 41): must be after start_s (100)",
        "conditions[1].signal (line 48): must be one of temperature_c",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    assert str(caught.value).startswith("bad.toml: ")


def test_a_toml_syntax_error_gives_its_line() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("[scenario]\nseed = = 3\n", "broken.toml")
    assert "line 2" in str(caught.value) and "TOML syntax" in str(caught.value)


def test_missing_sections_are_named() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("[scenario]\nname = 'empty'\n[bogus]\n")
    problems = caught.value.problems
    assert "sources: at least one [[sources]] is required" in problems
    assert "racks: at least one [[racks]] group is required" in problems
    assert any(p.startswith("bogus (line 3): unknown field") for p in problems)


def test_family_rules_are_checked() -> None:
    base = GOOD.split("[[conditions]]")[0]
    cases = {
        '[[conditions]]\nfamily = "thermal_drift"\nsource = "ups-1"\nstart_s = 5\n': "conditions[0].end_s",
        '[[conditions]]\nfamily = "recalibration_jump"\nsource = "ups-1"\nstart_s = 5\n': "conditions[0].signal",
        '[[conditions]]\nfamily = "thermal_drift"\nstart_s = 5\nend_s = 9\n': "conditions[0].source",
        '[[conditions]]\nfamily = "maintenance_test"\nsource = "ups-1"\nstart_s = 5\nend_s = 9\n':
            "conditions[0].source",
        '[[conditions]]\nfamily = "hot_afternoon"\nstart_s = 5\nend_s = 9\nsignal = "thd_pct"\n':
            "conditions[0].signal",
    }
    for text, path in cases.items():
        with pytest.raises(ScenarioError) as caught:
            parse_scenario(base + text)
        assert any(p.startswith(path) for p in caught.value.problems), (text, caught.value.problems)
    hot = parse_scenario(base + '[[conditions]]\nfamily = "hot_afternoon"\nstart_s = 5\nend_s = 9\n')
    assert hot.conditions[0].source is None


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_scenario_loads_and_runs(path: Path) -> None:
    scenario = load_scenario(path)
    sim = SiteSimulator.from_scenario(scenario)
    sim.step(20)
    assert sim.time_s == pytest.approx(20 * scenario.step_s)
    assert len(sim.read_telemetry().rack_ids) == len(scenario.site.racks)


def test_key_lines_map_paths_to_lines() -> None:
    lines = key_lines(GOOD)
    assert lines["scenario.seed"] == 3
    assert lines["sources[1]"] == 11 and lines["sources[1].energy_kwh"] == 15
    assert line_of("racks[0].priority.critical", lines) == lines["racks[0].priority"] == 25
    assert line_of("nowhere.at.all", lines) is None
