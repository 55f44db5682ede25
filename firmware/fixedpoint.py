# Integer arithmetic for the measurement path that never leaves MicroPython's small
# ints. On a 32-bit MCU a small int holds 31 bits signed (|x| < 2**30); anything larger
# becomes a heap-allocated long int. Every helper here states the range of its inputs
# and keeps every intermediate below 2**30 for them; tests/test_measure.py runs the
# measurement path with every arithmetic result checked against that bound.

from micropython import const

CARRY = const(0x10000000)  # 2**28: the low word of a two-word accumulator stays below it


def isqrt(n):
    """floor(sqrt(n)) for 0 <= n < 2**30, bit by bit."""
    root = 0
    bit = 1 << 28
    while bit > n:
        bit >>= 2
    while bit:
        trial = root + bit
        if n >= trial:
            n -= trial
            root = (root >> 1) + bit
        else:
            root >>= 1
        bit >>= 2
    return root


def mul_shift(x, m, k):
    """(x * m) >> k, within one unit, for |x| < 2**28, 0 <= m < 2**15 and k >= 14.

    x is split into 14-bit halves so that neither partial product reaches 2**29.
    """
    negative = x < 0
    if negative:
        x = -x
    result = ((x >> 14) * m >> (k - 14)) + ((x & 0x3FFF) * m >> k)
    return -result if negative else result


def div_wide(high, low, n):
    """(high * 2**28 + low) // n for 0 <= high < n < 2**14 and 0 <= low < 2**28.

    Long division in 14-bit digits, so no partial result exceeds n * 2**14.
    """
    part = (high << 14) | (low >> 14)
    q1 = part // n
    part = ((part - q1 * n) << 14) | (low & 0x3FFF)
    return (q1 << 14) + part // n
