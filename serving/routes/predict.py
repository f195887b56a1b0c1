"""POST /v1/predict and /v1/predict/batch.

Every transaction is held to the edge bounds (``EdgeBounds``: amount cap, time window around now) before it is
scored; a transaction out of bounds is a 422 naming its field. With ``?explain=true``, a failure to compute the
contributions never fails the request: the score is answered with ``contributions_error`` saying why.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from mlplatform.errors import MLPlatformError
from serving.deps import ContextDep
from serving.ids import new_id
from serving.predictor import Prediction, ScoringRequest
from serving.schemas import (
    BatchRequest,
    BatchResponse,
    EdgeBounds,
    ModelRef,
    PredictionOut,
    PredictResponse,
    ReasonCode,
    Transaction,
)

router = APIRouter(prefix="/v1", tags=["predict"])
log = logging.getLogger(__name__)
ExplainQ = Annotated[bool, Query(description="Add per-feature contributions (XGBoost pred_contribs).")]


def answer_fields(p: Prediction, contributions_error: str | None = None) -> dict:
    """The fields of one prediction's answer (PredictionOut), shared by every way a score is delivered."""
    return {
        "request_id": p.request_id, "transaction_id": p.transaction_id, "score": p.score,
        "model": ModelRef.model_construct(name=p.model.name, version=p.model.version, role=p.role),
        "fallback": p.fallback, "fallback_reason": p.fallback_reason, "missing": p.missing, "stale": p.stale,
        "future": p.future, "cached": p.cached, "degraded": p.degraded, "contributions": p.contributions,
        "contributions_error": contributions_error, "decision": p.decision,
        "reasons": None if p.reasons is None else [ReasonCode.model_construct(**r) for r in p.reasons],
    }


def json_response(model: BaseModel) -> Response:
    """The answer as JSON, serialized by pydantic exactly as FastAPI would from ``response_model`` (which still
    documents it in /openapi.json), minus FastAPI's second validation of what the route itself built."""
    return Response(type(model).__pydantic_serializer__.to_json(model), media_type="application/json")


def scoring_requests(txns: Sequence[Transaction], ids: Sequence[str], bounds: EdgeBounds,
                      locs: Sequence[tuple[Any, ...]]) -> list[ScoringRequest]:
    """The scoring requests of ``txns``; RequestValidationError (422) naming every field out of bounds."""
    now = datetime.now(UTC)
    reqs, problems = [], []
    for txn, request_id, loc in zip(txns, ids, locs, strict=True):
        t_us = txn.time_us(now)
        problems += bounds.problems(txn, t_us, now, loc)
        reqs.append(ScoringRequest(request_id, txn.transaction_id, txn.entity_row(t_us), t_us))
    if problems:
        raise RequestValidationError(problems)
    return reqs


async def _predict(ctx, reqs: list[ScoringRequest], explain: bool) -> tuple[list[Prediction], str | None]:
    """Predictions of ``reqs``; an explain failure falls back to the scores alone, with the reason. Scored
    transactions join the events stream (off the request path) when ``serving_record_events``."""
    try:
        preds, why = await ctx.predictor.predict(reqs, explain=explain), None
    except MLPlatformError:
        raise
    except Exception as exc:
        if not explain:
            raise
        log.warning("explain failed (%s: %s); answering the scores without contributions", type(exc).__name__, exc)
        why = f"contributions could not be computed for this input ({type(exc).__name__}); the score is unaffected"
        preds = await ctx.predictor.predict(reqs, explain=False)
    if ctx.recorder is not None:
        ctx.recorder.record([r.event() for r in reqs])
    return preds, why


@router.post("/predict", response_model=PredictResponse)
async def predict(txn: Transaction, ctx: ContextDep, explain: ExplainQ = False) -> Response:
    """Score one transaction."""
    return await _score_one(ctx, txn, explain, time.perf_counter())


async def _score_one(ctx, txn: Transaction, explain: bool, t0: float) -> Response:
    reqs = scoring_requests([txn], [new_id()], EdgeBounds.from_settings(ctx.settings), [("body",)])
    (p,), why = await _predict(ctx, reqs, explain)
    latency_ms = (time.perf_counter() - t0) * 1000.0
    return json_response(PredictResponse.model_construct(**answer_fields(p, why), latency_ms=latency_ms))


# --- the hot path -------------------------------------------------------------------------------------------------
async def predict_direct(scope, receive, send, app) -> None:
    """``POST /v1/predict`` straight from the ASGI call, without FastAPI's routing, dependency and body machinery
    (~15% of a request's CPU): the body is read and validated as FastAPI does it (``json.loads`` then the same
    ``Transaction`` model) and scored by the same code as the route above. Whatever it does not take as it is (a
    query string, a body sent in chunks, a content type that is not JSON, a body that is not a valid transaction)
    is handed to ``app``, where the route answers it exactly as before (so every 422 keeps FastAPI's own words);
    an error while scoring is answered by the app's own exception handlers."""
    t0 = time.perf_counter()
    if scope["query_string"] or not _json_with_length(scope["headers"]):
        return await app(scope, receive, send)
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away before its body arrived: no one to answer
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    try:
        txn = Transaction.model_validate(json.loads(body))
    except Exception:  # noqa: BLE001 - not ours to word: the route answers it (422, 400) as it always did
        return await app(scope, _replay(body, receive), send)
    try:
        response = await _score_one(scope["app"].state.ctx, txn, False, t0)
    except Exception as exc:  # noqa: BLE001 - the app's handlers word it, as they would behind the route
        response = await _handled(scope, receive, exc)
    await response(scope, receive, send)


def _json_with_length(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """A Content-Length is given (so the body limit was checked on it) and the content type is JSON."""
    sized = is_json = False
    for name, value in headers:
        if name == b"content-length":
            sized = True
        elif name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            is_json = media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
    return sized and is_json


def _replay(body: bytes, receive):
    """A ``receive`` that gives ``body`` again (it was read already), then whatever comes next."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _handled(scope, receive, exc: Exception) -> Response:
    """The answer of the app's exception handler for ``exc`` (the nearest class in its MRO, as Starlette picks)."""
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            return await handler(Request(scope, receive), exc)
    raise exc


@router.post("/predict/batch", response_model=BatchResponse)
async def predict_batch(body: BatchRequest, ctx: ContextDep, explain: ExplainQ = False) -> Response:
    """Score many transactions in one call (at most ``serving_max_batch``)."""
    t0 = time.perf_counter()
    limit = ctx.settings.serving_max_batch
    if len(body.transactions) > limit:
        raise RequestValidationError([{
            "type": "too_long", "loc": ("body", "transactions"),
            "msg": f"at most {limit} transactions per call (got {len(body.transactions)}); split the batch",
            "input": None,
        }])
    batch_id = new_id()
    n = len(body.transactions)
    reqs = scoring_requests(body.transactions, [f"{batch_id}-{i}" for i in range(n)],
                             EdgeBounds.from_settings(ctx.settings), [("body", "transactions", i) for i in range(n)])
    preds, why = await _predict(ctx, reqs, explain)
    return json_response(BatchResponse.model_construct(
        request_id=batch_id, predictions=[PredictionOut.model_construct(**answer_fields(p, why)) for p in preds],
        latency_ms=(time.perf_counter() - t0) * 1000.0))
