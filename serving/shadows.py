"""Shadow scoring: the shadow models score every served batch on one background thread, off the request path.

Their scores go to the feature log only (never to the caller). The backlog is bounded: past it, batches are
dropped and counted rather than queued without end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import numpy as np

from serving.accounting import Accounting
from serving.model_pool import LoadedModel
from serving.online_features import OnlineFeatures
from serving.prediction import ScoringRequest

log = logging.getLogger(__name__)
MAX_SHADOW_BACKLOG = 10_000  # requests waiting for shadow scoring before new batches are dropped


class ShadowScorer:
    """Scores batches with the shadow models on a background thread and accounts for the results."""

    def __init__(self, accounting: Accounting, max_backlog: int = MAX_SHADOW_BACKLOG) -> None:
        self.accounting = accounting
        self.max_backlog = max_backlog
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._backlog = 0

    def submit(self, shadows: Sequence[LoadedModel], requests: Sequence[ScoringRequest],
               fetched: Mapping[str, OnlineFeatures], now: datetime) -> None:
        """Queue the batch for every shadow (features already fetched are reused); drop it if the backlog is full."""
        if not shadows:
            return
        if self._backlog < self.max_backlog:
            self._backlog += len(requests)
            self._executor.submit(self._run, shadows, list(requests), dict(fetched), now)
        else:
            for s in shadows:
                self.accounting.shadow_outcome(s, "dropped", len(requests))

    def _run(self, shadows: Sequence[LoadedModel], requests: list[ScoringRequest],
             fetched: dict[str, OnlineFeatures], now: datetime) -> None:
        try:
            for shadow in shadows:
                feats = fetched.get(shadow.feature_service)
                if feats is None:
                    self.accounting.shadow_outcome(shadow, "other_feature_service")
                    continue
                t0 = time.perf_counter()
                try:
                    scores = shadow.predict(np.vstack([shadow.vector(v) for v in feats.values]))
                except Exception:
                    log.exception("shadow %s v%s failed", shadow.name, shadow.version)
                    self.accounting.shadow_outcome(shadow, "error", len(requests))
                    continue
                ms = (time.perf_counter() - t0) * 1000.0
                self.accounting.shadowed(shadow, requests, feats, scores, now, ms)
        finally:
            self._backlog -= len(requests)

    def close(self) -> None:
        """Finish the queued shadow scoring (so its rows reach the feature log), then stop the thread."""
        self._executor.shutdown(wait=True)
