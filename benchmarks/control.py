"""The closed loop, scored: three controllers side by side on the site simulator.

Run from the repository root: `.venv/bin/python benchmarks/control.py` (every size,
family and seed: hours), or a part: `--sizes 200x6 --families sudden,growth --seeds 1
--days 7`. `--cpu` times ours alone per tick at 200, 2,000 and 10,000 racks.

The controllers, each on its own simulator of the same case:
1. reactive: the prior art. Each tap's alternates are set once, at commissioning (its
   other inputs, in wiring order); nothing moves until a fault, then only the taps'
   local failover acts.
2. naive: the rebalancer of the original concept (host/allocate/naive.py): racks off any
   source above the average load by a tolerance, and off a source whose fault is
   predicted. It runs in the same loop as ours (same telemetry, forecasts, risk alarms,
   executor and journal), with no hysteresis: no margin, no dwell, no weekly cap.
3. ours: host/control/ with the default policy.

The cases are drawn here from a seed, from ranges fixed before any of them was run and
read from nothing in the code under test: a site of UPS modules, a generator and
battery strings, sized for its load by a drawn headroom, with a third of the racks
crowded onto two sources at the start (as a hall filled over time is), real load
profiles, and one source loss in the week. Families:
- growth: a drawn share of racks steps up their load, twice, and keeps it;
- jobs: scheduled jobs on drawn racks, daily, known to the controllers in advance;
- degradation: a source degrades (a drawn family, shape and lead) and fails at its end;
- sudden: a source fails without warning;
- confounders: the sudden loss under benign confounders (hot afternoons, sensor
  dropouts, recalibration jumps sized by the sensors' own noise, a battery test);
- gaps: the sudden loss while whole-site telemetry gaps come and go.

Measured per run: unserved energy and rack-seconds dark; overload seconds (a source
carrying more than its capacity, summed over sources); worst utilisation; the share of
ticks at which every single source loss is survivable (every rack of the lost source
on a live alternate, every survivor within SURVIVOR_LIMIT of capacity, as the taps
would act at that moment); moves, and per rack per week; stranded reserve (capacity up
that no single loss would use, mean share of capacity up); CPU per tick of the
controller (process time of its tick, the simulator's stepping excluded).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.allocate.naive import solve_naive
from host.allocate.plan import make_plan
from host.allocate.problem import Problem
from host.control.controller import Controller
from host.control.planner import PlanChoice
from host.control.policy import ControlPolicy
from host.model.fleet import FleetTelemetry
from host.model.schedule import Job, LoadStep
from host.model.site import Priority, Site, Source, SourceKind
from host.sim.site.build import RackGroup, build_site
from host.sim.site.conditions import DEGRADING, FAMILIES, Condition, Family, Shape
from host.sim.site.health import BASELINES, SIGNALS
from host.sim.site.simulator import SiteSimulator
from host.store.control_store import ControlStore

DAY_S = 86_400.0
TICK_S = 60.0
SURVIVOR_LIMIT = 1.10  # the site's declared short-time limit for a survivor, the same for all three
SIZES = {"200x6": (200, 4, 1, 1), "2000x16": (2_000, 10, 3, 3)}  # racks, UPS, generators, batteries
FAMILY_NAMES = ("growth", "jobs", "degradation", "sudden", "confounders", "gaps")
CONTROLLERS = ("reactive", "naive", "ours")
MEAN_RACK_KW = 6.2  # log-uniform 2..20 kW rated at the default 35..75% utilisation
HEADROOM = (1.15, 1.45)  # capacity of the primaries after one loss over the mean load


@dataclass(frozen=True)
class Case:
    name: str
    site: Site
    seed: int
    days: float
    jobs: tuple[Job, ...] = ()
    load_steps: tuple[LoadStep, ...] = ()
    conditions: tuple[Condition, ...] = ()
    gaps: tuple[tuple[float, float], ...] = ()  # (start, end) of whole-site telemetry gaps

    def simulator(self) -> SiteSimulator:
        return SiteSimulator(self.site, step_s=TICK_S, seed=self.seed, jobs=self.jobs, load_steps=self.load_steps,
                             conditions=self.conditions, overload_allowance=SURVIVOR_LIMIT - 1.0)


def draw_site(size: str, rng: np.random.Generator, seed: int) -> Site:
    racks, ups, gens, bats = SIZES[size]
    primaries = ups + gens
    per_source = racks * MEAN_RACK_KW / (primaries - 1) * float(rng.uniform(*HEADROOM))
    sources = [Source(f"ups-{i + 1}", SourceKind.UPS, round(per_source)) for i in range(ups)]
    sources += [Source(f"gen-{i + 1}", SourceKind.GENERATOR, round(per_source * 1.2)) for i in range(gens)]
    sources += [Source(f"bat-{i + 1}", SourceKind.BATTERY, round(per_source), energy_kwh=round(per_source),
                       recharge_kw=round(per_source / 10)) for i in range(bats)]
    primary = tuple(s.id for s in sources if s.kind != SourceKind.BATTERY)
    mix = ((Priority.CRITICAL, 0.2), (Priority.NORMAL, 0.6), (Priority.DEFERRABLE, 0.2))
    crowded = racks // 3
    groups = [RackGroup("old", crowded, mix, primary=primary[:2], inputs=3, rated_kw=(2.0, 20.0)),
              RackGroup("new", racks - crowded, mix, primary=primary, inputs=3, rated_kw=(2.0, 20.0))]
    return build_site(sources, groups, seed=seed, name=size)


def draw_case(size: str, family: str, seed: int, days: float) -> Case:
    rng = np.random.default_rng([seed, FAMILY_NAMES.index(family), SIZES[size][0]])
    site = draw_site(size, rng, seed)
    n = len(site.racks)
    end = days * DAY_S
    primaries = [s for s in site.sources if s.kind != SourceKind.BATTERY]
    victim = primaries[int(rng.integers(len(primaries)))]
    conditions: list[Condition] = []
    steps: list[LoadStep] = []
    jobs: list[Job] = []
    gaps: list[tuple[float, float]] = []
    if family == "degradation":
        kinds = [f for f in DEGRADING if victim.kind in FAMILIES[f].kinds]
        chosen = kinds[int(rng.integers(len(kinds)))]
        start = float(rng.uniform(0.25, 0.5)) * end
        lead = float(rng.uniform(0.2, 0.4)) * end
        conditions.append(Condition(chosen, victim.id, start, start + lead,
                                    FAMILIES[chosen].magnitude * float(rng.uniform(0.7, 1.3)), fails=True,
                                    shape=tuple(Shape)[int(rng.integers(len(Shape)))]))
    else:
        conditions.append(Condition(Family.SUDDEN_FAILURE, victim.id, float(rng.uniform(0.3, 0.9)) * end))
    if family == "growth":
        for _ in range(2):
            racks = rng.choice(n, size=int(n * rng.uniform(0.15, 0.35)), replace=False).astype(np.int64)
            steps.append(LoadStep(racks, float(rng.uniform(0.1, 0.8)) * end, 1.0 + float(rng.uniform(0.15, 0.35))))
    if family == "jobs":
        for _ in range(int(rng.integers(2, 4))):
            racks = rng.choice(n, size=int(n * rng.uniform(0.1, 0.25)), replace=False).astype(np.int64)
            jobs.append(Job(racks, float(rng.uniform(0.2, 1.0)) * DAY_S, float(rng.uniform(2, 6)) * 3600,
                            float(rng.uniform(0.3, 0.6)), every_s=DAY_S))
    if family == "confounders":
        for _ in range(int(rng.integers(1, 3))):
            start = float(rng.integers(1, max(2, int(days)))) * DAY_S + float(rng.uniform(10, 14)) * 3600
            conditions.append(Condition(Family.HOT_AFTERNOON, None, start, start + float(rng.uniform(4, 10)) * 3600,
                                        float(rng.uniform(5.0, 12.0))))
        for _ in range(int(rng.integers(1, 4))):
            source = site.sources[int(rng.integers(len(site.sources)))]
            start = float(rng.uniform(0.15, 0.95)) * end
            conditions.append(Condition(Family.SENSOR_DROPOUT, source.id, start,
                                        start + float(rng.uniform(1, 12)) * 3600, signal="all"))
        for _ in range(int(rng.integers(1, 3))):
            source = site.sources[int(rng.integers(len(site.sources)))]
            readable = [j for j, b in enumerate(BASELINES[source.kind]) if not math.isnan(b[0])]
            j = readable[int(rng.integers(len(readable)))]
            size_ = float(rng.uniform(3.0, 8.0)) * BASELINES[source.kind][j][2] * (1 if rng.uniform() < 0.7 else -1)
            conditions.append(Condition(Family.RECALIBRATION_JUMP, source.id, float(rng.uniform(0.15, 0.95)) * end,
                                        magnitude=size_, signal=SIGNALS[j]))
        battery = next(s for s in site.sources if s.kind == SourceKind.BATTERY)
        start = float(rng.uniform(0.2, 0.8)) * end
        conditions.append(Condition(Family.MAINTENANCE_TEST, battery.id, start, start + 1800,
                                    float(rng.uniform(0.3, 0.8)) * battery.capacity_kw))
    if family == "gaps":
        loss = conditions[0].start_s
        for _ in range(int(rng.integers(2, 5))):
            start = float(rng.uniform(0.1, 0.95)) * end
            gaps.append((start, start + float(rng.uniform(5, 30)) * 60))
        gaps.append((loss - 120.0, loss + float(rng.uniform(3, 15)) * 60))  # the loss falls inside one
    return Case(f"{size} {family} s{seed}", site, seed, days, tuple(jobs), tuple(steps), tuple(conditions),
                tuple(gaps))


class GappyFleet:
    """The simulator with its telemetry blanked (every rack unread) during the case's gaps."""

    def __init__(self, sim: SiteSimulator, gaps: tuple[tuple[float, float], ...]) -> None:
        self._sim = sim
        self._gaps = gaps

    def __getattr__(self, name: str) -> object:  # every other part of the fleet passes through
        return getattr(self._sim, name)

    def read_telemetry(self) -> FleetTelemetry:
        telemetry = self._sim.read_telemetry()
        t = self._sim.time_s
        if any(a <= t < b for a, b in self._gaps):
            return replace(telemetry, draw_kw=np.full(len(telemetry.rack_ids), np.nan))
        return telemetry


