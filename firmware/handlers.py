# The tap's answers to the host's requests (SPEC.md, "Message catalogue"): one function per
# message, given the tap. Run when a frame has been admitted, between blocks, never on the
# sampling and protection path of every block (firmware/tap.py).

import binascii

from firmware import calibration, limits
from firmware import relays as rm
from firmware.hmac256 import Hmac, key_check, unwrap_key
from protocol import catalog

FIRMWARE_VERSION = (0, 1, 0)
CRC_FIELDS = ("address", "curve", "pickup_mA", "tms_milli", "instantaneous_mA", "undervoltage_mV", "overvoltage_mV",
               "frequency_low_cHz", "frequency_high_cHz", "thd_max_dpct", "rankings",
               "calibration")  # SPEC.md, config_crc


def dispatch(tap, bus, msg_type, f, now):
    """Run one admitted request; return (answer length, Hmac to sign it with)."""
    hmac = tap.hmac
    if msg_type == catalog.T_IDENTIFY:
        return identify(tap), hmac
    if msg_type == catalog.T_TELEMETRY:
        return telemetry(tap), hmac
    if msg_type == catalog.T_STATUS:
        return status(tap), hmac
    if msg_type == catalog.T_HEARTBEAT:
        verdict = tap.guard.heartbeat(f["epoch"])
        if verdict:  # another epoch's heartbeat is no sign of life
            return (tap.nak(verdict, tap.guard.detail) if tap.guard.answered else 0), hmac
        tap.host_alive_now()
        if not tap.guard.answered:
            return 0, hmac
        return tap.answer(msg_type, {"epoch": tap.guard.epoch, "uptime_s": tap.uptime.s,
                                       "alarms": tap.alarms}), hmac
    if msg_type == catalog.T_SWITCH:
        return switch(tap, f, now), hmac
    if msg_type == catalog.T_SET_ALTERNATES:
        return set_alternates(tap, f), hmac
    if msg_type == catalog.T_SET_LIMITS:
        return set_limits(tap, f), hmac
    if msg_type == catalog.T_SET_CALIBRATION:
        return set_calibration(tap, f), hmac
    if msg_type == catalog.T_READ_SETTINGS:
        return read_settings(tap), hmac
    if msg_type == catalog.T_READ_ALTERNATES:
        return read_alternates(tap, f), hmac
    if msg_type == catalog.T_RAISE_EPOCH:
        tap.config.data["epoch"] = tap.guard.epoch
        tap.config.save()
        return tap.ack(), hmac
    if msg_type == catalog.T_SET_KEY:
        return set_key(tap, f)
    if msg_type == catalog.T_RESET:
        if f["mode"] != catalog.RESET_FIRMWARE:
            return tap.nak(catalog.E_OUT_OF_RANGE, 1), hmac
        tap.reset_requested = True
        return tap.ack(), hmac
    if msg_type == catalog.T_READ_EVENTS:
        return read_events(tap, f), hmac
    if msg_type == catalog.T_ASSIGN_ADDRESS:
        if not catalog.ADDR_TAP_MIN <= f["address"] <= catalog.ADDR_TAP_MAX:
            return tap.nak(catalog.E_OUT_OF_RANGE, 2), hmac
        tap.guard.address = f["address"]
        tap.config.data["address"] = f["address"]
        tap.config.save()
        return tap.ack(), hmac
    if msg_type == catalog.T_DISCOVER:
        discover(tap, bus, f, now)
        return 0, hmac
    if msg_type == catalog.T_CAPTURE_START:
        position = tap.capture.start(f["capture_id"], f["trigger"], f["cycles"])
        return (tap.nak(catalog.E_OUT_OF_RANGE, position) if position else capture_info(tap, msg_type)), hmac
    if msg_type == catalog.T_CAPTURE_INFO:
        if f["capture_id"] != tap.capture.capture_id:
            return tap.nak(catalog.E_NO_CAPTURE, held_capture(tap)), hmac
        return capture_info(tap, msg_type), hmac
    if msg_type == catalog.T_CAPTURE_READ:
        return capture_read(tap, f), hmac
    if tap.health is None:
        return tap.nak(catalog.E_NOT_SUPPORTED, tap.board["role"]), hmac  # HEALTH: monitors only
    return health(tap, tap.health), hmac


