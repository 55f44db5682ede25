"""The typed tap client: one call per request message, answers checked, retries made safe.

`TapClient` talks to every tap on one link (a `RedundantLink`, or a single transport):
it numbers requests, signs commands with each tap's own key and the controller epoch,
resends a request that got no acceptable answer, and turns the answer into a `Reply`
or an exception (`TapRefused`, `TapTimeout`, `TapProtocolError`). `discover` and `scan`
find taps by unique id with the slotted DISCOVER of SPEC.md.

The rules it follows, and why (SPEC.md sections in quotes):

- Only an answer whose dst, src, seq and type fit the outstanding request is accepted
  ("Exchanges"); anything else is counted in `ClientStats.dropped` and the client
  waits on as if nothing had come. The transport filters the same way, but a client
  must not trust a link it did not write.
- A retry is the very same bytes: same seq, same trailer, same tag ("Retries and
  duplicates"). A tap that executed the first copy answers the retry from its
  duplicate cache, so a lost answer never makes a relay move twice. At most
  `MAX_RETRIES` resends per request; a `RedundantLink` may carry each one on both buses.
- The counter of a signed command is committed to the key store before the frame is
  built and sent: a host that crashes after sending never signs another command
  with it ("Authentication").
- The answer to a signed command counts only if it is signed by the tap with the
  request's epoch and counter. An unsigned refusal is not proof that nothing
  happened: it is retried like silence, and reported as `TapRefused(verified=False)`
  only if nothing better came.
- A signed STALE_EPOCH means another controller owns the site: the client raises
  `FencedOut` and refuses to sign anything more ("Controller epoch").
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from host.bus.transport import TransportError
from host.client.discovery import UID_MAX, UID_MIN, Listener, Round, discover
from host.client.keys import TapKeys
from host.client.replies import RESULT_TYPES, Identity, Ranking, Reply, Settings, Status, Telemetry, typed
from host.client.tap_errors import FINAL_UNSIGNED_REFUSALS, FencedOut, TapProtocolError, TapRefused, TapTimeout
from host.wire import auth, framing, messages
from host.wire.messages import Frame
from protocol import catalog


class Link(Protocol):
    """A `RedundantLink` or one `Transport`: send encoded bytes, get the answer's body or None."""

    def exchange(self, frame: bytes, timeout: float | None = None) -> bytes | None: ...


@dataclass
class ClientStats:
    """What the client did since it was made."""

    requests: int = 0
    attempts: int = 0  # link exchanges, retries included
    retries: int = 0
    dropped: int = 0  # answers that did not fit the outstanding request (seq, src, type, version)
    unverified: int = 0  # answers to signed requests without a right signature
    transport_errors: int = 0
    timeouts: int = 0  # requests that ended in TapTimeout


@dataclass(frozen=True)
class _Expect:
    """What an acceptable answer looks like: its source and, for a signed request, its keys."""

    src: int
    ack_key: bytes | None = None  # verifies ACK and data answers
    nak_key: bytes | None = None  # verifies NAK (differs from ack_key only for SET_KEY)


