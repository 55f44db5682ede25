"""TapClient against taps played in memory: typed answers, refusals, safe retries, counters, discovery."""

from __future__ import annotations

import binascii
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from host.bus.transport import TransportError
from host.client.discovery import discover, scan
from host.client.keys import MemoryKeys
from host.client.replies import Identity, Ranking, Reply, Settings, Status, Telemetry
from host.client.tap_client import TapClient
from host.client.tap_errors import FencedOut, TapProtocolError, TapRefused, TapTimeout
from host.wire import auth, framing, messages
from host.wire.messages import Frame
from protocol import catalog

KEY = bytes(range(32))
ADDRESS = 17
EPOCH = 3
UID = bytes.fromhex("e6614104037a5c2b")


def zero_fields(compiled: Any) -> dict[str, Any]:
    """Fields of a catalogue layout, every value zero (bytes empty, groups empty)."""
    out: dict[str, Any] = {
        name: b"" if code.endswith("s") else 0 for name, code in zip(compiled.names, compiled.codes, strict=True)
    }
    if compiled.group:
        out[compiled.group[0]] = []
    if compiled.tail:
        out[compiled.tail] = b""
    return out


@dataclass
class FakeTap:
    """Answers as SPEC.md says a tap does, for what these tests need (messages.response builds every answer)."""

    address: int = ADDRESS
    key: bytes = KEY
    epoch: int = EPOCH
    last_counter: int = 0
    active: int = 1
    calibration: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # (kind, index): (gain, offset)
    rankings: dict[int, dict[str, int]] = field(default_factory=dict)  # for_input: SET_ALTERNATES's fields
    executed: list[str] = field(default_factory=list)
    cache: dict[tuple[int, int, bytes], Frame] = field(default_factory=dict)

    def answer(self, req: Frame) -> Frame | None:
        if req.dst not in (self.address, catalog.ADDR_BROADCAST):
            return None
        if not messages.MESSAGES[req.type].authenticated:
            return self.execute(req)
        assert req.auth is not None
        name = (req.auth.epoch, req.seq, req.auth.tag)
        if name in self.cache:
            cached = self.cache[name]
            return messages.sign(replace(cached, flags=cached.flags | catalog.FLAG_CACHED), *self.signer(cached, req))
        if not messages.verify(req, self.key):
            return self.nak(req, catalog.E_BAD_TAG, 0)  # unsigned, as the firmware does
        if req.auth.epoch < self.epoch:
            return self.sign(req, self.nak(req, catalog.E_STALE_EPOCH, self.epoch))
        if req.auth.counter <= self.last_counter:
            return self.sign(req, self.nak(req, catalog.E_REPLAY, self.last_counter))
        self.last_counter = req.auth.counter
        answer = self.sign(req, self.execute(req))
        self.cache[name] = answer
        return answer

    def execute(self, req: Frame) -> Frame:
        name = req.name
        fields = req.fields()
        self.executed.append(name)
        if name == "SWITCH":
            if fields["expected_input"] != self.active:
                return self.nak(req, catalog.E_CAS_MISMATCH, self.active)
            self.active = fields["target_input"]
        elif name == "SET_KEY":
            assert req.auth is not None
            new_key = auth.unwrap_key(self.key, fields["wrapped_key"], req.auth.counter)
            if auth.key_check(new_key) != fields["key_check"]:
                return self.nak(req, catalog.E_BAD_TAG, 0)
            self.key = new_key
        elif name == "RAISE_EPOCH":
            self.epoch = fields["new_epoch"]
        elif name == "ASSIGN_ADDRESS":
            self.address = fields["address"]
        elif name == "SET_CALIBRATION":
            if not catalog.CAL_GAIN_MIN_PPM <= fields["gain_ppm"] <= catalog.CAL_GAIN_MAX_PPM:
                return self.nak(req, catalog.E_OUT_OF_RANGE, 3)
            self.calibration[fields["kind"], fields["index"]] = (fields["gain_ppm"], fields["offset_counts"])
        elif name == "SET_ALTERNATES":
            self.rankings[fields["for_input"]] = dict(fields)
        elif name == "READ_ALTERNATES":
            ranking = self.rankings.get(fields["for_input"], {"for_input": fields["for_input"]})
            return messages.response(req, self.address, name, zero_fields(messages.MESSAGES[req.type].response)
                                     | ranking)
        elif name == "CAPTURE_INFO" and fields["capture_id"] != 7:
            return self.nak(req, catalog.E_NO_CAPTURE, 7)
        message = messages.MESSAGES[req.type]
        if message.response is None:
            return messages.response(req, self.address, "ACK", {"request_type": req.type})
        values = zero_fields(message.response) | self.data(name)
        return messages.response(req, self.address, name, values)

    def data(self, name: str) -> dict[str, Any]:
        if name == "IDENTIFY":
            return {
                "unique_id": UID,
                "board": b"sim",
                "firmware_minor": 1,
                "protocol_major": 1,
                "n_inputs": 2,
                "address": self.address,
                "epoch": self.epoch,
                "auth_counter": self.last_counter,
            }
        if name == "STATUS":
            return {"active_input": self.active, "epoch": self.epoch, "auth_counter": self.last_counter}
        if name == "READ_SETTINGS":
            channels = []
            for kind, index in ((catalog.CHANNEL_INPUT_VOLTAGE, 1), (catalog.CHANNEL_INPUT_VOLTAGE, 2),
                                (catalog.CHANNEL_OUTPUT_CURRENT, 0)):
                gain, offset = self.calibration.get((kind, index), (catalog.CAL_GAIN_NOMINAL_PPM, 0))
                state = catalog.CAL_SET if (kind, index) in self.calibration else 0
                channels.append(
                    {"kind": kind, "index": index, "gain_ppm": gain, "offset_counts": offset, "state": state}
                )
            return {"curve": 1, "pickup_mA": 32_000, "tms_milli": 100, "n_channels": 3, "channels": channels}
        if name == "TELEMETRY":
            inputs = [{"voltage_mV": 230_000, "frequency_cHz": 5000, "thd_dpct": 9, "phase_cdeg": 0, "state": 3}] * 2
            return {
                "active_input": self.active,
                "relays_closed": 1 << (self.active - 1),
                "n_inputs": 2,
                "inputs": inputs,
            }
        return {}

    def nak(self, req: Frame, error: int, detail: int) -> Frame:
        return messages.response(req, self.address, "NAK", {"request_type": req.type, "error": error, "detail": detail})

    def sign(self, req: Frame, answer: Frame) -> Frame:
        assert req.auth is not None
        return messages.sign(answer, self.key, req.auth.epoch, req.auth.counter)

    def signer(self, cached: Frame, req: Frame) -> tuple[bytes, int, int]:
        assert cached.auth is not None
        return self.key, cached.auth.epoch, cached.auth.counter


