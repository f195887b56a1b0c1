"""The retrain request: monitoring files it when a check breaches; training's ``--if-needed`` answers it once.

File: ``<data_dir>/monitoring/retrain_request.json`` =
``{"requested_at": ISO-8601, "requested_by": str, "breaches": [str], "window": {...}}`` (``reason`` may stand
instead of ``breaches``). A request newer than the golden model asks for a retrain; once answered it is renamed
``retrain_request.<time>.done.json``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.errors import InvalidInputError
from mlplatform.files import write_json_atomic
from mlplatform.settings import Settings


def request_path(settings: Settings) -> Path:
    """Where the pending retrain request lives."""
    return settings.layout.retrain_request


def write_retrain_request(settings: Settings, breaches: list[str], window: dict[str, str],
                          requested_by: str = "mlplatform monitor check") -> Path:
    """File a retrain request (atomically); returns its path."""
    body = {"requested_at": datetime.now(UTC).isoformat(), "requested_by": requested_by, "breaches": breaches,
            "window": window}
    path = request_path(settings)
    write_json_atomic(path, body)
    return path


def read_retrain_request(settings: Settings) -> dict[str, Any] | None:
    """The pending retrain request, or None; a clear error if it is malformed."""
    import pandas as pd

    path = request_path(settings)
    if not path.exists():
        return None
    try:
        request = json.loads(path.read_text())
        pd.Timestamp(request["requested_at"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"retrain request {path} is malformed ({exc}); expected "
                                '{"requested_at": ISO-8601, "breaches": [...]}') from exc
    return request


def mark_retrain_request_done(settings: Settings) -> None:
    """Rename the answered request so it is not acted on twice."""
    path = request_path(settings)
    if path.exists():
        path.rename(path.with_name(f"retrain_request.{datetime.now(UTC):%Y%m%dT%H%M%S}.done.json"))
