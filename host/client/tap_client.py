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
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, overload

from host.bus.transport import TransportError
from host.model.errors import FencingError, IbtError, LinkError, NoAnswer, OperatorError, RefusalError
from host.wire import auth, framing, messages
from host.wire.messages import Frame
from protocol import catalog

SCOPE_UNADDRESSED = 0  # DISCOVER: only taps that have no address yet
SCOPE_ALL = 1  # DISCOVER: every tap in the range
UID_MIN = bytes(8)
UID_MAX = b"\xff" * 8


# -- what the client needs from the outside ---------------------------------------------


class Link(Protocol):
    """A `RedundantLink` or one `Transport`: send encoded bytes, get the answer's body or None."""

    def exchange(self, frame: bytes, timeout: float | None = None) -> bytes | None: ...


class Listener(Protocol):
    """One bus that can send an unanswered frame and hear whatever answers come (DISCOVER)."""

    def send(self, frame: bytes) -> None: ...

    def receive(self, timeout: float) -> bytes | None: ...


class TapKeys(Protocol):
    """Where each tap's key and command counter live; the inventory implements it durably.

    `credentials` returns the tap's key and the next counter to use; `commit` records that
    a counter has been used (it must never be offered again, even after a host restart,
    and a lower value than one already committed changes nothing); `replace_key` records
    the key a tap acknowledged with SET_KEY.
    """

    def credentials(self, address: int) -> tuple[bytes, int]: ...

    def commit(self, address: int, counter: int) -> None: ...

    def replace_key(self, address: int, key: bytes) -> None: ...


class NoKey(OperatorError, KeyError):
    """The key store holds no key for that address."""


class MemoryKeys:
    """`TapKeys` in memory, for tests and tools; counters are lost with the process."""

    def __init__(self, keys: Mapping[int, bytes], last_counters: Mapping[int, int] | None = None) -> None:
        self.keys = dict(keys)
        self.last = {address: 0 for address in self.keys} | dict(last_counters or {})

    def credentials(self, address: int) -> tuple[bytes, int]:
        if address not in self.keys:
            raise NoKey(f"no key for tap {address}")
        return self.keys[address], self.last.get(address, 0) + 1

    def commit(self, address: int, counter: int) -> None:
        self.last[address] = max(self.last.get(address, 0), counter)

    def replace_key(self, address: int, key: bytes) -> None:
        self.keys[address] = key


# -- results and errors -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A tap's answer: to which request, from which address, with its decoded fields.

    Every field of the catalogue layout reads as an attribute (`reply.host_silent_s`) or
    an item; the subclasses below type the fields callers decide on. `cached` says the
    tap answered from its duplicate cache: the command ran once, earlier.
    """

    request: str
    src: int
    fields: Mapping[str, Any]
    cached: bool = False

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("fields")  # absent while copy/pickle rebuild the object
        if fields is not None and name in fields:
            return fields[name]
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('request')} has no field {name!r}")

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


class _IntField:
    """A reply field read as an int (`epoch = _IntField()` reads fields["epoch"])."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, reply: None, owner: type) -> _IntField: ...
    @overload
    def __get__(self, reply: Reply, owner: type) -> int: ...
    def __get__(self, reply: Reply | None, owner: type) -> int | _IntField:
        return self if reply is None else int(reply.fields[self.name])


class _Named(Reply):
    """What IDENTIFY and DISCOVER both report about the board."""

    @property
    def unique_id(self) -> bytes:
        return bytes(self.fields["unique_id"])

    @property
    def board(self) -> str:
        return _ascii(self.fields["board"])


class Identity(_Named):
    address = _IntField()
    epoch = _IntField()
    auth_counter = _IntField()
    n_inputs = _IntField()

    @property
    def firmware(self) -> str:
        return "{firmware_major}.{firmware_minor}.{firmware_patch}".format(**self.fields)


class _RelayState(Reply):
    """What STATUS and TELEMETRY both report about the relays."""

    active_input = _IntField()
    relays_closed = _IntField()
    protection = _IntField()
    alarms = _IntField()


class Status(_RelayState):
    epoch = _IntField()
    auth_counter = _IntField()


class Telemetry(_RelayState):
    @property
    def inputs(self) -> list[dict[str, int]]:
        return list(self.fields["inputs"])


