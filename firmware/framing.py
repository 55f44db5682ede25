# COBS + CRC-32 framing for the tap (SPEC.md, "Framing").
#
# Every buffer is allocated once, in __init__. In steady state a frame in or out
# allocates nothing: COBS runs byte by byte into preallocated buffers, and CRC-32
# (binascii.crc32) runs over memoryviews of exact length cached per length, since
# slicing a memoryview allocates on MicroPython.
# Caveat for 32-bit ports: a CRC value of 2**30 or more is a long int there. The
# receive check compares against the residue 0x2144DF1C (< 2**30), so intact frames
# still allocate nothing; the transmit side allocates that one long int for about
# three frames in four (16 bytes on the RP2040), and nothing more.

import binascii
import struct

import micropython
from micropython import const

from protocol import catalog

_MAX_DECODED = const(324)  # = catalog.MAX_DECODED (const() takes literals only)
_MAX_ENCODED = const(326)  # = catalog.MAX_ENCODED
_MIN_DECODED = const(11)  # = catalog.HEADER_LEN + catalog.CRC_LEN
_RESIDUE = const(0x2144DF1C)  # = catalog.CRC_RESIDUE

# feed() results besides a body length
NOTHING = 0
BAD_COBS = -1
BAD_CRC = -2
TOO_SHORT = -3
OVERSIZE = -4

VERDICTS = {BAD_COBS: "bad_cobs", BAD_CRC: "bad_crc", TOO_SHORT: "too_short", OVERSIZE: "oversize"}


class _ExactViews:
    """memoryviews of a buffer's first n bytes, made once per n and reused."""

    def __init__(self, buf):
        self._whole = memoryview(buf)
        self._views = [None] * (len(buf) + 1)  # type: list[memoryview | None]

    def get(self, n):
        view = self._views[n]
        if view is None:
            view = self._whole[:n]
            self._views[n] = view
        return view


class Decoder:
    """Turns a byte stream into frame bodies; never raises on line noise.

    Call feed(buf, start, end): it consumes bytes up to and including the first
    delimiter and returns the index after the last byte consumed. Then `result` is
    NOTHING (need more bytes), a body length n (body[:n] is header+payload+trailer,
    CRC stripped), or a negative verdict. Counters count each verdict.
    """

    def __init__(self):
        self.body = bytearray(_MAX_DECODED)
        self._views = _ExactViews(self.body)
        self.result = NOTHING
        self.good = 0
        self.bad_cobs = 0
        self.bad_crc = 0
        self.too_short = 0
        self.oversize = 0
        self._raw = 0  # encoded bytes since the last delimiter
        self._len = 0  # decoded bytes, counted on past the buffer's end
        self._left = 0  # data bytes left in the current COBS block
        self._zero_after = False  # the current block ends in an encoded zero

    @micropython.native
    def feed(self, buf, start, end):
        # The state lives in locals inside the loop: attribute access is the slow part.
        body = self.body
        raw = self._raw
        n = self._len
        left = self._left
        zero_after = self._zero_after
        i = start
        while i < end:
            b = buf[i]
            i += 1
            if b == 0:
                self._raw = raw
                self._len = n
                self._left = left
                self.result = self._finish()
                return i
            raw += 1
            if raw > _MAX_ENCODED:
                continue  # oversize: nothing more is stored up to the delimiter
            if left == 0:  # a code byte
                if raw > 1 and zero_after:
                    if n < _MAX_DECODED:
                        body[n] = 0
                    n += 1
                left = b - 1
                zero_after = b != 0xFF
            else:
                if n < _MAX_DECODED:
                    body[n] = b
                n += 1
                left -= 1
        self._raw = raw
        self._len = n
        self._left = left
        self._zero_after = zero_after
        self.result = NOTHING
        return i

    def _finish(self):
        # The verdicts are checked in the order SPEC.md gives, the host's order.
        raw = self._raw
        n = self._len
        truncated = self._left != 0
        self._raw = 0
        self._len = 0
        self._left = 0
        if raw == 0:
            return NOTHING  # an empty frame: a leading delimiter, or idle
        if raw > _MAX_ENCODED:
            self.oversize += 1
            return OVERSIZE
        if truncated:
            self.bad_cobs += 1
            return BAD_COBS
        if n > _MAX_DECODED:
            self.oversize += 1
            return OVERSIZE
        if n < _MIN_DECODED:
            self.too_short += 1
            return TOO_SHORT
        if binascii.crc32(self._views.get(n)) != _RESIDUE:
            self.bad_crc += 1
            return BAD_CRC
        self.good += 1
        return n - 4


class Encoder:
    """Frames a body: COBS(body + crc32 LE) + delimiter, into a preallocated buffer.

    Write the body into `body` (room is left for the CRC), then call encode(n);
    it returns the length of the frame in `out`.
    """

    def __init__(self):
        self.body = bytearray(_MAX_DECODED)
        self.out = bytearray(catalog.MAX_ENCODED + 1)
        self._views = _ExactViews(self.body)

    def encode(self, n):
        if n < _MIN_DECODED - 4 or n > _MAX_DECODED - 4:
            raise ValueError("body length")
        # One pack_into, not shifts and masks: on a 32-bit port the CRC may be a long
        # int, and every operation on one would allocate another.
        struct.pack_into("<I", self.body, n, binascii.crc32(self._views.get(n)))
        return _cobs_encode(self.body, n + 4, self.out)


@micropython.native
def _cobs_encode(src, n, out):
    code_at = 0
    o = 1
    code = 1
    after_full_block = False  # a block of 254 ends without a zero: no empty block after it
    for i in range(n):
        b = src[i]
        after_full_block = False
        if b == 0:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
        else:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = o
                o += 1
                code = 1
                after_full_block = True
    if after_full_block:
        o -= 1
    else:
        out[code_at] = code
    out[o] = 0
    return o + 1
