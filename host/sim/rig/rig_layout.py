"""What a virtual rig is made of: its taps and monitors as the rig runs them, and the
layout taken from a site file or from a count of taps and sources."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from host.model.errors import IbtError
from host.model.site import Site
from host.sim.rig.rig_parts import RigPlantError
from host.sim.rig.rig_plant import default_site

CONTROL_SOCKET = "control.sock"
DEFAULT_SEGMENT = "seg-1"  # the bus segment of a tap the layout puts on none
CONTROL_LINE_LIMIT = 1 << 16


class RigError(IbtError):
    """The rig cannot do what was asked; the message is one line with the likely cause."""


@dataclass(frozen=True)
class RigTap:
    """What the host needs to talk to one tap of the rig, and where its files are. A
    monitor tap has no rack (""), its one input is the source it `monitors`."""

    id: str
    rack: str
    address: int
    unique_id: str  # hex, 8 bytes
    key: str  # hex, 32 bytes: the tap's HMAC key
    epoch: int
    inputs: tuple[str, ...]  # source ids, input 1 first
    flash: str  # the tap's flash directory
    log: str  # what its MicroPython process printed
    monitors: str | None = None  # a monitor tap: the source it is fitted to
    segment: str = DEFAULT_SEGMENT  # the bus segment (pair of buses A and B) it is on

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)

    @property
    def unique_id_bytes(self) -> bytes:
        return bytes.fromhex(self.unique_id)


@dataclass(frozen=True)
class RigLayout:
    """The site plus what a site file adds for the rig: phases, frequency, and commissioned
    addresses and unique ids by tap id (the rig picks its own where none is given)."""

    site: Site
    hz: float = 50.0
    phases_deg: Mapping[str, float] | None = None
    addresses: Mapping[str, int] | None = None
    unique_ids: Mapping[str, bytes] | None = None
    # A deliberately miswired feed, by tap id: the sources its inputs are really wired to,
    # input 1 first, where the site says otherwise (commissioning must catch it).
    wiring: Mapping[str, tuple[str, ...]] | None = None
    # Taps flashed by the host (host/ops/flash.py, a sim board's flash directory), by tap id:
    # their config.json and key.json come from there (an unflashed address stays unassigned,
    # as a fresh board's does) instead of the rig's own address, epoch and fresh key.
    flashed: Mapping[str, Path] | None = None
    # Monitor taps, by tap id: the source each is fitted to. Their addresses and unique ids
    # come from `addresses` and `unique_ids` as the rack taps' do.
    monitors: Mapping[str, str] | None = None
    # The bus segment of each tap, by tap id (the site file's `bus`): each segment is its
    # own pair of buses A and B. A tap not named is on DEFAULT_SEGMENT.
    segments: Mapping[str, str] | None = None

    def segment_of(self, tap_id: str) -> str:
        return (self.segments or {}).get(tap_id, DEFAULT_SEGMENT)

    @property
    def segment_names(self) -> list[str]:
        """Every segment a tap of the layout is on, in the order of first use."""
        tap_ids = [rack.tap_id for rack in self.site.racks] + list(self.monitors or {})
        return list(dict.fromkeys(self.segment_of(t) for t in tap_ids))


def load_site_file(path: Path) -> RigLayout:
    """A rig layout from a site file (host/model/site_file.py; sites/demo.toml): its rack taps
    and its monitor taps."""
    from host.model import site_file  # only `--site` needs the site file reader

    try:
        parsed = site_file.load_site_file(path)
    except OSError as exc:
        raise RigError(f"cannot read site file {path}: {exc.strerror}") from None
    except site_file.SiteFileError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        raise RigError(f"site file refused: {exc.problems[0]}{more}") from None
    rack_taps = [t for t in parsed.taps if t.rack is not None]
    monitor_taps = [t for t in parsed.taps if t.role == site_file.TapRole.MONITOR and t.monitors is not None]
    taps = rack_taps + monitor_taps
    return RigLayout(
        parsed.site,
        float(parsed.frequency_hz),
        dict(parsed.phase_deg),
        {t.id: t.address for t in taps},
        {t.id: t.unique_id for t in taps if t.unique_id is not None},
        monitors={t.id: t.monitors for t in monitor_taps if t.monitors is not None},
        segments={t.id: t.bus for t in taps},
    )


def layout_of(site: Site | RigLayout | tuple[int, int]) -> RigLayout:
    if isinstance(site, RigLayout):
        return site
    if isinstance(site, Site):
        return RigLayout(site)
    n_taps, n_sources = site
    try:
        return RigLayout(default_site(n_taps, n_sources))
    except RigPlantError as exc:
        raise RigError(str(exc)) from None


def unique_id_of(site_name: str, tap_id: str) -> bytes:
    """A stable 8-byte unique id per site and tap, so a rig restarted keeps its ids."""
    return hashlib.sha256(f"{site_name}/{tap_id}".encode()).digest()[:8]


def safe_name(index: int, tap_id: str) -> str:
    kept = "".join(c if c.isalnum() or c in "-_." else "_" for c in tap_id)[:40]
    return f"{index + 1:03d}-{kept}"
