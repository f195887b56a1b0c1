"""Unit-test stand-ins for the service's parts: small real XGBoost boosters, wrappers that make them fail (raise,
hang) or count their calls, a fixed feature source, and a Predictor assembled from the real parts around them."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np

from serving.accounting import Accounting
from serving.cache import PredictionCache
from serving.dispatcher import Dispatcher
from serving.feature_log import FeatureLogWriter
from serving.metrics import ServingMetrics
from serving.model_pool import LoadedModel, PoolState
from serving.online_features import OnlineFeatures
from serving.prediction import ScoringRequest
from serving.predictor import Predictor
from serving.scoring import BudgetedScorer, FallbackChain
from serving.shadows import ShadowScorer

NAMES = ["f0", "f1", "f2", "f3"]
SERVICE = "svc"


# --- real boosters, and wrappers that make them fail -----------------------------------------------------------
def train_booster(seed: int, rounds: int = 8):
    """A small real XGBoost model on a fixed synthetic problem (different seeds give different scores)."""
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, len(NAMES)))
    y = ((X[:, 0] + 0.5 * X[:, 1] * (seed % 3 + 1) + rng.normal(scale=0.5, size=400)) > 0).astype(float)
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "seed": seed, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(X, label=y, feature_names=NAMES), num_boost_round=rounds)


class Raising:
    """A booster that raises on every prediction (a model that fails at run time)."""

    def __init__(self, booster) -> None:
        self.booster = booster
        self.calls = 0

    def inplace_predict(self, X, **kwargs):
        self.calls += 1
        raise RuntimeError("boom: the booster is broken")


class Hanging:
    """A booster whose prediction blocks until released (or 30 s): a hung model."""

    def __init__(self, booster) -> None:
        self.booster = booster
        self.release = threading.Event()
        self.started = threading.Event()

    def inplace_predict(self, X, **kwargs):
        self.started.set()
        self.release.wait(30)
        return self.booster.inplace_predict(X, **kwargs)


class Counting:
    """A working booster that counts its predictions."""

    def __init__(self, booster) -> None:
        self.booster = booster
        self.calls = 0

    def inplace_predict(self, X, **kwargs):
        self.calls += 1
        return self.booster.inplace_predict(X, **kwargs)


def loaded_model(booster, version: int) -> LoadedModel:
    """``booster`` as the pool holds a registered version (model ``fraud``, inputs ``NAMES``)."""
    info = SimpleNamespace(name="fraud", version=version, feature_names=NAMES, feature_service=SERVICE,
                           booster_sha256=f"sha-{version}")
    return LoadedModel(info, booster)


class StaticFeatures:
    """A FeatureSource stand-in: fixed feature values per request (the Redis read is tested elsewhere)."""

    def __init__(self, values: dict[str, dict[str, float | None]]) -> None:
        self.values = values  # request_id -> feature values

    async def fetch(self, service: str, requests):
        assert service == SERVICE
        vals = [dict(self.values[r.request_id]) for r in requests]
        missing = [[n for n in NAMES if v.get(n) is None] for v in vals]
        return OnlineFeatures(values=vals, missing=missing, stale=[[] for _ in vals], future=[[] for _ in vals])


def make_predictor(state: PoolState, features, tmp_path, challenger_weight: float = 0.0, cache_size: int = 100,
                   cache_ttl: float = 60.0, budget_ms: float = 0.0) -> Predictor:
    """The service's Predictor over ``state`` and ``features``, with real cache, chain, accounting and feature log
    (under ``tmp_path``; close it with ``predictor.close()`` then ``predictor.accounting.feature_log.close()``)."""
    pool = SimpleNamespace(state=state)
    log = FeatureLogWriter(tmp_path / "feature_logs", batch_rows=10_000, flush_seconds=60.0)
    log.start()
    accounting = Accounting(ServingMetrics(), log)
    chain = FallbackChain(BudgetedScorer(budget_ms), accounting)
    return Predictor(pool, Dispatcher(challenger_weight, "salt"), features, PredictionCache(cache_size, cache_ttl),
                     chain, ShadowScorer(accounting), accounting)


def make_requests(n: int, seed: int = 0) -> tuple[list[ScoringRequest], dict[str, dict[str, float | None]]]:
    """``n`` scoring requests of distinct customers and, by request id, random feature values for each."""
    rng = np.random.default_rng(seed)
    reqs, values = [], {}
    for i in range(n):
        rid = f"r{seed}-{i}"
        reqs.append(ScoringRequest(rid, f"t{i}", {"customer_id": 100 + i}, 1_700_000_000_000_000 + i))
        values[rid] = {name: float(rng.normal()) for name in NAMES}
    return reqs, values
