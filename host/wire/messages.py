"""Frames as data on the host: header, payload fields and auth trailer (SPEC.md).

Payload layouts come from protocol/catalog.py through protocol/layout.py, the same
code the firmware runs; this module adds the header, the trailer and validation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Any

from host.model.errors import LinkError
from host.wire import auth
from protocol import catalog, layout

MESSAGES: dict[int, layout.Message] = layout.load()
BY_NAME: dict[str, layout.Message] = {m.name: m for m in MESSAGES.values()}
ERROR_NAMES: dict[int, str] = dict(catalog.ERRORS)

_HEADER = struct.Struct(catalog.HEADER_FMT)
_TRAILER = struct.Struct(catalog.AUTH_FMT)


class ProtocolError(LinkError, ValueError):
    """A body that is not a well-formed v1 frame, or fields that do not fit a layout.

    `code` is the catalogue error code a tap would refuse the same frame with.
    """

    def __init__(self, message: str, code: int = catalog.E_BAD_LENGTH) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AuthTrailer:
    epoch: int
    counter: int
    tag: bytes


@dataclass(frozen=True)
class Frame:
    dst: int
    src: int
    type: int
    seq: int
    payload: bytes = b""
    flags: int = 0
    auth: AuthTrailer | None = None
    version: int = catalog.VERSION

    @property
    def is_response(self) -> bool:
        return bool(self.flags & catalog.FLAG_RESPONSE)

    @property
    def name(self) -> str:
        message = MESSAGES.get(self.type)
        return message.name if message else f"0x{self.type:02x}"

    def header(self) -> bytes:
        return _HEADER.pack(self.version, self.dst, self.src, self.type, self.flags, self.seq)

    def signed_part(self) -> bytes:
        """What the tag covers: header, payload, epoch and counter."""
        if self.auth is None:
            raise ProtocolError("frame has no auth trailer")
        return self.header() + self.payload + _TRAILER.pack(self.auth.epoch, self.auth.counter)

    def to_body(self) -> bytes:
        if self.auth is None:
            return self.header() + self.payload
        return self.signed_part() + self.auth.tag

    def fields(self) -> dict[str, Any]:
        """The payload decoded by the catalogue layout of this frame's type and direction."""
        message = MESSAGES.get(self.type)
        if message is None:
            raise ProtocolError(f"unknown message type 0x{self.type:02x}", catalog.E_UNKNOWN_TYPE)
        compiled = message.response if self.is_response else message.request
        if compiled is None:
            direction = "response" if self.is_response else "request"
            raise ProtocolError(f"{message.name} has no {direction} layout", catalog.E_UNKNOWN_TYPE)
        try:
            return compiled.unpack(self.payload, 0, len(self.payload))
        except layout.LayoutError as exc:
            raise ProtocolError(f"{message.name}: {exc}") from None


def parse_body(body: bytes) -> Frame:
    """Split a CRC-checked body into a Frame; ProtocolError if the header is not v1."""
    if len(body) < catalog.HEADER_LEN:
        raise ProtocolError(f"body of {len(body)} bytes is shorter than a header")
    version, dst, src, msg_type, flags, seq = _HEADER.unpack_from(body)
    if version != catalog.VERSION:
        raise ProtocolError(f"protocol version {version}, this side speaks {catalog.VERSION}", catalog.E_BAD_VERSION)
    if flags & ~catalog.FLAGS_KNOWN:
        raise ProtocolError(f"reserved flag bits set: 0x{flags:02x}", catalog.E_BAD_HEADER)
    end = len(body)
    trailer = None
    if flags & catalog.FLAG_AUTH:
        end -= catalog.AUTH_LEN
        if end < catalog.HEADER_LEN:
            raise ProtocolError("auth flag set but no room for the trailer")
        epoch, counter = _TRAILER.unpack_from(body, end)
        trailer = AuthTrailer(epoch, counter, bytes(body[end + 8 :]))
    return Frame(dst, src, msg_type, seq, bytes(body[catalog.HEADER_LEN : end]), flags, trailer, version)