class FakeLink:
    """A link to one FakeTap that can lose requests or answers, tamper with answers, or fail."""

    def __init__(self, tap: FakeTap, log: list[tuple[str, int]] | None = None) -> None:
        self.tap = tap
        self.sent: list[bytes] = []
        self.broadcasts: list[bytes] = []
        self.log = log if log is not None else []
        self.lose_requests = 0
        self.lose_answers = 0  # lost after the tap acted
        self.errors = 0  # exchanges that raise TransportError
        self.tamper: Callable[[Frame], Frame] | None = None
        self.tamper_count = 10**9

    def exchange(self, frame: bytes, timeout: float | None = None) -> bytes | None:
        self.sent.append(frame)
        verdict, body = framing.decode_frame(frame[:-1])
        assert verdict is framing.Verdict.GOOD and body is not None
        request = messages.parse_body(body)
        self.log.append(("send", request.auth.counter if request.auth else -1))
        if self.errors:
            self.errors -= 1
            raise TransportError("adapter unplugged")
        if self.lose_requests:
            self.lose_requests -= 1
            return None
        answer = self.tap.answer(request)
        if answer is None:
            return None
        if self.lose_answers:
            self.lose_answers -= 1
            return None
        if self.tamper is not None and self.tamper_count > 0:
            self.tamper_count -= 1
            answer = self.tamper(answer)
        return answer.to_body()

    def broadcast(self, frame: bytes) -> list[str]:
        self.broadcasts.append(frame)
        return ["A", "B"]


class RecordingKeys(MemoryKeys):
    def __init__(self, log: list[tuple[str, int]], **kw: Any) -> None:
        super().__init__({ADDRESS: KEY, 42: KEY}, **kw)
        self.log = log

    def commit(self, address: int, counter: int) -> None:
        self.log.append(("commit", counter))
        super().commit(address, counter)


