"""`ibt` itself: its version, and the exit codes its help lists, 2 for usage errors alone."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from host.model import errors

ROOT = Path(__file__).resolve().parent.parent


def _ibt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_version_names_the_installed_package() -> None:
    shown = _ibt("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"ibt {version('ibt')}"


def test_usage_errors_alone_exit_2_and_help_lists_the_codes() -> None:
    usage = _ibt("plan", "--at-s", "soon")
    assert usage.returncode == errors.EXIT_USAGE
    shown = _ibt("--help").stdout
    for code, meaning in errors.EXIT_CODES.items():
        assert f"{code}  {meaning}" in shown
