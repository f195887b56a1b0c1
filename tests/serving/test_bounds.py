"""Bounds at the edge: every request the service accepts can be scored (and explained); every other one is a 422 in
the one error shape that names the field, never a 500.

Oracles: the INT64 range is numpy's and Feast's own key serializer (the 500 the bound prevents); the time window's
edges are computed here from a fixed clock; explained answers obey SHAP's efficiency property (the contributions
add up to the score's log-odds), which the service does not compute.
"""

from __future__ import annotations

import math
import shutil
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serving.schemas import EdgeBounds, Transaction
from tests.conftest import make_settings
from tests.serving.conftest import set_aliases

DAY = 86_400
BOUNDS = EdgeBounds(max_amount=1e9, max_event_age_s=400 * DAY, max_clock_skew_s=300.0)
NOW = datetime(2026, 11, 29, 12, 0, 0, 123_456, tzinfo=UTC)
US = timedelta(microseconds=1)


def _txn(**fields) -> Transaction:
    return Transaction.model_validate({"customer_id": 1, "merchant_id": 2, "amount": 10.0, **fields})


def _problems(txn: Transaction) -> list[tuple[str, ...]]:
    return [tuple(map(str, p["loc"])) for p in BOUNDS.problems(txn, txn.time_us(NOW), NOW)]


# --- the model's own bounds (no service) ---------------------------------------------------------------------------
def test_entity_ids_are_bounded_by_feasts_int64_keys(store):
    """The bound is the entity key's type: Feast INT64 keys, whose serializer fails past it (the old 500)."""
    from feast import ValueType
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    for name in ("customer", "merchant"):
        assert store.get_entity(name).value_type == ValueType.INT64
    top = int(np.iinfo(np.int64).max)
    for key in ("customer_id", "merchant_id"):
        assert getattr(_txn(**{key: top}), key) == top
        serialize_entity_key(EntityKey(join_keys=[key], entity_values=[Value(int64_val=top)]), 3)
        with pytest.raises(ValueError):  # what a key of 2^63 did inside the service
            Value(int64_val=top + 1)
        for bad in (top + 1, -1, 1.5, "x"):
            with pytest.raises(ValidationError) as err:
                _txn(**{key: bad})
            assert [e["loc"] for e in err.value.errors()] == [(key,)]


def test_time_window_edges_are_exact():
    """[now - age, now + skew], both ends included, to the microsecond (timestamp) and second (transaction_ts)."""
    earliest, latest = NOW - timedelta(seconds=BOUNDS.max_event_age_s), NOW + timedelta(seconds=300)
    assert _problems(_txn(timestamp=earliest)) == []
    assert _problems(_txn(timestamp=latest)) == []
    assert _problems(_txn(timestamp=earliest - US)) == [("body", "timestamp")]
    assert _problems(_txn(timestamp=latest + US)) == [("body", "timestamp")]
    assert _problems(_txn()) == []  # no time: now
    late_s = math.floor(latest.timestamp())  # whole seconds: the last second inside the window
    assert _problems(_txn(transaction_ts=late_s)) == []
    assert _problems(_txn(transaction_ts=late_s + 1)) == [("body", "transaction_ts")]
    early_s = math.ceil(earliest.timestamp())
    assert _problems(_txn(transaction_ts=early_s)) == []
    assert _problems(_txn(transaction_ts=early_s - 1)) == [("body", "transaction_ts")]
    far = BOUNDS.problems(_txn(timestamp="9999-01-01T00:00:00Z"), _txn(timestamp="9999-01-01T00:00:00Z").time_us(NOW),
                          NOW, ("body", "transactions", 3))
    assert far[0]["loc"] == ("body", "transactions", 3, "timestamp") and "MAX_CLOCK_SKEW" in far[0]["msg"]


