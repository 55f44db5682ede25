# HMAC-SHA256 (RFC 2104) on MicroPython's hashlib, which has sha256 but no hmac.
# Used only for authenticated commands, which are rare: allocation here is fine.

import hashlib

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
