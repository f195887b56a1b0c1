"""Request and response bodies of every endpoint; validation errors name the offending field (422).

Bounds at the edge: what the schema can state (entity ids within Feast's INT64 keys, times that fit the feature
log, finite amounts, request fields bounded in count and size) is in the models; what depends on the settings and
the clock (the amount cap, the time window around now) is ``EdgeBounds``, which the routes apply before scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from mlplatform.contracts.activity_log import TransactionEvent
from mlplatform.settings import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# --- bounds at the edge: what a request may carry at all (the settings add the amount cap and time window) ---
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # Feast INT64 entity keys (feature_repo/entities.py: customer, merchant)
INT64_END = 2**63  # bound as `< 2^63`: a float in /openapi.json holds 2^63 exactly, not 2^63 - 1
MAX_TRANSACTION_TS = INT64_MAX // 1_000_000  # unix seconds whose µs still fit the feature log's int64
MAX_REQUEST_FIELDS = 32  # entries in `request_fields`
MAX_REQUEST_FIELD_NAME = 64  # characters of a request field's name
MAX_REQUEST_FIELD_STR = 256  # characters of a string request field
MAX_EVENTS_PER_CALL = 1_000  # events one POST /v1/events may carry
RESERVED_FIELDS = frozenset({"customer_id", "merchant_id", "amount", "transaction_ts", "timestamp"})

EntityId = Annotated[int, Field(ge=0, lt=INT64_END)]
RequestFieldName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REQUEST_FIELD_NAME)]


def _request_field_value(value: Any) -> Any:
    """A request field's value as given, if it is a bounded scalar; else ValueError saying what is allowed."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value < INT64_END:
            raise ValueError("an integer must fit int64 (-2^63 to 2^63-1)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("a number must be finite")
        return value
    if isinstance(value, str):
        if len(value) > MAX_REQUEST_FIELD_STR:
            raise ValueError(f"a string may have at most {MAX_REQUEST_FIELD_STR} characters (got {len(value)})")
        return value
    raise ValueError("must be a string, a number or a boolean")


RequestFieldValue = Annotated[
    Any,
    PlainValidator(_request_field_value),  # one clear error per value, located at the value itself
    WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": INT64_MIN, "exclusiveMaximum": INT64_END},
        {"type": "number"},
        {"type": "string", "maxLength": MAX_REQUEST_FIELD_STR},
        {"type": "boolean"},
    ]}),
]


class TransactionCore(BaseModel):
    """What every transaction the service takes carries: entity keys, amount and time (bounded at the edge)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: EntityId = Field(description="Card holder (entity key of the customer views; 0 to 2^63-1).")
    merchant_id: EntityId = Field(description="Merchant (entity key of the merchant views; 0 to 2^63-1).")
    amount: float = Field(
        ge=0, allow_inf_nan=False,
        description="Amount of the transaction: finite, 0 to MLPLATFORM_SERVING_MAX_AMOUNT (default 1e9).",
    )
    timestamp: datetime | None = Field(
        None, description="When it happened (ISO-8601 or unix seconds; UTC if no zone). Default: now. Must lie "
        "within [now - MLPLATFORM_SERVING_MAX_EVENT_AGE, now + MLPLATFORM_SERVING_MAX_CLOCK_SKEW].",
    )
    transaction_ts: int | None = Field(
        None, ge=0, le=MAX_TRANSACTION_TS,
        description="When it happened as unix seconds (alternative to `timestamp`; the same window applies).",
    )

    @model_validator(mode="after")
    def _one_time(self) -> TransactionCore:
        if self.timestamp is not None and self.transaction_ts is not None:
            ts = self.timestamp if self.timestamp.tzinfo else self.timestamp.replace(tzinfo=UTC)
            if int(ts.timestamp()) != self.transaction_ts:
                raise ValueError("timestamp and transaction_ts disagree: give one of them")
        return self

    def time_us(self, now: datetime) -> int:
        """The transaction's time in µs since the epoch (exact: no float rounding at the microsecond)."""
        if self.transaction_ts is not None:
            return self.transaction_ts * 1_000_000
        ts = self.timestamp or now
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        return (ts - _EPOCH) // _MICROSECOND

    def time_field(self) -> str:
        """The name of the field the transaction's time came from (``timestamp`` unless ``transaction_ts``)."""
        return "transaction_ts" if self.transaction_ts is not None else "timestamp"


