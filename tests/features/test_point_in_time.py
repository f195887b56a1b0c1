"""get_historical_features through the FeatureService equals a brute-force oracle built from raw data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlplatform.features.pipelines import raw_watermark
from tests.oracles import assert_frames_match, point_in_time, read_raw

FEATURES = [
    "txn_count_1h",
    "txn_count_24h",
    "txn_count_7d",
    "amount_sum_24h",
    "amount_mean_24h",
    "amount_sum_7d",
    "amount_mean_7d",
    "distinct_merchants_24h",
    "fraud_rate_30d",
    "label_count_30d",
    "log_amount",
    "amount_vs_mean_7d",
    "hour_of_day",
    "is_night",
    "is_foreign",
    "seconds_since_last_txn",
]


def _entity_rows(raw: dict, until: pd.Timestamp, ttl: pd.Timedelta, n: int = 3000, seed: int = 3) -> pd.DataFrame:
    """Random rows plus the hard cases: exact ties with feature rows, unknown entities, rows past the TTL."""
    rng = np.random.default_rng(seed)
    tx = raw["transactions"]
    customers = tx["customer_id"].unique()
    merchants = tx["merchant_id"].unique()
    lo = tx["event_timestamp"].min() - pd.Timedelta(days=2)
    hi = until + ttl + pd.Timedelta(days=15)
    span_us = (hi - lo).value // 1000
    parts = []
    k = n // 5
    # 1. random customers and times across (and well beyond) the data, microsecond resolution
    times = lo + pd.to_timedelta(rng.integers(0, span_us, size=2 * k), unit="us")
    parts.append(
        pd.DataFrame(
            {
                "customer_id": rng.choice(customers, 2 * k),
                "merchant_id": rng.choice(merchants, 2 * k),
                "event_timestamp": times,
            }
        )
    )
    # 2. exact ties: a transaction's own time, and the moment it leaves the 1-hour window
    picks = tx.sample(k, random_state=seed)
    parts.append(
        pd.DataFrame(
            {
                "customer_id": picks["customer_id"].to_numpy(),
                "merchant_id": picks["merchant_id"].to_numpy(),
                "event_timestamp": picks["event_timestamp"].to_numpy(),
            }
        )
    )
    picks = tx.sample(k // 2, random_state=seed + 1)
    parts.append(
        pd.DataFrame(
            {
                "customer_id": picks["customer_id"].to_numpy(),
                "merchant_id": picks["merchant_id"].to_numpy(),
                "event_timestamp": (picks["event_timestamp"] + pd.Timedelta(hours=1)).to_numpy(),
            }
        )
    )
    # 3. entities with no history: unknown ids, and known ids before any data
    m = k // 2
    parts.append(
        pd.DataFrame(
            {
                "customer_id": rng.integers(900_000, 900_100, m),
                "merchant_id": rng.integers(990_000, 990_100, m),
                "event_timestamp": lo + pd.to_timedelta(rng.integers(0, span_us, size=m), unit="us"),
            }
        )
    )
    parts.append(
        pd.DataFrame(
            {
                "customer_id": rng.choice(customers, m),
                "merchant_id": rng.choice(merchants, m),
                "event_timestamp": lo - pd.to_timedelta(rng.integers(1, 10**9, size=m), unit="us"),
            }
        )
    )
    # 4. around the TTL edge after the data stops
    edge = until + ttl + pd.Timedelta(days=7)
    parts.append(
        pd.DataFrame(
            {
                "customer_id": rng.choice(customers, k),
                "merchant_id": rng.choice(merchants, k),
                "event_timestamp": edge + pd.to_timedelta(rng.integers(-3 * 86400, 3 * 86400, size=k), unit="s"),
            }
        )
    )
    rows = pd.concat(parts, ignore_index=True)
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True).dt.as_unit("us")
    rows["amount"] = np.round(rng.lognormal(3.3, 0.8, len(rows)), 2)
    rows["transaction_ts"] = rows["event_timestamp"].astype("int64") // 10**6
    rows["row_id"] = np.arange(len(rows))
    return rows


def test_historical_features_match_bruteforce_oracle(store, applied_world):
    raw = read_raw(applied_world.data_path)
    until = raw_watermark(applied_world.data_path)
    ttl_c = store.get_feature_view("customer_activity").ttl
    ttl_m = store.get_feature_view("merchant_risk").ttl
    rows = _entity_rows(raw, until, pd.Timedelta(ttl_c))
    assert len(rows) >= 2500

    service = store.get_feature_service("fraud_model_v1")
    actual = store.get_historical_features(entity_df=rows, features=service).to_df()
    expected = point_in_time(raw, rows, until, ttl_c, ttl_m)

    assert len(actual) == len(rows)
    assert_frames_match(actual, expected, FEATURES)
    # the hard cases really occurred: some rows past the TTL or without history came back empty, ties were hit
    assert expected["txn_count_7d"].isna().sum() > 300
    assert expected["txn_count_7d"].notna().sum() > 1500


@pytest.mark.parametrize("column", ["txn_count_1h", "amount_sum_24h", "fraud_rate_30d"])
def test_oracle_is_not_vacuous(store, applied_world, column):
    """The comparison above would notice a feature shifted by one row (a classic off-by-one leak)."""
    raw = read_raw(applied_world.data_path)
    until = raw_watermark(applied_world.data_path)
    rows = _entity_rows(raw, until, pd.Timedelta(days=30), n=500, seed=5)
    service = store.get_feature_service("fraud_model_v1")
    actual = store.get_historical_features(entity_df=rows, features=service).to_df()
    expected = point_in_time(
        raw, rows, until, store.get_feature_view("customer_activity").ttl, store.get_feature_view("merchant_risk").ttl
    )
    shifted = actual.sort_values("row_id").reset_index(drop=True)
    shifted[column] = shifted[column].shift(1)
    with pytest.raises(AssertionError):
        assert_frames_match(shifted, expected, [column])
