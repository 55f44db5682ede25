"""Finding taps by unique id with the slotted DISCOVER of SPEC.md ("Discovery and
addressing of new taps"): one round, and a scan of a whole range that splits it on
collisions and repeats until a pass finds nobody new."""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from host.client.replies import Discovered
from host.wire import framing, messages
from host.wire.messages import Frame
from protocol import catalog

SCOPE_UNADDRESSED = 0  # DISCOVER: only taps that have no address yet
SCOPE_ALL = 1  # DISCOVER: every tap in the range
UID_MIN = bytes(8)
UID_MAX = b"\xff" * 8


class Listener(Protocol):
    """One bus that can send an unanswered frame and hear whatever answers come (DISCOVER)."""

    def send(self, frame: bytes) -> None: ...

    def receive(self, timeout: float) -> bytes | None: ...


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
