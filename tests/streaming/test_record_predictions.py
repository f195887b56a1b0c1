"""Transactions /v1/predict scored join the events stream off the request path (serving_record_events), with the
request's transaction id (or a generated one), its amount and time; refused requests and a service with the
setting off add nothing. Oracle: the stream entries Redis holds (XRANGE) against the requests sent."""

from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient

from serving.app import create_app
from tests.conftest import make_settings
from tests.serving.conftest import set_aliases
from tests.streaming.conftest import ADMIN, STREAM


def _settings(applied_world, trained_models, redis_addr, tmp_path, **overrides):
    settings = make_settings(tmp_path / "svc", registry=applied_world.layout.registry_path, redis_addr=redis_addr,
                             models_dir=trained_models.models_dir, serving_api_key=ADMIN["X-API-Key"],
                             serving_latency_budget_ms=0.0, **overrides)
    set_aliases(settings, golden=trained_models.versions[0])
    return settings


def _txn(i: int, now: int, with_id: bool = True) -> dict:
    body = {"customer_id": 1000 + i, "merchant_id": 10_001 + i, "amount": 10.25 * (i + 1), "transaction_ts": now - i}
    return {**body, "transaction_id": f"rec-{i}"} if with_id else body


def _entries(client) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(STREAM)]


def test_scored_transactions_join_the_stream(applied_world, trained_models, redis_addr, redis_db, tmp_path):
    settings = _settings(applied_world, trained_models, redis_addr, tmp_path)
    now = int(time.time())
    sent = [_txn(0, now), _txn(1, now, with_id=False)]
    batch = [_txn(i, now) for i in range(2, 5)]
    with TestClient(create_app(settings)) as client:
        for body in sent:
            assert client.post("/v1/predict", json=body).status_code == 200
        assert client.post("/v1/predict/batch", json={"transactions": batch}).status_code == 200
        refused = client.post("/v1/predict", json={**_txn(9, now), "amount": -1.0})
        assert refused.status_code == 422
        deadline = time.monotonic() + 5
        while redis_db.xlen(STREAM) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        metrics = client.get("/metrics").text
    entries = _entries(redis_db)
    assert len(entries) == 5, entries  # the refused one is not there
    expected = [*sent, *batch]
    for got, body in zip(entries, expected, strict=True):
        assert int(got["customer_id"]) == body["customer_id"] and int(got["merchant_id"]) == body["merchant_id"]
        assert float(got["amount"]) == body["amount"] and int(got["ts_us"]) == body["transaction_ts"] * 1_000_000
        if "transaction_id" in body:
            assert got["transaction_id"] == body["transaction_id"]
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", got["transaction_id"]), got
    assert "mlplatform_events_recorded_total 5.0" in metrics


def test_shutdown_drains_what_is_queued(applied_world, trained_models, redis_addr, redis_db, tmp_path):
    settings = _settings(applied_world, trained_models, redis_addr, tmp_path)
    now = int(time.time())
    batch = [_txn(i, now) for i in range(200)]
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/predict/batch", json={"transactions": batch}).status_code == 200
    # the service stopped right after answering: the recorder appended everything on the way out
    assert sorted(e["transaction_id"] for e in _entries(redis_db)) == sorted(b["transaction_id"] for b in batch)


def test_with_recording_off_nothing_joins(applied_world, trained_models, redis_addr, redis_db, tmp_path):
    settings = _settings(applied_world, trained_models, redis_addr, tmp_path, serving_record_events=False)
    now = int(time.time())
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/predict", json=_txn(0, now)).status_code == 200
        assert client.post("/v1/predict/batch", json={"transactions": [_txn(1, now)]}).status_code == 200
        time.sleep(0.3)
    assert not redis_db.exists(STREAM)
