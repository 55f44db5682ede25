"""The firmware's const() copies of catalogue values (MicroPython's const() takes only
literals) are marked `# = catalog.EXPR`; this keeps every copy equal to the catalogue."""

from __future__ import annotations

import ast
import re

from host.build import firmware_build
from protocol import catalog

_MARKED = re.compile(r"^(\w+) = const\((.+?)\)\s+# = (catalog\.[\w. +]+)")


def _marked_constants() -> list[tuple[str, str, int, str]]:
    found = []
    for source in firmware_build.sources():
        for line in source.read_text().splitlines():
            match = _MARKED.match(line)
            if match:
                found.append((source.name, match[1], ast.literal_eval(match[2]), match[3].split("(")[0].strip()))
    return found


def test_marked_constants_equal_the_catalogue() -> None:
    constants = _marked_constants()
    assert len(constants) >= 9
    for module, name, value, expression in constants:
        assert value == eval(expression, {"catalog": catalog}), f"{module}: {name}"


def test_no_unmarked_size_constants_in_firmware() -> None:
    # A length or size const() without its catalogue expression would drift unseen.
    for source in firmware_build.sources():
        for line in source.read_text().splitlines():
            if re.match(r"^_\w*(LEN|DECODED|CACHE|RESIDUE)\w* = const\(", line):
                assert _MARKED.match(line), f"{source.name}: {line}"
