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


def test_a_long_command_shows_progress_on_a_terminal_and_nothing_when_piped() -> None:
    import os
    import pty

    piped = _ibt("plan", "--at-s", "600")
    assert piped.returncode == 0 and piped.stderr == ""
    # the same command with a terminal as its standard error, read while it runs
    main, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "host.cli", "plan", "--at-s", "600"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=terminal, env=os.environ | {"COLUMNS": "100"})
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 4096)  # EIO once the command has exited and closed the terminal
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert process.wait(timeout=120) == 0 and b"simulating to" in shown
