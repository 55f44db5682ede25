"""Buses A and B as one link: a request goes out on a healthy bus and fails over to the other.

Every tap sits on both buses and answers on the bus a request arrived on (SPEC.md,
"Physical layer"). `RedundantLink` keeps one request outstanding at a time and sends it
on the preferred bus; when that bus gives no answer within the request's timeout, or
fails outright, the very same frame goes out on the other bus at once. Retrying is
safe because a retry is byte-identical: reads are idempotent, and a signed command
carries the same seq and tag, so a tap that did execute it the first time answers
from its duplicate cache (shared by both buses) instead of executing it again
(SPEC.md, "Retries and duplicates").

Health of a bus
---------------
- `up`: the last exchange or probe on it succeeded.
- `suspect`: it failed at least once since; traffic goes to an `up` bus meanwhile.
- `down`: `down_after` failures in a row, or its port is missing (`PortUnavailable`).

Blame is given only where it is deserved. A timeout counts against a bus when the
other bus answered the same request (so the tap is alive), or when a probe to the
caller's known tap stays silent. When every bus stays silent the tap, not the bus, is
the likely culprit: the buses' `silent` counters rise but their state does not change.
A `TransportError` (adapter gone, collision) is always the bus's fault.

Preference returns to A as soon as A is `up` again. A is the bus the site designates as
primary; keeping traffic on it makes B's probes the thing that proves B, and the bus a
request took predictable in logs. The cost of an intermittent A is bounded: A becomes
`up` again only by answering, a probe is sent at most once per `probe_interval_s`, and
a relapse costs one request timeout before B carries the request.

Probing
-------
A standby bus that died quietly is found out by `maybe_probe`, which the poller calls
between its requests: every bus without a good answer in the last `probe_interval_s`
gets one cheap request (a STATUS or HEARTBEAT to a tap known to be present, built by a
caller-supplied function so that each probe has a fresh seq). A bus that carries the
polling traffic never needs a probe; a bus whose adapter is unplugged costs nothing to
probe, since its transport fails at once.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from host.bus.transport import PortUnavailable, Transport, TransportError

DEFAULT_DOWN_AFTER = 3  # consecutive failures that take a bus from suspect to down
DEFAULT_PROBE_INTERVAL_S = 10.0  # a standby failure is known within this, far under HOST_TIMEOUT_S


class NoBusError(TransportError):
    """No bus could carry the request at all (every transport failed; not merely a silent tap)."""


class BusState(enum.Enum):
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


_RANK = {BusState.UP: 0, BusState.SUSPECT: 1, BusState.DOWN: 2}


@dataclass
class BusHealth:
    """Health and counters of one bus, as `RedundantLink.health` reports them."""

    state: BusState = BusState.UP
    consecutive_failures: int = 0
    exchanges: int = 0  # requests sent on this bus, probes included
    answers: int = 0
    timeouts: int = 0  # timeouts blamed on this bus (the other bus answered, or a probe)
    silent: int = 0  # timeouts when every bus was silent: blamed on the tap, not the bus
    errors: int = 0  # transport errors: port missing, collision
    probes: int = 0
    last_ok: float | None = None  # wall-clock time (time.time()) of the last answer
    last_error: str = ""

    def report(self) -> dict[str, Any]:
        return asdict(self) | {"state": self.state.value}


class _Outcome(enum.Enum):
    ANSWER = "answer"
    TIMEOUT = "timeout"
    ERROR = "error"


class RedundantLink:
    """One logical link to the taps over two (or more) buses, with failover and health.

    Any object with the `Transport` interface works as a bus; the link never touches a
    serial port itself. One lock serialises every exchange and probe: the host is the
    only master on each bus and keeps one request outstanding.
    """

    def __init__(
        self,
        transport_a: Transport,
        transport_b: Transport,
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
        down_after: int = DEFAULT_DOWN_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._buses: list[Transport] = [transport_a, transport_b]
        names = [bus.name for bus in self._buses]
        if len(set(names)) != len(names):
            raise ValueError(f"the buses need distinct names, got {names}")
        self.probe_interval_s = probe_interval_s
        self.down_after = down_after
        self._clock = clock
        self._health: dict[str, BusHealth] = {name: BusHealth() for name in names}
        # When each bus last answered or was probed, on the link's clock: what probing is scheduled by.
        self._heard_at: dict[str, float] = dict.fromkeys(names, float("-inf"))
        self._probed_at: dict[str, float] = dict.fromkeys(names, float("-inf"))
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return [bus.name for bus in self._buses]

    def order(self) -> list[str]:
        """The buses in the order the next request will try them: healthiest first, then A before B."""
        with self._lock:
            return [bus.name for bus in self._ordered()]

    def exchange(self, frame: bytes, timeout: float | None = None) -> bytes | None:
        """Send `frame` on the preferred bus, and the same bytes on the other if it gets no answer.

        Returns the answer's body, or None if every bus stayed silent. Raises `NoBusError`
        if no bus could send at all. `timeout` is per bus: at most one timeout per bus.
        """
        with self._lock:
            silent: list[BusHealth] = []
            errors: list[str] = []
            for bus in self._ordered():
                health = self._health[bus.name]
                outcome, answer, error = self._attempt(bus, frame, timeout)
                if outcome is _Outcome.ANSWER:
                    for other in silent:  # this bus proves the tap alive: the silent ones failed
                        other.timeouts += 1
                        self._failed(other, "no answer where the other bus got one")
                    self._succeeded(bus.name)
                    return answer
                if outcome is _Outcome.TIMEOUT:
                    silent.append(health)
                else:
                    errors.append(f"{bus.name}: {error}")
            for health in silent:
                health.silent += 1
            if not silent:
                raise NoBusError("no bus could send the request: " + "; ".join(errors))
            return None

    def probe(self, bus_name: str, frame: bytes, timeout: float | None = None) -> bool:
        """Send a cheap request to a tap known to be present on one bus; its silence counts against the bus."""
        with self._lock:
            bus = self._bus(bus_name)
            health = self._health[bus_name]
            health.probes += 1
            self._probed_at[bus_name] = self._clock()
            outcome, _, _ = self._attempt(bus, frame, timeout)
            if outcome is _Outcome.ANSWER:
                self._succeeded(bus_name)
                return True
            if outcome is _Outcome.TIMEOUT:
                health.timeouts += 1
                self._failed(health, "probe unanswered")
            return False

    def maybe_probe(self, make_frame: Callable[[], bytes], timeout: float | None = None) -> dict[str, bool]:
        """Probe every bus that has had no answer, and no probe, for `probe_interval_s`; return the results.

        Cheap to call often: it does nothing while every bus is proving itself with traffic.
        """
        now = self._clock()
        with self._lock:
            due = [
                name
                for name in self.names
                if now - max(self._heard_at[name], self._probed_at[name]) >= self.probe_interval_s
            ]
            for name in due:  # claimed now, so that a second poller does not probe them again
                self._probed_at[name] = now
        return {name: self.probe(name, make_frame(), timeout) for name in due}

    def broadcast(self, frame: bytes) -> list[str]:
        """Send an unanswered frame (a broadcast HEARTBEAT, say) on every bus that can; return their names.

        Sent on both buses, as taps listen on both: a tap cut off from one still hears it.
        """
        sent = []
        with self._lock:
            for bus in self._buses:
                try:
                    bus.send(frame)
                except TransportError as exc:
                    self._errored(self._health[bus.name], exc)
                else:
                    sent.append(bus.name)
        return sent

    def health(self) -> dict[str, dict[str, Any]]:
        """Per bus: state (up/suspect/down), consecutive failures, counters, last ok time, last error."""
        with self._lock:
            return {name: health.report() for name, health in self._health.items()}

    def close(self) -> None:
        for bus in self._buses:
            bus.close()

    def __enter__(self) -> RedundantLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _ordered(self) -> list[Transport]:
        return sorted(self._buses, key=lambda bus: _RANK[self._health[bus.name].state])  # stable: A before B

    def _bus(self, name: str) -> Transport:
        for bus in self._buses:
            if bus.name == name:
                return bus
        raise KeyError(f"no bus named {name!r}; the link has {self.names}")

    def _attempt(self, bus: Transport, frame: bytes, timeout: float | None) -> tuple[_Outcome, bytes | None, str]:
        health = self._health[bus.name]
        health.exchanges += 1
        try:
            answer = bus.exchange(frame, timeout)
        except TransportError as exc:
            self._errored(health, exc)
            return _Outcome.ERROR, None, str(exc)
        if answer is None:
            return _Outcome.TIMEOUT, None, ""
        return _Outcome.ANSWER, answer, ""

    def _succeeded(self, name: str) -> None:
        health = self._health[name]
        self._heard_at[name] = self._clock()
        health.answers += 1
        health.consecutive_failures = 0
        health.state = BusState.UP
        health.last_ok = time.time()

    def _errored(self, health: BusHealth, exc: TransportError) -> None:
        health.errors += 1
        self._failed(health, str(exc))
        if isinstance(exc, PortUnavailable):
            health.state = BusState.DOWN  # no adapter: no point waiting for more failures

    def _failed(self, health: BusHealth, reason: str) -> None:
        health.consecutive_failures += 1
        health.last_error = reason
        health.state = BusState.DOWN if health.consecutive_failures >= self.down_after else BusState.SUSPECT
