"""One prediction, end to end: route, fetch online features, consult the cache, score (within the latency budget,
falling back along the route), explain, and account (metrics, feature log, shadows off the request path)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import numpy as np

from mlplatform.models.decisions import DECLINE, REVIEW, decide, reason_codes
from serving.accounting import Accounting
from serving.cache import PredictionCache, vector_key
from serving.dispatcher import Candidate, Dispatcher, Route
from serving.feature_readers import FeatureSource
from serving.model_pool import LoadedModel, ModelPool
from serving.online_features import OnlineFeatures
from serving.prediction import Prediction, ScoringRequest, degraded_reason
from serving.scoring import FallbackChain
from serving.shadows import ShadowScorer

__all__ = ["Prediction", "Predictor", "ScoringRequest"]

Features = Callable[[str], Awaitable[OnlineFeatures]]


class Predictor:
    """Scores transactions with the pool's models on features read from Redis."""

    def __init__(self, pool: ModelPool, dispatcher: Dispatcher, features: FeatureSource, cache: PredictionCache,
                 chain: FallbackChain, shadows: ShadowScorer, accounting: Accounting) -> None:
        self.pool = pool
        self.dispatcher = dispatcher
        self.features = features
        self.cache = cache
        self.chain = chain
        self.shadows = shadows
        self.accounting = accounting

    async def predict(self, requests: Sequence[ScoringRequest], explain: bool = False) -> list[Prediction]:
        """Score every request; models answer per their route, failures fall back, nothing is left unscored."""
        t0 = time.perf_counter()
        state = self.pool.state  # a snapshot: a hot swap during this call does not affect it
        route = self.dispatcher.route
        routes = [route(state, r.row.get("customer_id")) for r in requests]
        fetched: dict[str, OnlineFeatures] = {}

        async def features(service: str) -> OnlineFeatures:
            if service not in fetched:
                fetched[service] = await self.features.fetch(service, requests)
            return fetched[service]

        groups: dict[int, list[int]] = {}  # routes are shared per pool state: one group per route
        for i, r in enumerate(routes):
            groups.setdefault(id(r), []).append(i)
        results: list[Prediction] = [None] * len(requests)  # type: ignore[list-item]  # every slot is filled
        for idx in groups.values():
            await self._predict_group(routes[idx[0]], idx, requests, features, results, explain)
        elapsed = time.perf_counter() - t0
        now = datetime.now(UTC)
        self.accounting.served(results, requests, fetched, elapsed, now)
        self.shadows.submit(self.dispatcher.shadows(state), requests, fetched, now)
        return results

    async def _predict_group(self, route: Route, idx: list[int], requests: Sequence[ScoringRequest],
                             features: Features, results: list[Prediction], explain: bool) -> None:
        """Predictions for the requests ``idx``, which share ``route``: cache, then the fallback chain."""
        primary = route.primary
        model = primary.model
        feats = await features(model.feature_service)
        X = np.vstack([model.vector(feats.values[i]) for i in idx])
        n = len(idx)
        keys = [vector_key(model.name, model.version, X[k]) for k in range(n)]
        generation = self.cache.generation
        if explain:  # contributions are never cached: score every row
            scores, cached = np.full(n, np.nan), np.zeros(n, dtype=bool)
        else:
            scores, cached = self.cache.get_many(keys)
        n_hits = int(cached.sum())
        self.accounting.cache_lookups(n_hits, n - n_hits)
        if route.unavailable_reason:
            self.accounting.fell_back("golden_unavailable", n)
        answering: list[Candidate] = [primary] * n
        reason = route.unavailable_reason
        todo = np.flatnonzero(~cached)
        if len(todo):
            async def matrix(m: LoadedModel) -> np.ndarray:
                if m is model:
                    return X[todo]
                values = feats.values if m.feature_service == model.feature_service else (
                    await features(m.feature_service)).values
                return np.vstack([m.vector(values[idx[k]]) for k in todo])

            answer = await self.chain.answer(route, matrix, len(todo))
            scores[todo] = answer.scores
            reason = answer.reason
            for k in todo:
                answering[k] = answer.candidate
            if answer.candidate is primary:
                for k in todo:
                    self.cache.put(keys[k], float(scores[k]), generation)
        contributions = await _explain(answering, idx, features) if explain else None
        stored = self._stored_inputs(model)
        for k, i in enumerate(idx):
            c = answering[k]
            fell_back = c is not primary or route.unavailable_reason is not None
            results[i] = Prediction(
                request_id=requests[i].request_id, transaction_id=requests[i].transaction_id,
                score=float(scores[k]), model=c.model, role=c.role, fallback=fell_back,
                fallback_reason=reason if fell_back else None,
                missing=feats.missing[i], stale=feats.stale[i], cached=bool(cached[k]),
                contributions=None if contributions is None else contributions[k], future=feats.future[i],
                degraded=degraded_reason(stored, feats.missing[i], feats.stale[i], feats.future[i]),
                decision=decide(float(scores[k]), c.model.decisions),
            )
        await _reason_codes(results, answering, idx, features)

    async def model_features(self, request: ScoringRequest) -> tuple[Candidate, OnlineFeatures, list[str]]:
        """What ``predict`` would feed its first model for ``request``: the routed primary candidate, its features
        (one row) and which of its inputs are read from Redis. Nothing is scored, cached or logged."""
        route = self.dispatcher.route(self.pool.state, request.row.get("customer_id"))
        primary = route.primary
        feats = await self.features.fetch(primary.model.feature_service, [request])
        return primary, feats, self._stored_inputs(primary.model)

    def _stored_inputs(self, model: LoadedModel) -> list[str]:
        """The model's inputs read from Redis (its feature service's stored views, not its on-demand features); []
        from a feature source without read plans (a test stand-in), which then marks nothing degraded."""
        reader_for = getattr(self.features, "reader_for", None)
        if reader_for is None:
            return []
        direct = reader_for(model.feature_service).direct
        return [name for name in model.feature_names if name in direct]

    def close(self) -> None:
        """Finish shadow scoring (so its rows reach the feature log) and stop the worker threads."""
        self.shadows.close()
        self.chain.close()


