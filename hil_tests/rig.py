"""The rig the hardware-in-the-loop tests talk to, virtual or real, behind one interface.

A test asks for `rig` and uses what every rig has: its taps (address, key, the source
on each input), a TapClient over a RedundantLink of buses A and B, and the transports
underneath. What only some rigs can do (inject a source loss, cut a bus, read the
plant's truth) is a capability: `rig.require(...)` skips the test cleanly on a rig
without it, so the same test file runs on the virtual rig and on a bench.

- `virtual` (default): host/sim/rig/virtual_rig.py's VirtualRig, taps running the compiled firmware on
  MicroPython, a plant, virtual buses; every capability.
- `serial:PORT_A[,PORT_B]`: real taps on USB-RS485 adapters. Their addresses, keys and
  wiring come from the inventory that `ibt flash`/`ibt commission` filled (`--rig-db`,
  `--rig-bus`); no plant truth and no fault injection, unless the bench provides them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from host.bus.link import RedundantLink
from host.bus.transport import SerialSettings, SerialTransport
from host.client.keys import MemoryKeys, TapKeys
from host.client.tap_client import TapClient
from host.model.site import Site
from host.sim.rig.virtual_rig import VirtualRig

# Wall-clock patience for what the firmware does within a few simulated cycles: only a
# failing test waits it out; the taps run slower than real time on a loaded machine.
PATIENCE_S = 60.0

INJECT_SOURCE = "inject_source"  # lose and restore a source
INJECT_BUS = "inject_bus"  # cut a bus, bit errors, dropped bytes
PLANT_TRUTH = "plant_truth"  # what the plant really did: voltages, loads, relay commands
SWITCHING = "switching"  # relays may be moved (a bench with loads on its outputs)

T = TypeVar("T")


@dataclass(frozen=True)
class RigTap:
    id: str
    address: int
    key: bytes
    inputs: tuple[str, ...]  # source ids, input 1 first


class Rig:
    """What every rig offers; subclasses add capabilities."""

    name = "rig"
    capabilities: frozenset[str] = frozenset()
    timeout_s: float | None = None  # per try; None: the transport's, computed from baud and frame sizes

    def __init__(self, taps: list[RigTap], transports: dict[str, SerialTransport], epoch: int,
                 keys: TapKeys | None = None) -> None:
        self.taps = taps
        self.transports = transports
        self.link = RedundantLink(transports["A"], transports.get("B", transports["A"]))
        self.epoch = epoch
        self.keys = keys or MemoryKeys({t.address: t.key for t in taps})
        self.client = self.new_client()

    def new_client(self, keys: TapKeys | None = None, epoch: int | None = None) -> TapClient:
        """A client over the rig's link; by default with the rig's key store and epoch."""
        return TapClient(self.link, keys or self.keys, epoch=self.epoch if epoch is None else epoch,
                         timeout=self.timeout_s)

    def require(self, *capabilities: str) -> None:
        missing = sorted(set(capabilities) - self.capabilities)
        if missing:
            pytest.skip(f"the {self.name} rig cannot: {', '.join(missing)}")

    def tap(self, tap_id: str) -> RigTap:
        return next(t for t in self.taps if t.id == tap_id)

    def on_source(self, source: str) -> list[RigTap]:
        """Taps whose input 1 (where they start) is on `source`."""
        return [t for t in self.taps if t.inputs[0] == source]

    # capabilities; the base rig has none of them
    def lose(self, source: str) -> None:
        self.require(INJECT_SOURCE)

    def restore(self, source: str) -> None:
        self.require(INJECT_SOURCE)

    def bus_fault(self, bus: str, kind: str, **params: Any) -> None:
        self.require(INJECT_BUS)

    def closings(self, tap_id: str) -> list[int]:
        """Inputs whose relay the tap commanded closed, in order (plant truth)."""
        self.require(PLANT_TRUTH)
        return []

    def truth(self) -> dict[str, Any]:
        self.require(PLANT_TRUTH)
        return {}

    @contextmanager
    def host_disconnected(self) -> Iterator[None]:
        """The host's ports closed: the taps hear nothing (heartbeats included)."""
        for transport in self.transports.values():
            transport.close()
        try:
            yield
        finally:
            for transport in self.transports.values():
                transport.open()

    def close(self) -> None:
        self.link.close()


