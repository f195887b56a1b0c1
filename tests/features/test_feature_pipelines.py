"""Feature tables against slow, obviously-correct recomputations from raw data."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from mlplatform.errors import DataNotFoundError, InvalidInputError
from mlplatform.features.pipelines import build_features, raw_watermark
from tests.conftest import hold_back_last_period
from tests.oracles import customer_change_points, read_raw


def _slow_customer_features(transactions: list[tuple], at: pd.Timestamp) -> dict:
    """Plain-Python loops over (time, amount, merchant) tuples: the definition, nothing clever."""
    out = {}
    for name, width in (("1h", pd.Timedelta(hours=1)), ("24h", pd.Timedelta(hours=24)), ("7d", pd.Timedelta(days=7))):
        inside = [(t, a, m) for (t, a, m) in transactions if at - width < t <= at]
        out[f"txn_count_{name}"] = len(inside)
        if name != "1h":
            total = 0.0
            for _, a, _ in inside:
                total += a
            out[f"amount_sum_{name}"] = total
            out[f"amount_mean_{name}"] = total / len(inside) if inside else None
        if name == "24h":
            out["distinct_merchants_24h"] = len({m for _, _, m in inside})
    before = [t for (t, _, _) in transactions if t <= at]
    out["last_txn_epoch"] = int(max(before).timestamp()) if before else None
    return out


def test_window_features_equal_slow_recomputation(world_dir):
    raw = read_raw(world_dir)
    table = pd.read_parquet(world_dir / "features" / "customer_activity.parquet")
    sample = table.sample(400, random_state=1)
    by_customer = {
        c: list(zip(g["event_timestamp"], g["amount"], g["merchant_id"], strict=True))
        for c, g in raw["transactions"].groupby("customer_id")
    }
    for row in sample.itertuples(index=False):
        expected = _slow_customer_features(by_customer[row.customer_id], row.event_timestamp)
        for col, value in expected.items():
            got = getattr(row, col)
            if value is None:
                assert pd.isna(got), (col, row)
            else:
                assert got == pytest.approx(value, rel=1e-9, abs=1e-6), (col, row.customer_id, row.event_timestamp)


def test_rows_exist_exactly_at_every_change_point(world_dir):
    """A row whenever a transaction enters or leaves a window, so the latest row is exact at any time."""
    raw = read_raw(world_dir)
    until = raw_watermark(world_dir)
    table = pd.read_parquet(world_dir / "features" / "customer_activity.parquet")
    for customer in raw["transactions"]["customer_id"].drop_duplicates().sample(20, random_state=2):
        tx = raw["transactions"][raw["transactions"]["customer_id"] == customer]
        expected = customer_change_points(tx, until)
        got = table.loc[table["customer_id"] == customer, "event_timestamp"].dt.as_unit("us").astype("int64")
        assert np.array_equal(np.sort(got.to_numpy()), expected)


def test_a_transaction_never_sees_itself(world_dir):
    """Looked up just before a transaction, the 1-hour count excludes it; just after, it includes it."""
    raw = read_raw(world_dir)
    table = pd.read_parquet(world_dir / "features" / "customer_activity.parquet").sort_values("event_timestamp")
    tx = raw["transactions"].sample(200, random_state=3)
    for row in tx.itertuples(index=False):
        rows = table[table["customer_id"] == row.customer_id]
        before = rows[rows["event_timestamp"] < row.event_timestamp].tail(1)
        at = rows[rows["event_timestamp"] == row.event_timestamp]
        n_before = int(before["txn_count_1h"].iloc[0]) if len(before) and (
            row.event_timestamp - before["event_timestamp"].iloc[0] < pd.Timedelta(hours=1)) else 0
        assert int(at["txn_count_1h"].iloc[0]) == n_before + 1


def test_merchant_rate_uses_only_labels_already_known(world):
    """Rewriting every label that arrives after time C must not change any merchant row before C."""
    features = world / "features" / "merchant_risk.parquet"
    original = pd.read_parquet(features)
    labels_dir = world / "raw" / "labels"
    cut = pd.Timestamp(original["event_timestamp"].quantile(0.5))
    # count how many labels of transactions that happened before C only arrive after C: the leak we guard against
    all_labels = pd.read_parquet(labels_dir)
    late = all_labels[(all_labels["transaction_timestamp"] < cut) & (all_labels["label_timestamp"] >= cut)]
    assert len(late) > 50
    for part in labels_dir.glob("*.parquet"):
        frame = pd.read_parquet(part)
        future = frame["label_timestamp"] >= cut
        frame.loc[future, "is_fraud"] = (1 - frame.loc[future, "is_fraud"]).astype("int8")
        frame.to_parquet(part, index=False)
    build_features(world)
    changed = pd.read_parquet(features)
    key = ["merchant_id", "event_timestamp"]
    before_cut = original[original["event_timestamp"] < cut].sort_values(key).reset_index(drop=True)
    changed_before = changed[changed["event_timestamp"] < cut].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(before_cut, changed_before)
    after_cut = changed[changed["event_timestamp"] >= cut].sort_values(key).reset_index(drop=True)
    original_after = original[original["event_timestamp"] >= cut].sort_values(key).reset_index(drop=True)
    assert not after_cut["fraud_count_30d"].equals(original_after["fraud_count_30d"])  # the test can see a change


def test_merchant_rate_counts_labels_by_arrival(world_dir):
    raw = read_raw(world_dir)
    table = pd.read_parquet(world_dir / "features" / "merchant_risk.parquet").sample(300, random_state=4)
    labels = raw["labels"]
    for row in table.itertuples(index=False):
        mine = labels[(labels["merchant_id"] == row.merchant_id)
                      & (labels["label_timestamp"] <= row.event_timestamp)
                      & (labels["label_timestamp"] > row.event_timestamp - pd.Timedelta(days=30))]
        assert row.label_count_30d == len(mine)
        assert row.fraud_count_30d == int(mine["is_fraud"].sum())
        if len(mine):
            assert row.fraud_rate_30d == pytest.approx(mine["is_fraud"].mean())
        else:
            assert pd.isna(row.fraud_rate_30d)


def _digests(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_rebuild_is_idempotent(world):
    first = _digests(world / "features")
    build_features(world)
    assert _digests(world / "features") == first


def test_incremental_build_appends_without_duplicates(world, tmp_path):
    """Base period built, drifted period arrives, `--since last`: equal to a full build over both, no duplicates."""
    import shutil

    full = {n: pd.read_parquet(world / "features" / f"{n}.parquet") for n in ("customer_activity", "merchant_risk")}
    # pretend the drifted period had not arrived yet
    inc = tmp_path / "inc"
    shutil.copytree(world, inc)
    shutil.rmtree(inc / "features")
    _, bring_back = hold_back_last_period(inc)
    build_features(inc)
    bring_back()  # the drifted period arrives
    result = build_features(inc, since="last")
    assert result.appended["customer_activity"] > 0
    again = build_features(inc, since="last")  # running it twice duplicates nothing
    assert again.appended["customer_activity"] == 0
    for name, expected in full.items():
        got = pd.read_parquet(inc / "features" / f"{name}.parquet")
        key = [c for c in got.columns if c.endswith("_id")] + ["event_timestamp"]
        assert not got.duplicated(key).any()
        cols = [c for c in expected.columns if c != "created_timestamp"]
        pd.testing.assert_frame_equal(
            got[cols].sort_values(key).reset_index(drop=True), expected[cols].sort_values(key).reset_index(drop=True)
        )


def test_bad_since_is_refused(world):
    with pytest.raises(InvalidInputError, match="--since"):
        build_features(world, since="yesterday-ish")
    with pytest.raises(InvalidInputError, match="after the end"):
        build_features(world, since="2030-01-01")


def test_build_without_raw_data_says_what_to_do(tmp_path):
    with pytest.raises(DataNotFoundError, match="mlplatform data generate"):
        build_features(tmp_path)
