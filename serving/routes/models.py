"""GET /v1/models and POST /v1/models/{version}/promote (admin)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Path

from mlplatform.errors import ConflictError
from serving.deps import AdminDep, ContextDep
from serving.model_pool import LoadedModel
from serving.schemas import ModelsResponse, ModelState, PromoteRequest, PromoteResponse

router = APIRouter(prefix="/v1/models", tags=["models"])
MAX_VERSION = 2**31 - 1  # model versions are 32-bit integers in MLflow's registry tables
VersionP = Annotated[int, Path(ge=1, le=MAX_VERSION, description="A registered model version.")]


def _state(role: str, m: LoadedModel | None) -> ModelState | None:
    if m is None:
        return None
    return ModelState(name=m.name, version=m.version, role=role, feature_service=m.feature_service)


@router.get("", response_model=ModelsResponse)
async def list_models(ctx: ContextDep) -> ModelsResponse:
    """The models loaded and warm in this process, with their roles."""
    s = ctx.pool.state
    return ModelsResponse(models=[_state(r, m) for r, m in s.loaded()], golden_error=s.golden_error,
                          errors=s.errors, challenger_weight=ctx.dispatcher.challenger_weight)


@router.post("/{version}/promote", response_model=PromoteResponse, dependencies=[AdminDep])
async def promote(version: VersionP, ctx: ContextDep, body: PromoteRequest | None = Body(None)) -> PromoteResponse:
    """Promote ``version`` to golden through the registry, then swap it in once it is warm."""
    from mlplatform.models.promotion import promote_model

    body = body or PromoteRequest()
    result = await asyncio.to_thread(promote_model, ctx.settings, version, force=body.force,
                                     reason=body.reason, channel="api")
    if result.action == "refused":
        # the promotion gate said no: nothing changed, and the caller must not read this as a promotion
        raise ConflictError(f"promotion of version {version} refused by the gate: {'; '.join(result.reasons)}")
    await asyncio.to_thread(ctx.pool.refresh)
    s = ctx.pool.state
    return PromoteResponse(promoted=version, golden=_state("golden", s.golden),
                           previous_golden=_state("previous_golden", s.previous_golden), detail=str(result))
