# Source health for a tap in the monitor role: the signals fault prediction needs
# (SPEC.md, HEALTH). Vibration RMS, kurtosis and crest factor over windows of an
# accelerometer channel (impacts from a worn bearing raise kurtosis and crest factor
# long before the RMS), and the ripple on a DC bus (ageing capacitors let it grow).
# Integer arithmetic below 2**30; the vibration window is kept for the second pass
# that kurtosis needs (normalising by the window's own RMS), preallocated.

from array import array

import micropython
from micropython import const

from firmware.fixedpoint import CARRY, div_wide
from firmware.measure import Rms, window_rms

_LIMIT_28 = const(0x10000000)


class SourceHealth:
    def __init__(self, window, mg_per_count_q8, dc_volts_per_count_q16):
        self.window = window
        self._mg_q8 = mg_per_count_q8
        self._dc_q16 = dc_volts_per_count_q16
        self._vib = array("h", bytearray(2 * window))
        self._n = 0
        self._dc_sum = 0
        self._dc_high = 0
        self._dc_low = 0
        self._dc_ref = 0  # the last window's mean: subtracted first, so the small ripple keeps its precision
        self._dc_started = False
        self._rms = Rms()
        self.vibration_rms_mg = 0
        self.kurtosis_milli = 0
        self.crest_milli = 0
        self.ripple_dpct = 0
        self.dc_volts = 0
        self.windows = 0
        self.since_window = 0  # samples since the last result, for its age

    @micropython.native
    def feed(self, vibration, dc_bus, n):
        vib = self._vib
        if not self._dc_started:
            self._dc_started = True
            self._dc_ref = dc_bus[0]
        ref = self._dc_ref
        count = self._n
        total = self._dc_sum
        high = self._dc_high
        low = self._dc_low
        for j in range(n):
            vib[count] = vibration[j]
            d = dc_bus[j] - ref
            total += d
            low += d * d
            if low >= _LIMIT_28:
                low -= _LIMIT_28
                high += 1
            count += 1
            if count == self.window:
                self._dc_sum = total
                self._dc_high = high
                self._dc_low = low
                self._close()
                count = 0
                total = 0
                high = 0
                low = 0
        self._n = count
        self._dc_sum = total
        self._dc_high = high
        self._dc_low = low
        self.since_window += n

    def _close(self):
        n = self.window
        rms = self._rms
        # DC bus: mean and the RMS of what rides on it
        window_rms(self._dc_sum, self._dc_high, self._dc_low, n, rms)
        mean = self._dc_ref + rms.mean
        self._dc_ref = mean
        if mean > 0:
            self.ripple_dpct = (rms.q * 1000) // (mean << rms.frac)
            self.dc_volts = (mean * self._dc_q16) >> 16
        # vibration: first pass for mean and RMS, second for the fourth moment and peak
        vib = self._vib
        total = 0
        high = 0
        low = 0
        for j in range(n):
            x = vib[j]
            total += x
            low += x * x
            if low >= _LIMIT_28:
                low -= _LIMIT_28
                high += 1
        window_rms(total, high, low, n, rms)
        sigma = rms.q  # Q(frac)
        frac = rms.frac
        self.vibration_rms_mg = (sigma * self._mg_q8) >> (8 + frac)
        if sigma == 0:
            self.kurtosis_milli = 0
            self.crest_milli = 0
        else:
            self._moments(vib, n, rms.mean, sigma, frac)
        self.windows += 1
        self.since_window = 0

    def _moments(self, vib, n, mean, sigma, frac):
        # kurtosis = mean(z**4) / mean(z**2)**2 on samples scaled so that the largest
        # deviation is at most 2**7: z**4 stays below 2**28
        peak = 0
        for j in range(n):
            d = vib[j] - mean
            if d < 0:
                d = -d
            if d > peak:
                peak = d
        shift = 0
        while (peak >> shift) > 127:
            shift += 1
        half = (1 << shift) >> 1
        sum2 = 0
        high = 0
        low = 0
        for j in range(n):
            d = vib[j] - mean
            if d < 0:
                d = -d
            z = (d + half) >> shift
            z2 = z * z
            sum2 += z2
            low += z2 * z2
            if low >= CARRY:
                low -= CARRY
                high += 1
        mean4 = div_wide(high, low, n)
        mean2 = (sum2 + n // 2) // n
        squared = mean2 * mean2
        while mean4 >= 0x100000 or squared >= 0x100000:
            mean4 >>= 1
            squared >>= 1
        self.kurtosis_milli = (mean4 * 1000) // squared if squared else 0
        milli = peak * 1000  # crest = peak / sigma, with sigma in Q(frac)
        self.crest_milli = ((milli // sigma) << frac) + (((milli % sigma) << frac) // sigma)
