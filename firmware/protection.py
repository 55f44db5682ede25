# Local protection, with or without a host: loss of the active source and local
# transfer to the first healthy ranked alternate; inverse-time overload; fault currents
# above the relay's breaking capacity (lock out, open only once the upstream fuse or
# breaker has cleared); a fault on the rack side blocks any transfer, as a static
# transfer switch does: moving a short circuit onto a healthy source takes that down too.

from micropython import const

from firmware import relays as rm
from firmware.fixedpoint import isqrt
from protocol import catalog

_FAULT_MEMORY_US = const(25000)  # "the cycle before the voltage collapsed", at 40 Hz


class Settings:
    """SET_LIMITS in protocol units, with the board's limits to check them against."""

    def __init__(self):
        self.curve = catalog.CURVE_STANDARD_INVERSE
        self.pickup_mA = 32000
        self.tms_milli = 100
        self.instantaneous_mA = 320000
        self.undervoltage_mV = 195500
        self.overvoltage_mV = 264500
        self.frequency_low_cHz = 4750
        self.frequency_high_cHz = 5250
        self.thd_max_dpct = 80


class Protection:
    def __init__(self, meter, relays, overload, detectors, settings, counts_per_amp_q8, breaking_mA, fs, ticks_diff):
        """counts_per_amp_q8: ADC counts of the current channel per ampere, times 256."""
        self.meter = meter
        self.relays = relays
        self.overload = overload
        self.detectors = detectors  # one LossDetector per input
        self.settings = settings
        self.breaking_mA = breaking_mA
        self._counts_per_amp_q8 = counts_per_amp_q8
        self._mA_per_count_q8 = 65536000 // counts_per_amp_q8  # 1000 * 256 * 256 / counts_per_amp_q8
        self._diff = ticks_diff
        self.fs = fs
        self.state = catalog.PROT_NORMAL
        self.for_input = 0  # the ranked alternates apply while this input is active
        self.alternates = [0, 0, 0]
        self.transfers = 0
        self.trips = 0
        self.blocked_transfers = 0
        self.last_transfer_from = 0
        self.last_transfer_to = 0
        self.last_loss_sample = 0
        self._fault_seen = False
        self._fault_seen_at = 0
        self._cycle_len = fs // 50
        self._cycle_n = 0
        self._cycle_sq = 0
        self._above_breaking = False
        self._inst_counts = 0
        self.apply_settings(settings)

    def apply_settings(self, settings):
        self.settings = settings
        self.overload.configure(settings.curve, settings.pickup_mA, settings.tms_milli)
        self._inst_counts = self._peak_counts(settings.instantaneous_mA)

    def _peak_counts(self, rms_mA):
        # peak = RMS * sqrt(2) (362/256), in counts; below 2**30 for currents up to 2**21 mA
        return ((((rms_mA // 1000) * self._counts_per_amp_q8) >> 8) * 362) >> 8

    def set_alternates(self, for_input, alternates):
        self.for_input = for_input
        for i in range(3):
            self.alternates[i] = alternates[i]

    def healthy(self, k):
        """Input k (1-based) is present and within limits by its last window and its
        fast detector."""
        if self.detectors[k - 1].lost:
            return False
        ch = self.meter.inputs[k - 1]
        s = self.settings
        if ch.windows == 0:
            return False
        return (s.undervoltage_mV <= ch.voltage_mV <= s.overvoltage_mV
                and s.frequency_low_cHz <= ch.frequency_cHz <= s.frequency_high_cHz
                and ch.thd_dpct <= s.thd_max_dpct)

    def process(self, volts, amps, n, now):
        active = self.relays.active
        lost_active = False
        for k in range(len(self.detectors)):
            detector = self.detectors[k]
            if detector.feed(volts[k], n) and k + 1 == active:
                lost_active = True
                self.last_loss_sample = detector.lost_at
        self._scan_current(amps, n, now)
        self._measure_cycles(amps, n, now)
        if self.state != catalog.PROT_NORMAL and self.state != catalog.PROT_PICKUP:
            return
        if active and (lost_active or self.detectors[active - 1].lost) and self.relays.state == rm.IDLE:
            self._on_loss(active, now)

    def _scan_current(self, amps, n, now):
        # any sample above the instantaneous pickup marks a fault current
        limit = self._inst_counts
        for j in range(n):
            a = amps[j]
            if a > limit or a < -limit:
                self._fault_seen = True
                self._fault_seen_at = now
                return

    def _measure_cycles(self, amps, n, now):
        """The output current's RMS over each nominal cycle, for the overload element and
        for what the relay would have to break."""
        count = self._cycle_n
        sq = self._cycle_sq
        for j in range(n):
            a = amps[j]
            sq += (a * a) >> 4
            count += 1
            if count >= self._cycle_len:
                rms_counts = isqrt((sq // count) << 4)
                self._on_cycle((rms_counts * self._mA_per_count_q8) >> 8, now)
                count = 0
                sq = 0
        self._cycle_n = count
        self._cycle_sq = sq

    def _on_cycle(self, current_mA, now):
        self._above_breaking = current_mA > self.breaking_mA
        state = self.state
        if state == catalog.PROT_LOCKOUT:
            # open only once the fault current is gone (fuse or breaker upstream cleared)
            if not self._above_breaking and self.relays.active and self.relays.state == rm.IDLE:
                self.relays.request(0, 0, now)
            return
        if state != catalog.PROT_NORMAL and state != catalog.PROT_PICKUP:
            return
        dt = self._cycle_len * 4000 // self.fs
        if not self.overload.feed(current_mA, dt):
            self.state = catalog.PROT_PICKUP if self.overload.progress else catalog.PROT_NORMAL
            return
        self.trips += 1
        if self._above_breaking:
            self.state = catalog.PROT_LOCKOUT  # the relay must not try to break this
        else:
            self.state = catalog.PROT_TRIPPED
            self.relays.request(0, 0, now)

    def _on_loss(self, active, now):
        recent_fault = self._fault_seen and self._diff(now, self._fault_seen_at) <= _FAULT_MEMORY_US
        if recent_fault:
            self.state = catalog.PROT_DOWNSTREAM_FAULT
            self.blocked_transfers += 1
            return
        if self._above_breaking:
            self.state = catalog.PROT_LOCKOUT
            self.blocked_transfers += 1
            return
        if self.for_input != active:
            return  # no ranking for this state: stay, the host decides
        for target in self.alternates:
            if target and target != active and self.healthy(target):
                if self.relays.request(target, 0, now) == rm.OK:
                    self.transfers += 1
                    self.last_transfer_from = active
                    self.last_transfer_to = target
                return
