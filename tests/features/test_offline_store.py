"""The ASOF offline store returns exactly what Feast's own DuckDB offline store returns, on the hard cases.

Both stores read one registry and the same Parquet files; Feast's stock store is the oracle (it is independent of
the code under test: a range join plus dedup in ibis). Frames must be equal column for column, dtypes and nulls
included.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlplatform.features.offline_store import STORE_TYPE, AsofDuckDBOfflineStoreConfig, AsofRetrievalJob

T0 = pd.Timestamp(datetime(2026, 3, 1, tzinfo=UTC))
CUSTOMERS = np.arange(1, 41)
MERCHANTS = np.arange(100, 116)


def _customer_table(rng: np.random.Generator) -> pd.DataFrame:
    """Many rows per customer on a coarse (minute) grid, so event-time ties are common; some created ties too."""
    n = 3000
    ts = T0 + pd.to_timedelta(rng.integers(0, 20 * 24 * 60, n), unit="min")
    # distinct created timestamps (a full tie would let either store pick either row); a few unknown (null)
    created = ts + pd.to_timedelta(rng.integers(0, 3, n), unit="min")
    created = pd.Series(created + pd.to_timedelta(np.arange(n), unit="us"))
    created[rng.random(n) < 0.02] = pd.NaT
    frame = pd.DataFrame(
        {
            "customer_id": rng.choice(CUSTOMERS[:-5], n).astype("int64"),  # the last 5 customers never have data
            "spend_1d": np.round(rng.random(n) * 100, 2),
            "txn_count": rng.integers(0, 50, n).astype("int64"),
            "event_timestamp": ts,
            "created_timestamp": created,
        }
    )
    # the documented tie: same key and event time, the later created_timestamp must win
    tie = pd.DataFrame(
        {
            "customer_id": [7, 7, 7, 7],
            "spend_1d": [1.0, 2.0, 3.0, 4.0],
            "txn_count": [1, 2, 3, 4],
            "event_timestamp": [T0 + pd.Timedelta(days=3)] * 4,
            "created_timestamp": [T0 + pd.Timedelta(days=3, hours=h) for h in (1, 5, 2)] + [pd.NaT],
        }
    )
    frame = pd.concat([frame, tie], ignore_index=True)
    frame["event_timestamp"] = frame["event_timestamp"].dt.as_unit("us")
    frame["created_timestamp"] = frame["created_timestamp"].dt.as_unit("us")
    return frame.sample(frac=1.0, random_state=1, ignore_index=True)  # unsorted on disk


def _merchant_table(rng: np.random.Generator) -> pd.DataFrame:
    """Static-ish merchant facts (ttl 0 = no limit), with a mapped column name and a string feature."""
    n = 200
    ts = T0 + pd.to_timedelta(rng.integers(0, 10 * 24, n), unit="h")
    return pd.DataFrame(
        {
            "merchant_id": rng.choice(MERCHANTS[:-3], n).astype("int64"),
            "cat": rng.choice(["food", "travel", "games"], n),  # field-mapped to `category`
            "risk": rng.random(n),
            "ts": ts.as_unit("us"),
            "created": (ts + pd.to_timedelta(np.arange(n), unit="s")).as_unit(
                "us"
            ),  # event-time ties: distinct created
        }
    )


def _pair_table(rng: np.random.Generator) -> pd.DataFrame:
    """A view keyed by (customer_id, merchant_id), without created_timestamp."""
    n = 1500
    ts = T0 + pd.to_timedelta(rng.integers(0, 20 * 24 * 6, n) * 10, unit="min")
    frame = pd.DataFrame(
        {
            "customer_id": rng.choice(CUSTOMERS[:10], n).astype("int64"),
            "merchant_id": rng.choice(MERCHANTS[:5], n).astype("int64"),
            "pair_count": rng.integers(0, 9, n).astype("int64"),
            "event_timestamp": ts.as_unit("us"),
        }
    )
    return frame.drop_duplicates(["customer_id", "merchant_id", "event_timestamp"])  # no created ts to break ties


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Three Parquet sources and their definitions applied to one registry."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64, Int64, String

    root = tmp_path_factory.mktemp("asof_repo")
    rng = np.random.default_rng(42)
    _customer_table(rng).to_parquet(root / "customer.parquet", index=False)
    _merchant_table(rng).to_parquet(root / "merchant.parquet", index=False)
    _pair_table(rng).to_parquet(root / "pair.parquet", index=False)

    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)
    customer_stats = FeatureView(
        name="customer_stats",
        entities=[customer],
        ttl=timedelta(days=2),
        schema=[Field(name="spend_1d", dtype=Float64), Field(name="txn_count", dtype=Int64)],
        source=FileSource(
            path=str(root / "customer.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        ),
    )
    merchant_facts = FeatureView(
        name="merchant_facts",
        entities=[merchant],
        ttl=timedelta(0),
        schema=[Field(name="category", dtype=String), Field(name="risk", dtype=Float64)],
        source=FileSource(
            path=str(root / "merchant.parquet"),
            timestamp_field="ts",
            created_timestamp_column="created",
            field_mapping={"cat": "category"},
        ),
    )
    pair_stats = FeatureView(
        # ttl: stock Feast fails on mixed-unit TTLs such as 1 day 12 h ("mixed units"), ours does not
        name="pair_stats",
        entities=[customer, merchant],
        ttl=timedelta(days=1),
        schema=[Field(name="pair_count", dtype=Int64)],
        source=FileSource(path=str(root / "pair.parquet"), timestamp_field="event_timestamp"),
    )

    @on_demand_feature_view(
        sources=[customer_stats, merchant_facts], schema=[Field(name="spend_x_risk", dtype=Float64)], mode="python"
    )
    def spend_risk(inputs: dict) -> dict:
        return {
            "spend_x_risk": [
                None if s is None or r is None else s * r
                for s, r in zip(inputs["spend_1d"], inputs["risk"], strict=True)
            ]
        }

    _store(root, "duckdb").apply([customer, merchant, customer_stats, merchant_facts, pair_stats, spend_risk])
    return root


def _store(root: Path, offline_type: str):
    """A FeatureStore over ``root``'s registry with the given offline store type."""
    from feast import FeatureStore, RepoConfig
    from feast.repo_config import RegistryConfig

    return FeatureStore(
        config=RepoConfig(
            project="asof_test",
            provider="local",
            registry=RegistryConfig(path=str(root / "registry.db"), cache_ttl_seconds=600),
            offline_store={"type": offline_type},
            online_store={"type": "sqlite", "path": str(root / "online.db")},
            entity_key_serialization_version=3,
            repo_path=str(root),
        )
    )


