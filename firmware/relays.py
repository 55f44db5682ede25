# The one owner of the input relays: break-before-make transfers, confirmed by contact
# feedback and by the output current reading zero, never on a timer alone.
#
# Closing an input while another is closed or still confirming is impossible by
# construction: _close() is the only place that commands a coil closed, and it refuses
# unless every other relay is commanded open and reads open. A timer only ever ends a
# wait in failure (a relay that did not follow its command), never in success.
#
# The HAL gives drive(index, closed), coil(index) -> bool (the drive read back) and
# feedback(index) -> bool (True: contacts closed), indexes 1..n. For latching relays
# the HAL turns drive() into set/reset pulses; for held coils into the state of a
# hardware latch that survives an MCU reset.
# Times are microseconds from the HAL clock, compared with time.ticks_diff semantics.

from micropython import const

IDLE = const(0)
OPENING = const(1)  # waiting for the old contacts to read open, then for the current to reach zero
CLOSING = const(2)  # waiting for the new contacts to read closed and stay closed
FAULT = const(3)  # a relay did not follow its command: no further transfer until cleared

# results of request()
OK = const(0)
BUSY = const(1)
NO_SUCH_INPUT = const(2)
FAULTED = const(3)

_SETTLE_MARGIN_US = const(1000)  # allowed beyond the datasheet maxima before a relay is declared failed
# an arc on parted contacts lasts to the next current zero: half a cycle, 11.1 ms at 45 Hz
_ARC_LIMIT_US = const(12000)


class RelayMatrix:
    def __init__(self, hal, n_inputs, ticks_diff, operate_max_us, release_max_us, bounce_max_us, now):
        self.hal = hal
        self.n = n_inputs
        self._diff = ticks_diff
        self.operate_limit = operate_max_us + bounce_max_us + _SETTLE_MARGIN_US
        self.release_limit = release_max_us + bounce_max_us + _SETTLE_MARGIN_US
        self.bounce_us = bounce_max_us
        self.commanded = [False] * (n_inputs + 1)  # index 0 unused
        self.closes = [0] * (n_inputs + 1)  # operation counters
        self.state = IDLE
        self.active = 0  # the input confirmed closed, 0 when the output is open
        self.target = 0
        self.fallback = 0
        self.fault_input = 0
        self.transfers = 0
        self.failed_transfers = 0
        self._since = now
        self._stable_since = now
        self._stable = False
        self._parted = False
        self._parted_since = now
        self.adopt_hardware_state(now)

    def adopt_hardware_state(self, now):
        """After a reset: take over whatever the hardware is doing, drive nothing new.

        The relays and their coil drive held their state through the reset (a board
        guarantee); hal.coil(k) reads the drive back. A close or release that was under
        way is followed to its end as if this firmware had started it.
        """
        driven = 0
        closing = 0
        releasing = 0
        for k in range(1, self.n + 1):
            coil = self.hal.coil(k)
            contact = self.hal.feedback(k)
            self.commanded[k] = coil
            if coil:
                driven += 1
                if not contact:
                    closing = k
                else:
                    self.active = k
            elif contact:
                releasing = k
        self.fault_input = 0
        self._since = now
        if driven > 1 or (driven and releasing):
            self.active = 0
            self._fault(releasing or closing)  # two sources at once: only the interlock stops it
        elif releasing:
            self.active = 0
            self.target = 0
            self.fallback = 0
            self._parted = False
            self.state = OPENING
        elif closing:
            self.active = 0
            self.target = closing
            self.fallback = 0
            self._stable = False
            self.state = CLOSING
        else:
            self.state = IDLE

    def request(self, target, fallback, now):
        """Start a transfer to target (0: open the output); fallback is where to return
        if target fails to close (0: stay open). Returns OK, BUSY, NO_SUCH_INPUT, FAULTED."""
        if self.state == FAULT:
            return FAULTED
        if self.state != IDLE:
            return BUSY
        if not 0 <= target <= self.n or not 0 <= fallback <= self.n:
            return NO_SUCH_INPUT
        if target == self.active:
            return OK
        self.target = target
        self.fallback = fallback
        self.transfers += 1
        self._begin_opening(now)
        return OK

    def step(self, now, current_zero):
        """Advance; current_zero: the output current has read zero since the last step."""
        state = self.state
        if state == OPENING:
            self._step_opening(now, current_zero)
        elif state == CLOSING:
            self._step_closing(now)
        elif state == IDLE:
            self._check_idle()

    def clear_fault(self, now):
        """After an authenticated command: take the hardware as it is now."""
        self.adopt_hardware_state(now)

    # -- states ---------------------------------------------------------------------

    def _begin_opening(self, now):
        for k in range(1, self.n + 1):
            if self.commanded[k]:
                self.commanded[k] = False
                self.hal.drive(k, False)
        self.state = OPENING
        self._since = now
        self._parted = False

    def _step_opening(self, now, current_zero):
        for k in range(1, self.n + 1):
            if self.hal.feedback(k):
                if self._diff(now, self._since) > self.release_limit:
                    # contacts that will not open (welded, or a feedback that lies): the
                    # rack stays where it is; nothing else may close
                    self._fault(k)
                return
        if not self._parted:
            self._parted = True
            self._parted_since = now
        if current_zero:
            self.active = 0
            if self.target == 0:
                self.state = IDLE
            else:
                self._begin_closing(self.target, now)
        elif self._diff(now, self._parted_since) > _ARC_LIMIT_US:
            self._fault(0)  # current with every contact open: it flows where it should not

    def _begin_closing(self, k, now):
        if not self._close(k):
            self._fault(self._first_closed())
            return
        self.state = CLOSING
        self.target = k
        self._since = now
        self._stable = False

    def _step_closing(self, now):
        k = self.target
        if self.hal.feedback(k):
            if not self._stable:
                self._stable = True
                self._stable_since = now
            elif self._diff(now, self._stable_since) >= self.bounce_us:
                self.active = k
                self.state = IDLE
                return
        else:
            self._stable = False  # bouncing, or not yet closed
        if self._diff(now, self._since) > self.operate_limit:
            self.failed_transfers += 1
            self.commanded[k] = False
            self.hal.drive(k, False)
            fallback = self.fallback
            self.fallback = 0
            if fallback and fallback != k:
                self.target = fallback
                self._begin_opening(now)  # confirm k is open before closing the fallback
            else:
                self.target = 0
                self._begin_opening(now)

    def _check_idle(self):
        # a contact that moved by itself (or a feedback that failed) is a fault
        for k in range(1, self.n + 1):
            if self.hal.feedback(k) != self.commanded[k]:
                self._fault(k)
                return

    def _close(self, k):
        """The only place that commands a coil closed."""
        for j in range(1, self.n + 1):
            if j != k and (self.commanded[j] or self.hal.feedback(j)):
                return False
        self.commanded[k] = True
        self.closes[k] += 1
        self.hal.drive(k, True)
        return True

    def _first_closed(self):
        for k in range(1, self.n + 1):
            if self.hal.feedback(k):
                return k
        return 0

    def _fault(self, k):
        self.state = FAULT
        self.fault_input = k


def current_is_zero(amps, n, threshold):
    """The output current read zero (within threshold counts) over a whole block: the
    arc on parted contacts has gone out."""
    for j in range(n):
        a = amps[j]
        if a > threshold or a < -threshold:
            return False
    return True
