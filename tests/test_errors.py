"""One exception tree: every error the host defines is an IbtError of one branch, and the
CLI shows any of them as one line with the likely cause and the branch's exit code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import host
from host.model import errors

ROOT = Path(__file__).resolve().parent.parent


def _host_exceptions() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(host.__path__, "host."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == info.name:
                found.append(value)
    return found


def test_every_host_exception_is_an_ibt_error_of_one_branch() -> None:
    found = _host_exceptions()
    assert len(found) >= 25
    # the CLI's bridge to click is a ClickException that carries an IbtError, not one itself
    outside = [e.__qualname__ for e in found if not issubclass(e, errors.IbtError) and e.__name__ != "IbtCommandError"]
    assert outside == []
    branches = (errors.ConfigurationError, errors.LinkError, errors.NoAnswer, errors.RefusalError,
                errors.OperatorError)
    codes = {e.__qualname__: e.exit_code for e in found}
    assert codes["TapTimeout"] == errors.EXIT_NO_ANSWER and codes["FencedOut"] == errors.EXIT_FENCED
    assert codes["TapRefused"] == errors.EXIT_REFUSED and codes["SiteFileError"] == errors.EXIT_CONFIGURATION
    assert codes["TransportError"] == errors.EXIT_LINK and codes["UnknownTap"] == errors.EXIT_OPERATOR
    assert all(issubclass(e, branches) or e.exit_code == errors.EXIT_ERROR for e in found)


def test_no_two_host_exceptions_share_a_name() -> None:
    names = [e.__qualname__ for e in _host_exceptions()]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_the_cli_prints_one_line_with_the_cause_and_the_branch_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nname = 5\n")
    done = subprocess.run([sys.executable, "-m", "host.cli", "risk", "--scenario", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == errors.EXIT_CONFIGURATION
    (line,) = done.stderr.splitlines()
    assert line.startswith("ibt: bad.toml: scenario.name (line 2): must be a string")
    assert line.endswith("(the scenario file: docs/scenarios.md says what it holds)")