def make(tap: FakeTap | None = None, **client: Any) -> tuple[TapClient, FakeLink, RecordingKeys]:
    log: list[tuple[str, int]] = []
    link = FakeLink(tap or FakeTap(), log)
    keys = RecordingKeys(log)
    return TapClient(link, keys, epoch=EPOCH, first_seq=100, **client), link, keys


# -- typed results ---------------------------------------------------------------------------


def test_reads_return_typed_results() -> None:
    client, _, _ = make()
    ident = client.identify(ADDRESS)
    assert isinstance(ident, Identity)
    assert (ident.unique_id, ident.board, ident.firmware, ident.address) == (UID, "sim", "0.1.0", ADDRESS)
    assert (ident.epoch, ident.n_inputs, ident.src) == (EPOCH, 2, ADDRESS)
    status = client.status(ADDRESS)
    assert isinstance(status, Status) and status.active_input == 1 and status.epoch == EPOCH
    assert status.host_silent_s == 0 and status["alternate_1"] == 0  # every catalogue field, by name
    with pytest.raises(AttributeError):
        _ = status.no_such_field
    telemetry = client.telemetry(ADDRESS)
    assert isinstance(telemetry, Telemetry) and telemetry.inputs[1]["voltage_mV"] == 230_000


CALLS: dict[str, Callable[[TapClient], Reply]] = {
    "IDENTIFY": lambda c: c.identify(ADDRESS),
    "ASSIGN_ADDRESS": lambda c: c.assign_address(UID, 42),
    "TELEMETRY": lambda c: c.telemetry(ADDRESS),
    "STATUS": lambda c: c.status(ADDRESS),
    "SWITCH": lambda c: c.switch(ADDRESS, 1, 2),
    "SET_ALTERNATES": lambda c: c.set_alternates(ADDRESS, 1, [2]),
    "SET_LIMITS": lambda c: c.set_limits(
        ADDRESS,
        {
            "curve": 1,
            "pickup_mA": 16000,
            "tms_milli": 100,
            "instantaneous_mA": 80000,
            "undervoltage_mV": 200000,
            "overvoltage_mV": 260000,
            "frequency_low_cHz": 4800,
            "frequency_high_cHz": 5200,
            "thd_max_dpct": 80,
        },
    ),
    "SET_KEY": lambda c: c.set_key(ADDRESS, bytes(range(1, 33))),
    "SET_CALIBRATION": lambda c: c.set_calibration(ADDRESS, catalog.CHANNEL_INPUT_VOLTAGE, 1, 1_020_000, -2),
    "READ_SETTINGS": lambda c: c.read_settings(ADDRESS),
    "READ_ALTERNATES": lambda c: c.read_alternates(ADDRESS, 2),
    "RAISE_EPOCH": lambda c: (setattr(c, "epoch", EPOCH + 1), c.raise_epoch(ADDRESS))[1],
    "RESET": lambda c: c.reset(ADDRESS),
    "READ_EVENTS": lambda c: c.read_events(ADDRESS, since=0, max_count=5),
    "CAPTURE_START": lambda c: c.capture_start(ADDRESS, 7, cycles=4),
    "CAPTURE_INFO": lambda c: c.capture_info(ADDRESS, 7),
    "CAPTURE_READ": lambda c: c.capture_read(ADDRESS, 7, 0, 100),
    "HEALTH": lambda c: c.health(ADDRESS),
    "HEARTBEAT": lambda c: c.heartbeat(ADDRESS),
}


def test_every_request_of_the_catalogue_has_a_call() -> None:
    requests = {m.name for m in messages.MESSAGES.values() if m.request is not None}
    assert set(CALLS) | {"DISCOVER"} == requests  # DISCOVER: `discover`/`scan`, tested below


@pytest.mark.parametrize("name", sorted(CALLS))
def test_each_call_sends_its_message_and_returns_a_reply(name: str) -> None:
    tap = FakeTap(address=catalog.ADDR_UNASSIGNED if name == "ASSIGN_ADDRESS" else ADDRESS)
    client, link, _ = make(tap)
    reply = CALLS[name](client)
    assert isinstance(reply, Reply) and reply.request == name and not reply.cached
    sent = messages.parse_body(framing.decode_frame(link.sent[-1][:-1])[1] or b"")
    assert sent.name == name and len(link.sent) == 1
    assert (sent.auth is not None) == messages.message_named(name).authenticated
    if messages.message_named(name).response is None:
        assert reply.request_type == sent.type  # an ACK


