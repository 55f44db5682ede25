"""Site simulator speed: simulated weeks per wall-clock second.

Run from the repository root: `.venv/bin/python benchmarks/site_speed.py` (about a
minute here). 1,000 and 5,000 racks on 16 sources (8 UPS modules, 4 generator sets,
4 battery strings as alternates only), sized to carry the load with headroom, real
load profiles with noise and bursts, at steps of 60, 10 and 1 s. Each case runs for a
simulated span long enough to time (a week at 60 s, shorter at finer steps), stepping
only, and again with a full read of telemetry and sources every simulated minute, as a
controller would. Prints a markdown table.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.model.site import Priority, Site, Source, SourceKind
from host.sim.site.build import RackGroup, build_site
from host.sim.site.simulator import SiteSimulator

WEEK_S = 7 * 86_400.0
RACKS = (1_000, 5_000)
STEPS_S = {60.0: WEEK_S, 10.0: WEEK_S / 7, 1.0: WEEK_S / 56}  # step -> simulated span timed
MEAN_RACK_KW = 7.0  # log-uniform 2..40 kW rated at 35..75% utilisation
HEADROOM = 1.6


def site(racks: int) -> Site:
    per_source = racks * MEAN_RACK_KW / 12 * HEADROOM
    sources = [Source(f"ups-{i}", SourceKind.UPS, per_source) for i in range(8)]
    sources += [Source(f"gen-{i}", SourceKind.GENERATOR, per_source) for i in range(4)]
    sources += [Source(f"bat-{i}", SourceKind.BATTERY, per_source, energy_kwh=per_source, recharge_kw=per_source / 20)
                for i in range(4)]
    primary = tuple(s.id for s in sources if s.kind != SourceKind.BATTERY)
    mix = ((Priority.CRITICAL, 0.2), (Priority.NORMAL, 0.6), (Priority.DEFERRABLE, 0.2))
    group = RackGroup("hall", racks, mix, primary=primary, inputs=3)
    return build_site(sources, [group], seed=1)


def run(racks: int, step_s: float, span_s: float, reads: bool) -> tuple[float, int]:
    """Wall seconds to simulate span_s, and the trips seen (a sanity check: few or none)."""
    sim = SiteSimulator(site(racks), step_s=step_s, seed=1)
    read_every = max(1, round(60.0 / step_s))
    steps = round(span_s / step_s)
    start = time.perf_counter()
    for k in range(steps):
        sim.step()
        if reads and k % read_every == 0:
            sim.read_telemetry()
            sim.read_sources()
    wall = time.perf_counter() - start
    trips = sum(1 for e in sim.read_events(0, 10**7).events if e.kind in ("source_tripped", "source_exhausted"))
    return wall, trips


def main() -> None:
    print(f"Site simulator speed, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print()
    print("| racks | step | simulated | stepping only: weeks/s | with reads every minute: weeks/s | trips |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for racks in RACKS:
        for step_s, span_s in STEPS_S.items():
            bare, trips = run(racks, step_s, span_s, reads=False)
            read, _ = run(racks, step_s, span_s, reads=True)
            weeks = span_s / WEEK_S
            print(f"| {racks:,} | {step_s:g} s | {span_s / 3600:g} h | {weeks / bare:.2f} | {weeks / read:.2f} | "
                  f"{trips} |", flush=True)


if __name__ == "__main__":
    main()
