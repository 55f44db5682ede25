"""`ibt forecast`: a rack's or source's forecast against the simulator's actuals, as a
table, JSON or a PNG; requests that do not fit the scenario are refused with a clear
message. A tiny scenario (20 racks, 3 days at 60 s) keeps every run to about a second."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from host.cli.main import cli, main
from host.model.errors import EXIT_CONFIGURATION
from host.reports import forecast as forecast_report

TINY = """
[scenario]
name = "tiny"
seed = 3
step_s = 60
duration_s = 259200  # 3 days

[loads]
profile = "real"

[[sources]]
id = "ups-a"
kind = "ups"
capacity_kw = 400

[[sources]]
id = "ups-b"
kind = "ups"
capacity_kw = 400

[[racks]]
group = "row"
count = 20
inputs = 2
rated_kw = [2, 20]

[[jobs]]
start_s = 7200  # every night 02:00 to 04:00, on every rack
duration_s = 7200
every_s = 86400
fraction = 0.3
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("scenario") / "tiny.toml"
    path.write_text(TINY)
    return str(path)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["forecast", *args])


def test_json_has_the_forecast_against_the_actuals(tiny: str) -> None:
    result = run("--scenario", tiny, "--rack", "row-00003", "--days", "2", "--horizon", "240", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["scenario"] == "tiny" and data["rack"] == "row-00003"
    assert data["history_days"] == 2 and data["origin_s"] == 2 * 86400 and data["horizon_min"] == 240
    series = data["series"]
    assert series["time_s"][0] == data["origin_s"] and series["time_s"][1] - series["time_s"][0] == 60
    for name in ("actual_kw", "forecast_kw", "p50_kw", "p95_kw"):
        assert len(series[name]) == 240
        assert all(v is not None and math.isfinite(v) and v >= 0 for v in series[name]), name
    assert all(p95 >= point for p95, point in zip(series["p95_kw"], series["forecast_kw"], strict=True))
    summary = data["summary"]
    assert summary["method"] == "seasonal regression + AR (daily season)"  # two days of minute data
    assert 0 <= summary["p95_coverage"] <= 1 and summary["steps_compared"] == 240
    assert 0 <= summary["mae_kw"] < summary["mean_actual_kw"] and 0 <= summary["mape_pct"] < 100
    # the nightly job is known ahead: added to the forecast for its window, 02:00 to 04:00
    (job,) = data["scheduled"]
    assert (job["start_s"], job["duration_s"]) == (2 * 86400 + 7200, 7200) and job["extra_kw"] > 0
    before, during = series["forecast_kw"][110], series["forecast_kw"][130]
    assert during - before > 0.5 * job["extra_kw"]


def test_a_source_with_the_default_history(tiny: str) -> None:
    result = run("--scenario", tiny, "--source", "ups-b", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    # 3 days less a 60-minute horizon leave two whole days of history
    assert data["source"] == "ups-b" and data["history_days"] == 2 and data["horizon_min"] == 60
    assert data["plot"] is None
    assert 0 <= data["summary"]["p95_coverage"] <= 1 and data["summary"]["mean_actual_kw"] > 0


def test_text_is_a_summary_and_a_table_every_ten_minutes(tiny: str) -> None:
    result = run("--scenario", tiny, "--rack", "row-00000", "--days", "1.5")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("rack row-00000, scenario tiny: 60 min from day 1 12:00 after 1.5 days of history")
    assert lines[1].startswith("MAE ") and "P95 coverage" in lines[1]
    times = [line.split()[2] for line in lines if line.startswith("day ")]
    assert times == ["12:00", "12:10", "12:20", "12:30", "12:40", "12:50", "12:59"]


def test_plot_writes_a_png(tiny: str, tmp_path: Path) -> None:
    png = tmp_path / "rack.png"
    result = run("--scenario", tiny, "--rack", "row-00007", "--horizon", "180", "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(f"plot: {png}")
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000


def test_an_unknown_rack_is_refused_with_the_closest_ids(tiny: str) -> None:
    result = run("--scenario", tiny, "--rack", "row-3")
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert "no rack 'row-3' in scenario 'tiny' (did you mean 'row-00003'?)" in result.output
    assert "its 20 racks are row-00000, row-00001" in result.output
    result = run("--scenario", tiny, "--source", "ups-c")
    assert result.exit_code != 0 and "did you mean 'ups-b' or 'ups-a'?" in result.output  # equally close
    assert "its 2 sources are ups-a, ups-b" in result.output


def test_ibt_prints_the_refusal_without_a_traceback(
    tiny: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["ibt", "forecast", "--scenario", tiny, "--rack", "nope"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert err.startswith("ibt: no rack 'nope'") and "Traceback" not in err


def test_history_beyond_the_scenario_is_refused(tiny: str) -> None:
    result = run("--scenario", tiny, "--rack", "row-00003", "--days", "3")
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert "run past the end of scenario 'tiny' (3 days): at most 2.958 days of history" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rack", "row-00003", "--horizon", "0"], "Invalid value for '--horizon'"),
        (["--rack", "row-00003", "--days", "0"], "Invalid value for '--days'"),
        ([], "give one of --rack ID or --source ID"),
        (["--rack", "row-00003", "--source", "ups-a"], "give one of --rack ID or --source ID"),
    ],
)
def test_bad_options_are_refused(tiny: str, args: list[str], message: str) -> None:
    result = run("--scenario", tiny, *args)
    assert result.exit_code != 0 and message in result.output


def test_the_library_refuses_what_the_options_would(tiny: str) -> None:
    with pytest.raises(forecast_report.ForecastReportError, match="horizon must be 1 to 1440 minutes"):
        forecast_report.forecast_against_actuals(tiny, rack="row-00003", horizon_min=0)
    with pytest.raises(forecast_report.ForecastReportError, match="name one rack or one source"):
        forecast_report.forecast_against_actuals(tiny)


def test_a_broken_scenario_is_refused_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nstep_s = -60\n")
    result = run("--scenario", str(bad), "--rack", "row-00003")
    assert result.exit_code == EXIT_CONFIGURATION and isinstance(result.exception, SystemExit)  # no traceback
    assert "scenario.step_s (line 2)" in result.output
