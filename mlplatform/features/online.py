"""Read online features and push fresh events, through the same Feast objects serving uses."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from mlplatform.errors import InvalidInputError
from mlplatform.settings import Settings
from mlplatform.stores import open_feature_store, redis_errors, require_redis


def read_online(
    settings: Settings, rows: list[dict], feature_service: str | None = None, store=None
) -> pd.DataFrame:
    """Online features of the model's feature service for ``rows`` (entity keys plus request fields)."""
    require_redis(settings)
    store = store or open_feature_store(settings)
    service = store.get_feature_service(feature_service or settings.feature_service)
    with redis_errors(settings.redis_addr, "did not answer the read", settings.redis_timeout_seconds):
        return store.get_online_features(features=service, entity_rows=rows).to_df()


MAX_UNIX_SECONDS = 9.2e9  # pandas' nanosecond timestamps end in 2262 (and start in 1677)


def to_event_times(values: pd.Series, column: str) -> pd.Series:
    """Unix seconds or ISO-8601 strings (mixed is fine) as UTC timestamps; a value that is not a time pandas can
    hold (years 1677-2262) is an InvalidInputError naming ``rows[i].<column>``. Nulls stay NaT."""
    is_num = values.map(lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)).astype(bool)
    is_str = values.map(lambda v: isinstance(v, str)).astype(bool)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if is_num.any():
        seconds = pd.to_numeric(values[is_num])
        in_range = seconds.abs().lt(MAX_UNIX_SECONDS)  # also false for inf and NaN
        out[seconds[in_range].index] = pd.to_datetime(seconds[in_range], unit="s", utc=True)
    if is_str.any():
        out[is_str] = pd.to_datetime(values[is_str], format="ISO8601", utc=True, errors="coerce")
    bad = (out.isna() & values.notna()).to_numpy()
    if bad.any():
        i = int(bad.argmax())
        shown = repr(values.iloc[i]) if isinstance(values.iloc[i], str) else str(values.iloc[i])
        raise InvalidInputError(
            f"rows[{i}].{column}: {shown} is not a time (ISO-8601 or unix seconds, years 1677-2262)"
        )
    return out


def check_event_times(frame: pd.DataFrame, columns: Iterable[str], now: datetime, max_skew_seconds: float) -> None:
    """Refuse missing times and times later than ``now + max_skew_seconds`` in ``columns`` (UTC timestamps) with an
    InvalidInputError naming ``rows[i].<column>``: Feast keeps an entity's newest row, so one event from the
    future would make every later write of that entity look older and be skipped (materialize --full included)."""
    now_utc = pd.Timestamp(now).tz_convert("UTC")
    limit = now_utc + pd.Timedelta(seconds=max_skew_seconds)
    for column in columns:
        if column not in frame.columns:
            continue
        values = frame[column]
        missing = values.isna().to_numpy()
        if missing.any():
            i = int(missing.argmax())
            raise InvalidInputError(f"rows[{i}].{column}: missing; every row needs a time")
        late = (values > limit).to_numpy()
        if late.any():
            i = int(late.argmax())
            raise InvalidInputError(
                f"rows[{i}].{column}: {values.iloc[i].isoformat()} is more than {max_skew_seconds:g} s ahead of the "
                f"server's clock ({now_utc:%Y-%m-%dT%H:%M:%SZ}; "
                f"{int(late.sum())} of {len(values)} rows): events cannot come from the future "
                "(MLPLATFORM_SERVING_MAX_CLOCK_SKEW); nothing was written"
            )


def push_event(settings: Settings, customer_id: int, amount: float, merchant_id: int,
               when: datetime | None = None, store=None) -> None:
    """Push one fresh event to ``customer_realtime`` (online store only); a time in the future is refused."""
    from feast.data_source import PushMode

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
    check_event_times(frame, ["event_timestamp"], datetime.now(UTC), settings.serving_max_clock_skew)
    require_redis(settings)
    store = store or open_feature_store(settings)
    with redis_errors(settings.redis_addr, "did not accept the push", settings.redis_timeout_seconds):
        store.push("customer_realtime_push", frame, to=PushMode.ONLINE)