def choose_naive(problem: Problem, margin: float) -> PlanChoice:
    """The naive rebalancer's plan, always taken (it has no hysteresis)."""
    plan = make_plan(problem, solve_naive(problem))
    return PlanChoice(plan, plan, "plan", "naive: balance to the average", problem)


NAIVE_POLICY = ControlPolicy(dwell_s=0.0, moves_per_week=10_000, margin=0.0)


@dataclass
class Score:
    unserved_kwh: float = 0.0
    dark_rack_s: float = 0.0
    overload_s: float = 0.0
    worst_utilisation: float = 0.0
    covered_ticks: int = 0
    ticks: int = 0
    moves: int = 0
    stranded_share: list[float] = field(default_factory=list)
    tick_cpu_s: list[float] = field(default_factory=list)


def commission(sim: SiteSimulator) -> None:
    """The prior art's alternates: each tap's other inputs, in wiring order, set once."""
    telemetry = sim.read_telemetry()
    for i, rack_id in enumerate(telemetry.rack_ids):
        active = telemetry.active_source(rack_id)
        others = [telemetry.source_ids[s] for s in telemetry.input_source[i] if s >= 0]
        if active is not None:
            sim.set_alternates(rack_id, active, [s for s in others if s != active])


def run(case: Case, controller: str) -> Score:
    sim = case.simulator()
    commission(sim)  # every controller starts from the commissioned site
    score = Score()
    loop = None
    if controller != "reactive":
        fleet = GappyFleet(sim, case.gaps)
        policy = NAIVE_POLICY if controller == "naive" else ControlPolicy()
        loop = Controller(fleet, ControlStore.open(None), policy, jobs=case.jobs, clock=lambda: sim.time_s,
                          sleep=lambda s: None, **({"choose_plan": choose_naive} if controller == "naive" else {}))
    end = case.days * DAY_S
    capacity = np.array([s.capacity_kw for s in case.site.sources])
    while sim.time_s + 1e-9 < end:
        if loop is not None:
            cpu = time.process_time()
            report = loop.tick()
            score.tick_cpu_s.append(time.process_time() - cpu)
            score.moves += report.moves
        survivable, weighed, stranded_kw = sim.single_losses(SURVIVOR_LIMIT)
        score.ticks += 1
        score.covered_ticks += survivable == weighed
        up = np.array([st.up for st in sim.read_sources().values()])
        score.stranded_share.append(stranded_kw / max(float(capacity[up].sum()), 1e-9))
        sim.step()
    stats = sim.stats()
    score.unserved_kwh = sum(stats.unserved_kwh.values())
    score.dark_rack_s = stats.dark_rack_s
    score.overload_s = sum((stats.overload_s or {}).values())
    score.worst_utilisation = stats.worst_utilisation
    return score


