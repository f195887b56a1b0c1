"""What the service is asked (a ScoringRequest) and what it answers (a Prediction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.model_pool import LoadedModel


@dataclass(frozen=True)
class ScoringRequest:
    """One transaction to score: entity keys and request fields, its time, and ids."""

    request_id: str
    transaction_id: str | None
    row: dict[str, Any]  # entity keys + request fields, as the feature service needs them
    time_us: int  # the transaction's time (µs since the epoch): features are taken as of just before it


@dataclass
class Prediction:
    """What the service answers for one transaction (or a shadow scored, never returned)."""

    request_id: str
    transaction_id: str | None
    score: float
    model: LoadedModel
    role: str
    fallback: bool
    fallback_reason: str | None
    missing: list[str]
    stale: list[str]
    cached: bool
    contributions: dict[str, float] | None = None