def identify(tap):
    major, minor, patch = FIRMWARE_VERSION
    return tap.answer(catalog.T_IDENTIFY, {
        "unique_id": tap.hal.unique_id(), "board": tap.board["name"].encode(),
        "firmware_major": major, "firmware_minor": minor, "firmware_patch": patch,
        "protocol_major": catalog.VERSION, "protocol_minor": catalog.PROTOCOL_MINOR,
        "role": tap.board["role"], "n_inputs": tap.n, "address": tap.guard.address,
        "epoch": tap.guard.epoch, "auth_counter": tap.guard.counter, "config_crc": config_crc(tap)})


def config_crc(tap):
    # SPEC.md IDENTIFY: address, role, limits, alternates, calibration; not the epoch, the
    # reserved counter or the host's last choice of input, which change in normal operation
    crc = binascii.crc32(("role=%s;" % tap.board["role"]).encode())
    for key in CRC_FIELDS:
        crc = binascii.crc32(("%s=%s;" % (key, tap.config.data[key])).encode(), crc)
    return crc & 0xFFFFFFFF


def telemetry(tap):
    m = tap.meter
    inputs = []
    for k in range(1, tap.n + 1):
        ch = m.inputs[k - 1]
        inputs.append({"voltage_mV": ch.voltage_mV, "frequency_cHz": ch.frequency_cHz,
                       "thd_dpct": ch.thd_dpct, "phase_cdeg": m.phase_cdeg(k), "state": tap.input_state(k)})
    return tap.answer(catalog.T_TELEMETRY, {
        "uptime_s": tap.uptime.s, "active_input": tap.relays.active,
        "relays_closed": tap.relays_closed(), "protection": tap.protection.state, "alarms": tap.alarms,
        "temperature_dC": tap.hal.temperature_dC(), "current_mA": m.current_mA, "power_W": m.power_W,
        "apparent_VA": m.apparent_VA,
        "power_factor_milli": m.power_factor_milli, "transfers": tap.relays.transfers,
        "trips": tap.protection.trips, "frames_bad": frames_bad(tap), "n_inputs": tap.n, "inputs": inputs})


def frames_bad(tap):
    bad = 0
    for d in tap.decoders:
        bad += d.bad_cobs + d.bad_crc + d.too_short + d.oversize
    return bad


def status(tap):
    p = tap.protection
    active = tap.relays.active
    row = p.rankings[active - 1] if active else (0, 0, 0)
    tap.alarms &= ~catalog.ALARM_AUTH_FAILURES  # reading STATUS clears it
    silent = tap.host_silent_ms // 1000
    return tap.answer(catalog.T_STATUS, {
        "active_input": tap.relays.active, "relays_closed": tap.relays_closed(), "protection": p.state,
        "alarms": tap.alarms, "epoch": tap.guard.epoch, "auth_counter": tap.guard.counter,
        "event_head": tap.events.head, "config_crc": config_crc(tap), "alternates_for": active,
        "alternate_1": row[0], "alternate_2": row[1], "alternate_3": row[2],
        "host_silent_s": min(silent, 0xFFFF), "boot_count": tap.boots.data["boot_count"]})


def switch(tap, f, now):
    expected = f["expected_input"]
    target = f["target_input"]
    if tap.relays.state != rm.IDLE:
        return tap.nak(catalog.E_BUSY, tap.relays.state)
    if expected != tap.relays.active:
        return tap.nak(catalog.E_CAS_MISMATCH, tap.relays.active)
    if not 0 <= target <= tap.n:
        return tap.nak(catalog.E_OUT_OF_RANGE, 2)
    state = tap.protection.state
    if state == catalog.PROT_LOCKOUT or state == catalog.PROT_TRIPPED:
        return tap.nak(catalog.E_PROTECTION_LOCKOUT, state)
    if state == catalog.PROT_DOWNSTREAM_FAULT:
        return tap.nak(catalog.E_DOWNSTREAM_FAULT, state)
    if target and target != expected and not tap.protection.healthy(target):
        return tap.nak(catalog.E_SOURCE_UNHEALTHY, tap.input_state(target))
    if tap.protection.planned_pending():
        return tap.nak(catalog.E_BUSY, tap.protection.planned_pending())
    if target != expected:
        fallback = expected if expected and tap.protection.healthy(expected) else 0
        if expected and target:
            tap.protection.request_planned(target, fallback, now)  # two live sources: mind the phase
        elif tap.relays.request(target, fallback, now) != rm.OK:
            return tap.nak(catalog.E_INTERNAL, tap.relays.state)
        tap.event(catalog.EV_COMMAND, target, catalog.T_SWITCH)
    tap.protection.clear_chatter()
    if tap.config.data["preferred"] != target:
        tap.config.data["preferred"] = target  # the host's choice: where to return without a host
        tap.protection.preferred = target
        tap.config.save()
    return tap.ack()


