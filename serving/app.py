"""The FastAPI app factory and its lifespan: open once, warm before traffic, flush on the way out; the middlewares
(admission control and the body size limit, in one) and the one JSON shape of every error answer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlplatform.errors import MLPlatformError, PayloadTooLarge
from mlplatform.redact import redact, settings_secrets
from mlplatform.settings import Settings, get_settings

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the store, Redis pool and models (warm) before serving; on shutdown flush logs and close."""
    from serving.context import ServingContext

    settings: Settings = app.state.settings
    ctx = await asyncio.to_thread(ServingContext.open, settings)
    app.state.ctx = ctx
    interval = settle_runtime()
    refresher = asyncio.create_task(ctx.refresh_loop(), name="registry-refresh")
    ctx.start_background()  # the events stream's recorder and lag gauges
    try:
        yield
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await ctx.close()
        unsettle_runtime(interval)


SWITCH_INTERVAL_S = 0.001  # how long a thread holding the GIL keeps it while the event loop waits (Python: 5 ms)


def settle_runtime() -> float:
    """Tune the interpreter for the event loop, once the models are warm.

    * ``gc.freeze()``: everything alive after start-up (Feast, MLflow, pandas, the warm models: ~400,000 objects)
      is moved out of the garbage collector's reach. Without it each full collection walks that whole heap while
      the event loop stands still (60-300 ms, every few seconds under load: the p99 at load, and requests whose
      model call overran the latency budget and were answered 503). Frozen objects are still freed by reference
      counting (a model swapped out goes as before); only a reference cycle among them would stay.
    * A 1 ms GIL switch interval: the feature-log writer (encoding a batch to Arrow), registry refreshes and the
      scoring threads hold the GIL for up to the interval each time the loop wants it back; at Python's 5 ms that
      is what a request caught behind a flush pays.

    Returns the switch interval it replaced, for ``unsettle_runtime``."""
    gc.collect()
    gc.freeze()
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return previous


def unsettle_runtime(switch_interval: float) -> None:
    """Undo ``settle_runtime`` on the way out (a process that embeds the app, such as a test run, collects again)."""
    gc.unfreeze()
    sys.setswitchinterval(switch_interval)


async def _too_large(send, limit: int) -> None:
    detail = f"request body is larger than {limit} bytes; split it"
    await _send_json(send, 413, error_body("PayloadTooLarge", detail, [{"field": "body", "problem": detail}]))


