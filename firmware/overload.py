# Inverse-time overload element after IEC 60255-151:
#     t(M) = TMS * A / (M**B - 1),  M = I / Is
# standard inverse A=0.14 B=0.02, very inverse A=13.5 B=1, extremely inverse A=80 B=2.
#
# The element integrates 1/t(M) over time and operates when the integral reaches 1
# (the dependent-time behaviour of IEC 60255-151, valid when the current varies). It is
# fed one RMS value per evaluation period (a mains cycle) with that period's length.
# The rate 1/t is tabulated against M when the settings change (floats and allocation
# are fine then) and interpolated at run time in integers below 2**30, allocation free.
# Reset is instantaneous below the drop-off ratio (95% of Is); between that and Is
# the integral holds.

from array import array

from micropython import const

# name: (A, B), by the protocol's curve codes (catalog.CURVE_*)
CURVES = {1: (0.14, 0.02), 2: (13.5, 1.0), 3: (80.0, 2.0)}

ONE = const(0x10000000)  # the integral that operates: 2**28
DT_PER_MS = const(4)  # period lengths are given in quarter milliseconds
M_MAX_Q8 = const(5120)  # the table ends at M = 20; above that the rate stays at M = 20
_DROPOFF_Q8 = const(243)  # 0.95 in Q8
_I_MAX = const(0x1FFFFF)  # mA; shifted by 8 it stays below 2**30
# M grid in Q8: steps of 1/32 to M=2, 1/8 to M=10, 1/4 to M=20
_SEGMENTS = ((256, 512, 8), (512, 2560, 32), (2560, 5120, 64))


def _grid():
    points = []
    for start, stop, step in _SEGMENTS:
        m = start
        while m < stop:
            points.append(m)
            m += step
    points.append(M_MAX_Q8)
    return points


class Overload:
    def __init__(self):
        self._m = array("i", _grid())
        self._rate = array("i", [0] * len(self._m))  # integral per quarter ms, Q28
        self.pickup_mA = 0
        self.progress = 0  # Q28; the element operates at ONE
        self.operated = False

    def configure(self, curve, pickup_mA, tms_milli):
        """Tabulate 1/t for these settings; raise ValueError on settings it cannot honour."""
        if curve not in CURVES:
            raise ValueError("curve")
        if pickup_mA <= 0 or not 50 <= tms_milli <= 1500:
            raise ValueError("pickup or time multiplier")
        a, b = CURVES[curve]
        tms = tms_milli / 1000
        for i in range(len(self._m)):
            m = self._m[i] / 256
            if m <= 1.0:
                self._rate[i] = 0
                continue
            seconds = tms * a / (m**b - 1)
            self._rate[i] = int(ONE / (seconds * 1000 * DT_PER_MS) + 0.5)
        self.pickup_mA = pickup_mA
        self.reset()

    def reset(self):
        self.progress = 0
        self.operated = False

    def feed(self, current_mA, dt):
        """Advance by one period of dt quarter-milliseconds (at most 100: a 40 Hz cycle)
        at current_mA; return True once the element has operated. With TMS >= 0.05 the
        largest rate times dt stays below 2**30."""
        if self.operated:
            return True
        if current_mA > _I_MAX:
            current_mA = _I_MAX  # far above M = 20 for any pickup: the rate is clamped anyway
        m = (current_mA << 8) // self.pickup_mA
        if m < _DROPOFF_Q8:
            self.progress = 0
            return False
        if m <= 256:
            return False
        self.progress += self._rate_at(m) * dt
        if self.progress >= ONE:
            self.operated = True
        return self.operated

    def _rate_at(self, m):
        grid = self._m
        rate = self._rate
        if m >= M_MAX_Q8:
            return rate[len(rate) - 1]
        # the segment, then the point within it: at most 30 compares
        low = 0
        high = len(grid) - 1
        while high - low > 1:
            mid = (low + high) >> 1
            if grid[mid] <= m:
                low = mid
            else:
                high = mid
        span = grid[high] - grid[low]
        return rate[low] + ((rate[high] - rate[low]) * (m - grid[low])) // span