def test_alternates_are_set_signed_and_read_back_typed() -> None:
    tap = FakeTap()
    client, _, _ = make(tap)
    assert client.read_alternates(ADDRESS, 2).alternates == []
    client.set_alternates(ADDRESS, 2, [1])
    ranking = client.read_alternates(ADDRESS, 2)
    assert isinstance(ranking, Ranking) and ranking.for_input == 2 and ranking.alternates == [1]
    assert tap.executed[-1] == "READ_ALTERNATES" and not messages.message_named("READ_ALTERNATES").authenticated


def test_calibration_is_set_signed_and_read_back_typed() -> None:
    client, link, _ = make()
    before = client.read_settings(ADDRESS)
    assert isinstance(before, Settings)
    assert before.limits["pickup_mA"] == 32_000 and set(before.limits) == {
        "curve", "pickup_mA", "tms_milli", "instantaneous_mA", "undervoltage_mV", "overvoltage_mV",
        "frequency_low_cHz", "frequency_high_cHz", "thd_max_dpct"}
    assert before.channel(catalog.CHANNEL_OUTPUT_CURRENT, 0)["gain_ppm"] == catalog.CAL_GAIN_NOMINAL_PPM
    ack = client.set_calibration(ADDRESS, catalog.CHANNEL_OUTPUT_CURRENT, 0, 1_031_000, 5)
    assert ack.request_type == catalog.T_SET_CALIBRATION
    sent = messages.parse_body(framing.decode_frame(link.sent[-1][:-1])[1] or b"")
    assert sent.auth is not None and sent.fields() == {
        "kind": catalog.CHANNEL_OUTPUT_CURRENT, "index": 0, "gain_ppm": 1_031_000, "offset_counts": 5}
    after = client.read_settings(ADDRESS).channel(catalog.CHANNEL_OUTPUT_CURRENT, 0)
    assert after == {"kind": catalog.CHANNEL_OUTPUT_CURRENT, "index": 0, "gain_ppm": 1_031_000, "offset_counts": 5,
                     "state": catalog.CAL_SET}
    with pytest.raises(TapRefused) as refused:
        client.set_calibration(ADDRESS, catalog.CHANNEL_INPUT_VOLTAGE, 1, 1_200_000)
    assert (refused.value.code, refused.value.detail) == (catalog.E_OUT_OF_RANGE, 3) and refused.value.verified
    with pytest.raises(KeyError):
        client.read_settings(ADDRESS).channel(catalog.CHANNEL_INPUT_VOLTAGE, 3)


def test_assign_address_is_broadcast_and_answered_from_the_new_address() -> None:
    client, link, _ = make(FakeTap(address=catalog.ADDR_UNASSIGNED))
    reply = client.assign_address(UID, 42)
    sent = messages.parse_body(framing.decode_frame(link.sent[0][:-1])[1] or b"")
    assert sent.dst == catalog.ADDR_BROADCAST and reply.src == 42


def test_set_key_stores_the_new_key_once_the_tap_proves_it() -> None:
    client, link, keys = make()
    new_key = bytes(range(100, 132))
    client.set_key(ADDRESS, new_key)
    assert link.tap.key == new_key and keys.keys[ADDRESS] == new_key
    assert client.switch(ADDRESS, 1, 2).request == "SWITCH"  # signed with the new key now


def test_broadcast_heartbeat_goes_out_on_every_bus_unanswered() -> None:
    client, link, _ = make()
    client.broadcast_heartbeat()
    frame = messages.parse_body(framing.decode_frame(link.broadcasts[0][:-1])[1] or b"")
    assert frame.dst == catalog.ADDR_BROADCAST and frame.fields() == {"epoch": EPOCH} and link.sent == []


# -- refusals ----------------------------------------------------------------------------------


def test_a_nak_raises_tap_refused_with_its_text() -> None:
    client, _, _ = make()
    with pytest.raises(TapRefused) as refused:
        client.switch(ADDRESS, expected_input=2, target_input=1)
    assert (refused.value.code, refused.value.detail, refused.value.name) == (catalog.E_CAS_MISMATCH, 1, "CAS_MISMATCH")
    assert refused.value.text == "SWITCH refused: CAS_MISMATCH (detail 1)"
    assert refused.value.verified and not refused.value.outcome_unknown and refused.value.address == ADDRESS
    with pytest.raises(TapRefused, match="CAPTURE_INFO refused: NO_CAPTURE"):
        client.capture_info(ADDRESS, 8)


