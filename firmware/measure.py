# Measurement: RMS, frequency, THD of every input; RMS current, real and apparent
# power and power factor of the output. Pure integer arithmetic on preallocated state:
# processing a block of samples allocates nothing and no intermediate reaches 2**30
# (MicroPython's small-int limit on a 32-bit MCU; see fixedpoint.py).
#
# Samples are ADC counts in array('h') blocks, one per channel, at `fs` per channel,
# at most 14 bits after the offset (|s| <= 8192). Results are in protocol units.
#
# Calibration (SPEC.md, SET_CALIBRATION) is in the scales and RMS offsets the owner
# sets between blocks: each channel's (m, k) and `rms_offset` (counts added to the
# window's RMS, |rms_offset| <= 64), and per input the power scale (pm, pk) of that
# input's voltage times the output current. Applied once per window, not per sample.
#
# Windows: each input is measured over WINDOW_CYCLES whole cycles between rising zero
# crossings of its own voltage (IEC 61000-4-30 uses 10 cycles at 50 Hz); tiling whole
# cycles keeps the RMS error of a window that is not an exact number of periods below
# one sample in 10 cycles. The output is measured over windows of the sample count
# closest to WINDOW_CYCLES cycles of the active input. THD is computed round-robin, one
# input at a time, over two recorded cycles, by a DFT at the odd harmonics 1..15.

import math
from array import array

import micropython
from micropython import const

from firmware.fixedpoint import CARRY, div_wide, isqrt, mul_shift

WINDOW_CYCLES = const(10)
_PERIODS = const(4)  # periods averaged for frequency
_Q = const(256)  # crossing times in 1/256 of a sample
_HARMONICS = (1, 3, 5, 7, 9, 11, 13, 15)
_TABLE = const(1024)  # sine table length
_PHASE_MASK = const(0xFFFF)  # 1024 * 64 - 1: table index in Q6
_THD_CYCLES = const(2)
_LIMIT_28 = const(0x10000000)
_SMALL_INT_MAX = const(0x3FFFFFFF)  # the largest small int of a 32-bit port
_SAMPLE_WRAP = const(0x3FFFFF)  # 2**22 - 1: a sample index in Q8 stays below 2**30
_Q_WRAP = const(0x3FFFFFFF)
_Q_HALF = const(0x20000000)


def scale_for(units_per_count):
    """(m, k) with m * 2**-k ~= units_per_count and m in [2**14, 2**15), so that a
    value below 2**14 times m stays below 2**29. Start-up only: floats are fine here."""
    k = 0
    while units_per_count * (1 << (k + 1)) < 32768:
        k += 1
    while units_per_count * (1 << k) >= 32768:
        k -= 1
    return int(units_per_count * (1 << k) + 0.5), k


class _Input:
    def __init__(self, offset, m, k, pm, pk):
        self.offset = offset
        self.m = m
        self.k = k
        self.rms_offset = 0  # calibration: counts added to the RMS of each window
        self.pm = pm  # watts per count**2 of this input's voltage times the current, as pm * 2**-pk
        self.pk = pk
        self.dc = 0  # DC of the last window, removed before crossing detection
        # running window
        self.n = 0
        self.sum = 0
        self.sq_high = 0
        self.sq_low = 0
        self.cycles = 0
        self.armed = False
        self.prev = 0
        self.since_q = 0  # time since the last rising crossing, in 1/256 sample
        self.seen_crossing = False
        self.periods = array("i", [0] * _PERIODS)
        self.period_at = 0
        self.valid_periods = 0
        # results
        self.rms = Rms()
        self.voltage_mV = 0
        self.frequency_cHz = 0
        self.thd_dpct = 0
        self.windows = 0
        self.cross_q = 0  # time of the last rising crossing, 1/256 sample, modulo 2**30


