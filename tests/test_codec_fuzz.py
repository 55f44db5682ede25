"""Random and mutated byte streams through both decoders: the host's never raises, the
firmware's (compiled, on MicroPython with the board's heap) never crashes, both give
the same verdicts in the same order, and neither accepts a frame that was not sent.
Also: the firmware codec allocates nothing per frame in steady state."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from host.wire import framing
from protocol import catalog
from tests.conftest import json_lines

STREAMS_CI = 1500


def _random_body(rng: random.Random) -> bytes:
    # Every v1 body starts with the version byte 1 (see SPEC.md, "Limits of the CRC"
    # for what degenerate bodies of zeros can do); the rest is zero-rich or random.
    size = rng.choice([catalog.HEADER_LEN, 8, 20, 95, 253, 254, 255, rng.randint(7, catalog.MAX_BODY)]) - 1
    style = rng.random()
    if style < 0.2:
        rest = bytes(size)
    elif style < 0.4:
        rest = bytes(rng.randint(1, 255) for _ in range(size))
    else:
        rest = bytes(rng.choice([0, 0, rng.randint(0, 255)]) for _ in range(size))
    return bytes([catalog.VERSION]) + rest


def _mutate(rng: random.Random, wire: bytearray) -> bytearray:
    op = rng.randrange(7)
    i = rng.randrange(len(wire))
    if op == 0:
        wire[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        wire.insert(i, rng.choice([0, rng.randrange(256)]))
    elif op == 2:
        del wire[i]
    elif op == 3:
        del wire[i:]
    elif op == 4:
        wire[i:i] = wire[rng.randrange(len(wire)) :][: rng.randint(1, 40)]
    elif op == 5:
        wire[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
    else:
        wire[i] = 0
    return wire


def make_streams(seed: int, count: int) -> tuple[list[bytes], set[bytes]]:
    rng = random.Random(seed)
    streams, sent = [], set()
    for _ in range(count):
        stream = bytearray()
        for _ in range(rng.randint(1, 4)):
            body = _random_body(rng)
            sent.add(body)  # a mutation may leave the frame intact (a leading 0x00, say)
            frame = bytearray(framing.encode_frame(body))
            if rng.random() < 0.6:
                for _ in range(rng.randint(1, 3)):
                    if frame:
                        frame = _mutate(rng, frame)
            stream += frame
        streams.append(bytes(stream))
    return streams, sent


def _host_verdicts(wire: bytes) -> tuple[list[str], list[bytes]]:
    decoder = framing.StreamDecoder()
    classified = decoder.feed_classified(wire)
    return [v.value for v, _ in classified], [b for _, b in classified if b is not None]


def test_host_and_firmware_agree_on_mutated_streams(micropython, tmp_path: Path) -> None:
    streams, sent = make_streams(seed=20261126, count=STREAMS_CI)
    path = tmp_path / "streams.jsonl"
    path.write_text(
        json.dumps({"kind": "key", "key": "00" * 32})
        + "\n"
        + "".join(json.dumps({"kind": "stream", "name": str(i), "wire": s.hex()}) + "\n" for i, s in enumerate(streams))
    )
    results = json_lines(micropython("vector_runner.py", str(path)))
    assert len(results) == len(streams)
    accepted = 0
    for stream, result in zip(streams, results, strict=True):
        verdicts, bodies = _host_verdicts(stream)
        assert result["whole"] == verdicts, stream.hex()
        assert result["bytewise"] == verdicts and result["sevens"] == verdicts
        assert [bytes.fromhex(b) for b in result["bodies"]] == bodies
        for body in bodies:
            assert body in sent, "a frame was accepted that was never sent"
        accepted += len(bodies)
    assert accepted > STREAMS_CI // 2  # the streams do carry good frames among the damage


def test_firmware_codec_allocates_nothing_per_frame(micropython) -> None:
    (result,) = json_lines(micropython("alloc_check.py"))
    assert result["frames"] == 200 and result["good"] == 201
    assert result["bytes_per_frame"] == 0


@pytest.mark.slow
def test_long_fuzz_soak(micropython, tmp_path: Path) -> None:
    """The same differential run, 40 times longer (run with -m slow)."""
    for seed in range(40):
        streams, sent = make_streams(seed=seed, count=STREAMS_CI)
        path = tmp_path / f"streams{seed}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"kind": "stream", "name": str(i), "wire": s.hex()}) + "\n" for i, s in enumerate(streams)
            )
        )
        for stream, result in zip(streams, json_lines(micropython("vector_runner.py", str(path))), strict=True):
            verdicts, bodies = _host_verdicts(stream)
            assert result["whole"] == verdicts
            assert all(b in sent for b in bodies)
