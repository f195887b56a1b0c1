"""Prometheus metrics of the service, on a registry of its own so each app (and test) counts separately."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# feature age: 1 ms to 1 day (a stream applies events within milliseconds; a daily materialization is a day old)
AGE_BUCKETS = (0.001, 0.01, 0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0)


class ServingMetrics:
    """Request counts and latencies per model version, cache, fallbacks, missing/stale/future features, log backlog."""

    def __init__(self) -> None:
        _in_process_values()
        self.registry = CollectorRegistry()
        r = self.registry
        self.predictions = Counter("mlplatform_predictions", "Predictions served, per model version and role.",
                                   ["model", "version", "role"], registry=r)
        self.latency = Histogram("mlplatform_prediction_latency_seconds",
                                 "End-to-end predict latency inside the service, per model version.",
                                 ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.feature_age = Histogram("mlplatform_feature_age_seconds",
                                     "Age of the newest data behind a served row's features, per view: the "
                                     "request's time minus the time the source is known complete up to (event "
                                     "logs' newest applied event, or the materialized watermark end). Only "
                                     "customer_activity; the other views are slow-moving.",
                                     ["view"], buckets=AGE_BUCKETS, registry=r)
        self.requests = Counter("mlplatform_requests", "HTTP requests per endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self._request_children: dict[tuple[str, int], Any] = {}
        self.cache_hits = Counter("mlplatform_cache_hits", "Prediction cache hits.", registry=r)
        self.cache_misses = Counter("mlplatform_cache_misses", "Prediction cache misses.", registry=r)
        self.fallbacks = Counter("mlplatform_fallbacks", "Answers given by a fallback model, per reason.",
                                 ["reason"], registry=r)
        self.missing = Counter("mlplatform_missing_features", "Model inputs that had no value, per feature.",
                               ["feature"], registry=r)
        self.stale = Counter("mlplatform_stale_features", "Model inputs older than their view's TTL, per feature.",
                             ["feature"], registry=r)
        self.future = Counter("mlplatform_future_features",
                              "Model inputs whose stored row is newer than the request (withheld), per feature.",
                              ["feature"], registry=r)
        self.degraded = Counter("mlplatform_degraded_predictions",
                                "Predictions answered on no stored feature at all (online store empty or entity "
                                "unknown): marked `degraded` in the answer.", registry=r)
        self.shadow = Counter("mlplatform_shadow_predictions", "Shadow predictions logged (never returned).",
                              ["model", "version", "outcome"], registry=r)
        self.swaps = Counter("mlplatform_model_swaps", "Times the served model set changed.", registry=r)
        self.redis_errors = Counter("mlplatform_redis_errors", "Requests answered 503 because Redis failed.",
                                    registry=r)
        self.log_rows = Counter("mlplatform_feature_log_rows_written", "Feature-log rows written to Parquet.",
                                registry=r)
        self.log_backlog = Gauge("mlplatform_feature_log_backlog", "Feature-log rows waiting to be written.",
                                 registry=r)
        self.log_dropped = Counter("mlplatform_feature_log_rows_dropped",
                                   "Feature-log rows dropped: the queue was full (or, with no write-ahead file, "
                                   "still unwritten at shutdown).", registry=r)
        self.log_dead_lettered = Counter("mlplatform_feature_log_rows_dead_lettered",
                                         "Feature-log rows that did not fit the schema, per action: coerced "
                                         "(written with those values null) or quarantined (not written); each "
                                         "is in the dead-letter file with its reason.", ["action"], registry=r)
        self.log_replayed = Counter("mlplatform_feature_log_rows_replayed",
                                    "Feature-log rows written at start from a write-ahead file a stopped "
                                    "service left.", registry=r)
        self.log_write_failures = Counter("mlplatform_feature_log_write_failures",
                                          "Failed feature-log write attempts (retried with backoff), per target: "
                                          "parquet, wal, dead_letter, ship (a put to MLPLATFORM_FEATURE_LOGS_URI).",
                                          ["target"], registry=r)
        self.log_parts_shipped = Counter("mlplatform_feature_log_parts_shipped",
                                         "Feature-log Parquet parts put to MLPLATFORM_FEATURE_LOGS_URI (then deleted "
                                         "locally).", registry=r)
        self.log_parts_waiting = Gauge("mlplatform_feature_log_parts_waiting",
                                       "Feature-log Parquet parts written locally and not yet shipped to "
                                       "MLPLATFORM_FEATURE_LOGS_URI (0 without it).", registry=r)
        self.shed = Counter("mlplatform_shed_requests",
                            "Requests answered 503 at once because serving_max_in_flight were already in flight.",
                            registry=r)
        self.model_info = Gauge("mlplatform_model_info", "Models in the pool (1 = loaded and warm).",
                                ["role", "model", "version"], registry=r)
        self.events_accepted = Counter("mlplatform_events_accepted",
                                       "Transaction events POST /v1/events appended to the events stream.", registry=r)
        self.events_recorded = Counter("mlplatform_events_recorded",
                                       "Scored transactions appended to the events stream (serving_record_events).",
                                       registry=r)
        self.events_record_dropped = Counter("mlplatform_events_record_dropped",
                                             "Scored transactions not appended to the events stream, per reason: "
                                             "queue_full, redis_error (the append failed; some may have landed), "
                                             "shutdown.", ["reason"], registry=r)
        self.events_record_backlog = Gauge("mlplatform_events_record_backlog",
                                           "Scored transactions waiting to be appended to the events stream.",
                                           registry=r)

    def count_request(self, endpoint: str, status: int) -> None:
        """One answered HTTP request (``mlplatform_requests_total``); label children cached per (endpoint, status)."""
        key = (endpoint, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(endpoint, str(status))
        child.inc()

    def track_backlog(self, fn: Callable[[], float], parts_waiting: Callable[[], float] = lambda: 0.0) -> None:
        """Read the feature-log backlog from ``fn`` and the parts waiting to be shipped from ``parts_waiting`` at
        scrape time."""
        self.log_backlog.set_function(fn)
        self.log_parts_waiting.set_function(parts_waiting)

    def track_events(self, backlog: Callable[[], float], stream: Callable[[], tuple[int | None, int | None]]) -> None:
        """Read the recording backlog from ``backlog`` and the consumer group's (lag, pending) from ``stream`` at
        scrape time (``mlplatform_stream_lag``, ``mlplatform_stream_pending``: no sample while either is None)."""
        self.events_record_backlog.set_function(backlog)
        self.registry.register(_StreamCollector(stream))

    def models_swapped(self, loaded: Iterable[tuple[str, Any]]) -> None:
        """Count a swap and describe the pool's new (role, model) pairs in ``mlplatform_model_info``."""
        self.swaps.inc()
        self.model_info.clear()
        for role, m in loaded:
            self.model_info.labels(role, m.name, str(m.version)).set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _StreamCollector:
    """The consumer group's lag and pending entries as gauges, from a callable returning (lag, pending)."""

    def __init__(self, read: Callable[[], tuple[int | None, int | None]]) -> None:
        self.read = read

    def describe(self) -> list[Any]:
        return [GaugeMetricFamily("mlplatform_stream_lag", ""), GaugeMetricFamily("mlplatform_stream_pending", "")]

    def collect(self) -> Iterable[Any]:
        lag, pending = self.read()
        lag_family = GaugeMetricFamily("mlplatform_stream_lag", "Events on the events stream not yet delivered to "
                                       "the consumer group (`mlplatform stream run`); unset while unknown.")
        pending_family = GaugeMetricFamily("mlplatform_stream_pending", "Events delivered to a consumer but not yet "
                                           "applied and acknowledged; unset while unknown.")
        if lag is not None:
            lag_family.add_metric([], lag)
        if pending is not None:
            pending_family.add_metric([], pending)
        yield lag_family
        yield pending_family


def _in_process_values() -> None:
    """Keep metric values in this process's memory.

    Importing Feast sets PROMETHEUS_MULTIPROC_DIR (feast/metrics.py), which silently switches prometheus_client to
    file-backed multi-process values; our per-app registries would then render empty. Each uvicorn worker keeps
    its own metrics instead.
    """
    from prometheus_client import values

    if values.ValueClass is not values.MutexValue:
        values.ValueClass = values.MutexValue
