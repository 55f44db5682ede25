"""What an operator command needs opened: the inventory, the two buses of a segment, a client.

A command names the inventory (`--db`, else `$IBT_DB`, else `ibt.db` here) and the buses:
either serial ports (`--bus-a`, `--bus-b`, `--baud`) or a running virtual rig (`--rig DIR`,
whose `rig.json` names its buses' devices and baud). The client signs with the keys the
inventory holds for the tap's bus segment, in the controller's epoch.

The controller epoch must survive the process (SPEC.md, "Controller epoch"): it lives in
the inventory's controller table, written durably before a command depends on it.

Every failure an operator can cause (a missing port, an unknown tap, a bad rig
directory) is an `OperatorError` whose message is one line naming the likely cause.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.bus.link import RedundantLink
from host.bus.transport import SerialSettings, SerialTransport, TransportError
from host.client.keys import NoKey
from host.client.replies import Reply
from host.client.tap_client import TapClient
from host.client.tap_errors import FencedOut
from host.model.errors import FencingError, OperatorError
from host.ops.journal import journalled
from host.store.inventory import Inventory
from host.store.records import InventoryError, TapInfo, UnknownTap
from protocol import catalog

DB_ENV = "IBT_DB"
DEFAULT_DB = "ibt.db"
FIRST_EPOCH = 1  # a controller's first epoch: above the 0 of a freshly flashed tap
RIG_FILE = "rig.json"  # where a virtual rig (host/sim/rig) publishes its buses for `--rig DIR`
RIG_TIMEOUT_S = 1.0  # per exchange on a virtual rig: its taps run slowly on a loaded machine


def db_path(option: str | Path | None) -> Path:
    """`--db`, else $IBT_DB, else ibt.db in the current directory."""
    return Path(option or os.environ.get(DB_ENV) or DEFAULT_DB)


def open_inventory(path: str | Path | None, *, create: bool = False) -> Inventory:
    """The inventory; a missing file is refused unless `create` (a typo would otherwise make an empty one)."""
    where = db_path(path)
    if not create and not where.exists():
        raise OperatorError(f"no inventory at {where}: give --db or set {DB_ENV}, or import a site first "
                            "(`ibt commission --site FILE` creates it)")
    try:
        return Inventory.open(where)
    except InventoryError as exc:
        raise OperatorError(str(exc)) from None


# -- the controller's own state ------------------------------------------------------------------


class ControllerState:
    """Small durable values the controller keeps in the inventory: the epoch, and per tap
    the reference points its calibrations were fitted from (the calibration itself is
    the tap's: SET_CALIBRATION, read back with READ_SETTINGS)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    @property
    def epoch(self) -> int:
        return int(self.inventory.controller_value("epoch", FIRST_EPOCH))

    def set_epoch(self, epoch: int) -> None:
        if not 0 <= epoch <= 0xFFFF_FFFF:
            raise OperatorError(f"an epoch is 0 to {0xFFFF_FFFF} (got {epoch})")
        self.inventory.set_controller_value("epoch", epoch)

    def calibration_points(self, tap_id: str) -> dict[str, list[list[float]]]:
        """Per channel name, the (raw RMS in ADC counts, reference) points taken so far."""
        found = self.inventory.controller_value("calibration_points", {}).get(tap_id)
        if not isinstance(found, dict):
            return {}
        return {str(channel): [[float(raw), float(reference)] for raw, reference in points]
                for channel, points in found.items()}

    def set_calibration_points(self, tap_id: str, points: dict[str, list[list[float]]]) -> None:
        with self.inventory.transaction():
            stored = self.inventory.controller_value("calibration_points", {})
            stored[tap_id] = points
            self.inventory.set_controller_value("calibration_points", stored)


# -- the buses ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusPorts:
    """The serial devices of buses A and B of one segment, and their baud rate."""

    a: str
    b: str
    baud: int = catalog.DEFAULT_BAUD
    virtual: bool = False  # a virtual rig's ptys: no USB latency, a patient timeout


SegmentPorts = dict[str, BusPorts]  # per bus segment, its ports


def rig_ports(rig_dir: str | Path) -> SegmentPorts:
    """The buses of every segment of the virtual rig running in `rig_dir` (its rig.json)."""
    path = Path(rig_dir) / RIG_FILE
    try:
        data = json.loads(path.read_text())
        baud = int(data.get("baud", catalog.DEFAULT_BAUD))
        return {str(name): BusPorts(str(buses["A"]), str(buses["B"]), baud, virtual=True)
                for name, buses in dict(data["segments"]).items()}
    except FileNotFoundError:
        raise OperatorError(f"no virtual rig in {rig_dir} (no {RIG_FILE}): start one with `ibt sim`") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OperatorError(f"{path}: not a rig file ({exc})") from None


def bus_ports(bus_a: str | None, bus_b: str | None, baud: int,
              rig: str | Path | None) -> BusPorts | SegmentPorts | None:
    """The ports the options name: a rig directory (every segment of it), both serial
    ports of one segment, or none (the inventory's stored ports serve)."""
    if rig is not None:
        if bus_a or bus_b:
            raise OperatorError("give either --rig or --bus-a/--bus-b, not both")
        return rig_ports(rig)
    if not bus_a and not bus_b:
        return None
    if not bus_a or not bus_b:
        missing = "--bus-a" if not bus_a else "--bus-b"
        raise OperatorError(f"no {missing}: name the serial ports of both buses A and B (or --rig DIR for a "
                            "virtual rig)")
    return BusPorts(bus_a, bus_b, baud)


# -- a session ---------------------------------------------------------------------------------------


@dataclass
class Session:
    """An open inventory and, once asked for, the buses and a client for each segment.

    `client(segment)` opens the segment's buses on first use; `close()` closes all of it.
    A segment's ports are, in this order: the rig's (`ports` per segment), the pair given
    (`ports`, for `ports_segment`, or the inventory's only segment), or those stored in the
    inventory (`ibt segment set`).
    """

    inventory: Inventory
    ports: BusPorts | SegmentPorts | None = None
    timeout: float | None = None
    ports_segment: str | None = None  # the segment the one pair given serves
    offline: bool = False  # reach no bus, not even by the inventory's stored ports
    state: ControllerState = field(init=False)
    _links: dict[str, tuple[dict[str, SerialTransport], RedundantLink, TapClient]] = field(
        init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.state = ControllerState(self.inventory)
        pairs = self.ports.values() if isinstance(self.ports, dict) else [self.ports] if self.ports else []
        if self.timeout is None and any(p.virtual for p in pairs):
            self.timeout = RIG_TIMEOUT_S

    @classmethod
    def open(cls, db: str | Path | None, ports: BusPorts | SegmentPorts | None = None, *, create: bool = False,
             timeout: float | None = None, segment: str | None = None, offline: bool = False) -> Session:
        return cls(open_inventory(db, create=create), ports, timeout, segment, offline)

    def close(self) -> None:
        for transports, _, _ in self._links.values():
            for transport in transports.values():
                transport.close()
        self._links.clear()
        self.inventory.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lookups ---------------------------------------------------------------------------

    def tap(self, ref: str) -> TapInfo:
        """A tap by id, or by unique id (16 hex digits); one line with suggestions if none."""
        try:
            return self.inventory.tap(ref)
        except UnknownTap as exc:
            hint = f"did you mean {', '.join(exc.suggestions)}?" if exc.suggestions else _known_taps(self.inventory)
            raise OperatorError(f"no tap {ref!r} in the inventory {self.inventory.path} ({hint})") from None
        except InventoryError as exc:
            raise OperatorError(str(exc)) from None

    def segments(self) -> list[str]:
        return sorted({tap.bus for tap in self.inventory.taps()})

    @property
    def epoch(self) -> int:
        return self.state.epoch

    # -- the buses -------------------------------------------------------------------------

    def transports(self, segment: str) -> dict[str, SerialTransport]:
        return self._open(segment)[0]

    def client(self, segment: str) -> TapClient:
        """The client for a segment's taps: its keys from the inventory, in the controller's epoch."""
        return self._open(segment)[2]

    def _open(self, segment: str) -> tuple[dict[str, SerialTransport], RedundantLink, TapClient]:
        if segment in self._links:
            return self._links[segment]
        ports = self.ports_for(segment)
        transports: dict[str, SerialTransport] = {}
        latency = 0.0 if ports.virtual else SerialSettings("").usb_latency_s
        try:
            for name, port in (("A", ports.a), ("B", ports.b)):
                settings = SerialSettings(port, baudrate=ports.baud, name=name, usb_latency_s=latency)
                transports[name] = SerialTransport(settings).open()
        except TransportError as exc:
            for transport in transports.values():
                transport.close()
            raise OperatorError(f"segment {segment}, bus {name}: {exc}") from None
        link = RedundantLink(transports["A"], transports["B"])
        client = TapClient(link, self.inventory.key_store(segment), epoch=self.epoch, timeout=self.timeout)
        self._links[segment] = (transports, link, client)
        return self._links[segment]

    def can_reach(self, segment: str) -> bool:
        """Whether this session has ports for the segment's buses."""
        try:
            self.ports_for(segment)
        except OperatorError:
            return False
        return True

    def ports_for(self, segment: str) -> BusPorts:
        """A segment's ports (see the class docstring); one line naming the way to give them if none."""
        if self.offline:
            raise OperatorError("this command reads the inventory only: it reaches no bus")
        if isinstance(self.ports, dict):
            if segment in self.ports:
                return self.ports[segment]
            raise OperatorError(f"the rig has no segment {segment!r} (segments: {', '.join(self.ports) or 'none'})")
        if self.ports is not None:
            serves = self.ports_segment
            if serves is None:
                segments = self.segments()
                if len(segments) > 1:
                    raise OperatorError(f"the inventory has several bus segments ({', '.join(segments)}): name the one "
                                        "--bus-a/--bus-b serve with --segment, or store each segment's ports with "
                                        "`ibt segment set`")
                serves = self.ports_segment = segments[0] if segments else segment
            if serves == segment:
                return self.ports
        stored = self.inventory.segment_ports().get(segment)
        if stored is not None:
            return BusPorts(*stored)
        raise OperatorError(f"no buses for segment {segment!r}: give --bus-a and --bus-b (or --rig DIR), or store "
                            f"them once with `ibt segment set {segment} --bus-a PORT --bus-b PORT`")

    # -- signed commands ---------------------------------------------------------------------

    def align_epoch(self, tap: TapInfo, tap_epoch: int) -> None:
        """Bring the tap to the controller's epoch before a command (raise it if it is behind);
        a tap ahead of us belongs to another controller, and is left alone."""
        client = self.client(tap.bus)
        if tap_epoch > client.epoch:
            raise FencingError(f"tap {tap.id} is in epoch {tap_epoch}, above this controller's {client.epoch}: "
                                "another controller owns it (SPEC.md, \"Controller epoch\"); nothing was sent")
        if tap_epoch < client.epoch:
            self.command(tap, "RAISE_EPOCH", {"new_epoch": client.epoch}, lambda: client.raise_epoch(tap_address(tap)))

    def command(self, tap: TapInfo, message: str, fields: dict[str, Any], send: Callable[[], Reply]) -> Reply:
        """Send one signed command, journalled in the inventory's history (host/ops/journal.py)."""
        try:
            return journalled(self.inventory, tap.id, message, fields, send, self.client(tap.bus))
        except FencedOut as exc:
            raise FencingError(f"tap {tap.id}: {exc.text}: another controller owns the site; "
                               "this one sends nothing more") from None
        except (NoKey, InventoryError) as exc:
            raise OperatorError(f"tap {tap.id}: {message} not sent: {exc}") from None

    @contextmanager
    def epoch_of(self, segment: str, epoch: int) -> Iterator[TapClient]:
        """The segment's client signing in another epoch for a while (a fresh tap's 0)."""
        client = self.client(segment)
        saved = client.epoch
        client.epoch = epoch
        try:
            yield client
        finally:
            client.epoch = saved


def tap_address(tap: TapInfo) -> int:
    """The tap's address, or one line saying it has none yet."""
    if tap.address is None:
        raise OperatorError(f"tap {tap.id} has no address in the inventory: commission it first")
    return tap.address


def _known_taps(inventory: Inventory) -> str:
    ids = [tap.id for tap in inventory.taps()]
    if not ids:
        return "the inventory has no taps: import a site file first"
    return "known: " + ", ".join(ids[:12]) + (", ..." if len(ids) > 12 else "")
