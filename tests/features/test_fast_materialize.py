"""The fast materialization engine against its oracle, Feast itself: the same views materialized by Feast into
one Redis database and by the fast engine into another (this run's two databases) must leave byte-identical keys,
fields and values."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from mlplatform.errors import InvalidInputError
from mlplatform.features.definitions import apply_definitions
from mlplatform.features.materialize import materialize
from mlplatform.features.pipelines import raw_watermark
from mlplatform.settings import Settings
from mlplatform.stores import open_feature_store
from tests.conftest import make_settings, redis_dump

BATCH_VIEWS = {"customer_activity", "customer_profile", "merchant_risk", "merchant_profile"}


def _customer_key(customer_id: int) -> bytes:
    """Feast's own Redis key of a customer."""
    entity = EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=customer_id)])
    return _redis_key("fraud", entity, entity_key_serialization_version=3)


def _ts(when: datetime) -> bytes:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts.SerializeToString()


def _plant(client: redis.Redis, newer: int, older: int) -> None:
    """A row newer than any offline row for one customer, an older one for another."""
    sentinel = Value(int64_val=999_999).SerializeToString()
    field = _mmh3("customer_activity:txn_count_1h")
    client.hset(_customer_key(newer), mapping={"_ts:customer_activity": _ts(datetime(2100, 1, 1, tzinfo=UTC)),
                                              field: sentinel})
    client.hset(_customer_key(older), mapping={"_ts:customer_activity": _ts(datetime(2000, 1, 1, tzinfo=UTC)),
                                              field: sentinel})


@pytest.fixture()
def two_dbs(world, redis_db, redis_dbs):
    """Settings for Feast's engine on this run's first database and for the fast engine, with a registry of its
    own, on the second (both empty)."""
    feast_settings = make_settings(world, materialize_engine="feast", redis_addr=redis_dbs.addr(0))
    fast_settings = make_settings(world, materialize_engine="fast", redis_addr=redis_dbs.addr(1),
                                  registry=world / "registry_fast.db")
    fast_client = redis_dbs.flush(1)
    yield feast_settings, fast_settings, redis_db, fast_client
    fast_client.flushdb()


def _materialize(settings: Settings, end: datetime):
    settings.export_feast_env()
    apply_definitions(settings, validate=False)
    return materialize(settings, end=end)


def test_fast_engine_writes_byte_identical_redis_and_registry(two_dbs):
    feast_settings, fast_settings, feast_client, fast_client = two_dbs
    end = raw_watermark(feast_settings.data_path).to_pydatetime()
    activity = pd.read_parquet(feast_settings.layout.features_dir / "customer_activity.parquet")
    newer, older = (int(c) for c in sorted(activity["customer_id"].unique())[:2])
    for client in (feast_client, fast_client):
        _plant(client, newer, older)

    by_feast = _materialize(feast_settings, end)
    by_fast = _materialize(fast_settings, end)

    assert {r.view: r.engine for r in by_feast} == {r.view: "feast" for r in by_feast}
    engines = {r.view: r.engine for r in by_fast}
    assert engines == {**{v: "fast" for v in BATCH_VIEWS}, "customer_realtime": "feast"}
    assert all(r.rows > 0 for r in by_fast)
    assert {r.view: r.rows for r in by_fast} == {r.view: r.rows for r in by_feast}

    feast_dump, fast_dump = redis_dump(feast_client), redis_dump(fast_client)
    assert len(feast_dump) > 100
    assert fast_dump.keys() == feast_dump.keys()
    assert fast_dump == feast_dump  # every field name and value, byte for byte
    # a newer row already in Redis survives, an older one is replaced (both engines agree, as checked above)
    field = _mmh3("customer_activity:txn_count_1h")
    assert fast_dump[_customer_key(newer)][field] == Value(int64_val=999_999).SerializeToString()
    assert fast_dump[_customer_key(older)][field] != Value(int64_val=999_999).SerializeToString()

    stores = [open_feature_store(s) for s in (feast_settings, fast_settings)]
    for view in BATCH_VIEWS:
        ends = [s.get_feature_view(view).most_recent_end_time for s in stores]
        assert ends[0] == ends[1] == end, view
        intervals = [s.get_feature_view(view).materialization_intervals for s in stores]
        assert intervals[0] == intervals[1], view

    customers = sorted(activity["customer_id"].unique().tolist())
    rows = [{"customer_id": int(c), "merchant_id": 10_000 + i % 40, "amount": 12.5, "transaction_ts": 1_790_000_000}
            for i, c in enumerate(customers)]
    online = []
    for settings, store in zip((feast_settings, fast_settings), stores, strict=True):
        settings.export_feast_env()
        online.append(store.get_online_features(features=store.get_feature_service("fraud_model_v1"),
                                                entity_rows=rows).to_dict())
    assert online[0].keys() == online[1].keys()
    for name, values in online[0].items():
        same = [a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
                for a, b in zip(values, online[1][name], strict=True)]
        assert all(same), name
    assert sum(v is not None for v in online[1]["txn_count_7d"]) > len(rows) // 2


def test_incremental_runs_write_nothing_new_the_second_time(two_dbs):
    _, fast_settings, _, fast_client = two_dbs
    end = raw_watermark(fast_settings.data_path).to_pydatetime()
    first = _materialize(fast_settings, end)
    assert sum(r.rows for r in first if r.engine == "fast") > 0
    before = redis_dump(fast_client)
    again = materialize(fast_settings, end=end)
    assert all(r.rows == 0 for r in again)
    # Feast's own incremental run continues from the interval the fast engine recorded
    store = open_feature_store(fast_settings)
    store.materialize_incremental(end_date=end, feature_views=sorted(BATCH_VIEWS))
    assert redis_dump(fast_client) == before


def test_a_column_of_the_wrong_type_is_a_clear_error(two_dbs):
    _, fast_settings, _, fast_client = two_dbs
    fast_settings.export_feast_env()
    apply_definitions(fast_settings, validate=False)
    path = fast_settings.layout.features_dir / "customer_profile.parquet"
    table = pq.read_table(path)
    i = table.schema.get_field_index("home_country")
    pq.write_table(table.set_column(i, "home_country", pa.array(range(table.num_rows), pa.int64())), path)
    with pytest.raises(InvalidInputError, match="home_country.*BIGINT.*String"):
        materialize(fast_settings, views=["customer_profile"], end=datetime(2030, 1, 1, tzinfo=UTC))
    assert fast_client.dbsize() == 0