async def _reason_codes(results: list[Prediction], answering: list[Candidate], idx: list[int],
                        features: Features) -> None:
    """Reason codes for the rows of ``idx`` sent to review or declined: the answering model's largest positive path
    contributions (``path_contributions``: cheap enough for the request path; ?explain=true gives exact SHAP)."""
    for k, i in enumerate(idx):
        p = results[i]
        if p.decision not in (REVIEW, DECLINE):
            continue
        m = answering[k].model
        row = m.vector((await features(m.feature_service)).values[i])
        contrib = m.path_contributions(row.reshape(1, -1))[0]
        values = {n: None if v != v else float(v) for n, v in zip(m.feature_names, row.tolist(), strict=True)}
        p.reasons = reason_codes(dict(zip([*m.feature_names, "bias"], contrib.tolist(), strict=True)), values)


async def _explain(answering: list[Candidate], idx: list[int], features: Features) -> list[dict[str, float] | None]:
    """Per-feature contributions (and bias) of each row, by the model that answered it, on that model's inputs."""
    out: list[dict[str, float] | None] = [None] * len(idx)
    for c in {id(a): a for a in answering}.values():
        m = c.model
        feats = await features(m.feature_service)
        ks = [k for k, a in enumerate(answering) if a is c]
        contrib = m.contributions(np.vstack([m.vector(feats.values[idx[k]]) for k in ks]))
        names = [*m.feature_names, "bias"]
        for j, k in enumerate(ks):
            out[k] = {name: float(v) for name, v in zip(names, contrib[j], strict=True)}
    return out