def test_an_unsigned_bad_tag_is_reported_unverified_without_resending() -> None:
    client, link, _ = make(FakeTap(key=bytes(32)))  # the tap has another key: BAD_TAG, unsigned
    with pytest.raises(TapRefused) as refused:
        client.switch(ADDRESS, 1, 2)
    assert refused.value.code == catalog.E_BAD_TAG and not refused.value.verified and refused.value.outcome_unknown
    # a resend of the same bytes would get the same refusal and count towards the tap's flood pause
    assert len(link.sent) == 1 and client.stats.unverified == 1


def test_stale_epoch_fences_the_client_out() -> None:
    client, link, _ = make(FakeTap(epoch=EPOCH + 1))
    with pytest.raises(FencedOut):
        client.switch(ADDRESS, 1, 2)
    assert client.fenced
    sent = len(link.sent)
    with pytest.raises(FencedOut):
        client.reset(ADDRESS)
    assert len(link.sent) == sent  # nothing more is signed or sent
    assert client.status(ADDRESS).epoch == EPOCH + 1  # reads still work


def test_replay_catches_the_counter_up_without_resending() -> None:
    client, link, keys = make(FakeTap(last_counter=500))
    with pytest.raises(TapRefused) as refused:
        client.switch(ADDRESS, 1, 2)
    assert refused.value.code == catalog.E_REPLAY and refused.value.detail == 500 and len(link.sent) == 1
    assert keys.last[ADDRESS] == 500
    assert client.switch(ADDRESS, 1, 2).request == "SWITCH" and link.tap.last_counter == 501


def test_sync_counter_continues_above_the_tap() -> None:
    client, _, keys = make(FakeTap(last_counter=77))
    assert client.sync_counter(ADDRESS) == 77 and keys.credentials(ADDRESS)[1] == 78


# -- retries -------------------------------------------------------------------------------------


def test_silence_is_retried_with_the_same_bytes_a_bounded_number_of_times() -> None:
    client, link, keys = make()
    link.lose_requests = 99
    with pytest.raises(TapTimeout, match="no answer to SWITCH after 3 attempts"):
        client.switch(ADDRESS, 1, 2)
    assert len(link.sent) == 1 + catalog.MAX_RETRIES and len(set(link.sent)) == 1
    assert keys.log.count(("commit", 1)) == 1 and link.tap.executed == []
    assert (client.stats.attempts, client.stats.retries, client.stats.timeouts) == (3, 2, 1)


def test_a_lost_answer_is_retried_and_answered_from_the_cache_not_executed_twice() -> None:
    client, link, keys = make()
    link.lose_answers = 2
    reply = client.switch(ADDRESS, 1, 2)
    assert reply.cached and link.tap.active == 2 and link.tap.executed == ["SWITCH"]
    assert len(link.sent) == 3 and len(set(link.sent)) == 1
    assert [entry for entry in keys.log if entry[0] == "commit"] == [("commit", 1)]


def test_a_transport_error_is_retried_too() -> None:
    client, link, _ = make()
    link.errors = 2
    assert client.identify(ADDRESS).unique_id == UID and client.stats.transport_errors == 2
    link.errors = 3
    with pytest.raises(TapTimeout, match="adapter unplugged"):
        client.identify(ADDRESS)


def test_counters_are_committed_before_sending_and_strictly_increase() -> None:
    client, _, keys = make()
    client.switch(ADDRESS, 1, 2)
    client.set_alternates(ADDRESS, 2, [1])
    client.switch(ADDRESS, 2, 1)
    log = [entry for entry in keys.log if entry[1] != -1]
    assert log == [("commit", 1), ("send", 1), ("commit", 2), ("send", 2), ("commit", 3), ("send", 3)]


def test_a_refused_frame_still_used_its_counter() -> None:
    client, _, keys = make()
    with pytest.raises(TapRefused):
        client.switch(ADDRESS, 2, 1)  # CAS mismatch
    client.switch(ADDRESS, 1, 2)
    assert [c for what, c in keys.log if what == "send"] == [1, 2]


def test_sequence_numbers_wrap_at_16_bits() -> None:
    client, _, _ = make()
    client._seq = 0xFFFE  # the next one is 0xFFFF
    seqs = [client.next_seq() for _ in range(3)]
    assert seqs == [0xFFFF, 0, 1]


