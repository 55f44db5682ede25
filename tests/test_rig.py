"""The virtual rig: taps running the compiled firmware on MicroPython, on two virtual buses,
sharing sources in one plant (host/sim/rig/virtual_rig.py, host/sim/rig/rig_plant.py). The end-to-end test talks to
the taps the way the host does, through pyserial on bus A's pty."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host.bus.transport import SerialSettings, SerialTransport
from host.sim.rig.rig_control import send_control
from host.sim.rig.rig_layout import RigTap
from host.sim.rig.rig_plant import RigPlant, default_site
from host.sim.rig.virtual_rig import RigError, VirtualRig
from host.wire import framing, messages
from protocol import catalog

PATIENCE_S = 45.0  # wall-clock; only a failing test waits it out (a loaded 2-core machine runs the taps slowly)


class Host:
    """The host's side of bus A for the test: one transport, sequence numbers, counters."""

    def __init__(self, path: str) -> None:
        self.transport = SerialTransport(SerialSettings(port=path, usb_latency_s=0.0)).open()
        self.seq = 0
        self.counters: dict[int, int] = {}

    def ask(self, tap: RigTap, name: str, fields: dict[str, Any] | None = None, signed: bool = False) -> dict:
        """Send until answered (a lost frame is retried), return the answer's fields."""
        return self.exchange(tap, name, fields, signed).fields()

    def exchange(self, tap: RigTap, name: str, fields: dict[str, Any] | None = None,
                 signed: bool = False) -> messages.Frame:
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            self.seq = (self.seq + 1) & 0xFFFF
            if signed:
                counter = self.counters[tap.address] = self.counters.get(tap.address, 0) + 1
                frame = messages.request(tap.address, name, self.seq, fields, key=tap.key_bytes, epoch=tap.epoch,
                                         counter=counter)
            else:
                frame = messages.request(tap.address, name, self.seq, fields)
            body = self.transport.exchange(framing.encode_frame(frame.to_body()), timeout=2.0)
            if body is not None:
                answer = messages.parse_body(body)
                assert not signed or messages.verify(answer, tap.key_bytes)
                return answer
        raise AssertionError(f"tap {tap.id} never answered {name}")

    def wait_for(self, tap: RigTap, name: str, check: Any) -> dict:
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            fields = self.ask(tap, name)
            if check(fields):
                return fields
            time.sleep(0.05)
        raise AssertionError(f"tap {tap.id}: {name} never showed what was awaited (last: {fields})")

    def close(self) -> None:
        self.transport.close()


@pytest.fixture
def rig(tmp_path: Path, mpy_tree: Path) -> Iterator[VirtualRig]:
    with VirtualRig((3, 2), tmp_path / "rig", firmware_tree=mpy_tree) as started:
        yield started


def _healthy(fields: dict) -> bool:
    return all(i["state"] & catalog.INPUT_HEALTHY for i in fields["inputs"])