def set_alternates(tap, f):
    for_input = f["for_input"]
    ranked = [f["alternate_1"], f["alternate_2"], f["alternate_3"]]
    if not 1 <= for_input <= tap.n:
        return tap.nak(catalog.E_OUT_OF_RANGE, 1)
    seen_zero = False
    for i in range(3):
        k = ranked[i]
        if k == 0:
            seen_zero = True
        elif seen_zero or k > tap.n or k == for_input or k in ranked[:i]:
            return tap.nak(catalog.E_OUT_OF_RANGE, i + 2)
    tap.protection.set_alternates(for_input, ranked)
    tap.config.data["rankings"][for_input - 1] = ranked
    tap.config.save()
    return tap.ack()


def read_alternates(tap, f):
    """The ranking protection holds for one input: what the tap will do, not what was sent."""
    for_input = f["for_input"]
    if not 1 <= for_input <= tap.n:
        return tap.nak(catalog.E_OUT_OF_RANGE, 1)
    row = tap.protection.rankings[for_input - 1]
    return tap.answer(catalog.T_READ_ALTERNATES, {"for_input": for_input, "alternate_1": row[0],
                                                    "alternate_2": row[1], "alternate_3": row[2]})


def set_limits(tap, f):
    position = limits.problem(tap.board, f)
    if position:
        return tap.nak(catalog.E_OUT_OF_RANGE, position)
    for name in limits.FIELDS:
        tap.config.data[name] = f[name]
    tap.protection.apply_settings(tap.settings())
    tap.config.save()
    tap.limits_defaulted = False
    tap.update_uncalibrated()
    return tap.ack()


def set_calibration(tap, f):
    kind = f["kind"]
    index = f["index"]
    gain = f["gain_ppm"]
    offset = f["offset_counts"]
    position = calibration.problem(tap.n, kind, index, gain, offset)
    if position:
        return tap.nak(catalog.E_OUT_OF_RANGE, position)
    channels = list(tap.config.data["calibration"])
    channels[index - 1 if kind == catalog.CHANNEL_INPUT_VOLTAGE else tap.n] = [gain, offset]
    tap.config.data["calibration"] = channels
    tap.config.save()  # atomically, with the rest of the configuration, before the ACK
    calibration.apply(tap)
    tap.update_uncalibrated()
    return tap.ack()


def read_settings(tap):
    fields = {}
    for name in limits.FIELDS:
        fields[name] = tap.config.data[name]
    channels = []
    for channel in range(tap.n + 1):
        gain, offset = calibration.gain_offset(tap, channel)
        is_input = channel < tap.n
        channels.append({"kind": catalog.CHANNEL_INPUT_VOLTAGE if is_input else catalog.CHANNEL_OUTPUT_CURRENT,
                         "index": channel + 1 if is_input else 0, "gain_ppm": gain, "offset_counts": offset,
                         "state": 0 if tap.config.data["calibration"][channel] is None else catalog.CAL_SET})
    fields["n_channels"] = len(channels)
    fields["channels"] = channels
    return tap.answer(catalog.T_READ_SETTINGS, fields)


def set_key(tap, f):
    new_key = unwrap_key(tap.hmac, f["wrapped_key"], tap.guard.auth_counter)
    if key_check(new_key) != f["key_check"]:
        return tap.nak(catalog.E_BAD_TAG, 0), tap.hmac
    tap.key.data["key"] = binascii.hexlify(new_key).decode()
    tap.key.save()
    tap.hmac = Hmac(new_key)
    tap.guard.hmac = tap.hmac
    tap.update_uncalibrated()
    return tap.ack(), tap.hmac  # signed with the new key: proof it arrived