def _entity_rows(customers: pd.DataFrame, n: int = 1200, seed: int = 7) -> pd.DataFrame:
    """Random rows plus exact ties, duplicates, rows before any data, past the TTL, and unknown entities."""
    rng = np.random.default_rng(seed)
    k = n // 6
    parts = [
        pd.DataFrame(
            {
                "customer_id": rng.choice(CUSTOMERS, 2 * k),
                "merchant_id": rng.choice(MERCHANTS, 2 * k),
                "event_timestamp": T0 + pd.to_timedelta(rng.integers(0, 25 * 86400 * 10**6, 2 * k), unit="us"),
            }
        ),
    ]
    picks = customers.sample(k, random_state=seed)  # exact ties with feature rows (and their created ts)
    parts.append(
        pd.DataFrame(
            {
                "customer_id": picks["customer_id"].to_numpy(),
                "merchant_id": rng.choice(MERCHANTS, k),
                "event_timestamp": picks["event_timestamp"].to_numpy(),
            }
        )
    )
    parts.append(
        pd.DataFrame(
            {
                "customer_id": [7, 7],
                "merchant_id": [100, 100],  # the created-ts tie
                "event_timestamp": [T0 + pd.Timedelta(days=3)] * 2,
            }
        )
    )
    parts.append(
        pd.DataFrame(
            {
                "customer_id": rng.choice(CUSTOMERS, k),
                "merchant_id": rng.choice(MERCHANTS, k),
                "event_timestamp": T0 - pd.to_timedelta(rng.integers(1, 10**6, k), unit="s"),
            }
        )
    )
    parts.append(
        pd.DataFrame(
            {
                "customer_id": rng.choice(CUSTOMERS, k),
                "merchant_id": rng.choice(MERCHANTS, k),
                "event_timestamp": T0
                + pd.Timedelta(days=20)
                + pd.to_timedelta(rng.integers(0, 5 * 86400, k), unit="s"),
            }
        )
    )
    parts.append(
        pd.DataFrame(
            {
                "customer_id": rng.integers(10_000, 10_010, k // 2),
                "merchant_id": rng.integers(20_000, 20_010, k // 2),
                "event_timestamp": T0 + pd.to_timedelta(rng.integers(0, 20 * 86400, k // 2), unit="s"),
            }
        )
    )
    rows = pd.concat(parts, ignore_index=True)
    rows = pd.concat([rows, rows.sample(k // 2, random_state=seed)], ignore_index=True)  # duplicate entity rows
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True).dt.as_unit("us")
    rows["customer_id"] = rows["customer_id"].astype("int64")
    rows["merchant_id"] = rows["merchant_id"].astype("int64")
    rows["note"] = rng.choice(["a", "b", None], len(rows))  # extra columns pass through
    rows["score"] = rng.random(len(rows))
    rows["flag"] = rng.random(len(rows)) < 0.5
    rows["row_id"] = np.arange(len(rows))
    return rows.sample(frac=1.0, random_state=seed, ignore_index=True)  # not in time order


@pytest.fixture(scope="module")
def entity_rows(repo) -> pd.DataFrame:
    """The entity rows for ``repo``."""
    return _entity_rows(pd.read_parquet(repo / "customer.parquet"))


FEATURES = [
    "customer_stats:spend_1d",
    "customer_stats:txn_count",
    "merchant_facts:category",
    "merchant_facts:risk",
    "pair_stats:pair_count",
    "spend_risk:spend_x_risk",
]


def _both(repo: Path, entity_df: pd.DataFrame, features: list[str], **kwargs) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """Feast's stock DuckDB result (sorted by row_id), ours as returned, and our job."""
    feast_df = (
        _store(repo, "duckdb").get_historical_features(entity_df=entity_df.copy(), features=features, **kwargs).to_df()
    )
    job = _store(repo, STORE_TYPE).get_historical_features(entity_df=entity_df.copy(), features=features, **kwargs)
    return feast_df.sort_values("row_id", ignore_index=True), job.to_df(), job


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_same_frame_as_feast_duckdb_store(repo, entity_rows, full_feature_names):
    expected, actual, job = _both(repo, entity_rows, FEATURES, full_feature_names=full_feature_names)
    assert isinstance(job, AsofRetrievalJob)  # really the ASOF path, not a delegation
    # our rows come back in the entity df's order, every column and value as Feast's
    assert actual["row_id"].tolist() == entity_rows["row_id"].tolist()
    actual = actual.sort_values("row_id", ignore_index=True)
    assert list(actual.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    # the hard cases were really exercised
    name = "customer_stats__spend_1d" if full_feature_names else "spend_1d"
    assert 0.2 < actual[name].isna().mean() < 0.8
    tie = actual[(actual["customer_id"] == 7) & (actual["event_timestamp"] == T0 + pd.Timedelta(days=3))]
    assert len(tie) >= 2 and (tie[name] == 2.0).all()  # created 05:00 beats 01:00, 02:00 and unknown
    pair = "pair_stats__pair_count" if full_feature_names else "pair_count"
    assert actual[pair].notna().sum() > 20


def test_feature_subsets_and_view_order(repo, entity_rows):
    features = ["pair_stats:pair_count", "merchant_facts:risk", "customer_stats:txn_count"]
    expected, actual, _ = _both(repo, entity_rows.head(300), features)
    pd.testing.assert_frame_equal(actual.sort_values("row_id", ignore_index=True), expected, check_exact=True)


def test_naive_and_string_timestamps_match(repo, entity_rows):
    rows = entity_rows.head(200).copy()
    rows["event_timestamp"] = rows["event_timestamp"].dt.tz_localize(None)
    expected, actual, _ = _both(repo, rows, FEATURES[:3])
    pd.testing.assert_frame_equal(actual.sort_values("row_id", ignore_index=True), expected, check_exact=True)


def test_filter_by_created_timestamp_is_left_to_feast(repo, entity_rows):
    expected, actual, job = _both(repo, entity_rows.head(300), FEATURES[:2], filter_by_created_timestamp=True)
    assert not isinstance(job, AsofRetrievalJob)
    pd.testing.assert_frame_equal(actual.sort_values("row_id", ignore_index=True), expected, check_exact=True)


def test_missing_join_key_is_a_clear_error(repo, entity_rows):
    from mlplatform.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="merchant_id"):
        _store(repo, STORE_TYPE).get_historical_features(
            entity_df=entity_rows.drop(columns=["merchant_id"]).head(10), features=["merchant_facts:risk"]
        )


def test_feature_repo_uses_the_asof_store(store):
    assert isinstance(store.config.offline_store, AsofDuckDBOfflineStoreConfig)
    rows = pd.DataFrame(
        {"customer_id": [1], "merchant_id": [1], "amount": [1.0], "transaction_ts": [0], "event_timestamp": [T0]}
    )
    job = store.get_historical_features(entity_df=rows, features=store.get_feature_service("fraud_model_v1"))
    assert isinstance(job, AsofRetrievalJob)
    assert len(job.to_df()) == 1
