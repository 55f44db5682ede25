# Calibration (SPEC.md, SET_CALIBRATION): the checks of a channel's gain and offset, and
# applying every channel's into the meter's and protection's scales. At start-up and after
# SET_CALIBRATION, between blocks: floats are fine here, the sample path stays integer.

from firmware.measure import scale_for
from protocol import catalog


def problem(n, kind, index, gain_ppm, offset_counts):
    """The 1-based position of the first field of SET_CALIBRATION out of range, or 0."""
    if kind != catalog.CHANNEL_INPUT_VOLTAGE and kind != catalog.CHANNEL_OUTPUT_CURRENT:
        return 1
    if (kind == catalog.CHANNEL_INPUT_VOLTAGE and not 1 <= index <= n) or (
            kind == catalog.CHANNEL_OUTPUT_CURRENT and index != 0):
        return 2
    if not catalog.CAL_GAIN_MIN_PPM <= gain_ppm <= catalog.CAL_GAIN_MAX_PPM:
        return 3
    if not -catalog.CAL_OFFSET_MAX_COUNTS <= offset_counts <= catalog.CAL_OFFSET_MAX_COUNTS:
        return 4
    return 0


def usable(n, calibration):
    """A persisted calibration fits this board: n + 1 channels, each None or in range."""
    if not isinstance(calibration, list) or len(calibration) != n + 1:
        return False
    for channel in range(n + 1):
        entry = calibration[channel]
        if entry is None:
            continue
        if not isinstance(entry, list) or len(entry) != 2:
            return False
        gain, offset = entry
        if not isinstance(gain, int) or not isinstance(offset, int):
            return False
        kind = catalog.CHANNEL_INPUT_VOLTAGE if channel < n else catalog.CHANNEL_OUTPUT_CURRENT
        if problem(n, kind, channel + 1 if channel < n else 0, gain, offset):
            return False
    return True


def calibrated(units_per_count, gain_ppm):
    """A nominal scale times a gain in ppm (exactly the nominal scale at the nominal gain)."""
    if gain_ppm == catalog.CAL_GAIN_NOMINAL_PPM:
        return units_per_count
    return units_per_count * gain_ppm / 1e6


def gain_offset(tap, channel):
    """(gain_ppm, offset_counts) of channel 0..n (inputs, then the current) in force."""
    entry = tap.config.data["calibration"][channel]
    if entry is None:
        return catalog.CAL_GAIN_NOMINAL_PPM, 0
    return entry[0], entry[1]


def apply(tap):
    """Every channel's calibration into the meter's scales and RMS offsets, the power
    scales, and the overload element's current scale. At start-up and after
    SET_CALIBRATION, between blocks: floats are fine here, the sample path stays integer."""
    board = tap.board
    meter = tap.meter
    n = tap.n
    current_gain, current_offset = gain_offset(tap, n)
    mA_per_count = calibrated(board["mA_per_count"], current_gain)
    meter.out_m, meter.out_k = scale_for(mA_per_count)
    meter.out_rms_offset = current_offset
    for channel in range(n):
        gain, offset = gain_offset(tap, channel)
        mV_per_count = calibrated(board["mV_per_count"], gain)
        ch = meter.inputs[channel]
        ch.m, ch.k = scale_for(mV_per_count)
        ch.rms_offset = offset
        ch.pm, ch.pk = scale_for(mV_per_count * mA_per_count / 1e6)
    # the overload and instantaneous elements count current in ADC counts: their scale
    # takes the gain too (firmware/protection.py keeps it as set at construction)
    counts_per_amp_q8 = board["counts_per_amp_q8"]
    if current_gain != catalog.CAL_GAIN_NOMINAL_PPM:
        counts_per_amp_q8 = int(counts_per_amp_q8 * 1e6 / current_gain + 0.5)
    p = tap.protection
    p._counts_per_amp_q8 = counts_per_amp_q8
    p._mA_per_count_q8 = 65536000 // counts_per_amp_q8
    p._inst_counts = p._peak_counts(p.settings.instantaneous_mA)
