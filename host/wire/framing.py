"""COBS + CRC-32 framing on the host (SPEC.md, "Framing").

The C extensions of `cobs` and `crcmod` do the byte work; this module adds the
stream handling: partial frames, several frames in one read, garbage, oversize
frames. It never raises on line noise: a bad frame is counted and skipped.
"""

from __future__ import annotations

import enum
from collections import Counter

import crcmod.predefined
from cobs import cobs

from host.model.errors import LinkError
from protocol import catalog

_crc32 = crcmod.predefined.mkCrcFun("crc-32")  # same values as binascii.crc32
_MIN_DECODED = catalog.HEADER_LEN + catalog.CRC_LEN
_DELIMITER = b"\x00"


class Verdict(enum.Enum):
    """What became of one delimited frame."""

    GOOD = "good"
    BAD_COBS = "bad_cobs"
    BAD_CRC = "bad_crc"
    TOO_SHORT = "too_short"
    OVERSIZE = "oversize"


class FramingError(LinkError, ValueError):
    """A body that cannot be framed (too short or too long)."""


def crc32(data: bytes) -> int:
    return _crc32(data)


def encode_frame(body: bytes) -> bytes:
    """Return the wire bytes of one frame: COBS(body + crc32 LE) + 0x00."""
    if not catalog.HEADER_LEN <= len(body) <= catalog.MAX_BODY:
        raise FramingError(f"body of {len(body)} bytes; must be {catalog.HEADER_LEN}..{catalog.MAX_BODY}")
    return cobs.encode(body + _crc32(body).to_bytes(4, "little")) + _DELIMITER


def decode_frame(encoded: bytes) -> tuple[Verdict, bytes | None]:
    """Classify the bytes between two delimiters; return (verdict, body or None)."""
    if len(encoded) > catalog.MAX_ENCODED:
        return Verdict.OVERSIZE, None
    try:
        decoded = cobs.decode(encoded)
    except cobs.DecodeError:
        return Verdict.BAD_COBS, None
    if len(decoded) > catalog.MAX_DECODED:
        return Verdict.OVERSIZE, None
    if len(decoded) < _MIN_DECODED:
        return Verdict.TOO_SHORT, None
    body, crc = decoded[:-4], decoded[-4:]
    if _crc32(body) != int.from_bytes(crc, "little"):
        return Verdict.BAD_CRC, None
    return Verdict.GOOD, body


class StreamDecoder:
    """Feed it bytes as they arrive; it returns the bodies of the good frames.

    Empty frames (a leading delimiter, or idle delimiters) are skipped silently.
    `counts` tallies every verdict, `last_bad` names the latest bad one.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._discarding = False  # inside an oversize frame, dropping to the next delimiter
        self.counts: Counter[Verdict] = Counter()
        self.last_bad: Verdict | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Return the bodies of the good frames that `data` completes, in order."""
        return [body for _, body in self.feed_classified(data) if body is not None]

    def feed_classified(self, data: bytes) -> list[tuple[Verdict, bytes | None]]:
        """Return (verdict, body or None) for every frame that `data` completes, in order."""
        out: list[tuple[Verdict, bytes | None]] = []
        if _DELIMITER not in data:
            self._append(data)
            return out
        pieces = bytes(self._pending + data).split(_DELIMITER)
        tail = pieces.pop()
        for index, piece in enumerate(pieces):
            if index == 0 and self._discarding:
                self._discarding = False
                verdict, body = Verdict.OVERSIZE, None
            elif not piece:
                continue  # an empty frame: a leading delimiter or idle line
            else:
                verdict, body = decode_frame(piece)
            self._count(verdict)
            out.append((verdict, body))
        self._pending = bytearray()
        self._append(tail)
        return out

    def reset(self) -> None:
        """Drop any partial frame (after a reconnect, say)."""
        self._pending.clear()
        self._discarding = False

    def _append(self, data: bytes) -> None:
        if self._discarding:
            return
        self._pending += data
        if len(self._pending) > catalog.MAX_ENCODED:
            self._pending.clear()
            self._discarding = True

    def _count(self, verdict: Verdict) -> None:
        self.counts[verdict] += 1
        if verdict is not Verdict.GOOD:
            self.last_bad = verdict
