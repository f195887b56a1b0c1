"""Backfill the customers' event logs in Redis from the raw transactions (part of ``mlplatform materialize``).

The stream (``mlplatform stream run``) applies new events as they happen; this loads the history they build on.
Each run loads the transactions from where the last one stopped (``<project>:backfilled``) up to ``end``, and at
least ``RETENTION`` + ``backdated`` before ``end`` (or before the newest transaction, if that is earlier); a
Redis that lost its logs (no coverage hash) is loaded again from there. The logs are then complete from that floor
(or from the beginning of time, when the raw data starts later): the customers with events below the floor lose
them (those with events between the previous floor and this one; every customer on a first or full run).
Applying is idempotent (``apply_events``), so the backfill and the stream never undo each other, in whichever
order they run. On a Redis Cluster every command names one key (a log, or the coverage hash), so redis-py's cluster
pipeline sends each batch to the masters as one pipeline per master.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from mlplatform.contracts.activity_log import (
    COVERAGE_KEY,
    RETENTION,
    TransactionEvent,
    apply_events,
    coverage_fields,
    log_key,
)

BATCH = 20_000  # events per pipeline
# the raw transactions with their event time in µs (whatever the Parquet's timestamp unit)
_TX = "(SELECT *, epoch_us(event_timestamp::TIMESTAMPTZ) AS ts_us FROM read_parquet($g))"
US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Backfill:
    """What a backfill loaded: events, customers, the interval, and since when the logs are complete."""

    events: int
    customers: int
    start: datetime
    end: datetime
    complete_from: datetime | None  # None: from the beginning of the data

    def describe(self) -> str:
        """One line for the console."""
        since = "the beginning of the data" if self.complete_from is None else f"{self.complete_from:%Y-%m-%d %H:%M}"
        return (f"event logs: {self.events:,} transactions of {self.customers:,} customers loaded "
                f"({self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M}); complete from {since}")


def _us(t: datetime) -> int:
    return (t.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // US


def _from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + us * US


def backfill_event_logs(client: Any, project: str, raw_dir: Path, end: datetime, backdated: timedelta,
                        full: bool = False) -> Backfill:
    """Load the raw transactions into the event logs up to ``end`` (see the module doc)."""
    glob = str(Path(raw_dir) / "transactions" / "*.parquet")
    from_field, backfilled_field, _ = coverage_fields(project)
    if not any((Path(raw_dir) / "transactions").glob("*.parquet")):  # no raw transactions here: nothing to load
        return Backfill(0, 0, end, end, None)
    con = duckdb.connect()
    try:
        first, last = con.execute(f"SELECT min(ts_us), max(ts_us) FROM {_TX}", {"g": glob}).fetchall()[0]
        # the floor follows the data: an end past the newest transaction adds nothing to load
        end_us = _us(end) if last is None else min(_us(end), last + 1)
        floor_us = end_us - (RETENTION + backdated) // US
        marks = client.hmget(COVERAGE_KEY, [from_field, backfilled_field])
        done = None if full or marks[0] is None or marks[1] is None else int(marks[1])
        start_us = floor_us if done is None else max(floor_us, min(done, end_us))
        complete_from = 0 if first is None or first >= floor_us else floor_us
        reader = con.sql(
            f"SELECT CAST(transaction_id AS VARCHAR), customer_id, merchant_id, amount, ts_us FROM {_TX} "
            "WHERE ts_us >= $s AND ts_us < $e",
            params={"g": glob, "s": start_us, "e": end_us},
        ).to_arrow_reader(BATCH)
        events = 0
        customers: set[int] = set()
        for batch in reader:
            cols = batch.to_pydict()
            chunk = [TransactionEvent(t, int(c), int(m), float(a), int(ts)) for t, c, m, a, ts in
                     zip(*(cols[k] for k in batch.schema.names), strict=True)]
            with client.pipeline(transaction=False) as pipe:
                events += apply_events(pipe, project, chunk)
                pipe.execute()
            customers |= {e.customer_id for e in chunk}
        if complete_from:  # trim the customers with events below the new floor: those since the previous floor
            since = int(marks[0]) if done is not None and int(marks[0]) > 0 else None
            old = con.execute(
                f"SELECT DISTINCT customer_id FROM {_TX} WHERE ts_us < $f"
                + ("" if since is None else " AND ts_us >= $p"),
                {"g": glob, "f": complete_from, **({} if since is None else {"p": since})},
            ).fetchall()
            with client.pipeline(transaction=False) as pipe:
                for (c,) in old:
                    pipe.zremrangebyscore(log_key(project, int(c)), "-inf", f"({complete_from}")
                pipe.execute()
        client.hset(COVERAGE_KEY, mapping={from_field: complete_from, backfilled_field: max(end_us, done or 0)})
    finally:
        con.close()
    return Backfill(events, len(customers), _from_us(start_us), _from_us(end_us),
                    _from_us(complete_from) if complete_from else None)