class TapClient:
    """Every request of the catalogue as a method, for all taps on one link.

    `keys` is needed for signed commands only; `epoch` is the controller's epoch, carried
    by every signed command and heartbeat. `timeout` is handed to each link exchange
    (None: the transport computes it from the baud rate). `first_seq` fixes the first
    sequence number for tests; by default it is random, so that a late answer to a
    predecessor process's request is unlikely to fit this one's.
    """

    def __init__(
        self,
        link: Link,
        keys: TapKeys | None = None,
        *,
        epoch: int = 0,
        timeout: float | None = None,
        retries: int = catalog.MAX_RETRIES,
        first_seq: int | None = None,
    ) -> None:
        if not 0 <= retries <= catalog.MAX_RETRIES:
            raise ValueError(f"retries must be 0..{catalog.MAX_RETRIES} (SPEC.md), not {retries}")
        self.link = link
        self.keys = keys
        self.epoch = epoch
        self.timeout = timeout
        self.retries = retries
        self.stats = ClientStats()
        self.fenced = False
        # called with (address, seq, counter) once a signed frame is built, before it
        # leaves: the journal records both (host/ops/journal.py)
        self.on_signed: Callable[[int, int, int], None] | None = None
        self._seq = (random.randrange(0x10000) if first_seq is None else first_seq) - 1
        self._lock = threading.RLock()

    def next_seq(self) -> int:
        """The next sequence number, 16 bits, wrapping (SPEC.md reserves no value)."""
        with self._lock:
            self._seq = (self._seq + 1) & 0xFFFF
            return self._seq

    # -- reads ----------------------------------------------------------------------------

    def identify(self, address: int) -> Identity:
        return typed(self.ask(address, "IDENTIFY"), Identity)

    def telemetry(self, address: int) -> Telemetry:
        return typed(self.ask(address, "TELEMETRY"), Telemetry)

    def status(self, address: int) -> Status:
        return typed(self.ask(address, "STATUS"), Status)

    def read_settings(self, address: int) -> Settings:
        """The limits in force and every channel's calibration (protocol minor 1)."""
        return typed(self.ask(address, "READ_SETTINGS"), Settings)

    def read_alternates(self, address: int, for_input: int) -> Ranking:
        """The failover order the tap holds for one input (protocol minor 2)."""
        return typed(self.ask(address, "READ_ALTERNATES", {"for_input": for_input}), Ranking)

    def read_events(self, address: int, since: int = 0, max_count: int = 30) -> Reply:
        return self.ask(address, "READ_EVENTS", {"since": since, "max_count": max_count})

    def capture_start(
        self, address: int, capture_id: int, trigger: int = catalog.TRIGGER_NOW, cycles: int = 4
    ) -> Reply:
        return self.ask(address, "CAPTURE_START", {"capture_id": capture_id, "trigger": trigger, "cycles": cycles})

    def capture_info(self, address: int, capture_id: int) -> Reply:
        return self.ask(address, "CAPTURE_INFO", {"capture_id": capture_id})

    def capture_read(self, address: int, capture_id: int, offset: int, length: int = 240) -> Reply:
        return self.ask(address, "CAPTURE_READ", {"capture_id": capture_id, "offset": offset, "length": length})

    def health(self, address: int) -> Reply:
        return self.ask(address, "HEALTH")

    def heartbeat(self, address: int) -> Reply:
        """Unicast HEARTBEAT in the client's epoch: answered with the tap's epoch, uptime, alarms."""
        return self.ask(address, "HEARTBEAT", {"epoch": self.epoch})

    def broadcast_heartbeat(self) -> None:
        """HEARTBEAT to every tap (never answered), on every bus the link has."""
        frame = self._wire(
            messages.request(catalog.ADDR_BROADCAST, "HEARTBEAT", self.next_seq(), {"epoch": self.epoch})
        )
        sender = getattr(self.link, "broadcast", None) or getattr(self.link, "send", None)
        if sender is None:
            raise TypeError(f"{type(self.link).__name__} can neither broadcast nor send")
        sender(frame)

    def discover(self, listener: Listener, uid_low: bytes = UID_MIN, uid_high: bytes = UID_MAX, **kw: Any) -> Round:
        """One DISCOVER round on one bus, with this client's sequence numbers; see `discover`."""
        return discover(listener, uid_low, uid_high, seq=self.next_seq(), **kw)

    # -- commands (signed) --------------------------------------------------------------------

    def switch(self, address: int, expected_input: int, target_input: int) -> Reply:
        """Compare-and-swap transfer; the ACK means it started (poll `status` for the end)."""
        return self.command(address, "SWITCH", {"expected_input": expected_input, "target_input": target_input})

    def set_alternates(self, address: int, for_input: int, alternates: tuple[int, ...] | list[int]) -> Reply:
        ranked = [*alternates, 0, 0, 0][:3]
        if len(alternates) > 3:
            raise ValueError(f"at most 3 alternates, not {len(alternates)}")
        fields = {"for_input": for_input} | {f"alternate_{i + 1}": k for i, k in enumerate(ranked)}
        return self.command(address, "SET_ALTERNATES", fields)

    def set_limits(self, address: int, limits: Mapping[str, int]) -> Reply:
        """Protection settings, by the catalogue's field names (curve, pickup_mA, ...)."""
        return self.command(address, "SET_LIMITS", dict(limits))

    def set_calibration(self, address: int, kind: int, index: int, gain_ppm: int, offset_counts: int = 0) -> Reply:
        """One channel's calibration: `kind` CHANNEL_INPUT_VOLTAGE with `index` 1..n, or
        CHANNEL_OUTPUT_CURRENT with `index` 0; `gain_ppm` of the nominal scale, `offset_counts`
        added to the RMS (SPEC.md, SET_CALIBRATION). The tap checks the ranges."""
        fields = {"kind": kind, "index": index, "gain_ppm": gain_ppm, "offset_counts": offset_counts}
        return self.command(address, "SET_CALIBRATION", fields)

    def set_key(self, address: int, new_key: bytes) -> Reply:
        """Wrap `new_key` under the current one; the store learns it once the tap's ACK proves it.

        After a TapTimeout the tap holds either key: the caller keeps both until a signed
        answer shows which one the tap uses.
        """
        if len(new_key) != catalog.KEY_LEN:
            raise ValueError(f"a tap key is {catalog.KEY_LEN} bytes, not {len(new_key)}")

        def fields(old_key: bytes, counter: int) -> dict[str, Any]:
            wrapped, check = auth.wrap_key(old_key, new_key, counter)
            return {"wrapped_key": wrapped, "key_check": check}

        reply = self.command(address, "SET_KEY", fields, ack_key=new_key)
        self._keys().replace_key(address, new_key)
        return reply

    def raise_epoch(self, address: int) -> Reply:
        """Raise the tap to this client's epoch (set `epoch` first, above every tap's)."""
        return self.command(address, "RAISE_EPOCH", {"new_epoch": self.epoch})

    def reset(self, address: int, mode: int = catalog.RESET_FIRMWARE) -> Reply:
        return self.command(address, "RESET", {"mode": mode})

    def assign_address(self, unique_id: bytes, address: int, current: int | None = None) -> Reply:
        """Give the tap `unique_id` the address `address`.

        Sent to `current` (its present address), or broadcast when it has none. Signed
        with the credentials the key store holds for `address`: the inventory enrols a
        tap under the address it is to get before assigning it. The tap answers from the
        new address.
        """
        dst = catalog.ADDR_BROADCAST if current is None or current == catalog.ADDR_UNASSIGNED else current
        return self.command(
            address, "ASSIGN_ADDRESS", {"unique_id": unique_id, "address": address}, dst=dst, answer_src=address
        )

    def sync_counter(self, address: int) -> int:
        """After the host lost its counters: continue above what the tap last accepted."""
        counter = self.status(address).auth_counter
        self._keys().commit(address, counter)
        return counter

    # -- the generic calls ------------------------------------------------------------------

    def ask(self, address: int, name: str, fields: Mapping[str, Any] | None = None) -> Reply:
        """Any unsigned request, unicast; the typed methods above are thin wrappers of it."""
        frame = messages.request(address, name, self.next_seq(), dict(fields or {}))
        return self._call(address, frame, _Expect(address))

    def command(
        self,
        address: int,
        name: str,
        fields: Mapping[str, Any] | Callable[[bytes, int], Mapping[str, Any]],
        *,
        dst: int | None = None,
        answer_src: int | None = None,
        ack_key: bytes | None = None,
    ) -> Reply:
        """Any signed command. `fields` may depend on the key and counter (SET_KEY's wrap).

        The counter is committed before the frame is built: if the fields then turn out
        invalid, one counter is skipped, which costs nothing.
        """
        if self.fenced:
            raise FencedOut(address, name, _local_nak(name, catalog.E_STALE_EPOCH), retried=False)
        keys = self._keys()
        with self._lock:
            key, counter = keys.credentials(address)
            keys.commit(address, counter)
        values = fields(key, counter) if callable(fields) else fields
        target = address if dst is None else dst
        seq = self.next_seq()
        frame = messages.request(target, name, seq, dict(values), key=key, epoch=self.epoch, counter=counter)
        if self.on_signed is not None:
            self.on_signed(address, seq, counter)
        src = address if answer_src is None else answer_src
        return self._call(address, frame, _Expect(src, ack_key or key, key))

    # -- internals ------------------------------------------------------------------------

    def _keys(self) -> TapKeys:
        if self.keys is None:
            raise TypeError("this client has no key store: signed commands need one")
        return self.keys

    def _wire(self, frame: Frame) -> bytes:
        return framing.encode_frame(frame.to_body())

    def _call(self, address: int, frame: Frame, expect: _Expect) -> Reply:
        self.stats.requests += 1
        answer, attempt = self._exchange(address, frame, expect)
        return self._result(address, frame, answer, verified=True, retried=attempt > 0)

    def _exchange(self, address: int, frame: Frame, expect: _Expect) -> tuple[Frame, int]:
        """Send `frame`, and the same bytes again while no acceptable answer comes."""
        wire = self._wire(frame)
        unsigned_nak: tuple[Frame, int] | None = None
        error: TransportError | None = None
        for attempt in range(1 + self.retries):
            self.stats.attempts += 1
            if attempt:
                self.stats.retries += 1
            try:
                body = self.link.exchange(wire, self.timeout)
            except TransportError as exc:  # the link could not send at all: resending is still safe
                self.stats.transport_errors += 1
                error = exc
                continue
            answer, verified = self._accept(frame, body, expect)
            if answer is not None and verified:
                return answer, attempt
            if answer is not None and answer.type == catalog.T_NAK:
                unsigned_nak = (answer, attempt)
                if answer.fields().get("error") in FINAL_UNSIGNED_REFUSALS:
                    break  # the same bytes get the same refusal, and a bad tag counts towards the flood pause
        if unsigned_nak is not None:  # nothing better came: report the refusal, marked unverified
            self._result(address, frame, unsigned_nak[0], verified=False, retried=unsigned_nak[1] > 0)
        self.stats.timeouts += 1
        name = messages.MESSAGES[frame.type].name
        why = f" (last transport error: {error})" if error else ""
        raise TapTimeout(f"tap {address}: no answer to {name} after {1 + self.retries} attempts{why}", address, name)

    def _accept(self, request: Frame, body: bytes | None, expect: _Expect) -> tuple[Frame | None, bool]:
        """(answer, verified): the answer if it fits `request`, and whether it is signed as it must be."""
        if body is None:
            return None, False
        try:
            answer = messages.parse_body(body)
        except messages.ProtocolError:  # another version, reserved flags: dropped (SPEC "Versioning")
            answer = None
        if answer is None or not _fits(request, answer, expect.src):
            self.stats.dropped += 1
            return None, False
        if request.auth is not None and not _signed_back(request, answer, expect):
            self.stats.unverified += 1
            return answer, False
        return answer, True

    def _result(self, address: int, request: Frame, answer: Frame, *, verified: bool, retried: bool) -> Reply:
        """Turn an accepted answer into a Reply, or raise what it means."""
        name = messages.MESSAGES[request.type].name
        try:
            fields = answer.fields()
        except messages.ProtocolError as exc:
            raise TapProtocolError(f"tap {address}: malformed answer to {name}: {exc}", address, name) from None
        cached = bool(answer.flags & catalog.FLAG_CACHED)
        if answer.type in (catalog.T_ACK, catalog.T_NAK) and fields["request_type"] != request.type:
            raise TapProtocolError(
                f"tap {address}: {answer.name} names request 0x{fields['request_type']:02x}, not {name}", address, name
            )
        if answer.type == catalog.T_NAK:
            self._refused(address, name, fields, verified=verified, retried=retried, signed=request.auth is not None)
        if answer.type == catalog.T_ACK and messages.MESSAGES[request.type].response is not None:
            raise TapProtocolError(f"tap {address}: ACK where {name} has a data answer", address, name)
        return RESULT_TYPES.get(name, Reply)(name, answer.src, fields, cached)

    def _refused(
        self, address: int, name: str, fields: dict[str, Any], *, verified: bool, retried: bool, signed: bool
    ) -> None:
        if signed and verified and fields["error"] == catalog.E_STALE_EPOCH:
            self.fenced = True
            raise FencedOut(address, name, fields, retried=retried)
        if signed and verified and fields["error"] == catalog.E_REPLAY and self.keys is not None:
            self.keys.commit(address, fields["detail"])  # our counter fell behind the tap's: catch up
        raise TapRefused(address, name, fields, verified=verified, retried=retried)


def _fits(request: Frame, answer: Frame, src: int) -> bool:
    """SPEC "Exchanges": dst 0, RESPONSE, the tap's address, the request's seq, its type or ACK/NAK."""
    return (
        answer.is_response
        and answer.dst == catalog.ADDR_HOST
        and answer.src == src
        and answer.seq == request.seq
        and answer.type in (request.type, catalog.T_ACK, catalog.T_NAK)
    )


def _signed_back(request: Frame, answer: Frame, expect: _Expect) -> bool:
    """The tap's answer carries the request's epoch and counter and a tag with the tap's key."""
    key = expect.nak_key if answer.type == catalog.T_NAK else expect.ack_key
    if answer.auth is None or request.auth is None or key is None:
        return False
    same = (answer.auth.epoch, answer.auth.counter) == (request.auth.epoch, request.auth.counter)
    return same and messages.verify(answer, key)


def _local_nak(name: str, error: int) -> dict[str, int]:
    """NAK fields for a refusal the client makes itself (fenced out), so it reads like the tap's."""
    return {"request_type": messages.message_named(name).type, "error": error, "detail": 0}