def test_amount_is_finite_and_capped():
    assert _problems(_txn(amount=1e9)) == [] and _problems(_txn(amount=0.0)) == []
    assert _problems(_txn(amount=float(np.nextafter(1e9, 2e9)))) == [("body", "amount")]
    assert _problems(_txn(amount=1e300)) == [("body", "amount")]
    for bad in (float("inf"), float("nan"), -0.01):
        with pytest.raises(ValidationError):
            _txn(amount=bad)


def test_times_beyond_any_clock_are_refused_by_the_schema():
    for bad in ({"transaction_ts": 10**20}, {"transaction_ts": -1}, {"timestamp": "yesterday-ish"}):
        with pytest.raises(ValidationError) as err:
            _txn(**bad)
        assert err.value.errors()[0]["loc"][0] in bad


def test_request_fields_are_bounded_in_count_and_size():
    ok = {f"f{i}": i for i in range(32)}
    assert _txn(request_fields=ok).request_fields == ok
    assert _txn(request_fields={"s": "x" * 256, "b": True, "f": 0.5, "n": -(2**63)}).request_fields["b"] is True
    for bad in ({f"f{i}": i for i in range(33)}, {"s": "x" * 257}, {"k" * 65: 1}, {"": 1}, {"f": float("inf")},
                {"n": 2**63}, {"amount": 5.0}, {"transaction_ts": 1}, {"nested": {"a": 1}}, {"list": [1]}):
        with pytest.raises(ValidationError) as err:
            _txn(request_fields=bad)
        assert all(e["loc"][0] == "request_fields" for e in err.value.errors()), err.value.errors()


# --- the service --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(online_world, trained_models, tmp_path_factory):
    """The app in-process (lifespan run), the golden v1 warm, this module's Redis database and models copy."""
    from serving.app import create_app

    data_dir = tmp_path_factory.mktemp("bounds-data")
    models_dir = data_dir / "models"
    shutil.copytree(trained_models.models_dir, models_dir)
    settings = make_settings(data_dir, registry=online_world.layout.registry_path, redis_addr=online_world.redis_addr,
                             models_dir=models_dir, serving_api_key="test-key", serving_latency_budget_ms=0.0,
                             feature_log_flush_seconds=0.2)
    set_aliases(settings, golden=trained_models.versions[0])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _from_now(seconds: int):
    """A transaction_ts ``seconds`` from now, taken when the test runs (not when it is collected)."""
    return lambda: int(time.time()) + seconds


def _now_body(**fields) -> dict:
    body = {"customer_id": 1, "merchant_id": 10001, "amount": 25.0, "transaction_ts": int(time.time()), **fields}
    return {k: v() if callable(v) else v for k, v in body.items()}


def _fields(r) -> list[str]:
    body = r.json()
    assert set(body) == {"error", "detail", "fields"}, body
    return [f["field"] for f in body["fields"]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"customer_id": 2**63}, "body.customer_id"),
        ({"merchant_id": 2**63}, "body.merchant_id"),
        ({"amount": 1e300}, "body.amount"),
        ({"transaction_ts": 10**20}, "body.transaction_ts"),
        ({"transaction_ts": None, "timestamp": "9999-01-01T00:00:00Z"}, "body.timestamp"),
        ({"transaction_ts": _from_now(-401 * DAY)}, "body.transaction_ts"),
        ({"transaction_ts": _from_now(3600)}, "body.transaction_ts"),
        ({"request_fields": {"note": "x" * 10_000}}, "body.request_fields.note"),
    ],
)
def test_out_of_bounds_requests_get_422_naming_the_field(service, change, field):
    """The inputs of the hardening issue that gave a 500 (or a silent 200), explained or not."""
    body = {k: v for k, v in _now_body(**change).items() if v is not None}
    for explain in ("false", "true"):
        r = service.post("/v1/predict", json=body, params={"explain": explain})
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "InvalidInputError"
        assert any(f == field or f.startswith(field + ".") for f in _fields(r)), r.json()
        assert field in r.json()["detail"] and "Traceback" not in r.text


