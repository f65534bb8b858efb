"""The import contracts of pyproject.toml ([tool.importlinter]): the core imports none of its
callers (webapp, webhooks, jobs), and no package's modules import each other in a cycle.
Imports inside functions count as much as those at the top of a module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("roombridge", "webapp", "webhooks", "jobs")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def _copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(("imported", "broken"), [
    # An upward import, hidden in a function: the core must not know who calls it.
    ("from jobs import reservations as imported", "roombridge.booking.commands -> jobs.reservations"),
    # roombridge.sync imports roombridge.booking (to settle conflicts); the reverse closes a cycle.
    ("from roombridge import sync as imported", "No import cycle among the modules of a package BROKEN"),
])
def test_the_contracts_refuse_an_import_hidden_in_a_function(tmp_path, imported, broken):
    root = _copy(tmp_path)
    with (root / "roombridge" / "booking" / "commands.py").open("a") as module:
        module.write(f"\n\ndef _hidden():\n    {imported}\n\n    return imported\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert broken in result.stdout

