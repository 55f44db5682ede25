"""Frames made readable: decode wire bytes into verdicts, headers and fields, and
parse `field=value` arguments into a message's fields. The CLI is a skin over this."""

from __future__ import annotations

from typing import Any

from host.wire import framing, messages
from protocol import catalog


def describe_wire(wire: bytes, key: bytes | None = None) -> list[dict[str, Any]]:
    """One entry per delimited frame in `wire`, good or bad, in order."""
    decoder = framing.StreamDecoder()
    entries: list[dict[str, Any]] = []
    for verdict, body in decoder.feed_classified(wire + b"\x00"):
        if body is None:
            entries.append({"verdict": verdict.value})
            continue
        entry = describe_body(body)
        if key is not None and "auth" in entry:
            entry["auth"]["tag_ok"] = messages.verify(messages.parse_body(body), key)
        entries.append(entry)
    return entries


def describe_body(body: bytes) -> dict[str, Any]:
    try:
        frame = messages.parse_body(body)
        fields = jsonable(frame.fields())
    except messages.ProtocolError as exc:
        return {"verdict": "good", "error": messages.ERROR_NAMES[exc.code], "detail": str(exc), "body": body.hex()}
    entry: dict[str, Any] = {
        "verdict": "good",
        "message": frame.name,
        "direction": "response" if frame.is_response else "request",
        "dst": frame.dst,
        "src": frame.src,
        "seq": frame.seq,
        "flags": frame.flags,
        "fields": fields,
    }
    if frame.auth is not None:
        entry["auth"] = {"epoch": frame.auth.epoch, "counter": frame.auth.counter, "tag": frame.auth.tag.hex()}
    if frame.type == catalog.T_NAK and frame.is_response:
        entry["refusal"] = messages.describe_nak(frame.fields())
    return entry


def parse_assignments(message_name: str, assignments: tuple[str, ...], response: bool) -> dict[str, Any]:
    """Turn ('target_input=2', 'unique_id=e661...') into typed fields of the message."""
    message = messages.message_named(message_name)
    compiled = message.response if response else message.request
    if compiled is None:
        raise messages.ProtocolError(f"{message.name} has no {'response' if response else 'request'} layout")
    codes = dict(zip(compiled.names, compiled.codes, strict=True))
    fields: dict[str, Any] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep:
            raise messages.ProtocolError(f"{item!r}: write field=value")
        if name not in codes:
            raise messages.ProtocolError(f"{message.name} has no field {name!r}; fields: {', '.join(compiled.names)}")
        try:
            fields[name] = bytes.fromhex(text) if codes[name].endswith("s") else int(text, 0)
        except ValueError:
            kind = "hex bytes" if codes[name].endswith("s") else "an integer"
            raise messages.ProtocolError(f"{name}={text!r} is not {kind}") from None
    return fields


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def catalogue() -> list[dict[str, Any]]:
    return [
        {
            "type": m.type,
            "name": m.name,
            "authenticated": m.authenticated,
            "request": None if m.request is None else list(m.request.names),
            "response": None if m.response is None else list(m.response.names),
        }
        for m in sorted(messages.MESSAGES.values(), key=lambda m: m.type)
    ]