def _limit_names() -> tuple[str, ...]:
    layout = messages.BY_NAME["SET_LIMITS"].request
    if layout is None:
        raise TypeError("SET_LIMITS has no request layout in the catalogue")
    return tuple(str(name) for name in layout.names)


LIMIT_NAMES = _limit_names()  # SET_LIMITS's fields, in order: also the head of READ_SETTINGS's answer


class Settings(Reply):
    """READ_SETTINGS: the limits in force and every channel's calibration."""

    @property
    def limits(self) -> dict[str, int]:
        """The nine limits, by SET_LIMITS's field names."""
        return {name: int(self.fields[name]) for name in LIMIT_NAMES}

    @property
    def channels(self) -> list[dict[str, int]]:
        """Per channel: kind, index, gain_ppm, offset_counts, state (inputs 1..n, then the current)."""
        return [{k: int(v) for k, v in c.items()} for c in self.fields["channels"]]

    def channel(self, kind: int, index: int) -> dict[str, int]:
        """One channel's calibration; KeyError if the tap has no such channel."""
        for c in self.channels:
            if c["kind"] == kind and c["index"] == index:
                return c
        raise KeyError(f"no channel of kind {kind} index {index}")


class Ranking(Reply):
    """READ_ALTERNATES: where the tap goes by itself when `for_input` is active and lost."""

    for_input = _IntField()

    @property
    def alternates(self) -> list[int]:
        """The ranked inputs, best first, without the zeros that end the list."""
        return [int(self.fields[f"alternate_{i}"]) for i in (1, 2, 3) if self.fields[f"alternate_{i}"]]


class Discovered(_Named):
    slot = _IntField()


R = TypeVar("R", bound=Reply)

_RESULTS: dict[str, type[Reply]] = {
    "IDENTIFY": Identity,
    "STATUS": Status,
    "TELEMETRY": Telemetry,
    "READ_SETTINGS": Settings,
    "READ_ALTERNATES": Ranking,
    "DISCOVER": Discovered,
}


class TapError(IbtError):
    """Something went wrong with one request to one tap; `address` and `request` say which."""

    def __init__(self, message: str, address: int, request: str) -> None:
        super().__init__(message)
        self.address = address
        self.request = request


# Unsigned refusals of a signed command that a resend of the same bytes cannot change
# (SPEC.md, "Authentication"): the client stops retrying and reports them as unverified.
FINAL_UNSIGNED_REFUSALS = frozenset({catalog.E_BAD_TAG, catalog.E_AUTH_REQUIRED, catalog.E_BAD_LENGTH})


class TapRefused(TapError, RefusalError):
    """The tap answered NAK. `verified` is False when the refusal of a signed command came
    unsigned: then it does not prove that nothing happened. `retried` is True when the
    refusal answered a resend: a REPLAY then means an earlier copy may have run (the tap
    reset and lost its duplicate cache), so read STATUS before concluding."""

    def __init__(
        self, address: int, request: str, fields: Mapping[str, Any], *, verified: bool = True, retried: bool = False
    ) -> None:
        self.code = int(fields["error"])
        self.detail = int(fields["detail"])
        self.name = messages.ERROR_NAMES.get(self.code, str(self.code))
        self.text = messages.describe_nak(dict(fields))
        self.verified = verified
        self.retried = retried
        note = "" if verified else " (unsigned: not proof that nothing ran)"
        super().__init__(f"tap {address}: {self.text}{note}", address, request)

    @property
    def outcome_unknown(self) -> bool:
        """Whether the command may have run all the same: read STATUS to know."""
        return not self.verified or (self.retried and self.code == catalog.E_REPLAY)


class FencedOut(TapRefused, FencingError):
    """STALE_EPOCH: another controller owns the site; this client signs nothing more."""


class TapTimeout(TapError, NoAnswer):
    """No acceptable answer after every attempt; a command's outcome is unknown until STATUS says."""


class TapProtocolError(TapError, LinkError):
    """An answer that fits the request but breaks the protocol (wrong layout, wrong ACK)."""


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