class Meter:
    def __init__(self, fs, nominal_hz, inputs, output, power_m, power_k, hysteresis):
        """inputs: [(offset, m, k)] per input; output: (offset, m, k) of the current;
        (power_m, power_k): watts per count**2 as m * 2**-power_k; hysteresis: counts
        below zero a voltage must reach before a rising crossing counts."""
        if fs * 100 * _Q * _PERIODS > _SMALL_INT_MAX:
            raise ValueError("sampling rate too high for the frequency arithmetic")
        self.fs = fs
        self.nominal_hz = nominal_hz
        self.hysteresis = hysteresis
        self.inputs = [_Input(o, m, k, power_m, power_k) for (o, m, k) in inputs]
        self.max_cycle = fs // 40  # no crossing for longer than a 40 Hz period: no cycle
        self._freq_k = fs * 100 * _Q * _PERIODS
        self.active = 0  # 1-based active input, 0 when the output is open
        # output window
        self.out_offset, self.out_m, self.out_k = output
        self.out_rms_offset = 0  # calibration: counts added to the RMS of each output window
        self.power_m = power_m
        self.power_k = power_k
        self._out_len = WINDOW_CYCLES * fs // nominal_hz
        self._o_n = 0
        self._o_sum_i = 0
        self._o_sum_v = 0
        self._o_sq_high = 0
        self._o_sq_low = 0
        self._o_vi_high = 0
        self._o_vi_low = 0
        self._out_rms = Rms()
        self.current_mA = 0
        self.power_W = 0
        self.apparent_VA = 0
        self.power_factor_milli = 0
        self.output_windows = 0
        self.samples = 0  # samples processed per channel, modulo 2**22 (so that Q8 times fit 30 bits)
        # THD: one input at a time records two cycles, then a DFT
        # filled in place: a list first would double the start-up peak on a small heap
        self._sin = array("h", bytearray(2 * _TABLE))
        for i in range(_TABLE):
            self._sin[i] = int(16384 * math.sin(2 * math.pi * i / _TABLE))
        self._thd_buf = array("h", bytearray(2 * (_THD_CYCLES * self.max_cycle + 2)))
        self._thd_re = array("i", bytearray(4 * len(_HARMONICS)))
        self._thd_im = array("i", bytearray(4 * len(_HARMONICS)))
        self._thd_input = 0
        self._thd_state = 0  # 0 wait for a crossing, 1 recording, 2 ready
        self._thd_n = 0
        self._thd_cycles = 0
        self._thd_span_q = 0  # the recorded cycles' duration, 1/256 sample

    def process(self, volts, amps, n):
        """Measure one block: volts[k] the samples of input k+1, amps the output's."""
        for index in range(len(self.inputs)):
            self._input_block(index, volts[index], n)
        self.samples = (self.samples + n) & _SAMPLE_WRAP
        active = self.active
        self._output_block(amps, volts[active - 1] if active else None, n)
        if self._thd_state == 2:
            self._thd_compute()

    @micropython.native
    def _input_block(self, index, buf, n):
        ch = self.inputs[index]
        offset = ch.offset
        dc = ch.dc
        hyst = self.hysteresis
        max_cycle_q = self.max_cycle * _Q
        count = ch.n
        total = ch.sum
        sq_high = ch.sq_high
        sq_low = ch.sq_low
        armed = ch.armed
        prev = ch.prev
        since_q = ch.since_q
        record = index == self._thd_input and self._thd_state < 2
        thd_buf = self._thd_buf
        thd_limit = len(thd_buf)
        for j in range(n):
            s = buf[j] - offset
            total += s
            sq_low += s * s
            if sq_low >= _LIMIT_28:
                sq_low -= _LIMIT_28
                sq_high += 1
            count += 1
            since_q += _Q
            v = s - dc
            cycle_ended = False
            if v < -hyst:
                armed = True
            elif armed and prev < 0 <= v:
                armed = False
                frac = (_Q * -prev) // (v - prev)
                period = since_q - _Q + frac
                since_q = _Q - frac
                ch.since_q = since_q
                ch.cross_q = ((((self.samples + j - 1) & _SAMPLE_WRAP) << 8) + frac) & _Q_WRAP
                self._crossing(ch, period, record)
                cycle_ended = True
            if since_q > max_cycle_q:
                # no crossing for a whole slow period: a lost or DC input
                since_q = 0
                ch.valid_periods = 0
                ch.seen_crossing = False
                cycle_ended = True
            if cycle_ended:
                ch.cycles += 1
                if ch.cycles >= WINDOW_CYCLES:
                    ch.n = count
                    ch.sum = total
                    ch.sq_high = sq_high
                    ch.sq_low = sq_low
                    self._close_input(ch)
                    dc = ch.dc
                    count = 0
                    total = 0
                    sq_high = 0
                    sq_low = 0
            if record and self._thd_state == 1:
                # after the crossing test, so the window starts at a crossing's sample
                if self._thd_n < thd_limit:
                    thd_buf[self._thd_n] = v
                    self._thd_n += 1
                else:
                    self._thd_state = 0  # no crossing in time: start again
            prev = v
        ch.n = count
        ch.sum = total
        ch.sq_high = sq_high
        ch.sq_low = sq_low
        ch.armed = armed
        ch.prev = prev
        ch.since_q = since_q

    def _crossing(self, ch, period, record):
        if ch.seen_crossing:
            ch.periods[ch.period_at] = period
            ch.period_at = (ch.period_at + 1) % _PERIODS
            if ch.valid_periods < _PERIODS:
                ch.valid_periods += 1
        ch.seen_crossing = True
        if record:
            if self._thd_state == 0:
                self._thd_state = 1
                self._thd_n = 0
                self._thd_cycles = 0
                self._thd_span_q = 0
            else:
                self._thd_cycles += 1
                self._thd_span_q += period
                if self._thd_cycles >= _THD_CYCLES:
                    self._thd_state = 2

    def _close_input(self, ch):
        n = ch.n
        ch.cycles = 0
        if n == 0:
            return
        rms = ch.rms
        window_rms(ch.sum, ch.sq_high, ch.sq_low, n, rms)
        if ch.rms_offset:
            offset_rms(rms, ch.rms_offset)
        ch.dc = rms.mean
        ch.voltage_mV = (rms.q * ch.m) >> (ch.k + rms.frac)
        if ch.valid_periods == _PERIODS:
            periods = ch.periods
            total = 0
            for i in range(_PERIODS):
                total += periods[i]
            ch.frequency_cHz = (self._freq_k + total // 2) // total
        else:
            ch.frequency_cHz = 0
        ch.windows += 1

    @micropython.native
    def _output_block(self, amps, volts, n):
        offset = self.out_offset
        v_offset = self.inputs[self.active - 1].offset if volts is not None else 0
        count = self._o_n
        sum_i = self._o_sum_i
        sum_v = self._o_sum_v
        sq_high = self._o_sq_high
        sq_low = self._o_sq_low
        vi_high = self._o_vi_high
        vi_low = self._o_vi_low
        length = self._out_len
        for j in range(n):
            a = amps[j] - offset
            sum_i += a
            sq_low += a * a
            if sq_low >= _LIMIT_28:
                sq_low -= _LIMIT_28
                sq_high += 1
            if volts is not None:
                v = volts[j] - v_offset
                sum_v += v
                vi_low += v * a
                if vi_low >= _LIMIT_28:
                    vi_low -= _LIMIT_28
                    vi_high += 1
                elif vi_low < 0:
                    vi_low += _LIMIT_28
                    vi_high -= 1
            count += 1
            if count >= length:
                self._close_output(count, sum_i, sum_v, sq_high, sq_low, vi_high, vi_low)
                length = self._out_len
                count = 0
                sum_i = 0
                sum_v = 0
                sq_high = 0
                sq_low = 0
                vi_high = 0
                vi_low = 0
        self._o_n = count
        self._o_sum_i = sum_i
        self._o_sum_v = sum_v
        self._o_sq_high = sq_high
        self._o_sq_low = sq_low
        self._o_vi_high = vi_high
        self._o_vi_low = vi_low

    def _close_output(self, n, sum_i, sum_v, sq_high, sq_low, vi_high, vi_low):
        rms = self._out_rms
        window_rms(sum_i, sq_high, sq_low, n, rms)
        if self.out_rms_offset:
            offset_rms(rms, self.out_rms_offset)
        self.current_mA = (rms.q * self.out_m) >> (self.out_k + rms.frac)
        power = 0
        apparent = 0
        if self.active:
            ch = self.inputs[self.active - 1]
            # mean(v*i) - mean(v)*mean(i): the power of the AC parts, offsets removed
            mean_vi = _signed_mean(vi_high, vi_low, n) - (sum_v // n) * rms.mean
            power = mul_shift(mean_vi, ch.pm, ch.pk)
            apparent = mul_shift(rms.q * ch.rms.q, ch.pm, ch.pk + rms.frac + ch.rms.frac)
            if ch.frequency_cHz:
                # the next window: the whole number of samples closest to WINDOW_CYCLES cycles
                self._out_len = (WINDOW_CYCLES * 100 * self.fs + ch.frequency_cHz // 2) // ch.frequency_cHz
        self.power_W = power
        self.apparent_VA = apparent
        self.power_factor_milli = (power * 1000) // apparent if apparent > 0 else 0
        self.output_windows += 1

    def phase_cdeg(self, k):
        """Phase of input k relative to input 1 in hundredths of a degree, positive when
        it leads; 0 when either has no stable frequency."""
        ref = self.inputs[0]
        ch = self.inputs[k - 1]
        if k == 1 or ref.valid_periods < _PERIODS or ch.valid_periods < _PERIODS:
            return 0
        period = ref.periods[(ref.period_at + _PERIODS - 1) % _PERIODS]
        if period <= 0:
            return 0
        lag = (ch.cross_q - ref.cross_q) & _Q_WRAP  # how long after input 1's crossing k crosses
        if lag > _Q_HALF:
            lag -= _Q_WRAP + 1  # it crossed before: a negative lag, folded into the period below
        lag %= period
        phase = -((lag * 36000 + period // 2) // period)  # later is behind
        if phase <= -18000:
            phase += 36000
        return phase

    def _thd_compute(self):
        ch = self.inputs[self._thd_input]
        n = self._thd_n
        ch.thd_dpct = _thd(self._thd_buf, n, self._thd_span_q, self._sin, self._thd_re, self._thd_im)
        self._thd_input = (self._thd_input + 1) % len(self.inputs)
        self._thd_state = 0


class Rms:
    """Where window_rms() leaves its results: returning a tuple would allocate."""

    def __init__(self):
        self.q = 0  # RMS in counts, Q(frac)
        self.frac = 0
        self.mean = 0  # DC in counts


def window_rms(total, sq_high, sq_low, n, out):
    """RMS (offset removed) and mean of a window from its sums, into out (an Rms)."""
    mean_sq = div_wide(sq_high, sq_low, n)
    frac = 0
    while frac < 7 and mean_sq < (_LIMIT_28 >> (2 * frac + 2)):
        frac += 1
    shift = 2 * frac
    if shift:
        sq_high = (sq_high << shift) | (sq_low >> (28 - shift))
        sq_low = (sq_low & ((1 << (28 - shift)) - 1)) << shift
        mean_sq = div_wide(sq_high, sq_low, n)
    mean = total // n
    mean_q = (mean << frac) + (((total - mean * n) << frac) // n)
    variance = mean_sq - mean_q * mean_q
    if variance < 0:
        variance = 0
    out.q = isqrt(variance)
    out.frac = frac
    out.mean = mean


def offset_rms(rms, offset):
    """Add `offset` counts (|offset| <= 64) to the RMS in rms (an Rms), not below 0,
    keeping rms.q below 2**14 as window_rms leaves it: with frac f the RMS is below
    2**(14-f) counts, so the sum stays below 2**14 + 2**(6+f) <= 3 * 2**13, and one step
    of frac less brings it back (at f = 0 the RMS is at most 8192 and needs none)."""
    q = rms.q + (offset << rms.frac)
    if q >= 0x4000:
        q >>= 1
        rms.frac -= 1
    rms.q = q if q > 0 else 0


def _signed_mean(high, low, n):
    """(high * 2**28 + low) // n for a signed two-word sum with 0 <= low < 2**28."""
    if high >= 0:
        return div_wide(high, low, n)
    if low:
        return -div_wide(-high - 1, CARRY - low, n)
    return -div_wide(-high, 0, n)


@micropython.native
def _thd(buf, n, span_q, sine, re, im):
    """THD of the odd harmonics 3..15 in tenths of a percent, over buf[:n] holding
    _THD_CYCLES cycles that last span_q/256 samples: the analysis frequencies are the
    measured harmonics, not the bins of n samples."""
    if n < 16 or span_q < 16 * _Q:
        return 0
    biggest = 0
    for h in range(len(_HARMONICS)):
        # phase in 1/64 of a table step: h * cycles * 1024 * 64 * 256 stays below 2**29
        step = (_HARMONICS[h] * _THD_CYCLES * _TABLE * 64 * _Q) // span_q
        phase = 0
        acc_re = 0
        acc_im = 0
        for j in range(n):
            x = buf[j]
            index = phase >> 6
            acc_re += (x * sine[(index + 256) & 1023]) >> 8
            acc_im += (x * sine[index]) >> 8
            phase = (phase + step) & _PHASE_MASK
        re[h] = acc_re
        im[h] = acc_im
        if acc_re < 0:
            acc_re = -acc_re
        if acc_im < 0:
            acc_im = -acc_im
        if acc_re > biggest:
            biggest = acc_re
        if acc_im > biggest:
            biggest = acc_im
    shift = 0
    while (biggest >> shift) >= 4096:
        shift += 1
    fundamental = 0
    harmonics = 0
    for h in range(len(_HARMONICS)):
        r = re[h] >> shift
        i = im[h] >> shift
        if h == 0:
            fundamental = r * r + i * i
        else:
            harmonics += r * r + i * i
    root = isqrt(fundamental)
    if root == 0:
        return 0
    return (1000 * isqrt(harmonics) + root // 2) // root
