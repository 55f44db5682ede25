# The tap application: every block, measure, protect, move relays, serve both buses.
# Board-independent: the HAL and the board's parameters come in from outside.
#
# board (a dict from the board description): name, role, n_inputs, fs, block,
# nominal_hz, mV_per_count, mA_per_count, counts_per_amp_q8, operate_us, release_us,
# bounce_us, breaking_mA, rated_mA, fuse_mA, loss_fraction, default_alternates.
# hal: exchange(), volts, amps, ticks_us(), ticks_diff(), drive/coil/feedback(k),
# unique_id(), temperature_dC(), uarts (one per bus: readinto(buf) -> n or 0,
# write(buf, n)), wdt_feed(), reset().

import binascii

from firmware import calibration, handlers, limits, reply, store
from firmware import events as ev
from firmware import guard as guard_mod
from firmware import relays as rm
from firmware.capture import Capture
from firmware.framing import Decoder, Encoder
from firmware.health import SourceHealth
from firmware.hmac256 import Hmac
from firmware.loss import LossDetector
from firmware.measure import Meter, scale_for
from firmware.overload import Overload
from firmware.protection import Protection, Settings
from firmware.uptime import Uptime, since
from protocol import catalog, layout

_HOST_TIMEOUT_MS = catalog.HOST_TIMEOUT_S * 1000
_SILENT_CAP_MS = 65535 * 1000  # host_silent_s saturates at 65535 s: count no further
_BAD_TAGS_BEFORE_PAUSE = 8  # SPEC.md: then tag checks stop for a second
_PAUSE_US = 1000000


class _Message:
    """A catalogue entry with its layouts compiled, as protocol.layout.Message, for _messages()."""

    def __init__(self, entry, compiled):
        self.type = entry[0]
        self.name = entry[1]
        self.authenticated = entry[2]
        self.addressing = entry[3]
        self.request = _compiled(entry[4], compiled)
        self.response = _compiled(entry[5], compiled)


def _compiled(fields, compiled):
    if fields is None:
        return None
    found = compiled.get(fields)
    if found is None:
        found = layout.Compiled(fields)
        compiled[fields] = found
    return found


def _messages():
    """{type: message} of every request the tap takes (as protocol.layout.load(), without
    ACK and NAK, which only answer and are built by reply.py: a request of their type is
    UNKNOWN_TYPE all the same), each distinct layout compiled once (the reads' empty request,
    CAPTURE's description): an RP2040 leaves MicroPython little RAM."""
    compiled = {}  # type: dict[tuple, layout.Compiled]
    out = {}
    for entry in catalog.MESSAGES:
        if entry[3]:
            out[entry[0]] = _Message(entry, compiled)
    return out


def _bit(k):
    """The relay bits (bit k-1 for input k) of one input, 0 for none."""
    return 1 << (k - 1) if k else 0


def _defaults(board):
    """Limits that coordinate with the board (as host/ops/operate.py's default_limits): the
    overload pickup at 80% of the weaker of relay and fuse, the instantaneous pickup at the
    relay's breaking capacity, so the relay never tries to break what the fuse must."""
    settings = Settings()
    rated, breaking, fuse = limits.ratings(board)
    settings.pickup_mA = min(rated, fuse) * 4 // 5
    settings.instantaneous_mA = breaking
    rankings = [[0, 0, 0] for _ in range(board["n_inputs"])]
    rankings[0] = list(board["default_alternates"])  # until the host ranks: from input 1 as the board says
    # calibration: per channel (inputs 1..n, then the output current) [gain_ppm, offset_counts]
    # as SET_CALIBRATION set it, or None: the board's nominal scale
    out = {"address": catalog.ADDR_UNASSIGNED, "epoch": 0, "counter_reserved": 0, "preferred": 0,
           "rankings": rankings, "calibration": [None] * (board["n_inputs"] + 1)}
    for name in limits.FIELDS:
        out[name] = getattr(settings, name)
    return out


