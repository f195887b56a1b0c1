"""Accounting of what the service did: Prometheus counters and feature-log rows of served and shadow predictions."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from mlplatform.contracts.feature_log import ACTIVITY_FROM_LOGS, ACTIVITY_FROM_ROWS
from mlplatform.features.activity import ACTIVITY_VIEW
from mlplatform.logs import FIELDS
from serving.dispatcher import SHADOW
from serving.feature_log import FeatureLogWriter
from serving.metrics import ServingMetrics
from serving.model_pool import LoadedModel
from serving.online_features import OnlineFeatures
from serving.prediction import Prediction, ScoringRequest

log = logging.getLogger(__name__)

_ROW_COLUMNS = ("customer_id", "merchant_id", "amount", "transaction_ts")  # request fields with a column of their own


class Accounting:
    """Counts cache lookups, fallbacks, Redis failures, predictions and degraded ones; logs every prediction's
    inputs."""

    def __init__(self, metrics: ServingMetrics, feature_log: FeatureLogWriter, log_requests: bool = False) -> None:
        self.metrics = metrics
        self.feature_log = feature_log
        self.log_requests = log_requests  # one log line per answered prediction (serving_log_requests)
        self._served_children: dict[tuple[str, int, str], tuple[Any, Any]] = {}  # labels() looked up once
        self._age_child: Any = None  # the feature-age histogram's one series, made at its first observation

    def cache_lookups(self, hits: int, misses: int) -> None:
        """Count prediction-cache hits and misses."""
        if hits:
            self.metrics.cache_hits.inc(hits)
        if misses:
            self.metrics.cache_misses.inc(misses)

    def fell_back(self, reason: str, n: int) -> None:
        """Count ``n`` answers that had to come from a fallback, by reason (a metric label)."""
        self.metrics.fallbacks.labels(reason).inc(n)

    def redis_failed(self) -> None:
        """Count a request answered 503 because Redis failed."""
        self.metrics.redis_errors.inc()

    def served(self, preds: Sequence[Prediction], requests: Sequence[ScoringRequest],
               fetched: Mapping[str, OnlineFeatures], elapsed: float, now: datetime) -> None:
        """Metrics and feature-log rows of the predictions returned for ``requests`` (one each, in order)."""
        latency_ms = elapsed * 1000.0
        records = []
        for i, (p, req) in enumerate(zip(preds, requests, strict=True)):
            predictions, latency = self._children(p.model.name, p.model.version, p.role)
            predictions.inc()
            latency.observe(elapsed)
            for n in p.missing:
                self.metrics.missing.labels(n).inc()
            for n in p.stale:
                self.metrics.stale.labels(n).inc()
            for n in p.future:
                self.metrics.future.labels(n).inc()
            if p.degraded:
                self.metrics.degraded.inc()
            feats = fetched[p.model.feature_service]
            age = _age(feats, i)
            if age is not None:
                if self._age_child is None:
                    self._age_child = self.metrics.feature_age.labels(ACTIVITY_VIEW)
                self._age_child.observe(age)
            records.append(feature_log_row(req, p, True, feats.values[i], now, latency_ms, _from_logs(feats, i),
                                           age))
            if self.log_requests:
                log.info("prediction", extra={FIELDS: {
                    "request_id": p.request_id, "transaction_id": p.transaction_id, "model": p.model.name,
                    "version": p.model.version, "role": p.role, "decision": p.decision, "latency_ms": latency_ms,
                    "outcome": "fallback" if p.fallback else "degraded" if p.degraded else "ok"}})
        self.feature_log.write(records)

    def _children(self, name: str, version: int, role: str) -> tuple[Any, Any]:
        """The predictions counter and latency histogram of a model version and role (a bounded set)."""
        key = (name, version, role)
        children = self._served_children.get(key)
        if children is None:
            children = (self.metrics.predictions.labels(name, str(version), role),
                        self.metrics.latency.labels(name, str(version)))
            self._served_children[key] = children
        return children

    def shadow_outcome(self, model: LoadedModel, outcome: str, n: int = 1) -> None:
        """Count shadow predictions by outcome: logged, error, dropped, other_feature_service."""
        self.metrics.shadow.labels(model.name, str(model.version), outcome).inc(n)

    def shadowed(self, model: LoadedModel, requests: Sequence[ScoringRequest], feats: OnlineFeatures,
                 scores: Sequence[float], now: datetime, latency_ms: float) -> None:
        """Log a shadow's scores for ``requests`` (never returned: ``served`` is false) and count them."""
        records = []
        for i, req in enumerate(requests):
            p = Prediction(req.request_id, req.transaction_id, float(scores[i]), model, SHADOW, False, None,
                           feats.missing[i], feats.stale[i], False, future=feats.future[i])
            records.append(feature_log_row(req, p, False, feats.values[i], now, latency_ms, _from_logs(feats, i),
                                           _age(feats, i)))
        self.feature_log.write(records)
        self.shadow_outcome(model, "logged", len(requests))


def _from_logs(feats: OnlineFeatures, i: int) -> bool:
    """Whether row ``i``'s customer_activity came from the customer's event log (a reader without the flag: no)."""
    return i < len(feats.from_logs) and feats.from_logs[i]


def _age(feats: OnlineFeatures, i: int) -> float | None:
    """Row ``i``'s customer_activity age in seconds (None: unknown, or a reader that does not measure it)."""
    return feats.activity_age_s[i] if i < len(feats.activity_age_s) else None


def feature_log_row(req: ScoringRequest, p: Prediction, served: bool, values: Mapping[str, Any], now: datetime,
                    latency_ms: float, from_logs: bool = False, activity_age_s: float | None = None) -> dict[str, Any]:
    """One feature-log row: ids, time, model, every model input, request fields, prediction, missing/stale/future,
    where customer_activity came from (``from_logs``) and how old its newest data was (``activity_age_s``), and the
    exact time the features were taken as of."""
    row = req.row
    extra = {k: v for k, v in row.items() if k not in _ROW_COLUMNS}
    return {
        "request_id": req.request_id,
        "logged_at": now,
        "transaction_id": req.transaction_id,
        "customer_id": row.get("customer_id"),
        "merchant_id": row.get("merchant_id"),
        "amount": row.get("amount"),
        "transaction_ts": row.get("transaction_ts"),
        "request_fields": json.dumps(extra) if extra else None,
        "model_name": p.model.name,
        "model_version": p.model.version,
        "role": p.role,
        "served": served,
        "fallback": p.fallback,
        "fallback_reason": p.fallback_reason,
        "cached": p.cached,
        "prediction": p.score,
        "missing": p.missing,
        "stale": p.stale,
        "future": p.future,
        "latency_ms": latency_ms,
        "activity_source": ACTIVITY_FROM_LOGS if from_logs else ACTIVITY_FROM_ROWS,
        "transaction_time_us": req.time_us,
        "activity_age_s": activity_age_s,
        "features": {n: values.get(n) for n in p.model.feature_names},
    }
