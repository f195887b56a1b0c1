"""One prediction, end to end: route, fetch online features, consult the cache, score within the latency budget
(falling back to the previous golden), explain, log the features, and score shadows off the request path."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis

from mlplatform.errors import OnlineStoreUnavailable
from serving.cache import PredictionCache, vector_key
from serving.dispatcher import Dispatcher, Route
from serving.errors import ModelUnavailable
from serving.feature_log import FeatureLogWriter
from serving.metrics import ServingMetrics
from serving.model_pool import LoadedModel, ModelPool
from serving.online_features import OnlineFeatureReader, OnlineFeatures

log = logging.getLogger(__name__)
HANG_GRACE_S = 0.25  # how far past the latency budget a model may run before it is abandoned as hung
MAX_SHADOW_BACKLOG = 10_000


@dataclass(frozen=True)
class ScoringRequest:
    """One transaction to score: entity keys and request fields, its time, and ids."""

    request_id: str
    transaction_id: str | None
    row: dict[str, Any]  # entity keys + request fields, as the feature service needs them
    time_us: int  # the transaction's time (µs since the epoch): features are taken as of just before it


@dataclass
class Prediction:
    """What the service answers for one transaction."""

    request_id: str
    transaction_id: str | None
    score: float
    model: LoadedModel
    role: str
    fallback: bool
    fallback_reason: str | None
    missing: list[str]
    stale: list[str]
    cached: bool
    contributions: dict[str, float] | None = None


class Predictor:
    """Scores transactions with the pool's models on features read from Redis."""

    def __init__(
        self,
        redis_client,
        reader_for: Callable[[str], OnlineFeatureReader],
        pool: ModelPool,
        dispatcher: Dispatcher,
        cache: PredictionCache,
        feature_log: FeatureLogWriter,
        metrics: ServingMetrics,
        latency_budget_ms: float,
        redis_addr: str,
    ) -> None:
        self.redis = redis_client
        self.reader_for = reader_for
        self.pool = pool
        self.dispatcher = dispatcher
        self.cache = cache
        self.feature_log = feature_log
        self.metrics = metrics
        self.budget_s = latency_budget_ms / 1000.0
        self.redis_addr = redis_addr
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="score")
        self._shadow_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._shadow_backlog = 0

    async def _features(self, service: str, requests: Sequence[ScoringRequest]) -> OnlineFeatures:
        reader = self.reader_for(service)
        try:
            return await reader.fetch(self.redis, [r.row for r in requests], [r.time_us for r in requests])
        except (redis.RedisError, OSError) as exc:
            self.metrics.redis_errors.inc()
            raise OnlineStoreUnavailable(
                f"the online store (Redis at {self.redis_addr}) did not answer ({type(exc).__name__}); "
                "the service retries on the next request"
            ) from exc

    async def _score(self, model: LoadedModel, X: np.ndarray, budget: bool) -> np.ndarray:
        if not budget or self.budget_s <= 0:
            return model.predict(X)
        loop = asyncio.get_running_loop()

        def timed() -> tuple[np.ndarray, float]:
            started = time.perf_counter()
            return model.predict(X), time.perf_counter() - started

        # The budget judges the model's own compute time, not time spent queueing behind other requests in a
        # saturated event loop (falling back would not help there: the previous golden waits in the same queue).
        # A model that hangs is cut off after the budget plus HANG_GRACE_S.
        scores, took = await asyncio.wait_for(loop.run_in_executor(self._executor, timed),
                                              self.budget_s + HANG_GRACE_S)
        if took > self.budget_s:
            raise TimeoutError(f"took {took * 1000:.2f} ms, over the {self.budget_s * 1000:g} ms budget")
        return scores

    async def predict(self, requests: Sequence[ScoringRequest], explain: bool = False) -> list[Prediction]:
        """Score every request; models answer per their route, failures fall back, nothing is left unscored."""
        t0 = time.perf_counter()
        state = self.pool.state  # a snapshot: a hot swap during this call does not affect it
        routes = [self.dispatcher.route(state, r.row.get("customer_id")) for r in requests]
        fetched: dict[str, OnlineFeatures] = {}

        async def features(service: str) -> OnlineFeatures:
            if service not in fetched:
                fetched[service] = await self._features(service, requests)
            return fetched[service]

        by_model: dict[int, list[int]] = {}
        for i, route in enumerate(routes):
            by_model.setdefault(id(route.primary), []).append(i)
        results: list[Prediction | None] = [None] * len(requests)
        for idx in by_model.values():
            route = routes[idx[0]]
            await self._predict_group(route, idx, requests, features, results, explain)
        elapsed = time.perf_counter() - t0
        out = [p for p in results if p is not None]
        self._account(out, requests, fetched, elapsed, state)
        return out

    async def _predict_group(self, route: Route, idx: list[int], requests, features, results, explain) -> None:
        model = route.primary
        feats = await features(model.feature_service)
        X = np.vstack([model.vector(feats.values[i]) for i in idx])
        scores = np.full(len(idx), np.nan)
        keys = [vector_key(model.name, model.version, X[k]) for k in range(len(idx))]
        generation = self.cache.generation
        cached = np.zeros(len(idx), dtype=bool)
        if not explain:
            for k, key in enumerate(keys):
                hit = self.cache.get(key)
                if hit is not None:
                    scores[k], cached[k] = hit, True
        n_hits = int(cached.sum())
        if n_hits:
            self.metrics.cache_hits.inc(n_hits)
        if n_hits < len(idx):
            self.metrics.cache_misses.inc(len(idx) - n_hits)
        answering: list[LoadedModel] = [model] * len(idx)
        reason = route.unavailable_reason
        if reason:
            self.metrics.fallbacks.labels("golden_unavailable").inc(len(idx))
        todo = np.flatnonzero(~cached)
        if len(todo):
            chain = [model, *route.fallbacks]
            for depth, candidate in enumerate(chain):
                try:
                    if candidate.feature_service != model.feature_service:
                        cf = await features(candidate.feature_service)
                        Xc = np.vstack([candidate.vector(cf.values[idx[k]]) for k in todo])
                    else:
                        Xc = np.vstack([candidate.vector(feats.values[idx[k]]) for k in todo])
                    got = await self._score(candidate, Xc, budget=depth == 0)
                except OnlineStoreUnavailable:
                    raise
                except Exception as exc:  # TimeoutError (over budget) or a failing model
                    why = "latency_budget" if isinstance(exc, TimeoutError) else "model_error"
                    self.metrics.fallbacks.labels(why).inc(len(todo))
                    detail = (f"over the {self.budget_s * 1000:g} ms latency budget" if why == "latency_budget"
                              else f"{type(exc).__name__}: {exc}")
                    reason = f"{candidate.name} v{candidate.version} failed: {detail}"
                    log.warning("falling back: %s", reason)
                    continue
                scores[todo] = got
                for k in todo:
                    answering[k] = candidate
                if candidate is model:
                    for k in todo:
                        self.cache.put(keys[k], float(scores[k]), generation)
                break
            else:
                raise ModelUnavailable(f"every model on the route failed; last: {reason}")
        contributions: list[dict[str, float] | None] = [None] * len(idx)
        if explain:
            for m in {id(a): a for a in answering}.values():
                ks = [k for k in range(len(idx)) if answering[k] is m]
                rows = np.vstack([m.vector(feats.values[idx[k]]) for k in ks])
                contrib = m.contributions(rows)
                names = [*m.feature_names, "bias"]
                for j, k in enumerate(ks):
                    contributions[k] = {n: float(c) for n, c in zip(names, contrib[j], strict=True)}
        for k, i in enumerate(idx):
            m = answering[k]
            fell_back = m is not model or route.unavailable_reason is not None
            role = route.role if m is model else ("golden" if m is self.pool.state.golden else "previous_golden")
            if route.unavailable_reason is not None and m is model:
                role = "previous_golden"
            results[i] = Prediction(
                request_id=requests[i].request_id, transaction_id=requests[i].transaction_id,
                score=float(scores[k]), model=m, role=role, fallback=fell_back,
                fallback_reason=reason if fell_back else None,
                missing=feats.missing[i], stale=feats.stale[i], cached=bool(cached[k]),
                contributions=contributions[k],
            )

    def _account(self, preds: list[Prediction], requests, fetched, elapsed: float, state) -> None:
        """Metrics, feature logs, and shadow scoring (handed to a background thread)."""
        now = datetime.now(UTC)
        latency_ms = elapsed * 1000.0
        records = []
        for i, (p, req) in enumerate(zip(preds, requests, strict=True)):
            version = str(p.model.version)
            self.metrics.predictions.labels(p.model.name, version, p.role).inc()
            self.metrics.latency.labels(p.model.name, version).observe(elapsed)
            for n in p.missing:
                self.metrics.missing.labels(n).inc()
            for n in p.stale:
                self.metrics.stale.labels(n).inc()
            values = fetched[p.model.feature_service].values[i]
            records.append(_record(req, p.model, p.role, True, p.score, p, values, now, latency_ms))
        self.feature_log.write(records)
        shadows = state.shadows
        if shadows and self._shadow_backlog < MAX_SHADOW_BACKLOG:
            self._shadow_backlog += len(requests)
            snapshot = {s: f for s, f in fetched.items()}
            self._shadow_executor.submit(self._run_shadows, shadows, list(requests), snapshot, now)
        elif shadows:
            for s in shadows:
                self.metrics.shadow.labels(s.name, str(s.version), "dropped").inc(len(requests))

    def _run_shadows(self, shadows: list[LoadedModel], requests, fetched: dict[str, OnlineFeatures], now) -> None:
        try:
            for shadow in shadows:
                feats = fetched.get(shadow.feature_service)
                if feats is None:
                    self.metrics.shadow.labels(shadow.name, str(shadow.version), "other_feature_service").inc()
                    continue
                t0 = time.perf_counter()
                try:
                    X = np.vstack([shadow.vector(v) for v in feats.values])
                    scores = shadow.predict(X)
                except Exception:
                    log.exception("shadow %s v%s failed", shadow.name, shadow.version)
                    self.metrics.shadow.labels(shadow.name, str(shadow.version), "error").inc(len(requests))
                    continue
                ms = (time.perf_counter() - t0) * 1000.0
                records = []
                for i, req in enumerate(requests):
                    p = Prediction(req.request_id, req.transaction_id, float(scores[i]), shadow, "shadow", False,
                                   None, feats.missing[i], feats.stale[i], False)
                    records.append(_record(req, shadow, "shadow", False, p.score, p, feats.values[i], now, ms))
                self.feature_log.write(records)
                self.metrics.shadow.labels(shadow.name, str(shadow.version), "logged").inc(len(requests))
        finally:
            self._shadow_backlog -= len(requests)

    def close(self) -> None:
        """Finish shadow scoring (so its rows reach the feature log) and stop the worker threads."""
        self._shadow_executor.shutdown(wait=True)
        self._executor.shutdown(wait=True)


def _record(req: ScoringRequest, model: LoadedModel, role: str, served: bool, score: float, p: Prediction,
            values: dict[str, Any], now: datetime, latency_ms: float) -> dict[str, Any]:
    """One feature-log row: ids, time, model, every model input, request fields, prediction, missing/stale."""
    row = req.row
    extra = {k: v for k, v in row.items() if k not in ("customer_id", "merchant_id", "amount", "transaction_ts")}
    return {
        "request_id": req.request_id,
        "logged_at": now,
        "transaction_id": req.transaction_id,
        "customer_id": row.get("customer_id"),
        "merchant_id": row.get("merchant_id"),
        "amount": row.get("amount"),
        "transaction_ts": row.get("transaction_ts"),
        "request_fields": json.dumps(extra) if extra else None,
        "model_name": model.name,
        "model_version": model.version,
        "role": role,
        "served": served,
        "fallback": p.fallback,
        "fallback_reason": p.fallback_reason,
        "cached": p.cached,
        "prediction": score,
        "missing": p.missing,
        "stale": p.stale,
        "latency_ms": latency_ms,
        "features": {n: values.get(n) for n in model.feature_names},
    }
