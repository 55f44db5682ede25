"""Every golden vector through both codecs: the host's (cobs, crcmod) here, the
firmware's on the real MicroPython unix port, as compiled .mpy. Same bytes, same verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.wire import framing, messages
from host.wire.inspect_frames import jsonable
from tests import make_vectors
from tests.conftest import json_lines

VECTORS = json.loads(make_vectors.VECTORS.read_text())
KEY = bytes.fromhex(VECTORS["key"])
GOOD = VECTORS["good"]
STREAMS = VECTORS["streams"]
REQUESTS = VECTORS["requests"]


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert make_vectors.VECTORS.read_text() == make_vectors.render(), "run python -m tests.make_vectors and review"


def test_vectors_cover_every_message_type_and_enough_frames() -> None:
    assert len(GOOD) >= 30
    assert {v["message"] for v in GOOD} == set(messages.BY_NAME)


def test_crc_is_the_ieee_crc32() -> None:
    assert framing.crc32(b"123456789") == 0xCBF43926  # the check value of CRC-32/ISO-HDLC


@pytest.mark.parametrize("vector", GOOD, ids=[v["name"] for v in GOOD])
def test_host_codec_on_good_vectors(vector: dict) -> None:
    wire = bytes.fromhex(vector["wire"])
    decoder = framing.StreamDecoder()
    (body,) = decoder.feed(wire)
    assert body.hex() == vector["body"]
    assert framing.encode_frame(body) == wire
    frame = messages.parse_body(body)
    assert frame.to_body() == body
    assert jsonable(frame.fields()) == vector["fields"]
    assert {"dst": frame.dst, "src": frame.src, "type": frame.type, "flags": frame.flags, "seq": frame.seq} == vector[
        "header"
    ]
    if vector["auth"] is not None:
        assert messages.verify(frame, KEY)
        assert frame.auth is not None and frame.auth.tag.hex() == vector["auth"]["tag"]


@pytest.mark.parametrize("vector", STREAMS, ids=[v["name"] for v in STREAMS])
def test_host_stream_decoder_on_streams(vector: dict) -> None:
    wire = bytes.fromhex(vector["wire"])
    for chunk in (len(wire) or 1, 1, 7):
        decoder = framing.StreamDecoder()
        outcomes = [
            verdict.value
            for start in range(0, len(wire), chunk)
            for verdict, _ in decoder.feed_classified(wire[start : start + chunk])
        ]
        assert outcomes == vector["outcomes"], f"chunk {chunk}"


@pytest.mark.parametrize("vector", REQUESTS, ids=[v["name"] for v in REQUESTS])
def test_host_parser_and_tags_on_requests(vector: dict) -> None:
    body = bytes.fromhex(vector["body"])
    try:
        frame = messages.parse_body(body)
        frame.fields()
        verdict = "ok"
    except messages.ProtocolError as exc:
        verdict = messages.ERROR_NAMES[exc.code]
    assert verdict == vector["host"]
    if vector["tag_valid"] is not None:
        assert messages.verify(messages.parse_body(body), KEY) == vector["tag_valid"]


def _runner_input(tmp_path: Path) -> Path:
    lines = [{"kind": "key", "key": VECTORS["key"]}]
    lines += [{"kind": "good", **v} for v in GOOD]
    lines += [{"kind": "stream", **v} for v in STREAMS]
    lines += [{"kind": "request", **v} for v in REQUESTS]
    path = tmp_path / "vectors.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def firmware_results(micropython, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = micropython("vector_runner.py", str(_runner_input(tmp_path_factory.mktemp("vectors"))))
    return {r["name"]: r for r in json_lines(out)}


@pytest.mark.parametrize("vector", GOOD, ids=[v["name"] for v in GOOD])
def test_firmware_codec_on_good_vectors(vector: dict, firmware_results: dict[str, dict]) -> None:
    result = firmware_results[vector["name"]]
    assert result["outcomes"] == ["good"]
    assert result["body"] == vector["body"]
    assert result["wire"] == vector["wire"]
    assert result["header"] == vector["header"]
    assert result["fields"] == vector["fields"]
    if vector["auth"] is not None:
        assert result["tag_ok"] is True


@pytest.mark.parametrize("vector", STREAMS, ids=[v["name"] for v in STREAMS])
def test_firmware_decoder_on_streams(vector: dict, firmware_results: dict[str, dict]) -> None:
    result = firmware_results[vector["name"]]
    assert result["whole"] == vector["outcomes"]
    assert result["bytewise"] == vector["outcomes"]
    assert result["sevens"] == vector["outcomes"]


@pytest.mark.parametrize("vector", REQUESTS, ids=[v["name"] for v in REQUESTS])
def test_firmware_guard_on_requests(vector: dict, firmware_results: dict[str, dict]) -> None:
    result = firmware_results[vector["name"]]
    assert result["tap"] == vector["tap"]
    state = vector["tap_state"]
    if vector["tap"] != "admit":
        assert result["epoch_after"] == state["epoch"], "a refused frame changed the epoch"
    if vector["tap"] in ("ignore", "AUTH_REQUIRED", "BAD_TAG", "REPLAY", "STALE_EPOCH", "EPOCH_NOT_RAISED"):
        assert result["counter_after"] == state["counter"], "a refused frame consumed a counter"
    if vector["detail"] is not None:
        assert result["detail"] == vector["detail"], "the NAK's detail differs from the error table"
