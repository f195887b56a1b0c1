"""Should we retrain? Yes when there is no golden, when monitoring asked for it (a retrain request newer than the
golden, mlplatform.contracts.retrain_request), or when enough labels arrived."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from mlplatform.contracts.retrain_request import read_retrain_request
from mlplatform.models.registry import ModelRegistry
from mlplatform.settings import Settings
from training.datasets import default_as_of, read_labels


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain, and why (always a sentence a person can read)."""

    retrain: bool
    reason: str
    new_labels: int | None = None
    request: dict | None = None


def check_retrain(settings: Settings, as_of: datetime | None = None) -> RetrainDecision:
    """Decide whether `train --if-needed` should retrain now."""
    golden = ModelRegistry(settings).golden()
    if golden is None:
        return RetrainDecision(True, "no golden model yet")
    request = read_retrain_request(settings)
    if request is not None and pd.Timestamp(request["requested_at"]) > pd.Timestamp(golden.created_at):
        why = request.get("reason") or "; ".join(request.get("breaches") or []) or "no reason given"
        return RetrainDecision(True, f"monitoring asked for it ({request['requested_at']}): {why}",
                               request=request)
    now = pd.Timestamp(as_of) if as_of is not None else default_as_of(settings)
    now = now.tz_localize("UTC") if now.tzinfo is None else now
    trained_as_of = pd.Timestamp(golden.lineage.get("as_of", golden.created_at))
    labels = read_labels(settings.layout.raw_dir)
    new = int(((labels["label_timestamp"] > trained_as_of) & (labels["label_timestamp"] <= now)).sum())
    need = settings.retrain_min_new_labels
    if new >= need:
        return RetrainDecision(True, f"{new:,} labels arrived since the golden v{golden.version} was trained "
                               f"(as of {trained_as_of:%Y-%m-%d %H:%M}Z; threshold {need:,})", new_labels=new)
    return RetrainDecision(False, f"only {new:,} new labels since the golden v{golden.version}'s as-of "
                           f"{trained_as_of:%Y-%m-%d %H:%M}Z (threshold {need:,}) and no retrain request from "
                           "monitoring", new_labels=new)