def test_batch_names_the_transaction_out_of_bounds_and_scores_none(service):
    good = _now_body()
    r = service.post("/v1/predict/batch", json={"transactions": [good, {**good, "amount": 2e9}, good]})
    assert r.status_code == 422 and _fields(r) == ["body.transactions[1].amount"], r.text


def _assert_explained(answer: dict) -> None:
    """SHAP efficiency: the contributions (and bias) add up to the log-odds of the score."""
    contributions = answer["contributions"]
    assert contributions and all(math.isfinite(v) for v in contributions.values())
    score = answer["score"]
    assert 0 < score < 1
    assert sum(contributions.values()) == pytest.approx(math.log(score / (1 - score)), abs=2e-3)


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 1e9},  # the cap itself
        {"amount": 0.0},
        {"amount": 5e-324},  # the smallest positive float
        {"customer_id": 2**63 - 1, "merchant_id": 2**63 - 1},  # the largest keys (unknown: features missing)
        {"transaction_ts": None, "timestamp": None},  # now
        {"transaction_ts": _from_now(-399 * DAY)},  # near the window's old end
        {"transaction_ts": _from_now(240)},  # within the clock skew
        {"request_fields": {"channel": "web", "n": 2**63 - 1, "x": -1.5e308, "flag": False, "s": "é" * 256}},
    ],
)
def test_every_accepted_request_is_scored_and_explained(service, change):
    body = {k: v for k, v in _now_body(**change).items() if v is not None}
    r = service.post("/v1/predict", json=body, params={"explain": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["contributions_error"] is None
    _assert_explained(r.json())
    batch = service.post("/v1/predict/batch", json={"transactions": [body, body]}, params={"explain": "true"})
    assert batch.status_code == 200, batch.text
    for answer in batch.json()["predictions"]:
        _assert_explained(answer)


def test_an_explain_failure_answers_the_score_without_contributions(service, monkeypatch):
    """Whatever XGBoost may still refuse to explain costs the contributions, never the answer."""
    import xgboost

    from serving.model_pool import LoadedModel

    body = _now_body(customer_id=3, amount=42.0)
    plain = service.post("/v1/predict", json=body)
    assert plain.status_code == 200

    def refuse(self, X):
        raise xgboost.core.XGBoostError("[12:00:00] Check failed: std::isfinite(value)")

    monkeypatch.setattr(LoadedModel, "contributions", refuse)
    r = service.post("/v1/predict", json=body, params={"explain": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["contributions"] is None and "XGBoostError" in r.json()["contributions_error"]
    assert r.json()["score"] == plain.json()["score"]
    batch = service.post("/v1/predict/batch", json={"transactions": [body]}, params={"explain": "true"})
    assert batch.status_code == 200 and batch.json()["predictions"][0]["contributions"] is None


def test_the_services_own_errors_share_the_shape(service):
    """A typed InvalidInputError (push without a needed column) and FastAPI's validation error look alike."""
    key = {"X-API-Key": "test-key"}
    own = service.post("/v1/push", json={"rows": [{"customer_id": 1}]}, headers=key)
    assert own.status_code == 422 and own.json()["error"] == "InvalidInputError", own.text
    assert _fields(own) == ["body.rows"] and "last_amount" in own.json()["fields"][0]["problem"]
    fastapi = service.post("/v1/push", json={"rows": []}, headers=key)
    assert fastapi.status_code == 422 and fastapi.json()["error"] == "InvalidInputError"
    assert _fields(fastapi) == ["body.rows"]
    unauthorized = service.post("/v1/push", json={"rows": [{"customer_id": 1}]})
    assert unauthorized.status_code == 401 and _fields(unauthorized) == []
    bad_query = service.post("/v1/predict", json=_now_body(), params={"explain": "perhaps"})
    assert bad_query.status_code == 422 and _fields(bad_query) == ["query.explain"]
    bad_version = service.post("/v1/models/0/promote", json={}, headers=key)
    assert bad_version.status_code == 422 and _fields(bad_version) == ["path.version"]
