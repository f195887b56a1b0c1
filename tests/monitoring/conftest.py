"""Monitoring fixtures: a drift world (base + drifted period) with a golden model registered from its base-period
offline features; and the small world materialized into the test Redis behind the real FastAPI service."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.data.generator import WorldSpec, generate
from mlplatform.features.pipelines import build_features
from mlplatform.features.service import feature_signature, transaction_entity_rows
from mlplatform.settings import Settings
from tests.conftest import make_settings

# Long enough that 7-day windows are full after a week of warm-up, big enough that 2,500-row samples of the same
# distribution stay well under the 0.1 drift threshold (measured: at most ~0.07).
DRIFT_WORLD = WorldSpec(customers=400, days=21, seed=23, start=datetime(2026, 10, 1, tzinfo=UTC), drift_days=7)
WARM_UP = pd.Timedelta(days=7)
SAMPLE = 2500


def offline_features(store, service_name: str, tx: pd.DataFrame) -> pd.DataFrame:
    """``get_historical_features`` for transactions (t - 1 µs), in the order of ``tx``."""
    entity = transaction_entity_rows(tx)
    out = store.get_historical_features(entity_df=entity, features=store.get_feature_service(service_name)).to_df()
    return out.set_index("transaction_id").loc[entity["transaction_id"]].reset_index()


def train_booster(frame: pd.DataFrame, labels: np.ndarray, names: list[str], rounds: int = 20):
    """A small real XGBoost model on the frame's features."""
    import xgboost as xgb

    X = frame[names].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "seed": 1, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(X, label=labels, missing=np.nan), num_boost_round=rounds)


def register_golden(settings: Settings, booster, names: list[str], types: list[str], training: pd.DataFrame,
                    tmp: Path, metrics: dict[str, float] | None = None) -> int:
    """Register ``booster`` with its training set and make it golden; returns the version."""
    from mlplatform.models.registry import ModelRegistry

    path = tmp / f"training-{uuid.uuid4().hex[:6]}.parquet"
    training.assign(split="train").to_parquet(path)
    registry = ModelRegistry(settings)
    mv = registry.register(booster, feature_names=names, feature_types=types, feature_service=settings.feature_service,
                           metrics=metrics or {}, params={"rounds": 20}, lineage={"fingerprint": "monitoring-test"},
                           training_set_path=path)
    registry.set_alias("golden", mv.version)
    return mv.version


def log_rows(frame: pd.DataFrame, names: list[str], version: int, scores: np.ndarray, ts: pd.Series,
             model_name: str = "fraud") -> list[dict]:
    """Feature-log rows (serving's schema) for features computed at each transaction's time."""
    now = datetime.now(UTC)
    rows = []
    for i, (_, r) in enumerate(frame.iterrows()):
        rows.append({
            "request_id": uuid.uuid4().hex, "logged_at": now, "transaction_id": str(r["transaction_id"]),
            "customer_id": int(r["customer_id"]), "merchant_id": int(r["merchant_id"]), "amount": float(r["amount"]),
            "transaction_ts": int(pd.Timestamp(ts.iloc[i]).timestamp()), "request_fields": None,
            "model_name": model_name, "model_version": version, "role": "golden", "served": True, "fallback": False,
            "fallback_reason": None, "cached": False, "prediction": float(scores[i]), "missing": [], "stale": [],
            "latency_ms": 1.0, "features": {n: (None if pd.isna(r[n]) else float(r[n])) for n in names},
        })
    return rows


@dataclass
class DriftWorld:
    """Offline features of three disjoint transaction samples, and a golden model trained on the first."""

    settings: Settings  # the applied drift world (registry, raw data)
    models_dir: Path
    version: int
    names: list[str]
    reference: pd.DataFrame  # base period after warm-up: the golden's training set
    same: pd.DataFrame  # other base-period transactions: no drift
    drifted: pd.DataFrame  # the drifted period
    booster: object


