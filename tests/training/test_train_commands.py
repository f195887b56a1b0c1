"""`mlplatform train --tune N` and `mlplatform train --if-needed`, as commands, on a private copy of the small world.

Oracles: the search space and defaults are read from the YAML files here, not from the code; the tuned model's
validation ROC AUC is recomputed with scikit-learn from the registered training set's own validation rows and must
equal the best trial the command printed (the registered model is the best trial's); versions are counted in the
registry before and after each command.
"""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest
import yaml

from mlplatform.models.registry import ModelRegistry
from tests.conftest import make_settings

TRIAL = re.compile(r"trial (\d+)/(\d+)\s+validation ROC AUC ([\d.]+)\s+best ([\d.]+) \(trial (\d+)\)")
SMALL_FIT = {"num_boost_round": 60, "early_stopping_rounds": 15}  # fast fits; everything else stays the default


@pytest.fixture(scope="module")
def command_world(world_dir, tmp_path_factory):
    """A private copy of the small world, applied; a saved training set; a small training config."""
    from mlplatform.features.definitions import apply_definitions
    from training.datasets import build_training_set

    root = tmp_path_factory.mktemp("train-commands")
    data = root / "world"
    shutil.copytree(world_dir, data, ignore=shutil.ignore_patterns(
        "registry.db*", "audit", "models", "feature_logs", "reports", "pipelines", "monitoring", "datasets",
        ".embedded-redis"))
    settings = make_settings(data, models_dir=root / "unused-models")
    apply_definitions(settings)
    dataset = build_training_set(settings, out_dir=root / "dataset")
    config = root / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL_FIT))
    return settings, dataset.path, config


@pytest.fixture()
def command_settings(command_world, fresh_models, tmp_path):
    """The world's settings with an empty model registry of this test's own."""
    settings, dataset, config = command_world
    return fresh_models(settings.model_copy(update={"models_dir": tmp_path / "models"})), dataset, config


def _versions(settings) -> list:
    return ModelRegistry(settings).list_versions()


def test_train_tune_registers_the_best_trial_with_searched_params(command_settings, cli):
    from sklearn.metrics import roc_auc_score

    from mlplatform.models.scoring import predict
    from training.config import DEFAULT_CONFIG_PATH

    settings, dataset, config = command_settings
    assert _versions(settings) == []
    res = cli(settings, ["train", "--dataset", str(dataset), "--config", str(config), "--tune", "2"])
    assert res.exit_code == 0, res.output
    assert "searching hyper-parameters: 2 Optuna trials" in res.output
    trials = [m.groups() for m in TRIAL.finditer(res.output)]
    assert [(int(n), int(of)) for n, of, *_ in trials] == [(1, 2), (2, 2)], res.output

    (tuned,) = _versions(settings)
    assert "challenger" in tuned.aliases
    assert tuned.params["tune_trials"] == 2 and tuned.lineage["tuned_trials"] == 2
    defaults = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    space, base = defaults["tune"], defaults["params"]
    searched = tuned.params["tuned"]
    assert set(searched) == set(space), "every searched hyper-parameter is recorded"
    for name, value in searched.items():
        lo, hi = space[name]
        assert lo <= value <= hi, (name, value)
        assert tuned.params["xgboost"][name] == value, f"the final fit did not use the tuned {name}"
    differ = [n for n in searched if searched[n] != base[n]]
    assert {"eta", "subsample", "colsample_bytree", "lambda"} <= set(differ), (searched, base)
    assert tuned.params["num_boost_round"] == SMALL_FIT["num_boost_round"]

    # the registered booster is the best trial's model: its validation ROC AUC, recomputed here, is the best printed
    registry = ModelRegistry(settings)
    frame = pd.read_parquet(registry.training_set_path(tuned.version))
    validation = frame[frame["split"] == "validation"]
    auc = roc_auc_score(validation["is_fraud"].astype(int),
                        predict(registry.load_booster(tuned.version), validation, tuned.feature_names))
    best = max(float(value) for _, _, value, _, _ in trials)
    assert float(trials[-1][3]) == best
    assert abs(auc - best) < 6e-5, (auc, best)


def test_train_if_needed_trains_without_a_golden_then_not_without_new_labels(command_settings, cli):
    settings, dataset, config = command_settings
    args = ["train", "--if-needed", "--dataset", str(dataset), "--config", str(config)]
    assert _versions(settings) == []

    first = cli(settings, args)
    assert first.exit_code == 0, first.output
    assert "retraining: no golden model yet" in first.output
    (v1,) = _versions(settings)
    assert v1.lineage["trigger"] == "if-needed: no golden model yet" and "challenger" in v1.aliases
    registry = ModelRegistry(settings)
    registry.set_alias("golden", v1.version)  # the first model goes live; it saw every label there is

    quiet = cli(settings, args)
    assert quiet.exit_code == 0, quiet.output
    text = " ".join(quiet.output.split())
    assert "no retrain needed" in text and "retraining" not in text
    assert f"only 0 new labels since the golden v{v1.version}'s training set" in text
    assert "(threshold 1,000) and no retrain request from monitoring" in text
    assert [v.version for v in _versions(settings)] == [v1.version], "nothing was registered"

    # the threshold is inclusive: with a threshold of 0, the same 0 new labels are enough
    eager = cli(settings.model_copy(update={"retrain_min_new_labels": 0}), args)
    assert eager.exit_code == 0, eager.output
    assert "retraining: 0 labels arrived since the golden" in " ".join(eager.output.split())
    assert [v.version for v in _versions(settings)] == [v1.version, v1.version + 1]
    assert ModelRegistry(settings).golden().version == v1.version, "training never promotes"
