"""Firmware benchmark, simulated (MicroPython's unix port and the plant), not measured
on hardware. Run from the repository root: `.venv/bin/python benchmarks/firmware.py`.

1. Processing per 1 ms block of a 4-input tap (meter, loss detectors, protection,
   relay state machine): microseconds per block and per 10-cycle window, as flashed
   (@micropython.native) against plain bytecode, and bytes allocated per window.
2. Heap: what the whole tap application takes on a 190 KB heap (the RP2040's budget).
3. Transfer on loss of source, onsets swept over the cycle in 10 degree steps, with two
   real relays at their datasheet maxima: worst and median supply gap against the 20 ms
   ITIC ride-through and the 12 ms of the best rack transfer switch (APC AP44xx).
4. Overload trip time against the IEC 60255-151 formula.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.build import firmware_build
from host.sim.rig.plant import Load, Source
from tests.conftest import micropython_runner
from tests.measure_signals import Wave, write_stream
from tests.protection_rig import HONGFA_HFE20, TE_T92, Scenario, run, supply_gap_s
from tests.tap_rig import SimTap
from tests.test_overload import CYCLE_S, formula_s

ITIC_MS = 20.0
BEST_RTS_MS = 12.0  # APC AP44xx, low sensitivity (boards/PARTS.md)
HEAP = "190K"

# Runs on MicroPython: the block path of a 4-input tap on a recorded stream, timed.
BLOCK_SCRIPT = """\
import gc, json, sys, time
from array import array
from firmware import relays as rm
from firmware.loss import LossDetector
from firmware.measure import Meter, scale_for
from firmware.overload import Overload
from firmware.protection import Protection, Settings

class Held:
    # relays standing still, input 1 closed: the steady state every block is in
    def coil(self, k): return k == 1
    def feedback(self, k): return k == 1
    def drive(self, k, closed): pass

cfg = json.loads(open(sys.argv[1]).read())
n, fs, inputs = cfg["block"], cfg["fs"], cfg["inputs"]
vm, vk = scale_for(cfg["mV_per_count"])
im, ik = scale_for(cfg["mA_per_count"])
pm, pk = scale_for(cfg["W_per_count2"])
meter = Meter(fs, 50, [(0, vm, vk)] * inputs, (0, im, ik), pm, pk, 200)
relays = rm.RelayMatrix(Held(), inputs, time.ticks_diff, 15000, 15000, 2000, 0)
detectors = [LossDetector(fs, 50, 4600, 4, 80) for _ in range(inputs)]
protection = Protection(meter, relays, Overload(), detectors, Settings(), 4659, 40000, fs, time.ticks_diff)
blocks = []
with open(sys.argv[2], "rb") as f:
    while True:
        volts = [array("h", bytearray(2 * n)) for _ in range(inputs)]
        amps = array("h", bytearray(2 * n))
        got = sum(f.readinto(v) for v in volts) + f.readinto(amps)
        if got < 2 * n * (inputs + 1):
            break
        blocks.append((volts, amps))
best = None
for repeat in range(5):
    start = time.ticks_us()
    for volts, amps in blocks:
        meter.process(volts, amps, n)
        protection.process(volts, amps, n, 0)
        relays.step(0, False)
    spent = time.ticks_diff(time.ticks_us(), start)
    best = spent if best is None else min(best, spent)
gc.collect(); gc.disable(); before = gc.mem_alloc()
for volts, amps in blocks:
    meter.process(volts, amps, n)
    protection.process(volts, amps, n, 0)
    relays.step(0, False)
allocated = gc.mem_alloc() - before
gc.enable()
print(json.dumps({"blocks": len(blocks), "best_us": best, "allocated": allocated,
                  "windows": meter.inputs[0].windows}))
