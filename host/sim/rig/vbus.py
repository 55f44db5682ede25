"""A virtual RS-485 bus: the host's end is a pseudo-terminal, the taps' ends are TCP sockets.

The host opens a bus exactly as it opens a USB-RS485 adapter, with pyserial on `VirtualBus.host_path`
(the slave side of a pty in raw mode, so 0x00, CR, LF, XON and XOFF pass unchanged). Simulated taps
(firmware/hal_sim.py, `SimUart`) connect to 127.0.0.1:`VirtualBus.tap_port`; any number may connect.
One background thread serves every endpoint with a selector; `start()` and `close()` bound its life.

The model, kept simple enough to test deterministically:

* The wire is one medium cut into byte slots of 10 bits (8N1), `10 / baud` seconds each. Bytes an
  endpoint writes wait in its own queue, stamped with the time the bus read them; a byte may take a
  slot only if it was read by the slot's start, and it reaches the listeners when the slot ends, so
  nothing arrives before its wire time. Slots run back to back while anyone drives; an idle bus
  starts its next slot when the next byte arrives. The thread sleeps until the next slot is due (at
  least `tick` seconds, so bytes go out in small chunks rather than one wake-up per byte).
* Half duplex: each endpoint's transceiver has its receiver disabled while it drives, so a sender
  does not hear itself; every other endpoint hears each slot. `echo=True` makes the host hear its own
  bytes too, as adapters that leave the receiver enabled do.
* Collisions: when more than one endpoint (or the babbler) has a byte ready for a slot, every driver's
  byte is consumed and the listeners get a random byte that differs from each of them, so both frames
  are corrupted, as on a real bus.
* Faults, settable while running: bit errors (each data bit of a slot flips with probability `ber`),
  dropped bytes, a cut bus (slots still elapse but reach nobody) and a babbler (the bus drives random
  bytes in every slot, as a tap stuck transmitting would). Noise acts on the wire, so every listener
  of a slot gets the same byte. The random numbers come from one generator seeded by `seed`.

A listener that does not keep up loses bytes beyond a buffer (`overruns`), as a UART's FIFO would. The
pty runs in packet mode so the bus sees the host flush its input (pyserial does on open) and drops the
bytes it had not yet handed over: a reopened port starts clean. The bus keeps its own handle on the
slave side, so the host closing the port does not hang up the pty and it can reopen it at any time.
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from types import TracebackType

from host.sim.rig.vbus_endpoints import (
    BITS_PER_BYTE,
    BusCounters,
    Endpoint,
    HostEndpoint,
    TapEndpoint,
    drain,
    probability,
)


class VirtualBus:
    """One RS-485 bus between a host (a pty) and any number of taps (TCP clients).

    Usable as a context manager (start on entry, close on exit). The fault setters and `counters()`
    may be called from any thread while the bus runs.
    """

    def __init__(
        self,
        name: str = "A",
        baud: int = 115200,
        *,
        echo: bool = False,
        seed: int = 0,
        tick: float = 0.002,
        bind: str = "127.0.0.1",
    ) -> None:
        if baud <= 0:
            raise ValueError(f"baud must be positive, not {baud}")
        self.name = name
        self.baud = baud
        self.echo = echo
        self.byte_time = BITS_PER_BYTE / baud
        self.tick = tick
        self.error: BaseException | None = None  # what stopped the thread, if anything did
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._ber = 0.0
        self._drop_rate = 0.0
        self._cut = False
        self._babbling = False
        self._clock: float | None = None  # start of the next slot; None while the bus is idle
        self._counts = dict.fromkeys(BusCounters.__dataclass_fields__, 0)
        self._stop = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._taps: list[TapEndpoint] = []
        self._tap_serial = 0
        self._selector = selectors.DefaultSelector()
        self._host = HostEndpoint(f"{name}:host")
        self.host_path: str = self._host.path
        self._listener = socket.create_server((bind, 0), backlog=32)
        self._listener.setblocking(False)
        self.tap_port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._selector.register(self._host, selectors.EVENT_READ)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> VirtualBus:
        if self._closed:
            raise RuntimeError(f"bus {self.name} is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"vbus-{self.name}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and close every socket and fd; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
        self._selector.close()
        for endpoint in (self._host, *self._taps):
            endpoint.close()
        self._taps.clear()
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> VirtualBus:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- faults -------------------------------------------------------------------------------

    def set_bit_error_rate(self, ber: float) -> None:
        """Each data bit of each slot flips with probability `ber`."""
        with self._cond:
            self._ber = probability(ber, "bit error rate")

    def set_drop_rate(self, p: float) -> None:
        """Each slot reaches nobody with probability `p`."""
        with self._cond:
            self._drop_rate = probability(p, "drop rate")

    def cut(self, is_cut: bool = True) -> None:
        """A cut bus delivers nothing either way; what is driven meanwhile is lost (counted as dropped)."""
        with self._cond:
            self._cut = is_cut
        self._wake()

    def babble(self, on: bool = True) -> None:
        """Drive random bytes in every slot, as a tap stuck transmitting would: nothing else gets through."""
        with self._cond:
            self._babbling = on
        self._wake()

    # -- observation ----------------------------------------------------------------------------

    def counters(self) -> BusCounters:
        with self._cond:
            return BusCounters(**self._counts)

    @property
    def tap_count(self) -> int:
        with self._cond:
            return sum(not tap.closed for tap in self._taps)

    def wait_for_taps(self, n: int, timeout: float) -> bool:
        """Wait until at least `n` taps are connected (accepted, so they hear what follows)."""
        with self._cond:
            return self._cond.wait_for(lambda: sum(not t.closed for t in self._taps) >= n or self._ended(), timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every byte the bus has read has had its slot and gone to the listeners' fds.

        Bytes still in flight in a socket or the pty, not yet read by the bus, are not known here;
        compare `counters().bytes_in` with what was sent to cover them.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._quiet() or self._ended(), timeout) and not self._ended()

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop:
                events = self._selector.select(self._timeout(time.monotonic()))
                with self._cond:
                    now = time.monotonic()
                    for key, mask in events:
                        self._handle(key.fileobj, mask, now)
                    self._advance(time.monotonic())
                    self._flush()
                    self._cond.notify_all()
        except BaseException as exc:  # reported through `error`; the waiters must not hang
            self.error = exc
        finally:
            with self._cond:
                self._cond.notify_all()

    def _timeout(self, now: float) -> float | None:
        """How long the selector may sleep: until the next slot ends, in steps of at least `tick`."""
        if self._clock is None:
            return 0.0 if self._babbling else None
        return max(self._clock + self.byte_time - now, self.tick)

    def _handle(self, fileobj: object, mask: int, now: float) -> None:
        if fileobj is self._listener:
            self._accept()
        elif fileobj == self._wake_r:
            drain(self._wake_r)
        elif isinstance(fileobj, Endpoint) and mask & selectors.EVENT_READ:
            self._receive(fileobj, now)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self._tap_serial += 1
            tap = TapEndpoint(f"{self.name}:tap{self._tap_serial}", sock)
            self._taps.append(tap)
            self._selector.register(tap, selectors.EVENT_READ)

    def _receive(self, endpoint: Endpoint, now: float) -> None:
        data = endpoint.read()
        if data is None:
            self._disconnect(endpoint)
        elif data:
            endpoint.queue(data, now)
            self._counts["bytes_in"] += len(data)

    def _disconnect(self, endpoint: Endpoint) -> None:
        # what it already drove stays queued: those bytes were in its UART and still go out
        self._selector.unregister(endpoint)
        endpoint.close()
        endpoint.closed = True
        endpoint.outbox.clear()

    def _advance(self, now: float) -> None:
        """Run every slot that has ended by `now`."""
        while True:
            if self._clock is None:
                self._clock = self._next_start(now)
                if self._clock is None:
                    break
            end = self._clock + self.byte_time
            if end > now:
                break
            drivers = [e for e in self._endpoints() if e.ready(self._clock)]
            if not drivers and not self._babbling:
                self._clock = None  # idle: the next slot starts when the next byte arrived
                continue
            self._slot(drivers)
            self._clock = end
        self._taps = [t for t in self._taps if not (t.closed and not t.pending)]

    def _next_start(self, now: float) -> float | None:
        starts = [e.pending[0][0] for e in self._endpoints() if e.pending]
        if self._babbling:
            starts.append(now)
        return min(starts, default=None)

    def _slot(self, drivers: list[Endpoint]) -> None:
        """Put one byte on the wire: the drivers' byte, or garbage if more than one drives."""
        sent = [d.take() for d in drivers]
        if self._babbling:
            sent.append(self._rng.randrange(256))
        if len(sent) > 1:
            self._counts["collisions"] += 1
            byte = self._garble(sent)
        else:
            byte = sent[0]
        value = byte ^ self._bit_errors()
        if self._cut or (self._drop_rate and self._rng.random() < self._drop_rate):
            self._counts["bytes_dropped"] += 1
            return
        self._counts["bytes_delivered"] += 1
        if drivers and (len(sent) > 1 or value != byte):
            self._counts["bytes_corrupted"] += 1
        for listener in self._listeners(drivers):
            self._post(listener, value)

    def _garble(self, sent: list[int]) -> int:
        """A byte none of the drivers sent, so every colliding frame is corrupted."""
        while True:
            byte = self._rng.randrange(256)
            if byte not in sent:
                return byte

    def _bit_errors(self) -> int:
        if not self._ber:
            return 0
        return sum(1 << bit for bit in range(8) if self._rng.random() < self._ber)

    def _listeners(self, drivers: list[Endpoint]) -> Iterator[Endpoint]:
        for endpoint in self._endpoints():
            if endpoint.closed:
                continue
            if endpoint not in drivers or (self.echo and endpoint is self._host):
                yield endpoint

    def _post(self, listener: Endpoint, value: int) -> None:
        if len(listener.outbox) >= listener.outbox_limit:
            self._counts["overruns"] += 1
        else:
            listener.outbox.append(value)

    def _flush(self) -> None:
        for endpoint in self._endpoints():
            if endpoint.closed:
                continue
            if endpoint.outbox:
                try:
                    sent = endpoint.write(endpoint.outbox)
                except OSError:
                    self._disconnect(endpoint)
                    continue
                del endpoint.outbox[:sent]
            self._want_write(endpoint, bool(endpoint.outbox))

    def _want_write(self, endpoint: Endpoint, wanted: bool) -> None:
        """Wake on write readiness only while something waits to go, so an idle bus sleeps."""
        if endpoint.wants_write != wanted:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wanted else 0)
            self._selector.modify(endpoint, events)
            endpoint.wants_write = wanted

    def _endpoints(self) -> Iterable[Endpoint]:
        return (self._host, *self._taps)

    def _quiet(self) -> bool:
        return all(not e.pending and (e.closed or not e.outbox) for e in self._endpoints())

    def _ended(self) -> bool:
        return self._stop or self.error is not None or (self._thread is not None and not self._thread.is_alive())

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe wakes the thread as well; a closed one: the bus is gone
            os.write(self._wake_w, b"\x01")


class VirtualBuses:
    """Independent buses, by name (the redundant pair "A" and "B" by default), started and closed together."""

    def __init__(self, names: Iterable[str] = ("A", "B"), baud: int = 115200, *, seed: int = 0, echo: bool = False):
        self.buses: dict[str, VirtualBus] = {}
        try:
            for index, name in enumerate(names):
                self.buses[name] = VirtualBus(name, baud, seed=seed + index, echo=echo)
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str) -> VirtualBus:
        return self.buses[name]

    @property
    def host_paths(self) -> dict[str, str]:
        return {name: bus.host_path for name, bus in self.buses.items()}

    @property
    def tap_ports(self) -> dict[str, int]:
        return {name: bus.tap_port for name, bus in self.buses.items()}

    def start(self) -> VirtualBuses:
        for bus in self.buses.values():
            bus.start()
        return self

    def close(self) -> None:
        for bus in self.buses.values():
            bus.close()

    def __enter__(self) -> VirtualBuses:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