# -- the client -------------------------------------------------------------------------------


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
        self._seq = (random.randrange(0x10000) if first_seq is None else first_seq) - 1
        self._lock = threading.RLock()

    def next_seq(self) -> int:
        """The next sequence number, 16 bits, wrapping (SPEC.md reserves no value)."""
        with self._lock:
            self._seq = (self._seq + 1) & 0xFFFF
            return self._seq

    # -- reads ----------------------------------------------------------------------------

    def identify(self, address: int) -> Identity:
        return _typed(self.ask(address, "IDENTIFY"), Identity)

    def telemetry(self, address: int) -> Telemetry:
        return _typed(self.ask(address, "TELEMETRY"), Telemetry)

    def status(self, address: int) -> Status:
        return _typed(self.ask(address, "STATUS"), Status)

    def read_settings(self, address: int) -> Settings:
        """The limits in force and every channel's calibration (protocol minor 1)."""
        return _typed(self.ask(address, "READ_SETTINGS"), Settings)

    def read_alternates(self, address: int, for_input: int) -> Ranking:
        """The failover order the tap holds for one input (protocol minor 2)."""
        return _typed(self.ask(address, "READ_ALTERNATES", {"for_input": for_input}), Ranking)

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
        frame = messages.request(
            target, name, self.next_seq(), dict(values), key=key, epoch=self.epoch, counter=counter
        )
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
        return _RESULTS.get(name, Reply)(name, answer.src, fields, cached)

    def _refused(
        self, address: int, name: str, fields: dict[str, Any], *, verified: bool, retried: bool, signed: bool
    ) -> None:
        if signed and verified and fields["error"] == catalog.E_STALE_EPOCH:
            self.fenced = True
            raise FencedOut(address, name, fields, retried=retried)
        if signed and verified and fields["error"] == catalog.E_REPLAY and self.keys is not None:
            self.keys.commit(address, fields["detail"])  # our counter fell behind the tap's: catch up
        raise TapRefused(address, name, fields, verified=verified, retried=retried)


# -- discovery ------------------------------------------------------------------------------


@dataclass
class Round:
    """One DISCOVER round: the taps that answered in a clean slot, and how many bad frames
    were heard meanwhile (answers that garbled each other in a shared slot, or noise)."""

    found: dict[bytes, Discovered] = field(default_factory=dict)
    collisions: int = 0
    stray: int = 0  # good frames that were not answers to this DISCOVER


@dataclass
class ScanResult:
    found: dict[bytes, Discovered] = field(default_factory=dict)
    rounds: int = 0
    passes: int = 0  # passes over the whole range that settled (every range silent or answered cleanly)
    unresolved: list[tuple[bytes, bytes]] = field(default_factory=list)  # ranges left when max_rounds ran out


_DISCOVER_ANSWER_BYTES = 36  # the largest DISCOVER answer on the wire, delimiter included (SPEC step 3)


def listen_time(slots: int, slot_ms: int, extra_s: float) -> float:
    """SPEC step 4: slots * slot_ms + TURNAROUND_MAX_MS, plus the last answer's way to us (`extra_s`)."""
    return (slots * slot_ms + catalog.TURNAROUND_MAX_MS) / 1000 + extra_s


def answer_allowance(listener: object) -> float:
    """How long the last slot's answer takes to reach us: its wire time and the adapter's latency
    and margin if the listener has `SerialSettings`, else a default that covers 115200 baud."""
    settings = getattr(listener, "settings", None)
    if settings is None:
        return 0.025
    return float(settings.wire_time(_DISCOVER_ANSWER_BYTES) + settings.usb_latency_s + settings.margin_s)


def discover(
    listener: Listener,
    uid_low: bytes = UID_MIN,
    uid_high: bytes = UID_MAX,
    *,
    slots: int = 16,
    slot_ms: int = 5,
    salt: int = 0,
    scope: int = SCOPE_UNADDRESSED,
    seq: int = 0,
    extra_s: float | None = None,
) -> Round:
    """Broadcast one DISCOVER on one bus and collect the answers for the whole window.

    One bus suffices: every tap sits on both. Collisions are counted from the listener's
    `counters` (bad CRC, bad COBS, too short or oversize frames) if it has them, as
    `SerialTransport` does; slot by slot attribution is not needed, since the scan
    splits the whole range on any collision. `extra_s` is added to the SPEC's listening
    time for the last answer to arrive (default: `answer_allowance`).
    """
    if not 1 <= slots <= 64:
        raise ValueError(f"slots must be 1..64, not {slots}")
    fields = {
        "uid_low": uid_low,
        "uid_high": uid_high,
        "slots": slots,
        "slot_ms": slot_ms,
        "salt": salt,
        "scope": scope,
    }
    request = messages.request(catalog.ADDR_BROADCAST, "DISCOVER", seq, fields)
    before = _bad_frames(listener)
    listener.send(framing.encode_frame(request.to_body()))
    result = Round()
    allowance = answer_allowance(listener) if extra_s is None else extra_s
    deadline = time.monotonic() + listen_time(slots, slot_ms, allowance)
    while (left := deadline - time.monotonic()) > 0:
        body = listener.receive(left)
        if body is None:
            break
        found = _discovered(request, body)
        if found is None:
            result.stray += 1
        else:
            result.found.setdefault(found.unique_id, found)
    result.collisions = _bad_frames(listener) - before
    return result


