"""SPEC.md and the catalogue say the same thing."""

from __future__ import annotations

import re

from host.wire import messages
from protocol import catalog
from protocol.tools import spec_tables


def test_spec_tables_are_generated_from_the_catalogue() -> None:
    text = spec_tables.SPEC.read_text()
    assert spec_tables.spliced(text) == text, "run python -m protocol.tools.spec_tables"


def test_every_error_code_is_in_the_spec_table() -> None:
    text = spec_tables.SPEC.read_text()
    for code, name in catalog.ERRORS:
        assert re.search(rf"^\| {code} \| {name} \|", text, re.MULTILINE), name


def test_type_constants_match_the_message_table() -> None:
    for message in messages.MESSAGES.values():
        assert getattr(catalog, f"T_{message.name}") == message.type
    for code, name in catalog.ERRORS:
        assert getattr(catalog, f"E_{name}") == code


def test_size_limits_are_consistent() -> None:
    assert catalog.MAX_DECODED == catalog.MAX_BODY + catalog.CRC_LEN
    assert catalog.AUTH_LEN == 8 + catalog.TAG_LEN
    largest_fixed = max(c.size for m in messages.MESSAGES.values() for c in (m.request, m.response) if c is not None)
    assert catalog.HEADER_LEN + largest_fixed + catalog.AUTH_LEN <= catalog.MAX_BODY
