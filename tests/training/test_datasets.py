"""Training sets: only labels known at the as-of time, features equal to a brute-force oracle, stable fingerprints."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.errors import InvalidInputError
from mlplatform.features.pipelines import raw_watermark
from mlplatform.settings import PROJECT_ROOT
from tests.conftest import SMALL_WORLD, make_settings
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
    start = pd.Timestamp(SMALL_WORLD.start)  # the world's history before it is labeled too, but never trained on
    assert tx["event_timestamp"].min() < start and known["transaction_timestamp"].min() < start
    expected = tx[tx["transaction_id"].isin(known["transaction_id"]) & (tx["event_timestamp"] <= as_of)
                  & (tx["event_timestamp"] >= start)]
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
    assert lin["since"] == start.isoformat()
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


def _changed_repo(dst: Path, anchor: str, extra: str) -> Path:
    """A copy of feature_repo with ``extra`` inserted after ``anchor`` in on_demand.py (a changed definition)."""
    repo = dst / "feature_repo_changed"
    shutil.copytree(PROJECT_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    path = repo / "on_demand.py"
    text = path.read_text()
    assert anchor in text, "on_demand.py changed: update this test's edit"
    path.write_text(text.replace(anchor, anchor + extra))
    return repo


def test_view_hashes_are_equal_for_equal_definitions_only(world, tmp_path):
    """Two builds (fresh stores, the definitions applied again in between) record the same hash per view; a
    changed on-demand transformation changes its hash and no other."""
    from mlplatform.features.definitions import apply_definitions
    from mlplatform.stores import open_feature_store

    settings = make_settings(world, models_dir=tmp_path / "models")
    apply_definitions(settings)
    as_of = pd.Timestamp("2026-10-06T00:00:00Z").to_pydatetime()
    first = build_training_set(settings, as_of=as_of, store=open_feature_store(settings), out_dir=tmp_path / "a")
    apply_definitions(settings)  # nothing changed: Feast stamps new registry timestamps all the same
    second = build_training_set(settings, as_of=as_of, store=open_feature_store(settings), out_dir=tmp_path / "b")
    hashes = first.lineage["feature_views"]
    assert set(hashes) == {"customer_activity", "merchant_risk", "transaction_context"}
    assert second.lineage["feature_views"] == hashes
    assert all(len(h) == 16 for h in hashes.values())

    repo = _changed_repo(tmp_path, "    from mlplatform.features.on_demand import transaction_context as compute\n",
                         "    inputs = inputs.assign(amount=inputs[\"amount\"] * 100)  # a different definition\n")
    changed = make_settings(world, models_dir=tmp_path / "models", feature_repo=repo,
                            registry=tmp_path / "registry-changed.db")
    apply_definitions(changed)
    third = build_training_set(changed, as_of=as_of, store=open_feature_store(changed), out_dir=tmp_path / "c")
    after = third.lineage["feature_views"]
    assert after["transaction_context"] != hashes["transaction_context"]
    assert {k: v for k, v in after.items() if k != "transaction_context"} == {
        k: v for k, v in hashes.items() if k != "transaction_context"}
    # the change is real: the rows differ where the transformation reads the amount
    assert not np.allclose(third.frame["log_amount"], first.frame["log_amount"])
