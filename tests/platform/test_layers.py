"""The import layers hold: CLI root > orchestration > parts (never importing one another) > core, no cycles.

The contracts live in pyproject.toml ([tool.importlinter]); `make lint` runs them too. This test also plants a
violation in a copy of the tree to show the contracts can fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from mlplatform.settings import PROJECT_ROOT

PACKAGES = ("cli", "orchestration", "training", "serving", "monitoring", "scoring", "streaming", "mlplatform")


def _lint(root) -> subprocess.CompletedProcess:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(lint_imports), "--config", str(root / "pyproject.toml")], cwd=root,
                          capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": ""})


def test_import_contracts_are_kept():
    result = _lint(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_part_importing_another_part_breaks_the_contract(tmp_path):
    for name in PACKAGES:
        shutil.copytree(PROJECT_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "monitoring" / "sneaky.py").write_text("from training.retrain import check_retrain  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "monitoring is not allowed to import training" in result.stdout
