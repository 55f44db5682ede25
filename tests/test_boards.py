"""Board descriptions: validated at build time, every problem named by its field, the
transfer budget computed from the relays' datasheet maxima."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from host.model import boards

SIM = (boards.BOARDS_DIR / "sim.toml").read_text()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(text)
    return path


def test_the_sim_board_is_valid_and_its_budget_is_reported() -> None:
    board = boards.by_name("sim")
    assert board.transfer_ms == pytest.approx(2 + 15 + 15 + 2)
    assert any("exceeds the 20 ms ride-through" in w for w in board.warnings)
    params = board.firmware_parameters()
    assert params["n_inputs"] == 2 and params["operate_us"] == 15_000 and params["breaking_mA"] == 40_000


def test_the_reference_board_is_refused_for_every_reason_at_once() -> None:
    with pytest.raises(boards.BoardError) as refused:
        boards.by_name("rp2040-ads131m06")
    problems = "\n".join(refused.value.problems)
    assert "inputs[1].fuse_a: a 32 A fuse does not protect relay K1 rated 30.0 A" in problems
    assert "relays[1].feedback: a rack tap needs contact feedback" in problems
    assert "an MCU reset drops the rack" in problems
    assert "transfer budget 52.0 ms" in problems


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("sample_rate_hz = 4000", "sample_rate_hz = 1000"), "adc.sample_rate_hz: 1000 is outside"),
        (lambda t: t.replace('name = "sim"', "name = 5"), "board.name: must be text, not 5"),
        (lambda t: t.replace("operate_ms_max = 15.0\n", "", 1), "relays[1].operate_ms_max: missing"),
        (lambda t: t.replace('relay = "K2"', 'relay = "K9"'), "inputs[2].relay: no relay with id 'K9'"),
        (lambda t: t.replace("poles = 2", "poles = 1", 1), "relays[1].poles: a rack tap switches line and neutral"),
        (lambda t: t.replace('bus = "B"', 'bus = "A"'), "uarts: one UART for bus A and one for bus B"),
        (lambda t: t.replace("latching = true", "latching = false"), "an MCU reset drops the rack"),
        (lambda t: t.replace('feedback = "auxiliary"', 'feedback = "maybe"', 1), "relays[1].feedback: 'maybe' is not"),
        (lambda t: t.replace('role = "rack_tap"', 'role = "source_monitor"'), "monitor: must be a table"),
        (lambda t: t + "\n[[[broken", "not TOML"),
    ],
)
def test_malformed_descriptions_name_the_field(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(boards.BoardError, match=re.escape(message)):
        boards.load(_write(tmp_path, edit(SIM)))


def test_a_plain_flyback_diode_stretches_the_release_in_the_budget(tmp_path: Path) -> None:
    diode = boards.load(_write(tmp_path, SIM.replace('suppression = "driver"', 'suppression = "diode"')))
    assert diode.transfer_ms == pytest.approx(2 + 15 * boards.DIODE_RELEASE_FACTOR + 15 + 2)
    production = SIM.replace('purpose = "development"', 'purpose = "production"')
    with pytest.raises(boards.BoardError, match=r"transfer budget 34\.0 ms"):
        boards.load(_write(tmp_path, production))


def test_a_missing_board_lists_the_known_ones() -> None:
    with pytest.raises(boards.BoardError, match="no such board; boards: rp2040-ads131m06, sim"):
        boards.by_name("nope")
