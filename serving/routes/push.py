"""POST /v1/push (admin): write fresh stream features through Feast's push API.

Feast's Redis client is synchronous: pushes run in a small bounded pool of their own (``ctx.push_executor``), never
on the default executor /readyz and the shutdown flush use, and its calls time out after
``serving_redis_timeout_seconds`` (503).

Before anything is written, every row is checked (``mlplatform.features.online.push_frame``): each value against its
column's Feast type (join keys as the entity types them, features as their view declares), join keys and the event
time present in every row (feature values may be null), and no column the push source's views do not have (refused,
not ignored). Event times later than ``now + serving_max_clock_skew`` are refused too. A refusal is a 422 naming
``rows[i].<column>`` and the problem; nothing of the push is written then.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from mlplatform.errors import DataNotFoundError
from mlplatform.features.online import check_event_times, push_columns, push_frame, to_event_times
from mlplatform.stores import redis_errors
from serving.deps import AdminDep, ContextDep
from serving.schemas import PushRequest, PushResponse

router = APIRouter(prefix="/v1", tags=["push"])


def _push(ctx, body: PushRequest) -> int:
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
    created = source.batch_source.created_timestamp_column or None
    columns, join_keys = push_columns(views)
    frame = push_frame(body.rows, columns, join_keys, ts_field, created, source.name)
    time_columns = [ts_field, *sorted({created} - {None, ts_field})]
    for col in time_columns:  # the event time first: an absent created time copies it
        frame[col] = to_event_times(frame[col], col) if col in frame.columns else frame[ts_field]
    check_event_times(frame, time_columns, datetime.now(UTC), ctx.settings.serving_max_clock_skew)
    mode = {"online": PushMode.ONLINE, "offline": PushMode.OFFLINE,
            "online_and_offline": PushMode.ONLINE_AND_OFFLINE}[body.to]
    s = ctx.settings
    with redis_errors(s.redis_addr, "did not accept the push", s.serving_redis_timeout_seconds):
        store.push(source.name, frame, to=mode)
    return len(frame)


@router.post("/push", response_model=PushResponse, dependencies=[AdminDep])
async def push(body: PushRequest, ctx: ContextDep) -> PushResponse:
    """Write rows of fresh features for ``push_source`` into the online (and/or offline) store."""
    n = await ctx.push_executor.run(_push, ctx, body)
    return PushResponse(push_source=body.push_source, rows=n, to=body.to)
