"""Monitor-role taps on the virtual rig (host/sim/rig/virtual_rig.py, host/sim/rig/rig_plant.py) and their health
signals through the fleet over the buses (host/fleet/bus_fleet.py): a monitor tap fitted to a
source answers HEALTH with what the source's health model and the injected heat,
vibration and ripple say, and `BusFleet.read_sources()` carries it as the fault
predictor's signals. Waits are wall-clock patience for a loaded machine; nothing asserts
how fast anything happened."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from host.bus.link import RedundantLink
from host.bus.transport import SerialSettings, SerialTransport
from host.client.keys import MemoryKeys
from host.client.tap_client import TapClient
from host.fleet.bus_fleet import BusFleet
from host.fleet.monitor_health import HEALTH_MAX_AGE_MS, health_signals
from host.model.fleet import HealthSignals
from host.model.site import Feed, Rack, Site, Source, SourceKind, Tap
from host.predict.fault_monitor import FaultMonitor
from host.sim.rig.plant import Vibration
from host.sim.rig.rig_layout import RigLayout, load_site_file
from host.sim.rig.rig_parts import IMPACT_PEAK_RATIO, MONITOR_MG_PER_COUNT, HealthModel, RigPlantError
from host.sim.rig.rig_plant import RigPlant, default_site
from host.sim.rig.virtual_rig import RigError, VirtualRig
from protocol import catalog
from tests.tap_rig import NoBus, wait_until

TIMEOUT_S = 1.0  # per bus and attempt
MONITOR = "mon-ups-1"
DEMO_SITE = Path(__file__).resolve().parent.parent / "sites" / "demo.toml"


def _layout() -> RigLayout:
    """Two rack taps on ups-1 and ups-2, and a monitor tap on ups-1."""
    return RigLayout(default_site(2, 2), monitors={MONITOR: "ups-1"})


class Bench:
    """The rig, a client over both buses, as the controller has them."""

    def __init__(self, rig: VirtualRig) -> None:
        self.rig = rig
        self.transports = [
            SerialTransport(SerialSettings(path, name=name, usb_latency_s=0.001)).open()
            for name, path in rig.bus_paths.items()
        ]
        self.link = RedundantLink(*self.transports)
        keys = {t.address: t.key_bytes for t in [*rig.taps, *rig.monitors]}
        self.keys = MemoryKeys(keys)
        self.client = TapClient(self.link, self.keys, epoch=rig.epoch, timeout=TIMEOUT_S)
        self.last: dict[str, Any] = {}

    def health(self) -> dict[str, Any]:
        self.last = dict(self.client.health(self.rig.monitor_of("ups-1").address).fields)
        return self.last

    def close(self) -> None:
        for transport in self.transports:
            transport.close()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, mpy_tree: Path) -> Iterator[Bench]:
    with VirtualRig(_layout(), tmp_path_factory.mktemp("rig-monitor") / "rig", firmware_tree=mpy_tree) as rig:
        started = Bench(rig)
        try:
            yield started
        finally:
            started.close()


def _reference(rms_mg: float, impulsive: bool) -> tuple[float, float, float]:
    """RMS, kurtosis and crest factor of the plant's vibration model as the ADC samples it
    (quantised to the accelerometer's counts), over four seconds."""
    vibration = Vibration(tone_mg=0.6 * rms_mg, noise_mg=0.8 * rms_mg,
                          impact_mg=IMPACT_PEAK_RATIO * rms_mg if impulsive else 0.0,
                          mg_per_count=MONITOR_MG_PER_COUNT)
    t = np.arange(4000 * 4) / 4000
    samples = np.round(vibration.sample(t, np.random.default_rng(3))) * MONITOR_MG_PER_COUNT
    centred = samples - samples.mean()
    rms = float(np.sqrt(np.mean(centred**2)))
    # the firmware's crest is per window of 2048 samples: the median window's peak, not the record's
    peaks = [float(np.abs(w).max()) for w in np.array_split(centred, len(centred) // 2048)]
    return rms, float(np.mean(centred**4) / rms**4), float(np.median(peaks)) / rms


def _near(fields: dict[str, Any], celsius: float, rms_mg: float, impulsive: bool, ripple: float) -> bool:
    rms, kurtosis, crest = _reference(rms_mg, impulsive)
    return (
        fields["sensors_ok"] == 0x0F
        and fields["temperature_dC"] == round(celsius * 10)
        and abs(fields["vibration_rms_mg"] - rms) <= 0.08 * rms + 2
        and abs(fields["vibration_kurtosis_milli"] / 1000 - kurtosis) <= 0.2 * kurtosis
        and abs(fields["vibration_crest_milli"] / 1000 - crest) <= 0.3 * crest
        and abs(fields["ripple_dpct"] - ripple * 1000) <= 2
    )


# -- on the rig: the firmware in the monitor role ---------------------------------------------


def test_the_monitor_reports_its_sources_baseline_then_what_is_injected(bench: Bench) -> None:
    rig = bench.rig
    monitor = rig.monitor_of("ups-1")
    assert (monitor.id, monitor.monitors, monitor.rack, monitor.inputs) == (MONITOR, "ups-1", "", ("ups-1",))
    assert monitor.address not in {t.address for t in rig.taps}
    ident = bench.client.identify(monitor.address).fields
    assert ident["role"] == catalog.ROLE_SOURCE_MONITOR and ident["n_inputs"] == 1
    assert ident["unique_id"] == monitor.unique_id_bytes
    # a UPS at rest, as the site simulator's health model has it
    ups = HealthModel.of_kind(SourceKind.UPS)
    wait_until(lambda: _near(bench.health(), ups.temperature_c, ups.vibration_rms_mg, False, ups.ripple_fraction),
               "the monitor reports a healthy UPS", lambda: bench.last)
    assert bench.last["thd_dpct"] == pytest.approx(10, abs=5)  # the source's base THD, 1%

    rig.inject("heat", "ups-1", celsius=45.5)
    rig.inject("vibration", "ups-1", rms_mg=120, impulsive=True)
    rig.inject("ripple", "ups-1", fraction=0.03)
    wait_until(lambda: _near(bench.health(), 45.5, 120, True, 0.03), "the monitor reports the injected health",
               lambda: bench.last)
    _, kurtosis, crest = _reference(120, True)
    assert kurtosis > 4 and crest > 4.5  # the impacts show, as a worn bearing's do
    state = rig.status()
    assert state["monitors"][MONITOR] | {"sim_time_s": 0} == {
        "source": "ups-1", "temperature_c": 45.5, "vibration_rms_mg": 120.0, "impulsive": True,
        "ripple_fraction": 0.03, "sim_time_s": 0, "running": True,
    }
    assert state["sources"]["ups-1"]["effects"]["vibration"] == {"value": 120.0, "duration_s": None,
                                                                  "impulsive": True}

    rig.inject("restore", "ups-1")  # every effect cleared: back to the baseline
    wait_until(lambda: _near(bench.health(), ups.temperature_c, ups.vibration_rms_mg, False, ups.ripple_fraction),
               "the monitor reports a healthy UPS again", lambda: bench.last)


def test_the_bus_fleet_carries_the_monitors_signals_to_the_fault_monitor(bench: Bench) -> None:
    rig = bench.rig
    rig.inject("restore", "ups-1")
    fleet = BusFleet(rig.site, {t.rack: t for t in rig.taps}, bench.client,
                     monitors={"ups-1": rig.monitor_of("ups-1")})
    rig.inject("heat", "ups-1", celsius=52)
    rig.inject("vibration", "ups-1", rms_mg=80)
    rig.inject("ripple", "ups-1", fraction=0.02)
    rms, kurtosis, crest = _reference(80, False)

    def shown() -> HealthSignals | None:
        signals = fleet.read_sources()["ups-1"].signals
        if signals is None or signals.temperature_c != 52.0 or signals.ripple_pct is None:
            return None
        if abs(signals.ripple_pct - 2.0) > 0.2 or signals.vibration_rms_mg is None:
            return None
        return signals if abs(signals.vibration_rms_mg - rms) <= 0.08 * rms + 2 else None

    signals = wait_until(shown, "ups-1's signals as injected", lambda: fleet.read_sources()["ups-1"].signals)
    assert signals.kurtosis == pytest.approx(kurtosis, rel=0.2)
    assert signals.crest_factor == pytest.approx(crest, rel=0.3)
    assert signals.thd_pct == pytest.approx(1.0, abs=0.5)
    sources = fleet.read_sources()
    assert sources["ups-1"].up and sources["ups-2"].signals is None  # no monitor on ups-2: nothing made up
    assert fleet.monitor_errors == {}

    monitor = FaultMonitor(s.id for s in rig.site.sources)
    for _ in range(3):
        assessments = monitor.update(fleet.read_sources())
    assert set(assessments) == {"ups-1", "ups-2"} and not any(a.alarm for a in assessments.values())

    # a monitor that does not answer: no signals, and why
    quick = TapClient(bench.link, bench.keys, epoch=rig.epoch, timeout=0.2, retries=0)
    silent = BusFleet(rig.site, {t.rack: t for t in rig.taps}, quick, monitors={"ups-2": catalog.ADDR_TAP_MAX})
    assert silent.read_sources()["ups-2"].signals is None and "ups-2" in silent.monitor_errors
    rig.inject("restore", "ups-1")


# -- without firmware: the plant, the refusals, the conversion ---------------------------------


def _steps(plant: RigPlant, blocks: int) -> None:
    for _ in range(blocks):
        for tap in [*plant.plants.values(), *plant.monitors.values()]:
            tap.step(tap.coils)


def test_the_monitor_plant_follows_its_source_on_its_own_clock() -> None:
    plant = RigPlant(default_site(2, 2), realtime=False, monitors={MONITOR: "ups-1"})
    monitor = plant.monitors[MONITOR]
    _steps(plant, 20)
    ups = HealthModel.of_kind(SourceKind.UPS)
    assert monitor.temperature_c == ups.temperature_c and monitor.dc_bus.volts > 0
    assert monitor.vibration.tone_mg**2 + monitor.vibration.noise_mg**2 == pytest.approx(ups.vibration_rms_mg**2)
    # its input is the source as the rack taps see it: the same droop, the same sag
    assert monitor.input.level == pytest.approx(plant.plants["tap-01"].inputs[0].level, rel=0.01)
    plant.sag("ups-1", fraction=0.6)
    plant.heat("ups-1", celsius=60, duration_s=0.05)
    plant.vibrate("ups-1", impulsive=True)
    plant.ripple("ups-1", fraction=0.05)
    _steps(plant, 1)
    assert monitor.input.level < 0.61 and monitor.temperature_c == 60.0
    assert monitor.vibration.impact_mg == pytest.approx(IMPACT_PEAK_RATIO * ups.vibration_rms_mg)
    assert monitor.dc_bus.ripple_rms_fraction == 0.05
    _steps(plant, 60)  # 60 ms of its own time: the heat has passed, the rest has not
    assert monitor.temperature_c == ups.temperature_c and monitor.dc_bus.ripple_rms_fraction == 0.05
    plant.vibrate("ups-1")  # no value: back to the baseline
    plant.restore("ups-1")
    _steps(plant, 1)
    assert monitor.vibration.impact_mg == 0 and monitor.dc_bus.ripple_rms_fraction == ups.ripple_fraction
    samples = monitor.step(monitor.coils)[2]
    assert samples.shape == (4, monitor.block)  # voltage, current, vibration, DC bus


def test_health_injections_are_refused_in_one_line(tmp_path: Path) -> None:
    rig = VirtualRig(_layout(), tmp_path / "rig")  # not started: the plant exists, no process runs
    with pytest.raises(RigError, match=r"no monitor tap is fitted to source 'ups-2' \(monitors: mon-ups-1 on ups-1\)"):
        rig.inject("heat", "ups-2", celsius=50)
    with pytest.raises(RigError, match=r"vibration does not take kw \(it takes rms_mg, impulsive, duration_s\)"):
        rig.inject("vibration", "ups-1", kw=3)
    with pytest.raises(RigError, match=r"rms_mg must be a number within 0\.\.2000"):
        rig.inject("vibration", "ups-1", rms_mg=5000)
    with pytest.raises(RigError, match="impulsive must be true or false"):
        rig.inject("vibration", "ups-1", impulsive="yes")
    with pytest.raises(RigError, match=r"fraction must be a number within 0\.\.0\.25"):
        rig.inject("ripple", "ups-1", fraction=0.5)
    with pytest.raises(RigError, match="celsius must be a number"):
        rig.inject("heat", "ups-1", celsius="hot")
    with pytest.raises(RigError, match="unknown source 'ups-9'"):
        rig.inject("heat", "ups-9", celsius=50)
    plain = VirtualRig((2, 2), tmp_path / "plain")
    with pytest.raises(RigError, match="no monitor tap is fitted to source 'ups-1'"):
        plain.inject("ripple", "ups-1", fraction=0.1)
    plain.close()
    rig.close()
    generator = Site((Source("gen-1", SourceKind.GENERATOR, 50), Source("ups-1", SourceKind.UPS, 50)),
                     (Tap("t1", 2),), (Rack("r1", "t1", rated_kw=8),),
                     (Feed("t1", 1, "gen-1", 0.05), Feed("t1", 2, "ups-1", 0.05)))
    plant = RigPlant(generator, realtime=False, monitors={"mon-gen": "gen-1"})
    with pytest.raises(RigPlantError, match=r"source 'gen-1' has no DC bus for a ripple \(a generator\)"):
        plant.ripple("gen-1", fraction=0.02)
    assert plant.sources["gen-1"].health.dc_volts == 0  # the monitor reads no DC bus: HEALTH says so
    with pytest.raises(RigPlantError, match="monitor tap mon-x: unknown source 'ups-9'"):
        RigPlant(generator, realtime=False, monitors={"mon-x": "ups-9"})


def test_a_site_files_monitor_taps_join_the_rig() -> None:
    layout = load_site_file(DEMO_SITE)
    assert layout.monitors == {"mon-ups-1": "ups-1"}
    assert layout.addresses is not None and layout.addresses["mon-ups-1"] == 10
    assert layout.unique_ids is not None and layout.unique_ids["mon-ups-1"].hex() == "e661385200000010"


def _health(**fields: int) -> dict[str, int]:
    return {"temperature_dC": 315, "vibration_rms_mg": 150, "vibration_kurtosis_milli": 3100,
            "vibration_crest_milli": 3400, "ripple_dpct": 12, "thd_dpct": 25, "sensors_ok": 0x0F,
            "age_ms": 200} | fields


def test_health_answers_become_the_predictors_signals() -> None:
    assert health_signals(_health()) == HealthSignals(31.5, 150.0, 3.1, 3.4, 1.2, 2.5)
    # a sensor the tap does not vouch for is no reading; nor are window values gone stale
    assert health_signals(_health(sensors_ok=0x09)) == HealthSignals(31.5, None, None, None, None, 2.5)
    stale = health_signals(_health(age_ms=HEALTH_MAX_AGE_MS + 1))
    assert stale == HealthSignals(31.5, None, None, None, None, 2.5)
    assert health_signals(_health(temperature_dC=-52)).temperature_c == pytest.approx(-5.2)
    assert all(v is None or math.isfinite(v) for v in vars(health_signals(_health(sensors_ok=0))).values())


def test_the_fleet_names_each_monitors_source_and_address() -> None:
    site = default_site(2, 2)
    client = TapClient(RedundantLink(NoBus("A"), NoBus("B")))
    taps = {"rack-01": 1, "rack-02": 2}
    with pytest.raises(ValueError, match="monitor of 'ups-9': the site has no such source"):
        BusFleet(site, taps, client, monitors={"ups-9": 3})
    with pytest.raises(ValueError, match="monitor of 'ups-1': address 2 is the tap of rack 'rack-02'"):
        BusFleet(site, taps, client, monitors={"ups-1": 2})
    with pytest.raises(ValueError, match="monitors of 'ups-1' and 'ups-2' share address 3"):
        BusFleet(site, taps, client, monitors={"ups-1": 3, "ups-2": 3})
    with pytest.raises(ValueError, match="address 0 is not a tap's"):
        BusFleet(site, taps, client, monitors={"ups-1": 0})
