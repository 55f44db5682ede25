"""The tap's persistent records (firmware/store.py) as the host writes them into a
board's flash image or a sim board's flash directory: a line with the CRC-32 of the
JSON text, then the text."""

from __future__ import annotations

import binascii
import json
from pathlib import Path
from typing import Any


def write_record(directory: Path, name: str, data: dict[str, Any]) -> Path:
    text = json.dumps(data)
    path = directory / name
    path.write_text(f"{binascii.crc32(text.encode()):08x}\n{text}\n")
    return path


def read_record(path: Path) -> dict[str, Any] | None:
    """The record's data if intact, else None."""
    try:
        header, text = path.read_text().splitlines()[:2]
        if int(header, 16) != binascii.crc32(text.encode()):
            return None
        data = json.loads(text)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
