"""POST /v1/features answers exactly the inputs /v1/predict feeds its model.

Oracles: the offline store at t − 1 µs (``offline_features``: Feast's historical retrieval, and the brute-force
oracle for the velocity features after the data's end), and the registered booster itself: scoring the answered
features must give /v1/predict's score for the same transaction.
"""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd

from serving.app import create_app
from tests.serving.conftest import booster_scores, make_txns, offline_features, set_aliases, txn_body


def test_features_are_what_predict_scores(serving_settings, trained_models, online_world, live_server, store):
    from mlplatform.models.registry import ModelRegistry

    settings = serving_settings()
    golden = trained_models.versions[0]
    set_aliases(settings, golden=golden)
    txns = make_txns(online_world, 40, seed=7, when=trained_models.scoring_time, unknown=3)
    booster = ModelRegistry(settings).load_booster(golden)
    names = trained_models.feature_names
    expected = offline_features(store, settings.feature_service, txns)
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        feats = [client.post("/v1/features", json=txn_body(r)) for r in txns.itertuples()]
        assert all(r.status_code == 200 for r in feats), [r.text for r in feats if r.status_code != 200][:2]
        feats = [r.json() for r in feats]
        preds = [client.post("/v1/predict", json=txn_body(r)).json() for r in txns.itertuples()]
        bad = client.post("/v1/features", json={**txn_body(next(txns.itertuples())), "amount": -5})
    # the answered features, in the model's order, equal the offline store's at t − 1 µs
    for f, (_, exp) in zip(feats, expected.iterrows(), strict=True):
        assert list(f["features"]) == names and f["feature_service"] == settings.feature_service
        for name in names:
            got, want = f["features"][name], exp[name]
            assert (got is None) == bool(pd.isna(want)), (f["transaction_id"], name, got, want)
            if got is not None:
                assert abs(got - float(want)) <= 1e-6 * max(1.0, abs(float(want))), (name, got, want)
        assert set(f["missing"]) | set(f["stale"]) == {n for n in names if pd.isna(exp[n])}
        assert set(f["stored"]) | set(f["on_demand"]) == set(names) and "log_amount" in f["on_demand"]
        assert f["model"] == {"name": settings.model_name, "version": golden, "role": "golden"}
        assert f["customer_activity"]["source"] == "event_log" and f["customer_activity"]["age_seconds"] >= 0
    # scored by the registered booster, they give /v1/predict's scores
    frame = pd.DataFrame([{n: (np.nan if v is None else v) for n, v in f["features"].items()} for f in feats])
    np.testing.assert_allclose(booster_scores(booster, frame, names), [p["score"] for p in preds], rtol=1e-6,
                               atol=1e-7)
    assert {p["transaction_id"] for p in preds} == {f["transaction_id"] for f in feats}
    # unknown customers: their customer features are missing, the request-derived ones are not
    assert "txn_count_24h" in feats[-1]["missing"] and feats[-1]["features"]["log_amount"] is not None
    # the same edge bounds as /v1/predict, the same 422 shape
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "body.amount"
