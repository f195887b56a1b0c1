"""The TTL boundary itself, to the microsecond, offline and online.

For a view with a TTL, an entity's newest feature row at ``row_time`` is served at a time T while
``T - row_time <= TTL`` and dropped after. Requests are placed at ``row_time + TTL`` and one microsecond either side:

* offline: ``get_historical_features`` (our DuckDB ASOF offline store) with entity rows at T;
* online: the service's reader (``OnlineFeatureReader``) for a request at t, which reads as of t − 1 µs, so
  T = t − 1 µs: fed replies built the way Feast stores rows (Feast's own value and timestamp protos), and through
  a live Redis that Feast's ``write_to_online_store`` filled.

Oracle: the brute-force point-in-time re-derivation from raw data (``tests/oracles.py``), which says on which side
of the edge each value lies; the tests also check that the oracle really has a value on one side and none on the
other, so the comparison is not vacuous.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlplatform.features.pipelines import raw_watermark
from tests.oracles import assert_frames_match, point_in_time, read_raw

US = pd.Timedelta(microseconds=1)
DELTAS = (-US, pd.Timedelta(0), US)  # around the edge: inside, exactly on it, just past it
UNKNOWN = 99_999_999  # an id with no rows at all
FEATURES = [
    "txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h", "amount_sum_7d",
    "amount_mean_7d", "distinct_merchants_24h", "label_count_30d", "fraud_rate_30d",
    "log_amount", "amount_vs_mean_7d", "hour_of_day", "is_night", "is_foreign", "seconds_since_last_txn",
]
CUSTOMER_PROBE, MERCHANT_PROBE = "txn_count_7d", "label_count_30d"  # never null while a row is served (0 is a value)


def _latest_rows(data_dir, view: str, key: str) -> pd.DataFrame:
    """Each entity's newest row of a feature table (what an online store holds for it), indexed by ``key``."""
    frame = pd.read_parquet(data_dir / "features" / f"{view}.parquet")
    frame = frame.sort_values(["event_timestamp", "created_timestamp"])
    return frame.groupby(key).tail(1).set_index(key)


