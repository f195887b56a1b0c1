"""The consumer of the transaction event stream: read as a consumer group, apply to the event logs, acknowledge.

Delivery is at least once: a batch is applied (``apply_events``, one pipeline) before it is acknowledged (XACK), so
a consumer killed in between leaves its entries pending, and they are applied again by its restart (which first
re-reads its own pending entries) or by another consumer (which claims entries idle for ``claim_idle_ms`` from
dead consumers, at start and every ``claim_every_s``). Applying an event twice changes nothing (its ZADD member is
the same), so the logs end up exactly as if each event were applied once.

After applying a batch, and before acknowledging it, the consumer writes Feast's ``customer_activity`` online row of
each customer the batch touched, as of the customer's newest event, unless Redis holds a newer row
(``streaming.feast_rows``): ``get_online_features`` then agrees with what the service computes from the logs at
that event. A redelivered batch writes the same rows again.

A malformed entry is never retried: it is copied to the dead-letter stream ``<stream>:dead`` with its reason and
acknowledged with its batch. Every ``trim_every_s`` the entries every group has acknowledged are trimmed off the
stream (``XTRIM MINID``), so the stream holds only what is in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from mlplatform.contracts.activity_log import CONSUMER_GROUP, apply_events
from mlplatform.errors import MLPlatformError
from mlplatform.features.activity_rows import touched_customers
from mlplatform.stream_group import (
    DEAD_MAXLEN,
    Entry,
    GroupConsumer,
    GroupOptions,
    dead_letter_fields,
    dead_letter_stream,
    group_info,
    parse_entry,
    text,
)
from streaming.feast_rows import refresh_feast_rows
from streaming.stats import queue_counts

log = logging.getLogger(__name__)


class StreamApplyError(MLPlatformError):
    """Redis refused a write that is not about one event (e.g. a key of the wrong type): nothing is acknowledged."""


@dataclass(frozen=True)
class ConsumerOptions(GroupOptions):
    """What one consumer reads and how (``GroupOptions``), for which Feast project."""

    project: str
    _: KW_ONLY
    group: str = CONSUMER_GROUP
    feast_rows: bool = True  # write Feast's customer_activity row of each customer a batch touched


@dataclass
class ConsumerTotals:
    """What a run did."""

    applied: int = 0  # events applied to the logs (and acknowledged)
    dead: int = 0  # malformed entries copied to the dead-letter stream (and acknowledged)
    recovered: int = 0  # of those, entries re-read from this consumer's pending or claimed from dead consumers
    batches: int = 0
    stopped_by: str = ""
    feast_rows: int = 0  # Feast customer_activity rows written (as of each touched customer's newest event)
    feast_kept_newer: int = 0  # rows not written: Redis held a newer one
    feast_uncovered: int = 0  # rows not written: the logs do not cover the row's window (no backfill yet)


@dataclass(frozen=True)
class Progress:
    """A periodic progress figure: totals so far, the rate since the last report, the group's lag and pending."""

    totals: ConsumerTotals
    per_second: float
    lag: int | None
    pending: int | None


class StreamConsumer(GroupConsumer):
    """One consumer of the group: recover, then read new entries until stopped, a bound is reached or idle (the
    loop is ``mlplatform.stream_group.GroupConsumer``'s)."""

    def __init__(self, client: Any, options: ConsumerOptions, stop: threading.Event | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        super().__init__(client, options, stop)
        self.o: ConsumerOptions = options
        self.on_progress = on_progress
        self.reporting = on_progress is not None
        self.totals = ConsumerTotals()

    def run(self) -> ConsumerTotals:
        """Consume until stopped (``stop`` set), ``max_events`` entries were handled, or idle ``idle_exit_s``."""
        self.totals.stopped_by = self.loop()
        self.totals.recovered = self.recovered
        return self.totals

    # -- one batch --------------------------------------------------------------------------------------------------
    def process(self, entries: Sequence[Entry]) -> None:
        """Apply a batch's events in one pipeline, then dead-letter the malformed ones and acknowledge them all."""
        o = self.o
        events, event_ids, bad = [], [], []
        refused: list[int] = []
        for entry_id, fields in entries:
            try:
                events.append(parse_entry(fields))
                event_ids.append(entry_id)
            except ValueError as exc:
                bad.append((entry_id, str(exc), fields))
        n_malformed = len(bad)
        if events:
            pipe = self.client.pipeline(transaction=False)
            n = apply_events(pipe, o.project, events)
            results = pipe.execute(raise_on_error=False)
            refused = [i for i, r in enumerate(results[:n]) if isinstance(r, Exception)]
            if not refused:
                others = [r for r in results[n:] if isinstance(r, Exception)]
                if others:
                    raise StreamApplyError(f"Redis refused to update the event logs ({others[0]}); nothing of this "
                                           "batch was acknowledged: fix the key and run again")
            fields_of = dict(entries)
            for i in refused:
                bad.append((event_ids[i], f"Redis refused it: {results[i]}", fields_of.get(event_ids[i])))
        applied = len(events) - (len(bad) - n_malformed)
        if applied and o.feast_rows:
            skip = set(refused)
            self._refresh_rows(touched_customers(e for i, e in enumerate(events) if i not in skip))
        pipe = self.client.pipeline(transaction=False)
        for entry_id, reason, fields in bad:
            log.warning("entry %s of %s is malformed: %s (dead-lettered)", text(entry_id), o.stream, reason)
            pipe.xadd(dead_letter_stream(o.stream), dead_letter_fields(entry_id, reason, fields, o.consumer),
                      maxlen=DEAD_MAXLEN, approximate=True)
        queue_counts(pipe, o.stream, o.consumer, applied, len(bad), int(time.time()))
        pipe.xack(o.stream, o.group, *[e[0] for e in entries])
        pipe.execute()
        self.totals.applied += applied
        self.totals.dead += len(bad)
        self.totals.batches += 1

    def _refresh_rows(self, customers: list[int]) -> None:
        """Feast's rows of the customers the batch touched (before the batch is acknowledged: a crash re-does it)."""
        done = refresh_feast_rows(self.client, self.o.project, customers)
        self.totals.feast_rows += done.written
        self.totals.feast_kept_newer += done.kept_newer
        self.totals.feast_uncovered += done.uncovered

    def report(self, per_second: float) -> None:
        """Hand a progress figure, with the group's lag and pending, to ``on_progress``."""
        info = group_info(self.client, self.o.stream, self.o.group) or {}
        self.totals.recovered = self.recovered
        self.on_progress(Progress(self.totals, per_second, info.get("lag"), info.get("pending")))