class VirtualRigUnderTest(Rig):
    name = "virtual"
    capabilities = frozenset({INJECT_SOURCE, INJECT_BUS, PLANT_TRUTH, SWITCHING})
    # A sim tap is a MicroPython process sharing two cores with the test and the other
    # taps: on a loaded machine it can miss the 10 ms turnaround a board keeps, so each try
    # waits longer here. The bus timing itself is measured by benchmarks/bus.py.
    timeout_s = 0.5

    def __init__(self, rig: VirtualRig) -> None:
        self.rig = rig
        taps = [RigTap(t.id, t.address, t.key_bytes, t.inputs) for t in rig.taps]
        transports = {
            name: SerialTransport(SerialSettings(port=path, usb_latency_s=0.0, name=name)).open()
            for name, path in sorted(rig.bus_paths.items())
        }
        super().__init__(taps, transports, epoch=rig.taps[0].epoch)

    def lose(self, source: str) -> None:
        self.rig.inject("lose", source)

    def restore(self, source: str) -> None:
        self.rig.inject("restore", source)

    def bus_fault(self, bus: str, kind: str, **params: Any) -> None:
        self.rig.inject(kind, bus, **params)

    def closings(self, tap_id: str) -> list[int]:
        return [k for _, k, closed in self.rig.plant.plants[tap_id].commands if closed]

    def parallel_events(self, tap_id: str) -> list[Any]:
        return list(self.rig.plant.plants[tap_id].parallel_events)

    def truth(self) -> dict[str, Any]:
        return self.rig.plant.snapshot()

    def close(self) -> None:
        super().close()
        self.rig.close()


class SerialRig(Rig):
    """Real taps on serial ports; what they are comes from the inventory."""

    name = "serial"
    capabilities = frozenset({SWITCHING})

    def __init__(self, ports: list[str], db: Path, bus: str | None, baud: int) -> None:
        from host.store.inventory import Inventory  # only a bench needs the inventory

        self.inventory = Inventory.open(db)
        infos = [t for t in self.inventory.taps() if t.role == "rack" and t.address and t.has_key
                 and (bus is None or t.bus == bus)]
        if not infos:
            raise pytest.UsageError(f"no commissioned rack tap with a key in {db}: run ibt flash and ibt commission")
        store = self.inventory.key_store(bus or infos[0].bus)  # counters stay durable across runs
        taps = [RigTap(t.id, int(t.address or 0), store.credentials(int(t.address or 0))[0], t.inputs)
                for t in infos]
        names = ["A", "B"][: len(ports)]
        transports = {
            name: SerialTransport(SerialSettings(port=port, baudrate=baud, name=name)).open()
            for name, port in zip(names, ports, strict=False)
        }
        super().__init__(taps, transports, 0, store)
        self.epoch = self.client.status(taps[0].address).epoch  # the epoch the bench's taps are in
        self.client = self.new_client()

    def close(self) -> None:
        super().close()
        self.inventory.close()


def wait_for(read: Callable[[], T], done: Callable[[T], bool], what: str, patience_s: float = PATIENCE_S) -> T:
    """Read until `done`; fail naming `what` and the last reading after `patience_s`."""
    deadline = time.monotonic() + patience_s
    last = read()
    while not done(last):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened (last reading: {last})")
        time.sleep(0.05)
        last = read()
    return last


def start_virtual(site: Site | tuple[int, int], workdir: Path) -> VirtualRigUnderTest:
    return VirtualRigUnderTest(VirtualRig(site, workdir).start())
