"""FastAPI dependencies as Annotated aliases: the serving context and the admin API key."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from mlplatform.errors import Unauthorized
from serving.context import ServingContext


async def get_context(request: Request) -> ServingContext:
    """The context the lifespan opened (async: FastAPI would run a plain function on a worker thread)."""
    return request.app.state.ctx


ContextDep = Annotated[ServingContext, Depends(get_context)]


async def require_api_key(ctx: ContextDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Admin endpoints need ``X-API-Key`` equal to ``serving_api_key``."""
    expected = ctx.settings.serving_api_key
    if not expected:
        raise Unauthorized("admin endpoints are disabled: set MLPLATFORM_SERVING_API_KEY on the server")
    if x_api_key is None:
        raise Unauthorized("this endpoint needs an API key in the X-API-Key header")
    if not hmac.compare_digest(x_api_key.encode(), expected.encode()):
        raise Unauthorized("the API key in X-API-Key is not valid")


AdminDep = Depends(require_api_key)
