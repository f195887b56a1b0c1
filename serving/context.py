"""Everything the service opens once per process: the FeatureStore, one Redis pool, readers, models, log.

Parts are built bottom-up, each from the parts below it; none refers back to the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from mlplatform.settings import RedisAddress, Settings
from serving.accounting import Accounting
from serving.cache import PredictionCache
from serving.dispatcher import Dispatcher
from serving.feature_log import FeatureLogWriter
from serving.feature_readers import FeatureReaders, FeatureSource
from serving.metrics import ServingMetrics
from serving.model_pool import ModelPool
from serving.predictor import Predictor
from serving.scoring import BudgetedScorer, FallbackChain
from serving.shadows import ShadowScorer
from serving.swaps import SwapEffects

log = logging.getLogger(__name__)


@dataclass
class ServingContext:
    """The service's long-lived parts, created in the app's lifespan and closed there."""

    settings: Settings
    store: Any
    redis: Any  # redis.asyncio.Redis over one connection pool
    registry: Any  # mlplatform.models.registry.ModelRegistry
    readers: FeatureReaders
    pool: ModelPool
    cache: PredictionCache
    feature_log: FeatureLogWriter
    metrics: ServingMetrics
    dispatcher: Dispatcher
    predictor: Predictor

    @property
    def ready(self) -> bool:
        """A warm model can answer (the golden, or the previous golden in its place)."""
        return self.pool.state.can_answer

    @classmethod
    def open(cls, settings: Settings) -> ServingContext:
        """Open the store and Redis pool, fetch the feature service once, load and warm the models (blocking)."""
        from mlplatform.models.registry import ModelRegistry
        from mlplatform.stores import async_redis_client, open_feature_store

        store = open_feature_store(settings)
        readers = FeatureReaders(store)
        client = async_redis_client(settings, timeout=settings.serving_redis_timeout_seconds)
        metrics = ServingMetrics()
        cache = PredictionCache(settings.serving_cache_size, settings.serving_cache_ttl_seconds)
        feature_log = FeatureLogWriter(
            settings.layout.feature_logs_dir, settings.feature_log_batch_rows, settings.feature_log_flush_seconds,
            on_written=lambda n, _path: metrics.log_rows.inc(n),
        )
        metrics.track_backlog(lambda: feature_log.backlog)
        registry = ModelRegistry(settings)
        pool = ModelPool(registry, settings.serving_warmup_predictions, check_model=readers.check_model,
                         on_swap=SwapEffects(cache, metrics))
        dispatcher = Dispatcher(settings.serving_challenger_weight, settings.serving_ab_salt)
        accounting = Accounting(metrics, feature_log)
        features = FeatureSource(client, readers.get, str(RedisAddress.parse(settings.redis_addr)),
                                 accounting.redis_failed)
        chain = FallbackChain(BudgetedScorer(settings.serving_latency_budget_ms), accounting)
        predictor = Predictor(pool, dispatcher, features, cache, chain, ShadowScorer(accounting), accounting)
        readers.get(settings.feature_service)  # the FeatureService object, fetched once
        feature_log.start()
        pool.refresh()  # loads and warms golden, previous golden, challengers, shadows
        return cls(settings=settings, store=store, redis=client, registry=registry, readers=readers, pool=pool,
                   cache=cache, feature_log=feature_log, metrics=metrics, dispatcher=dispatcher, predictor=predictor)

    # -- background refresh -----------------------------------------------------------------------------------
    async def refresh_loop(self) -> None:
        """Forever: refresh Feast's registry every ``registry_ttl_seconds`` and the model aliases every
        ``serving_model_refresh_seconds``; errors are logged and retried, never fatal."""
        s = self.settings
        next_feast = time.monotonic() + s.registry_ttl_seconds
        next_models = time.monotonic() + s.serving_model_refresh_seconds
        while True:
            await asyncio.sleep(max(0.05, min(next_feast, next_models) - time.monotonic()))
            now = time.monotonic()
            if now >= next_feast:
                next_feast = now + s.registry_ttl_seconds
                try:
                    await asyncio.to_thread(self.readers.refresh)
                except Exception:
                    log.exception("Feast registry refresh failed; keeping the previous read plans")
            if now >= next_models:
                next_models = now + s.serving_model_refresh_seconds
                try:
                    await asyncio.to_thread(self.pool.refresh)
                except Exception:
                    log.exception("model registry refresh failed; keeping the current models")

    async def close(self) -> None:
        """Finish shadows, flush the feature log, close Redis."""
        await asyncio.to_thread(self.predictor.close)
        await asyncio.to_thread(self.feature_log.close)
        with contextlib.suppress(Exception):
            await self.redis.aclose()
