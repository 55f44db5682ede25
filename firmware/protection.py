# Local protection, with or without a host: loss of the active source and local
# transfer to the first healthy ranked alternate; an input out of its limits for longer
# than a delay (over-voltage, frequency, a sustained sag) the same way; inverse-time
# overload; fault currents above the relay's breaking capacity (lock out, open only
# once the upstream fuse or breaker has cleared); a fault on the rack side blocks any
# transfer, as a static transfer switch does: moving a short circuit onto a healthy
# source takes that down too. Automatic transfers are limited per minute (then they
# stop, on the last good source, until the host acts); with no host, the rack returns
# to its preferred input once that has been healthy for a while.

import micropython
from micropython import const

from firmware import relays as rm
from firmware.fixedpoint import isqrt
from protocol import catalog

_FAULT_MEMORY_US = const(25000)  # "the cycle before the voltage collapsed", at 40 Hz
_MINUTE_US = const(60000000)


class Settings:
    """SET_LIMITS in protocol units. The pickups are the sim board's defaults (80% of its
    40 A relays and fuses; its relays' 40 A breaking capacity): a tap derives both from
    its own board's ratings (firmware/tap.py, _defaults)."""

    def __init__(self):
        self.curve = catalog.CURVE_STANDARD_INVERSE
        self.pickup_mA = 32000
        self.tms_milli = 100
        self.instantaneous_mA = 40000  # never above what the relay may break
        self.undervoltage_mV = 195500
        self.overvoltage_mV = 264500
        self.frequency_low_cHz = 4750
        self.frequency_high_cHz = 5250
        self.thd_max_dpct = 80
        # not in SET_LIMITS: board defaults
        self.unhealthy_delay_ms = 500  # an input out of limits this long is left
        self.max_transfers_per_minute = 4
        self.return_delay_s = 300  # with no host, the preferred input healthy this long: go back (<= 500)
        self.min_dwell_s = 10  # after a transfer, no planned or delayed one before this (a loss still moves at once)
        self.phase_window_cdeg = 3000  # a planned transfer between live sources waits for this phase difference
        self.phase_wait_ms = 2000  # ... at most this long, then goes ahead


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
        n = len(detectors)
        self.rankings = [[0, 0, 0] for _ in range(n)]  # row k-1: where to go when input k is lost
        self.preferred = 0  # the input the host last chose; with no host the rack returns to it
        self.host_present = True
        self._recent = [0] * 8  # times of the latest automatic transfers (ring)
        self._recent_at = 0
        self._recent_count = 0
        self._unhealthy_since = 0
        self._unhealthy = False
        self._preferred_since = 0
        self._preferred_ok = False
        self._last_transfer_at = 0
        self._any_transfer = False
        self._planned_target = 0  # a planned transfer waiting for its phase window
        self._planned_fallback = 0
        self._planned_since = 0
        self.transfers = 0
        self.trips = 0
        self.blocked_transfers = 0
        self.last_transfer_from = 0
        self.last_transfer_to = 0
        self.last_loss_sample = 0
        self._fault_seen = False
        self._fault_seen_at = 0
        self._fault_peak = 0  # counts: the sample that marked the last fault current
        self.cycle_mA = 0  # the output current's RMS over the last nominal cycle
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
        row = self.rankings[for_input - 1]
        for i in range(3):
            row[i] = alternates[i]

    def clear_chatter(self):
        """After a host command: automatic transfers may resume."""
        self._recent_count = 0
        if self.state == catalog.PROT_CHATTER:
            self.state = catalog.PROT_NORMAL

    def healthy(self, k):
        """Input k (1-based) is present and within limits by its last window and its
        fast detector."""
        if self.detectors[k - 1].lost or self.meter.inputs[k - 1].windows == 0:
            return False
        return self._limits_ok(k)

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
        if not active or self.relays.state != rm.IDLE:
            return
        if lost_active or self.detectors[active - 1].lost:
            self._planned_target = 0  # a loss overrides a planned transfer
            self._on_loss(active, now)
        elif self._planned_target:
            self._step_planned(active, now)
        elif self._out_of_limits_too_long(active, now):
            if self._dwelt(now):
                self._transfer_away(active, now)
        elif not self.host_present:
            self._maybe_return(active, now)

    def request_planned(self, target, fallback, now):
        """A transfer between live sources (the host's SWITCH, a return to the preferred
        input): at once if their phases are within the window, else when they drift into
        it, or after phase_wait_ms."""
        self._planned_target = target
        self._planned_fallback = fallback
        self._planned_since = now
        active = self.relays.active
        if active and self.relays.state == rm.IDLE:
            self._step_planned(active, now)

    def planned_pending(self):
        return self._planned_target

    def _step_planned(self, active, now):
        target = self._planned_target
        difference = (self.meter.phase_cdeg(target) - self.meter.phase_cdeg(active) + 18000) % 36000 - 18000
        waited = self._diff(now, self._planned_since) >= self.settings.phase_wait_ms * 1000
        if -self.settings.phase_window_cdeg <= difference <= self.settings.phase_window_cdeg or waited:
            self._planned_target = 0
            if self.relays.request(target, self._planned_fallback, now) == rm.OK:
                self._note_transfer(now)

    def _note_transfer(self, now):
        self._last_transfer_at = now
        self._any_transfer = True

    def _dwelt(self, now):
        return not self._any_transfer or self._diff(now, self._last_transfer_at) >= self.settings.min_dwell_s * 1000000

    @micropython.native
    def _scan_current(self, amps, n, now):
        # any sample above the instantaneous pickup marks a fault current
        limit = self._inst_counts
        for j in range(n):
            a = amps[j]
            if a > limit or a < -limit:
                self._fault_seen = True
                self._fault_seen_at = now
                self._fault_peak = a if a > 0 else -a
                return

    def fault_mA(self):
        """The last fault current, as the RMS of a sine with that peak (comparable with
        instantaneous_mA); intermediates below 2**30 as in _measure_cycles."""
        return (((self._fault_peak * 181) >> 8) * self._mA_per_count_q8) >> 8  # 1/sqrt(2) = 181/256

    @micropython.native
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
        self.cycle_mA = current_mA
        self._above_breaking = current_mA > self.breaking_mA
        state = self.state
        if state == catalog.PROT_LOCKOUT:
            # open only once the fault current is gone (fuse or breaker upstream cleared)
            if not self._above_breaking and self.relays.active and self.relays.state == rm.IDLE:
                self.relays.request(0, 0, now)
            return
        if state != catalog.PROT_NORMAL and state != catalog.PROT_PICKUP and state != catalog.PROT_CHATTER:
            return
        dt = self._cycle_len * 4000 // self.fs
        if not self.overload.feed(current_mA, dt):
            if state != catalog.PROT_CHATTER:
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
        self._transfer_away(active, now)

    def _transfer_away(self, active, now):
        for target in self.rankings[active - 1]:
            if target and target != active and self.healthy(target):
                self._automatic(active, target, 0, now)
                return

    def _automatic(self, active, target, fallback, now):
        if self._chatter(now):
            return
        if self.relays.request(target, fallback, now) == rm.OK:
            self._note_transfer(now)
            self._count_automatic(now)
            self.transfers += 1
            self.last_transfer_from = active
            self.last_transfer_to = target

    def _chatter(self, now):
        """True (and the state CHATTER) once the automatic transfers of the last minute reach the limit."""
        limit = self.settings.max_transfers_per_minute
        if self._recent_count >= limit:
            oldest = self._recent[(self._recent_at - limit) % len(self._recent)]
            if self._diff(now, oldest) < _MINUTE_US:
                self.state = catalog.PROT_CHATTER  # stay on the last good source; the host decides
                self.blocked_transfers += 1
                return True
        return False

    def _count_automatic(self, now):
        self._recent[self._recent_at] = now
        self._recent_at = (self._recent_at + 1) % len(self._recent)
        self._recent_count += 1

    def _limits_ok(self, k):
        ch = self.meter.inputs[k - 1]
        s = self.settings
        return (s.undervoltage_mV <= ch.voltage_mV <= s.overvoltage_mV
                and s.frequency_low_cHz <= ch.frequency_cHz <= s.frequency_high_cHz
                and ch.thd_dpct <= s.thd_max_dpct)

    def _out_of_limits_too_long(self, active, now):
        if self.meter.inputs[active - 1].windows == 0 or self._limits_ok(active):
            self._unhealthy = False
            return False
        if not self._unhealthy:
            self._unhealthy = True
            self._unhealthy_since = now
            return False
        return self._diff(now, self._unhealthy_since) >= self.settings.unhealthy_delay_ms * 1000

    def _maybe_return(self, active, now):
        preferred = self.preferred
        if not preferred or preferred == active or not self.healthy(preferred):
            self._preferred_ok = False
            return
        if not self._preferred_ok:
            self._preferred_ok = True
            self._preferred_since = now
            return
        if self._diff(now, self._preferred_since) >= self.settings.return_delay_s * 1000000 and self._dwelt(now):
            self._preferred_ok = False
            self._automatic_planned(active, preferred, now)

    def _automatic_planned(self, active, target, now):
        # counted against the chatter limit like any automatic transfer, timed by the phase window
        if self._chatter(now):
            return
        self._count_automatic(now)
        self.transfers += 1
        self.last_transfer_from = active
        self.last_transfer_to = target
        self.request_planned(target, active, now)
