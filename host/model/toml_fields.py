"""Typed reads of parsed TOML that record problems instead of raising: each problem
names the field path and, where toml_lines finds it, the line. A failed read returns
None (or the default) so that reading goes on and every problem is reported at once.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from host.model.toml_lines import line_of

REQUIRED: Any = object()  # the default of a field that must be present


class FieldReader:
    """Typed reads of TOML values that record problems (with path and line) instead of
    raising, and return a stand-in so that reading goes on."""

    def __init__(self, lines: dict[str, int]) -> None:
        self.lines = lines
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        line = line_of(path, self.lines)
        self.problems.append(f"{path} (line {line}): {message}" if line else f"{path}: {message}")

    def table(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problem(path, f"must be a table (got {type(value).__name__})")
            return {}
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(allowed))})"
                self.problem(f"{path}.{key}" if path else key, f"unknown field{hint}")
        return value

    def tables(self, data: dict[str, Any], key: str) -> list[tuple[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list):
            self.problem(key, f"must be an array of tables ([[{key}]])")
            return []
        return [(f"{key}[{i}]", item) for i, item in enumerate(value)]

    def value(self, table: dict[str, Any], key: str, path: str, kind: type | tuple[type, ...],
              default: Any, describe: str) -> Any:
        if key not in table:
            if default is REQUIRED:
                self.problem(f"{path}.{key}", "is required")
                return None
            return default
        value = table[key]
        if isinstance(value, bool) and kind is not bool:
            value = None  # TOML true/false is not a number
        if not isinstance(value, kind):
            self.problem(f"{path}.{key}", f"must be {describe} (got {table[key]!r})")
            return None
        return value

    def number(self, table: dict[str, Any], key: str, path: str, default: Any = REQUIRED, *,
               minimum: float | None = None, strict: bool = False, maximum: float | None = None) -> Any:
        value = self.value(table, key, path, (int, float), default, "a number")
        if value is None or key not in table:
            return value
        if not math.isfinite(value):
            self.problem(f"{path}.{key}", f"must be finite (got {value})")
            return None
        if minimum is not None and (value < minimum or (strict and value == minimum)):
            self.problem(f"{path}.{key}", f"must be {'>' if strict else '>='} {minimum:g} (got {value:g})")
            return None
        if maximum is not None and value > maximum:
            self.problem(f"{path}.{key}", f"must be <= {maximum:g} (got {value:g})")
            return None
        return float(value)

    def integer(self, table: dict[str, Any], key: str, path: str, default: Any = REQUIRED, *,
                minimum: int | None = None, maximum: int | None = None) -> Any:
        value = self.value(table, key, path, int, default, "an integer")
        if value is None or key not in table:
            return value
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            self.problem(f"{path}.{key}", f"must be {minimum} to {maximum} (got {value})")
            return None
        if minimum is not None and value < minimum:
            self.problem(f"{path}.{key}", f"must be >= {minimum} (got {value})")
            return None
        if maximum is not None and value > maximum:
            self.problem(f"{path}.{key}", f"must be <= {maximum} (got {value})")
            return None
        return value

    def string(self, table: dict[str, Any], key: str, path: str, default: Any = REQUIRED,
               choices: tuple[str, ...] | None = None) -> Any:
        value = self.value(table, key, path, str, default, "a string")
        if value is not None and key in table and choices is not None and value not in choices:
            self.problem(f"{path}.{key}", f"must be one of {', '.join(choices)} (got {value!r})")
            return None
        return value

    def pair(self, table: dict[str, Any], key: str, path: str, default: tuple[float, float], *,
             minimum: float = 0.0) -> tuple[float, float] | None:
        if key not in table:
            return default
        value = table[key]
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
            self.problem(f"{path}.{key}", f"must be [low, high] (got {value!r})")
            return None
        low, high = float(value[0]), float(value[1])
        if low < minimum or high < low:
            self.problem(f"{path}.{key}", f"must be [low, high] with {minimum:g} <= low <= high (got {value!r})")
            return None
        return low, high
