"""Everything the service opens once per process: the FeatureStore, one Redis pool, readers, models, log.

Parts are built bottom-up, each from the parts below it; none refers back to the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mlplatform.contracts.check_metrics import CheckReportCollector
from mlplatform.errors import OnlineStoreUnavailable
from mlplatform.filesystems import feature_logs_location, reports_location
from mlplatform.redact import redact_redis_address
from mlplatform.settings import Settings
from serving.accounting import Accounting
from serving.cache import PredictionCache
from serving.dispatcher import Dispatcher
from serving.event_stream import EventRecorder, StreamGauges
from serving.feature_log import FeatureLogWriter, WriterEvents
from serving.feature_readers import FeatureReaders, FeatureSource
from serving.metrics import ServingMetrics
from serving.model_pool import ModelPool
from serving.predictor import Predictor
from serving.redis_packing import pack_in_c
from serving.scoring import BudgetedScorer, FallbackChain
from serving.shadows import ShadowScorer
from serving.swaps import SwapEffects

log = logging.getLogger(__name__)

PUSH_WORKERS, PUSH_QUEUE = 4, 4  # blocking pushes (Feast's sync Redis client): at most 8 in flight, then 503
CHECK_WORKERS, CHECK_QUEUE = 2, 2  # /readyz's blocking registry reads


class BoundedExecutor:
    """A small thread pool of its own for one kind of blocking work, off the default executor that /readyz, the
    model refresh and the shutdown flush use. At most ``workers + queue`` calls are in it; one more is refused at
    once with ``refuse()`` (never queued), so a slow dependency cannot pile up waiting requests."""

    def __init__(self, name: str, workers: int, queue: int, refuse: Callable[[], Exception]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._refuse = refuse

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in this pool; refused when full. A caller that stops waiting leaves the call to finish."""
        if not self._slots.acquire(blocking=False):
            raise self._refuse()
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _done: self._slots.release())  # when the thread is done, not the caller
        return await asyncio.wrap_future(future)

    def close(self, wait: bool = True) -> None:
        """Drop the queued calls; with ``wait``, let those that run finish (each is bounded by its own timeouts)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)


def _push_busy() -> Exception:
    return OnlineStoreUnavailable(
        f"the online store is slow to take pushes: {PUSH_WORKERS + PUSH_QUEUE} are already in flight; retry shortly"
    )


def _checks_busy() -> Exception:
    return TimeoutError("earlier checks have not returned yet")


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
    # blocking Redis work (Feast's push) and /readyz's registry reads, each in a bounded pool of its own
    push_executor: BoundedExecutor = field(
        default_factory=lambda: BoundedExecutor("push", PUSH_WORKERS, PUSH_QUEUE, _push_busy))
    checks_executor: BoundedExecutor = field(
        default_factory=lambda: BoundedExecutor("readyz", CHECK_WORKERS, CHECK_QUEUE, _checks_busy))
    recorder: EventRecorder | None = None  # scored transactions into the events stream (serving_record_events)
    stream_gauges: StreamGauges | None = None  # the consumer group's lag and pending, for /metrics

    @property
    def ready(self) -> bool:
        """A warm model can answer (the golden, or the previous golden in its place)."""
        return self.pool.state.can_answer

    @classmethod
    def open(cls, settings: Settings) -> ServingContext:
        """Open the store and Redis pool, fetch the feature service once, load and warm the models (blocking)."""
        from mlplatform.models.registry import ModelRegistry
        from mlplatform.stores import async_redis_client, open_feature_store

        store = open_feature_store(settings, redis_timeout=settings.serving_redis_timeout_seconds)  # push's client
        readers = FeatureReaders(store, stream_features=settings.serving_stream_features)
        client = pack_in_c(async_redis_client(settings, timeout=settings.serving_redis_timeout_seconds))
        metrics = ServingMetrics()
        metrics.registry.register(CheckReportCollector(reports_location(settings.layout)))  # monitor check verdict
        cache = PredictionCache(settings.serving_cache_size, settings.serving_cache_ttl_seconds)
        layout = settings.layout
        feature_log = FeatureLogWriter(
            layout.feature_logs_dir, settings.feature_log_batch_rows, settings.feature_log_flush_seconds,
            max_queue_rows=settings.feature_log_max_queue_rows, dead_letter_dir=layout.feature_log_dead_letter_dir,
            wal_dir=layout.feature_log_wal_dir if settings.feature_log_wal else None,
            target=feature_logs_location(layout) if settings.feature_logs_uri else None,  # parts shipped there
            events=WriterEvents(
                written=lambda n, _path: metrics.log_rows.inc(n), dropped=metrics.log_dropped.inc,
                dead_lettered=lambda n, action: metrics.log_dead_lettered.labels(action).inc(n),
                replayed=metrics.log_replayed.inc,
                write_failed=lambda target: metrics.log_write_failures.labels(target).inc(),
                shipped=metrics.log_parts_shipped.inc),
        )
        shipper = feature_log.shipper
        metrics.track_backlog(lambda: feature_log.backlog, (lambda: len(shipper.pending())) if shipper else (lambda: 0))
        registry = ModelRegistry(settings)
        pool = ModelPool(registry, settings.serving_warmup_predictions, check_model=readers.check_model,
                         on_swap=SwapEffects(cache, metrics))
        dispatcher = Dispatcher(settings.serving_challenger_weight, settings.serving_ab_salt)
        accounting = Accounting(metrics, feature_log, settings.serving_log_requests)
        features = FeatureSource(client, readers.get, redact_redis_address(settings.redis_addr),
                                 accounting.redis_failed)
        chain = FallbackChain(BudgetedScorer(settings.serving_latency_budget_ms), accounting)
        predictor = Predictor(pool, dispatcher, features, cache, chain, ShadowScorer(accounting), accounting)
        recorder = EventRecorder(client, settings.events_stream, metrics) if settings.serving_record_events else None
        gauges = StreamGauges(client, settings.events_stream)
        metrics.track_events(lambda: recorder.backlog if recorder is not None else 0, gauges.values)
        readers.get(settings.feature_service)  # the FeatureService object, fetched once
        feature_log.start()
        pool.refresh()  # loads and warms golden, previous golden, challengers, shadows
        return cls(settings=settings, store=store, redis=client, registry=registry, readers=readers, pool=pool,
                   cache=cache, feature_log=feature_log, metrics=metrics, dispatcher=dispatcher, predictor=predictor,
                   recorder=recorder, stream_gauges=gauges)

    def start_background(self) -> None:
        """Start the event-loop tasks of the events stream (recording, lag gauges): call from the running loop."""
        if self.recorder is not None:
            self.recorder.start()
        if self.stream_gauges is not None:
            self.stream_gauges.start()

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
        """Finish shadows and pushes, flush the feature log, close Redis (each Redis call is bounded by its timeout,
        so a paused Redis cannot hold the shutdown)."""
        await asyncio.to_thread(self.predictor.close)
        if self.stream_gauges is not None:
            await self.stream_gauges.close()
        if self.recorder is not None:  # drained while Redis is still open
            await self.recorder.close(max(2.0, 4 * self.settings.serving_redis_timeout_seconds))
        await asyncio.to_thread(self.feature_log.close)
        await asyncio.to_thread(self.push_executor.close)
        self.checks_executor.close(wait=False)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.redis.aclose(), 2 * self.settings.serving_redis_timeout_seconds)
