"""POST /v1/predict and /v1/predict/batch."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from serving.deps import ContextDep
from serving.predictor import Prediction, ScoringRequest
from serving.schemas import BatchRequest, BatchResponse, ModelRef, PredictionOut, PredictResponse, Transaction

router = APIRouter(prefix="/v1", tags=["predict"])
ExplainQ = Annotated[bool, Query(description="Add per-feature contributions (XGBoost pred_contribs).")]


def _out(p: Prediction) -> dict:
    return {
        "request_id": p.request_id, "transaction_id": p.transaction_id, "score": p.score,
        "model": ModelRef(name=p.model.name, version=p.model.version, role=p.role), "fallback": p.fallback,
        "fallback_reason": p.fallback_reason, "missing": p.missing, "stale": p.stale, "cached": p.cached,
        "contributions": p.contributions,
    }


@router.post("/predict", response_model=PredictResponse)
async def predict(txn: Transaction, ctx: ContextDep, explain: ExplainQ = False) -> PredictResponse:
    """Score one transaction."""
    t0 = time.perf_counter()
    request_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    t_us = txn.time_us(now)
    req = ScoringRequest(request_id, txn.transaction_id, txn.entity_row(t_us), t_us)
    (p,) = await ctx.predictor.predict([req], explain=explain)
    return PredictResponse(**_out(p), latency_ms=(time.perf_counter() - t0) * 1000.0)


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
    now = datetime.now(UTC)
    reqs = []
    for i, txn in enumerate(body.transactions):
        t_us = txn.time_us(now)
        reqs.append(ScoringRequest(f"{batch_id}-{i}", txn.transaction_id, txn.entity_row(t_us), t_us))
    preds = await ctx.predictor.predict(reqs, explain=explain)
    return BatchResponse(request_id=batch_id, predictions=[PredictionOut(**_out(p)) for p in preds],
                         latency_ms=(time.perf_counter() - t0) * 1000.0)
