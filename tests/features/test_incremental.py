"""Incremental point-in-time joins (batch scoring) give, chunk after chunk, exactly what one retrieval gives.

Oracles, independent of the code under test: Feast's stock DuckDB offline store (a range join plus dedup in ibis)
over the same registry and files, and the brute-force re-derivation from raw data (``tests/oracles.py``). The
chunkings cover one-row chunks, chunks that split a group of equal times, gaps between chunks longer than a
view's TTL, and one chunk for everything; the rows cover exact ties with feature rows (and created-time ties),
rows before any data, past the TTL, and unknown entities.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlplatform.errors import InvalidInputError
from mlplatform.features.incremental import IncrementalPointInTime
from mlplatform.features.offline_store import STORE_TYPE, AsofRetrievalJob
from tests.features.test_offline_store import FEATURES, T0, _entity_rows, _store, repo  # noqa: F401 (fixture)

VIEW_COLUMNS = ["spend_1d", "txn_count", "category", "risk", "pair_count"]
US = pd.Timedelta(microseconds=1)


def chunkings(n: int, rng: np.random.Generator) -> dict[str, list[int]]:
    """Chunk sizes that add up to ``n``, several ways."""
    sizes = []
    left = n
    while left:
        sizes.append(int(min(left, rng.integers(1, 120))))
        left -= sizes[-1]
    return {"random": sizes, "ones": [1] * min(n, 400) + ([n - 400] if n > 400 else []), "whole": [n]}


def incremental_frame(joins, rows: pd.DataFrame, sizes: list[int], read_ahead: int = 200_000) -> pd.DataFrame:
    """``rows`` (in time order) joined in chunks of ``sizes``: each view's columns, as pandas."""
    parts = []
    with IncrementalPointInTime(joins, read_ahead_rows=read_ahead) as stream:
        start = 0
        for size in sizes:
            chunk = pa.Table.from_pandas(rows.iloc[start : start + size], preserve_index=False)
            parts.append(stream.join(chunk, "event_timestamp"))
            start += size
    return pa.concat_tables(parts).to_pandas()


@pytest.fixture(scope="module")
def timed_rows(repo) -> pd.DataFrame:  # noqa: F811
    """The offline-store tests' hard rows, plus a cluster long after every TTL, in time order."""
    rows = _entity_rows(pd.read_parquet(repo / "customer.parquet"), n=900, seed=11)
    late = rows.sample(60, random_state=2).assign(
        event_timestamp=T0 + pd.Timedelta(days=45) + pd.to_timedelta(np.arange(60), unit="min"),
        row_id=np.arange(len(rows), len(rows) + 60),
    )
    rows = pd.concat([rows, late], ignore_index=True)
    return rows.sort_values(["event_timestamp", "row_id"], kind="stable", ignore_index=True)


@pytest.mark.parametrize(("how", "read_ahead", "start"), [
    ("random", 200_000, "before the data"), ("random", 1, "before the data"), ("random", 300, "before the data"),
    ("ones", 200_000, "before the data"), ("ones", 7, "before the data"), ("whole", 200_000, "before the data"),
    ("random", 200_000, "inside the data"), ("random", 50, "inside the data"), ("whole", 200_000, "inside the data"),
])
def test_incremental_equals_feast_stock_store(repo, timed_rows, how, read_ahead, start):  # noqa: F811
    """``read_ahead``: entity rows' worth of feature rows buffered at a time (1: each chunk reads its own range;
    small values: many refills, each carrying the rows not taken yet). ``start``: where the first chunk begins (inside
    the data, the state before it comes from the history, with its ties and stale rows)."""
    if start == "inside the data":
        timed_rows = timed_rows[timed_rows["event_timestamp"] >= T0 + pd.Timedelta(days=3)].reset_index(drop=True)
    job = _store(repo, STORE_TYPE).get_historical_features(entity_df=timed_rows.head(5), features=FEATURES)
    assert isinstance(job, AsofRetrievalJob) and job.joins
    expected = (
        _store(repo, "duckdb").get_historical_features(entity_df=timed_rows.copy(), features=FEATURES).to_df()
        .sort_values("row_id", ignore_index=True)
    )
    sizes = chunkings(len(timed_rows), np.random.default_rng(3))[how]
    got = incremental_frame(job.joins, timed_rows, sizes, read_ahead)
    got = got.assign(row_id=timed_rows["row_id"].to_numpy())
    got = got.sort_values("row_id", ignore_index=True)
    pd.testing.assert_frame_equal(got[VIEW_COLUMNS], expected[VIEW_COLUMNS], check_exact=True)
    # the hard cases were exercised: the created-time tie, rows past the TTL, and the no-TTL view long after
    tie = got[(timed_rows.set_index("row_id").loc[got["row_id"], "customer_id"].to_numpy() == 7)
              & (timed_rows.set_index("row_id").loc[got["row_id"], "event_timestamp"].to_numpy()
                 == T0 + pd.Timedelta(days=3))]
    assert len(tie) >= 2 and (tie["spend_1d"] == 2.0).all()
    late = got["row_id"] >= timed_rows["row_id"].max() - 59
    assert got.loc[late, "spend_1d"].isna().all() and got.loc[late, "category"].notna().any()
    assert 0.2 < got["spend_1d"].isna().mean() < 0.8


