"""Feast's ``customer_activity`` online row kept fresh by `mlplatform stream run` (a real consumer process).

A small world is applied and materialized (Feast's rows up to its end, the event logs backfilled); then stream
events arrive after its end, for customers with history and new ones. Oracles: ``tests.oracles.customer_state``
(brute force over the raw transactions plus the streamed events, at each customer's newest event, the event
included), Feast's own ``get_online_features`` and Feast's own writer (``write_to_online_store``) for the bytes,
the service's reader with stream features at t = e + 1 µs, and rows planted by hand."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from tests.conftest import make_settings, process_environ
from tests.oracles import customer_state, read_raw
from tests.streaming.conftest import GROUP, STREAM

MLPLATFORM = Path(sys.executable).parent / "mlplatform"
VIEW = "customer_activity"
FEATURES = ["txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h", "amount_sum_7d",
            "amount_mean_7d", "distinct_merchants_24h", "last_txn_epoch"]  # the view's schema, feature_repo/views.py
COVERAGE = "mlplatform:activity-log"  # the contract's coverage hash (field <project>:from)
US = 1_000_000


@dataclass(frozen=True)
class Event:
    transaction_id: str
    customer_id: int
    merchant_id: int
    amount: float
    ts_us: int

    def fields(self) -> dict:
        return {"transaction_id": self.transaction_id, "customer_id": str(self.customer_id),
                "merchant_id": str(self.merchant_id), "amount": repr(self.amount), "ts_us": str(self.ts_us)}


def _key(customer_id: int) -> bytes:
    """Feast's own Redis key of a customer."""
    entity = EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=customer_id)])
    return _redis_key("fraud", entity, entity_key_serialization_version=3)


def _ts_bytes(ts_us: int) -> bytes:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromtimestamp(0, UTC) + timedelta(microseconds=ts_us))
    return ts.SerializeToString()


def _stored_ts_us(client, customer_id: int) -> int | None:
    raw = client.hget(_key(customer_id), f"_ts:{VIEW}")
    if raw is None:
        return None
    ts = Timestamp.FromString(raw)
    return ts.seconds * US + ts.nanos // 1000


def _activity_fields(client, customer_id: int) -> dict[bytes, bytes]:
    """The view's fields of a customer's hash (the hash holds other views' fields too)."""
    names = [f"_ts:{VIEW}".encode()] + [_mmh3(f"{VIEW}:{f}") for f in FEATURES]
    return dict(zip(names, client.hmget(_key(customer_id), names), strict=True))


def _xadd(client, events: list[Event]) -> None:
    pipe = client.pipeline(transaction=False)
    for e in events:
        pipe.xadd(STREAM, e.fields())
    pipe.execute()


