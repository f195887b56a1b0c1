"""The transaction event stream and the per-customer event log in Redis: who writes what, and how it reads back.

Writers: ``POST /v1/events`` and ``/v1/predict`` (with ``serving_record_events``) append transaction events to
a Redis Stream (``events_stream``, default ``mlplatform:transactions``); ``mlplatform stream run`` consumes it as a
consumer group and applies each event to its customer's event log; ``mlplatform materialize`` backfills the logs
from the raw transactions. Reader: the service, which aggregates a customer's log at the request's time.

A customer's event log is a sorted set ``log_key(project, customer_id)``: score = the event time in microseconds
since the epoch (exact in a double until the year 2255), member = ``transaction_id|merchant_id|amount``. Applying
an event is ``ZADD`` of that member: a redelivered event (same transaction id, same values) changes nothing, and
events may arrive in any order. A read at t needs the events of [t − 7 days, t) and the latest event before t
(when it is more than 7 + 30 days old, the offline row is past the view's TTL: missing), so ``RETENTION`` (37
days) of history before t is all it needs.

The hash ``COVERAGE_KEY`` holds, per project: since when the logs are complete (``<project>:from``, µs; the
backfill sets it and trims older events of the customers it loads), up to when the backfill loaded the raw
transactions (``<project>:backfilled``, µs) and the newest event time applied by either writer (``<project>:to``).
A request at t is served from the logs only when ``t − RETENTION ≥ from``: every event the offline store would
see is then in the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

DEFAULT_STREAM = "mlplatform:transactions"
CONSUMER_GROUP = "mlplatform-activity"
# writers cap the stream (XADD MAXLEN ~): with no consumer running it stays bounded; a consumer lagging by more
# than this many events loses the oldest (`mlplatform stream status` shows the lag; the backfill covers history)
STREAM_MAX_LEN = 1_000_000
COVERAGE_KEY = "mlplatform:activity-log"
LONGEST_WINDOW = timedelta(days=7)
ACTIVITY_TTL = timedelta(days=30)  # customer_activity's ttl in feature_repo/views.py
RETENTION = LONGEST_WINDOW + ACTIVITY_TTL
RETENTION_US = RETENTION // timedelta(microseconds=1)
EVENT_FIELDS = ("transaction_id", "customer_id", "merchant_id", "amount", "ts_us")


@dataclass(frozen=True)
class TransactionEvent:
    """One transaction as the stream carries it."""

    transaction_id: str
    customer_id: int
    merchant_id: int
    amount: float
    ts_us: int  # event time, microseconds since the epoch (UTC)

    def to_fields(self) -> dict[str, str]:
        """The stream entry's fields (``XADD``)."""
        return {"transaction_id": self.transaction_id, "customer_id": str(self.customer_id),
                "merchant_id": str(self.merchant_id), "amount": repr(float(self.amount)), "ts_us": str(self.ts_us)}

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> TransactionEvent:
        """An event from a stream entry's fields (bytes or str); ValueError/KeyError if malformed."""
        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in fields.items()}
        return cls(str(f["transaction_id"]), int(f["customer_id"]), int(f["merchant_id"]), float(f["amount"]),
                   int(f["ts_us"]))

    def member(self) -> bytes:
        """Its member in the customer's event log: the same event always gives the same member."""
        return f"{self.transaction_id}|{self.merchant_id}|{float(self.amount)!r}".encode()


def log_key(project: str, customer_id: int) -> bytes:
    """The Redis key of a customer's event log."""
    return f"mlplatform:activity:{project}:{int(customer_id)}".encode()


def coverage_fields(project: str) -> tuple[str, str, str]:
    """The ``COVERAGE_KEY`` fields of a project: (complete from, backfilled up to, newest applied), µs."""
    return f"{project}:from", f"{project}:backfilled", f"{project}:to"


def decode_member(member: bytes) -> tuple[str, int, float]:
    """(transaction_id, merchant_id, amount) of an event-log member."""
    txn, merchant, amount = member.decode().rsplit("|", 2)
    return txn, int(merchant), float(amount)


def apply_events(pipe: Any, project: str, events: Iterable[TransactionEvent]) -> int:
    """Queue on a Redis pipeline the writes that apply ``events`` to their logs (idempotent, in any order), and
    raise the project's newest applied time. Returns how many events were queued. On a Redis Cluster pipeline each
    command goes to the master of its key's slot (one key each: no slot is ever crossed)."""
    newest = None
    n = 0
    for e in events:
        pipe.zadd(log_key(project, e.customer_id), {e.member(): e.ts_us})
        newest = e.ts_us if newest is None else max(newest, e.ts_us)
        n += 1
    if newest is not None:  # as a plain EVAL command: a Redis Cluster pipeline's ``eval`` is something else
        pipe.execute_command("EVAL", _RAISE_TO, 1, COVERAGE_KEY, coverage_fields(project)[2], newest)
    return n


# HSET field to ARGV[2] unless it already holds a larger number (two writers never lower it)
_RAISE_TO = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""
