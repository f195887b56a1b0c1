"""Serving fixtures: the small world materialized into the test Redis, real XGBoost boosters trained on the
feature service's offline features and registered in a real model registry, and a live uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.features.pipelines import raw_watermark
from mlplatform.features.service import feature_signature, transaction_entity_rows
from tests.conftest import make_settings

MODEL_PARAMS = [  # three honest, different models: version 1, 2, 3 in registration order
    {"max_depth": 3, "eta": 0.3, "seed": 1, "rounds": 30},
    {"max_depth": 5, "eta": 0.1, "seed": 2, "rounds": 60},
    {"max_depth": 2, "eta": 0.5, "seed": 3, "rounds": 15},
]


@dataclass
class TrainedModels:
    """Registered versions and the offline data they were trained on."""

    settings_kwargs: dict
    versions: list[int]
    feature_names: list[str]
    feature_types: list[str]
    scoring_time: pd.Timestamp  # after every feature row: online state == offline state just before it
    models_dir: Path


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# customer_activity's features and the on-demand outputs that read them
ACTIVITY_DERIVED = ["txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h",
                    "amount_sum_7d", "amount_mean_7d", "distinct_merchants_24h", "amount_vs_mean_7d",
                    "seconds_since_last_txn"]


def offline_features(store, service_name: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The oracle: ``get_historical_features`` through the service for transactions (keys, amount, time).

    After the data's end the feature tables hold no rows, so their customer_activity is the last row before the
    end, while the service (from the event logs, the default) knows the windows exactly at any time, exits
    included: there the customer_activity-derived features come from the brute-force oracle (``tests/oracles``)
    instead, which derives them from the raw transactions at t − 1 µs."""
    from tests.oracles import point_in_time, read_raw

    entity = transaction_entity_rows(rows)
    entity = entity.rename(columns={"transaction_id": "row_id"})
    service = store.get_feature_service(service_name)
    out = store.get_historical_features(entity_df=entity, features=service).to_df()
    out = out.set_index("row_id").loc[entity["row_id"]].reset_index()
    data_dir = Path(store.get_feature_view("customer_activity").batch_source.path).parents[1]
    end = raw_watermark(data_dir)
    after = pd.to_datetime(out["event_timestamp"], utc=True) >= end
    if after.any():
        raw = read_raw(data_dir)
        activity = store.get_feature_view("customer_activity")
        risk = store.get_feature_view("merchant_risk")
        late = out.loc[after, ["row_id", "customer_id", "merchant_id", "amount", "transaction_ts",
                               "event_timestamp"]]
        exact = point_in_time(raw, late, end + pd.Timedelta(days=60), activity.ttl, risk.ttl).set_index("row_id")
        for name in ("amount_sum_24h", "amount_mean_24h", "amount_sum_7d", "amount_mean_7d"):  # 6 dp, as defined
            exact[name] = pd.to_numeric(exact[name]).round(6)
        mean7 = pd.to_numeric(exact["amount_mean_7d"])
        exact["amount_vs_mean_7d"] = (late.set_index("row_id")["amount"] / mean7).where(mean7 > 0)
        for name in [n for n in ACTIVITY_DERIVED if n in out.columns]:
            out[name] = out[name].astype("object")
            values = exact.loc[out.loc[after, "row_id"], name].to_numpy()
            out.loc[after, name] = [None if pd.isna(v) else v for v in values]
    return out