async def _send_json(send, status: int, body: dict, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer a whole JSON response straight on the ASGI ``send`` (from a middleware, before any route)."""
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": payload})


# --- admission control ------------------------------------------------------------------------------------------
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # never shed: orchestrators and scrapers must see us
# Latency budget per admitted request when the limit is derived: one event loop answers ~500-600 predictions/s on 2
# cores, and an accepted request's p99 is ~3x its in-flight share (bench/admission.py: 4 in flight, p99 12.7 ms and
# the most throughput; 8 in flight, p99 ~40 ms). Since the direct hot path (~900-1,000/s) 4 in flight still keeps
# the accepted p99 within the default 25 ms budget (17 ms at 64 connections).
MS_PER_ADMITTED = 6.0


Direct = Callable[[Any, Any, Any, Any], Awaitable[None]]  # (scope, receive, send, the rest of the app)


def admission_limit(settings: Settings) -> int:
    """Requests in flight before shedding: ``serving_max_in_flight``, or derived from the latency budget (0 = none)."""
    if settings.serving_max_in_flight is not None:
        return settings.serving_max_in_flight
    budget = settings.serving_latency_budget_ms
    return max(1, int(budget // MS_PER_ADMITTED)) if budget > 0 else 0


ENDPOINTS = frozenset({"/v1/predict", "/v1/predict/batch", "/v1/features", "/v1/events", "/v1/push", "/v1/models",
                       "/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"})


def endpoint_label(path: str) -> str:
    """The ``endpoint`` label of a request path: the route's template, a bounded set ("other" for the rest)."""
    if path in ENDPOINTS:
        return path
    if path.startswith("/v1/models/") and path.endswith("/promote"):
        return "/v1/models/{version}/promote"
    if path.startswith("/reports"):
        return "/reports"
    if path.startswith("/docs-static/"):
        return "/docs-static"
    return "other"


class AdmissionControl:
    """The service's one middleware (a raw ASGI one: each layer costs every request), in front of the routes.

    * Admission control: at ``max_in_flight`` requests in flight (0 = no bound), one more is answered 503 with
      Retry-After at once instead of queueing behind the others, and counted (``mlplatform_shed_requests_total``).
      Health and metrics endpoints are never counted nor shed. One event loop runs it, so a plain counter is exact.
    * Body size limit (``max_body_bytes``; None = none): a larger body is refused with 413, by its Content-Length
      at once, or while it streams in.
    * Direct routes (``direct``: (method, path) -> handler): the hot path (``POST /v1/predict``) is answered by its
      handler, called with the rest of the app to hand over whatever it does not answer itself."""

    def __init__(self, app, max_in_flight: int, exempt: frozenset[str] = EXEMPT_PATHS, retry_after_s: int = 1,
                 max_body_bytes: int | None = None, direct: Mapping[tuple[str, str], Direct] | None = None) -> None:
        self.app = app
        self.direct = dict(direct or {})
        self.max_in_flight = max_in_flight
        self.exempt = exempt
        self.retry_after = str(retry_after_s).encode()
        self.max_body_bytes = max_body_bytes
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = self._counted(scope, send)
        if self.max_in_flight <= 0 or scope["path"] in self.exempt:
            return await self._admitted(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            return await self._shed(scope, send)
        self.in_flight += 1
        try:
            await self._admitted(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _admitted(self, scope, receive, send) -> None:
        if self.max_body_bytes is not None:
            receive = self._limited(scope, receive)
            if receive is None:
                return await _too_large(send, self.max_body_bytes)
        handler = self.direct.get((scope["method"], scope["path"])) if self.direct else None
        if handler is not None:
            return await handler(scope, receive, send, self.app)
        await self.app(scope, receive, send)

    def _counted(self, scope, send):
        """``send`` that counts the answer in ``mlplatform_requests_total{endpoint,status}`` (every status: shed
        503s, 422s, unexpected 500s too) once its status is known."""
        ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
        if ctx is None:
            return send
        endpoint = endpoint_label(scope["path"])

        async def counted(message):
            if message["type"] == "http.response.start":
                ctx.metrics.count_request(endpoint, message["status"])
            await send(message)

        return counted

    def _limited(self, scope, receive):
        """``receive`` itself when Content-Length is within the limit; None when it is over; else a ``receive``
        that raises PayloadTooLarge (413) once the streamed body passes the limit."""
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                return None if int(value or 0) > limit else receive
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"request body is larger than {limit} bytes")
            return message

        return limited

    async def _shed(self, scope, send) -> None:
        ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
        if ctx is not None:
            ctx.metrics.shed.inc()
        detail = (f"the service is at its limit of {self.max_in_flight} requests in flight "
                  f"(MLPLATFORM_SERVING_MAX_IN_FLIGHT); retry after {self.retry_after.decode()} s")
        await _send_json(send, 503, error_body("Overloaded", detail), [(b"retry-after", self.retry_after)])


# --- one error shape ---------------------------------------------------------------------------------------------
INVALID_INPUT = "InvalidInputError"  # the error name of every 422: FastAPI's validation errors and the service's own
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w\[\].]*): ")  # "rows[1].event_timestamp: ..." names its field
_DETAIL_FIELDS = 5  # fields spelled out in the one-line detail (all are in "fields")


