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

from firmware import events as ev
from firmware import guard as guard_mod
from firmware import relays as rm
from firmware import reply, store
from firmware.capture import Capture
from firmware.framing import Decoder, Encoder
from firmware.health import SourceHealth
from firmware.hmac256 import Hmac, key_check, unwrap_key
from firmware.loss import LossDetector
from firmware.measure import Meter, scale_for
from firmware.overload import Overload
from firmware.protection import Protection, Settings
from firmware.uptime import Uptime, since
from protocol import catalog, layout

FIRMWARE_VERSION = (0, 1, 0)
_LIMIT_FIELDS = ("curve", "pickup_mA", "tms_milli", "instantaneous_mA", "undervoltage_mV", "overvoltage_mV",
                 "frequency_low_cHz", "frequency_high_cHz", "thd_max_dpct")
_CRC_FIELDS = ("address", "curve", "pickup_mA", "tms_milli", "instantaneous_mA", "undervoltage_mV", "overvoltage_mV",
               "frequency_low_cHz", "frequency_high_cHz", "thd_max_dpct", "rankings",
               "calibration")  # SPEC.md, config_crc
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


def _calibration_problem(n, kind, index, gain_ppm, offset_counts):
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


def _calibration_usable(n, calibration):
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
        if _calibration_problem(n, kind, channel + 1 if channel < n else 0, gain, offset):
            return False
    return True


def _calibrated(units_per_count, gain_ppm):
    """A nominal scale times a gain in ppm (exactly the nominal scale at the nominal gain)."""
    if gain_ppm == catalog.CAL_GAIN_NOMINAL_PPM:
        return units_per_count
    return units_per_count * gain_ppm / 1e6


def _ratings(board):
    """(relay rated current, breaking capacity, input fuse) in mA: the weakest input's.
    A board description without the first or the last falls back to the stricter known one."""
    breaking = board["breaking_mA"]
    rated = board.get("rated_mA", breaking)
    return rated, breaking, board.get("fuse_mA", rated)


