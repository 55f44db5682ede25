# Fast loss-of-source detection, sample by sample, whatever the phase at the onset.
#
# For a sine of amplitude A sampled every dt, two consecutive samples a, b satisfy
#     a*a + b*b - 2*a*b*cos(w*dt) = A*A * sin(w*dt)**2
# so the left side is an amplitude estimate from two samples, without a PLL and
# without waiting for a peak or a half-cycle RMS. A source is lost when the estimate
# stays below the threshold for `persist` samples (1 ms by default), which rides out
# commutation notches; harmonics ripple the estimate by a few tens of percent, which
# the threshold (70% of nominal by default) leaves room for. Integer arithmetic on
# samples shifted right by 3 keeps every product below 2**30.

import math

import micropython
from micropython import const

_SHIFT = const(3)
_WRAP = const(0x3FFFFFFF)  # sample counts wrap, as ticks do, to stay small ints


class LossDetector:
    def __init__(self, fs, nominal_hz, threshold_counts, persist, restore_persist):
        """threshold_counts: the amplitude (peak, ADC counts) below which the source is lost."""
        step = 2 * math.pi * nominal_hz / fs
        self._c2 = int(2 * math.cos(step) * 256 + 0.5)  # 2 cos(w dt) in Q8, at most 512
        a = threshold_counts >> _SHIFT
        self._threshold = int(a * a * math.sin(step) ** 2 + 0.5)
        self.persist = persist
        self.restore_persist = restore_persist
        self._prev = 0
        self._low = 0
        self._high = 0
        self.lost = False
        self.lost_at = 0  # sample count at detection, for the caller's timing
        self.samples = 0

    @micropython.native
    def feed(self, buf, n):
        """Run a block; return True if the source was found lost in this block."""
        prev = self._prev
        low = self._low
        high = self._high
        threshold = self._threshold
        c2 = self._c2
        newly_lost = False
        for j in range(n):
            b = buf[j] >> _SHIFT
            estimate = b * b + prev * prev - ((b * prev * c2) >> 8)
            prev = b
            if estimate < threshold:
                high = 0
                low += 1
                if low >= self.persist and not self.lost:
                    self.lost = True
                    self.lost_at = (self.samples + j) & _WRAP
                    newly_lost = True
            else:
                low = 0
                high += 1
                if self.lost and high >= self.restore_persist:
                    self.lost = False
        self.samples = (self.samples + n) & _WRAP
        self._prev = prev
        self._low = low
        self._high = high
        return newly_lost
