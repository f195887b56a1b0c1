"""Materialization into a real Redis: online values equal the latest offline values; pushes show up at once."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from mlplatform.features.definitions import apply_definitions
from mlplatform.features.materialize import materialize
from mlplatform.features.online import push_event, read_online
from mlplatform.features.pipelines import raw_watermark
from mlplatform.stores import open_feature_store
from tests.conftest import make_settings

ACTIVITY = ["txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h", "amount_sum_7d",
            "amount_mean_7d", "distinct_merchants_24h"]


@pytest.fixture()
def materialized(world, redis_db, redis_addr):
    settings = make_settings(world, redis_addr=redis_addr)
    apply_definitions(settings)
    results = materialize(settings, end=raw_watermark(world).to_pydatetime())
    return settings, results


def test_online_equals_latest_offline_row(materialized):
    settings, results = materialized
    assert {r.view for r in results} >= {"customer_activity", "merchant_risk", "customer_profile"}
    assert all(r.rows > 0 for r in results if r.view != "customer_realtime")
    table = pd.read_parquet(settings.layout.features_dir / "customer_activity.parquet")
    latest = table.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
    risk = pd.read_parquet(settings.layout.features_dir / "merchant_risk.parquet")
    latest_risk = risk.sort_values("event_timestamp").groupby("merchant_id").tail(1).set_index("merchant_id")
    sample = latest.sample(40, random_state=7)
    merchants = latest_risk.sample(40, random_state=8, replace=True).index.to_numpy()
    rows = [{"customer_id": int(c), "merchant_id": int(m), "amount": 10.0, "transaction_ts": 1_800_000_000}
            for c, m in zip(sample.index, merchants, strict=True)]
    online = read_online(settings, rows)
    for i, (customer, merchant) in enumerate(zip(sample.index, merchants, strict=True)):
        for col in ACTIVITY:
            expected = latest.loc[customer, col]
            got = online.loc[i, col]
            if pd.isna(expected):
                assert got is None or pd.isna(got)
            else:
                assert got == pytest.approx(expected), (customer, col)
        expected_rate = latest_risk.loc[merchant, "fraud_rate_30d"]
        got_rate = online.loc[i, "fraud_rate_30d"]
        assert (pd.isna(expected_rate) and pd.isna(got_rate)) or got_rate == pytest.approx(expected_rate)


def test_incremental_materialize_writes_nothing_new_the_second_time(materialized):
    settings, _ = materialized
    again = materialize(settings, end=raw_watermark(settings.data_path).to_pydatetime())
    assert all(r.rows == 0 for r in again)


def test_unknown_customer_reads_as_missing(materialized):
    settings, _ = materialized
    online = read_online(settings, [{"customer_id": 987_654, "merchant_id": 1, "amount": 5.0,
                                     "transaction_ts": 1_800_000_000}])
    assert all(online.loc[0, c] is None or pd.isna(online.loc[0, c]) for c in ACTIVITY)


def test_pushed_event_is_visible_on_next_read(materialized):
    settings, _ = materialized
    store = open_feature_store(settings)
    when = datetime.now(UTC)
    push_event(settings, customer_id=3, amount=123.45, merchant_id=10_007, when=when, store=store)
    got = store.get_online_features(
        features=["customer_realtime:last_amount", "customer_realtime:last_merchant_id"],
        entity_rows=[{"customer_id": 3}],
    ).to_dict()
    assert got["last_amount"] == [pytest.approx(123.45)]
    assert got["last_merchant_id"] == [10_007]


def test_late_arriving_period_reaches_redis(world, redis_db, redis_addr):
    """A period built after a materialization (with earlier timestamps than now) still reaches Redis."""
    from mlplatform.features.pipelines import build_features
    from tests.conftest import hold_back_last_period

    late_start, bring_back = hold_back_last_period(world)
    settings = make_settings(world, redis_addr=redis_addr)
    build_features(world)
    apply_definitions(settings)
    materialize(settings)  # default end: the build watermark, not "now"
    bring_back()  # the drifted period arrives
    build_features(world, since="last")
    second = materialize(settings)
    assert sum(r.rows for r in second if r.view == "customer_activity") > 0
    table = pd.read_parquet(settings.layout.features_dir / "customer_activity.parquet")
    latest = table.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
    late = latest[latest["event_timestamp"] >= pd.Timestamp(late_start)].sample(20, random_state=3)
    rows = [{"customer_id": int(c), "merchant_id": 10_001, "amount": 1.0, "transaction_ts": 1_800_000_000}
            for c in late.index]
    online = read_online(settings, rows)
    for i, customer in enumerate(late.index):
        assert online.loc[i, "txn_count_7d"] == late.loc[customer, "txn_count_7d"]
        assert online.loc[i, "amount_sum_7d"] == pytest.approx(late.loc[customer, "amount_sum_7d"])