@pytest.fixture(scope="module")
def edges(applied_world):
    """Entity rows at (entity's newest row) + TTL + δ, for a few customers and merchants; and the raw data."""
    from mlplatform.stores import open_feature_store

    store = open_feature_store(applied_world)
    data_dir = applied_world.data_path
    ttl = {v: pd.Timedelta(store.get_feature_view(v).ttl) for v in ("customer_activity", "merchant_risk")}
    assert all(t > pd.Timedelta(0) for t in ttl.values())
    customers = _latest_rows(data_dir, "customer_activity", "customer_id")
    merchants = _latest_rows(data_dir, "merchant_risk", "merchant_id")
    rows = []
    for c in customers.index[:: max(1, len(customers) // 6)][:6]:
        edge = customers.loc[c, "event_timestamp"] + ttl["customer_activity"]
        rows += [{"customer_id": int(c), "merchant_id": UNKNOWN, "at": edge + d, "delta_us": d // US, "view": "c"}
                 for d in DELTAS]
    for m in merchants.index[:: max(1, len(merchants) // 6)][:6]:
        edge = merchants.loc[m, "event_timestamp"] + ttl["merchant_risk"]
        rows += [{"customer_id": UNKNOWN, "merchant_id": int(m), "at": edge + d, "delta_us": d // US, "view": "m"}
                 for d in DELTAS]
    frame = pd.DataFrame(rows)
    frame["at"] = pd.to_datetime(frame["at"], utc=True).dt.as_unit("us")
    frame["amount"] = np.round(np.linspace(5, 500, len(frame)), 2)
    frame["transaction_ts"] = frame["at"].astype("int64") // 10**6
    frame["row_id"] = np.arange(len(frame))
    raw = read_raw(data_dir)
    until = raw_watermark(data_dir)
    return store, frame, raw, until, ttl


def _oracle(edges, times: pd.Series) -> pd.DataFrame:
    """What the brute-force oracle serves for the edge rows looked up at ``times``."""
    _, frame, raw, until, ttl = edges
    rows = frame.assign(event_timestamp=times)
    return point_in_time(raw, rows, until, ttl["customer_activity"].to_pytimedelta(),
                         ttl["merchant_risk"].to_pytimedelta())


def _assert_edge_pattern(frame: pd.DataFrame, served: pd.DataFrame) -> None:
    """Served on and inside the edge, dropped one microsecond past it, for the probe feature of each view."""
    merged = frame[["row_id", "delta_us", "view"]].merge(served, on="row_id")
    for view, probe in (("c", CUSTOMER_PROBE), ("m", MERCHANT_PROBE)):
        part = merged[merged["view"] == view]
        inside = part[part["delta_us"] <= 0][probe]
        past = part[part["delta_us"] > 0][probe]
        assert inside.notna().all(), f"{probe}: a row exactly TTL old (or younger) must be served\n{part}"
        assert past.isna().all(), f"{probe}: a row 1 µs older than the TTL must be dropped\n{part}"


def test_offline_store_serves_the_edge_and_drops_one_microsecond_past_it(edges):
    store, frame, *_ = edges
    entity = frame[["row_id", "customer_id", "merchant_id", "amount", "transaction_ts"]].assign(
        event_timestamp=frame["at"])
    actual = store.get_historical_features(entity_df=entity, features=store.get_feature_service("fraud_model_v1"))
    actual = actual.to_df()
    expected = _oracle(edges, frame["at"])
    _assert_edge_pattern(frame, expected)  # the oracle itself puts the edge where the TTL says
    assert_frames_match(actual, expected, FEATURES)
    _assert_edge_pattern(frame, actual)


# --- online: the service's reader -------------------------------------------------------------------------------
def _request_rows(frame: pd.DataFrame) -> tuple[list[dict], list[int]]:
    """Requests at t = T + 1 µs (the reader looks at t − 1 µs = T), with their request fields."""
    rows = [{"customer_id": int(r.customer_id), "merchant_id": int(r.merchant_id), "amount": float(r.amount),
             "transaction_ts": int(r.transaction_ts)} for r in frame.itertuples()]
    times = [int((r.at + US).value // 1000) for r in frame.itertuples()]
    return rows, times


def _online_frame(frame: pd.DataFrame, online) -> pd.DataFrame:
    out = pd.DataFrame(online.values)
    out["row_id"] = frame["row_id"].to_numpy()
    out["stale"] = online.stale
    return out


def _feast_reply(store, reader, data_dir, rows: list[dict]) -> list[list[bytes | None]]:
    """HMGET replies as Feast's Redis store would give them for the entities' newest rows: each feature a Feast
    ValueProto (feast.type_map), ``_ts:<view>`` a protobuf Timestamp of the row's event time."""
    from feast.type_map import python_values_to_proto_values
    from google.protobuf.timestamp_pb2 import Timestamp

    latest, types = {}, {}
    for group in reader.groups:
        for read in group.views:
            key = group.join_keys[0]
            latest[read.view] = _latest_rows(data_dir, read.view, key)
            types[read.view] = {f.name: f.dtype.to_value_type() for f in store.get_feature_view(read.view).features}
    replies = []
    for row in rows:
        for group in reader.groups:
            reply: list[bytes | None] = []
            for read in group.views:
                table = latest[read.view]
                entity = row[group.join_keys[0]]
                if entity not in table.index:
                    reply += [None] * (len(read.features) + 1)
                    continue
                values = table.loc[entity]
                for name in read.features:
                    value = values[name]
                    value = None if pd.isna(value) else (value.item() if hasattr(value, "item") else value)
                    proto = python_values_to_proto_values([value], types[read.view][name])[0]
                    reply.append(proto.SerializeToString())
                ts = Timestamp()
                ts.FromMicroseconds(pd.Timestamp(values["event_timestamp"]).value // 1000)
                reply.append(ts.SerializeToString())
            replies.append(reply)
    return replies


def test_online_reader_serves_the_edge_and_drops_one_microsecond_past_it(edges, applied_world):
    from serving.online_features import OnlineFeatureReader

    store, frame, *_ = edges
    reader = OnlineFeatureReader(store, store.get_feature_service("fraud_model_v1"))
    rows, times = _request_rows(frame)
    online = reader.assemble(rows, _feast_reply(store, reader, applied_world.data_path, rows), times)
    got = _online_frame(frame, online)
    expected = _oracle(edges, frame["at"])
    assert_frames_match(got, expected, FEATURES)
    _assert_edge_pattern(frame, got)
    for r, stale in zip(frame.itertuples(), online.stale, strict=True):  # dropped at the edge = reported stale
        view_probe = CUSTOMER_PROBE if r.view == "c" else MERCHANT_PROBE
        assert (view_probe in stale) == (r.delta_us > 0), (r, stale)


def test_online_reader_on_a_live_redis_filled_by_feast(edges, applied_world, redis_addr, redis_db):
    from mlplatform.stores import open_feature_store
    from serving.online_features import OnlineFeatureReader
    from tests.conftest import make_settings

    _, frame, *_ = edges
    settings = make_settings(applied_world.data_path, redis_addr=redis_addr)
    store = open_feature_store(settings)
    data_dir = applied_world.data_path
    keys = {"customer_activity": ("customer_id", frame["customer_id"]),
            "customer_profile": ("customer_id", frame["customer_id"]),
            "merchant_risk": ("merchant_id", frame["merchant_id"]),
            "merchant_profile": ("merchant_id", frame["merchant_id"])}
    for view, (key, ids) in keys.items():  # Feast writes the entities' newest rows, its own way
        latest = _latest_rows(data_dir, view, key)
        store.write_to_online_store(view, latest.loc[latest.index.isin(set(ids))].reset_index())
    reader = OnlineFeatureReader(store, store.get_feature_service("fraud_model_v1"))
    rows, times = _request_rows(frame)
    online = reader.fetch_sync(redis_db, rows, times)
    got = _online_frame(frame, online)
    assert_frames_match(got, _oracle(edges, frame["at"]), FEATURES)
    _assert_edge_pattern(frame, got)
