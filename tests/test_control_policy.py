"""The controller's policy file (host/control/policy.py): defaults, every field read, and
every wrong field named with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.control.policy import ControlPolicy, PolicyError, load_policy, parse_policy
from host.model.site import Priority


def test_an_empty_file_is_the_default_policy() -> None:
    assert parse_policy("") == ControlPolicy()
    assert load_policy(None) == ControlPolicy()


def test_every_field_is_read_and_passed_to_the_allocator() -> None:
    policy = parse_policy("""
[limits]
ceiling = 0.8
overload_allowance = 0.2
[moves]
per_plan = 7
dwell_s = 600
per_week = 5
per_source = 3
stagger_s = 1.5
[risk]
raise = 0.6
clear = 0.2
[timing]
tick_s = 10
plan_s = 900
horizon_s = 1800
refit_s = 7200
reseason_s = 300
[plan]
margin = 0.05
imbalance = 0.4
thd_limit_pct = 4
[shedding]
allowed = false
classes = []
[telemetry]
raw_s = 3600
minute_s = 86400
hour_s = 864000
""")
    assert (policy.ceiling, policy.moves_per_plan, policy.arrivals_per_source, policy.risk_clear) == (0.8, 7, 3, 0.2)
    assert (policy.tick_s, policy.plan_s, policy.margin, policy.raw_s) == (10.0, 900.0, 0.05, 3600.0)
    allocation = policy.allocation()
    assert (allocation.ceiling, allocation.overload_allowance, allocation.move_budget) == (0.8, 0.2, 7)
    assert (allocation.min_dwell_s, allocation.max_moves_per_week, allocation.risk_threshold) == (600.0, 5, 0.6)
    assert allocation.thd_limit_pct == 4.0 and allocation.allow_shedding is False
    assert not policy.may_shed(Priority.DEFERRABLE)


@pytest.mark.parametrize(("text", "message"), [
    ("[limits]\nceiling = 1.5\n", r"limits.ceiling \(line 2\): must be <= 1"),
    ("[limits]\nceilling = 0.8\n", r"limits.ceilling \(line 2\): unknown field \(did you mean 'ceiling'\?\)"),
    ("[moves]\nper_plan = 2.5\n", r"moves.per_plan \(line 2\): must be an integer"),
    ("[risk]\nraise = 0.4\nclear = 0.4\n", r"risk.clear.*must be below risk.raise \(0.4\): the alarm needs hysteresis"),
    ("[timing]\ntick_s = 0\n", r"timing.tick_s \(line 2\): must be > 0"),
    ("[timing]\ntick_s = 120\nplan_s = 60\n", r"timing.plan_s.*must be at least timing.tick_s"),
    ("[shedding]\nclasses = [\"critical\"]\n", r"shedding.classes.*critical racks are never shed"),
    ("[shedding]\nclasses = [\"all\"]\n", r"shedding.classes.*must be a list of critical, normal, deferrable"),
    ("[shedding]\nallowed = \"yes\"\n", r"shedding.allowed.*must be true or false"),
    ("[nonsense]\n", r"nonsense \(line 1\): unknown field \(known: limits, moves"),
    ("[shedding]\nclasses = [\"normal\"]\n", r"shedding.classes.*the allocator opens deferrable racks only"),
    ("[limits\n", r"TOML syntax"),
])
def test_a_wrong_field_is_named(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(text, "site.policy.toml")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[limits]\nceiling = 2\n[moves]\nper_week = -1\n")
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    assert len(refused.value.problems) == 2 and str(refused.value).endswith("(and 1 more)")
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "missing.toml")
