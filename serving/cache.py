"""PredictionCache: an LRU with a TTL, keyed by model version and a hash of the exact feature vector."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

import numpy as np


def vector_key(name: str, version: int, vector: np.ndarray) -> tuple[str, int, bytes]:
    """Cache key of one input row for one model version (NaN-safe: hashes the float64 bytes)."""
    digest = hashlib.blake2b(np.ascontiguousarray(vector, dtype=np.float64).tobytes(), digest_size=16).digest()
    return name, version, digest


class PredictionCache:
    """Bounded LRU of scores that expire after ``ttl_seconds``; ``clear()`` when the served models change."""

    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self._data: OrderedDict[tuple, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, key: tuple) -> float | None:
        """The cached score for ``key``, or None if absent or expired."""
        if self.max_entries <= 0:
            return None
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            score, expires = hit
            if time.monotonic() >= expires:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return score

    def get_many(self, keys: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """Cached scores of ``keys`` (NaN where absent or expired) and a mask of the hits."""
        scores = np.full(len(keys), np.nan)
        hits = np.zeros(len(keys), dtype=bool)
        for k, key in enumerate(keys):
            hit = self.get(key)
            if hit is not None:
                scores[k], hits[k] = hit, True
        return scores, hits

    def put(self, key: tuple, score: float, generation: int | None = None) -> None:
        """Remember ``score``; dropped if the cache was cleared since ``generation`` was read."""
        if self.max_entries <= 0:
            return
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            self._data[key] = (score, time.monotonic() + self.ttl)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (called when a model is swapped in or out)."""
        with self._lock:
            self._data.clear()
            self.generation += 1

    def __len__(self) -> int:
        return len(self._data)