# -- answers that are not accepted -------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda a: replace(a, seq=(a.seq + 1) & 0xFFFF), id="wrong-seq"),
        pytest.param(lambda a: replace(a, src=ADDRESS + 1), id="wrong-src"),
        pytest.param(lambda a: replace(a, dst=5), id="not-for-the-host"),
        pytest.param(lambda a: replace(a, flags=0), id="a-request-echo"),
        pytest.param(lambda a: replace(a, type=catalog.T_STATUS), id="wrong-type"),
        pytest.param(lambda a: replace(a, version=2), id="other-version"),
    ],
)
def test_an_answer_that_does_not_fit_is_dropped_and_the_request_retried(tamper: Callable[[Frame], Frame]) -> None:
    client, link, _ = make()
    link.tamper, link.tamper_count = tamper, 1
    assert client.identify(ADDRESS).unique_id == UID
    assert client.stats.dropped == 1 and len(link.sent) == 2 and len(set(link.sent)) == 1
    link.tamper_count = 99
    with pytest.raises(TapTimeout):
        client.identify(ADDRESS)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda a: replace(a, flags=a.flags & ~catalog.FLAG_AUTH, auth=None), id="unsigned"),
        pytest.param(lambda a: messages.sign(a, bytes(32), a.auth.epoch, a.auth.counter), id="other-key"),
        pytest.param(lambda a: messages.sign(a, KEY, a.auth.epoch, a.auth.counter + 1), id="other-counter"),
    ],
)
def test_an_ack_not_signed_by_the_tap_does_not_count(tamper: Callable[[Frame], Frame]) -> None:
    client, link, _ = make()
    link.tamper = tamper
    with pytest.raises(TapTimeout):
        client.switch(ADDRESS, 1, 2)
    assert client.stats.unverified == 3 and link.tap.executed == ["SWITCH"]  # executed once, cached since


def test_a_malformed_answer_is_a_protocol_error() -> None:
    client, link, _ = make()
    link.tamper = lambda a: replace(a, payload=a.payload[:-1])
    with pytest.raises(TapProtocolError, match="malformed answer to IDENTIFY"):
        client.identify(ADDRESS)
    link.tamper = lambda a: messages.response(a, ADDRESS, "ACK", {"request_type": catalog.T_IDENTIFY})
    with pytest.raises(TapProtocolError, match="ACK where IDENTIFY has a data answer"):
        client.identify(ADDRESS)
    link.tamper = lambda a: messages.response(a, ADDRESS, "ACK", {"request_type": catalog.T_RESET})
    with pytest.raises(TapProtocolError, match="names request 0x35"):
        client.identify(ADDRESS)


# -- discovery -----------------------------------------------------------------------------------


@dataclass
class Counters:
    bad_crc: int = 0
    bad_cobs: int = 0
    bad_other: int = 0


class SlottedBus:
    """One bus with unaddressed taps that answer DISCOVER in slots; a shared slot is a garbled frame."""

    def __init__(self, uids: list[bytes], noise: bool = False, deaf: dict[bytes, int] | None = None) -> None:
        self.uids = uids
        self.noise = noise
        self.deaf = dict(deaf or {})  # uid -> how many DISCOVERs that tap does not hear (noise on the request)
        self.counters = Counters()
        self.answers: list[bytes] = []
        self.rounds: list[dict[str, Any]] = []

    def send(self, frame: bytes) -> None:
        request = messages.parse_body(framing.decode_frame(frame[:-1])[1] or b"")
        f = request.fields()
        self.rounds.append(f)
        slots: dict[int, list[bytes]] = {}
        for uid in self.uids:
            if self.deaf.get(uid, 0) > 0 and f["uid_low"] <= uid <= f["uid_high"]:
                self.deaf[uid] -= 1
                continue
            if f["uid_low"] <= uid <= f["uid_high"]:
                slots.setdefault(binascii.crc32(uid + bytes([f["salt"]])) % f["slots"], []).append(uid)
        for slot, uids in sorted(slots.items()):
            if len(uids) > 1:
                self.counters.bad_crc += 1
                continue
            fields = {"unique_id": uids[0], "board": b"sim", "role": 0, "n_inputs": 2, "slot": slot}
            self.answers.append(messages.response(request, catalog.ADDR_UNASSIGNED, "DISCOVER", fields).to_body())
        self.answers.append(b"\x01\x00\x05\x21\x01\x00\x00")  # a stray frame: another seq, another type
        if self.noise:
            self.counters.bad_cobs += 1

    def receive(self, timeout: float) -> bytes | None:
        return self.answers.pop(0) if self.answers else None


