"""The FastAPI app factory and its lifespan: open once, warm before traffic, flush on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mlplatform.errors import MLPlatformError, PayloadTooLarge
from mlplatform.settings import Settings, get_settings

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the store, Redis pool and models (warm) before serving; on shutdown flush logs and close."""
    from serving.context import ServingContext

    settings: Settings = app.state.settings
    ctx = await asyncio.to_thread(ServingContext.open, settings)
    app.state.ctx = ctx
    refresher = asyncio.create_task(ctx.refresh_loop(), name="registry-refresh")
    try:
        yield
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await ctx.close()


class BodySizeLimit:
    """Refuse bodies larger than ``max_bytes`` with 413 (by Content-Length, or while streaming)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if int(value or 0) > self.max_bytes:
                    return await _too_large(send, self.max_bytes)
                return await self.app(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise PayloadTooLarge(f"request body is larger than {self.max_bytes} bytes")
            return message

        return await self.app(scope, limited, send)


async def _too_large(send, limit: int) -> None:
    import json

    body = json.dumps({"error": "PayloadTooLarge",
                       "detail": f"request body is larger than {limit} bytes; split it"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _install_error_handlers(app: FastAPI) -> None:
    """Map the platform's typed errors to their HTTP status, once; anything else is a 500 without a traceback."""

    @app.exception_handler(MLPlatformError)
    async def _typed(request: Request, exc: MLPlatformError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.http_status == 503 else None
        if exc.http_status == 401:
            headers = {"WWW-Authenticate": "ApiKey"}
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=exc.http_status,
                            headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "InternalError", "detail": f"{type(exc).__name__}: see the service log"},
                            status_code=500)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The inference service for ``settings`` (default: from the environment)."""
    from serving.routes import health, models, predict, push
    from serving.routes.reports import reports_router

    app = FastAPI(
        title="mlplatform inference service",
        description="Fraud scores from warm models on online features (Feast + Redis).",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    _install_error_handlers(app)
    for module in (predict, models, push, health):
        app.include_router(module.router)
    app.include_router(reports_router(app.state.settings))
    app.add_middleware(BodySizeLimit, max_bytes=app.state.settings.serving_max_body_bytes)
    return app