def scan(
    listener: Listener,
    uid_low: bytes = UID_MIN,
    uid_high: bytes = UID_MAX,
    *,
    slots: int = 16,
    slot_ms: int = 5,
    scope: int = SCOPE_UNADDRESSED,
    max_rounds: int = 256,
    max_passes: int = 3,
    rng: random.Random | None = None,
    extra_s: float | None = None,
) -> ScanResult:
    """Find every tap in the range (SPEC "Discovery"): a round with a collision is split in
    halves, each asked again with a new salt, until no round collides. A single id cannot
    collide with itself, so a collision there is noise and the range is asked again.

    A broadcast is not acknowledged: a tap that did not hear the DISCOVER (noise on the
    request) or answered after the window is silent, and a silent round cannot tell it from
    an empty range. So the whole range is scanned again, with new salts, until a pass finds
    no tap the passes before it missed: two passes at least, `max_passes` at most.
    `max_rounds` bounds each pass on a noisy line: what a pass leaves is reported in
    `unresolved`, to narrow and scan again."""
    rng = rng or random.Random()
    seq = rng.randrange(0x10000)
    result = ScanResult()
    whole = (int.from_bytes(uid_low, "big"), int.from_bytes(uid_high, "big"))
    pending: deque[tuple[int, int]] = deque()
    while result.passes < max_passes:
        known = len(result.found)
        pending = deque([whole])
        last = result.rounds + max_rounds  # each pass has max_rounds: a large clean bus takes many
        while pending and result.rounds < last:
            low, high = pending.popleft()
            seq = (seq + 1) & 0xFFFF
            found = discover(
                listener,
                _uid(low),
                _uid(high),
                slots=slots,
                slot_ms=slot_ms,
                salt=rng.randrange(256),
                scope=scope,
                seq=seq,
                extra_s=extra_s,
            )
            result.rounds += 1
            result.found.update(found.found)
            if not found.collisions:
                continue
            if low == high:
                pending.append((low, high))
            else:
                middle = (low + high) // 2
                pending.extend([(low, middle), (middle + 1, high)])
        if pending:
            break  # max_rounds ran out: what is left is unresolved
        result.passes += 1
        if result.passes >= 2 and len(result.found) == known:
            break  # this pass found nobody new
    result.unresolved = [(_uid(low), _uid(high)) for low, high in pending]
    return result


# -- helpers ------------------------------------------------------------------------------------


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


def _discovered(request: Frame, body: bytes) -> Discovered | None:
    try:
        answer = messages.parse_body(body)
        if not (answer.is_response and answer.seq == request.seq and answer.type == catalog.T_DISCOVER):
            return None
        return Discovered("DISCOVER", answer.src, answer.fields())
    except messages.ProtocolError:
        return None


def _bad_frames(listener: object) -> int:
    counters = getattr(listener, "counters", None)
    return sum(getattr(counters, name, 0) for name in ("bad_crc", "bad_cobs", "bad_other"))


def _uid(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _ascii(raw: bytes) -> str:
    return bytes(raw).rstrip(b"\0").decode("ascii", "replace")


def _typed(reply: Reply, kind: type[R]) -> R:
    """The reply as `kind` (it already is one, unless the catalogue and _RESULTS disagree)."""
    if not isinstance(reply, kind):
        raise TypeError(f"{reply.request} answered as {type(reply).__name__}, not {kind.__name__}")
    return reply


def _local_nak(name: str, error: int) -> dict[str, int]:
    """NAK fields for a refusal the client makes itself (fenced out), so it reads like the tap's."""
    return {"request_type": messages.message_named(name).type, "error": error, "detail": 0}
