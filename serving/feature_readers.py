"""The feature store's read plans, one per feature service, and the fetch of a batch's features from Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from mlplatform.errors import DefinitionError, OnlineStoreUnavailable
from serving.online_features import OnlineFeatureReader, OnlineFeatures
from serving.prediction import ScoringRequest

# what a failed Redis read raises: redis-py's errors, a socket's, and a Redis Cluster client's own (no seed node
# reachable, a slot no master covers), which are not RedisErrors
REDIS_FAILURES = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)


class FeatureReaders:
    """The FeatureStore and one OnlineFeatureReader per feature service (built on first use, rebuilt on refresh)."""

    def __init__(self, store: Any, stream_features: bool = False) -> None:
        self.store = store
        self.stream_features = stream_features  # customer_activity from the event logs where they cover a request
        self._readers: dict[str, OnlineFeatureReader] = {}
        self.refreshed_at = time.monotonic()

    def get(self, service_name: str) -> OnlineFeatureReader:
        """The read plan of a feature service (built once per service and per registry refresh)."""
        reader = self._readers.get(service_name)
        if reader is None:
            try:
                service = self.store.get_feature_service(service_name)
            except Exception as exc:
                raise DefinitionError(
                    f"feature service {service_name!r} is not in the Feast registry: run `mlplatform apply`"
                ) from exc
            reader = OnlineFeatureReader(self.store, service, self.stream_features)
            self._readers = {**self._readers, service_name: reader}  # copy on write: readers never see a half
        return reader

    def check_model(self, info: Any) -> None:
        """A model can serve only if its feature service provides every input of its signature."""
        reader = self.get(info.feature_service)
        absent = [n for n in info.feature_names if n not in reader.output_names]
        if absent:
            raise DefinitionError(
                f"{info.name} v{info.version} needs {', '.join(absent)}, which feature service "
                f"{info.feature_service!r} does not serve"
            )

    def refresh(self) -> None:
        """Re-read Feast's registry now (not after Feast's 600 s cache) and rebuild the read plans."""
        self.store.refresh_registry()
        fresh = {}
        for name in list(self._readers):
            fresh[name] = OnlineFeatureReader(self.store, self.store.get_feature_service(name), self.stream_features)
        self._readers = fresh
        self.refreshed_at = time.monotonic()


class FeatureSource:
    """Fetches a batch's online features from Redis; a Redis failure becomes a clear OnlineStoreUnavailable."""

    def __init__(self, redis_client: Any, reader_for: Callable[[str], OnlineFeatureReader], redis_addr: str,
                 on_redis_error: Callable[[], None]) -> None:
        self.redis = redis_client
        self.reader_for = reader_for
        self.redis_addr = redis_addr  # for messages: the password, if any, masked
        self.on_redis_error = on_redis_error

    async def fetch(self, service: str, requests: Sequence[ScoringRequest]) -> OnlineFeatures:
        """Features of ``service`` for every request, as of each request's time."""
        reader = self.reader_for(service)
        try:
            return await reader.fetch(self.redis, [r.row for r in requests], [r.time_us for r in requests])
        except REDIS_FAILURES as exc:
            self.on_redis_error()
            raise OnlineStoreUnavailable(
                f"the online store (Redis at {self.redis_addr}) did not answer ({type(exc).__name__}); "
                "the service retries on the next request"
            ) from exc