def row(case: Case, controller: str, score: Score) -> str:
    racks = len(case.site.racks)
    per_rack_week = score.moves / racks / (case.days / 7)
    cpu = f"{statistics.fmean(score.tick_cpu_s) * 1e3:.1f} / {max(score.tick_cpu_s) * 1e3:.0f}" \
        if score.tick_cpu_s else "-"
    return (f"| {case.name} | {controller} | {score.unserved_kwh:.1f} | {score.dark_rack_s:,.0f} | "
            f"{score.overload_s:,.0f} | {score.worst_utilisation:.2f} | "
            f"{100 * score.covered_ticks / max(score.ticks, 1):.1f}% | {score.moves} | {per_rack_week:.3f} | "
            f"{100 * statistics.fmean(score.stranded_share):.1f}% | {cpu} |")


def cpu_per_tick(racks: int, hours: float) -> tuple[float, float, float]:
    """Ours alone on a site of `racks` racks for `hours`: mean and worst CPU per tick (s),
    and the mean over the period as a share of one core."""
    sources = 6 if racks <= 200 else 16
    size = f"{racks}x{sources}"
    ups, gens, bats = (4, 1, 1) if sources == 6 else (10, 3, 3)
    SIZES.setdefault(size, (racks, ups, gens, bats))
    case = draw_case(size, "sudden", 1, hours / 24)
    score = run(case, "ours")
    mean = statistics.fmean(score.tick_cpu_s)
    return mean, max(score.tick_cpu_s), mean / TICK_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--families", default=",".join(FAMILY_NAMES))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--cpu", action="store_true", help="time ours per tick at 200, 2,000 and 10,000 racks")
    parser.add_argument("--cpu-hours", type=float, default=6.0)
    args = parser.parse_args()
    print(f"Closed loop, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print()
    if args.cpu:
        print("| racks | simulated | CPU per tick: mean | worst | mean share of one core at 60 s |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for racks in (200, 2_000, 10_000):
            mean, worst, share = cpu_per_tick(racks, args.cpu_hours)
            print(f"| {racks:,} | {args.cpu_hours:g} h | {mean * 1e3:.1f} ms | {worst * 1e3:.0f} ms | "
                  f"{100 * share:.2f}% |", flush=True)
        return
    print("| case | controller | unserved kWh | rack-s dark | overload s | worst util | N-1 covered | moves | "
          "moves/rack/week | stranded | CPU/tick ms mean / worst |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes.split(","):
        for family in args.families.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                case = draw_case(size, family, seed, args.days)
                for controller in CONTROLLERS:
                    print(row(case, controller, run(case, controller)), flush=True)


if __name__ == "__main__":
    main()
