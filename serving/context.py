"""Everything the service opens once per process: the FeatureStore, one Redis pool, readers, models, log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from mlplatform.errors import DefinitionError
from mlplatform.settings import Settings
from serving.cache import PredictionCache
from serving.dispatcher import Dispatcher
from serving.feature_log import FeatureLogWriter
from serving.metrics import ServingMetrics
from serving.model_pool import ModelPool, PoolState
from serving.online_features import OnlineFeatureReader
from serving.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass
class ServingContext:
    """The service's long-lived parts, created in the app's lifespan and closed there."""

    settings: Settings
    store: Any
    redis: Any  # redis.asyncio.Redis over one connection pool
    registry: Any  # mlplatform.models.registry.ModelRegistry
    pool: ModelPool
    cache: PredictionCache
    feature_log: FeatureLogWriter
    metrics: ServingMetrics
    dispatcher: Dispatcher
    predictor: Predictor = field(init=False)
    readers: dict[str, OnlineFeatureReader] = field(default_factory=dict)
    ready: bool = False
    feast_registry_refreshed_at: float = 0.0

    @classmethod
    def open(cls, settings: Settings) -> ServingContext:
        """Open the store and Redis pool, fetch the feature service once, load and warm the models (blocking)."""
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from mlplatform.models.registry import ModelRegistry
        from mlplatform.stores import open_feature_store

        store = open_feature_store(settings)
        host, port = settings.redis_host_port
        options = dict(part.split("=", 1) for part in settings.redis_addr.split(",")[1:] if "=" in part)
        timeout = settings.serving_redis_timeout_seconds
        client = aredis.Redis(
            host=host, port=port, db=int(options.get("db", 0)), password=options.get("password"),
            socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
            max_connections=256, health_check_interval=0,
        )
        metrics = ServingMetrics()
        cache = PredictionCache(settings.serving_cache_size, settings.serving_cache_ttl_seconds)
        feature_log = FeatureLogWriter(
            settings.feature_logs_dir, settings.feature_log_batch_rows, settings.feature_log_flush_seconds,
            on_written=lambda n, _path: metrics.log_rows.inc(n),
        )
        metrics.track_backlog(lambda: feature_log.backlog)
        registry = ModelRegistry(settings)
        ctx = cls(
            settings=settings, store=store, redis=client, registry=registry, pool=None,  # type: ignore[arg-type]
            cache=cache, feature_log=feature_log, metrics=metrics,
            dispatcher=Dispatcher(settings.serving_challenger_weight, settings.serving_ab_salt),
        )
        ctx.pool = ModelPool(registry, settings.serving_warmup_predictions, check_model=ctx.check_model,
                             on_swap=ctx._on_swap)
        ctx.predictor = Predictor(client, ctx.reader, ctx.pool, ctx.dispatcher, cache, feature_log, metrics,
                                  settings.serving_latency_budget_ms, settings.redis_addr)
        ctx.reader(settings.feature_service)  # the FeatureService object, fetched once
        ctx.feast_registry_refreshed_at = time.monotonic()
        feature_log.start()
        ctx.pool.refresh()  # loads and warms golden, previous golden, challengers, shadows
        ctx.ready = ctx.pool.state.golden is not None or ctx.pool.state.previous_golden is not None
        return ctx

    # -- feature services -------------------------------------------------------------------------------------
    def reader(self, service_name: str) -> OnlineFeatureReader:
        """The read plan of a feature service (built once per service and per registry refresh)."""
        reader = self.readers.get(service_name)
        if reader is None:
            try:
                service = self.store.get_feature_service(service_name)
            except Exception as exc:
                raise DefinitionError(
                    f"feature service {service_name!r} is not in the Feast registry: run `mlplatform apply`"
                ) from exc
            reader = OnlineFeatureReader(self.store, service)
            self.readers = {**self.readers, service_name: reader}
        return reader

    def check_model(self, info) -> None:
        """A model can serve only if its feature service provides every input of its signature."""
        reader = self.reader(info.feature_service)
        absent = [n for n in info.feature_names if n not in reader.output_names]
        if absent:
            raise DefinitionError(
                f"{info.name} v{info.version} needs {', '.join(absent)}, which feature service "
                f"{info.feature_service!r} does not serve"
            )

    def refresh_feature_registry(self) -> None:
        """Re-read Feast's registry now (not after Feast's 600 s cache) and rebuild the read plans."""
        self.store.refresh_registry()
        fresh = {}
        for name in list(self.readers):
            fresh[name] = OnlineFeatureReader(self.store, self.store.get_feature_service(name))
        self.readers = fresh
        self.feast_registry_refreshed_at = time.monotonic()

    def _on_swap(self, old: PoolState, new: PoolState) -> None:
        self.cache.clear()
        self.metrics.swaps.inc()
        self.metrics.model_info.clear()
        for role, m in new.loaded():
            self.metrics.model_info.labels(role, m.name, str(m.version)).set(1)
        self.ready = new.golden is not None or new.previous_golden is not None
        log.info("models swapped: %s -> %s", old.key(), new.key())

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
                    await asyncio.to_thread(self.refresh_feature_registry)
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
