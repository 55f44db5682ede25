# HMAC-SHA256 (RFC 2104) on MicroPython's hashlib, which has sha256 but no hmac.
# Used only for authenticated commands, which are rare: allocation here is fine.

import hashlib

from protocol import catalog

_BLOCK = 64


class Hmac:
    def __init__(self, key):
        self.set_key(key)

    def set_key(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        padded = bytearray(_BLOCK)
        padded[: len(key)] = key
        self._inner_pad = bytes(b ^ 0x36 for b in padded)
        self._outer_pad = bytes(b ^ 0x5C for b in padded)

    def digest(self, data):
        inner = hashlib.sha256(self._inner_pad)
        inner.update(data)
        outer = hashlib.sha256(self._outer_pad)
        outer.update(inner.digest())
        return outer.digest()

    def tag_ok(self, data, tag, tag_len):
        """Compare the first tag_len bytes in constant time."""
        expected = self.digest(data)
        if len(tag) != tag_len:
            return False
        diff = 0
        for i in range(tag_len):
            diff |= expected[i] ^ tag[i]
        return diff == 0


def unwrap_key(old, wrapped, counter):
    """The new key of a SET_KEY sent with `counter`, unwrapped with the old key's Hmac
    (SPEC.md, "Changing a key")."""
    label = catalog.KEY_WRAP_LABEL
    message = bytearray(len(label) + 4)
    message[: len(label)] = label
    for i in range(4):
        message[len(label) + i] = (counter >> (8 * i)) & 0xFF
    pad = old.digest(message)
    return bytes(wrapped[i] ^ pad[i] for i in range(catalog.KEY_LEN))


def key_check(key):
    """The 4 bytes that prove a key arrived intact."""
    return Hmac(key).digest(catalog.KEY_CHECK_LABEL)[:4]