@pytest.fixture(scope="session")
def drift_world(tmp_path_factory) -> DriftWorld:
    """The drift world generated, built, applied; offline features for three samples; a golden model (no Redis)."""
    from mlplatform.features.definitions import apply_definitions
    from mlplatform.stores import open_feature_store

    root = tmp_path_factory.mktemp("drift-world")
    generate(DRIFT_WORLD, root, drift=True)
    build_features(root)
    settings = make_settings(root, models_dir=root / "models")
    apply_definitions(settings)
    store = open_feature_store(settings)
    signature = feature_signature(store, settings.feature_service)
    names, types = [n for n, _ in signature], [t for _, t in signature]
    tx = pd.read_parquet(root / "raw" / "transactions")
    labels = pd.concat([pd.read_parquet(f) for f in (root / "raw" / "labels").glob("*.parquet")])
    start = pd.Timestamp(DRIFT_WORLD.start)
    base_end = pd.Timestamp(DRIFT_WORLD.base_end)
    base = tx[(tx["event_timestamp"] >= start + WARM_UP) & (tx["event_timestamp"] < base_end)]
    base = base.sample(frac=1.0, random_state=1)
    later = tx[tx["event_timestamp"] >= base_end].sample(SAMPLE, random_state=2)
    service = settings.feature_service
    reference = offline_features(store, service, base.iloc[:SAMPLE].sort_values("event_timestamp"))
    same = offline_features(store, service, base.iloc[SAMPLE:2 * SAMPLE].sort_values("event_timestamp"))
    drifted = offline_features(store, service, later.sort_values("event_timestamp"))
    is_fraud = reference[["transaction_id"]].merge(labels[["transaction_id", "is_fraud"]], how="left")["is_fraud"]
    booster = train_booster(reference, is_fraud.fillna(0).to_numpy(), names)
    version = register_golden(settings, booster, names, types, reference, root)
    return DriftWorld(settings, root / "models", version, names, reference, same, drifted, booster)


