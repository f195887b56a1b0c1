"""Request and response bodies of every endpoint; validation errors name the offending field (422)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator


class Transaction(BaseModel):
    """A card transaction to score."""

    model_config = ConfigDict(extra="forbid")

    customer_id: int = Field(ge=0, description="Card holder (entity key of the customer views).")
    merchant_id: int = Field(ge=0, description="Merchant (entity key of the merchant views).")
    amount: float = Field(ge=0, allow_inf_nan=False, description="Amount of the transaction.")
    timestamp: datetime | None = Field(
        None, description="When it happened (ISO-8601 or unix seconds; UTC if no zone). Default: now."
    )
    transaction_ts: int | None = Field(
        None, ge=0, description="When it happened as unix seconds (alternative to `timestamp`)."
    )
    transaction_id: str | None = Field(None, max_length=128, description="Your id, echoed back and logged.")
    request_fields: dict[str, StrictInt | StrictFloat | StrictStr | StrictBool] = Field(
        default_factory=dict, description="Further request fields an on-demand view may need.", max_length=32
    )

    @model_validator(mode="after")
    def _one_time(self) -> Transaction:
        if self.timestamp is not None and self.transaction_ts is not None:
            ts = self.timestamp if self.timestamp.tzinfo else self.timestamp.replace(tzinfo=UTC)
            if int(ts.timestamp()) != self.transaction_ts:
                raise ValueError("timestamp and transaction_ts disagree: give one of them")
        return self

    def time_us(self, now: datetime) -> int:
        """The transaction's time in µs since the epoch."""
        if self.transaction_ts is not None:
            return self.transaction_ts * 1_000_000
        ts = self.timestamp or now
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        return int(ts.timestamp() * 1_000_000)

    def entity_row(self, time_us: int) -> dict[str, Any]:
        """Entity keys and request fields as the feature service's views read them."""
        row: dict[str, Any] = dict(self.request_fields)
        row.update(customer_id=self.customer_id, merchant_id=self.merchant_id, amount=float(self.amount),
                   transaction_ts=time_us // 1_000_000)
        return row


class ModelRef(BaseModel):
    """The model version that produced a score, and its role."""

    name: str
    version: int
    role: Literal["golden", "challenger", "previous_golden"]


class PredictionOut(BaseModel):
    """One score."""

    request_id: str
    transaction_id: str | None = None
    score: float = Field(description="Probability of fraud.")
    model: ModelRef
    fallback: bool = Field(description="True when a fallback model answered instead of the routed one.")
    fallback_reason: str | None = None
    missing: list[str] = Field(description="Model inputs with no value (e.g. an unknown customer).")
    stale: list[str] = Field(description="Model inputs whose row was older than its view's TTL (treated as missing).")
    cached: bool
    contributions: dict[str, float] | None = Field(None, description="?explain=true: per-feature log-odds (and bias).")


class PredictResponse(PredictionOut):
    """POST /v1/predict answer."""

    latency_ms: float


class BatchRequest(BaseModel):
    """Many transactions in one call."""

    model_config = ConfigDict(extra="forbid")
    transactions: list[Transaction] = Field(min_length=1)


class BatchResponse(BaseModel):
    """POST /v1/predict/batch answer, predictions in request order."""

    request_id: str
    predictions: list[PredictionOut]
    latency_ms: float


class PushRequest(BaseModel):
    """Rows of fresh stream features for a push source."""

    model_config = ConfigDict(extra="forbid")
    push_source: str = Field("customer_realtime_push", description="Name of the Feast PushSource.")
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    to: Literal["online", "offline", "online_and_offline"] = "online"


class PushResponse(BaseModel):
    push_source: str
    rows: int
    to: str


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = False
    reason: str = Field("", max_length=500)


class ModelState(BaseModel):
    """A model in the pool."""

    name: str
    version: int
    role: str
    feature_service: str


class ModelsResponse(BaseModel):
    models: list[ModelState]
    golden_error: str | None
    errors: dict[int, str]
    challenger_weight: float


class PromoteResponse(BaseModel):
    promoted: int
    golden: ModelState | None
    previous_golden: ModelState | None
    detail: str
