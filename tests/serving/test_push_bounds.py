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
from mlplatform.features.online import check_event_times, push_columns, push_event, push_frame, push_value
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


# --- values of the wrong type: refused before anything is written -------------------------------------------------
C, D = 4262, 4263  # two more customers no other test writes
BAD_VALUES = [  # (column of rows[1], value, what the problem says); rows[0] is always good
    ("last_amount", "abc", "must be a finite number, got a string"),
    ("last_amount", [1.0], "got a list"),
    ("last_amount", {"x": 1}, "got an object"),
    ("last_amount", True, "got a boolean"),
    ("last_amount", float("nan"), "got nan"),
    ("last_amount", float("inf"), "got inf"),
    ("last_amount", 10**400, "must be a finite number"),
    ("last_merchant_id", "10001", "must be an integer (int64), got a string"),
    ("last_merchant_id", 10001.5, "got 10001.5"),
    ("last_merchant_id", False, "got a boolean"),
    ("last_merchant_id", 2**63, "outside int64"),
    ("customer_id", None, "missing"),
    ("customer_id", 2**63, "9223372036854775808 is outside int64"),
    ("customer_id", -(2**63) - 1, "outside int64"),
    ("customer_id", C + 0.5, "must be an integer (int64), got 4262.5"),
    ("customer_id", str(C), "got a string"),
    ("customer_id", [C], "got a list"),
    ("customer_id", True, "got a boolean"),
    ("event_timestamp", None, "missing"),
    ("event_timestamp", [1], "not a time"),
    ("last_amont", 3.0, "not a column of push source 'customer_realtime_push'"),  # a typo is refused, not dropped
    ("created_timestmp", 1, "not a column"),
]


def _db_state(db) -> dict:
    """Every key of the database with its hash (or, for other types, its type), byte for byte."""
    keys = sorted(db.scan_iter(count=1000))
    with db.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.type(k)
        types = pipe.execute()
        for k, t in zip(keys, types, strict=True):
            (pipe.hgetall if t == b"hash" else pipe.type)(k)
        return dict(zip(keys, pipe.execute(), strict=True))


def _stored(db, customer_id: int) -> tuple:
    """(last_amount, last_merchant_id, event time in µs) Redis holds for ``customer_id``."""
    stored = db.hgetall(_key(customer_id))
    return (decode_value(stored[feature_field("customer_realtime", "last_amount")]),
            decode_value(stored[feature_field("customer_realtime", "last_merchant_id")]),
            timestamp_micros(stored[timestamp_field("customer_realtime").encode()]))


def _post(client, rows: list[dict]) -> httpx.Response:
    import json

    # NaN and Infinity as Python's json writes them (FastAPI reads them back as floats)
    return client.post("/v1/push", content=json.dumps({"rows": rows}), headers={**ADMIN, "Content-Type":
                                                                                  "application/json"})


def test_a_value_of_the_wrong_type_is_refused_naming_its_cell_and_changes_nothing(client, redis_dbs):
    db = redis_dbs.client(0)
    now = int(time.time())
    assert _post(client, [_row(C, 1.25, now - 600)]).status_code == 200
    before = _db_state(db)
    assert _stored(db, C) == (1.25, 10001, (now - 600) * 1_000_000), "the accepted push reached Redis"

    for column, value, says in BAD_VALUES:
        bad = {**_row(C, 2.5, now - 5), column: value}
        r = _post(client, [_row(C, 9.5, now - 10), bad])
        assert r.status_code == 422, (column, value, r.text)
        body = r.json()
        assert body["error"] == "InvalidInputError" and "Traceback" not in r.text, body
        assert body["fields"][0]["field"] == f"body.rows[1].{column}", (column, value, body)
        assert says in body["fields"][0]["problem"], (column, value, body)
        assert _db_state(db) == before, f"a refused push ({column}={value!r}) wrote something"

    # a column name that cannot be a field name is named by its row, and shown in the problem
    r = _post(client, [_row(C, 9.5, now - 10), {**_row(C, 2.5, now - 5), "a b": 1}])
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.rows[1]", r.text
    assert "'a b' is not a column" in r.json()["fields"][0]["problem"]
    # every bad value is counted, the first is named
    r = _post(client, [{**_row(C, 1.0, now), "last_amount": "x"}, {**_row(C, 1.0, now), "customer_id": None}])
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.rows[0].last_amount", r.text
    assert "and 1 more bad values" in r.json()["detail"]
    # an int64 beyond +-2^53 next to a null in its column would reach Redis rounded (Feast reads such a column as
    # floats): refused, and accepted on its own
    big = 2**53 + 1
    r = _post(client, [{**_row(C, 1.0, now - 4), "last_merchant_id": None},
                       {**_row(D, 1.0, now - 4), "last_merchant_id": big}])
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.rows[1].last_merchant_id", r.text
    assert _db_state(db) == before

    # and a good push still works, null features, an integral float id and the int64 edges included (oracle: the
    # bytes Redis holds)
    r = _post(client, [{**_row(C, 7.75, now - 3), "last_merchant_id": None},
                       {**_row(D, 3, now - 3), "customer_id": float(D), "last_merchant_id": 10002}])
    assert r.status_code == 200 and r.json()["rows"] == 2, r.text
    assert _stored(db, C) == (7.75, None, (now - 3) * 1_000_000)
    assert _stored(db, D) == (3.0, 10002, (now - 3) * 1_000_000)
    r = _post(client, [{**_row(C, 1.0, now - 2), "last_merchant_id": big},
                       {**_row(D, 1.0, now - 2), "last_merchant_id": 2**63 - 1}])
    assert r.status_code == 200, r.text
    assert (_stored(db, C)[1], _stored(db, D)[1]) == (big, 2**63 - 1)


