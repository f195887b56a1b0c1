"""POST /v1/push (admin): write fresh stream features through Feast's push API."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from mlplatform.errors import DataNotFoundError, InvalidInputError, OnlineStoreUnavailable
from serving.deps import AdminDep, ContextDep
from serving.schemas import PushRequest, PushResponse

router = APIRouter(prefix="/v1", tags=["push"])


def _push(ctx, body: PushRequest) -> int:
    import pandas as pd
    import redis
    from feast.data_source import PushMode, PushSource

    store = ctx.store
    sources = {s.name: s for s in store.list_data_sources() if isinstance(s, PushSource)}
    source = sources.get(body.push_source)
    if source is None:
        raise DataNotFoundError(
            f"push_source {body.push_source!r} is not a push source; known: {', '.join(sorted(sources)) or 'none'}"
        )
    views = [v for v in store.list_stream_feature_views() + store.list_feature_views()
             if getattr(v, "stream_source", None) is not None and v.stream_source.name == source.name]
    ts_field = source.batch_source.timestamp_field or "event_timestamp"
    required = {ts_field}
    for v in views:
        required |= {c.name for c in v.entity_columns} | {f.name for f in v.features}
    frame = pd.DataFrame(body.rows)
    absent = sorted(required - set(frame.columns))
    if absent:
        raise InvalidInputError(f"rows: every row needs {', '.join(absent)} for push source {source.name!r}")
    for col in {ts_field, source.batch_source.created_timestamp_column} - {None, ""}:
        if col not in frame.columns:
            frame[col] = frame[ts_field]
        try:
            values = frame[col]
            numeric = pd.api.types.is_numeric_dtype(values)
            frame[col] = pd.to_datetime(values, unit="s" if numeric else None, utc=True)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"rows.{col}: not a time (ISO-8601 or unix seconds): {exc}") from exc
    mode = {"online": PushMode.ONLINE, "offline": PushMode.OFFLINE,
            "online_and_offline": PushMode.ONLINE_AND_OFFLINE}[body.to]
    try:
        store.push(source.name, frame, to=mode)
    except redis.RedisError as exc:
        raise OnlineStoreUnavailable(f"the online store did not accept the push ({type(exc).__name__})") from exc
    return len(frame)


@router.post("/push", response_model=PushResponse, dependencies=[AdminDep])
async def push(body: PushRequest, ctx: ContextDep) -> PushResponse:
    """Write rows of fresh features for ``push_source`` into the online (and/or offline) store."""
    n = await asyncio.to_thread(_push, ctx, body)
    return PushResponse(push_source=body.push_source, rows=n, to=body.to)
