"""The inventory's JSON columns: bytes (unique ids, wrapped keys) kept as {"$bytes": hex}
so that they load back as bytes."""

from __future__ import annotations

import json
from typing import Any


def dump(value: dict[str, Any]) -> str:
    """JSON, with bytes (unique ids, wrapped keys) kept as {"$bytes": hex} so they load back as bytes."""
    return json.dumps(value, sort_keys=True, default=_encode)


def _encode(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in the inventory")


def load(text: str) -> dict[str, Any]:
    return dict(json.loads(text, object_hook=_decode))


def _decode(value: dict[str, Any]) -> Any:
    return bytes.fromhex(value["$bytes"]) if set(value) == {"$bytes"} else value
