"""Decision thresholds: chosen on the evaluation (test) split at training time and kept in the model card.

The oracle recomputes each threshold from the evaluation scores and labels with plain numpy and scikit-learn's
precision-recall curve, independently of mlplatform.models.decisions."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_recall_curve

from mlplatform.models.decisions import decision_thresholds
from mlplatform.models.registry import CARD_FILE, ModelRegistry


def oracle_review(scores: np.ndarray, share: float) -> float:
    """The score t with at least ceil(share * n) scores >= t and fewer than that > t (the budget's k-th score)."""
    k = max(1, math.ceil(share * len(scores)))
    candidates = np.unique(scores)
    at_or_above = np.array([(scores >= t).sum() for t in candidates])
    above = np.array([(scores > t).sum() for t in candidates])
    (found,) = candidates[(at_or_above >= k) & (above < k)]
    return float(found)


def oracle_decline(labels: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    """The lowest threshold of scikit-learn's precision-recall curve whose precision reaches ``target``."""
    precision, _, thresholds = precision_recall_curve(labels, scores)
    reaching = thresholds[precision[:-1] >= target]
    return float(reaching.min()) if len(reaching) else None


def check_against_oracle(decisions: dict, labels: np.ndarray, scores: np.ndarray, share: float, target: float):
    review, decline = decisions["review"], decisions["decline"]
    assert review["threshold"] == oracle_review(scores, share)
    flagged = scores >= review["threshold"]
    assert review["flagged"] == flagged.sum() >= math.ceil(share * len(scores))
    assert review["precision"] == pytest.approx(labels[flagged].mean())
    expected = oracle_decline(labels, scores, target)
    assert decline["threshold"] == expected
    if expected is not None:
        declined = scores >= expected
        assert decline["precision"] == pytest.approx(labels[declined].mean()) and decline["precision"] >= target
        assert decline["recall"] == pytest.approx(labels[declined].sum() / labels.sum())
        assert decline["reason"] is None
    else:
        assert "no score threshold reaches precision" in decline["reason"]
    assert decisions["evaluation"] == {"split": "test", "rows": len(scores), "positives": int(labels.sum())}


@pytest.mark.parametrize("seed,share,target", [(1, 0.01, 0.9), (2, 0.05, 0.6), (3, 0.001, 0.5), (4, 0.2, 0.8)])
def test_thresholds_match_the_oracle_on_scores_with_ties(seed, share, target):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.beta(0.4, 6, size=6000), 3)  # many ties, like a booster's leaf values
    labels = (rng.random(6000) < np.clip(scores * 1.3, 0, 1)).astype(int)
    decisions = decision_thresholds(scores, labels, share, target)
    check_against_oracle(decisions, labels, scores, share, target)


def test_decline_is_none_with_a_reason_when_no_threshold_reaches_the_precision():
    rng = np.random.default_rng(5)
    scores = rng.random(2000)
    labels = (rng.random(2000) < 0.05).astype(int)  # unrelated to the score: precision stays near 5 %
    labels[np.argmax(scores)] = 0  # and the top score is not fraud, so no threshold reaches 0.99
    decisions = decision_thresholds(scores, labels, 0.01, 0.99)
    assert decisions["decline"]["threshold"] is None
    assert "no score threshold reaches precision 0.99" in decisions["decline"]["reason"]
    check_against_oracle(decisions, labels, scores, 0.01, 0.99)

    none = decision_thresholds(scores, np.zeros(2000, dtype=int), 0.01, 0.9)
    assert none["decline"]["threshold"] is None and "no fraud" in none["decline"]["reason"]
    assert none["review"]["threshold"] == oracle_review(scores, 0.01)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="as many scores as labels"):
        decision_thresholds([0.1, 0.2], [1], 0.01, 0.9)
    with pytest.raises(ValueError, match="must lie in"):
        decision_thresholds([0.1], [1], 0.0, 0.9)


def test_trained_version_records_thresholds_the_oracle_recomputes(trained):
    """The card's thresholds against an oracle over the saved evaluation rows; those rows against the booster."""
    settings, dataset, outcome = trained
    registry = ModelRegistry(settings)
    mv = registry.get(outcome.version.version)
    card = json.loads((mv.artifact_dir / CARD_FILE).read_text())
    assert card["decisions"] == mv.decisions and mv.decisions is not None

    rows = pd.read_parquet(mv.artifact_dir / "evaluation" / "predictions.parquet")
    # the saved evaluation rows are the test split of the saved training set, scored by the registered booster
    saved = pd.read_parquet(registry.training_set_path(mv.version))
    test = saved[saved["split"] == "test"]
    assert sorted(rows["transaction_id"]) == sorted(test["transaction_id"])
    test = test.set_index("transaction_id").loc[rows["transaction_id"]]
    assert (rows["is_fraud"].to_numpy() == test["is_fraud"].to_numpy()).all()
    x = test[mv.feature_names].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    booster_scores = registry.load_booster(mv.version).inplace_predict(x)
    np.testing.assert_allclose(rows["score"].to_numpy(), booster_scores, rtol=1e-6)

    labels, scores = rows["is_fraud"].to_numpy().astype(int), rows["score"].to_numpy()
    assert labels.sum() > 0
    check_against_oracle(mv.decisions, labels, scores, settings.decision_review_share,
                         settings.decision_decline_precision)
    assert mv.decisions["review"]["budget_share"] == settings.decision_review_share == 0.01
    assert mv.decisions["decline"]["target_precision"] == settings.decision_decline_precision == 0.9


def test_cards_without_decisions_still_read(trained, fresh_models, tmp_path):
    """A version registered before decisions existed reads back with ``decisions`` None."""
    from tests.conftest import make_settings

    settings, _, outcome = trained
    older = fresh_models(make_settings(settings.data_path, models_dir=tmp_path / "models"))
    registry = ModelRegistry(older)
    source = ModelRegistry(settings)
    mv = registry.register(source.load_booster(outcome.version.version), feature_names=outcome.version.feature_names,
                           feature_types=outcome.version.feature_types, feature_service="svc", metrics={},
                           params={}, lineage={"fingerprint": "old"})
    card = json.loads((mv.artifact_dir / CARD_FILE).read_text())
    assert "decisions" not in card and registry.get(mv.version).decisions is None
    assert [v.decisions for v in registry.list_versions()] == [None]
