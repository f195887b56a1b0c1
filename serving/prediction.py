"""What the service is asked (a ScoringRequest) and what it answers (a Prediction)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlplatform.contracts.activity_log import TransactionEvent
from serving.ids import new_id
from serving.model_pool import LoadedModel


@dataclass(frozen=True)
class ScoringRequest:
    """One transaction to score: entity keys and request fields, its time, and ids."""

    request_id: str
    transaction_id: str | None
    row: dict[str, Any]  # entity keys + request fields, as the feature service needs them
    time_us: int  # the transaction's time (µs since the epoch): features are taken as of just before it

    def event(self) -> TransactionEvent:
        """This transaction as an event of the events stream (without a transaction id: a generated one)."""
        row = self.row
        return TransactionEvent(self.transaction_id or new_id(), int(row["customer_id"]),
                                int(row["merchant_id"]), float(row["amount"]), self.time_us)


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
    future: list[str] = field(default_factory=list)  # inputs whose stored row is newer than the request (withheld)
    degraded: str | None = None  # why the score rests on no stored feature at all (None: some stored input had one)
    decision: str | None = None  # approve / review / decline under the answering version's thresholds (None: none)
    reasons: list[dict] | None = None  # review/decline: the inputs that pushed the score up most (reason codes)


NO_STORED_FEATURES = "no stored features for this transaction (online store empty or entity unknown)"


def degraded_reason(stored: Sequence[str], missing: Sequence[str], stale: Sequence[str],
                    future: Sequence[str]) -> str | None:
    """Why a prediction is degraded: none of the model's ``stored`` inputs (read from Redis, not computed on
    demand) had a value. None when at least one had (or the model reads nothing stored)."""
    if not stored:
        return None
    gone, absent = set(missing), set(missing) | set(stale) | set(future)
    if any(name not in absent for name in stored):
        return None
    if all(name in gone for name in stored):
        return NO_STORED_FEATURES
    n_stale, n_future = sum(n in set(stale) for n in stored), sum(n in set(future) for n in stored)
    return (f"no usable stored features for this transaction ({len(stored) - n_stale - n_future} missing, "
            f"{n_stale} older than their view's TTL, {n_future} newer than the transaction)")