def test_taps_answer_and_a_lost_source_moves_its_racks_and_load(rig: VirtualRig) -> None:
    host = Host(rig.bus_paths["A"])
    try:
        for tap in rig.taps:
            ident = host.ask(tap, "IDENTIFY")
            assert ident["unique_id"] == tap.unique_id_bytes and ident["address"] == tap.address
            assert ident["epoch"] == tap.epoch and ident["n_inputs"] == 2
            assert host.ask(tap, "STATUS")["active_input"] == 1
        on_lost = [t for t in rig.taps if t.inputs[0] == "ups-1"]
        assert [t.id for t in on_lost] == ["tap-01", "tap-03"]
        for tap in on_lost:  # the host's alternates, signed with the tap's own key
            ack = host.exchange(tap, "SET_ALTERNATES", {"for_input": 1, "alternate_1": 2, "alternate_2": 0,
                                                        "alternate_3": 0}, signed=True)
            assert ack.type == catalog.T_ACK, ack.fields()
            host.wait_for(tap, "TELEMETRY", _healthy)
        before = rig.plant.source_loads()
        assert before["ups-1"] > 0 and before["ups-2"] > 0

        rig.inject("lose", "ups-1")

        for tap in on_lost:
            status = host.wait_for(tap, "STATUS", lambda f: f["active_input"] == 2)
            assert status["relays_closed"] == 0b10
            assert rig.plant.plants[tap.id].parallel_events == []  # break before make
        assert host.ask(rig.tap("tap-02"), "STATUS")["active_input"] == 1
        deadline = time.monotonic() + PATIENCE_S
        while rig.plant.source_loads()["ups-1"] > 0.01 and time.monotonic() < deadline:
            time.sleep(0.05)
        after = rig.plant.source_loads()
        assert after["ups-1"] == pytest.approx(0.0, abs=0.01)
        # all three racks on ups-2 now, each drawing a little less as its voltage droops
        assert after["ups-2"] == pytest.approx(sum(before.values()), rel=0.06)
        assert rig.status()["sources"]["ups-2"]["voltage_v"] < 230

        rig.inject("cut", "A")  # a bus fault: bus A carries nothing, bus B still does
        request = messages.request(rig.taps[0].address, "STATUS", 1)
        assert host.transport.exchange(framing.encode_frame(request.to_body()), timeout=0.5) is None
        rig.inject("cut", "A", on=False)
        assert host.ask(rig.taps[0], "STATUS")["active_input"] == 2
    finally:
        host.close()


def test_close_leaves_no_process_and_no_thread(tmp_path: Path, mpy_tree: Path) -> None:
    threads_before = set(threading.enumerate())
    fds_before = len(os.listdir("/proc/self/fd"))
    rig = VirtualRig((2, 2), tmp_path / "rig", firmware_tree=mpy_tree).start()
    rig.serve_control()
    assert send_control(rig.workdir, {"command": "ping"}) == "pong"
    status = send_control(rig.workdir, {"command": "status"})
    assert set(status["taps"]) == {"tap-01", "tap-02"} and all(t["running"] for t in status["taps"].values())
    pids = list(rig.pids.values())
    rig.close()
    rig.close()  # idempotent
    assert rig.exit_codes == {"tap-01": 0, "tap-02": 0}, [Path(t.log).read_text() for t in rig.taps]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert set(threading.enumerate()) <= threads_before
    assert not (rig.workdir / "control.sock").exists()
    assert len(os.listdir("/proc/self/fd")) == fds_before  # ptys, sockets and logs all closed
    with pytest.raises(RigError, match="no rig running"):
        send_control(rig.workdir, {"command": "ping"})


def test_a_tap_that_cannot_start_fails_the_start_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "no-firmware"
    empty.mkdir()
    threads_before = set(threading.enumerate())
    rig = VirtualRig((2, 2), tmp_path / "rig", firmware_tree=empty)
    with pytest.raises(RigError, match=r"tap tap-0\d stopped at start \(exit 1\): .*firmware"):
        rig.start()
    assert len(rig.pids) == 2 and rig.exit_codes == {"tap-01": 1, "tap-02": 1}
    assert set(threading.enumerate()) <= threads_before


def test_inject_refuses_unknown_targets_and_parameters_in_one_line(tmp_path: Path) -> None:
    rig = VirtualRig((3, 2), tmp_path / "rig")  # not started: the plant exists, no process runs
    with pytest.raises(RigError, match=r"unknown source 'ups-9' \(sources: ups-1, ups-2\)"):
        rig.inject("lose", "ups-9")
    with pytest.raises(RigError, match="unknown fault 'melt'"):
        rig.inject("melt", "ups-1")
    with pytest.raises(RigError, match=r"sag does not take kw \(it takes fraction, duration_s\)"):
        rig.inject("sag", "ups-1", kw=3)
    with pytest.raises(RigError, match="unknown rack or tap 'rack-99'"):
        rig.inject("load", "rack-99", kw=3)
    with pytest.raises(RigError, match="fraction must be"):
        rig.inject("sag", "ups-1", fraction=-1)
    rig.close()