def encode_payload(message: layout.Message, fields: dict[str, Any], response: bool) -> bytes:
    compiled = message.response if response else message.request
    if compiled is None:
        raise ProtocolError(f"{message.name} has no {'response' if response else 'request'} layout")
    unknown = set(fields) - set(compiled.names) - {compiled.group and compiled.group[0], compiled.tail}
    if unknown:
        raise ProtocolError(f"{message.name}: unknown fields {sorted(unknown)}")
    buf = bytearray(catalog.MAX_BODY)
    try:
        end = compiled.pack_into(fields, buf, 0)
    except (layout.LayoutError, KeyError, TypeError) as exc:
        raise ProtocolError(f"{message.name}: {exc}") from None
    return bytes(buf[:end])


def message_named(name: str) -> layout.Message:
    try:
        return BY_NAME[name.upper()]
    except KeyError:
        raise ProtocolError(f"no message named {name!r}; known: {', '.join(sorted(BY_NAME))}") from None


def request(
    dst: int,
    name: str,
    seq: int,
    fields: dict[str, Any] | None = None,
    *,
    key: bytes | None = None,
    epoch: int = 0,
    counter: int = 0,
) -> Frame:
    """Build a host request; authenticated messages need the tap's key and a fresh counter."""
    message = message_named(name)
    _check_addressing(message, dst)
    if not 0 <= seq <= 0xFFFF:
        raise ProtocolError(f"sequence number {seq} outside 0..65535")
    payload = encode_payload(message, fields or {}, response=False)
    frame = Frame(dst, catalog.ADDR_HOST, message.type, seq, payload)
    if message.authenticated:
        if key is None:
            raise ProtocolError(f"{message.name} moves state on the tap and needs the tap's key")
        frame = sign(frame, key, epoch, counter)
    return frame


def response(
    to: Frame,
    src: int,
    name: str,
    fields: dict[str, Any],
    *,
    key: bytes | None = None,
    cached: bool = False,
) -> Frame:
    """Build a tap's answer to `to`; a tap signs its answer to a signed request."""
    message = message_named(name)
    payload = encode_payload(message, fields, response=True)
    flags = catalog.FLAG_RESPONSE | (catalog.FLAG_CACHED if cached else 0)
    frame = Frame(catalog.ADDR_HOST, src, message.type, to.seq, payload, flags)
    if to.auth is not None and key is not None:
        frame = sign(frame, key, to.auth.epoch, to.auth.counter)
    return frame


def sign(frame: Frame, key: bytes, epoch: int, counter: int) -> Frame:
    if not (0 <= epoch <= 0xFFFFFFFF and 0 <= counter <= 0xFFFFFFFF):
        raise ProtocolError("epoch and counter are 32-bit unsigned")
    unsigned = replace(frame, flags=frame.flags | catalog.FLAG_AUTH, auth=AuthTrailer(epoch, counter, b""))
    return replace(unsigned, auth=AuthTrailer(epoch, counter, auth.tag(key, unsigned.signed_part())))


def verify(frame: Frame, key: bytes) -> bool:
    """True if the frame carries a trailer whose tag is right for `key`."""
    return frame.auth is not None and auth.tag_ok(key, frame.signed_part(), frame.auth.tag)


def describe_nak(fields: dict[str, Any]) -> str:
    request_name = MESSAGES[fields["request_type"]].name if fields["request_type"] in MESSAGES else "?"
    return f"{request_name} refused: {ERROR_NAMES.get(fields['error'], fields['error'])} (detail {fields['detail']})"


def _check_addressing(message: layout.Message, dst: int) -> None:
    if dst == catalog.ADDR_BROADCAST:
        if not message.addressing & catalog.BROADCAST:
            raise ProtocolError(f"{message.name} cannot be broadcast")
    elif catalog.ADDR_TAP_MIN <= dst <= catalog.ADDR_TAP_MAX:
        if not message.addressing & catalog.UNICAST:
            raise ProtocolError(f"{message.name} is broadcast only")
    else:
        raise ProtocolError(f"destination {dst} is not a tap address (1..247) or broadcast (255)")
