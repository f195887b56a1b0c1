"""`mlplatform serve`: run the inference service with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: serving_host setting).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving_port setting).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (each loads its own models).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve online predictions (POST /v1/predict) until Ctrl-C; logs are flushed on the way out."""
    import uvicorn

    from mlplatform.settings import get_settings
    from mlplatform.stores import require_redis

    settings = get_settings()
    require_redis(settings)
    settings.export_feast_env()  # worker processes build their own Settings from the same environment
    uvicorn.run(
        "serving.app:create_app", factory=True, host=host or settings.serving_host,
        port=port or settings.serving_port, workers=workers, log_level=log_level, access_log=False,
        timeout_graceful_shutdown=30,
    )