def test_chunk_boundary_inside_equal_times(repo, timed_rows):  # noqa: F811
    """Chunks may meet at one time (the next starts where the previous ended): both get the same rows."""
    rows = timed_rows.head(300)
    tied = pd.concat([rows.iloc[:150], rows.iloc[[149] * 5], rows.iloc[150:]], ignore_index=True)
    tied["row_id"] = np.arange(len(tied))
    job = _store(repo, STORE_TYPE).get_historical_features(entity_df=tied, features=FEATURES)
    expected = job.to_df()
    got = incremental_frame(job.joins, tied, [152, 3, len(tied) - 155])
    pd.testing.assert_frame_equal(got[VIEW_COLUMNS], expected[VIEW_COLUMNS], check_exact=True)


def test_state_keeps_one_row_per_key(repo, timed_rows):  # noqa: F811
    """What the join carries between chunks stays one row per key (memory does not grow with the window)."""
    job = _store(repo, STORE_TYPE).get_historical_features(entity_df=timed_rows.head(5), features=FEATURES)
    with IncrementalPointInTime(job.joins, read_ahead_rows=50) as stream:
        for start in range(0, len(timed_rows), 100):
            stream.join(pa.Table.from_pandas(timed_rows.iloc[start : start + 100], preserve_index=False))
        for i, join in enumerate(job.joins):
            keys = ", ".join(f"k{n}" for n in range(len(join.join_keys)))
            [(rows, distinct)] = stream._con.sql(
                f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {keys} FROM __mlp_state_{i})) "
                f"FROM __mlp_state_{i}").fetchall()
            assert rows == distinct > 5, join.name


def test_chunks_out_of_time_order_are_refused(repo, timed_rows):  # noqa: F811
    job = _store(repo, STORE_TYPE).get_historical_features(entity_df=timed_rows.head(5), features=FEATURES)
    later, earlier = timed_rows.iloc[500:510], timed_rows.iloc[100:110]
    with IncrementalPointInTime(job.joins) as stream:
        stream.join(pa.Table.from_pandas(later, preserve_index=False))
        with pytest.raises(InvalidInputError, match="time order"):
            stream.join(pa.Table.from_pandas(earlier, preserve_index=False))
        with pytest.raises(InvalidInputError, match="at least one"):
            stream.join(pa.Table.from_pandas(earlier.iloc[:0], preserve_index=False))


