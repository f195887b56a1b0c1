"""POST /v1/events (admin): append transaction events to the events stream, all or none.

Each event is held to the same bounds as a scored transaction (``EdgeBounds``: ids within int64, a finite amount
up to the cap, a time within [now - serving_max_event_age, now + serving_max_clock_skew]); one event out of bounds
refuses the whole call (422 naming ``events[i].<field>``), before anything is written. The events are appended in
one MULTI/EXEC (on a Redis Cluster too: the stream is one key, so the transaction stays on its slot's master): with
Redis down the answer is 503 and nothing was appended. Sending events again is safe: the
consumer (`mlplatform stream run`) applies an event with the same transaction id and values once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError

from mlplatform.errors import OnlineStoreUnavailable
from mlplatform.redact import redact_redis_address
from serving.deps import AdminDep, ContextDep
from serving.event_stream import append_events
from serving.feature_readers import REDIS_FAILURES
from serving.schemas import EdgeBounds, EventsRequest, EventsResponse

router = APIRouter(prefix="/v1", tags=["events"])


@router.post("/events", response_model=EventsResponse, dependencies=[AdminDep])
async def post_events(body: EventsRequest, ctx: ContextDep) -> EventsResponse:
    """Append transaction events to the events stream, for the customers' event logs (customer_activity)."""
    now = datetime.now(UTC)
    bounds = EdgeBounds.from_settings(ctx.settings)
    problems, events = [], []
    for i, e in enumerate(body.events):
        t_us = e.time_us(now)
        problems += bounds.problems(e, t_us, now, ("body", "events", i))
        events.append(e.event(t_us))
    if problems:
        raise RequestValidationError(problems)
    stream = ctx.settings.events_stream
    try:
        ids = await append_events(ctx.redis, stream, events)
    except REDIS_FAILURES as exc:
        ctx.metrics.redis_errors.inc()
        raise OnlineStoreUnavailable(
            f"the online store (Redis at {redact_redis_address(ctx.settings.redis_addr)}) did not take the events "
            f"({type(exc).__name__}); none was appended, or all were: sending them again is safe"
        ) from exc
    ctx.metrics.events_accepted.inc(len(ids))
    return EventsResponse(accepted=len(ids), stream=stream, ids=ids)
