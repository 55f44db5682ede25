# Waveform capture (SPEC.md: CAPTURE_START, CAPTURE_INFO, CAPTURE_READ). Every channel
# is recorded continuously into a preallocated ring; a capture freezes the ring: at
# once ("now": the cycles just past) or half a ring after the next event (a transfer,
# a trip, a lockout), so the capture shows the event in its middle. Reading serves
# the frozen ring as i16 little-endian samples interleaved in channel order.

from array import array

from micropython import const

from protocol import catalog

_IDLE = const(0)
_WAIT_EVENT = const(1)
_POST_EVENT = const(2)  # recording the second half after the event
_FROZEN = const(3)


class Capture:
    def __init__(self, channels, capacity, fs, nominal_hz):
        self.channels = channels
        self.capacity = capacity  # samples per channel in the ring
        self.fs = fs
        self.nominal_hz = nominal_hz
        self._ring = [array("h", bytearray(2 * capacity)) for _ in range(channels)]
        self._at = 0  # next write position
        self._filled = 0
        self._state = _IDLE
        self._post_left = 0
        self.capture_id = -1
        self.samples = 0  # samples per channel in the frozen capture
        self._start = 0  # ring position of its first sample

    def max_cycles(self):
        return self.capacity * self.nominal_hz // self.fs

    def record(self, volts, amps, n):
        """Every block, unless a capture is frozen."""
        if self._state == _FROZEN:
            return
        at = self._at
        capacity = self.capacity
        last = self.channels - 1
        for j in range(n):
            for c in range(last):
                self._ring[c][at] = volts[c][j]
            self._ring[last][at] = amps[j]
            at += 1
            if at == capacity:
                at = 0
        self._at = at
        if self._filled < capacity:
            self._filled = min(capacity, self._filled + n)
        if self._state == _POST_EVENT:
            self._post_left -= n
            if self._post_left <= 0:
                self._freeze()

    def start(self, capture_id, trigger, cycles):
        """Returns 0, or the 1-based position of the field out of range (OUT_OF_RANGE's
        detail). A start with the held id changes nothing."""
        if capture_id == self.capture_id and self._state != _IDLE:
            return 0
        if trigger != catalog.TRIGGER_NOW and trigger != catalog.TRIGGER_NEXT_EVENT:
            return 2
        if not 1 <= cycles <= self.max_cycles():
            return 3
        if self._state == _FROZEN:
            self._filled = 0  # the ring stood still: what it holds is not the recent past
        self.capture_id = capture_id
        self.samples = cycles * self.fs // self.nominal_hz
        if trigger == catalog.TRIGGER_NEXT_EVENT:
            self._state = _WAIT_EVENT
        elif self._filled >= self.samples:
            self._freeze()  # the cycles just past
        else:
            self._state = _POST_EVENT  # not enough history yet: the cycles to come
            self._post_left = self.samples - self._filled
        return 0

    def on_event(self):
        if self._state == _WAIT_EVENT:
            self._state = _POST_EVENT
            self._post_left = self.samples // 2

    def _freeze(self):
        self.samples = min(self.samples, self._filled)
        self._start = (self._at - self.samples) % self.capacity
        self._state = _FROZEN

    def ready(self):
        return self._state == _FROZEN

    def total_bytes(self):
        return self.samples * self.channels * 2

    def read_into(self, buf, pos, offset, length):
        """Copy `length` bytes of the capture from byte `offset` into buf[pos:]; return
        the number copied (fewer at the end)."""
        total = self.total_bytes()
        end = min(offset + length, total)
        frame_bytes = self.channels * 2
        for byte in range(offset, end):
            sample = byte // frame_bytes
            channel = (byte % frame_bytes) >> 1
            value = self._ring[channel][(self._start + sample) % self.capacity]
            buf[pos] = (value >> 8) & 0xFF if byte & 1 else value & 0xFF
            pos += 1
        return end - offset if end > offset else 0
