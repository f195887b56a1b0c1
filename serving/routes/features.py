"""POST /v1/features: the model-ready features of a transaction, exactly what /v1/predict would feed its model.

For a service that does its own scoring, or a person asking why a score came out as it did: the same routing (the
model /v1/predict would ask first for this customer), the same read of Redis and the same on-demand features, the
same edge bounds (a 422 names the field), and each input's state (missing, stale, future) and the velocity
features' freshness. Nothing is scored, cached, logged or recorded as an event.
"""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import ContextDep
from serving.ids import new_id
from serving.routes.predict import json_response, scoring_requests
from serving.schemas import ActivityFreshness, EdgeBounds, FeaturesResponse, ModelRef, Transaction

router = APIRouter(prefix="/v1", tags=["features"])


@router.post("/features", response_model=FeaturesResponse)
async def features(txn: Transaction, ctx: ContextDep):
    """The features /v1/predict would use for this transaction, with their state and freshness."""
    (req,) = scoring_requests([txn], [new_id()], EdgeBounds.from_settings(ctx.settings), [("body",)])
    candidate, feats, stored = await ctx.predictor.model_features(req)
    model = candidate.model
    values = feats.values[0]
    vector = model.vector(values)
    activity = None
    if feats.activity_age_s:
        activity = ActivityFreshness(source="event_log" if feats.from_logs and feats.from_logs[0] else "stored_rows",
                                     age_seconds=feats.activity_age_s[0])
    return json_response(FeaturesResponse(
        request_id=req.request_id, transaction_id=req.transaction_id,
        model=ModelRef(name=model.name, version=model.version, role=candidate.role),
        feature_service=model.feature_service,
        features={n: None if v != v else float(v) for n, v in zip(model.feature_names, vector.tolist(), strict=True)},
        stored=[n for n in model.feature_names if n in stored],
        on_demand=[n for n in model.feature_names if n not in stored],
        missing=feats.missing[0], stale=feats.stale[0], future=feats.future[0], customer_activity=activity))
