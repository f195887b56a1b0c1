"""GET /healthz (alive), /readyz (warm model + Redis + registries answer), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from serving.deps import ContextDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up (says nothing about its dependencies)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(ctx: ContextDep) -> JSONResponse:
    """Ready when a warm model can answer, Redis answers PING and the model registry can be read."""
    checks: dict[str, str] = {}
    state = ctx.pool.state
    checks["model"] = ("ok" if ctx.ready else f"no warm model: {state.golden_error}")
    try:
        await asyncio.wait_for(ctx.redis.ping(), ctx.settings.serving_redis_timeout_seconds * 2)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    try:
        golden = await asyncio.wait_for(asyncio.to_thread(ctx.registry.golden), 5.0)
        checks["registry"] = "ok" if golden is not None else "no golden model"
    except Exception as exc:
        checks["registry"] = f"unreadable: {type(exc).__name__}: {exc}"
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks,
            "golden": None if state.golden is None else state.golden.version}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(ctx: ContextDep) -> Response:
    """Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