def test_one_discover_round_reports_answers_and_collisions() -> None:
    uids = [bytes([i]) * 8 for i in range(1, 6)]  # five taps in four slots: at least one collision
    slots: dict[int, list[bytes]] = {}
    for uid in uids:
        slots.setdefault(binascii.crc32(uid + bytes([9])) % 4, []).append(uid)
    bus = SlottedBus(uids)
    found = discover(bus, slots=4, slot_ms=1, salt=9, seq=5, extra_s=0)
    assert set(found.found) == {group[0] for group in slots.values() if len(group) == 1}
    assert found.collisions == sum(len(group) > 1 for group in slots.values()) > 0 and found.stray == 1
    assert all(reply.src == catalog.ADDR_UNASSIGNED and reply.board == "sim" for reply in found.found.values())
    assert bus.rounds[0]["scope"] == 0 and bus.rounds[0]["slots"] == 4 and bus.rounds[0]["salt"] == 9


def test_scan_splits_colliding_ranges_until_every_tap_is_found() -> None:
    rng = random.Random(3)
    uids = [rng.randbytes(8) for _ in range(40)]
    bus = SlottedBus(uids)
    result = scan(bus, slots=8, slot_ms=1, rng=random.Random(1), extra_s=0)
    assert set(result.found) == set(uids) and result.unresolved == []
    assert result.rounds > 1 and all(found.unique_id == uid for uid, found in result.found.items())


def test_scan_of_an_empty_range_takes_two_silent_passes() -> None:
    bus = SlottedBus([])
    result = scan(bus, slots=4, slot_ms=1, extra_s=0)
    assert result.rounds == result.passes == 2 and result.found == {} and result.unresolved == []
    assert all((r["uid_low"], r["uid_high"]) == (bytes(8), b"\xff" * 8) for r in bus.rounds)  # the whole range


def test_scan_finds_a_tap_that_missed_the_first_discover_in_the_next_pass() -> None:
    uids = [bytes([1]) * 8, bytes([2]) * 8]
    bus = SlottedBus(uids, deaf={uids[1]: 1})
    result = scan(bus, slots=16, slot_ms=1, rng=random.Random(2), extra_s=0)
    assert set(result.found) == set(uids) and result.unresolved == []
    # each pass is one clean round: the first missed it, the second found it, the third found nobody new
    assert result.rounds == result.passes == 3 and bus.deaf[uids[1]] == 0


def test_scan_stops_after_a_pass_that_finds_nobody_new() -> None:
    uids = [bytes([1]) * 8, bytes([2]) * 8]
    bus = SlottedBus(uids, deaf={uids[1]: 5})
    result = scan(bus, slots=16, slot_ms=1, max_passes=3, rng=random.Random(4), extra_s=0)
    assert set(result.found) == {uids[0]} and result.passes == 2  # the second pass found nobody new
    assert bus.deaf[uids[1]] == 3


def test_scan_stops_at_max_passes_while_each_pass_finds_someone_new() -> None:
    uids = [bytes([1]) * 8, bytes([2]) * 8, bytes([3]) * 8]
    bus = SlottedBus(uids, deaf={uids[1]: 1, uids[2]: 2})  # found in the second and third pass
    result = scan(bus, slots=16, slot_ms=1, max_passes=2, rng=random.Random(4), extra_s=0)
    assert set(result.found) == {uids[0], uids[1]} and result.passes == 2 and result.unresolved == []


def test_each_pass_has_its_own_rounds_so_a_large_clean_bus_settles() -> None:
    rng = random.Random(7)
    uids = [rng.randbytes(8) for _ in range(200)]
    result = scan(SlottedBus(uids), slots=16, slot_ms=1, max_rounds=200, rng=random.Random(1), extra_s=0)
    assert set(result.found) == set(uids) and result.unresolved == [] and result.passes == 2
    assert result.rounds > 200  # more than one pass's worth of rounds in all


def test_scan_on_a_noisy_line_stops_after_max_rounds_and_says_what_is_left() -> None:
    result = scan(SlottedBus([bytes(8)], noise=True), slots=4, slot_ms=1, max_rounds=20, extra_s=0)
    assert result.rounds == 20 and result.unresolved and bytes(8) in result.found