# --- views with one row per key (static facts): joined by a hash join instead of an ASOF join ---------------------
@pytest.fixture(scope="module")
def facts_repo(tmp_path_factory):
    """One row per customer at times spread over the entity rows' range (so some entity rows come before their
    customer's row, some long after it), a few customers without a row, a few unknown created times; two views on
    it: no TTL, and a 1-day TTL."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, String

    root = tmp_path_factory.mktemp("facts_repo")
    rng = np.random.default_rng(9)
    ids = np.arange(180)
    ts = T0 + pd.to_timedelta(rng.integers(0, 20 * 24 * 60, len(ids)), unit="min")
    created = pd.Series(ts + pd.Timedelta(hours=1))
    created[rng.random(len(ids)) < 0.1] = pd.NaT
    pd.DataFrame({"customer_id": ids.astype("int64"), "country": rng.choice(["FR", "DE", "US"], len(ids)),
                  "limit": np.round(rng.random(len(ids)) * 1000, 2), "event_timestamp": ts.as_unit("us"),
                  "created_timestamp": created.dt.as_unit("us")}).to_parquet(root / "facts.parquet", index=False)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    views = [
        FeatureView(name=name, entities=[customer], ttl=ttl,
                    schema=[Field(name="country", dtype=String), Field(name="limit", dtype=Float64)],
                    source=FileSource(path=str(root / "facts.parquet"), timestamp_field="event_timestamp",
                                      created_timestamp_column="created_timestamp"))
        for name, ttl in (("facts", timedelta(0)), ("recent_facts", timedelta(days=1)))
    ]
    _store(root, "duckdb").apply([customer, *views])
    rows = pd.DataFrame({"customer_id": rng.integers(0, 200, 1500).astype("int64"),
                         "event_timestamp": T0 + pd.to_timedelta(rng.integers(-2 * 86400, 25 * 86400, 1500), unit="s")})
    ties = pd.read_parquet(root / "facts.parquet").sample(40, random_state=1)[["customer_id", "event_timestamp"]]
    rows = pd.concat([rows, ties], ignore_index=True)
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True).dt.as_unit("us")
    rows = rows.sort_values(["event_timestamp", "customer_id"], kind="stable", ignore_index=True)
    rows["row_id"] = np.arange(len(rows))
    return root, rows


FACTS = ["facts:country", "facts:limit", "recent_facts:country", "recent_facts:limit"]


def test_one_row_per_key_views_equal_feast_stock_store(facts_repo):
    import duckdb

    from mlplatform.features.offline_store import one_row_per_key, parquet_rows, source_sql

    root, rows = facts_repo
    expected = _store(root, "duckdb").get_historical_features(entity_df=rows.copy(), features=FACTS,
                                                               full_feature_names=True).to_df()
    expected = expected.sort_values("row_id", ignore_index=True)
    job = _store(root, STORE_TYPE).get_historical_features(entity_df=rows.copy(), features=FACTS,
                                                            full_feature_names=True)
    names = [f.replace(":", "__") for f in FACTS]
    pd.testing.assert_frame_equal(job.to_df()[names], expected[names], check_exact=True)
    got = incremental_frame(job.joins, rows, chunkings(len(rows), np.random.default_rng(2))["random"], 150)
    pd.testing.assert_frame_equal(got[names], expected[names], check_exact=True)
    # the hash join really ran, and the cases it must get right occurred
    with duckdb.connect() as con:
        lo, hi = rows["event_timestamp"].min().to_pydatetime(), rows["event_timestamp"].max().to_pydatetime()
        assert all(one_row_per_key(con, j, source_sql(j, lo, hi), parquet_rows(con, j.path), len(rows))
                   for j in job.joins)
    facts = pd.read_parquet(root / "facts.parquet").set_index("customer_id")
    known = rows["customer_id"].isin(facts.index).to_numpy()
    row_time = facts["event_timestamp"].reindex(rows["customer_id"]).to_numpy()
    before = known & (rows["event_timestamp"].to_numpy() < row_time)
    assert before.sum() > 100 and expected.loc[before, "facts__country"].isna().all()
    assert expected["facts__country"].notna().sum() > 300
    assert expected["recent_facts__country"].notna().sum() < expected["facts__country"].notna().sum()


# --- the fraud service, end to end --------------------------------------------------------------------------------
def feast_stock_store(settings, tmp_path):
    """A FeatureStore over the same registry with Feast's own DuckDB offline store (the independent oracle)."""
    from feast import FeatureStore, RepoConfig
    from feast.repo_config import RegistryConfig

    return FeatureStore(config=RepoConfig(
        project="fraud", provider="local",
        registry=RegistryConfig(path=str(settings.layout.registry_path), cache_ttl_seconds=600),
        offline_store={"type": "duckdb"}, online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
        entity_key_serialization_version=3, repo_path=str(settings.feature_repo),
    ))


SERVICE_FEATURES = [
    "txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h", "amount_sum_7d",
    "amount_mean_7d", "distinct_merchants_24h", "fraud_rate_30d", "label_count_30d", "log_amount",
    "amount_vs_mean_7d", "hour_of_day", "is_night", "is_foreign", "seconds_since_last_txn",
]


def assert_same_values(got: pd.DataFrame, expected: pd.DataFrame, columns: list[str]) -> None:
    """Column by column, row by row: nulls in the same places and equal values (exactly)."""
    for col in columns:
        a = pd.to_numeric(got[col], errors="coerce").astype(float).to_numpy()
        e = pd.to_numeric(expected[col], errors="coerce").astype(float).to_numpy()
        np.testing.assert_array_equal(a, e, err_msg=col)


