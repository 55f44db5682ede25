# Building the tap's answers in place, in the encoder's body buffer (SPEC.md,
# "Header", "ACK and NAK", "Authentication").

from micropython import const

from protocol import catalog

_HEADER_LEN = const(7)  # = catalog.HEADER_LEN
_TAG_LEN = const(16)  # = catalog.TAG_LEN


def header(buf, src, msg_type, flags, seq):
    """Write a response header to the host; return the payload offset."""
    buf[0] = catalog.VERSION
    buf[1] = catalog.ADDR_HOST
    buf[2] = src
    buf[3] = msg_type
    buf[4] = flags | catalog.FLAG_RESPONSE
    buf[5] = seq & 0xFF
    buf[6] = seq >> 8
    return _HEADER_LEN


def ack(buf, src, seq, request_type):
    n = header(buf, src, catalog.T_ACK, 0, seq)
    buf[n] = request_type
    return n + 1


def nak(buf, src, seq, request_type, error, detail):
    n = header(buf, src, catalog.T_NAK, 0, seq)
    buf[n] = request_type
    buf[n + 1] = error
    _put_u32(buf, n + 2, detail)
    return n + 6


def sign(buf, n, hmac, epoch, counter):
    """Append the auth trailer answering a signed request; return the new length."""
    buf[4] |= catalog.FLAG_AUTH
    _put_u32(buf, n, epoch)
    _put_u32(buf, n + 4, counter)
    return _tag_into(buf, n + 8, hmac)


def mark_cached(buf, n, hmac):
    """Flag a cached answer as replayed; its tag covers the flags, so sign it again."""
    buf[4] |= catalog.FLAG_CACHED
    if buf[4] & catalog.FLAG_AUTH:
        _tag_into(buf, n - _TAG_LEN, hmac)


def _tag_into(buf, signed_len, hmac):
    digest = hmac.digest(memoryview(buf)[:signed_len])
    for i in range(_TAG_LEN):
        buf[signed_len + i] = digest[i]
    return signed_len + _TAG_LEN


def _put_u32(buf, at, value):
    buf[at] = value & 0xFF
    buf[at + 1] = (value >> 8) & 0xFF
    buf[at + 2] = (value >> 16) & 0xFF
    buf[at + 3] = (value >> 24) & 0xFF
