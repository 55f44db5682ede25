"""The firmware guard on MicroPython, over a sequence of requests as a tap sees them:
retries answered from the cache and never executed twice, replays and stale epochs
refused without changing anything, answers byte-identical to the host's model."""

from __future__ import annotations

import json
from pathlib import Path

from host.wire import messages
from protocol import catalog
from tests.conftest import json_lines

KEY = bytes(range(32))
UID = bytes.fromhex("e6614104037a5c2b")
TAP = 17


def _signed(name: str, fields: dict, seq: int, counter: int, epoch: int = 3) -> messages.Frame:
    return messages.request(TAP, name, seq, fields, key=KEY, epoch=epoch, counter=counter)


def _run(micropython, tmp_path: Path, steps: list[dict]) -> list[dict]:
    setup = {"key": KEY.hex(), "unique_id": UID.hex(), "address": TAP, "epoch": 3, "counter": 50}
    path = tmp_path / "steps.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in [setup, *steps]))
    return json_lines(micropython("guard_sequence.py", str(path)))


def test_retries_duplicates_epochs_and_replays(micropython, tmp_path: Path) -> None:
    switch = _signed("SWITCH", {"expected_input": 1, "target_input": 2}, seq=20, counter=51)
    reused_seq = _signed("SWITCH", {"expected_input": 1, "target_input": 2}, seq=20, counter=52)
    replayed_counter = _signed("SWITCH", {"expected_input": 2, "target_input": 1}, seq=21, counter=52)
    raise_epoch = _signed("RAISE_EPOCH", {"new_epoch": 4}, seq=22, counter=53, epoch=4)
    stale = _signed("SWITCH", {"expected_input": 2, "target_input": 1}, seq=23, counter=54, epoch=3)
    newer = [
        _signed(
            "SET_ALTERNATES",
            {"for_input": 2, "alternate_1": 1, "alternate_2": 0, "alternate_3": 0},
            seq=30 + i,
            counter=55 + i,
            epoch=4,
        )
        for i in range(4)
    ]
    forged = messages.request(
        TAP, "SWITCH", 40, {"expected_input": 2, "target_input": 1}, key=bytes(32), epoch=4, counter=99
    )

    def beat(epoch: int) -> dict:
        return {"body": messages.request(TAP, "HEARTBEAT", 50, {"epoch": epoch}).to_body().hex(), "heartbeat": epoch}

    steps = [
        {"body": switch.to_body().hex()},
        {"body": switch.to_body().hex()},  # retry, maybe on the other bus
        {"body": reused_seq.to_body().hex()},  # a restarted host reusing seq 20
        {"body": replayed_counter.to_body().hex()},
        {"body": raise_epoch.to_body().hex()},
        {"body": stale.to_body().hex()},
        beat(5),
        beat(4),
        beat(3),
        *({"body": f.to_body().hex()} for f in newer),
        {"body": raise_epoch.to_body().hex()},  # its cache entry has been pushed out
        {"body": newer[-1].to_body().hex()},  # the latest one is still cached
        {"body": forged.to_body().hex()},
        # replayed old frames, each refused: none of them evicts the latest answer
        *({"body": f.to_body().hex()} for f in (switch, reused_seq, replayed_counter, stale)),
        {"body": newer[-1].to_body().hex()},
    ]
    results = _run(micropython, tmp_path, steps)
    verdicts = [(r["verdict"], r["epoch"], r["counter"]) for r in results]
    assert verdicts == [
        ("admit", 3, 51),
        ("cached", 3, 51),
        ("admit", 3, 52),
        ("REPLAY", 3, 52),
        ("admit", 4, 53),
        ("STALE_EPOCH", 4, 53),
        ("EPOCH_NOT_RAISED", 4, 53),
        ("admit", 4, 53),
        ("STALE_EPOCH", 4, 53),
        ("admit", 4, 55),
        ("admit", 4, 56),
        ("admit", 4, 57),
        ("admit", 4, 58),
        ("STALE_EPOCH", 4, 58),
        ("cached", 4, 58),
        ("BAD_TAG", 4, 58),
        ("STALE_EPOCH", 4, 58),
        ("STALE_EPOCH", 4, 58),
        ("STALE_EPOCH", 4, 58),
        ("STALE_EPOCH", 4, 58),
        ("cached", 4, 58),
    ]
    assert results[3]["detail"] == 52 and results[5]["detail"] == 4

    # The tap's answers are the frames the host's model builds, signed with the tap's key.
    ack = messages.response(switch, TAP, "ACK", {"request_type": catalog.T_SWITCH}, key=KEY)
    assert results[0]["answer"] == ack.to_body().hex()
    cached = messages.response(switch, TAP, "ACK", {"request_type": catalog.T_SWITCH}, key=KEY, cached=True)
    assert results[1]["answer"] == cached.to_body().hex()
    assert messages.verify(messages.parse_body(bytes.fromhex(results[1]["answer"])), KEY)
    refusal = messages.parse_body(bytes.fromhex(results[3]["answer"]))
    assert refusal.fields() == {"request_type": catalog.T_SWITCH, "error": catalog.E_REPLAY, "detail": 52}
    assert messages.verify(refusal, KEY)
