"""What every command prints: its result as text, or as JSON with --json."""

from __future__ import annotations

import json
from typing import Any

import click


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)
