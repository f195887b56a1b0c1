"""End to end through a real Redis, real Feast definitions and real XGBoost boosters behind a real uvicorn server.

Oracle: the registered booster's own prediction on ``get_historical_features`` (offline store, DuckDB over the
Parquet tables) for the same entities at the same time - a path that shares nothing with the service's
Redis reads, TTL handling or on-demand computation.
"""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd

from serving.app import create_app
from tests.serving.conftest import booster_scores, make_txns, offline_features, set_aliases, txn_body


def test_score_equals_registered_model_on_offline_features(serving_settings, trained_models, online_world,
                                                           live_server, store):
    from mlplatform.models.registry import ModelRegistry

    settings = serving_settings()
    golden = trained_models.versions[0]
    set_aliases(settings, golden=golden)
    when = trained_models.scoring_time
    txns = make_txns(online_world, 60, seed=1, when=when, unknown=5)
    late = make_txns(online_world, 20, seed=2, when=when + pd.Timedelta(days=40))  # customer_activity past its TTL
    booster = ModelRegistry(settings).load_booster(golden)
    names = trained_models.feature_names
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.get("/readyz").status_code == 200
        for frame in (txns, late):
            expected_features = offline_features(store, settings.feature_service, frame)
            expected = booster_scores(booster, expected_features, names)
            got = [client.post("/v1/predict", json=txn_body(r)) for r in frame.itertuples()]
            assert all(r.status_code == 200 for r in got), [r.text for r in got if r.status_code != 200][:2]
            body = [r.json() for r in got]
            np.testing.assert_allclose([b["score"] for b in body], expected, rtol=1e-6, atol=1e-7)
            assert {(b["model"]["version"], b["model"]["role"]) for b in body} == {(golden, "golden")}
            assert len({b["request_id"] for b in body}) == len(body)
            for b, (_, exp) in zip(body, expected_features.iterrows(), strict=True):
                flagged = set(b["missing"]) | set(b["stale"])
                assert flagged == {n for n in names if pd.isna(exp[n])}, b["transaction_id"]
        # the late batch: customer_activity (TTL 30 d) is stale for everyone; merchant_risk (60 d) is not
        assert all("txn_count_7d" in b["stale"] for b in body)
        assert not any("fraud_rate_30d" in b["stale"] for b in body)
        # batch endpoint: same answers in one call, in order
        batch = client.post("/v1/predict/batch", json={"transactions": [txn_body(r) for r in txns.itertuples()]})
        assert batch.status_code == 200
        exp_first = booster_scores(booster, offline_features(store, settings.feature_service, txns), names)
        np.testing.assert_allclose([p["score"] for p in batch.json()["predictions"]], exp_first, rtol=1e-6,
                                   atol=1e-7)
        # unknown customers still get a score, with their customer features flagged missing
        unknown = batch.json()["predictions"][-1]
        assert "txn_count_24h" in unknown["missing"] and 0.0 <= unknown["score"] <= 1.0


def test_explain_contributions_add_up_to_the_margin(serving_settings, trained_models, online_world, live_server,
                                                     store):
    from mlplatform.models.registry import ModelRegistry

    settings = serving_settings()
    set_aliases(settings, golden=trained_models.versions[1])
    txns = make_txns(online_world, 5, seed=3, when=trained_models.scoring_time)
    booster = ModelRegistry(settings).load_booster(trained_models.versions[1])
    expected = booster_scores(booster, offline_features(store, settings.feature_service, txns),
                              trained_models.feature_names)
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        for row, exp in zip(txns.itertuples(), expected, strict=True):
            b = client.post("/v1/predict", params={"explain": "true"}, json=txn_body(row)).json()
            contrib = b["contributions"]
            assert set(contrib) == {*trained_models.feature_names, "bias"}
            margin = sum(contrib.values())
            assert abs(1 / (1 + np.exp(-margin)) - exp) < 1e-5