@pytest.mark.parametrize(("value", "value_type", "expected"), [
    (2**63 - 1, "INT64", 2**63 - 1), (-(2**63), "INT64", -(2**63)), (3.0, "INT64", 3), (-0.0, "INT64", 0),
    (2**31 - 1, "INT32", 2**31 - 1), (-(2**31), "INT32", -(2**31)),
    (7, "DOUBLE", 7.0), (1.7976931348623157e308, "DOUBLE", 1.7976931348623157e308),
    (3.4028234663852886e38, "FLOAT", 3.4028234663852886e38), (0.5, "FLOAT", 0.5),
    ("", "STRING", ""), ("é", "STRING", "é"), (True, "BOOL", True), (False, "BOOL", False),
])
def test_push_value_takes_each_type_up_to_its_edges(value, value_type, expected):
    got = push_value(value, value_type)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("value", "value_type"), [
    (2**63, "INT64"), (-(2**63) - 1, "INT64"), (2**31, "INT32"), (-(2**31) - 1, "INT32"), (1e19, "INT64"),
    (0.5, "INT64"), (float("nan"), "INT64"), ("1", "INT64"), (True, "INT64"), ([1], "INT32"),
    (3.5e38, "FLOAT"), (float("-inf"), "DOUBLE"), (2**1024, "DOUBLE"), ("1.5", "DOUBLE"), (False, "DOUBLE"),
    (1, "STRING"), (1.5, "STRING"), (None, "STRING"), ({"a": "b"}, "STRING"), (1, "BOOL"), ("true", "BOOL"),
])
def test_push_value_refuses_what_does_not_fit(value, value_type):
    with pytest.raises(ValueError, match=r"must be|outside"):
        push_value(value, value_type)


def test_push_frame_refuses_a_type_a_push_cannot_carry_and_types_what_it_takes():
    rows = [{"k": 1, "f": None, "b": True, "s": "x", "t": 5}, {"k": 2, "f": 2, "b": None, "s": None, "t": 6}]
    columns = {"k": "INT64", "f": "DOUBLE", "b": "BOOL", "s": "STRING"}
    frame = push_frame(rows, columns, {"k"}, "t", "created", "src")
    assert list(frame.columns) == ["k", "f", "b", "s", "t"]  # an absent optional time stays absent
    assert frame["k"].tolist() == [1, 2] and frame["f"].isna().tolist() == [True, False] and frame["f"][1] == 2.0
    assert frame["b"].tolist()[0] is True and frame["b"].isna().tolist() == [False, True]
    assert frame["s"].tolist() == ["x", None]
    with pytest.raises(InvalidInputError, match=r"^push_source: 'src' has columns of a type .*v \(INT64_LIST\)"):
        push_frame(rows, {**columns, "v": "INT64_LIST"}, {"k"}, "t", None, "src")
    with pytest.raises(InvalidInputError, match=r"^rows: every row needs t for push source 'src'"):
        push_frame([{"k": 1, "f": 1.0, "b": True, "s": "x"}], columns, {"k"}, "t", None, "src")


def test_push_columns_are_typed_as_the_definitions_say(store):
    views = [v for v in store.list_stream_feature_views() + store.list_feature_views()
             if v.stream_source is not None and v.stream_source.name == "customer_realtime_push"]
    # oracle: feature_repo/entities.py (customer: INT64) and views.py (customer_realtime's schema)
    assert push_columns(views) == ({"customer_id": "INT64", "last_amount": "DOUBLE", "last_merchant_id": "INT64"},
                                   {"customer_id"})