class Tap:
    def __init__(self, hal, board, flash_dir):
        self.hal = hal
        self.board = board
        self.n = board["n_inputs"]
        # the largest buffers first, while the heap is one block: later, the configuration's
        # parsing and the compiled layouts leave it in pieces
        self.decoders = [Decoder() for _ in hal.uarts]
        self.rx = bytearray(64)
        self.encoder = Encoder()
        self.pending_buf = bytearray(catalog.MAX_ENCODED + 1)
        self.capture = Capture(self.n + 1, board["capture_samples"], board["fs"], board["nominal_hz"])
        # the nominal scales: _apply_calibration() sets the calibrated ones below
        vm, vk = scale_for(board["mV_per_count"])
        im, ik = scale_for(board["mA_per_count"])
        pm, pk = scale_for(board["mV_per_count"] * board["mA_per_count"] / 1e6)
        self.meter = Meter(board["fs"], board["nominal_hz"], [(0, vm, vk)] * self.n, (0, im, ik), pm, pk, 200)
        overload = Overload()  # its tables grow a list: while the heap is still whole
        self.health = None
        if board["role"] == catalog.ROLE_SOURCE_MONITOR:
            self.health = SourceHealth(board["health_window"], int(board["mg_per_count"] * 256),
                                       int(board["dc_volts_per_count"] * 65536))
        self.events = ev.EventLog()
        defaults = _defaults(board)
        self.config = store.Record(flash_dir, "config.json", defaults)
        self.key = store.Record(flash_dir, "key.json", {"key": ""})
        # this boot's number (STATUS boot_count): the event log restarts at 0 on every boot, so
        # a host keys events by (boot, index). A record of its own, so that writing it once per
        # boot never rewrites the configuration (or hides that its limits were defaulted).
        self.boots = store.Record(flash_dir, "boot.json", {"boot_count": 0})
        self.boots.data["boot_count"] = (self.boots.data["boot_count"] + 1) & 0x3FFFFFFF
        self.boots.save()
        self.alarms = 0
        # limits the host did not set: the record was lost, or (below) kept from another
        # board or an older firmware that this board cannot honour; until the next SET_LIMITS
        self.limits_defaulted = self.config.status not in (store.OK, store.MISSING)
        if limits.problem(board, self.config.data):
            for name in limits.FIELDS:
                self.config.data[name] = defaults[name]
            self.limits_defaulted = True
        if not calibration.usable(self.n, self.config.data["calibration"]):
            self.config.data["calibration"] = defaults["calibration"]  # every channel nominal
        self.update_uncalibrated()
        key = binascii.unhexlify(self.key.data["key"]) if self.key.data["key"] else bytes(catalog.KEY_LEN)
        self.hmac = Hmac(key)
        self.messages = _messages()
        cfg = self.config.data
        self.guard = guard_mod.Guard(self.messages, hal.unique_id(), cfg["address"], self.hmac, cfg["epoch"],
                                     cfg["counter_reserved"])
        fs = board["fs"]
        now = hal.ticks_us()
        self.relays = rm.RelayMatrix(hal, self.n, hal.ticks_diff, board["operate_us"], board["release_us"],
                                     board["bounce_us"], now)
        nominal_peak = int(230000 * 1.4142 / board["mV_per_count"])
        self.detectors = [LossDetector(fs, board["nominal_hz"], int(board["loss_fraction"] * nominal_peak), 4,
                                       fs // board["nominal_hz"]) for _ in range(self.n)]
        self.protection = Protection(self.meter, self.relays, overload, self.detectors, self.settings(),
                                     board["counts_per_amp_q8"], board["breaking_mA"], fs, hal.ticks_diff)
        calibration.apply(self)
        for k in range(1, self.n + 1):
            if k <= len(cfg["rankings"]):
                self.protection.set_alternates(k, cfg["rankings"][k - 1])
        self.protection.preferred = cfg["preferred"]
        self.host_silent_ms = 0  # since the last sign of life from a host, or since boot
        self._host_seen = False  # HOST_LOST is the loss of a host that was there (SPEC.md)
        self._bad_tags = 0
        self._paused_at = 0
        self.pending = None  # a discovery answer waiting for its slot: (bus, due_us, length)
        self._seen_transfers = 0
        self._seen_trips = 0
        self._seen_state = self.protection.state
        self._seen_lost = [False] * self.n  # each input's loss detector, as last logged
        # each input's values settle once this many meter windows have closed: the first window
        # after a change of its detector's verdict straddles the change (SPEC.md, TELEMETRY)
        self._settled_at = [0] * self.n
        self._seen_relay_state = self.relays.state
        self._seen_failed = 0
        self._closing = 0  # the input whose relay was last seen closing
        self._automatic = False  # a transfer the tap made by itself is under way: log it when done
        self._dark = False  # the rack lost its supply (its source lost, or the old contacts parted)...
        self._dark_since_ms = 0  # ... at this uptime
        self.uptime = Uptime()
        self._block_ms = board["block"] * 1000 // board["fs"]  # once, not on every block
        self.reset_requested = False
        self.events.log(0, catalog.EV_BOOT, self.relays.active, self.config.status)

    def update_uncalibrated(self):
        """SPEC.md, alarms: UNCALIBRATED while a default the host did not set is in use."""
        if self.limits_defaulted or not self.key.data["key"] or None in self.config.data["calibration"]:
            self.alarms |= catalog.ALARM_UNCALIBRATED
        else:
            self.alarms &= ~catalog.ALARM_UNCALIBRATED

    def settings(self):
        s = Settings()
        for name in limits.FIELDS:
            setattr(s, name, self.config.data[name])
        return s

    # -- the loop ------------------------------------------------------------------------

    def step(self):
        hal = self.hal
        hal.exchange()
        now = hal.ticks_us()
        self.uptime.tick(self._block_ms)
        active = self.relays.active
        self.meter.active = active
        if self.host_silent_ms < _SILENT_CAP_MS:
            self.host_silent_ms += self._block_ms
        # without a host, since boot included, the tap returns by itself to the host's last choice
        self.protection.host_present = self.host_silent_ms <= _HOST_TIMEOUT_MS
        self.meter.process(hal.volts, hal.amps, self.board["block"])
        self.protection.process(hal.volts, hal.amps, self.board["block"], now)
        self.capture.record(hal.volts, hal.amps, self.board["block"])
        if self.health is not None:
            self.health.feed(hal.aux[0], hal.aux[1], self.board["block"])
        self.relays.step(now, rm.current_is_zero(hal.amps, self.board["block"], 20))
        self._log_protection(active)
        self._log_relays(now)
        self._serve(now)
        if self.guard.paused and hal.ticks_diff(now, self._paused_at) >= _PAUSE_US:
            self.guard.paused = False
            self._bad_tags = 0
        if self._host_seen and self.host_silent_ms > _HOST_TIMEOUT_MS and not self.alarms & catalog.ALARM_HOST_LOST:
            self.event(catalog.EV_HOST_LOST, self.relays.active, 0)
            self.alarms |= catalog.ALARM_HOST_LOST
        if self.relays.state == rm.FAULT:
            self.alarms |= catalog.ALARM_RELAY_MISMATCH
        hal.wdt_feed()  # sampling, protection and both buses have all run this block

    def event(self, code, input_index, value):
        self.events.log(self.uptime.ms, code, input_index, value)
        if code != catalog.EV_COMMAND and code != catalog.EV_AUTH_FAILURE:
            self.capture.on_event()

    def _log_protection(self, active):
        """active: the input that was active when this block was sampled."""
        p = self.protection
        for k in range(self.n):
            lost = self.detectors[k].lost
            if lost == self._seen_lost[k]:
                continue
            self._seen_lost[k] = lost
            self._settled_at[k] = self.meter.inputs[k].windows + 2
            if lost:
                self.event(catalog.EV_SOURCE_LOST, k + 1, 0)
                if k + 1 == active and not self._dark:
                    # the rack went dark at the onset, the detector's persistence before it fired
                    self._dark = True
                    self._dark_since_ms = since(self.uptime.ms, self.detectors[k].persist * 1000 // self.board["fs"])
            elif k + 1 == active and self.relays.state == rm.IDLE:
                self._dark = False  # the source came back before anything moved
        if p.transfers != self._seen_transfers:
            self._seen_transfers = p.transfers
            self._automatic = True  # logged as EV_TRANSFER once the new relay has closed
        if p.trips != self._seen_trips:
            self._seen_trips = p.trips
            self.event(catalog.EV_OVERLOAD_TRIP, self.relays.active, p.cycle_mA)
        if p.state != self._seen_state:
            self._seen_state = p.state
            if p.state == catalog.PROT_LOCKOUT:
                self.event(catalog.EV_LOCKOUT, self.relays.active, p.cycle_mA)
            elif p.state == catalog.PROT_DOWNSTREAM_FAULT:
                self.event(catalog.EV_DOWNSTREAM_FAULT, self.relays.active, p.fault_mA())

    def _log_relays(self, now):
        """EV_TRANSFER when a transfer the tap made by itself has closed its new relay, with
        the dark time the rack saw (from the loss of its source, or from the old contacts'
        arc going out, to the new contacts closing); EV_RELAY_MISMATCH when a relay did not
        follow its command."""
        r = self.relays
        if r.failed_transfers != self._seen_failed:
            self._seen_failed = r.failed_transfers
            self.event(catalog.EV_RELAY_MISMATCH, self._closing, _bit(self._closing))
        state = r.state
        if state == self._seen_relay_state:
            return
        self._seen_relay_state = state
        if state == rm.CLOSING:
            self._closing = r.target
            if not self._dark:  # the old contacts parted and their arc went out during this block
                self._dark = True
                self._dark_since_ms = since(self.uptime.ms, self._block_ms)
        elif state == rm.FAULT:
            self.event(catalog.EV_RELAY_MISMATCH, r.fault_input, _bit(r.fault_input))
            self._automatic = False
        elif state == rm.IDLE:
            if r.active and self._dark and self._automatic:
                closed_for_ms = self.hal.ticks_diff(now, r._stable_since) // 1000  # the bounce check
                self.event(catalog.EV_TRANSFER, r.active, since(self.uptime.ms, self._dark_since_ms) - closed_for_ms)
            self._automatic = False
            self._dark = False

    # -- the buses ------------------------------------------------------------------------

    def _serve(self, now):
        if self.pending is not None and self.hal.ticks_diff(now, self.pending[1]) >= 0:
            bus, _, length = self.pending
            self.pending = None
            self.hal.uarts[bus].write(self.pending_buf, length)
        for bus in range(len(self.hal.uarts)):
            uart = self.hal.uarts[bus]
            decoder = self.decoders[bus]
            n = uart.readinto(self.rx)
            while n:
                pos = 0
                while pos < n:
                    pos = decoder.feed(self.rx, pos, n)
                    if decoder.result > 0:
                        self._handle(bus, decoder.body, decoder.result, now)
                n = uart.readinto(self.rx)

    def _handle(self, bus, body, n, now):
        guard = self.guard
        verdict = guard.admit(body, n)
        if verdict == guard_mod.IGNORE:
            return
        out = self.encoder.body
        if verdict == guard_mod.CACHED:
            cached, length = guard.cached_answer()
            reply.mark_cached(cached, length, self.hmac)
            out[:length] = cached[:length]
            self._send(bus, length)
            return
        if verdict > 0:
            if verdict == catalog.E_BAD_TAG:
                self.event(catalog.EV_AUTH_FAILURE, 0, verdict)
                self.alarms |= catalog.ALARM_AUTH_FAILURES
                self._bad_tags += 1
                if self._bad_tags >= _BAD_TAGS_BEFORE_PAUSE:
                    guard.paused = True  # a flood: stop paying for tag checks for a while
                    self._paused_at = now
            length = reply.nak(out, guard.address, guard.seq, guard.type, verdict, guard.detail)
            if guard.verified:  # SPEC.md: the answer to a request whose tag passed is signed...
                length = self._sign(length, self.hmac)
            if guard.consumed:  # ... and remembered only if it consumed its counter
                self._persist_counter()
                guard.remember(out, length)
                self.host_alive_now()
            self._send(bus, length)
            return
        message = self.messages[guard.type]
        try:
            fields = message.request.unpack(body, catalog.HEADER_LEN, guard.payload_end)
        except layout.LayoutError:
            fields = None
        hmac = self.hmac
        if message.authenticated:
            self._bad_tags = 0
            self._persist_counter()  # consumed by the guard, whatever comes next
            self.host_alive_now()  # a command in the tap's epoch: the host is there
        if fields is None:
            length = reply.nak(out, guard.address, guard.seq, guard.type, catalog.E_BAD_LENGTH,
                               message.request.size)
        else:
            length, hmac = handlers.dispatch(self, bus, guard.type, fields, now)
            if length == 0:
                return  # answered later (a discovery slot) or not at all
        if message.authenticated:
            length = self._sign(length, hmac)
            guard.remember(out, length)
        self._send(bus, length)
        if self.reset_requested:
            self.hal.reset()

    def _sign(self, length, hmac):
        return reply.sign(self.encoder.body, length, hmac, self.guard.auth_epoch, self.guard.auth_counter)

    def host_alive_now(self):
        """SPEC.md, "Host loss": a signed command or a HEARTBEAT in the tap's epoch; reads
        carry no epoch, so a stale controller's polling does not count."""
        self.host_silent_ms = 0
        self._host_seen = True
        self.alarms &= ~catalog.ALARM_HOST_LOST

    def _send(self, bus, length):
        n = self.encoder.encode(length)
        self.hal.uarts[bus].write(self.encoder.out, n)

    def _persist_counter(self):
        # written before the command acts, once per 64 commands (store.COUNTER_BLOCK)
        store.reserve_counter(self.config, self.guard.counter)

    # -- the messages -----------------------------------------------------------------------

    def answer(self, msg_type, fields):
        out = self.encoder.body
        n = reply.header(out, self.guard.address, msg_type, 0, self.guard.seq)
        return self.messages[msg_type].response.pack_into(fields, out, n)

    def ack(self):
        return reply.ack(self.encoder.body, self.guard.address, self.guard.seq, self.guard.type)

    def nak(self, error, detail):
        return reply.nak(self.encoder.body, self.guard.address, self.guard.seq, self.guard.type, error, detail)

    def input_state(self, k):
        ch = self.meter.inputs[k - 1]
        state = 0
        if ch.windows and not self.detectors[k - 1].lost:
            state |= catalog.INPUT_PRESENT
        if self.protection.healthy(k):
            state |= catalog.INPUT_HEALTHY
        if ch.windows < self._settled_at[k - 1]:
            state |= catalog.INPUT_SETTLING  # the values are from before, or across, the change
        return state

    def relays_closed(self):
        bits = 0
        for k in range(1, self.n + 1):
            if self.hal.feedback(k):
                bits |= 1 << (k - 1)
        return bits
