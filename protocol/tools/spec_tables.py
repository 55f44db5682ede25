"""Renders the message tables of SPEC.md from catalog.py, so a layout is written once.

`python -m protocol.tools.spec_tables` rewrites the part of SPEC.md between the markers;
tests/test_spec.py fails while SPEC.md and the catalogue disagree. CPython only.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from protocol import catalog

SPEC = Path(__file__).resolve().parent.parent / "SPEC.md"
BEGIN = "<!-- BEGIN GENERATED MESSAGE TABLES: python -m protocol.tools.spec_tables -->"
END = "<!-- END GENERATED MESSAGE TABLES -->"
_TYPES = {"B": "u8", "b": "i8", "H": "u16", "h": "i16", "I": "u32", "i": "i32"}


def _type_name(code: str) -> str:
    return _TYPES.get(code) or f"bytes[{code[:-1]}]"


def _rows(fields: tuple, offset: int, prefix: str = "", sign: str = "") -> tuple[list[str], int]:
    rows = []
    for field in fields:
        name, code = field[0], field[1]
        if code == catalog.GROUP:
            element_size = struct.calcsize("<" + "".join(f[1] for f in field[3]))
            rows.append(f"| {offset} | `{name}` | {field[2]} x {element_size} bytes | repeated group, see below |")
            inner, _ = _rows(field[3], 0, f"{name}[].", "+")
            rows += inner
        elif code == catalog.TAIL:
            rows.append(f"| {sign}{offset} | `{prefix}{name}` | bytes[rest] | {field[2]} |")
        else:
            rows.append(f"| {sign}{offset} | `{prefix}{name}` | {_type_name(code)} | {field[2]} |")
            offset += struct.calcsize("<" + code)
    return rows, offset


def _table(title: str, fields: tuple | None) -> list[str]:
    if fields is None:
        return [f"{title}: answered with ACK or NAK.", ""]
    if not fields:
        return [f"{title}: empty payload.", ""]
    rows, _ = _rows(fields, 0)
    return [f"{title}:", "", "| offset | field | type | unit |", "| --- | --- | --- | --- |", *rows, ""]


def render() -> str:
    lines = [BEGIN, ""]
    for msg_type, name, authenticated, addressing, request, response in catalog.MESSAGES:
        how = []
        if addressing & catalog.UNICAST:
            how.append("unicast")
        if addressing & catalog.BROADCAST:
            how.append("broadcast")
        lines.append(f"#### 0x{msg_type:02X} {name}")
        lines.append("")
        lines.append(f"Signed: {'yes' if authenticated else 'no'}. Addressing: {', '.join(how) or 'response only'}.")
        lines.append("")
        if addressing:
            lines += _table("Request payload", request)
        lines += _table("Response payload", response)
    lines.append(END)
    return "\n".join(lines)


def spliced(spec_text: str) -> str:
    """spec_text with its generated part replaced by render()."""
    start = spec_text.index(BEGIN)
    stop = spec_text.index(END) + len(END)
    return spec_text[:start] + render() + spec_text[stop:]


if __name__ == "__main__":
    SPEC.write_text(spliced(SPEC.read_text()))
    sys.stdout.write(f"rewrote the message tables of {SPEC.name}\n")
