"""Should we retrain? Yes when there is no golden, when monitoring asked for it, or when enough labels arrived.

The monitoring hook: `mlplatform monitor check --retrain` (monitoring issue) writes
``<data_dir>/monitoring/retrain_request.json`` = {"requested_at": ISO-8601, "breaches": [str], ...}
(``reason`` may be given instead of ``breaches``).
A request newer than the golden model asks for a retrain; after a successful `train --if-needed` it is renamed to
``retrain_request.<time>.done.json`` so it is answered once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from mlplatform.errors import InvalidInputError
from mlplatform.models.registry import ModelRegistry
from mlplatform.settings import Settings
from training.datasets import default_as_of, read_labels

REQUEST_FILE = "retrain_request.json"


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain, and why (always a sentence a person can read)."""

    retrain: bool
    reason: str
    new_labels: int | None = None
    request: dict | None = None


def request_path(settings: Settings) -> Path:
    """Where monitoring writes its retrain request."""
    return settings.data_path / "monitoring" / REQUEST_FILE


def read_request(settings: Settings) -> dict | None:
    """The pending retrain request, or None."""
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


def check_retrain(settings: Settings, as_of: datetime | None = None) -> RetrainDecision:
    """Decide whether `train --if-needed` should retrain now."""
    golden = ModelRegistry(settings).golden()
    if golden is None:
        return RetrainDecision(True, "no golden model yet")
    request = read_request(settings)
    if request is not None and pd.Timestamp(request["requested_at"]) > pd.Timestamp(golden.created_at):
        why = request.get("reason") or "; ".join(request.get("breaches") or []) or "no reason given"
        return RetrainDecision(True, f"monitoring asked for it ({request['requested_at']}): {why}",
                               request=request)
    now = pd.Timestamp(as_of) if as_of is not None else default_as_of(settings)
    now = now.tz_localize("UTC") if now.tzinfo is None else now
    trained_as_of = pd.Timestamp(golden.lineage.get("as_of", golden.created_at))
    labels = read_labels(settings.raw_dir)
    new = int(((labels["label_timestamp"] > trained_as_of) & (labels["label_timestamp"] <= now)).sum())
    need = settings.retrain_min_new_labels
    if new >= need:
        return RetrainDecision(True, f"{new:,} labels arrived since the golden v{golden.version} was trained "
                               f"(as of {trained_as_of:%Y-%m-%d %H:%M}Z; threshold {need:,})", new_labels=new)
    return RetrainDecision(False, f"only {new:,} new labels since the golden v{golden.version}'s as-of "
                           f"{trained_as_of:%Y-%m-%d %H:%M}Z (threshold {need:,}) and no retrain request from "
                           "monitoring", new_labels=new)


def mark_request_done(settings: Settings) -> None:
    """Rename the answered request so it is not acted on twice."""
    path = request_path(settings)
    if path.exists():
        path.rename(path.with_name(f"retrain_request.{datetime.now(UTC):%Y%m%dT%H%M%S}.done.json"))
