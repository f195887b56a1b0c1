"""An empty online store does not look healthy: /readyz is not ready (503, with the reason) while Redis holds no
materialized watermark for a served view or holds it well behind the registry, and ready once `materialize` ran; a
prediction with no stored feature at all is marked `degraded` and counted, never a silent 200.

Oracles: the stored features are the feature service's non-on-demand projections as Feast's registry lists them;
"empty" is a database this test flushed itself; "behind" is a watermark this test wrote hours before the registry's
end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from mlplatform.contracts.redis_layout import MATERIALIZED_KEY, Watermark, project_watermarks
from serving.app import create_app
from serving.prediction import NO_STORED_FEATURES, degraded_reason
from serving.routes.health import online_store_status
from tests.serving.conftest import make_txns, set_aliases, txn_body

VIEWS = ["customer_activity", "merchant_risk", "customer_profile", "merchant_profile"]
END = datetime(2030, 1, 1, tzinfo=UTC)


def _stored_features(settings) -> list[str]:
    """The model's inputs Feast reads from stored views (the oracle for `missing` on an empty store)."""
    from mlplatform.stores import open_feature_store

    store = open_feature_store(settings)
    on_demand = {v.name for v in store.list_on_demand_feature_views()}
    service = store.get_feature_service(settings.feature_service)
    return [f.name for p in service.feature_view_projections if p.name not in on_demand for f in p.features]


def _degraded_count(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("mlplatform_degraded_predictions_total "):
            return float(line.split()[1])
    raise AssertionError("mlplatform_degraded_predictions_total is not on /metrics")


@pytest.fixture()
def empty_db(redis_dbs):
    """This run's second database, flushed before and after the test."""
    client = redis_dbs.flush(1)
    yield redis_dbs.addr(1), client
    client.flushdb()


def test_empty_online_store_is_not_ready_and_its_predictions_are_degraded(
    serving_settings, trained_models, live_server, empty_db, online_world
):
    from mlplatform.features.materialize import materialize

    addr, db = empty_db
    settings = serving_settings(redis_addr=addr, serving_cache_size=0)
    set_aliases(settings, golden=trained_models.versions[0])
    stored = _stored_features(settings)
    body = txn_body(next(make_txns(online_world, 1, seed=5, when=trained_models.scoring_time).itertuples()))
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        r = client.get("/readyz")
        checks = r.json()["checks"]
        assert r.status_code == 503, r.text
        assert checks["online_store"].startswith("empty") and "customer_activity" in checks["online_store"]
        assert "mlplatform materialize" in checks["online_store"]
        assert checks["redis"] == checks["model"] == checks["registry"] == "ok", checks  # only the data is missing

        p = client.post("/v1/predict", json=body)
        assert p.status_code == 200 and p.json()["fallback"] is False
        assert set(stored) <= set(p.json()["missing"])
        assert p.json()["degraded"] == NO_STORED_FEATURES
        batch = client.post("/v1/predict/batch", json={"transactions": [body, body]})
        assert [x["degraded"] for x in batch.json()["predictions"]] == [NO_STORED_FEATURES] * 2
        assert _degraded_count(client) == 3.0

        materialize(settings, end=END, full=True, views=VIEWS, on_note=None)
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"]["online_store"] == "ok", r.text
        p = client.post("/v1/predict", json=body)
        assert p.status_code == 200 and p.json()["degraded"] is None and p.json()["missing"] == []
        unknown = {**body, "customer_id": 50_000_001, "merchant_id": 60_000_001}
        assert client.post("/v1/predict", json=unknown).json()["degraded"] == NO_STORED_FEATURES
        assert _degraded_count(client) == 4.0

        db.flushdb()  # a Redis restart without persistence, or a FLUSHALL
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["online_store"].startswith("empty"), r.text


def test_readyz_is_not_ready_while_redis_is_behind_the_registry(
    serving_settings, trained_models, live_server, empty_db
):
    from mlplatform.features.materialize import materialize
    from mlplatform.stores import open_feature_store

    addr, db = empty_db
    settings = serving_settings(redis_addr=addr, serving_max_online_lag_seconds=3600)
    set_aliases(settings, golden=trained_models.versions[0])
    materialize(settings, end=END, full=True, views=VIEWS, on_note=None)
    project = open_feature_store(settings).project
    marks = project_watermarks(project, db.hgetall(MATERIALIZED_KEY))
    registry_end = open_feature_store(settings).get_feature_view("customer_activity").most_recent_end_time
    field = f"{project}:customer_activity"
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.get("/readyz").status_code == 200
        # an older snapshot came back: Redis holds the view only up to 2 h before the registry's end
        db.hset(MATERIALIZED_KEY, field, Watermark(registry_end - timedelta(hours=2), marks["customer_activity"].keys)
                .encode())
        r = client.get("/readyz")
        assert r.status_code == 503, r.text
        assert r.json()["checks"]["online_store"].startswith("behind: Redis holds customer_activity by 7,200 s")
        db.hset(MATERIALIZED_KEY, field, Watermark(registry_end - timedelta(minutes=30), 1).encode())  # within lag
        assert client.get("/readyz").status_code == 200


def test_online_store_status_judges_presence_and_lag():
    end = datetime(2026, 10, 16, tzinfo=UTC)
    ends = {"a": end, "b": None}
    mark = Watermark(end, 10)
    assert online_store_status({"a": mark, "b": Watermark(end, 0)}, ends, 60) == "ok"
    assert online_store_status({"a": mark}, ends, 60).startswith("empty: Redis holds no materialized watermark for b")
    assert online_store_status({"a": None, "b": mark}, ends, 60).startswith("empty")  # unreadable = absent
    exactly = {"a": Watermark(end - timedelta(seconds=60), 1), "b": mark}
    assert online_store_status(exactly, ends, 60) == "ok"  # at most the lag: ready
    over = {"a": Watermark(end - timedelta(seconds=61), 1), "b": mark}
    assert online_store_status(over, ends, 60).startswith("behind: Redis holds a by 61 s")
    assert online_store_status({"a": Watermark(end + timedelta(days=1), 1), "b": mark}, ends, 0) == "ok"  # ahead
    assert online_store_status(None, ends, 60).startswith("unknown")
    assert online_store_status({}, None, 60).startswith("empty")  # registry unread: any watermark at all
    assert online_store_status({"a": mark}, None, 60) == "ok"


def test_degraded_only_when_no_stored_input_has_a_value():
    stored = ["x", "y"]
    assert degraded_reason(stored, ["x", "y", "odf"], [], []) == NO_STORED_FEATURES
    assert degraded_reason(stored, ["x"], [], []) is None
    assert degraded_reason(stored, ["x"], ["y"], []).startswith("no usable stored features")
    assert degraded_reason(stored, [], ["x"], ["y"]) == ("no usable stored features for this transaction (0 missing, "
                                                         "1 older than their view's TTL, 1 newer than the transaction)")
    assert degraded_reason([], ["odf"], [], []) is None
