"""Bad input gets a clear 4xx naming the field; admin endpoints need the API key; push writes through Feast."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from serving.app import create_app
from tests.serving.conftest import set_aliases

GOOD = {"customer_id": 1, "merchant_id": 10001, "amount": 12.5, "transaction_ts": 1_791_000_000}


@pytest.fixture()
def client(serving_settings, trained_models, live_server):
    settings = serving_settings(serving_max_batch=5, serving_max_body_bytes=4096)
    set_aliases(settings, golden=trained_models.versions[0])
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        c.settings = settings
        yield c


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in GOOD.items() if k != "customer_id"}, "customer_id"),
        ({**GOOD, "amount": "lots"}, "amount"),
        ({**GOOD, "amount": -3}, "amount"),
        ({**GOOD, "customer_id": [1]}, "customer_id"),
        ({**GOOD, "colour": "red"}, "colour"),
        ({**GOOD, "timestamp": "yesterday-ish"}, "timestamp"),
    ],
)
def test_malformed_bodies_get_422_naming_the_field(client, body, field):
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 422
    fields = [f["field"] for f in r.json()["fields"]]
    assert any(field in f.split(".") for f in fields), fields
    assert "Traceback" not in r.text


def test_not_json_oversized_batch_and_body(client):
    r = client.post("/v1/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
    r = client.post("/v1/predict/batch", json={"transactions": [GOOD] * 6})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.transactions"
    assert "at most 5" in r.json()["fields"][0]["problem"]
    r = client.post("/v1/predict/batch", json={"transactions": [GOOD] * 5})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 5
    r = client.post("/v1/predict/batch", json={"transactions": [GOOD] * 200})
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"


def test_admin_endpoints_need_the_api_key(client, trained_models):
    v2 = trained_models.versions[1]
    push = {"rows": [{"customer_id": 7, "last_amount": 1.0, "last_merchant_id": 3, "event_timestamp": 1_791_000_000}]}
    for path, body in ((f"/v1/models/{v2}/promote", {}), ("/v1/push", push)):
        assert client.post(path, json=body).status_code == 401
        assert client.post(path, json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/v1/models").json()["models"][0]["version"] == trained_models.versions[0]


def test_push_writes_stream_features_through_feast(client, online_store):
    rows = [
        {"customer_id": 4242, "last_amount": 77.25, "last_merchant_id": 10003, "event_timestamp": 1_791_000_000},
        {"customer_id": 4243, "last_amount": 5.5, "last_merchant_id": 10004, "event_timestamp": "2026-10-03T04:40:00Z"},
    ]
    r = client.post("/v1/push", json={"rows": rows}, headers={"X-API-Key": "test-key"})
    assert r.status_code == 200, r.text
    got = online_store.get_online_features(
        features=["customer_realtime:last_amount", "customer_realtime:last_merchant_id"],
        entity_rows=[{"customer_id": 4242}, {"customer_id": 4243}],
    ).to_dict()
    assert got["last_amount"] == [77.25, 5.5] and got["last_merchant_id"] == [10003, 10004]
    bad = client.post("/v1/push", json={"rows": [{"customer_id": 1}]}, headers={"X-API-Key": "test-key"})
    assert bad.status_code == 422 and "last_amount" in bad.json()["detail"]
    unknown = client.post("/v1/push", json={"push_source": "nope", "rows": rows}, headers={"X-API-Key": "test-key"})
    assert unknown.status_code == 404 and "customer_realtime_push" in unknown.json()["detail"]


def test_promote_endpoint_swaps_the_model_in(client, trained_models):
    v1, v2, _ = trained_models.versions
    r = client.post(
        f"/v1/models/{v2}/promote", json={"force": True, "reason": "serving test"}, headers={"X-API-Key": "test-key"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["golden"]["version"] == v2 and r.json()["previous_golden"]["version"] == v1
    assert client.post("/v1/predict", json=GOOD).json()["model"]["version"] == v2


def test_promote_endpoint_refused_by_the_gate_is_a_409(client, trained_models):
    """A model that learned the labels upside down must not become golden through the API either."""
    import numpy as np
    import xgboost as xgb

    from mlplatform.models.registry import ModelRegistry

    frame = pd.read_parquet(trained_models.models_dir / "training_set.parquet")
    X = frame[trained_models.feature_names].astype("float64").to_numpy()
    inverted = 1 - frame["is_fraud"].to_numpy()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(X, label=inverted, missing=np.nan),
        num_boost_round=20,
    )
    registry = ModelRegistry(client.settings)
    _ = registry.client
    bad = registry.register(
        booster,
        feature_names=trained_models.feature_names,
        feature_types=trained_models.feature_types,
        feature_service=client.settings.feature_service,
        metrics={"rows": float(len(X))},
        params={"inverted": True},
        lineage={"fingerprint": "inverted"},
        training_set_path=trained_models.models_dir / "training_set.parquet",
    )
    golden_before = registry.golden().version
    r = client.post(
        f"/v1/models/{bad.version}/promote", json={"reason": "should be refused"}, headers={"X-API-Key": "test-key"}
    )
    assert r.status_code == 409, r.text
    assert "refused" in r.text
    assert ModelRegistry(client.settings).golden().version == golden_before
    assert client.post("/v1/predict", json=GOOD).json()["model"]["version"] == golden_before
