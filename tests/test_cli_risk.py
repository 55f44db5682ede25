"""`ibt risk`: the sources of a scenario ranked by predicted fault risk, with reasons;
a scenario it cannot read is refused with the field that is wrong."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from host.cli.main import cli
from host.model.errors import EXIT_CONFIGURATION


def test_risk_ranks_the_degrading_sources_first() -> None:
    result = CliRunner().invoke(cli, ["risk", "--days", "6", "--json"])
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.output)
    top = {r["source"]: r for r in ranked[:3]}
    # fault_families.toml: thermal drift on ups-1, capacitor ageing on ups-2, bearing wear on gen-1
    assert set(top) == {"ups-1", "ups-2", "gen-1"}
    assert top["ups-1"]["driver"] == "temperature_c" and top["gen-1"]["driver"] == "kurtosis"
    assert all(r["alarm"] for r in top.values())
    healthy = next(r for r in ranked if r["source"] == "ups-3")  # dropout and recalibration only
    assert not healthy["alarm"] and healthy["reason"].startswith("healthy")


def test_a_broken_scenario_is_refused_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nname = 5\n")
    result = CliRunner().invoke(cli, ["risk", "--scenario", str(bad)])
    assert result.exit_code == EXIT_CONFIGURATION and isinstance(result.exception, SystemExit)  # no traceback
    assert "scenario.name (line 2): must be a string" in result.output


def test_days_past_the_end_of_the_scenario_are_refused() -> None:
    result = CliRunner().invoke(cli, ["risk", "--days", "60"])
    assert result.exit_code == EXIT_CONFIGURATION and isinstance(result.exception, SystemExit)
    assert "--days 60 runs past the end of scenario" in result.output and "lasts" in result.output
