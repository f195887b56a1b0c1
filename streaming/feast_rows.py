"""After a batch is applied to the event logs: Feast's ``customer_activity`` row of each customer it touched, as of
the customer's newest event, written unless Redis holds a newer one (``mlplatform.features.activity_rows``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from mlplatform.errors import MLPlatformError
from mlplatform.features.activity_rows import (
    SCRIPTS,
    encode_rows,
    queue_row_reads,
    queue_writes,
    rows_from_replies,
)

log = logging.getLogger(__name__)


class FeastRowError(MLPlatformError):
    """Redis refused a script call (not one key's type): the batch is not acknowledged."""


@dataclass(frozen=True)
class RowWrites:
    """What one batch did to Feast's rows."""

    written: int = 0  # rows written (the stored one was older, the same instant, or absent)
    kept_newer: int = 0  # rows not written: Redis held a newer one (a materialized window exit, another writer)
    uncovered: int = 0  # customers left alone: the logs are not complete over their row's 7-day window
    failed: int = 0  # rows Redis refused (a key of another type): logged, the stream goes on


def refresh_feast_rows(client: Any, project: str, customers: Sequence[int]) -> RowWrites:
    """Read the rows of ``customers`` in one pipeline, then write them in another, each key's check and write one
    atomic step."""
    if not customers:
        return RowWrites()
    rows, uncovered = rows_from_replies(_run(client, lambda pipe: queue_row_reads(pipe, project, customers)),
                                        customers)
    feast_rows = encode_rows(project, rows)
    if not feast_rows:
        return RowWrites(uncovered=uncovered)
    replies = [r for chunk in _run(client, lambda pipe: queue_writes(pipe, feast_rows)) for r in chunk]
    written, kept, failed = replies.count(1), replies.count(0), replies.count(-1)
    if failed:
        log.warning("Redis refused %d of %d customer_activity rows (their keys hold another type); the event logs "
                    "are up to date", failed, len(feast_rows))
    return RowWrites(written, kept, uncovered, failed)


def _run(client: Any, queue: Callable[[Any], Any]) -> list[Any]:
    """One pipeline of script calls by SHA; when Redis lacks the scripts (first use, a restart), load them and run
    it once more (reads change nothing, and each write is an idempotent check-and-set)."""
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        queue(pipe)
        replies = pipe.execute(raise_on_error=False)
        if attempt or not any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            break
        for script in SCRIPTS:
            client.script_load(script)
    errors = [r for r in replies if isinstance(r, Exception)]
    if errors:
        raise FeastRowError(f"Redis refused the customer_activity rows' scripts ({errors[0]}); nothing of this batch "
                            "was acknowledged: it is applied again on restart")
    return replies