def error_body(error: str, detail: str, fields: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """The one shape of every error answer: ``{"error", "detail", "fields": [{"field", "problem"}]}``."""
    return {"error": error, "detail": detail, "fields": list(fields)}


def field_name(loc: Sequence[str | int]) -> str:
    """``("body", "transactions", 3, "amount")`` as ``body.transactions[3].amount``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out or "body"


def validation_fields(errors: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """FastAPI/pydantic validation errors as ``[{"field", "problem"}]`` (the input itself is never echoed)."""
    out = []
    for e in errors:
        loc = tuple(e.get("loc") or ())
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error") or e.get("msg", "")
            where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
            out.append({"field": "body", "problem": f"not valid JSON{where}: {reason}"})
        else:
            problem = str(e.get("msg") or "invalid value").removeprefix("Value error, ")
            out.append({"field": field_name(loc), "problem": problem})
    return out


def _summary(fields: Sequence[dict[str, str]]) -> str:
    parts = [f"{f['field']}: {f['problem']}" for f in fields[:_DETAIL_FIELDS]]
    more = f"; and {len(fields) - _DETAIL_FIELDS} more (see fields)" if len(fields) > _DETAIL_FIELDS else ""
    return "invalid request: " + "; ".join(parts) + more


def typed_fields(exc: MLPlatformError, detail: str) -> list[dict[str, str]]:
    """The fields a typed error names: its own ``fields`` if it has them; for 413/422 the ``name: `` its message
    starts with (as ``body.name``), else the body as a whole; none for other statuses."""
    own = getattr(exc, "fields", None)
    if own:
        return [dict(f) for f in own]
    if exc.http_status not in (413, 422):
        return []
    match = _FIELD_PREFIX.match(detail)
    if match is None:
        return [{"field": "body", "problem": detail}]
    return [{"field": f"body.{match.group(1)}", "problem": detail[match.end():]}]


def _install_error_handlers(app: FastAPI) -> None:
    """Map every error to one JSON shape (``error_body``) and its HTTP status, once: the platform's typed errors,
    FastAPI's validation errors (422, each field named), HTTP errors (404, 405) and, as a 500 without a traceback,
    anything else."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = validation_fields(exc.errors())
        return JSONResponse(error_body(INVALID_INPUT, _summary(fields), fields), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI: a body it could not parse at all (e.g. not UTF-8): invalid input too
            problem = f"could not be read as JSON: {exc.detail}"
            return JSONResponse(error_body(INVALID_INPUT, f"invalid request: body: {problem}",
                                           [{"field": "body", "problem": problem}]), status_code=422)
        try:
            name = HTTPStatus(exc.status_code).phrase.title().replace(" ", "").replace("-", "")
        except ValueError:
            name = "HTTPError"
        return JSONResponse(error_body(name, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(MLPlatformError)
    async def _typed(request: Request, exc: MLPlatformError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.http_status == 503 else None
        if exc.http_status == 401:
            headers = {"WWW-Authenticate": "ApiKey"}
        detail = redact(str(exc), settings_secrets(request.app.state.settings))  # no secret leaves, ever
        return JSONResponse(error_body(type(exc).__name__, detail, typed_fields(exc, detail)),
                            status_code=exc.http_status, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("InternalError", f"{type(exc).__name__}: see the service log"),
                            status_code=500)


def _error_responses(by_model: bool = True) -> dict[int | str, dict[str, Any]]:
    """The error answers every shed-able route documents, in the one shape (``ErrorResponse``). ``by_model=False``
    states the JSON content explicitly (for routes whose own answers are HTML)."""
    from serving.schemas import ErrorResponse

    def answer(description: str) -> dict[str, Any]:
        if by_model:
            return {"model": ErrorResponse, "description": description}
        ref = {"schema": {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}}
        return {"description": description, "content": {"application/json": ref}}

    return {
        422: answer("Invalid request: `fields` names each field at fault."),
        503: answer("Overloaded (admission control) or a dependency did not answer; retry after `Retry-After` s."),
    }


def _offline_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts, styles and icon served by the service itself from
    the pinned ``fastapi-offline`` package, so the pages work where no CDN can be reached."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-static", StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"),
              name="docs-static")
    title = f"{app.title} - API docs"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=title,
                                   swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-static/swagger-ui.css",
                                   swagger_favicon_url="/docs-static/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc():
        return get_redoc_html(openapi_url=app.openapi_url, title=title, with_google_fonts=False,
                              redoc_js_url="/docs-static/redoc.standalone.js",
                              redoc_favicon_url="/docs-static/favicon.png")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The inference service for ``settings`` (default: from the environment)."""
    from serving.routes import events, features, health, models, predict, push
    from serving.routes.reports import reports_router

    app = FastAPI(
        title="mlplatform inference service",
        description="Fraud scores from warm models on online features (Feast + Redis).",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served below with local assets: FastAPI's default pages load them from a CDN
        redoc_url=None,
    )
    _offline_docs(app)
    app.state.settings = settings or get_settings()
    _install_error_handlers(app)
    for module in (predict, features, models, push, events):
        app.include_router(module.router, responses=_error_responses())
    app.include_router(health.router)
    app.include_router(reports_router(app.state.settings), responses=_error_responses(by_model=False))
    app.add_middleware(AdmissionControl, max_in_flight=admission_limit(app.state.settings),
                       max_body_bytes=app.state.settings.serving_max_body_bytes,
                       direct={("POST", "/v1/predict"): predict.predict_direct})
    return app