def _defaults(board):
    """Limits that coordinate with the board (as host/ops/operate.py's default_limits): the
    overload pickup at 80% of the weaker of relay and fuse, the instantaneous pickup at the
    relay's breaking capacity, so the relay never tries to break what the fuse must."""
    limits = Settings()
    rated, breaking, fuse = _ratings(board)
    limits.pickup_mA = min(rated, fuse) * 4 // 5
    limits.instantaneous_mA = breaking
    rankings = [[0, 0, 0] for _ in range(board["n_inputs"])]
    rankings[0] = list(board["default_alternates"])  # until the host ranks: from input 1 as the board says
    # calibration: per channel (inputs 1..n, then the output current) [gain_ppm, offset_counts]
    # as SET_CALIBRATION set it, or None: the board's nominal scale
    out = {"address": catalog.ADDR_UNASSIGNED, "epoch": 0, "counter_reserved": 0, "preferred": 0,
           "rankings": rankings, "calibration": [None] * (board["n_inputs"] + 1)}
    for name in _LIMIT_FIELDS:
        out[name] = getattr(limits, name)
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
        self._pending_buf = bytearray(catalog.MAX_ENCODED + 1)
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
        self._limits_defaulted = self.config.status not in (store.OK, store.MISSING)
        if self._limits_problem(self.config.data):
            for name in _LIMIT_FIELDS:
                self.config.data[name] = defaults[name]
            self._limits_defaulted = True
        if not _calibration_usable(self.n, self.config.data["calibration"]):
            self.config.data["calibration"] = defaults["calibration"]  # every channel nominal
        self._update_uncalibrated()
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
        self.protection = Protection(self.meter, self.relays, overload, self.detectors, self._settings(),
                                     board["counts_per_amp_q8"], board["breaking_mA"], fs, hal.ticks_diff)
        self._apply_calibration()
        for k in range(1, self.n + 1):
            if k <= len(cfg["rankings"]):
                self.protection.set_alternates(k, cfg["rankings"][k - 1])
        self.protection.preferred = cfg["preferred"]
        self._host_silent_ms = 0  # since the last sign of life from a host, or since boot
        self._host_seen = False  # HOST_LOST is the loss of a host that was there (SPEC.md)
        self._bad_tags = 0
        self._paused_at = 0
        self._pending = None  # a discovery answer waiting for its slot: (bus, due_us, length)
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

    def _update_uncalibrated(self):
        """SPEC.md, alarms: UNCALIBRATED while a default the host did not set is in use."""
        if self._limits_defaulted or not self.key.data["key"] or None in self.config.data["calibration"]:
            self.alarms |= catalog.ALARM_UNCALIBRATED
        else:
            self.alarms &= ~catalog.ALARM_UNCALIBRATED

    def _gain_offset(self, channel):
        """(gain_ppm, offset_counts) of channel 0..n (inputs, then the current) in force."""
        entry = self.config.data["calibration"][channel]
        if entry is None:
            return catalog.CAL_GAIN_NOMINAL_PPM, 0
        return entry[0], entry[1]

    def _apply_calibration(self):
        """Every channel's calibration into the meter's scales and RMS offsets, the power
        scales, and the overload element's current scale. At start-up and after
        SET_CALIBRATION, between blocks: floats are fine here, the sample path stays integer."""
        board = self.board
        meter = self.meter
        n = self.n
        current_gain, current_offset = self._gain_offset(n)
        mA_per_count = _calibrated(board["mA_per_count"], current_gain)
        meter.out_m, meter.out_k = scale_for(mA_per_count)
        meter.out_rms_offset = current_offset
        for channel in range(n):
            gain, offset = self._gain_offset(channel)
            mV_per_count = _calibrated(board["mV_per_count"], gain)
            ch = meter.inputs[channel]
            ch.m, ch.k = scale_for(mV_per_count)
            ch.rms_offset = offset
            ch.pm, ch.pk = scale_for(mV_per_count * mA_per_count / 1e6)
        # the overload and instantaneous elements count current in ADC counts: their scale
        # takes the gain too (firmware/protection.py keeps it as set at construction)
        counts_per_amp_q8 = board["counts_per_amp_q8"]
        if current_gain != catalog.CAL_GAIN_NOMINAL_PPM:
            counts_per_amp_q8 = int(counts_per_amp_q8 * 1e6 / current_gain + 0.5)
        p = self.protection
        p._counts_per_amp_q8 = counts_per_amp_q8
        p._mA_per_count_q8 = 65536000 // counts_per_amp_q8
        p._inst_counts = p._peak_counts(p.settings.instantaneous_mA)

    def _settings(self):
        s = Settings()
        for name in _LIMIT_FIELDS:
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
        if self._host_silent_ms < _SILENT_CAP_MS:
            self._host_silent_ms += self._block_ms
        # without a host, since boot included, the tap returns by itself to the host's last choice
        self.protection.host_present = self._host_silent_ms <= _HOST_TIMEOUT_MS
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
        if self._host_seen and self._host_silent_ms > _HOST_TIMEOUT_MS and not self.alarms & catalog.ALARM_HOST_LOST:
            self._event(catalog.EV_HOST_LOST, self.relays.active, 0)
            self.alarms |= catalog.ALARM_HOST_LOST
        if self.relays.state == rm.FAULT:
            self.alarms |= catalog.ALARM_RELAY_MISMATCH
        hal.wdt_feed()  # sampling, protection and both buses have all run this block

    def _event(self, code, input_index, value):
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
                self._event(catalog.EV_SOURCE_LOST, k + 1, 0)
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
            self._event(catalog.EV_OVERLOAD_TRIP, self.relays.active, p.cycle_mA)
        if p.state != self._seen_state:
            self._seen_state = p.state
            if p.state == catalog.PROT_LOCKOUT:
                self._event(catalog.EV_LOCKOUT, self.relays.active, p.cycle_mA)
            elif p.state == catalog.PROT_DOWNSTREAM_FAULT:
                self._event(catalog.EV_DOWNSTREAM_FAULT, self.relays.active, p.fault_mA())

    def _log_relays(self, now):
        """EV_TRANSFER when a transfer the tap made by itself has closed its new relay, with
        the dark time the rack saw (from the loss of its source, or from the old contacts'
        arc going out, to the new contacts closing); EV_RELAY_MISMATCH when a relay did not
        follow its command."""
        r = self.relays
        if r.failed_transfers != self._seen_failed:
            self._seen_failed = r.failed_transfers
            self._event(catalog.EV_RELAY_MISMATCH, self._closing, _bit(self._closing))
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
            self._event(catalog.EV_RELAY_MISMATCH, r.fault_input, _bit(r.fault_input))
            self._automatic = False
        elif state == rm.IDLE:
            if r.active and self._dark and self._automatic:
                closed_for_ms = self.hal.ticks_diff(now, r._stable_since) // 1000  # the bounce check
                self._event(catalog.EV_TRANSFER, r.active, since(self.uptime.ms, self._dark_since_ms) - closed_for_ms)
            self._automatic = False
            self._dark = False

    # -- the buses ------------------------------------------------------------------------

    def _serve(self, now):
        if self._pending is not None and self.hal.ticks_diff(now, self._pending[1]) >= 0:
            bus, _, length = self._pending
            self._pending = None
            self.hal.uarts[bus].write(self._pending_buf, length)
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
                self._event(catalog.EV_AUTH_FAILURE, 0, verdict)
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
                self._host_alive_now()
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
            self._host_alive_now()  # a command in the tap's epoch: the host is there
        if fields is None:
            length = reply.nak(out, guard.address, guard.seq, guard.type, catalog.E_BAD_LENGTH,
                               message.request.size)
        else:
            length, hmac = self._dispatch(bus, guard.type, fields, now)
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

    def _host_alive_now(self):
        """SPEC.md, "Host loss": a signed command or a HEARTBEAT in the tap's epoch; reads
        carry no epoch, so a stale controller's polling does not count."""
        self._host_silent_ms = 0
        self._host_seen = True
        self.alarms &= ~catalog.ALARM_HOST_LOST

    def _send(self, bus, length):
        n = self.encoder.encode(length)
        self.hal.uarts[bus].write(self.encoder.out, n)

    def _persist_counter(self):
        # written before the command acts, once per 64 commands (store.COUNTER_BLOCK)
        store.reserve_counter(self.config, self.guard.counter)

    # -- the messages -----------------------------------------------------------------------

    def _answer(self, msg_type, fields):
        out = self.encoder.body
        n = reply.header(out, self.guard.address, msg_type, 0, self.guard.seq)
        return self.messages[msg_type].response.pack_into(fields, out, n)

    def _ack(self):
        return reply.ack(self.encoder.body, self.guard.address, self.guard.seq, self.guard.type)

    def _nak(self, error, detail):
        return reply.nak(self.encoder.body, self.guard.address, self.guard.seq, self.guard.type, error, detail)

    def _dispatch(self, bus, msg_type, f, now):
        """Run one admitted request; return (answer length, Hmac to sign it with)."""
        hmac = self.hmac
        if msg_type == catalog.T_IDENTIFY:
            return self._identify(), hmac
        if msg_type == catalog.T_TELEMETRY:
            return self._telemetry(), hmac
        if msg_type == catalog.T_STATUS:
            return self._status(), hmac
        if msg_type == catalog.T_HEARTBEAT:
            verdict = self.guard.heartbeat(f["epoch"])
            if verdict:  # another epoch's heartbeat is no sign of life
                return (self._nak(verdict, self.guard.detail) if self.guard.answered else 0), hmac
            self._host_alive_now()
            if not self.guard.answered:
                return 0, hmac
            return self._answer(msg_type, {"epoch": self.guard.epoch, "uptime_s": self.uptime.s,
                                           "alarms": self.alarms}), hmac
        if msg_type == catalog.T_SWITCH:
            return self._switch(f, now), hmac
        if msg_type == catalog.T_SET_ALTERNATES:
            return self._set_alternates(f), hmac
        if msg_type == catalog.T_SET_LIMITS:
            return self._set_limits(f), hmac
        if msg_type == catalog.T_SET_CALIBRATION:
            return self._set_calibration(f), hmac
        if msg_type == catalog.T_READ_SETTINGS:
            return self._read_settings(), hmac
        if msg_type == catalog.T_READ_ALTERNATES:
            return self._read_alternates(f), hmac
        if msg_type == catalog.T_RAISE_EPOCH:
            self.config.data["epoch"] = self.guard.epoch
            self.config.save()
            return self._ack(), hmac
        if msg_type == catalog.T_SET_KEY:
            return self._set_key(f)
        if msg_type == catalog.T_RESET:
            if f["mode"] != catalog.RESET_FIRMWARE:
                return self._nak(catalog.E_OUT_OF_RANGE, 1), hmac
            self.reset_requested = True
            return self._ack(), hmac
        if msg_type == catalog.T_READ_EVENTS:
            return self._read_events(f), hmac
        if msg_type == catalog.T_ASSIGN_ADDRESS:
            if not catalog.ADDR_TAP_MIN <= f["address"] <= catalog.ADDR_TAP_MAX:
                return self._nak(catalog.E_OUT_OF_RANGE, 2), hmac
            self.guard.address = f["address"]
            self.config.data["address"] = f["address"]
            self.config.save()
            return self._ack(), hmac
        if msg_type == catalog.T_DISCOVER:
            self._discover(bus, f, now)
            return 0, hmac
        if msg_type == catalog.T_CAPTURE_START:
            position = self.capture.start(f["capture_id"], f["trigger"], f["cycles"])
            return (self._nak(catalog.E_OUT_OF_RANGE, position) if position else self._capture_info(msg_type)), hmac
        if msg_type == catalog.T_CAPTURE_INFO:
            if f["capture_id"] != self.capture.capture_id:
                return self._nak(catalog.E_NO_CAPTURE, self._held_capture()), hmac
            return self._capture_info(msg_type), hmac
        if msg_type == catalog.T_CAPTURE_READ:
            return self._capture_read(f), hmac
        if self.health is None:
            return self._nak(catalog.E_NOT_SUPPORTED, self.board["role"]), hmac  # HEALTH: monitors only
        return self._health(self.health), hmac

    def _input_state(self, k):
        ch = self.meter.inputs[k - 1]
        state = 0
        if ch.windows and not self.detectors[k - 1].lost:
            state |= catalog.INPUT_PRESENT
        if self.protection.healthy(k):
            state |= catalog.INPUT_HEALTHY
        if ch.windows < self._settled_at[k - 1]:
            state |= catalog.INPUT_SETTLING  # the values are from before, or across, the change
        return state

    def _relays_closed(self):
        bits = 0
        for k in range(1, self.n + 1):
            if self.hal.feedback(k):
                bits |= 1 << (k - 1)
        return bits

    def _identify(self):
        major, minor, patch = FIRMWARE_VERSION
        return self._answer(catalog.T_IDENTIFY, {
            "unique_id": self.hal.unique_id(), "board": self.board["name"].encode(),
            "firmware_major": major, "firmware_minor": minor, "firmware_patch": patch,
            "protocol_major": catalog.VERSION, "protocol_minor": catalog.PROTOCOL_MINOR,
            "role": self.board["role"], "n_inputs": self.n, "address": self.guard.address,
            "epoch": self.guard.epoch, "auth_counter": self.guard.counter, "config_crc": self._config_crc()})

    def _config_crc(self):
        # SPEC.md IDENTIFY: address, role, limits, alternates, calibration; not the epoch, the
        # reserved counter or the host's last choice of input, which change in normal operation
        crc = binascii.crc32(("role=%s;" % self.board["role"]).encode())
        for key in _CRC_FIELDS:
            crc = binascii.crc32(("%s=%s;" % (key, self.config.data[key])).encode(), crc)
        return crc & 0xFFFFFFFF

    def _telemetry(self):
        m = self.meter
        inputs = []
        for k in range(1, self.n + 1):
            ch = m.inputs[k - 1]
            inputs.append({"voltage_mV": ch.voltage_mV, "frequency_cHz": ch.frequency_cHz,
                           "thd_dpct": ch.thd_dpct, "phase_cdeg": m.phase_cdeg(k), "state": self._input_state(k)})
        return self._answer(catalog.T_TELEMETRY, {
            "uptime_s": self.uptime.s, "active_input": self.relays.active,
            "relays_closed": self._relays_closed(), "protection": self.protection.state, "alarms": self.alarms,
            "temperature_dC": self.hal.temperature_dC(), "current_mA": m.current_mA, "power_W": m.power_W,
            "apparent_VA": m.apparent_VA,
            "power_factor_milli": m.power_factor_milli, "transfers": self.relays.transfers,
            "trips": self.protection.trips, "frames_bad": self._frames_bad(), "n_inputs": self.n, "inputs": inputs})

    def _frames_bad(self):
        bad = 0
        for d in self.decoders:
            bad += d.bad_cobs + d.bad_crc + d.too_short + d.oversize
        return bad

    def _status(self):
        p = self.protection
        active = self.relays.active
        row = p.rankings[active - 1] if active else (0, 0, 0)
        self.alarms &= ~catalog.ALARM_AUTH_FAILURES  # reading STATUS clears it
        silent = self._host_silent_ms // 1000
        return self._answer(catalog.T_STATUS, {
            "active_input": self.relays.active, "relays_closed": self._relays_closed(), "protection": p.state,
            "alarms": self.alarms, "epoch": self.guard.epoch, "auth_counter": self.guard.counter,
            "event_head": self.events.head, "config_crc": self._config_crc(), "alternates_for": active,
            "alternate_1": row[0], "alternate_2": row[1], "alternate_3": row[2],
            "host_silent_s": min(silent, 0xFFFF), "boot_count": self.boots.data["boot_count"]})

    def _switch(self, f, now):
        expected = f["expected_input"]
        target = f["target_input"]
        if self.relays.state != rm.IDLE:
            return self._nak(catalog.E_BUSY, self.relays.state)
        if expected != self.relays.active:
            return self._nak(catalog.E_CAS_MISMATCH, self.relays.active)
        if not 0 <= target <= self.n:
            return self._nak(catalog.E_OUT_OF_RANGE, 2)
        state = self.protection.state
        if state == catalog.PROT_LOCKOUT or state == catalog.PROT_TRIPPED:
            return self._nak(catalog.E_PROTECTION_LOCKOUT, state)
        if state == catalog.PROT_DOWNSTREAM_FAULT:
            return self._nak(catalog.E_DOWNSTREAM_FAULT, state)
        if target and target != expected and not self.protection.healthy(target):
            return self._nak(catalog.E_SOURCE_UNHEALTHY, self._input_state(target))
        if self.protection.planned_pending():
            return self._nak(catalog.E_BUSY, self.protection.planned_pending())
        if target != expected:
            fallback = expected if expected and self.protection.healthy(expected) else 0
            if expected and target:
                self.protection.request_planned(target, fallback, now)  # two live sources: mind the phase
            elif self.relays.request(target, fallback, now) != rm.OK:
                return self._nak(catalog.E_INTERNAL, self.relays.state)
            self._event(catalog.EV_COMMAND, target, catalog.T_SWITCH)
        self.protection.clear_chatter()
        if self.config.data["preferred"] != target:
            self.config.data["preferred"] = target  # the host's choice: where to return without a host
            self.protection.preferred = target
            self.config.save()
        return self._ack()

    def _set_alternates(self, f):
        for_input = f["for_input"]
        ranked = [f["alternate_1"], f["alternate_2"], f["alternate_3"]]
        if not 1 <= for_input <= self.n:
            return self._nak(catalog.E_OUT_OF_RANGE, 1)
        seen_zero = False
        for i in range(3):
            k = ranked[i]
            if k == 0:
                seen_zero = True
            elif seen_zero or k > self.n or k == for_input or k in ranked[:i]:
                return self._nak(catalog.E_OUT_OF_RANGE, i + 2)
        self.protection.set_alternates(for_input, ranked)
        self.config.data["rankings"][for_input - 1] = ranked
        self.config.save()
        return self._ack()

    def _read_alternates(self, f):
        """The ranking protection holds for one input: what the tap will do, not what was sent."""
        for_input = f["for_input"]
        if not 1 <= for_input <= self.n:
            return self._nak(catalog.E_OUT_OF_RANGE, 1)
        row = self.protection.rankings[for_input - 1]
        return self._answer(catalog.T_READ_ALTERNATES, {"for_input": for_input, "alternate_1": row[0],
                                                        "alternate_2": row[1], "alternate_3": row[2]})

    def _limits_problem(self, f):
        """The 1-based position of the first field of SET_LIMITS this board cannot honour, or 0."""
        rated, breaking, fuse = _ratings(self.board)
        pickup = f["pickup_mA"]
        instantaneous = f["instantaneous_mA"]
        measurable = int(self.board["mV_per_count"] * 8191 / 1.4142)  # RMS of a full-scale sine
        for position, problem in ((1, f["curve"] not in (1, 2, 3)),
                                  (2, not 0 < pickup <= rated or pickup > fuse or pickup > breaking),
                                  (3, not 50 <= f["tms_milli"] <= 1500),
                                  (4, instantaneous <= pickup or instantaneous > breaking),
                                  (6, f["undervoltage_mV"] >= f["overvoltage_mV"] or f["overvoltage_mV"] > measurable),
                                  (8, f["frequency_low_cHz"] >= f["frequency_high_cHz"]),
                                  (9, not 0 < f["thd_max_dpct"] <= 1000)):
            if problem:
                return position
        return 0

    def _set_limits(self, f):
        position = self._limits_problem(f)
        if position:
            return self._nak(catalog.E_OUT_OF_RANGE, position)
        for name in _LIMIT_FIELDS:
            self.config.data[name] = f[name]
        self.protection.apply_settings(self._settings())
        self.config.save()
        self._limits_defaulted = False
        self._update_uncalibrated()
        return self._ack()

    def _set_calibration(self, f):
        kind = f["kind"]
        index = f["index"]
        gain = f["gain_ppm"]
        offset = f["offset_counts"]
        position = _calibration_problem(self.n, kind, index, gain, offset)
        if position:
            return self._nak(catalog.E_OUT_OF_RANGE, position)
        calibration = list(self.config.data["calibration"])
        calibration[index - 1 if kind == catalog.CHANNEL_INPUT_VOLTAGE else self.n] = [gain, offset]
        self.config.data["calibration"] = calibration
        self.config.save()  # atomically, with the rest of the configuration, before the ACK
        self._apply_calibration()
        self._update_uncalibrated()
        return self._ack()

    def _read_settings(self):
        fields = {}
        for name in _LIMIT_FIELDS:
            fields[name] = self.config.data[name]
        channels = []
        for channel in range(self.n + 1):
            gain, offset = self._gain_offset(channel)
            is_input = channel < self.n
            channels.append({"kind": catalog.CHANNEL_INPUT_VOLTAGE if is_input else catalog.CHANNEL_OUTPUT_CURRENT,
                             "index": channel + 1 if is_input else 0, "gain_ppm": gain, "offset_counts": offset,
                             "state": 0 if self.config.data["calibration"][channel] is None else catalog.CAL_SET})
        fields["n_channels"] = len(channels)
        fields["channels"] = channels
        return self._answer(catalog.T_READ_SETTINGS, fields)

    def _set_key(self, f):
        new_key = unwrap_key(self.hmac, f["wrapped_key"], self.guard.auth_counter)
        if key_check(new_key) != f["key_check"]:
            return self._nak(catalog.E_BAD_TAG, 0), self.hmac
        self.key.data["key"] = binascii.hexlify(new_key).decode()
        self.key.save()
        self.hmac = Hmac(new_key)
        self.guard.hmac = self.hmac
        self._update_uncalibrated()
        return self._ack(), self.hmac  # signed with the new key: proof it arrived

    def _capture_info(self, msg_type):
        c = self.capture
        channels = []
        for k in range(self.n):
            mV_per_count = _calibrated(self.board["mV_per_count"], self._gain_offset(k)[0])
            channels.append({"kind": catalog.CHANNEL_INPUT_VOLTAGE, "index": k + 1,
                             "scale_nu": int(mV_per_count * 1000000)})
        mA_per_count = _calibrated(self.board["mA_per_count"], self._gain_offset(self.n)[0])
        channels.append({"kind": catalog.CHANNEL_OUTPUT_CURRENT, "index": 0,
                         "scale_nu": int(mA_per_count * 1000000)})
        return self._answer(msg_type, {
            "capture_id": c.capture_id & 0xFFFF,
            "state": catalog.CAPTURE_READY if c.ready() else catalog.CAPTURE_ARMED,
            "sample_rate_hz": self.board["fs"], "samples_per_channel": c.samples, "total_bytes": c.total_bytes(),
            "n_channels": len(channels), "channels": channels})

    def _held_capture(self):
        """NO_CAPTURE's detail: the id of the capture held, or NO_CAPTURE_HELD if there is none."""
        held = self.capture.capture_id
        return catalog.NO_CAPTURE_HELD if held < 0 else held

    def _capture_read(self, f):
        c = self.capture
        if f["capture_id"] != c.capture_id or not c.ready():
            return self._nak(catalog.E_NO_CAPTURE, self._held_capture())
        if f["offset"] >= c.total_bytes():
            return self._nak(catalog.E_OUT_OF_RANGE, 2)
        n = self._answer(catalog.T_CAPTURE_READ, {"capture_id": f["capture_id"], "offset": f["offset"],
                                                   "total_bytes": c.total_bytes(), "data": b""})
        room = catalog.MAX_BODY - n - catalog.AUTH_LEN
        return n + c.read_into(self.encoder.body, n, f["offset"], min(f["length"], room))

    def _health(self, h):
        ok = 0x01  # the board's temperature sensor
        if h.windows:
            ok |= 0x02 | (0x04 if h.dc_volts > 0 else 0)
        if self.meter.inputs[0].windows:
            ok |= 0x08
        return self._answer(catalog.T_HEALTH, {
            "temperature_dC": self.hal.temperature_dC(), "vibration_rms_mg": min(h.vibration_rms_mg, 0xFFFF),
            "vibration_kurtosis_milli": min(h.kurtosis_milli, 0xFFFF),
            "vibration_crest_milli": min(h.crest_milli, 0xFFFF),
            "ripple_dpct": min(h.ripple_dpct, 0xFFFF), "thd_dpct": self.meter.inputs[0].thd_dpct, "sensors_ok": ok,
            "age_ms": min(h.since_window * 1000 // self.board["fs"], 0xFFFF)})

    def _read_events(self, f):
        found = []  # type: list[tuple[int, int, int, int]]
        first = self.events.read(f["since"], min(f["max_count"], 30), found)
        items = []
        for time_ms, code, input_index, value in found:
            items.append({"time_ms": time_ms, "code": code, "input": input_index, "value": value})
        return self._answer(catalog.T_READ_EVENTS, {"first": first, "head": self.events.head,
                                                    "n_events": len(items), "events": items})

    def _discover(self, bus, f, now):
        uid = self.hal.unique_id()
        if f["scope"] == 0 and self.guard.address != catalog.ADDR_UNASSIGNED:
            return
        if not (bytes(f["uid_low"]) <= uid <= bytes(f["uid_high"])) or f["slots"] == 0:
            return
        slot = binascii.crc32(uid + bytes([f["salt"]])) % f["slots"]
        length = self._answer(catalog.T_DISCOVER, {"unique_id": uid, "board": self.board["name"].encode(),
                                                   "role": self.board["role"], "n_inputs": self.n, "slot": slot})
        n = self.encoder.encode(length)
        self._pending_buf[:n] = self.encoder.out[:n]
        self._pending = (bus, now + slot * f["slot_ms"] * 1000, n)
