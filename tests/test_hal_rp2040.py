"""The reference board's HAL (firmware/hal_rp2040.py) and entry point on MicroPython's unix
port, against fake `machine` and `rp2` modules (tests/mp/fake_rp2/): the sample conversion,
the ring's handover, the ADC's register values, the DMA chain's wiring, DE around a write,
the relays' pins, and the Tap running on it.

What this cannot prove, only a board can: that the PIO program reads the ADS131M06's frames
at its DRDY edge, that the two DMA channels keep the ring going, that the part answers its
register setup as the datasheet says (the fake ADC answers as the HAL's author read the
datasheet, so agreement is consistency, not truth), the UART's real txdone timing."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from host.build import firmware_build
from host.model import boards

FAKES = Path(__file__).resolve().parent / "mp" / "fake_rp2"
SCRIPT = FAKES / "hal_checks.py"

HAL = {
    "adc": {"spi": 0, "cs_pin": 17, "drdy_pin": 20},
    "relays": [
        {"coil_pin": 10, "feedback_pin": 12, "feedback_closed_level": 0, "feedback_pull": "up"},
        {"coil_pin": 11, "feedback_pin": 13, "feedback_closed_level": 1},
    ],
    "uarts": [{"id": 0, "baud": 115200, "de_pin": 2}, {"id": 1, "baud": 115200, "de_pin": 7}],
}


def board() -> dict[str, Any]:
    # the sim board's parameters: the reference board's description is refused (boards/README.md)
    params = boards.by_name("sim").firmware_parameters()
    params["n_inputs"] = 2
    params["hal"] = json.loads(json.dumps(HAL))
    return params


@pytest.fixture
def run(mpy_tree: Path, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Run a scenario of hal_checks.py on the firmware compiled as flashed (x64), fakes first
    on the path, with the board's heap."""

    def scenario_run(scenario: str, params: dict[str, Any] | None = None, heap: str = "190K") -> dict[str, Any]:
        return _run(mpy_tree, tmp_path, scenario, params, heap)

    return scenario_run