"""


def block_timing(tmp: Path, plain: bool) -> dict:
    tree = tmp / ("plain" if plain else "native")
    firmware_build.compile_tree(tree)
    if plain:
        for name in ("measure.py", "loss.py", "protection.py", "framing.py"):
            source = firmware_build.strip_native((firmware_build.ROOT / "firmware" / name).read_text())
            (tree / "firmware" / name.replace(".py", ".mpy")).unlink()
            (tree / "firmware" / name).write_text(source)
    waves = [Wave(230, harmonics={3: 0.03}), Wave(231, phase_deg=-120), Wave(229, phase_deg=120), Wave(230)]
    config, samples, _, _ = write_stream(tmp, waves, Wave(20, phase_deg=-20), 2.0, block=4)
    script = tmp / "blocks.py"
    script.write_text(BLOCK_SCRIPT)
    # the recorded blocks live on the heap too: this run gets room for them; the heap
    # the firmware itself needs is measured on the board's budget in heap_use()
    out = subprocess.run(
        [firmware_build.micropython_command(), "-X", "heapsize=4M", str(script), str(config), str(samples)],
        capture_output=True,
        text=True,
        env={"MICROPYPATH": str(tree)},
        check=False,
    )
    if out.returncode:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    return json.loads(out.stdout)


def heap_use(tmp: Path) -> dict:
    (tmp / "heap").mkdir()
    rig = SimTap(tmp / "heap").start(tmp / "native")
    rig.ask(rig.plain("IDENTIFY"))
    return rig.stop()


def transfer_sweep(tmp: Path, relay) -> list[float]:
    runner = micropython_runner(tmp / "native")
    gaps = []
    for degrees in range(0, 360, 10):
        onset = 0.6 + degrees / 360 * CYCLE_S
        scenario = Scenario([Source(230, lost_at_s=onset), Source(230, phase_deg=-120)], Load(i_rms=16), relay, 0.7)
        _, plant = run(runner, tmp, scenario)
        gaps.append(supply_gap_s(plant, onset) * 1000)
    return gaps


def trip_errors(tmp: Path) -> list[tuple[int, float, float, float]]:
    runner = micropython_runner(tmp / "native")
    cases = []
    for curve in (1, 2, 3):
        for m in (2, 5, 10):
            expected = formula_s(curve, m, 0.1)
            cases.append(
                {
                    "curve": curve,
                    "pickup_mA": 32_000,
                    "tms_milli": 100,
                    "m": m,
                    "expected_s": expected,
                    "phases": [[m * 32_000, 80, int(expected / CYCLE_S * 1.2) + 5]],
                }
            )
    path = tmp / "trips.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    results = [json.loads(line) for line in runner("overload_run.py", str(path)).splitlines()]
    return [
        (c["curve"], c["m"], c["expected_s"], r["operated_at"] * CYCLE_S) for c, r in zip(cases, results, strict=True)
    ]


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        native = block_timing(tmp, plain=False)
        plain = block_timing(tmp, plain=True)
        heap = heap_use(tmp)
        sweeps = {
            name: transfer_sweep(tmp, relay) for name, relay in (("TE T92", TE_T92), ("Hongfa HFE20", HONGFA_HFE20))
        }
        trips = trip_errors(tmp)
    version = subprocess.run(
        [firmware_build.micropython_command(), "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(
        f"simulated, not measured on hardware: {platform.machine()}, CPython {platform.python_version()}, "
        f"MicroPython {version} unix port, heap {HEAP}\n"
    )
    per_block = {k: v["best_us"] / v["blocks"] for k, v in (("native", native), ("plain", plain))}
    blocks_per_window = native["blocks"] / max(native["windows"], 1)
    print(
        "| 4-input tap, 1 ms block (meter + loss + protection + relays) | us per block | us per 10-cycle window |"
        " bytes allocated per window |"
    )
    print("| --- | --- | --- | --- |")
    for name, result in (("@micropython.native (as flashed)", native), ("plain bytecode", plain)):
        key = "native" if result is native else "plain"
        print(
            f"| {name} | {per_block[key]:.1f} | {per_block[key] * blocks_per_window:.0f} |"
            f" {result['allocated'] / max(result['windows'], 1):.0f} |"
        )
    print(f"| ratio bytecode / native | {per_block['plain'] / per_block['native']:.2f}x | | |\n")
    print(
        f"heap: the tap application takes {heap['tap_heap_bytes']:,} bytes; {heap['heap_free_bytes']:,} of 190 KB "
        "stay free with everything loaded (64-bit port: objects are larger than on the RP2040)\n"
    )
    print("| relay (datasheet maxima) | worst gap ms | median gap ms | worst / ITIC 20 ms | worst / best RTS 12 ms |")
    print("| --- | --- | --- | --- | --- |")
    for name, gaps in sweeps.items():
        worst = max(gaps)
        print(
            f"| {name} | {worst:.1f} | {statistics.median(gaps):.1f} | {worst / ITIC_MS:.2f}x |"
            f" {worst / BEST_RTS_MS:.2f}x |"
        )
    print("\n| curve | I/Is | IEC formula s | firmware s | error |")
    print("| --- | --- | --- | --- | --- |")
    for curve, m, expected, got in trips:
        name = ("SI", "VI", "EI")[curve - 1]
        print(f"| {name} | {m} | {expected:.3f} | {got:.3f} | {100 * (got / expected - 1):+.1f}% |")


if __name__ == "__main__":
    main()
