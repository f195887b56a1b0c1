"""POST /v1/predict and /v1/predict/batch.

Every transaction is held to the edge bounds (``EdgeBounds``: amount cap, time window around now) before it is
scored; a transaction out of bounds is a 422 naming its field. With ``?explain=true``, a failure to compute the
contributions never fails the request: the score is answered with ``contributions_error`` saying why.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from mlplatform.errors import MLPlatformError
from serving.deps import ContextDep
from serving.predictor import Prediction, ScoringRequest
from serving.schemas import (
    BatchRequest,
    BatchResponse,
    EdgeBounds,
    ModelRef,
    PredictionOut,
    PredictResponse,
    Transaction,
)

router = APIRouter(prefix="/v1", tags=["predict"])
log = logging.getLogger(__name__)
ExplainQ = Annotated[bool, Query(description="Add per-feature contributions (XGBoost pred_contribs).")]


def _out(p: Prediction, contributions_error: str | None = None) -> dict:
    return {
        "request_id": p.request_id, "transaction_id": p.transaction_id, "score": p.score,
        "model": ModelRef(name=p.model.name, version=p.model.version, role=p.role), "fallback": p.fallback,
        "fallback_reason": p.fallback_reason, "missing": p.missing, "stale": p.stale, "future": p.future,
        "cached": p.cached, "degraded": p.degraded, "contributions": p.contributions,
        "contributions_error": contributions_error,
    }


def _scoring_requests(txns: Sequence[Transaction], ids: Sequence[str], bounds: EdgeBounds,
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
async def predict(txn: Transaction, ctx: ContextDep, explain: ExplainQ = False) -> PredictResponse:
    """Score one transaction."""
    t0 = time.perf_counter()
    reqs = _scoring_requests([txn], [uuid.uuid4().hex], EdgeBounds.from_settings(ctx.settings), [("body",)])
    (p,), why = await _predict(ctx, reqs, explain)
    return PredictResponse(**_out(p, why), latency_ms=(time.perf_counter() - t0) * 1000.0)


@router.post("/predict/batch", response_model=BatchResponse)
async def predict_batch(body: BatchRequest, ctx: ContextDep, explain: ExplainQ = False) -> BatchResponse:
    """Score many transactions in one call (at most ``serving_max_batch``)."""
    t0 = time.perf_counter()
    limit = ctx.settings.serving_max_batch
    if len(body.transactions) > limit:
        raise RequestValidationError([{
            "type": "too_long", "loc": ("body", "transactions"),
            "msg": f"at most {limit} transactions per call (got {len(body.transactions)}); split the batch",
            "input": None,
        }])
    batch_id = uuid.uuid4().hex
    n = len(body.transactions)
    reqs = _scoring_requests(body.transactions, [f"{batch_id}-{i}" for i in range(n)],
                             EdgeBounds.from_settings(ctx.settings), [("body", "transactions", i) for i in range(n)])
    preds, why = await _predict(ctx, reqs, explain)
    return BatchResponse(request_id=batch_id, predictions=[PredictionOut(**_out(p, why)) for p in preds],
                         latency_ms=(time.perf_counter() - t0) * 1000.0)
