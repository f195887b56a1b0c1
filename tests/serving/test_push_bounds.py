"""POST /v1/push refuses event times beyond the allowed clock skew (422 naming the field) and writes nothing then;
a time within it is written. Without the bound one far-future push pins an entity: Feast keeps the newest row, so
every later write (materialize --full included) would be skipped as older."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest

from mlplatform.contracts.redis_layout import (
    decode_value,
    entity_key,
    feature_field,
    timestamp_field,
    timestamp_micros,
)
from mlplatform.errors import InvalidInputError
from mlplatform.features.online import check_event_times, push_event
from serving.app import create_app
from tests.conftest import make_settings
from tests.serving.conftest import set_aliases

SKEW = 60.0
ADMIN = {"X-API-Key": "test-key"}
A, B = 4260, 4261  # customers no other test writes


@pytest.fixture()
def client(serving_settings, trained_models, live_server):
    settings = serving_settings(serving_max_clock_skew=SKEW)
    set_aliases(settings, golden=trained_models.versions[0])
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        yield c


def _key(customer_id: int) -> bytes:
    return entity_key(["customer_id"], ["Int64"], [customer_id], b"fraud", 3)


def _snapshot(db) -> tuple[int, dict, dict]:
    """The whole database's size and the two customers' hashes, byte for byte."""
    return db.dbsize(), db.hgetall(_key(A)), db.hgetall(_key(B))


def _row(customer_id: int, amount: float, when) -> dict:
    return {"customer_id": customer_id, "last_amount": amount, "last_merchant_id": 10001, "event_timestamp": when}


def test_a_push_from_beyond_the_clock_skew_is_refused_and_changes_nothing(client, redis_dbs):
    db = redis_dbs.client(0)  # the online world's database: the one the service writes to
    now = int(time.time())
    assert client.post("/v1/push", json={"rows": [_row(A, 1.5, now - 600)]}, headers=ADMIN).status_code == 200
    before = _snapshot(db)
    assert before[1], "the accepted push reached Redis"

    for when, says in ((now + 3600, f"more than {SKEW:g} s ahead"), (now + int(SKEW) + 5, f"more than {SKEW:g} s"),
                       ("9999-01-01T00:00:00Z", "not a time"), (1e20, "not a time")):
        r = client.post("/v1/push", json={"rows": [_row(A, 2.5, now - 10), _row(B, 3.5, when)]}, headers=ADMIN)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert "rows[1].event_timestamp" in detail and says in detail and "Traceback" not in r.text, detail
        assert _snapshot(db) == before, "a refused push wrote something (all rows are refused together)"

    created_late = {**_row(A, 2.5, now - 10), "created_timestamp": now + 3600}
    r = client.post("/v1/push", json={"rows": [created_late]}, headers=ADMIN)
    assert r.status_code == 422 and "rows[0].created_timestamp" in r.json()["detail"], r.text
    assert _snapshot(db) == before

    # the entity is not pinned: a push of now replaces the older value (oracle: the bytes Redis holds)
    assert client.post("/v1/push", json={"rows": [_row(A, 4.25, now)]}, headers=ADMIN).status_code == 200
    stored = db.hgetall(_key(A))
    assert decode_value(stored[feature_field("customer_realtime", "last_amount")]) == 4.25
    assert timestamp_micros(stored[timestamp_field("customer_realtime").encode()]) == now * 1_000_000


def test_a_push_within_the_clock_skew_is_written(client, redis_dbs):
    db = redis_dbs.client(0)
    ahead = int(time.time()) + int(SKEW) - 20  # a sender whose clock runs 40 s ahead: accepted
    r = client.post("/v1/push", json={"rows": [_row(B, 8.75, ahead)]}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert decode_value(db.hgetall(_key(B))[feature_field("customer_realtime", "last_amount")]) == 8.75


def test_check_event_times_on_the_exact_edge():
    now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    edge = pd.Timestamp(now) + pd.Timedelta(seconds=SKEW)
    frame = pd.DataFrame({"event_timestamp": [pd.Timestamp(now) - pd.Timedelta(days=3), edge]})
    check_event_times(frame, ["event_timestamp"], now, SKEW)  # now + skew itself is allowed
    frame.loc[1, "event_timestamp"] = edge + pd.Timedelta(microseconds=1)
    with pytest.raises(InvalidInputError, match=r"rows\[1\]\.event_timestamp: .* 1 of 2 rows"):
        check_event_times(frame, ["event_timestamp"], now, SKEW)
    frame.loc[1, "event_timestamp"] = pd.NaT
    with pytest.raises(InvalidInputError, match=r"rows\[1\]\.event_timestamp: missing"):
        check_event_times(frame, ["event_timestamp"], now, SKEW)


def test_the_cli_push_refuses_a_future_time_before_touching_redis(tmp_path):
    settings = make_settings(tmp_path, serving_max_clock_skew=SKEW)  # NO_REDIS: refused before any connection
    with pytest.raises(InvalidInputError, match=r"event_timestamp"):
        push_event(settings, A, 1.0, 10001, when=datetime.now(UTC) + timedelta(hours=1))
