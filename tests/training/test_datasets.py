"""Training sets: only labels known at the as-of time, features equal to a brute-force oracle, stable fingerprints."""

from __future__ import annotations

import pandas as pd
import pytest

from mlplatform.errors import InvalidInputError
from mlplatform.features.pipelines import raw_watermark
from tests.conftest import make_settings
from tests.oracles import assert_frames_match, point_in_time, read_raw
from training.datasets import build_training_set

FEATURES = ["txn_count_1h", "txn_count_24h", "amount_mean_7d", "fraud_rate_30d", "amount_vs_mean_7d", "is_foreign",
            "seconds_since_last_txn"]


def test_label_delay_respected_against_pandas_oracle(applied_world, store, tmp_path):
    settings = make_settings(applied_world.data_path, models_dir=tmp_path / "models")
    as_of = pd.Timestamp("2026-10-08T12:00:00Z")
    ts = build_training_set(settings, as_of=as_of.to_pydatetime(), store=store, out_dir=tmp_path / "ds")

    # Oracle: plain pandas over the raw files, written without the code under test.
    raw = read_raw(applied_world.data_path)
    labels, tx = raw["labels"], raw["transactions"]
    known = labels[labels["label_timestamp"] <= as_of]
    expected = tx[tx["transaction_id"].isin(known["transaction_id"]) & (tx["event_timestamp"] <= as_of)]
    got = ts.frame.set_index("transaction_id").sort_index()
    exp = expected.set_index("transaction_id").sort_index()
    assert list(got.index) == list(exp.index)
    assert (got["is_fraud"] == known.set_index("transaction_id").loc[got.index, "is_fraud"]).all()
    assert (got["event_timestamp"] == exp["event_timestamp"] - pd.Timedelta(microseconds=1)).all()
    assert (got["label_timestamp"] <= as_of).all()
    # the delay really bit: some transactions before as_of had no label yet, and fraud ones among them
    late = tx[(tx["event_timestamp"] <= as_of) & ~tx["transaction_id"].isin(known["transaction_id"])]
    assert len(late) > 100
    assert labels[labels["transaction_id"].isin(late["transaction_id"])]["is_fraud"].sum() > 0

    # features came through the FeatureService and equal the brute-force oracle (a sample, for speed)
    assert ts.feature_names == [f.name for p in store.get_feature_service("fraud_model_v1").feature_view_projections
                                for f in p.features]
    sample = ts.frame.sample(400, random_state=1).reset_index(drop=True).assign(row_id=lambda d: d.index)
    oracle = point_in_time(raw, sample, raw_watermark(applied_world.data_path),
                           store.get_feature_view("customer_activity").ttl, store.get_feature_view("merchant_risk").ttl)
    assert_frames_match(sample, oracle, FEATURES)

    lin = ts.lineage
    assert lin["rows"] == len(expected) and lin["class_balance"]["positives"] == int(got["is_fraud"].sum())
    assert set(lin["feature_views"]) == {"customer_activity", "merchant_risk", "transaction_context"}
    assert (tmp_path / "ds" / "lineage.json").is_file() and (tmp_path / "ds" / "training_set.parquet").is_file()

    # same inputs -> same fingerprint; a different as-of -> a different one
    again = build_training_set(settings, as_of=as_of.to_pydatetime(), store=store, out_dir=tmp_path / "ds2")
    assert again.fingerprint == ts.fingerprint
    later = build_training_set(settings, as_of=(as_of + pd.Timedelta(days=1)).to_pydatetime(), store=store,
                               out_dir=tmp_path / "ds3")
    assert later.fingerprint != ts.fingerprint and later.lineage["rows"] > lin["rows"]


def test_as_of_after_the_features_is_refused(applied_world, store, tmp_path):
    settings = make_settings(applied_world.data_path, models_dir=tmp_path / "models")
    with pytest.raises(InvalidInputError, match="after the feature tables' end"):
        build_training_set(settings, as_of=pd.Timestamp("2031-01-01T00:00:00Z").to_pydatetime(), store=store,
                           out_dir=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
