"""The contract between features and models: which inputs a feature service gives, and how a transaction
becomes an entity row (looked up at t − SCORING_OFFSET). Training, batch scoring, serving and monitoring all go
through these two functions."""

from __future__ import annotations

import pandas as pd

from mlplatform.contracts.redis_layout import SCORING_OFFSET

REQUEST_FIELDS = ("amount", "transaction_ts")
ENTITY_KEYS = ("customer_id", "merchant_id")


def feature_signature(store, service_name: str) -> list[tuple[str, str]]:
    """(feature name, Feast type name) for every feature the service serves, in the service's order."""
    service = store.get_feature_service(service_name)
    signature: list[tuple[str, str]] = []
    for projection in service.feature_view_projections:
        for field in projection.features:
            signature.append((field.name, str(field.dtype)))
    return signature


def transaction_entity_rows(transactions: pd.DataFrame) -> pd.DataFrame:
    """Entity rows (keys, request fields, event_timestamp = t - 1 µs) for raw transactions, one per row."""
    # cache=False: pandas' cache check turns the first 10,000 times into Timestamp objects, every call
    ts = pd.to_datetime(transactions["event_timestamp"], utc=True, cache=False).dt.as_unit("us")
    return pd.DataFrame(
        {
            "transaction_id": transactions["transaction_id"].to_numpy(),
            "customer_id": transactions["customer_id"].to_numpy(),
            "merchant_id": transactions["merchant_id"].to_numpy(),
            "amount": transactions["amount"].to_numpy(dtype=float),
            "transaction_ts": (ts.astype("int64") // 10**6).to_numpy(),
            # .array keeps the UTC dtype (to_numpy() would make one Timestamp object per row)
            "event_timestamp": (ts - pd.Timedelta(SCORING_OFFSET)).array,
        }
    )
