"""GET /healthz (alive), /readyz (warm model + Redis + registries answer + Redis holds the data), /metrics.

/readyz answers within ``max(2 x serving_redis_timeout_seconds, REGISTRY_CHECK_SECONDS)`` whatever its
dependencies do: the checks run concurrently, each with its own timeout, and the registry reads run in a small pool
of its own (``ctx.checks_executor``), so a paused Redis or a busy default executor cannot hold it.

The online store is not trusted to hold data because it answers PING: one pipelined round trip reads PING and the
materialized watermarks Redis keeps beside the data (``redis_layout.MATERIALIZED_KEY``), and the check
``online_store`` compares them with the ends the Feast registry says were materialized, for every view the served
feature services read. No watermark for a view (a restarted or flushed Redis) is "empty"; a watermark more than
``serving_max_online_lag_seconds`` before the registry's end (an older snapshot came back) is "behind". Both are
503 until ``mlplatform materialize`` repairs Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from mlplatform.contracts.redis_layout import MATERIALIZED_KEY, Watermark, project_watermarks
from mlplatform.redact import redact, settings_secrets
from serving.deps import ContextDep
from serving.model_pool import log_text, public_reason

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)
REGISTRY_CHECK_SECONDS = 1.0


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up (says nothing about its dependencies)."""
    return {"status": "ok"}


async def _redis_check(ctx) -> tuple[str, dict[str, Watermark | None] | None]:
    """PING and the project's materialized watermarks, in one pipelined round trip: (status, watermarks). On a
    Redis Cluster, PING goes to every master, beside the watermarks' read."""

    async def read() -> list[Any]:
        if ctx.settings.uses_redis_cluster:  # every master must answer (each holds a share of the keys)
            return list(await asyncio.gather(ctx.redis.ping(target_nodes=ctx.redis.PRIMARIES),
                                             ctx.redis.hgetall(MATERIALIZED_KEY)))
        async with ctx.redis.pipeline(transaction=False) as pipe:
            pipe.ping()
            pipe.hgetall(MATERIALIZED_KEY)
            return await pipe.execute()

    try:
        _, fields = await asyncio.wait_for(read(), ctx.settings.serving_redis_timeout_seconds * 2)
        return "ok", project_watermarks(ctx.store.project, fields)
    except Exception as exc:
        log.warning("readyz: Redis did not answer: %s", log_text(exc, ctx.settings))
        return f"unreachable: {type(exc).__name__}", None


def _materialized_ends(ctx) -> dict[str, datetime | None]:
    """Blocking: each view the served feature services read, with the end the Feast registry says it was
    materialized up to (None: never)."""
    services = {ctx.settings.feature_service}
    golden = ctx.pool.state.golden
    if golden is not None:
        services.add(golden.feature_service)
    ends: dict[str, datetime | None] = {}
    for service in sorted(services):
        for name in ctx.readers.get(service).view_features:
            try:
                view = ctx.store.get_feature_view(name)
            except Exception:
                view = ctx.store.get_stream_feature_view(name)
            ends[name] = view.most_recent_end_time
    return ends


async def _ends_check(ctx) -> dict[str, datetime | None] | None:
    """The registry's materialized ends (``_materialized_ends``), None when they could not be read in time."""
    try:
        return await asyncio.wait_for(ctx.checks_executor.run(_materialized_ends, ctx), REGISTRY_CHECK_SECONDS)
    except Exception as exc:
        log.warning("readyz: the Feast registry's materialized ends could not be read: %s",
                    log_text(exc, ctx.settings))
        return None


def online_store_status(marks: Mapping[str, Watermark | None] | None, ends: Mapping[str, datetime | None] | None,
                        max_lag_seconds: float) -> str:
    """"ok", or why Redis cannot serve: it did not answer, holds no watermark for a view ("empty"), or holds a view
    only up to more than ``max_lag_seconds`` before the registry's end ("behind"). With the registry's ends unknown
    (``ends`` None) only "some watermark at all" is judged."""
    fix = "run `mlplatform materialize` (it reloads what Redis lost)"
    if marks is None:
        return "unknown: Redis did not answer"
    if ends is None:
        return "ok" if any(marks.values()) else f"empty: Redis holds no materialized watermark; {fix}"
    lost = sorted(v for v in ends if marks.get(v) is None)
    if lost:
        return (f"empty: Redis holds no materialized watermark for {', '.join(lost)} (a restarted or flushed Redis, "
                f"or never materialized); {fix}")
    behind = []
    for view, end in sorted(ends.items()):
        mark = marks[view]
        lag = 0.0 if end is None or mark is None else (end - mark.end).total_seconds()
        if lag > max_lag_seconds:
            behind.append(f"{view} by {lag:,.0f} s")
    if behind:
        return (f"behind: Redis holds {', '.join(behind)} less than the registry says was materialized (at most "
                f"{max_lag_seconds:g} s, MLPLATFORM_SERVING_MAX_ONLINE_LAG_SECONDS); {fix}")
    return "ok"


async def _registry_check(ctx) -> str:
    try:
        golden = await asyncio.wait_for(ctx.checks_executor.run(ctx.registry.golden), REGISTRY_CHECK_SECONDS)
        return "ok" if golden is not None else "no golden model"
    except Exception as exc:
        log.warning("readyz: the model registry could not be read: %s", log_text(exc, ctx.settings))
        return f"unreadable: {public_reason(exc)}"


@router.get("/readyz")
async def readyz(ctx: ContextDep) -> JSONResponse:
    """Ready when a warm model can answer, Redis answers PING, the model registry can be read and Redis holds the
    served views up to (nearly) what the Feast registry says was materialized."""
    state = ctx.pool.state
    (redis_status, marks), registry_status, ends = await asyncio.gather(
        _redis_check(ctx), _registry_check(ctx), _ends_check(ctx))
    # golden_error holds public_reason()s (no path; the pool logged the whole text), redacted once more for secrets
    model = "ok" if ctx.ready else f"no warm model: {redact(str(state.golden_error), settings_secrets(ctx.settings))}"
    online = online_store_status(marks, ends, ctx.settings.serving_max_online_lag_seconds)
    checks = {"model": model, "redis": redis_status, "registry": registry_status, "online_store": online}
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks,
            "golden": None if state.golden is None else state.golden.version}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(ctx: ContextDep) -> Response:
    """Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