def score(booster, frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """The booster's prediction on a feature frame (nulls as NaN)."""
    X = frame[names].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    return np.asarray(booster.inplace_predict(X), dtype=np.float64)


def monitor_settings(data_dir: Path, base: Settings, **overrides) -> Settings:
    """Settings whose feature logs and reports live in ``data_dir`` but whose registries and Redis are ``base``'s."""
    data_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {"models_dir": base.layout.models_path, "redis_addr": base.redis_addr,
              "registry": base.layout.registry_path, "feature_repo": base.feature_repo}
    kwargs.update(overrides)
    return make_settings(data_dir, **kwargs)


# --- the small world behind the real service -------------------------------------------------------------------
@dataclass
class ServedWorld:
    """The small world in Redis, a golden model, and what to send to the service."""

    settings: Settings  # applied small world
    models_dir: Path
    version: int
    names: list[str]
    live: pd.DataFrame  # transactions to send, stamped after every feature row
    backdated: pd.DataFrame  # transactions to send with their own (historical) time


@pytest.fixture(scope="module")
def served_world(applied_world, redis_dbs, tmp_path_factory) -> ServedWorld:
    """The small world materialized into this run's Redis database, a golden model, and requests to send."""
    from mlplatform.features.materialize import materialize
    from mlplatform.stores import open_feature_store
    from tests.oracles import read_raw

    redis_dbs.flush(0)
    settings = make_settings(applied_world.data_path, redis_addr=redis_dbs.addr(0))
    materialize(settings, end=datetime(2030, 1, 1, tzinfo=UTC), full=True)

    models_dir = tmp_path_factory.mktemp("served-models")
    model_settings = make_settings(applied_world.data_path, models_dir=models_dir, redis_addr=settings.redis_addr)
    store = open_feature_store(model_settings)
    signature = feature_signature(store, settings.feature_service)
    names, types = [n for n, _ in signature], [t for _, t in signature]
    raw = read_raw(settings.data_path)
    labeled = raw["transactions"].merge(raw["labels"][["transaction_id", "is_fraud"]], on="transaction_id")
    train = labeled.sample(1500, random_state=3).sort_values("event_timestamp")
    frame = offline_features(store, settings.feature_service, train)
    y = train.set_index("transaction_id").loc[frame["transaction_id"], "is_fraud"].to_numpy()
    booster = train_booster(frame, y, names)
    version = register_golden(model_settings, booster, names, types, frame, models_dir,
                              metrics={"test_roc_auc": 0.9, "test_pr_auc": 0.3})

    # every fraud, a sample of non-fraud, and transactions whose label has not arrived
    frauds = labeled[labeled["is_fraud"] == 1]
    others = labeled[labeled["is_fraud"] == 0].sample(300, random_state=4)
    unlabeled = raw["transactions"][~raw["transactions"]["transaction_id"].isin(raw["labels"]["transaction_id"])]
    live = pd.concat([frauds, others, unlabeled.sample(20, random_state=5)])[
        ["transaction_id", "customer_id", "merchant_id", "amount"]].reset_index(drop=True)
    latest = max(pd.read_parquet(f, columns=["event_timestamp"])["event_timestamp"].max()
                 for f in settings.layout.features_dir.glob("*.parquet"))
    after = (pd.Timestamp(latest).ceil("h") + pd.Timedelta(hours=1)).tz_convert("UTC")
    rng = np.random.default_rng(6)  # spread over two days after the data: two daily quality windows
    live["event_timestamp"] = after + pd.to_timedelta(rng.integers(0, 2 * 86_400, len(live)), unit="s")
    # a raw transaction moved by whole days is a replay (judged at its original time): these are live traffic
    original = raw["transactions"].set_index("transaction_id").loc[live["transaction_id"], "event_timestamp"]
    moved_s = (live["event_timestamp"].to_numpy() - original.to_numpy()) // np.timedelta64(1, "s")
    live.loc[moved_s % 86_400 == 0, "event_timestamp"] += pd.Timedelta(seconds=1)
    backdated = raw["transactions"][raw["transactions"]["event_timestamp"] < latest - pd.Timedelta(days=2)]
    backdated = backdated.sample(15, random_state=7)[["transaction_id", "customer_id", "merchant_id", "amount",
                                                       "event_timestamp"]]
    return ServedWorld(settings, models_dir, version, names, live, backdated)


def buggy_feature_repo(dst: Path) -> Path:
    """A copy of feature_repo whose on-demand view reads the amount in cents (x100): the serving-only bug."""
    from mlplatform.settings import PROJECT_ROOT

    repo = dst / "feature_repo_cents"
    shutil.copytree(PROJECT_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    path = repo / "on_demand.py"
    text = path.read_text()
    inline = "        hour = (int(ts) // 3600) % 24\n"  # the view computes the outputs itself
    delegated = "    return compute(inputs)\n"  # the view calls mlplatform.features.on_demand
    if inline in text:
        path.write_text(text.replace(inline, inline + "        amount = amount * 100  # BUG: cents, not units\n"))
        return repo
    assert delegated in text, "on_demand.py changed: update the injected bug"
    bug = ("    if hasattr(inputs, 'assign'):  # BUG: cents, not units\n"
           "        inputs = inputs.assign(amount=inputs['amount'] * 100)\n"
           "    else:\n"
           "        inputs = {**inputs, 'amount': [None if a is None else a * 100 for a in inputs['amount']]}\n")
    path.write_text(text.replace(delegated, bug + delegated))
    return repo


def send(app, frame: pd.DataFrame) -> list[dict]:
    """POST the transactions to the app's batch endpoint (TestClient runs the lifespan: logs flush at exit)."""
    from fastapi.testclient import TestClient

    bodies = [{"customer_id": int(r.customer_id), "merchant_id": int(r.merchant_id), "amount": float(r.amount),
               "transaction_ts": int(pd.Timestamp(r.event_timestamp).timestamp()),
               "transaction_id": str(r.transaction_id)} for r in frame.itertuples()]
    out = []
    with TestClient(app) as client:
        for i in range(0, len(bodies), 200):
            response = client.post("/v1/predict/batch", json={"transactions": bodies[i:i + 200]})
            assert response.status_code == 200, response.text
            out.extend(response.json()["predictions"])
    return out


def log_served(dw: DriftWorld, frame: pd.DataFrame, data_dir: Path, **overrides) -> Settings:
    """Serving's feature log of ``frame`` (features at each transaction's own time) in ``data_dir``; the settings
    that read it (``monitor_settings`` over the drift world)."""
    from mlplatform.contracts.feature_log import write_feature_log

    settings = monitor_settings(data_dir, dw.settings, **overrides)
    ts = pd.to_datetime(frame["event_timestamp"], utc=True) + pd.Timedelta(microseconds=1)
    rows = log_rows(frame, dw.names, dw.version, score(dw.booster, frame, dw.names), ts)
    write_feature_log(settings.layout.feature_logs_dir, rows)
    return settings