def _run(plant: RigPlant, blocks: int, coils: dict[str, int] | None = None) -> None:
    for _ in range(blocks):
        for tap_id, tap in plant.plants.items():
            tap.step((coils or {}).get(tap_id, tap.coils))


def test_source_load_is_the_sum_of_its_taps_and_its_voltage_droops_with_it() -> None:
    site = default_site(3, 2)
    plant = RigPlant(site, realtime=False)
    _run(plant, 100)
    loads = plant.source_loads()
    snapshot = plant.snapshot()
    for source_id, load in loads.items():
        drawn = sum(t["draw_kw"] for t in snapshot["taps"].values() if t["source"] == source_id)
        assert load == pytest.approx(drawn, abs=0.01)
    # racks of 4 and 12 kW at half load on ups-1 (18 kW): 8 kW less what the droop takes
    assert loads["ups-1"] == pytest.approx(8.0, rel=0.06) and loads["ups-2"] == pytest.approx(4.0, rel=0.06)
    ups_1 = snapshot["sources"]["ups-1"]
    assert ups_1["voltage_v"] == pytest.approx(400 / 3**0.5 * (1 - 0.05 * loads["ups-1"] / 18), rel=1e-3)
    plant.overload("ups-2", kw=18)  # as loaded again by its capacity: 5% lower
    _run(plant, 5)
    level = plant.plants["tap-01"].inputs[1].level
    assert level == pytest.approx(1 - 0.05 * (loads["ups-2"] + 18) / 18, rel=0.01)


def test_a_timed_sag_lasts_its_duration_on_each_taps_own_clock() -> None:
    plant = RigPlant(default_site(2, 2), realtime=False)
    first, second = plant.plants["tap-01"], plant.plants["tap-02"]
    _run(plant, 50)
    for _ in range(30):  # tap-02 runs ahead of tap-01 by 30 ms
        second.step(second.coils)
    plant.sag("ups-2", fraction=0.5, duration_s=0.1)
    first.step(first.coils)
    second.step(second.coils)
    assert first.inputs[1].level < 0.55 and second.inputs[0].level < 0.55  # "now" for each
    for _ in range(100):
        second.step(second.coils)
    assert second.inputs[0].level > 0.9  # 100 ms of its own time have passed
    first.step(first.coils)
    assert first.inputs[1].level < 0.55  # 1 ms of tap-01's: still sagging
    for _ in range(99):
        first.step(first.coils)
    assert first.inputs[1].level > 0.9


def _draw_at_nominal_kw(plant: RigPlant, tap_id: str) -> float:
    """What the tap's rack draws, brought back to nominal voltage (it draws with the voltage squared)."""
    tap = plant.plants[tap_id]
    level = tap.inputs[tap.conducting_input() - 1].level
    assert 0.9 < level < 1.0  # below nominal: the source droops and the feed drops a little
    return plant.snapshot()["taps"][tap_id]["draw_kw"] / level**2


def test_a_rack_load_step_and_a_distortion() -> None:
    plant = RigPlant(default_site(2, 2), realtime=False)
    _run(plant, 20)
    plant.load_step("rack-02", fraction=1.0)  # rated 8 kW
    plant.distort("ups-1", thd_pct=12)
    _run(plant, 20)
    assert _draw_at_nominal_kw(plant, "tap-02") == pytest.approx(8.0, rel=1e-3)
    harmonics = plant.plants["tap-01"].inputs[0].harmonics
    assert sum(a * a for a in harmonics.values()) ** 0.5 == pytest.approx(0.12)
    plant.load_step("tap-02")  # back to its base draw
    plant.restore("ups-1")
    _run(plant, 20)
    assert _draw_at_nominal_kw(plant, "tap-02") == pytest.approx(4.0, rel=1e-3)
    assert sum(a * a for a in plant.plants["tap-01"].inputs[0].harmonics.values()) ** 0.5 == pytest.approx(0.01)
