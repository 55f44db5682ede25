"""How the fleet reaches each rack and each monitored source: its tap's address and the
wiring of that tap's inputs, from the site model and the taps' records."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

import numpy as np

from host.model.site import Site
from protocol import catalog


class HasAddress(Protocol):
    """A tap record that carries its bus address (the rig's `RigTap`, an inventory row)."""

    @property
    def address(self) -> int: ...


@dataclass(frozen=True)
class Route:
    """How to reach one rack: its tap's address, and the wiring of that tap's inputs."""

    rack_id: str
    address: int
    source_of: Mapping[int, str]  # input (1-based) -> source id
    input_of: Mapping[str, int]  # source id -> input
    tap_id: str = ""
    segment: str = ""  # the bus segment its tap is on: which client reaches it

    @property
    def n_inputs(self) -> int:
        return len(self.source_of)


def segment_of(value: object, segments: Collection[str]) -> str:
    """The segment a tap record names (`segment`, or an inventory row's `bus`); with one
    segment, that one."""
    if len(segments) == 1:
        return next(iter(segments))
    named = getattr(value, "segment", None) or getattr(value, "bus", None)
    if not isinstance(named, str) or named not in segments:
        raise ValueError(f"a tap record names segment {named!r}; the fleet's segments are {', '.join(segments)}")
    return named


def routes_for(site: Site, taps: Mapping[str, int | HasAddress], segments: Collection[str] = ("",)) -> dict[str, Route]:
    """Each rack's route, from `taps` keyed by rack id or tap id; every rack needs one, and
    no two on one segment share an address."""
    tap_to_rack = {rack.tap_id: rack.id for rack in site.racks}
    addresses: dict[str, int] = {}
    where: dict[str, str] = {}
    problems: list[str] = []
    for key, value in taps.items():
        rack_id = key if key in site.rack_index else tap_to_rack.get(key)
        if rack_id is None:
            problems.append(f"{key!r} is neither a rack nor a rack's tap of the site")
            continue
        address = value if isinstance(value, int) else value.address
        if not catalog.ADDR_TAP_MIN <= address <= catalog.ADDR_TAP_MAX:
            problems.append(f"rack {rack_id!r}: address {address} is not a tap's")
        addresses[rack_id] = address
        try:
            where[rack_id] = segment_of(value, segments)
        except ValueError as exc:
            problems.append(f"rack {rack_id!r}: {exc}")
    missing = [rack.id for rack in site.racks if rack.id not in addresses]
    if missing:
        problems.append(f"no address for racks {', '.join(missing)}")
    used: dict[tuple[str, int], str] = {}
    for rack_id, address in addresses.items():
        slot = (where.get(rack_id, ""), address)
        if slot in used:
            problems.append(f"racks {used[slot]!r} and {rack_id!r} share address {address}")
        used[slot] = rack_id
    if problems:
        raise ValueError("; ".join(problems))
    routes = {}
    for rack in site.racks:
        feeds = site.feeds_of(rack.id)
        routes[rack.id] = Route(
            rack.id,
            addresses[rack.id],
            MappingProxyType({f.input: f.source_id for f in feeds}),
            MappingProxyType({f.source_id: f.input for f in feeds}),
            rack.tap_id,
            where[rack.id],
        )
    return routes


def monitor_addresses(site: Site, monitors: Mapping[str, int | HasAddress], routes: Mapping[str, Route],
                      segments: Collection[str] = ("",)) -> dict[str, tuple[str, int]]:
    """Each monitored source's monitor (segment, address): known sources, taps' addresses,
    none shared with a rack's tap or another monitor on its segment."""
    problems: list[str] = []
    racks_at = {(route.segment, route.address): rack_id for rack_id, route in routes.items()}
    used: dict[tuple[str, int], str] = {}
    out: dict[str, tuple[str, int]] = {}
    for source_id, value in monitors.items():
        address = value if isinstance(value, int) else value.address
        try:
            segment = segment_of(value, segments)
        except ValueError as exc:
            problems.append(f"monitor of {source_id!r}: {exc}")
            continue
        key = (segment, address)
        if source_id not in site.source_index:
            problems.append(f"monitor of {source_id!r}: the site has no such source")
        elif not catalog.ADDR_TAP_MIN <= address <= catalog.ADDR_TAP_MAX:
            problems.append(f"monitor of {source_id!r}: address {address} is not a tap's")
        elif key in racks_at:
            problems.append(f"monitor of {source_id!r}: address {address} is the tap of rack {racks_at[key]!r}")
        elif key in used:
            problems.append(f"monitors of {used[key]!r} and {source_id!r} share address {address}")
        else:
            used[key] = source_id
            out[source_id] = key
    if problems:
        raise ValueError("; ".join(problems))
    return out


def input_sources(site: Site, routes: Mapping[str, Route]) -> np.ndarray:
    """The source index of every input of every rack's tap, -1 where none (the simulator's layout)."""
    out = np.full((len(site.racks), max(site.max_inputs, 1)), -1, dtype=np.int64)
    for r, rack in enumerate(site.racks):
        for k, source_id in routes[rack.id].source_of.items():
            out[r, k - 1] = site.source_index[source_id]
    return out
