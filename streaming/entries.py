"""Stream entries as events: parsing with the reason a malformed entry is refused, and the dead-letter stream.

The contract (``mlplatform.contracts.activity_log.TransactionEvent``) reads the fields; on top of it an event must
be usable by the aggregation: ids within int64, a finite amount, a time whose microseconds a double holds exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from mlplatform.contracts.activity_log import TransactionEvent

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TS_US = 2**53  # event-log scores are doubles: exact up to here (the year 2255)
DEAD_SUFFIX = ":dead"
DEAD_MAXLEN = 100_000  # dead letters kept (approximately): the newest ones


def dead_letter_stream(stream: str) -> str:
    """The stream malformed entries of ``stream`` are copied to, with their reason."""
    return stream + DEAD_SUFFIX


def parse_entry(fields: Mapping[Any, Any] | None) -> TransactionEvent:
    """The event of a stream entry; ValueError saying what is wrong if it is malformed."""
    if not fields:
        raise ValueError("the entry has no fields (deleted from the stream)")
    try:
        event = TransactionEvent.from_fields(fields)
    except KeyError as exc:
        raise ValueError(f"field {exc.args[0]!r} is missing") from None
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"a field is not of its type ({exc})") from None
    for name in ("customer_id", "merchant_id"):
        if not INT64_MIN <= getattr(event, name) <= INT64_MAX:
            raise ValueError(f"{name} does not fit int64")
    if not math.isfinite(event.amount):
        raise ValueError(f"amount is not finite ({event.amount!r})")
    if not 0 <= event.ts_us <= MAX_TS_US:
        raise ValueError(f"ts_us {event.ts_us} is outside 0..2^53 µs")
    return event


def dead_letter_fields(entry_id: Any, reason: str, fields: Mapping[Any, Any] | None, consumer: str) -> dict[str, str]:
    """The dead-letter entry of a malformed entry: its id, why, who refused it, and its fields as JSON."""
    def text(v: Any) -> str:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    return {"source_id": text(entry_id), "reason": reason, "consumer": consumer,
            "fields": json.dumps({text(k): text(v) for k, v in (fields or {}).items()})}
