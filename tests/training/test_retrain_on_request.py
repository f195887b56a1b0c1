"""A retrain request from monitoring retrains only when new labels arrived since the golden's training set.

The issue: a standing breach re-filed its request every run, and each `train.if_needed` trained a version identical
to the golden (delta +0.0000) that the gate then refused. Oracle: the number of labels that arrived in
(golden's as-of, feature watermark], counted here with plain pandas from the raw label files.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

import training.steps  # noqa: F401 - registers train.if_needed (what the daily pipeline runs)
from mlplatform.contracts.retrain_request import request_path, write_retrain_request
from mlplatform.models.registry import ModelRegistry
from mlplatform.steps import run_step
from tests.conftest import make_settings
from training.datasets import default_as_of
from training.retrain import MONITORING_REQUEST, NEW_LABELS, check_retrain

BREACH = "skew: 16/16 features of fraud v1 drifted"


@pytest.fixture(scope="module")
def retrain_world(world_dir, empty_registry_db, tmp_path_factory):
    """A private copy of the small world, applied, with an empty model registry."""
    from mlplatform.features.definitions import apply_definitions

    root = tmp_path_factory.mktemp("retrain") / "world"
    shutil.copytree(world_dir, root, ignore=shutil.ignore_patterns(
        "registry.db*", "audit", "models", "feature_logs", "reports", "pipelines", "monitoring", "datasets",
        ".embedded-redis"))
    settings = make_settings(root)
    apply_definitions(settings)
    settings.layout.models_path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_registry_db, settings.layout.models_path / "mlflow.db")
    return settings


def _raw_labels(settings) -> pd.DataFrame:
    files = sorted((settings.data_path / "raw" / "labels").glob("*.parquet"))
    labels = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    labels["label_timestamp"] = pd.to_datetime(labels["label_timestamp"], utc=True)
    return labels


def _arrived(settings, after: pd.Timestamp, until: pd.Timestamp) -> int:
    """Labels whose arrival time is in (after, until], from the raw files."""
    ts = _raw_labels(settings)["label_timestamp"]
    return int(((ts > after) & (ts <= until)).sum())


def _golden(settings, as_of: pd.Timestamp) -> int:
    """Register a tiny model whose training set was as of ``as_of`` and make it golden; returns its version."""
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X, y = rng.random((50, 2)), (rng.random(50) < 0.3).astype(float)
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1}, xgb.DMatrix(X, label=y), num_boost_round=2)
    registry = ModelRegistry(settings)
    mv = registry.register(booster, feature_names=["a", "b"], feature_types=["float", "float"],
                           feature_service=settings.feature_service, metrics={}, params={},
                           lineage={"as_of": as_of.isoformat()})
    registry.set_alias("golden", mv.version)
    return mv.version


def _request(settings) -> None:
    write_retrain_request(settings, [BREACH], {"start": "", "end": ""})


def test_request_without_new_labels_does_not_retrain_and_stays_pending(retrain_world, cli):
    settings = retrain_world
    watermark = default_as_of(settings)
    golden = _golden(settings, watermark)  # trained on everything there is
    _request(settings)
    assert _arrived(settings, watermark, watermark) == 0

    decision = check_retrain(settings)
    assert not decision.retrain and decision.request_pending and decision.new_labels == 0 and decision.rule is None
    assert decision.reason.startswith("monitoring asked (") and BREACH in decision.reason
    assert (f"but only 0 new labels since the golden v{golden}'s training set (as of {watermark:%Y-%m-%d %H:%M}Z); "
            f"need {settings.retrain_min_new_labels_on_request:,}") in decision.reason

    versions = len(ModelRegistry(settings).list_versions())
    step = run_step("train.if_needed", settings)  # what `pipeline run daily` and `monitor check --retrain` run
    assert step["trained"] is False and step["request_pending"] is True and step["new_labels"] == 0
    listed = cli(settings, ["train", "--if-needed"])
    assert listed.exit_code == 0 and "no retrain needed" in listed.output, listed.output
    assert "but only 0 new labels" in " ".join(listed.output.split())
    assert len(ModelRegistry(settings).list_versions()) == versions, "nothing was trained"
    assert request_path(settings).exists(), "the request stays pending until labels arrive"


def test_request_retrains_from_the_minimum_of_new_labels(retrain_world):
    settings = retrain_world
    watermark = default_as_of(settings)
    as_of = watermark - pd.Timedelta(days=2)
    golden = _golden(settings, as_of)
    n = _arrived(settings, as_of, watermark)
    assert n > 0
    _request(settings)
    at = settings.model_copy(update={"retrain_min_new_labels_on_request": n, "retrain_min_new_labels": 10**9})
    yes = check_retrain(at)
    assert yes.retrain and yes.rule == MONITORING_REQUEST and yes.new_labels == n
    assert "monitoring asked for it" in yes.reason and f"{n:,} new labels since the golden v{golden}" in yes.reason
    above = at.model_copy(update={"retrain_min_new_labels_on_request": n + 1})
    no = check_retrain(above)
    assert not no.retrain and no.request_pending and no.new_labels == n
    assert f"but only {n:,} new labels" in no.reason and f"need {n + 1:,}" in no.reason
    # the default minimum, against the same independent count
    assert check_retrain(settings.model_copy(update={"retrain_min_new_labels": 10**9})).retrain == (
        n >= settings.retrain_min_new_labels_on_request)

    # without a request, the labels-only rule is unchanged
    request_path(settings).unlink()
    by_labels = check_retrain(settings.model_copy(update={"retrain_min_new_labels": n}))
    assert by_labels.retrain and by_labels.rule == NEW_LABELS and by_labels.new_labels == n
    quiet = check_retrain(settings.model_copy(update={"retrain_min_new_labels": n + 1}))
    assert not quiet.retrain and "no retrain request" in quiet.reason and not quiet.request_pending


def test_enough_labels_retrain_once_then_a_standing_breach_waits(retrain_world):
    settings = retrain_world.model_copy(update={"retrain_min_new_labels": 10**9})  # only the request rule here
    watermark = default_as_of(settings)
    as_of = watermark - pd.Timedelta(days=2)
    golden = _golden(settings, as_of)
    n = _arrived(settings, as_of, watermark)
    assert n >= settings.retrain_min_new_labels_on_request, "the small world has enough labels in two days"
    _request(settings)

    first = run_step("train.if_needed", settings)
    assert first["trained"] is True and first["rule"] == MONITORING_REQUEST and first["new_labels"] == n
    new = first["version"]
    assert new > golden and not request_path(settings).exists(), "the answered request is marked done"
    assert pd.Timestamp(ModelRegistry(settings).get(new).lineage["as_of"]) == watermark

    # the same breach again (the gate refused the challenger, the golden is unchanged): no label is newer than the
    # challenger's training set, so retraining would fit the same labels again
    assert ModelRegistry(settings).golden().version == golden
    _request(settings)
    second = run_step("train.if_needed", settings)
    assert second["trained"] is False and second["request_pending"] is True and second["new_labels"] == 0
    assert f"v{new}'s training set" in second["reason"] and "but only 0 new labels" in second["reason"]
    assert max(v.version for v in ModelRegistry(settings).list_versions()) == new
