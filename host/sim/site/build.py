"""A site from rack groups: many racks described by counts and ranges, wired to the
sources deterministically for a seed.

Within a group, rack i's input 1 goes to the group's primary sources in turn (so the
racks start spread evenly over them) and its other inputs to sources drawn at random
from the rest of the group's sources (a battery string is typically an alternate
only: it discharges while it carries racks). Priorities follow the group's shares exactly (largest remainder), in a
shuffled order; rated kW is log-uniform in its range (many small racks, few large),
path impedance uniform in its range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from host.model.site import Feed, Priority, Rack, Site, Source, Tap


@dataclass(frozen=True)
class RackGroup:
    name: str
    count: int
    priorities: tuple[tuple[Priority, float], ...] = ((Priority.NORMAL, 1.0),)  # shares
    sources: tuple[str, ...] = ()  # empty: every source of the site
    primary: tuple[str, ...] = ()  # the sources for input 1; empty: all of `sources`
    inputs: int = 2
    rated_kw: tuple[float, float] = (2.0, 40.0)
    impedance_ohm: tuple[float, float] = (0.01, 0.05)


def _priority_list(shares: dict[Priority, float], count: int, rng: np.random.Generator) -> list[Priority]:
    total = sum(shares.values())
    exact = {p: count * share / total for p, share in shares.items()}
    counts = {p: int(x) for p, x in exact.items()}
    by_remainder = sorted(exact, key=lambda p: exact[p] - counts[p], reverse=True)
    for p in by_remainder[: count - sum(counts.values())]:
        counts[p] += 1
    order = [p for p in shares for _ in range(counts[p])]
    return [order[i] for i in rng.permutation(len(order))]


def build_site(
    sources: Sequence[Source], groups: Sequence[RackGroup], seed: int, name: str = "site", voltage_v: float = 400.0
) -> Site:
    rng = np.random.default_rng([seed, 1])
    all_ids = tuple(s.id for s in sources)
    taps: list[Tap] = []
    racks: list[Rack] = []
    feeds: list[Feed] = []
    for group in groups:
        pool = group.sources or all_ids
        primary = group.primary or pool
        priorities = _priority_list(dict(group.priorities), group.count, rng)
        lo, hi = group.rated_kw
        rated = np.clip(np.exp(rng.uniform(np.log(lo), np.log(hi), group.count)), lo, hi)
        for i in range(group.count):
            rack_id = f"{group.name}-{i:05d}"
            tap_id = f"tap-{rack_id}"
            first = primary[i % len(primary)]
            others = [s for s in pool if s != first]
            chosen = [first, *(others[j] for j in rng.permutation(len(others))[: group.inputs - 1])]
            taps.append(Tap(tap_id, group.inputs))
            racks.append(Rack(rack_id, tap_id, priorities[i], float(rated[i]), group.name))
            impedance = rng.uniform(*group.impedance_ohm, group.inputs)
            feeds.extend(Feed(tap_id, k + 1, source, float(impedance[k])) for k, source in enumerate(chosen))
    return Site(tuple(sources), tuple(taps), tuple(racks), tuple(feeds), name=name, voltage_v=voltage_v)
