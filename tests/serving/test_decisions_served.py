"""/v1/predict's ``decision`` and reason codes, under the thresholds recorded with the answering version.

Oracles, independent of the service: the registered booster's score on the offline store's features at t − 1 µs
(``offline_features``), the rule written here (decline at or above its threshold, else review at or above its
own, else approve), and XGBoost's own path contributions (``pred_contribs`` with ``approx_contribs``) on the same
features for the reasons.
The thresholds are put at quantiles of the oracle's scores so that every decision occurs.
"""

from __future__ import annotations

import httpx
import numpy as np
import xgboost as xgb

from serving.app import create_app
from tests.serving.conftest import booster_scores, make_txns, offline_features, set_aliases, txn_body


def test_decisions_and_reason_codes_follow_the_versions_thresholds(serving_settings, trained_models, online_world,
                                                                   live_server, store, tmp_path):
    from mlplatform.models.registry import ModelRegistry

    shared = ModelRegistry(serving_settings())
    booster = shared.load_booster(trained_models.versions[0])
    names = trained_models.feature_names
    txns = make_txns(online_world, 80, seed=11, when=trained_models.scoring_time)
    frame = offline_features(store, online_world.feature_service, txns)
    expected = booster_scores(booster, frame, names)
    review, decline = (float(np.quantile(expected, q)) for q in (0.7, 0.9))
    decisions = {"rule": "score >= threshold", "review": {"threshold": review}, "decline": {"threshold": decline}}
    settings = serving_settings(models_dir=tmp_path / "models")
    registry = ModelRegistry(settings)
    _ = registry.client
    with_thresholds = registry.register(
        booster, feature_names=names, feature_types=trained_models.feature_types,
        feature_service=settings.feature_service, metrics={}, params={}, lineage={"fingerprint": "decisions-test"},
        decisions=decisions).version
    without = registry.register(
        booster, feature_names=names, feature_types=trained_models.feature_types,
        feature_service=settings.feature_service, metrics={}, params={},
        lineage={"fingerprint": "no-decisions"}).version
    set_aliases(settings, golden=with_thresholds)
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        body = [client.post("/v1/predict", json=txn_body(r)).json() for r in txns.itertuples()]
        batch = client.post("/v1/predict/batch", json={"transactions": [txn_body(r) for r in txns.itertuples()]})
    np.testing.assert_allclose([b["score"] for b in body], expected, rtol=1e-6, atol=1e-7)
    want = ["decline" if s >= decline else "review" if s >= review else "approve" for s in expected]
    assert [b["decision"] for b in body] == want
    assert {"approve", "review", "decline"} == set(want)
    assert [p["decision"] for p in batch.json()["predictions"]] == want
    # reasons: for review/decline, the largest positive path contributions (XGBoost's approx_contribs) on the
    # oracle's features, top 3
    X = frame[names].apply(lambda c: c.astype("float64")).to_numpy()
    contribs = booster.predict(xgb.DMatrix(X, feature_names=names, missing=np.nan), pred_contribs=True,
                               approx_contribs=True)
    for b, row, c in zip(body, X, contribs, strict=True):
        if b["decision"] == "approve":
            assert b["reasons"] is None
            continue
        order = [j for j in np.argsort(-c[:-1], kind="stable") if c[j] > 0][:3]
        assert [r["feature"] for r in b["reasons"]] == [names[j] for j in order], b
        for r, j in zip(b["reasons"], order, strict=True):
            assert abs(r["contribution"] - float(c[j])) < 1e-4
            assert (r["value"] is None) == bool(np.isnan(row[j])) and (r["value"] is None or abs(r["value"] - row[j])
                                                                      < 1e-9 * max(1, abs(row[j])))
    # a version without thresholds answers no decision
    set_aliases(settings, golden=without)
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        plain = client.post("/v1/predict", json=txn_body(next(txns.itertuples()))).json()
    assert plain["decision"] is None and plain["reasons"] is None