def test_service_chunks_equal_feast_and_the_oracle(store, applied_world, tmp_path):
    """Transactions at hard times (ties with feature rows, before the data, past the TTL, unknown entities) in time
    order, through ServiceFeatureChunks in chunks: equal to get_historical_features on all of them (ours and Feast's
    stock store, on-demand features included) and to the brute-force oracle."""
    from mlplatform.features.batch import ServiceFeatureChunks
    from mlplatform.features.pipelines import raw_watermark
    from mlplatform.features.service import transaction_entity_rows
    from tests.features.test_point_in_time import _entity_rows as hard_rows
    from tests.oracles import assert_frames_match, point_in_time, read_raw

    raw = read_raw(applied_world.data_path)
    until = raw_watermark(applied_world.data_path)
    ttl_c, ttl_m = (store.get_feature_view(v).ttl for v in ("customer_activity", "merchant_risk"))
    picks = hard_rows(raw, until, pd.Timedelta(ttl_c), n=1500, seed=8)
    # a transaction at t is looked up at t - 1 µs: these land exactly on the hard entity times
    tx = pd.DataFrame({"transaction_id": picks["row_id"].to_numpy(), "customer_id": picks["customer_id"].to_numpy(),
                       "merchant_id": picks["merchant_id"].to_numpy(), "amount": picks["amount"].to_numpy(),
                       "event_timestamp": (picks["event_timestamp"] + US).to_numpy()})
    tx = tx.sort_values(["event_timestamp", "transaction_id"], kind="stable", ignore_index=True)
    service = store.get_feature_service("fraud_model_v1")
    sizes = chunkings(len(tx), np.random.default_rng(5))["random"]
    parts, start = [], 0
    with ServiceFeatureChunks(store, service) as chunks:
        assert chunks.incremental
        for size in sizes:
            parts.append(chunks.features(tx.iloc[start : start + size]))
            start += size
    got = pa.concat_tables(parts).to_pandas()
    entity = transaction_entity_rows(tx)
    assert got["transaction_id"].tolist() == tx["transaction_id"].tolist()

    ours = store.get_historical_features(entity_df=entity, features=service).to_df()
    assert_same_values(got, ours, SERVICE_FEATURES)
    stock = feast_stock_store(applied_world, tmp_path)
    feast = stock.get_historical_features(entity_df=entity.copy(), features=stock.get_feature_service(service.name))
    feast = feast.to_df().set_index("transaction_id").loc[tx["transaction_id"]].reset_index()
    assert_same_values(got, feast, SERVICE_FEATURES)
    oracle = point_in_time(raw, entity.assign(row_id=entity["transaction_id"]), until, ttl_c, ttl_m)
    assert_frames_match(got.assign(row_id=got["transaction_id"]), oracle, SERVICE_FEATURES)
    # not vacuous: rows past the TTL came back empty, others did not, and ties were hit
    assert 300 < got["txn_count_7d"].isna().sum() < len(got) - 300
    assert isinstance(ttl_c, timedelta)


def test_service_chunks_fall_back_to_feasts_retrieval_per_chunk(store, applied_world, tmp_path):
    """Under an offline store without the ASOF path, each chunk is one get_historical_features: same values."""
    from mlplatform.features.batch import ServiceFeatureChunks
    from tests.oracles import read_raw

    tx = read_raw(applied_world.data_path)["transactions"].sort_values(["event_timestamp", "transaction_id"])
    tx = tx.iloc[1000:1400]
    stock = feast_stock_store(applied_world, tmp_path)
    results = []
    for feature_store in (store, stock):
        with ServiceFeatureChunks(feature_store, feature_store.get_feature_service("fraud_model_v1")) as chunks:
            assert chunks.incremental == (feature_store is store)
            parts = [chunks.features(tx.iloc[i : i + 150]) for i in range(0, len(tx), 150)]
        results.append(pa.concat_tables(parts, promote_options="permissive").to_pandas())
    ours, feasts = results
    assert ours["transaction_id"].tolist() == feasts["transaction_id"].tolist() == tx["transaction_id"].tolist()
    assert_same_values(ours, feasts, SERVICE_FEATURES)
    assert ours["txn_count_24h"].notna().sum() > 300
