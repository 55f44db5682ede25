"""The host code stays ruff clean and type-checks (mypy, settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from host.build import firmware_build


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=firmware_build.ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean_on_host() -> None:
    result = _run("mypy", "--no-color-output")
    assert result.returncode == 0, result.stdout + result.stderr
