"""`ibt sim`: the virtual rig from the command line, run as a user runs it (a process that
prints its buses and stays up until Ctrl-C), and `ibt sim inject` / `status` against it."""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial  # type: ignore[import-untyped]

from host.build.firmware_build import ROOT
from host.wire import framing, messages

PATIENCE_S = 60.0  # wall-clock, for a loaded machine; only a failing test waits it out


def _ibt(*args: str) -> list[str]:
    return [sys.executable, "-m", "host.cli.main", *args]


def _lines(stream: object) -> queue.Queue[str]:
    """The process's output, line by line, readable with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _read_until(lines: queue.Queue[str], prefix: str) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        seen.append(line)
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"no line starting {prefix!r}; output so far: {seen}")


def _micropython_in(workdir: Path) -> list[str]:
    """Command lines of processes still running with a path under workdir in their arguments."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(workdir) in text and "micropython" in text:
            found.append(text)
    return found


def _identify(path: str, address: int) -> dict:
    """IDENTIFY through pyserial on the pty, as the host does with a USB adapter."""
    request = framing.encode_frame(messages.request(address, "IDENTIFY", 1).to_body())
    decoder = framing.StreamDecoder()
    with serial.Serial(path, 115200, timeout=0.05) as port:
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            port.write(request)
            answer_by = time.monotonic() + 1.0
            while time.monotonic() < answer_by:
                for body in decoder.feed(port.read(256)):
                    frame = messages.parse_body(body)
                    if frame.is_response:
                        return frame.fields()
    raise AssertionError("no answer to IDENTIFY")


def test_ibt_sim_runs_takes_faults_and_stops_on_sigint(tmp_path: Path, mpy_tree: Path) -> None:
    workdir = tmp_path / "rig"
    shutil.copytree(mpy_tree, workdir / "mpy")  # the firmware as built for this session: no rebuild
    process = subprocess.Popen(_ibt("sim", "--taps", "2", "--sources", "2", "--workdir", str(workdir)),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _lines(process.stdout)
        shown = _read_until(lines, "faults:")
        buses = dict(line.removeprefix("bus ").split(": ") for line in shown if line.startswith("bus "))
        assert set(buses) == {"A", "B"} and all(Path(p).exists() for p in buses.values())
        assert any(line.startswith("tap tap-02: address 2,") for line in shown)
        records = json.loads((workdir / "rig.json").read_text())
        assert records["buses"] == buses and len(records["taps"]) == 2
        assert _identify(buses["A"], 2)["unique_id"].hex() == records["taps"][1]["unique_id"]

        injected = subprocess.run(_ibt("sim", "inject", "--workdir", str(workdir), "lose", "ups-1"), cwd=ROOT,
                                  capture_output=True, text=True, timeout=PATIENCE_S)
        assert injected.returncode == 0, injected.stderr
        refused = subprocess.run(_ibt("sim", "inject", "--workdir", str(workdir), "lose", "ups-9"), cwd=ROOT,
                                 capture_output=True, text=True, timeout=PATIENCE_S)
        assert refused.returncode == 1
        assert refused.stderr.splitlines() == ["ibt: unknown source 'ups-9' (sources: ups-1, ups-2)"]
        unmonitored = subprocess.run(  # health faults need a monitor tap, which --taps/--sources rigs have not
            _ibt("sim", "inject", "--workdir", str(workdir), "vibration", "ups-1", "--rms", "200", "--impulsive"),
            cwd=ROOT, capture_output=True, text=True, timeout=PATIENCE_S)
        assert unmonitored.returncode == 1
        assert unmonitored.stderr.splitlines() == ["ibt: no monitor tap is fitted to source 'ups-1' (monitors: none)"]
        status = subprocess.run(_ibt("sim", "status", "--workdir", str(workdir), "--json"), cwd=ROOT,
                                capture_output=True, text=True, timeout=PATIENCE_S)
        assert json.loads(status.stdout)["sources"]["ups-1"]["effects"] == {"lost": {"value": 0.0,
                                                                                      "duration_s": None}}

        process.send_signal(signal.SIGINT)
        process.wait(timeout=PATIENCE_S)
    finally:
        if process.poll() is None:
            process.kill()  # never leave a rig behind a failed test
            process.wait()
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    _read_until(lines, "stopped")
    assert _micropython_in(workdir) == []
    assert not (workdir / "control.sock").exists()


@pytest.mark.parametrize("args", [["inject", "lose", "ups-1"], ["status"]])
def test_no_rig_running_is_one_line_and_a_failure(tmp_path: Path, args: list[str]) -> None:
    command = _ibt("sim", args[0], "--workdir", str(tmp_path), *args[1:])
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=PATIENCE_S)
    assert result.returncode == 1
    expected = f"ibt: no rig running in {tmp_path} (no control.sock): start one with `ibt sim`"
    assert result.stderr.splitlines() == [expected]
