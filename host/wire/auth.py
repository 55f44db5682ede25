"""Authentication of commands (SPEC.md, "Authentication"): truncated HMAC-SHA256 tags
and the wrapping of a new key under the old one."""

from __future__ import annotations

import hashlib
import hmac

from protocol import catalog


def tag(key: bytes, signed: bytes) -> bytes:
    """The tag over `signed` (header, payload, epoch and counter)."""
    return hmac.new(key, signed, hashlib.sha256).digest()[: catalog.TAG_LEN]


def tag_ok(key: bytes, signed: bytes, received: bytes) -> bool:
    return hmac.compare_digest(tag(key, signed), received)


def wrap_key(old_key: bytes, new_key: bytes, counter: int) -> tuple[bytes, bytes]:
    """Return (wrapped_key, key_check) for SET_KEY sent with `counter`."""
    _check_key(old_key)
    _check_key(new_key)
    pad = _wrap_pad(old_key, counter)
    wrapped = bytes(a ^ b for a, b in zip(new_key, pad, strict=True))
    return wrapped, key_check(new_key)


def unwrap_key(old_key: bytes, wrapped: bytes, counter: int) -> bytes:
    pad = _wrap_pad(old_key, counter)
    return bytes(a ^ b for a, b in zip(wrapped, pad, strict=True))


def key_check(key: bytes) -> bytes:
    return hmac.new(key, catalog.KEY_CHECK_LABEL, hashlib.sha256).digest()[:4]


def _wrap_pad(key: bytes, counter: int) -> bytes:
    return hmac.new(key, catalog.KEY_WRAP_LABEL + counter.to_bytes(4, "little"), hashlib.sha256).digest()


def _check_key(key: bytes) -> None:
    if len(key) != catalog.KEY_LEN:
        raise ValueError(f"a tap key is {catalog.KEY_LEN} bytes, not {len(key)}")
