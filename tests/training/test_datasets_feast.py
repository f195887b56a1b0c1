"""A training set equals the one Feast's own offline store builds from the same labeled rows, value for value.

Oracle: Feast's stock DuckDB offline store (a range join plus dedup, independent of our ASOF store) over the same
registry and feature files, with the same on-demand view; the brute-force oracle is compared in test_datasets.py.
"""

from __future__ import annotations

import pandas as pd

from tests.conftest import SMALL_WORLD, make_settings
from tests.features.test_incremental import SERVICE_FEATURES, assert_same_values, feast_stock_store
from training.datasets import build_training_set, labeled_entity_rows, read_labels, read_transactions


def test_training_set_equals_feasts_own_store(applied_world, store, tmp_path):
    settings = make_settings(applied_world.data_path, models_dir=tmp_path / "models")
    as_of = pd.Timestamp("2026-10-09T00:00:00Z")
    built = build_training_set(settings, as_of=as_of.to_pydatetime(), store=store, out_dir=tmp_path / "ds")
    tx = read_transactions(settings.layout.raw_dir)
    tx = tx[tx["event_timestamp"] >= pd.Timestamp(SMALL_WORLD.start)]  # training rows start with the world
    rows = labeled_entity_rows(tx, read_labels(settings.layout.raw_dir), as_of)
    stock = feast_stock_store(applied_world, tmp_path)
    expected = stock.get_historical_features(entity_df=rows, features=stock.get_feature_service("fraud_model_v1"))
    expected = expected.to_df().set_index("transaction_id")
    got = built.frame.set_index("transaction_id")
    assert len(got) == len(rows) > 1000 and sorted(got.index) == sorted(expected.index)
    expected = expected.loc[got.index]
    assert built.feature_names == SERVICE_FEATURES
    assert_same_values(got, expected, SERVICE_FEATURES)
    assert (got["is_fraud"].to_numpy() == expected["is_fraud"].to_numpy()).all()
    assert (got["event_timestamp"] == expected["event_timestamp"].dt.as_unit("us")).all()
    # not vacuous: missing values and every on-demand output occur
    assert got["amount_mean_24h"].isna().any() and got["amount_mean_24h"].notna().sum() > 1000
    assert set(got["is_night"].dropna().unique()) == {0, 1}