def booster_scores(booster, frame: pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    """XGBoost's own prediction on a feature frame (nulls as NaN)."""
    X = frame[feature_names].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    return np.asarray(booster.inplace_predict(X), dtype=np.float64)


def make_txns(settings, n: int, seed: int, when: pd.Timestamp, unknown: int = 0) -> pd.DataFrame:
    """Transactions of known customers/merchants (plus ``unknown`` new ones) within the hour after ``when``."""
    from tests.oracles import read_raw

    rng = np.random.default_rng(seed)
    raw = read_raw(settings.data_path)
    customers = raw["transactions"]["customer_id"].unique()
    merchants = raw["transactions"]["merchant_id"].unique()
    frame = pd.DataFrame(
        {
            "transaction_id": np.arange(n + unknown) + 10_000_000 * (seed + 1),
            "customer_id": np.concatenate([rng.choice(customers, n), rng.integers(50_000_000, 50_001_000, unknown)]),
            "merchant_id": np.concatenate([rng.choice(merchants, n), rng.integers(60_000_000, 60_001_000, unknown)]),
            "amount": np.round(rng.lognormal(3.3, 0.9, n + unknown), 2),
        }
    )
    # seconds spread over an hour after `when`, so hour-of-day and time-since-last features vary
    frame["event_timestamp"] = when + pd.to_timedelta(rng.integers(0, 3600, n + unknown), unit="s")
    return frame


def txn_body(row) -> dict:
    """The POST /v1/predict body of a transaction row."""
    return {
        "customer_id": int(row.customer_id),
        "merchant_id": int(row.merchant_id),
        "amount": float(row.amount),
        "transaction_ts": int(pd.Timestamp(row.event_timestamp).timestamp()),
        "transaction_id": str(row.transaction_id),
    }


@pytest.fixture(scope="session")
def trained_models(applied_world, tmp_path_factory) -> TrainedModels:
    """Three XGBoost boosters trained on the service's offline features and labels, registered as v1..v3."""
    import xgboost as xgb

    from mlplatform.models.registry import ModelRegistry
    from mlplatform.stores import open_feature_store
    from tests.oracles import read_raw

    models_dir = tmp_path_factory.mktemp("models")
    settings = make_settings(applied_world.data_path, models_dir=models_dir)
    store = open_feature_store(settings)
    signature = feature_signature(store, settings.feature_service)
    names = [n for n, _ in signature]
    types = [t for _, t in signature]
    raw = read_raw(settings.data_path)
    tx = raw["transactions"].merge(raw["labels"][["transaction_id", "is_fraud"]], on="transaction_id")
    tx = tx.sample(min(len(tx), 2500), random_state=0).sort_values("event_timestamp")
    frame = offline_features(store, settings.feature_service, tx)
    labels = tx.set_index("transaction_id").loc[frame["row_id"], "is_fraud"].to_numpy()
    X = frame[names].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    registry = ModelRegistry(settings)
    _ = registry.client  # open MLflow before register() takes the registry lock (it re-locks on first open)
    versions = []
    training_set = models_dir / "training_set.parquet"  # what promotion's gate evaluates on
    saved = frame[["row_id", "event_timestamp", *names]].assign(is_fraud=labels, split="test")
    saved.to_parquet(training_set)
    for p in MODEL_PARAMS:
        params = {
            "objective": "binary:logistic",
            "max_depth": p["max_depth"],
            "eta": p["eta"],
            "seed": p["seed"],
            "nthread": 1,
        }
        booster = xgb.train(
            params, xgb.DMatrix(X, label=labels, missing=np.nan, feature_names=names), num_boost_round=p["rounds"]
        )
        mv = registry.register(
            booster,
            feature_names=names,
            feature_types=types,
            feature_service=settings.feature_service,
            metrics={"rows": float(len(X))},
            params=p,
            lineage={"fingerprint": f"serving-test-{p['seed']}"},
            training_set_path=training_set,
        )
        versions.append(mv.version)
    features = settings.layout.features_dir
    latest = max(
        pd.read_parquet(f, columns=["event_timestamp"])["event_timestamp"].max() for f in features.glob("*.parquet")
    )
    scoring_time = (pd.Timestamp(latest).ceil("h") + pd.Timedelta(hours=1)).tz_convert("UTC")
    return TrainedModels({"models_dir": models_dir}, versions, names, types, scoring_time, models_dir)


@pytest.fixture(scope="module")
def online_world(applied_world, redis_dbs):
    """The small world's features materialized into this run's Redis database (once per test module)."""
    from mlplatform.features.materialize import materialize

    redis_dbs.flush(0)
    settings = make_settings(applied_world.data_path, redis_addr=redis_dbs.addr(0))
    materialize(settings, end=datetime(2030, 1, 1, tzinfo=UTC), full=True)
    return settings


@pytest.fixture()
def online_store(online_world):
    """A FeatureStore whose online store is this run's Redis database (``store`` is offline only)."""
    from mlplatform.stores import open_feature_store

    return open_feature_store(online_world)


def set_aliases(
    settings, golden: int | None, previous: int | None = None, challenger: int | None = None, shadow: int | None = None
) -> None:
    """Point the registry's aliases at versions (None removes the alias)."""
    from mlplatform.models.registry import ModelRegistry

    registry = ModelRegistry(settings)
    for alias, version in (
        ("golden", golden),
        ("previous_golden", previous),
        ("challenger", challenger),
        ("shadow", shadow),
    ):
        if version is None:
            registry.delete_alias(alias)
        else:
            registry.set_alias(alias, version)


@pytest.fixture()
def serving_settings(online_world, trained_models, tmp_path):
    """Settings of one service: the shared feature registry and models, a private feature-log folder."""

    def build(**overrides):
        kwargs = {
            "models_dir": trained_models.models_dir,
            "serving_api_key": "test-key",
            "serving_model_refresh_seconds": 0.5,
            "feature_log_flush_seconds": 0.2,
            "serving_latency_budget_ms": 0.0,
        }
        kwargs.update(overrides)
        data_dir = tmp_path / "serving-data"
        data_dir.mkdir(exist_ok=True)
        kwargs.setdefault("redis_addr", online_world.redis_addr)
        return make_settings(data_dir, registry=online_world.layout.registry_path, **kwargs)

    return build


class LiveServer:
    """The app under a real uvicorn server on a loopback port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", timeout_graceful_shutdown=10
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start (see the log above)")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Graceful stop: the lifespan's shutdown runs (shadows finish, feature logs flush)."""
        self.server.should_exit = True
        self.thread.join(30)

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.stop()


@pytest.fixture()
def live_server():
    """Factory: ``with live_server(create_app(settings)) as srv: ...``."""
    return LiveServer
