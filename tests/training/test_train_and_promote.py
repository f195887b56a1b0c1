"""Training end to end on the small world, the behavioural suite, the promotion gate, rollback and the retrain check.

Every figure the code reports is re-derived here independently: AUCs with scikit-learn from the registered
booster's own predictions, and the oracle's AUC straight from the oracle files.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlplatform.contracts.retrain_request import request_path
from mlplatform.errors import InvalidInputError
from mlplatform.models.behaviour import run_behaviour_suite
from mlplatform.models.promotion import promote_model, read_audit, rollback
from mlplatform.models.registry import ModelRegistry
from mlplatform.models.scoring import predict
from training.config import load_config
from training.retrain import check_retrain
from training.train import fit_booster


def _splits(settings, version):
    frame = pd.read_parquet(ModelRegistry(settings).training_set_path(version))
    return {s: frame[frame["split"] == s] for s in ("train", "validation", "test")}


def _register(settings, booster, like_version, **lineage):
    """Register ``booster`` with the same training set and signature as ``like_version``."""
    registry = ModelRegistry(settings)
    like = registry.get(like_version)
    return registry.register(booster, feature_names=like.feature_names, feature_types=like.feature_types,
                             feature_service=like.feature_service, metrics={}, params={},
                             lineage={**like.lineage, **lineage},
                             training_set_path=registry.training_set_path(like_version)).version


def _fit(settings, names, **changes):
    splits = _splits(settings, 1)
    config = copy.deepcopy(load_config(settings))
    monotone = changes.pop("monotone", None)
    if monotone is not None:
        config["monotone"] = monotone
    shuffle = changes.pop("shuffle_labels", False)
    relabel = changes.pop("relabel", None)
    config.update({k: v for k, v in changes.items() if k in ("num_boost_round",)})
    config["params"].update({k: v for k, v in changes.items() if k != "num_boost_round"})
    train = splits["train"].copy()
    if shuffle:
        train["is_fraud"] = np.random.default_rng(0).permutation(train["is_fraud"].to_numpy())
    if relabel is not None:
        train["is_fraud"] = relabel(train).astype(int)
    return fit_booster(train, splits["validation"], names, config).booster


def test_training_end_to_end_reaches_a_sane_auc(trained):
    settings, dataset, outcome = trained
    registry = ModelRegistry(settings)
    mv = registry.get(outcome.version.version)
    assert mv.aliases == ["challenger"]
    assert mv.feature_names == dataset.feature_names and mv.lineage["fingerprint"] == dataset.fingerprint
    test = _splits(settings, mv.version)["test"]
    assert len(test) > 500 and test["is_fraud"].sum() > 10
    # independent AUC of the registered booster on its held-out rows
    auc = roc_auc_score(test["is_fraud"], predict(registry.load_booster(mv.version), test, mv.feature_names))
    assert auc == pytest.approx(mv.metrics["roc_auc"], abs=1e-9)
    oracle = pd.concat(pd.read_parquet(f) for f in sorted(settings.layout.oracle_dir.glob("2026*.parquet")))
    oracle_auc = roc_auc_score(test["is_fraud"], test["transaction_id"].map(oracle.set_index("transaction_id")
                                                                           ["fraud_probability"]))
    assert mv.metrics["oracle_roc_auc"] == pytest.approx(oracle_auc, abs=1e-9)
    assert auc > 0.75 and oracle_auc - auc < 0.15  # sane on 150 customers x 10 days (few fraud rows)
    # the training rows all precede the test rows
    splits = _splits(settings, mv.version)
    assert splits["train"]["event_timestamp"].max() < test["event_timestamp"].min()
    # plots a person can look at, beside the summary
    eval_dir = outcome.evaluation_dir
    for name in ("roc.png", "pr.png", "calibration.png", "feature_importance.png"):
        assert (eval_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((eval_dir / "summary.json").read_text())
    cats = {s["merchant_category"]: s for s in summary["slices"]}
    grocery = test[test["merchant_category"] == "grocery"]
    assert cats["grocery"]["rows"] == len(grocery) and cats["grocery"]["positives"] == grocery["is_fraud"].sum()
    stats = registry.training_stats(mv.version)["features"]["txn_count_1h"]
    assert stats["mean"] == pytest.approx(splits["train"]["txn_count_1h"].astype(float).mean())


def test_behaviour_suite_passes_the_trained_model_and_catches_a_wrong_one(trained):
    settings, dataset, outcome = trained
    names = dataset.feature_names
    test = _splits(settings, 1)["test"]
    good = run_behaviour_suite(ModelRegistry(settings).load_booster(1), test, names)
    assert all(r.passed for r in good), good
    # a model taught that quiet customers and small amounts are the fraud must fail the directional tests
    def backwards(d):
        quiet = d["txn_count_1h"].fillna(0) == 0
        small = d["amount_vs_mean_7d"].fillna(1.0) < 0.8
        return quiet & small

    wrong = _fit(settings, names, monotone={}, relabel=backwards)
    results = {r.name: r for r in run_behaviour_suite(wrong, test, names)}
    assert not results["burst_does_not_lower_score"].passed
    assert not results["high_amount_does_not_lower_score"].passed
    assert results["invariant_to_ignored_fields"].passed


def test_promotion_gate_rollback_and_audit(trained):
    settings, dataset, outcome = trained
    names = dataset.feature_names
    good = outcome.version.version
    weak = _register(settings, _fit(settings, names, max_depth=1, num_boost_round=1), good)
    worse = _register(settings, _fit(settings, names, shuffle_labels=True), good)
    registry = ModelRegistry(settings)

    test = _splits(settings, good)["test"]
    auc = {v: roc_auc_score(test["is_fraud"], predict(registry.load_booster(v), test, names))
           for v in (good, weak, worse)}
    assert auc[good] - auc[weak] > settings.promotion_margin > auc[worse] - auc[weak]

    first = promote_model(settings, weak, reason="first golden")
    assert first.action == "promoted" and registry.golden().version == weak
    better = promote_model(settings, good)
    assert better.action == "promoted" and better.comparison["candidate_roc_auc"] == pytest.approx(auc[good])
    assert better.comparison["golden_roc_auc"] == pytest.approx(auc[weak])
    assert registry.golden().version == good and registry.previous_golden().version == weak
    assert "challenger" not in registry.get(good).aliases

    refused = promote_model(settings, worse)
    assert refused.action == "refused" and not refused.passed and registry.golden().version == good
    assert any("does not beat" in r for r in refused.reasons)

    forced = promote_model(settings, worse, force=True, reason="incident drill", actor="alice")
    assert forced.action == "forced" and registry.golden().version == worse

    back = rollback(settings, actor="bob")
    assert back.golden_after == good and registry.golden().version == good
    assert registry.previous_golden().version == weak  # the chain continues from the audit log
    rollback(settings)
    assert registry.golden().version == weak and registry.previous_golden() is None

    audit = read_audit(settings)
    assert [r["action"] for r in audit] == ["promote", "promote", "promote_refused", "force_promote", "rollback",
                                            "rollback"]
    assert audit[3]["forced"] is True and audit[3]["actor"] == "alice" and audit[3]["reason"] == "incident drill"
    assert audit[4]["actor"] == "bob" and {r["channel"] for r in audit} == {"cli"}
    assert not (settings.layout.models_path / "audit.jsonl").exists()  # one audit log: the platform's
    raw_lines = settings.layout.audit_log.read_bytes().split(b"\n")
    assert raw_lines[-1] == b"" and all(json.loads(line) for line in raw_lines[:-1])


def test_corrupt_model_is_refused_and_golden_kept(trained):
    settings, dataset, outcome = trained
    registry = ModelRegistry(settings)
    copy_v = _register(settings, registry.load_booster(1), 1)
    golden_before = registry.golden()
    path = registry.get(copy_v).booster_path
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(InvalidInputError, match=str(path)):
        promote_model(settings, copy_v, force=True)
    after = registry.golden()
    assert (after.version if after else None) == (golden_before.version if golden_before else None)


def test_retrain_check_says_why(trained, monkeypatch):
    settings, dataset, outcome = trained
    registry = ModelRegistry(settings)
    as_of = pd.Timestamp(registry.get(1).lineage["as_of"]) - pd.Timedelta(days=4)
    older = _register(settings, registry.load_booster(1), 1, as_of=as_of.isoformat())
    promote_model(settings, older, force=True, reason="retrain check test")
    labels = pd.concat(pd.read_parquet(f) for f in sorted((settings.layout.raw_dir / "labels").glob("*.parquet")))
    later = as_of + pd.Timedelta(days=2)
    expected_new = int(((labels["label_timestamp"] > as_of) & (labels["label_timestamp"] <= later)).sum())
    assert expected_new > 0
    strict = settings.model_copy(update={"retrain_min_new_labels": expected_new + 1})
    decision = check_retrain(strict, later.to_pydatetime())
    assert not decision.retrain and decision.new_labels == expected_new and "no retrain request" in decision.reason
    loose = settings.model_copy(update={"retrain_min_new_labels": expected_new})
    assert check_retrain(loose, later.to_pydatetime()).retrain
    # the monitoring hook: a request newer than the golden asks for a retrain, once enough new labels arrived
    # (retrain_min_new_labels_on_request; tests/training/test_retrain_on_request.py holds the rest)
    path = request_path(strict)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    path.write_text(json.dumps({"requested_at": stamp, "breaches": ["skew: amount_mean_7d PSI 0.4"]}))
    try:
        asked = strict.model_copy(update={"retrain_min_new_labels_on_request": expected_new})
        decision = check_retrain(asked, later.to_pydatetime())
        assert decision.retrain and "amount_mean_7d" in decision.reason
        too_few = strict.model_copy(update={"retrain_min_new_labels_on_request": expected_new + 1})
        decision = check_retrain(too_few, later.to_pydatetime())
        assert not decision.retrain and "amount_mean_7d" in decision.reason
        assert f"but only {expected_new:,} new labels" in decision.reason
    finally:
        path.unlink()


def test_cli_errors_are_messages_not_tracebacks(trained, cli):
    settings, *_ = trained
    result = cli(settings, ["models", "promote", "999"])
    assert result.exit_code == 3 and "no version 999" in result.output and "Traceback" not in result.output
    listing = cli(settings, ["models", "list"])
    assert listing.exit_code == 0 and "golden" in listing.output
    bad = cli(settings, ["train", "--split", "kfold"])
    assert bad.exit_code == 2 and "unknown split strategy" in bad.output
