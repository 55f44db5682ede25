"""The import layers of docs/architecture.md, as import-linter contracts in pyproject.toml:
kept by the tree as it is, and broken by an import that runs the wrong way."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": ""}, timeout=300)


def test_the_layer_contracts_are_kept() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_import_against_the_layers_breaks_a_contract(tmp_path: Path) -> None:
    for folder in ("host", "protocol", "firmware"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    framing = tmp_path / "host" / "wire" / "framing.py"
    wrong = "\nfrom host.sim.rig import plant  # the wire reaching up into a test world\n"
    framing.write_text(framing.read_text() + wrong)
    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    assert "host: each layer imports only the layers below it BROKEN" in done.stdout
    assert "host.wire.framing -> host.sim.rig.plant" in done.stdout