def _consume(settings) -> str:
    """``mlplatform stream run`` as its own process, until the stream is drained."""
    done = subprocess.run([str(MLPLATFORM), "stream", "run", "--consumer", "feast-rows", "--quiet", "--idle-exit",
                           "0.5"], capture_output=True, text=True, env=process_environ(settings), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def _oracle(history: pd.DataFrame, events: list[Event], customer_id: int, at_us: int) -> dict:
    """customer_state over the customer's raw transactions and streamed events, at ``at_us`` (included)."""
    streamed = pd.DataFrame({
        "customer_id": [e.customer_id for e in events if e.customer_id == customer_id],
        "merchant_id": [e.merchant_id for e in events if e.customer_id == customer_id],
        "amount": [e.amount for e in events if e.customer_id == customer_id],
        "event_timestamp": pd.to_datetime([e.ts_us for e in events if e.customer_id == customer_id], unit="us",
                                          utc=True),
    })
    mine = history[history["customer_id"] == customer_id][["customer_id", "merchant_id", "amount", "event_timestamp"]]
    tx = pd.concat([mine, streamed], ignore_index=True)
    tx["event_timestamp"] = tx["event_timestamp"].astype("datetime64[us, UTC]")
    return customer_state(tx, pd.Timestamp(at_us, unit="us", tz="UTC"))


def _assert_matches_oracle(got: dict, want: dict, customer_id: int) -> None:
    for name in FEATURES:
        g, w = got[name], want[name]
        if name.startswith("amount_"):  # rounded to 6 decimals, as the offline SQL does
            assert g is not None and abs(g - w) <= 5.1e-7, (customer_id, name, g, w)
        else:
            assert g == w, (customer_id, name, g, w)


def _online(store, customers: list[int]) -> dict[int, dict]:
    """Feast's get_online_features of the view, per customer."""
    got = store.get_online_features(features=[f"{VIEW}:{f}" for f in FEATURES],
                                    entity_rows=[{"customer_id": c} for c in customers]).to_dict()
    return {c: {f: got[f][i] for f in FEATURES} for i, c in enumerate(got["customer_id"])}


@pytest.fixture()
def fed(world, redis_db, redis_addr):
    """The small world applied and materialized into this run's first database: Feast's rows up to the end of its
    raw data, the event logs backfilled (complete from the beginning of the data)."""
    from mlplatform.features.definitions import apply_definitions
    from mlplatform.features.materialize import materialize
    from mlplatform.features.pipelines import raw_watermark

    settings = make_settings(world, redis_addr=redis_addr, stream_batch_size=7)
    apply_definitions(settings, validate=False)
    end = raw_watermark(world).to_pydatetime()
    materialize(settings, end=end, on_note=None)
    assert redis_db.hget(COVERAGE, "fraud:from") is not None
    history = read_raw(world)["transactions"]
    return settings, history, int(pd.Timestamp(end).value // 1000)


def _stream_events(history: pd.DataFrame, end_us: int, seed: int) -> tuple[list[Event], list[int]]:
    """Events after the world's end for its 8 busiest customers and 2 new ones, µs precision, out of order."""
    rng = random.Random(seed)
    busiest = history["customer_id"].value_counts().index[:8].tolist()
    customers = [int(c) for c in busiest] + [990_001, 990_002]
    events = [Event(f"s{seed}-{i}", rng.choice(customers), rng.randrange(10_000, 10_020),
                    round(rng.uniform(1.0, 500.0), 2), end_us + rng.randrange(60 * US, 3 * 86_400 * US))
              for i in range(120)]
    rng.shuffle(events)
    return events, customers


def test_feast_serves_each_touched_customer_its_row_at_its_newest_event(fed, redis_db):
    from mlplatform.stores import open_feature_store

    settings, history, end_us = fed
    events, customers = _stream_events(history, end_us, seed=1)
    newest = {c: max(e.ts_us for e in events if e.customer_id == c) for c in customers}
    before = {c: _stored_ts_us(redis_db, c) for c in customers}
    assert all(before[c] is not None and before[c] < end_us for c in customers[:8])  # materialized, older
    assert before[990_001] is None and before[990_002] is None
    _xadd(redis_db, events + events[::4])  # some delivered twice
    _consume(settings)

    store = open_feature_store(settings)
    online = _online(store, customers)
    for c in customers:
        assert _stored_ts_us(redis_db, c) == newest[c]  # the stale materialized row was replaced
        _assert_matches_oracle(online[c], _oracle(history, events, c, newest[c]), c)


def test_feast_agrees_with_the_service_from_the_logs_at_the_next_microsecond(fed, redis_db):
    from mlplatform.stores import open_feature_store
    from serving.online_features import OnlineFeatureReader

    settings, history, end_us = fed
    events, customers = _stream_events(history, end_us, seed=2)
    _xadd(redis_db, events)
    _consume(settings)
    newest = {c: max(e.ts_us for e in events if e.customer_id == c) for c in customers}

    store = open_feature_store(settings)
    online = _online(store, customers)
    reader = OnlineFeatureReader(store, store.get_feature_service("fraud_model_v1"), stream_features=True)
    merchant = int(history["merchant_id"].iloc[0])
    for c in customers:
        t_us = newest[c] + 1
        served = reader.fetch_sync(redis_db, [{"customer_id": c, "merchant_id": merchant, "amount": 10.0,
                                               "transaction_ts": t_us // US}], [t_us])
        assert served.from_logs == [True]
        for name in FEATURES[:-1]:  # the service's features (last_txn_epoch only feeds an on-demand one)
            assert served.values[0][name] == online[c][name], (c, name)
        assert served.values[0]["seconds_since_last_txn"] == t_us // US - online[c]["last_txn_epoch"]


def test_the_bytes_are_feasts_own(fed, redis_db):
    """Feast's own writer, given the oracle's row at the same time, leaves exactly the bytes the consumer wrote."""
    from mlplatform.stores import open_feature_store

    settings, history, end_us = fed
    events, customers = _stream_events(history, end_us, seed=3)
    _xadd(redis_db, events)
    _consume(settings)
    store = open_feature_store(settings)
    for c in customers[:3] + customers[-1:]:
        at = max(e.ts_us for e in events if e.customer_id == c)
        ours = _activity_fields(redis_db, c)
        redis_db.hdel(_key(c), *ours)
        want = _oracle(history, events, c, at)
        row = {"customer_id": c, "event_timestamp": pd.Timestamp(at, unit="us", tz="UTC"),
               "created_timestamp": pd.Timestamp(at, unit="us", tz="UTC"),
               **{f: round(v, 6) if f.startswith("amount_") else v for f, v in want.items()}}
        frame = pd.DataFrame([row]).astype({f: "float64" if f.startswith("amount_") else "int64" for f in FEATURES})
        store.write_to_online_store(VIEW, frame)
        assert _activity_fields(redis_db, c) == ours, c


def test_a_newer_stored_row_is_kept_and_an_older_one_replaced(fed, redis_db):
    settings, history, end_us = fed
    events, customers = _stream_events(history, end_us, seed=4)
    newest = {c: max(e.ts_us for e in events if e.customer_id == c) for c in customers}
    keep, replace = customers[0], customers[1]
    sentinel = Value(int64_val=999_999).SerializeToString()
    one_h = _mmh3(f"{VIEW}:txn_count_1h")
    # a row one microsecond newer than the customer's newest event (a materialized window exit, say), one older
    redis_db.hset(_key(keep), mapping={f"_ts:{VIEW}": _ts_bytes(newest[keep] + 1), one_h: sentinel})
    redis_db.hset(_key(replace), mapping={f"_ts:{VIEW}": _ts_bytes(newest[replace] - 1), one_h: sentinel})
    planted = _activity_fields(redis_db, keep)
    _xadd(redis_db, events)
    _consume(settings)
    assert _activity_fields(redis_db, keep) == planted  # not a byte changed
    assert _stored_ts_us(redis_db, replace) == newest[replace]
    assert redis_db.hget(_key(replace), one_h) != sentinel

    redis_db.hset(_key(keep), f"_ts:{VIEW}", _ts_bytes(newest[keep] + 86_400 * US))
    later = Event("later-1", keep, 10_001, 12.5, newest[keep] + 3600 * US)  # still older than the planted row
    _xadd(redis_db, [later])
    _consume(settings)
    assert redis_db.hget(_key(keep), one_h) == sentinel


def test_a_late_event_corrects_the_row_at_the_newest_event(fed, redis_db):
    from mlplatform.stores import open_feature_store

    settings, history, end_us = fed
    events, customers = _stream_events(history, end_us, seed=5)
    _xadd(redis_db, events)
    _consume(settings)
    c = customers[2]
    top = max(e.ts_us for e in events if e.customer_id == c)
    late = Event("late-1", c, 10_007, 77.25, top - 1800 * US)  # inside every window of the newest event's row
    _xadd(redis_db, [late])
    _consume(settings)
    assert _stored_ts_us(redis_db, c) == top
    got = _online(open_feature_store(settings), [c])[c]
    want = _oracle(history, events + [late], c, top)
    _assert_matches_oracle(got, want, c)
    assert got["txn_count_1h"] == _oracle(history, events, c, top)["txn_count_1h"] + 1


def test_without_complete_logs_no_row_is_written(stream_settings, redis_db):
    """No backfill ever ran (no coverage): the logs hold only what the stream brought, so no row is written."""
    settings = stream_settings()
    now_us = int(datetime.now(UTC).timestamp() * US)
    events = [Event(f"u-{i}", 4242 + i % 3, 10_000, 5.0, now_us - i * 60 * US) for i in range(30)]
    _xadd(redis_db, events)
    _consume(settings)
    assert all(_stored_ts_us(redis_db, 4242 + k) is None for k in range(3))
    assert redis_db.xpending(STREAM, GROUP)["pending"] == 0

    # logs complete only from 3 days ago: a row whose 7-day window reaches further back is not written either
    redis_db.hset(COVERAGE, "fraud:from", now_us - 3 * 86_400 * US)
    _xadd(redis_db, [Event("u-new", 4242, 10_000, 5.0, now_us + 1)])
    _consume(settings)
    assert _stored_ts_us(redis_db, 4242) is None
    redis_db.hset(COVERAGE, "fraud:from", now_us - 8 * 86_400 * US)
    _xadd(redis_db, [Event("u-new2", 4242, 10_000, 5.0, now_us + 2)])
    _consume(settings)
    assert _stored_ts_us(redis_db, 4242) == now_us + 2


def test_each_key_is_written_only_over_an_older_or_same_instant_row(redis_db):
    """The write script against stored Timestamps serialized by protobuf itself (the epoch is empty bytes; nanos
    alone; seconds alone; 5-byte seconds varints), compared with plain integer arithmetic: the oracle."""
    from mlplatform.features.activity_rows import SCRIPTS, ActivityRow, encode_rows, queue_writes

    for script in SCRIPTS:
        redis_db.script_load(script)
    features = {f: 1.5 if f.startswith("amount_") else 3 for f in FEATURES}
    stored_at = [0, 1, 999_999, US, 1_700_000_000 * US, 1_700_000_000 * US + 123_456, 4_102_444_800 * US + 999_999]
    cases = []  # (customer, stored µs, row µs)
    for stored in stored_at:
        for delta in (-1, 0, 1, -US, US):
            if stored + delta >= 0:
                cases.append((100_000 + len(cases), stored, stored + delta))
    sentinel = Value(int64_val=-7).SerializeToString()
    one_h = _mmh3(f"{VIEW}:txn_count_1h")
    for customer, stored, _ in cases:
        redis_db.hset(_key(customer), mapping={f"_ts:{VIEW}": _ts_bytes(stored), one_h: sentinel})
    assert redis_db.hget(_key(cases[0][0]), f"_ts:{VIEW}") == b""  # the epoch itself: an empty Timestamp
    garbage, absent, wrong_type = 200_001, 200_002, 200_003
    redis_db.hset(_key(garbage), f"_ts:{VIEW}", b"\x08\xff")  # a varint cut short
    redis_db.set(_key(wrong_type), "not a hash")
    rows = [ActivityRow(c, at, features) for c, _, at in cases]
    rows += [ActivityRow(c, 5 * US, features) for c in (garbage, absent, wrong_type)]
    pipe = redis_db.pipeline(transaction=False)
    queue_writes(pipe, encode_rows("fraud", rows))
    replies = [r for chunk in pipe.execute() for r in chunk]
    want = [0 if stored > at else 1 for _, stored, at in cases] + [1, 1, -1]
    assert replies == want
    for (customer, stored, at), written in zip(cases, want, strict=False):
        assert _stored_ts_us(redis_db, customer) == (at if written else stored)
        assert (redis_db.hget(_key(customer), one_h) == sentinel) == (not written)
    assert _stored_ts_us(redis_db, garbage) == 5 * US and _stored_ts_us(redis_db, absent) == 5 * US
    assert redis_db.get(_key(wrong_type)) == b"not a hash"


def test_the_field_names_and_types_are_the_views(store):
    """Feast's own field hashes, and the value types of the view as the registry holds it."""
    from mlplatform.features.activity import FEATURES as CORE_FEATURES
    from mlplatform.features.activity_rows import FEATURE_FIELDS, FEATURE_TYPES

    view = store.get_feature_view(VIEW)
    assert [f.name for f in view.features] == FEATURES == list(CORE_FEATURES)
    assert FEATURE_FIELDS == tuple(_mmh3(f"{VIEW}:{f}") for f in FEATURES)
    assert {f.name: f.dtype.to_value_type().value for f in view.features} == FEATURE_TYPES
