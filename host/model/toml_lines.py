"""Where fields stand in a TOML text, so that errors found after parsing can name the
line as well as the field path. tomllib gives positions only for syntax errors.

Best effort for files written the usual way: `[table]` and `[[array]]` headers and
`key = value` lines. Paths look like `sources[2].capacity_kw` (0-based indices); a
path not found falls back to its closest parent found (an inline table's key gives
the line of the table).
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


def key_lines(text: str) -> dict[str, int]:
    """Field path -> 1-based line number of its key (or of its table's header)."""
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}
    table = ""
    in_string = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
            in_string = not in_string
            if in_string:  # a key whose value opens a multi-line string still counts
                _record_key(line, table, number, lines)
            continue
        if in_string:
            continue
        header = _HEADER.match(line)
        if header:
            name = ".".join(part.strip().strip("\"'") for part in header.group(2).split("."))
            if header.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                table = f"{name}[{counts[name]}]"
            else:
                table = name
            lines.setdefault(table, number)
            continue
        _record_key(line, table, number, lines)
    return lines


def _record_key(line: str, table: str, number: int, lines: dict[str, int]) -> None:
    key = _KEY.match(line)
    if key:
        name = key.group(1).strip('"')
        lines.setdefault(f"{table}.{name}" if table else name, number)


def line_of(path: str, lines: dict[str, int]) -> int | None:
    """The line of path, or of its closest parent that has one."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None
