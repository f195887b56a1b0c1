"""A FeatureService's features for a long run of transactions in time order, chunk by chunk (batch scoring).

Each chunk gets what ``store.get_historical_features(entity_df=transaction_entity_rows(chunk), features=service)``
gives it, without paying a retrieval per chunk:

- the views, features and on-demand views are resolved once, by that very call on a one-row probe (lazy: the
  probe's job never runs), so they are Feast's resolution, not a copy of it;
- the point-in-time join is the ASOF offline store's SQL, run incrementally: each view's latest rows are carried
  from chunk to chunk and every feature row is read once
  (:class:`~mlplatform.features.incremental.IncrementalPointInTime`);
- the on-demand views are applied by the probe's Feast job over each joined chunk, as in training
  (pandas mode: ``mlplatform.features.on_demand`` over whole columns).

When the configured offline store does not take the ASOF path (another store type, a source it cannot read), each
chunk goes through ``get_historical_features`` as it is; the log says why.
"""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa

from mlplatform.features.service import transaction_entity_rows

logger = logging.getLogger(__name__)

PROBE = pd.DataFrame(
    {
        "transaction_id": [0],
        "customer_id": [0],
        "merchant_id": [0],
        "amount": [1.0],
        "event_timestamp": [pd.Timestamp("2000-01-01", tz="UTC")],
    }
)


class ServiceFeatureChunks:
    """The service's features for time-ordered chunks of transactions. Use as a context manager."""

    def __init__(self, store, service) -> None:
        """Resolve ``service`` (a FeatureService) on ``store`` through Feast's own ``get_historical_features``."""
        from mlplatform.features.incremental import IncrementalPointInTime
        from mlplatform.features.offline_store import AsofRetrievalJob

        self._store = store
        self._service = service
        job = store.get_historical_features(entity_df=transaction_entity_rows(PROBE), features=service)
        self._job = job if isinstance(job, AsofRetrievalJob) else None
        self._joiner = IncrementalPointInTime(job.joins) if self._job is not None else None
        if self._job is None:
            logger.info("batch features through get_historical_features per chunk: the offline store returned %s",
                        type(job).__name__)

    def __enter__(self) -> ServiceFeatureChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the incremental join's DuckDB connection."""
        if self._joiner is not None:
            self._joiner.close()

    @property
    def incremental(self) -> bool:
        """True when chunks are joined incrementally (the ASOF path), False when each is a Feast retrieval."""
        return self._joiner is not None

    def features(self, transactions: pd.DataFrame) -> pa.Table:
        """Entity rows of ``transactions`` (the feature contract) with every feature of the service, on-demand
        ones included, one row per transaction in their order. Chunks must come in time order."""
        entity = transaction_entity_rows(transactions)
        if self._joiner is None or self._job is None:  # Feast's own stores may return rows in any order
            frame = self._store.get_historical_features(entity_df=entity, features=self._service).to_df()
            frame = frame.drop_duplicates("transaction_id").set_index("transaction_id")
            frame = frame.reindex(entity["transaction_id"]).reset_index()
            return pa.Table.from_pandas(frame, preserve_index=False)
        table = pa.Table.from_pandas(entity, preserve_index=False)
        joined = self._joiner.join(table, "event_timestamp")
        for name, column in zip(joined.column_names, joined.columns, strict=True):
            table = table.append_column(name, column)
        return self._job.on_table(table).to_arrow()
