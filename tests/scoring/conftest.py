"""Batch-scoring fixtures: a private copy of the small world, applied, with a tiny real XGBoost model registered
as golden (trained on the feature service's offline features and the world's labels)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from mlplatform.settings import Settings
from tests.conftest import make_settings

SERVICE_VIEWS = ["customer_activity", "merchant_risk", "customer_profile", "merchant_profile"]


@dataclass
class ScoringWorld:
    settings: Settings
    version: int
    feature_names: list[str]
    start: pd.Timestamp  # the window tests score
    end: pd.Timestamp


@pytest.fixture(scope="module")
def scoring_world(world_dir, tmp_path_factory) -> ScoringWorld:
    import xgboost as xgb

    from mlplatform.features.definitions import apply_definitions
    from mlplatform.features.service import feature_signature, transaction_entity_rows
    from mlplatform.models.registry import ModelRegistry
    from mlplatform.stores import open_feature_store
    from tests.oracles import read_raw

    root = tmp_path_factory.mktemp("scoring") / "world"
    shutil.copytree(world_dir, root, ignore=shutil.ignore_patterns("registry.db*", "audit", "pipelines"))
    settings = make_settings(root, models_dir=root / "models", actor="scoring-tests")
    apply_definitions(settings)
    store = open_feature_store(settings)
    signature = feature_signature(store, settings.feature_service)
    names, types = [n for n, _ in signature], [t for _, t in signature]
    raw = read_raw(root)
    tx = raw["transactions"].merge(raw["labels"][["transaction_id", "is_fraud"]], on="transaction_id")
    tx = tx.sample(min(len(tx), 1500), random_state=1)
    entity = transaction_entity_rows(tx)
    frame = store.get_historical_features(
        entity_df=entity, features=store.get_feature_service(settings.feature_service)
    ).to_df()
    y = frame.merge(tx[["transaction_id", "is_fraud"]], on="transaction_id")["is_fraud"].to_numpy()
    X = frame[names].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "seed": 5, "nthread": 1},
        xgb.DMatrix(X, label=y, missing=np.nan),
        num_boost_round=25,
    )
    registry = ModelRegistry(settings)
    mv = registry.register(
        booster,
        feature_names=names,
        feature_types=types,
        feature_service=settings.feature_service,
        metrics={"rows": float(len(X))},
        params={"max_depth": 3},
        lineage={"fingerprint": "scoring-test-fp", "as_of": "2026-10-08T00:00:00+00:00"},
    )
    registry.set_alias("golden", mv.version)
    start = pd.Timestamp("2026-10-07T06:00:00Z")
    return ScoringWorld(settings, mv.version, names, start, start + pd.Timedelta(hours=10))