class Transaction(TransactionCore):
    """A card transaction to score."""

    transaction_id: str | None = Field(None, max_length=128, description="Your id, echoed back and logged.")
    request_fields: dict[RequestFieldName, RequestFieldValue] = Field(
        default_factory=dict, max_length=MAX_REQUEST_FIELDS,
        description=f"Further request fields an on-demand view may need: at most {MAX_REQUEST_FIELDS}, names of at "
        f"most {MAX_REQUEST_FIELD_NAME} characters, strings of at most {MAX_REQUEST_FIELD_STR}, int64 integers, "
        "finite floats, booleans; not the top-level fields' names.",
    )

    @field_validator("request_fields")
    @classmethod
    def _not_reserved(cls, fields: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(RESERVED_FIELDS.intersection(fields))
        if clash:
            raise ValueError(f"{', '.join(clash)}: give these as top-level fields, not in request_fields")
        return fields

    def entity_row(self, time_us: int) -> dict[str, Any]:
        """Entity keys and request fields as the feature service's views read them."""
        row: dict[str, Any] = dict(self.request_fields)
        row.update(customer_id=self.customer_id, merchant_id=self.merchant_id, amount=float(self.amount),
                   transaction_ts=time_us // 1_000_000)
        return row


@dataclass(frozen=True)
class EdgeBounds:
    """The limits a transaction is held to beyond its schema: an amount cap and a time window around now."""

    max_amount: float
    max_event_age_s: float
    max_clock_skew_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeBounds:
        """The bounds ``settings`` configure (serving_max_amount, serving_max_event_age, serving_max_clock_skew)."""
        return cls(settings.serving_max_amount, settings.serving_max_event_age, settings.serving_max_clock_skew)

    def problems(self, txn: TransactionCore, time_us: int, now: datetime, loc: tuple[str | int, ...] = ("body",),
                 ) -> list[dict[str, Any]]:
        """Validation errors (pydantic's shape: type, loc, msg, input) of ``txn`` scored at ``time_us``; [] if none."""
        out: list[dict[str, Any]] = []
        if not math.isfinite(txn.amount) or txn.amount > self.max_amount:
            out.append({"type": "less_than_equal", "loc": (*loc, "amount"), "input": txn.amount,
                        "msg": f"at most {self.max_amount:g} (MLPLATFORM_SERVING_MAX_AMOUNT)"})
        now_us = (now - _EPOCH) // _MICROSECOND
        earliest = now_us - round(self.max_event_age_s * 1_000_000)
        latest = now_us + round(self.max_clock_skew_s * 1_000_000)
        if not earliest <= time_us <= latest:
            field = txn.time_field()
            if time_us > latest:
                why = (f"{(time_us - now_us) / 1e6:.0f} s after the server's clock; at most {self.max_clock_skew_s:g} s"
                       " ahead is accepted (MLPLATFORM_SERVING_MAX_CLOCK_SKEW)")
            else:
                why = (f"{(now_us - time_us) / 86_400e6:.1f} days before the server's clock; at most "
                       f"{self.max_event_age_s / 86_400:g} days back is accepted (MLPLATFORM_SERVING_MAX_EVENT_AGE)")
            out.append({"type": "out_of_window", "loc": (*loc, field), "input": getattr(txn, field), "msg": why})
        return out


class ErrorField(BaseModel):
    """One wrong part of a request."""

    field: str = Field(description="Where: body.customer_id, body.transactions[3].amount, query.explain, ...")
    problem: str = Field(description="What is wrong with it.")


class ErrorResponse(BaseModel):
    """The one shape of every error answer (4xx and 5xx)."""

    error: str = Field(description="Kind of error: InvalidInputError (every 422), Unauthorized, Overloaded, ...")
    detail: str = Field(description="What was wrong and what to do, in one message.")
    fields: list[ErrorField] = Field(description="The request fields at fault (every 422 names at least one).")


class ModelRef(BaseModel):
    """The model version that produced a score, and its role."""

    name: str
    version: int
    role: Literal["golden", "challenger", "previous_golden"]


class ReasonCode(BaseModel):
    """An input that pushed the score up: its value and its contribution (log-odds)."""

    feature: str
    value: float | None
    contribution: float


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
    future: list[str] = Field(
        description="Model inputs whose stored row is newer than the transaction (t - 1 µs): never used, treated as "
        "missing. A back-dated transaction meets this: Redis holds only the newest row.",
    )
    cached: bool
    degraded: str | None = Field(
        None, description="Set when no stored feature had a value (online store empty, or customer and merchant "
        "unknown): why. The score then rests on the request fields alone; still a 200, counted in "
        "mlplatform_degraded_predictions_total.",
    )
    decision: Literal["approve", "review", "decline"] | None = Field(
        None, description="What to do with the transaction under the answering version's decision thresholds, "
        "chosen at training time on its evaluation set (decline: score >= the threshold reaching the target "
        "precision; review: score >= the review budget's threshold; else approve). Null for a version registered "
        "without thresholds.")
    reasons: list[ReasonCode] | None = Field(
        None, description="review/decline only: the (at most 3) inputs that pushed the score up most, largest first "
        "(the answering model's path contributions, XGBoost's approx_contribs; ?explain=true gives exact SHAP).")
    contributions: dict[str, float] | None = Field(None, description="?explain=true: per-feature log-odds (and bias).")
    contributions_error: str | None = Field(
        None, description="?explain=true only: why contributions could not be computed for this input (the score "
        "is unaffected)."
    )


class PredictResponse(PredictionOut):
    """POST /v1/predict answer."""

    latency_ms: float


class ActivityFreshness(BaseModel):
    """Where the transaction's customer_activity features came from and how old their newest data was."""

    source: Literal["event_log", "stored_rows"] = Field(
        description="event_log: the customer's event log, exact at the transaction's time; stored_rows: Feast's "
        "materialized row.")
    age_seconds: float | None = Field(
        description="The transaction's time minus the time its source is known complete up to (0: up to date); "
        "null when unknown.")


class FeaturesResponse(BaseModel):
    """POST /v1/features answer: the model-ready features /v1/predict would use for this transaction."""

    request_id: str
    transaction_id: str | None = None
    model: ModelRef = Field(description="The model these are the inputs of (the one /v1/predict would ask first).")
    feature_service: str
    features: dict[str, float | None] = Field(
        description="Every model input in the model's order, as the model gets it (null: no value).")
    stored: list[str] = Field(description="Inputs read from the online store (Redis).")
    on_demand: list[str] = Field(description="Inputs computed on demand from the request and stored values.")
    missing: list[str] = Field(description="Inputs with no value (e.g. an unknown customer).")
    stale: list[str] = Field(description="Inputs whose stored row was older than its view's TTL (no value).")
    future: list[str] = Field(description="Inputs whose stored row is newer than the transaction (withheld).")
    customer_activity: ActivityFreshness | None = Field(
        None, description="Freshness of the velocity features (null when the model reads none).")


class BatchRequest(BaseModel):
    """Many transactions in one call."""

    model_config = ConfigDict(extra="forbid")
    transactions: list[Transaction] = Field(min_length=1)


class BatchResponse(BaseModel):
    """POST /v1/predict/batch answer, predictions in request order."""

    request_id: str
    predictions: list[PredictionOut]
    latency_ms: float


class TransactionEventIn(TransactionCore):
    """A transaction that happened, for the customers' event logs (not scored)."""

    transaction_id: str = Field(
        min_length=1, max_length=128, description="The transaction's id: its identity in the event log (an event "
        "sent again with the same id and values changes nothing).",
    )

    def event(self, time_us: int) -> TransactionEvent:
        """The stream's event of this transaction at ``time_us``."""
        return TransactionEvent(self.transaction_id, self.customer_id, self.merchant_id, float(self.amount), time_us)


class EventsRequest(BaseModel):
    """Transaction events to append to the events stream, all or none."""

    model_config = ConfigDict(extra="forbid")
    events: list[TransactionEventIn] = Field(
        min_length=1, max_length=MAX_EVENTS_PER_CALL,
        description=f"At most {MAX_EVENTS_PER_CALL}; one event out of bounds refuses the whole call (422).",
    )


class EventsResponse(BaseModel):
    """POST /v1/events answer: every event was appended, in order."""

    accepted: int
    stream: str
    ids: list[str] = Field(description="The stream entry ids, in the order of the events.")


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
