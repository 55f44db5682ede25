"""SET_KEY's key wrapping: the host wraps, the firmware (on MicroPython) unwraps the
same key and computes the same check value; a wrong old key gives another key."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from host.wire import auth
from tests.conftest import json_lines


def test_firmware_unwraps_what_the_host_wraps(micropython, tmp_path: Path) -> None:
    rng = random.Random(7)
    cases = []
    for counter in (1, 255, 256, 0x01020304, 0xFFFFFFFF):
        old, new = rng.randbytes(32), rng.randbytes(32)
        wrapped, check = auth.wrap_key(old, new, counter)
        cases.append(
            {"old": old.hex(), "new": new.hex(), "wrapped": wrapped.hex(), "check": check.hex(), "counter": counter}
        )
    path = tmp_path / "keys.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    results = json_lines(micropython("key_wrap.py", str(path)))
    assert [(r["new"], r["check"]) for r in results] == [(c["new"], c["check"]) for c in cases]


def test_wrapping_depends_on_old_key_and_counter() -> None:
    old, new = bytes(range(32)), bytes(range(32, 64))
    wrapped, check = auth.wrap_key(old, new, 5)
    assert auth.unwrap_key(old, wrapped, 5) == new
    assert auth.key_check(auth.unwrap_key(bytes(32), wrapped, 5)) != check
    assert auth.wrap_key(old, new, 6)[0] != wrapped


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        auth.wrap_key(b"short", bytes(32), 1)