def _run(tree: Path, tmp_path: Path, scenario: str, params: dict[str, Any] | None, heap: str) -> dict[str, Any]:
    board_file = tmp_path / "board.json"
    board_file.write_text(json.dumps(params if params is not None else board()))
    flash = tmp_path / "flash"
    flash.mkdir(exist_ok=True)
    env = dict(os.environ, MICROPYPATH=f"{FAKES}:{tree}")
    result = subprocess.run(
        [firmware_build.micropython_command(), "-X", f"heapsize={heap}", str(SCRIPT), scenario, str(board_file),
         str(flash)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 0, f"{scenario}:\n{result.stderr}{result.stdout[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_24_bit_samples_become_counts_at_both_full_scales(run: Callable[..., dict[str, Any]]) -> None:
    out = run("conversion")
    # input 1: negative full scale, zero, positive full scale, -1 LSB of 24 bits
    assert out["volts"][0] == [-8192, 0, 8191, -1]
    # input 2: one count is 2**10 codes; codes below it round down (towards minus infinity)
    assert out["volts"][1] == [1, 0, -1, -2]
    assert out["amps"] == [8191, -8192, 0, 4096]  # channel 4
    assert out["bad_frames"] == 0


def test_blocks_are_handed_over_in_order_and_a_lost_ring_is_counted(run: Callable[..., dict[str, Any]]) -> None:
    out = run("handover")
    n = out["slots"]
    assert n >= 4 and n & (n - 1) == 0  # a power of two: the control channel's address ring
    assert out["taken"][:4] == [0, 1, 2, 3]  # oldest first; slot 3 only once the DMA moved on
    assert out["waited"] == [True]
    assert out["taken"][4] == n - 1  # the last slot, handed over when the DMA wrapped to slot 0
    assert out["next_after_wrap"] == 0
    assert out["overruns"] == [1]
    assert out["taken_after_overrun"] == out["expected_after_overrun"]
    assert out["bad_frames"] == 0


def test_a_word_that_is_not_a_status_word_is_counted(run: Callable[..., dict[str, Any]]) -> None:
    assert run("bad_frame")["bad_frames"] == 1


def test_adc_registers_and_dma_chain(run: Callable[..., dict[str, Any]]) -> None:
    out = run("setup")
    regs = out["regs"]
    assert regs["02"] == 0x0110  # MODE: 24-bit words, SPI timeout, DRDY a level, reset flag cleared
    assert regs["03"] == 0x3F0E  # CLOCK: six channels, OSR 1024 (4 kSPS from 8.192 MHz), high resolution
    assert regs["04"] == 0 and regs["05"] == 0  # gain 1
    assert out["commands"][0] == 0x0011  # RESET first
    assert out["spi_released"] and out["mosi_low"]
    data, control = out["data"], out["control"]
    words = out["block"] * 8
    assert data["read"] == 0x50200020  # PIO0 RXF0
    assert data["count"] == words and data["write"] == out["slot_addresses"][0]
    assert data["ctrl"]["treq_sel"] == 4 and data["ctrl"]["chain_to"] == control["channel"]  # DREQ_PIO0_RX0
    assert data["ctrl"]["inc_write"] and not data["ctrl"]["inc_read"]
    assert data["running"]
    assert control["write"] == 0x50000000 + 0x40 * data["channel"] + 0x2C  # data channel's AL2_WRITE_ADDR_TRIG
    assert control["count"] == 1 and control["ctrl"]["chain_to"] == control["channel"]
    assert 1 << control["ctrl"]["ring_size"] == 4 * out["slots"] and out["table_aligned"]
    assert out["table"] == [a & 0xFFFFFFFF for a in out["slot_addresses"]]  # 32-bit words: RP2040 addresses
    assert out["sm"]["kw"]["in_base"] == 16 and out["sm"]["kw"]["set_base"] == 17
    assert out["sm"]["kw"]["sideset_base"] == 18 and out["sm"]["running"]


def test_driver_enable_is_high_while_writing_and_low_after_txdone(run: Callable[..., dict[str, Any]]) -> None:
    out = run("uart")
    assert out["idle"] == 0
    assert (out["got"], out["data"]) == (3, "abc")
    de = out["de"]
    events = [e for e in out["log"] if e[0] != "pin" or e[1] == de]
    assert events[0] == ["pin", de, 1]
    assert events[1] == ["write", 1, "hello"]
    assert [e[0] for e in events[2:-1]] == ["txdone"] * (len(events) - 3)
    assert [e[2] for e in events[2:-1]] == [False] * (len(events) - 4) + [True]
    assert events[-1] == ["pin", de, 0]


def test_relays_follow_the_description(run: Callable[..., dict[str, Any]]) -> None:
    out = run("relays")
    assert out["coil_after_boot"] == [False, True]  # coil 2 was still driven (a soft reboot): kept
    assert out["coil_pins"] == [1, 0] and out["coil"] == [True, False]
    # relay 1's contact reads 0 when closed (closed level 0), relay 2's reads 1
    assert out["feedback_low_high"] == [True, True]
    assert out["feedback_high_low"] == [False, False]
    assert out["feedback_pulls"] == [1, None]  # PULL_UP on relay 1 only


def test_a_relay_without_feedback_is_refused(run: Callable[..., dict[str, Any]]) -> None:
    assert "feedback" in run("no_feedback")["refused"]


def test_temperature_unique_id_watchdog_reset(run: Callable[..., dict[str, Any]]) -> None:
    out = run("misc")
    assert out["t27"] == 270
    assert out["uid"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert out["wdt_before_feed"] == 0  # not started while the Tap is being built
    assert out["wdt"] == [[500, 2]]
    assert out["reset"]


def test_the_tap_runs_on_the_hal(run: Callable[..., dict[str, Any]]) -> None:
    # a larger heap than the board's: this script and the fakes, compiled from source here,
    # take heap a board does not spend; whether HAL + Tap fit in 190 KB is for a board to show
    out = run("tap_steps", heap="320K")
    assert out["blocks"] == 50 and out["uptime_ms"] == 50
    assert out["active"] == 0 and out["relay_state"] == 0  # nothing closed, nothing failed
    assert out["fed"] == [50]  # the watchdog, started at the first feed, fed once a block


def test_entry_point_refuses_a_board_file_without_pins(run: Callable[..., dict[str, Any]]) -> None:
    params = board()
    del params["hal"]
    assert "hal" in run("main_board_file", params)["refused"]