def capture_info(tap, msg_type):
    c = tap.capture
    channels = []
    for k in range(tap.n):
        mV_per_count = calibration.calibrated(tap.board["mV_per_count"], calibration.gain_offset(tap, k)[0])
        channels.append({"kind": catalog.CHANNEL_INPUT_VOLTAGE, "index": k + 1,
                         "scale_nu": int(mV_per_count * 1000000)})
    mA_per_count = calibration.calibrated(tap.board["mA_per_count"], calibration.gain_offset(tap, tap.n)[0])
    channels.append({"kind": catalog.CHANNEL_OUTPUT_CURRENT, "index": 0,
                     "scale_nu": int(mA_per_count * 1000000)})
    return tap.answer(msg_type, {
        "capture_id": c.capture_id & 0xFFFF,
        "state": catalog.CAPTURE_READY if c.ready() else catalog.CAPTURE_ARMED,
        "sample_rate_hz": tap.board["fs"], "samples_per_channel": c.samples, "total_bytes": c.total_bytes(),
        "n_channels": len(channels), "channels": channels})


def held_capture(tap):
    """NO_CAPTURE's detail: the id of the capture held, or NO_CAPTURE_HELD if there is none."""
    held = tap.capture.capture_id
    return catalog.NO_CAPTURE_HELD if held < 0 else held


def capture_read(tap, f):
    c = tap.capture
    if f["capture_id"] != c.capture_id or not c.ready():
        return tap.nak(catalog.E_NO_CAPTURE, held_capture(tap))
    if f["offset"] >= c.total_bytes():
        return tap.nak(catalog.E_OUT_OF_RANGE, 2)
    n = tap.answer(catalog.T_CAPTURE_READ, {"capture_id": f["capture_id"], "offset": f["offset"],
                                               "total_bytes": c.total_bytes(), "data": b""})
    room = catalog.MAX_BODY - n - catalog.AUTH_LEN
    return n + c.read_into(tap.encoder.body, n, f["offset"], min(f["length"], room))


def health(tap, h):
    ok = 0x01  # the board's temperature sensor
    if h.windows:
        ok |= 0x02 | (0x04 if h.dc_volts > 0 else 0)
    if tap.meter.inputs[0].windows:
        ok |= 0x08
    return tap.answer(catalog.T_HEALTH, {
        "temperature_dC": tap.hal.temperature_dC(), "vibration_rms_mg": min(h.vibration_rms_mg, 0xFFFF),
        "vibration_kurtosis_milli": min(h.kurtosis_milli, 0xFFFF),
        "vibration_crest_milli": min(h.crest_milli, 0xFFFF),
        "ripple_dpct": min(h.ripple_dpct, 0xFFFF), "thd_dpct": tap.meter.inputs[0].thd_dpct, "sensors_ok": ok,
        "age_ms": min(h.since_window * 1000 // tap.board["fs"], 0xFFFF)})


def read_events(tap, f):
    found = []  # type: list[tuple[int, int, int, int]]
    first = tap.events.read(f["since"], min(f["max_count"], 30), found)
    items = []
    for time_ms, code, input_index, value in found:
        items.append({"time_ms": time_ms, "code": code, "input": input_index, "value": value})
    return tap.answer(catalog.T_READ_EVENTS, {"first": first, "head": tap.events.head,
                                                "n_events": len(items), "events": items})


def discover(tap, bus, f, now):
    uid = tap.hal.unique_id()
    if f["scope"] == 0 and tap.guard.address != catalog.ADDR_UNASSIGNED:
        return
    if not (bytes(f["uid_low"]) <= uid <= bytes(f["uid_high"])) or f["slots"] == 0:
        return
    slot = binascii.crc32(uid + bytes([f["salt"]])) % f["slots"]
    length = tap.answer(catalog.T_DISCOVER, {"unique_id": uid, "board": tap.board["name"].encode(),
                                               "role": tap.board["role"], "n_inputs": tap.n, "slot": slot})
    n = tap.encoder.encode(length)
    tap.pending_buf[:n] = tap.encoder.out[:n]
    tap.pending = (bus, now + slot * f["slot_ms"] * 1000, n)
