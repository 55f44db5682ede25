"""Writes protocol/vectors/frames.json, the golden vectors both codecs must agree on.

Run `python -m tests.make_vectors` after a deliberate protocol change, review the diff
of frames.json, and commit both. tests/test_vectors.py fails while the file and this
generator disagree, so a codec change cannot move the vectors silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from host.wire import framing, messages
from host.wire.inspect_frames import jsonable
from protocol import catalog

VECTORS = Path(__file__).resolve().parent.parent / "protocol" / "vectors" / "frames.json"
KEY = bytes(range(32))
UNIQUE_ID = bytes.fromhex("e6614104037a5c2b")
TAP = 17
EPOCH = 3


def _good(name: str, frame: messages.Frame) -> dict[str, Any]:
    body = frame.to_body()
    return {
        "name": name,
        "message": frame.name,
        "header": {"dst": frame.dst, "src": frame.src, "type": frame.type, "flags": frame.flags, "seq": frame.seq},
        "fields": jsonable(frame.fields()),
        "auth": None
        if frame.auth is None
        else {
            "epoch": frame.auth.epoch,
            "counter": frame.auth.counter,
            "tag": frame.auth.tag.hex(),
        },
        "body": body.hex(),
        "wire": framing.encode_frame(body).hex(),
    }


def _inputs(n: int) -> list[dict[str, int]]:
    return [
        {
            "voltage_mV": 230_100 - 700 * i,
            "frequency_cHz": 5000 + i,
            "thd_dpct": 21 + i,
            "phase_cdeg": (18_000 - 12_000 * i) % 36_000 - 18_000,
            "state": catalog.INPUT_PRESENT | catalog.INPUT_HEALTHY,
        }
        for i in range(n)
    ]


def _telemetry(n_inputs: int) -> dict[str, Any]:
    return {
        "uptime_s": 86_400 * 3 + 17,
        "active_input": 1 if n_inputs else 0,
        "relays_closed": 1 if n_inputs else 0,
        "protection": catalog.PROT_NORMAL,
        "alarms": 0,
        "temperature_dC": 412,
        "current_mA": 21_350,
        "power_W": 4_702,
        "apparent_VA": 4_912,
        "power_factor_milli": 957,
        "transfers": 3,
        "trips": 0,
        "frames_bad": 12,
        "n_inputs": n_inputs,
        "inputs": _inputs(n_inputs),
    }


def _capture_info() -> dict[str, Any]:
    return {
        "capture_id": 9,
        "state": 1,
        "sample_rate_hz": 4000,
        "samples_per_channel": 400,
        "total_bytes": 4000,
        "n_channels": 5,
        "channels": [{"kind": 0, "index": i, "scale_nu": 38_147} for i in range(4)]
        + [{"kind": 1, "index": 0, "scale_nu": 1_907}],
    }


def _settings() -> dict[str, Any]:
    limits = {
        "curve": catalog.CURVE_STANDARD_INVERSE,
        "pickup_mA": 32_000,
        "tms_milli": 100,
        "instantaneous_mA": 40_000,
        "undervoltage_mV": 195_500,
        "overvoltage_mV": 264_500,
        "frequency_low_cHz": 4750,
        "frequency_high_cHz": 5250,
        "thd_max_dpct": 80,
    }
    inputs = [
        {"kind": catalog.CHANNEL_INPUT_VOLTAGE, "index": k, "gain_ppm": 1_000_000 + 2_500 * k, "offset_counts": k - 2,
         "state": catalog.CAL_SET}
        for k in range(1, 5)
    ]
    current = {"kind": catalog.CHANNEL_OUTPUT_CURRENT, "index": 0, "gain_ppm": catalog.CAL_GAIN_NOMINAL_PPM,
               "offset_counts": 0, "state": 0}
    return limits | {"n_channels": 5, "channels": [*inputs, current]}


def _signed(name: str, fields: dict[str, Any], seq: int, counter: int, dst: int = TAP) -> messages.Frame:
    return messages.request(dst, name, seq, fields, key=KEY, epoch=EPOCH, counter=counter)


def good_vectors() -> list[dict[str, Any]]:
    req = messages.request
    resp = messages.response
    out: list[tuple[str, messages.Frame]] = []

    ident = req(TAP, "IDENTIFY", 1)
    out.append(("identify request", ident))
    out.append(
        (
            "identify response",
            resp(
                ident,
                TAP,
                "IDENTIFY",
                {
                    "unique_id": UNIQUE_ID,
                    "board": b"rp2040-m04",
                    "firmware_major": 0,
                    "firmware_minor": 1,
                    "firmware_patch": 0,
                    "protocol_major": 1,
                    "protocol_minor": 0,
                    "role": catalog.ROLE_RACK_TAP,
                    "n_inputs": 4,
                    "address": TAP,
                    "epoch": EPOCH,
                    "auth_counter": 41,
                    "config_crc": 0x9A3C_0F11,
                },
            ),
        )
    )
    disc = req(
        catalog.ADDR_BROADCAST,
        "DISCOVER",
        2,
        {"uid_low": bytes(8), "uid_high": b"\xff" * 8, "slots": 16, "slot_ms": 20, "salt": 0x5A, "scope": 0},
    )
    out.append(("discover request, whole id range (zero runs in payload)", disc))
    out.append(
        (
            "discover answer from an unassigned tap",
            resp(
                disc,
                catalog.ADDR_UNASSIGNED,
                "DISCOVER",
                {"unique_id": UNIQUE_ID, "board": b"sim", "role": 0, "n_inputs": 2, "slot": 11},
            ),
        )
    )
    assign = _signed("ASSIGN_ADDRESS", {"unique_id": UNIQUE_ID, "address": TAP}, 3, 42, dst=catalog.ADDR_BROADCAST)
    out.append(("assign address by unique id, broadcast and signed", assign))
    out.append(
        ("ack of assign address, signed", resp(assign, TAP, "ACK", {"request_type": catalog.T_ASSIGN_ADDRESS}, key=KEY))
    )

    tel = req(TAP, "TELEMETRY", 4)
    out.append(("telemetry request", tel))
    for n in (0, 2, 4):
        out.append((f"telemetry response, {n} inputs", resp(tel, TAP, "TELEMETRY", _telemetry(n))))
    stat = req(TAP, "STATUS", 5)
    out.append(("status request", stat))
    out.append(
        (
            "status response",
            resp(
                stat,
                TAP,
                "STATUS",
                {
                    "active_input": 2,
                    "relays_closed": 2,
                    "protection": catalog.PROT_PICKUP,
                    "alarms": 0x0004,
                    "epoch": EPOCH,
                    "auth_counter": 42,
                    "event_head": 1234,
                    "config_crc": 0x0102_0304,
                    "alternates_for": 2,
                    "alternate_1": 1,
                    "alternate_2": 3,
                    "alternate_3": 0,
                    "host_silent_s": 2,
                    "boot_count": 3,
                },
            ),
        )
    )

    switch = _signed("SWITCH", {"expected_input": 1, "target_input": 2}, 6, 43)
    out.append(("switch source, compare-and-swap, signed", switch))
    out.append(("ack of switch, signed", resp(switch, TAP, "ACK", {"request_type": catalog.T_SWITCH}, key=KEY)))
    out.append(
        (
            "ack of switch replayed from the duplicate cache",
            resp(switch, TAP, "ACK", {"request_type": catalog.T_SWITCH}, key=KEY, cached=True),
        )
    )
    out.append(
        (
            "nak of switch: compare-and-swap mismatch, signed",
            resp(
                switch,
                TAP,
                "NAK",
                {"request_type": catalog.T_SWITCH, "error": catalog.E_CAS_MISMATCH, "detail": 3},
                key=KEY,
            ),
        )
    )
    out.append(("switch to open the output", _signed("SWITCH", {"expected_input": 2, "target_input": 0}, 7, 44)))
    out.append(
        (
            "set ranked alternates",
            _signed("SET_ALTERNATES", {"for_input": 1, "alternate_1": 3, "alternate_2": 2, "alternate_3": 0}, 8, 45),
        )
    )
    out.append(
        (
            "set protection limits",
            _signed(
                "SET_LIMITS",
                {
                    "curve": catalog.CURVE_VERY_INVERSE,
                    "pickup_mA": 32_000,
                    "tms_milli": 100,
                    "instantaneous_mA": 320_000,
                    "undervoltage_mV": 195_500,
                    "overvoltage_mV": 264_500,
                    "frequency_low_cHz": 4750,
                    "frequency_high_cHz": 5250,
                    "thd_max_dpct": 80,
                },
                9,
                46,
            ),
        )
    )
    out.append(
        (
            "set key, wrapped under the old key",
            _signed("SET_KEY", {"wrapped_key": bytes(range(100, 132)), "key_check": bytes.fromhex("0badcafe")}, 10, 47),
        )
    )
    out.append(
        (
            "raise controller epoch",
            messages.request(TAP, "RAISE_EPOCH", 11, {"new_epoch": EPOCH + 1}, key=KEY, epoch=EPOCH + 1, counter=48),
        )
    )
    out.append(("reset, relays held", _signed("RESET", {"mode": 0}, 12, 49)))
    calibrate = _signed(
        "SET_CALIBRATION",
        {"kind": catalog.CHANNEL_INPUT_VOLTAGE, "index": 2, "gain_ppm": 1_031_250, "offset_counts": -3},
        18,
        50,
    )
    out.append(("set calibration of input 2, signed", calibrate))
    out.append(
        (
            "ack of set calibration, signed",
            resp(calibrate, TAP, "ACK", {"request_type": catalog.T_SET_CALIBRATION}, key=KEY),
        )
    )
    out.append(
        (
            "nak of set calibration: gain out of range, signed",
            resp(
                _signed(
                    "SET_CALIBRATION",
                    {"kind": catalog.CHANNEL_OUTPUT_CURRENT, "index": 0, "gain_ppm": 1_200_000, "offset_counts": 0},
                    19,
                    51,
                ),
                TAP,
                "NAK",
                {"request_type": catalog.T_SET_CALIBRATION, "error": catalog.E_OUT_OF_RANGE, "detail": 3},
                key=KEY,
            ),
        )
    )
    settings = req(TAP, "READ_SETTINGS", 20)
    out.append(("read settings request", settings))
    out.append(("read settings response, 4 inputs and the current", resp(settings, TAP, "READ_SETTINGS", _settings())))
    alternates = req(TAP, "READ_ALTERNATES", 22, {"for_input": 2})
    out.append(("read alternates request", alternates))
    ranking = {"for_input": 2, "alternate_1": 3, "alternate_2": 1, "alternate_3": 0}
    out.append(("read alternates response, input 2: input 3 then input 1", resp(alternates, TAP, "READ_ALTERNATES",
                                                                                ranking)))

    events = req(TAP, "READ_EVENTS", 13, {"since": 1200, "max_count": 16})
    out.append(("read events request", events))
    out.append(
        (
            "read events response, three events",
            resp(
                events,
                TAP,
                "READ_EVENTS",
                {
                    "first": 1200,
                    "head": 1203,
                    "n_events": 3,
                    "events": [
                        {"time_ms": 10_000, "code": catalog.EV_SOURCE_LOST, "input": 1, "value": 0},
                        {"time_ms": 10_004, "code": catalog.EV_TRANSFER, "input": 2, "value": 4},
                        {"time_ms": 10_500, "code": catalog.EV_COMMAND, "input": 0, "value": -1},
                    ],
                },
            ),
        )
    )
    out.append(
        (
            "read events response, none new",
            resp(events, TAP, "READ_EVENTS", {"first": 1203, "head": 1203, "n_events": 0, "events": []}),
        )
    )

    cap = req(TAP, "CAPTURE_START", 14, {"capture_id": 9, "trigger": 0, "cycles": 10})
    out.append(("capture start request", cap))
    out.append(("capture start response", resp(cap, TAP, "CAPTURE_START", _capture_info())))
    info = req(TAP, "CAPTURE_INFO", 15, {"capture_id": 9})
    out.append(("capture info request", info))
    out.append(("capture info response", resp(info, TAP, "CAPTURE_INFO", _capture_info())))
    read = req(TAP, "CAPTURE_READ", 16, {"capture_id": 9, "offset": 0, "length": 240})
    out.append(("capture read request", read))
    chunks = {
        "capture chunk, a run of 254 non-zero bytes": bytes((i % 255) + 1 for i in range(254)),
        "capture chunk, a run of 253 non-zero bytes then a zero": bytes((i % 255) + 1 for i in range(253)) + b"\0",
        "capture chunk, 255 non-zero bytes (a block of 254 and one more)": bytes(
            ((i * 7) % 255) + 1 for i in range(255)
        ),
        "capture chunk, all zero bytes": bytes(240),
        "capture chunk, largest body": bytes(((i * 3) % 256) for i in range(catalog.MAX_BODY - 7 - 10)),
    }
    for name, data in chunks.items():
        out.append(
            (
                name,
                resp(
                    read,
                    TAP,
                    "CAPTURE_READ",
                    {"capture_id": 9, "offset": 0x01000000, "total_bytes": 4000, "data": data},
                ),
            )
        )

    health = req(TAP, "HEALTH", 17)
    out.append(("health request", health))
    out.append(
        (
            "health response from a source monitor",
            resp(
                health,
                TAP,
                "HEALTH",
                {
                    "temperature_dC": -55,
                    "vibration_rms_mg": 182,
                    "vibration_kurtosis_milli": 3120,
                    "vibration_crest_milli": 4100,
                    "ripple_dpct": 9,
                    "thd_dpct": 31,
                    "sensors_ok": 0x0F,
                    "age_ms": 250,
                },
            ),
        )
    )
    beat = req(TAP, "HEARTBEAT", 0xFFFF, {"epoch": EPOCH})
    out.append(("heartbeat, unicast, last sequence number", beat))
    out.append(("heartbeat response", resp(beat, TAP, "HEARTBEAT", {"epoch": EPOCH, "uptime_s": 3, "alarms": 0})))
    out.append(
        ("heartbeat, broadcast, sequence number zero", req(catalog.ADDR_BROADCAST, "HEARTBEAT", 0, {"epoch": EPOCH}))
    )
    out.append(("identify of the highest tap address", req(catalog.ADDR_TAP_MAX, "IDENTIFY", 0x0100)))
    out.append(
        (
            "nak: unknown type",
            resp(ident, TAP, "NAK", {"request_type": 0x7E, "error": catalog.E_UNKNOWN_TYPE, "detail": 0x7E}),
        )
    )
    return [_good(name, frame) for name, frame in out]


def _body(dst: int, msg_type: int, flags: int, seq: int, payload: bytes = b"", version: int = catalog.VERSION) -> bytes:
    return bytes([version, dst, catalog.ADDR_HOST, msg_type, flags]) + seq.to_bytes(2, "little") + payload


def stream_vectors() -> list[dict[str, Any]]:
    """Byte streams with the frames (good) and verdicts a decoder must report, in order."""
    good = framing.encode_frame(messages.request(TAP, "TELEMETRY", 99).to_body())
    good2 = framing.encode_frame(messages.request(TAP, "STATUS", 100).to_body())
    body = messages.request(TAP, "TELEMETRY", 99).to_body()
    flipped_crc = bytearray(body + framing.crc32(body).to_bytes(4, "little"))
    flipped_crc[-1] ^= 0x01
    from cobs import cobs

    streams = [
        ("one good frame", good, ["good"]),
        ("leading delimiter, then a frame", b"\x00" + good, ["good"]),
        ("two frames in one read", good + good2, ["good", "good"]),
        ("idle delimiters only", b"\x00\x00\x00", []),
        ("a frame without its delimiter yet", good[:-1], []),
        ("bad crc", cobs.encode(bytes(flipped_crc)) + b"\x00", ["bad_crc"]),
        ("one payload bit flipped", _flip(good, 4), ["bad_crc"]),
        ("cobs block runs past the delimiter", b"\x05\x01\x02\x00", ["bad_cobs"]),
        ("garbage, then a good frame", b"\x41\x42\x43\x00" + good, ["bad_cobs", "good"]),
        ("frame cut short by a new delimiter, then a good frame", good[:6] + b"\x00" + good, ["bad_cobs", "good"]),
        (
            "too short: three bytes with a right crc",
            cobs.encode(b"\x01\x02\x03" + framing.crc32(b"\x01\x02\x03").to_bytes(4, "little")) + b"\x00",
            ["too_short"],
        ),
        ("single code byte", b"\x01\x00", ["too_short"]),
        ("oversize: 400 non-zero bytes", b"\x7f" * 400 + b"\x00", ["oversize"]),
        ("oversize, then a good frame", b"\x33" * 1000 + b"\x00" + good, ["oversize", "good"]),
        (
            "oversize decoded: a zero-rich 330 byte frame",
            cobs.encode(bytes(326) + framing.crc32(bytes(326)).to_bytes(4, "little")) + b"\x00",
            ["oversize"],
        ),
        ("noise between frames", good + b"\xff\xfe\x00" + good2, ["good", "bad_cobs", "good"]),
        ("an empty block after a final 0xFF block", _final_full_block_frame()[:-1] + b"\x01\x00", ["good"]),
    ]
    return [{"name": n, "wire": w.hex(), "outcomes": o} for n, w, o in streams]


def _final_full_block_frame() -> bytes:
    """A good frame whose last COBS block is a full one (code 0xFF): a CAPTURE_READ answer,
    whose only zero is the host address in byte 1, then 254 non-zero bytes, CRC included."""
    data = bytes((i % 255) + 1 for i in range(235))
    for capture_id in range(0x0101, 0xFFFF):
        fields = {"capture_id": capture_id, "offset": 0x01010101, "total_bytes": 0x01010101, "data": data}
        payload = messages.encode_payload(messages.message_named("CAPTURE_READ"), fields, response=True)
        body = messages.Frame(catalog.ADDR_HOST, TAP, catalog.T_CAPTURE_READ, 0x0101, payload,
                              catalog.FLAG_RESPONSE).to_body()
        wire = framing.encode_frame(body)
        if wire[2] == 0xFF and len(wire) == 2 + 1 + 254 + 1:
            return wire
    raise AssertionError("no capture id gives a CRC without a zero byte")


def _flip(wire: bytes, index: int) -> bytes:
    out = bytearray(wire)
    out[index] ^= 0x10 if out[index] ^ 0x10 else 0x20
    return bytes(out)


def request_vectors() -> list[dict[str, Any]]:
    """Requests that frame correctly but that a tap must refuse or ignore.

    `tap` is the guard's verdict for a tap with `tap_state`; `host` is what the host
    parser says of the body ("ok" or an error name); `tag_valid` whether the tag is right.
    """
    state = {"address": TAP, "unique_id": UNIQUE_ID.hex(), "epoch": EPOCH, "counter": 50}
    switch = {"expected_input": 1, "target_input": 2}
    wrong_key = bytes(32)

    def signed(
        name: str, fields: dict[str, Any], counter: int = 51, epoch: int = EPOCH, key: bytes = KEY, dst: int = TAP
    ) -> bytes:
        return messages.request(dst, name, 20, fields, key=key, epoch=epoch, counter=counter).to_body()

    good_switch = bytearray(signed("SWITCH", switch))
    tampered = bytearray(good_switch)
    tampered[8] = 3  # target input changed after signing
    cases: list[tuple[str, bytes, str, str, bool | None]] = [
        ("signed switch, fresh counter", bytes(good_switch), "admit", "ok", True),
        (
            "signed switch, counter equal to the last accepted",
            signed("SWITCH", switch, counter=50),
            "REPLAY",
            "ok",
            True,
        ),
        ("signed switch, older counter", signed("SWITCH", switch, counter=7), "REPLAY", "ok", True),
        ("switch without a tag", _body(TAP, catalog.T_SWITCH, 0, 20, b"\x01\x02"), "AUTH_REQUIRED", "ok", None),
        ("switch signed with the wrong key", signed("SWITCH", switch, key=wrong_key), "BAD_TAG", "ok", False),
        ("switch altered after signing", bytes(tampered), "BAD_TAG", "ok", False),
        ("switch from a stale epoch", signed("SWITCH", switch, epoch=EPOCH - 1), "STALE_EPOCH", "ok", True),
        (
            "switch from an epoch never raised",
            signed("SWITCH", switch, epoch=EPOCH + 1),
            "EPOCH_NOT_RAISED",
            "ok",
            True,
        ),
        (
            "raise epoch to a higher value",
            messages.request(
                TAP, "RAISE_EPOCH", 21, {"new_epoch": EPOCH + 1}, key=KEY, epoch=EPOCH + 1, counter=51
            ).to_body(),
            "admit",
            "ok",
            True,
        ),
        (
            "raise epoch to the same value",
            messages.request(TAP, "RAISE_EPOCH", 21, {"new_epoch": EPOCH}, key=KEY, epoch=EPOCH, counter=51).to_body(),
            "STALE_EPOCH",
            "ok",
            True,
        ),
        (
            "raise epoch whose payload differs from its trailer",
            messages.request(
                TAP, "RAISE_EPOCH", 21, {"new_epoch": EPOCH + 2}, key=KEY, epoch=EPOCH + 1, counter=51
            ).to_body(),
            "OUT_OF_RANGE",
            "ok",
            True,
        ),
        (
            "raise epoch to the same value, payload differing too",
            messages.request(
                TAP, "RAISE_EPOCH", 21, {"new_epoch": EPOCH + 2}, key=KEY, epoch=EPOCH, counter=51
            ).to_body(),
            "STALE_EPOCH",
            "ok",
            True,
        ),
        (
            "signed switch too short for a trailer",
            _body(TAP, catalog.T_SWITCH, catalog.FLAG_AUTH, 20, b"\x01\x02" + bytes(8)),
            "BAD_LENGTH",
            "BAD_LENGTH",
            None,
        ),
        (
            "signed switch missing a payload byte",
            messages.sign(messages.Frame(TAP, 0, catalog.T_SWITCH, 20, b"\x01"), KEY, EPOCH, 51).to_body(),
            "BAD_LENGTH",
            "BAD_LENGTH",
            True,
        ),
        (
            "telemetry request with an extra byte",
            _body(TAP, catalog.T_TELEMETRY, 0, 20, b"\x00"),
            "BAD_LENGTH",
            "BAD_LENGTH",
            None,
        ),
        ("protocol version 2", _body(TAP, catalog.T_TELEMETRY, 0, 20, version=2), "BAD_VERSION", "BAD_VERSION", None),
        ("reserved flag bit", _body(TAP, catalog.T_TELEMETRY, 0x80, 20), "BAD_HEADER", "BAD_HEADER", None),
        ("unknown message type", _body(TAP, 0x7E, 0, 20), "UNKNOWN_TYPE", "UNKNOWN_TYPE", None),
        ("telemetry for another tap", _body(TAP + 1, catalog.T_TELEMETRY, 0, 20), "ignore", "ok", None),
        (
            "a response on the bus",
            _body(TAP, catalog.T_TELEMETRY, catalog.FLAG_RESPONSE, 20),
            "ignore",
            "BAD_LENGTH",
            None,
        ),
        (
            "switch broadcast",
            messages.sign(
                messages.Frame(catalog.ADDR_BROADCAST, 0, catalog.T_SWITCH, 20, b"\x01\x02"), KEY, EPOCH, 51
            ).to_body(),
            "ignore",
            "ok",
            True,
        ),
        (
            "discover sent unicast",
            _body(TAP, catalog.T_DISCOVER, 0, 20, bytes(8) + b"\xff" * 8 + b"\x10\x14\x00\x00"),
            "BAD_ADDRESSING",
            "ok",
            None,
        ),
        (
            "assign address naming another unique id",
            signed("ASSIGN_ADDRESS", {"unique_id": b"\x01" * 8, "address": 9}, dst=catalog.ADDR_BROADCAST),
            "ignore",
            "ok",
            True,
        ),
        (
            "assign address naming this tap",
            signed("ASSIGN_ADDRESS", {"unique_id": UNIQUE_ID, "address": 9}, dst=catalog.ADDR_BROADCAST),
            "admit",
            "ok",
            True,
        ),
        (
            "heartbeat broadcast",
            _body(catalog.ADDR_BROADCAST, catalog.T_HEARTBEAT, 0, 20, EPOCH.to_bytes(4, "little")),
            "admit",
            "ok",
            None,
        ),
    ]
    # NAK detail the tap must give, where the error table fixes it (SPEC.md, "Error codes")
    details = {
        "signed switch, counter equal to the last accepted": 50,
        "signed switch, older counter": 50,
        "switch from a stale epoch": EPOCH,
        "switch from an epoch never raised": EPOCH,
        "raise epoch to the same value": EPOCH,
        "raise epoch whose payload differs from its trailer": 1,
        "raise epoch to the same value, payload differing too": EPOCH,
        "signed switch too short for a trailer": 2,
        "signed switch missing a payload byte": 2,
        "telemetry request with an extra byte": 0,
        "protocol version 2": catalog.VERSION,
        "reserved flag bit": 0x80,
        "unknown message type": 0x7E,
    }
    return [
        {"name": n, "tap_state": state, "body": b.hex(), "tap": t, "host": h, "tag_valid": v, "detail": details.get(n)}
        for n, b, t, h, v in cases
    ]


def build() -> dict[str, Any]:
    return {
        "about": "Golden vectors of IBT protocol v1; see protocol/SPEC.md. Generated by tests/make_vectors.py.",
        "key": KEY.hex(),
        "good": good_vectors(),
        "streams": stream_vectors(),
        "requests": request_vectors(),
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


if __name__ == "__main__":
    VECTORS.write_text(render())
    print(f"wrote {VECTORS}")
