"""`mlplatform serve`: run the inference service with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from mlplatform.console import friendly, parse_time, part_app

app = part_app()


def quiet_app():
    """The service's ASGI app with the known library warnings silenced: what uvicorn builds in each process
    (worker processes start fresh, without the CLI's warning filters)."""
    from mlplatform.console import quiet_known_warnings

    quiet_known_warnings()
    from mlplatform.settings import get_settings
    from serving.app import create_app

    settings = get_settings()
    if settings.log_format == "json":
        import logging

        logging.captureWarnings(True)  # Python warnings as JSON records too (uvicorn configured the handlers)
    return create_app(settings)


@app.command("serve")
@friendly
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: serving_host setting).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving_port setting).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes, each with its own event loop, models and "
                                         "Redis pool (~410 MB each; see docs/serving.md).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve online predictions (POST /v1/predict) until Ctrl-C; logs are flushed on the way out."""
    import uvicorn

    from mlplatform.logs import uvicorn_log_config
    from mlplatform.redact import settings_secrets
    from mlplatform.settings import get_settings
    from mlplatform.stores import require_redis

    settings = get_settings()
    require_redis(settings)
    settings.export_feast_env()  # worker processes build their own Settings from the same environment
    uvicorn.run(
        "serving.cli:quiet_app", factory=True, host=host or settings.serving_host,
        port=port or settings.serving_port, workers=workers, log_level=log_level, access_log=False,
        log_config=uvicorn_log_config(settings.log_format, log_level, tuple(settings_secrets(settings))),
        loop="uvloop", http="httptools",  # the C event loop and HTTP parser (uvicorn[standard]): ~2x pure Python
        timeout_graceful_shutdown=30,
    )


@app.command("predict")
@friendly
def predict(
    customer_id: Annotated[int, typer.Option(help="Card holder.")],
    merchant_id: Annotated[int, typer.Option(help="Merchant.")],
    amount: Annotated[float, typer.Option(help="Amount of the transaction.")],
    timestamp: Annotated[str | None, typer.Option(help="Time of the transaction: ISO-8601 or relative (now, "
                                                  "today-15d+12h, -2h); default now.")] = None,
    url: Annotated[str | None, typer.Option(help="Service base URL (default: serving_host:serving_port).")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the service to be ready.")] = 0.0,
    explain: Annotated[bool, typer.Option("--explain", help="Add per-feature contributions.")] = False,
) -> None:
    """Ask a running service for one fraud score over HTTP and print its answer."""
    import json
    import time
    from datetime import UTC, datetime

    import httpx

    from mlplatform.errors import InvalidInputError, OnlineStoreUnavailable
    from mlplatform.settings import get_settings

    settings = get_settings()
    base = (url or f"http://{settings.serving_host}:{settings.serving_port}").rstrip("/")
    deadline = time.monotonic() + wait
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            raise OnlineStoreUnavailable(f"the service at {base} is not ready (start it with `mlplatform serve`)")
        time.sleep(0.5)
    body = {"customer_id": customer_id, "merchant_id": merchant_id, "amount": amount,
            "timestamp": (parse_time(timestamp) or datetime.now(UTC)).isoformat()}
    answer = httpx.post(f"{base}/v1/predict", params={"explain": str(explain).lower()}, json=body, timeout=10)
    if answer.status_code >= 400:
        raise InvalidInputError(f"the service answered {answer.status_code}: {answer.text}")
    typer.echo(json.dumps(answer.json(), indent=2))
