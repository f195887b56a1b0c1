"""Read online features and push fresh events, through the same Feast objects serving uses."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from mlplatform.settings import Settings
from mlplatform.stores import open_feature_store, require_redis


def read_online(
    settings: Settings, rows: list[dict], feature_service: str | None = None, store=None
) -> pd.DataFrame:
    """Online features of the model's feature service for ``rows`` (entity keys plus request fields)."""
    require_redis(settings)
    store = store or open_feature_store(settings)
    service = store.get_feature_service(feature_service or settings.feature_service)
    return store.get_online_features(features=service, entity_rows=rows).to_df()


def push_event(settings: Settings, customer_id: int, amount: float, merchant_id: int,
               when: datetime | None = None, store=None) -> None:
    """Push one fresh event to ``customer_realtime`` (online store only)."""
    from feast.data_source import PushMode

    require_redis(settings)
    store = store or open_feature_store(settings)
    ts = pd.Timestamp(when or datetime.now(UTC))
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    frame = pd.DataFrame(
        {
            "customer_id": [customer_id],
            "last_amount": [float(amount)],
            "last_merchant_id": [merchant_id],
            "event_timestamp": [ts],
            "created_timestamp": [ts],
        }
    )
    store.push("customer_realtime_push", frame, to=PushMode.ONLINE)
