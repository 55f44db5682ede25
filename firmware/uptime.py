# Time since boot, counted per ADC block without leaving a 32-bit MCU's small ints. A
# millisecond count kept as a plain int passes 2**30 after 12.4 days and becomes a heap
# long int, allocated anew on every block from then on; here the milliseconds wrap (event
# stamps and short differences only need them modulo 2**30) and whole seconds, small for
# 34 years, are carried apart.

from micropython import const

WRAP = const(0x3FFFFFFF)


class Uptime:
    def __init__(self):
        self.s = 0  # whole seconds since boot
        self.ms = 0  # milliseconds since boot, modulo 2**30
        self._into_s = 0  # milliseconds into the current second

    def tick(self, ms):
        """`ms` (under a second) more milliseconds have passed."""
        if self.ms > WRAP - ms:
            self.ms = self.ms - WRAP - 1 + ms  # in this order: no intermediate reaches 2**30
        else:
            self.ms += ms
        self._into_s += ms
        if self._into_s >= 1000:
            self._into_s -= 1000
            self.s += 1


def since(now_ms, then_ms):
    """now - then on the wrapping count: the milliseconds from `then_ms` to `now_ms` (gaps
    under 12 days), or, given a duration as `then_ms`, the count that long before now."""
    return (now_ms - then_ms) & WRAP
