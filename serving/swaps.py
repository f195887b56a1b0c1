"""What follows a model swap: cached scores are forgotten and the model metrics describe the new pool."""

from __future__ import annotations

import logging

from serving.cache import PredictionCache
from serving.metrics import ServingMetrics
from serving.model_pool import PoolState

log = logging.getLogger(__name__)


class SwapEffects:
    """The pool's swap listener: clears the prediction cache, updates the model metrics, logs the change."""

    def __init__(self, cache: PredictionCache, metrics: ServingMetrics) -> None:
        self.cache = cache
        self.metrics = metrics

    def __call__(self, old: PoolState, new: PoolState) -> None:
        """Apply the effects of the swap from ``old`` to ``new``."""
        self.cache.clear()
        self.metrics.models_swapped(new.loaded())
        log.info("models swapped: %s -> %s", old.key(), new.key())
