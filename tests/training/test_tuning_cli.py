"""`train --tune N` reports each trial as it finishes, and `models list` marks tuned versions (and stays light)."""

from __future__ import annotations

import re
import subprocess
import sys

from mlplatform.models.registry import ModelRegistry
from tests.conftest import process_environ

TRIAL = re.compile(r"trial (\d+)/(\d+)\s+validation ROC AUC ([\d.]+)\s+best ([\d.]+) \(trial (\d+)\)")


def test_tuning_progress_and_the_tuned_marker(trained, cli):
    settings, dataset, outcome = trained
    res = cli(settings, ["train", "--dataset", str(dataset.path), "--tune", "2"])
    assert res.exit_code == 0, res.output
    trials = [m.groups() for m in TRIAL.finditer(res.output)]
    assert [(int(n), int(of)) for n, of, *_ in trials] == [(1, 2), (2, 2)], res.output
    best_so_far = float("-inf")
    for _, _, value, best, best_trial in trials:  # "best so far" re-derived from the printed values
        best_so_far = max(best_so_far, float(value))
        assert float(best) == best_so_far
        assert float(trials[int(best_trial) - 1][2]) == best_so_far
    assert res.output.index("trial 2/2") < res.output.index("held-out rows")  # reported before the final fit

    registry = ModelRegistry(settings)
    tuned = registry.list_versions()[-1]
    assert tuned.version > outcome.version.version
    assert tuned.lineage["tuned_trials"] == 2 and tuned.params["tune_trials"] == 2
    listing = cli(settings, ["models", "list"])
    assert listing.exit_code == 0, listing.output
    rows = {line.split("│")[1].strip(): line for line in listing.output.splitlines() if line.startswith("│")}
    assert "2 trials" in rows[str(tuned.version)]
    assert "trials" not in rows[str(outcome.version.version)]  # trained without a search


def test_models_list_loads_neither_feast_nor_xgboost_nor_mlflow(trained):
    """What keeps `models list` fast: it reads the registry's SQLite file without MLflow (bench/cli.py times it)."""
    settings, _, outcome = trained
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cli import build_app\n"
        "res = CliRunner().invoke(build_app(), ['models', 'list'])\n"
        "assert res.exit_code == 0, res.output\n"
        "print(res.output)\n"
        "heavy = ('feast', 'xgboost', 'mlflow', 'pandas', 'evidently')\n"
        "print('loaded:', sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=process_environ(settings), timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout, done.stdout
    expected = ModelRegistry(settings).get(outcome.version.version)  # oracle: the MLflow client's view
    listed = next(line for line in done.stdout.splitlines() if line.startswith(f"│ {expected.version} "))
    assert ", ".join(expected.aliases) in listed and f"{expected.metrics['roc_auc']:.4f}" in listed
