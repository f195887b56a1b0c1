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
from dataclasses import dataclass
from typing import Any

import redis

from mlplatform.contracts.activity_log import CONSUMER_GROUP, apply_events
from mlplatform.errors import MLPlatformError
from mlplatform.features.activity_rows import touched_customers
from streaming.entries import DEAD_MAXLEN, dead_letter_fields, dead_letter_stream, parse_entry
from streaming.feast_rows import refresh_feast_rows
from streaming.stats import queue_counts

log = logging.getLogger(__name__)
Entry = tuple[Any, Any]  # (entry id, fields) as redis-py returns them


class StreamApplyError(MLPlatformError):
    """Redis refused a write that is not about one event (e.g. a key of the wrong type): nothing is acknowledged."""


@dataclass(frozen=True)
class ConsumerOptions:
    """What one consumer reads and how."""

    stream: str
    consumer: str
    project: str
    group: str = CONSUMER_GROUP
    batch_size: int = 500
    block_ms: int = 5
    claim_idle_ms: int = 30_000
    claim_every_s: float = 30.0
    max_events: int | None = None
    idle_exit_s: float | None = None
    trim: bool = True
    trim_every_s: float = 10.0
    report_every_s: float = 5.0
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


def ensure_group(client: Any, stream: str, group: str = CONSUMER_GROUP) -> bool:
    """Create the consumer group (and the stream) if absent, reading from the stream's start; True if created."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
        return True
    except redis.ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise


def group_info(client: Any, stream: str, group: str = CONSUMER_GROUP) -> dict[str, Any] | None:
    """The group's XINFO GROUPS entry (str keys), or None if the stream or the group does not exist."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    for g in groups:
        name = g.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return g
    return None


def trim_acknowledged(client: Any, stream: str) -> None:
    """Trim off the entries every group of the stream has acknowledged (approximately: whole nodes).

    Per group, the entries before its oldest pending one (or up to its last delivered one, if none is pending) are
    acknowledged: entries are delivered in id order."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return
    edges = []
    for g in groups:
        pending = client.xpending(stream, g["name"])
        edge = pending["min"] if pending["pending"] else g.get("last-delivered-id")
        if edge is None:
            return
        edges.append(_id_key(edge))
    if edges:
        ms, seq, edge = min(edges, key=lambda k: k[:2])
        if (ms, seq) != (0, 0):
            client.xtrim(stream, minid=edge, approximate=True)


def _id_key(entry_id: Any) -> tuple[int, int, Any]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0), entry_id


class StreamConsumer:
    """One consumer of the group: recover, then read new entries until stopped, a bound is reached or idle."""

    def __init__(self, client: Any, options: ConsumerOptions, stop: threading.Event | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        self.client = client
        self.o = options
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.totals = ConsumerTotals()

    # -- the loop ---------------------------------------------------------------------------------------------------
    def run(self) -> ConsumerTotals:
        """Consume until stopped (``stop`` set), ``max_events`` entries were handled, or idle ``idle_exit_s``."""
        o = self.o
        ensure_group(self.client, o.stream, o.group)
        self._recover_own()
        self._claim_dead()
        now = time.monotonic()
        last_entry = next_claim = now
        next_claim += o.claim_every_s
        next_trim = now if o.trim else float("inf")
        next_report, reported = now + o.report_every_s, (now, 0)
        while not self.totals.stopped_by:
            if self.stop.is_set():
                self.totals.stopped_by = "signal"
                break
            count = self._room()
            if count <= 0:
                self.totals.stopped_by = "max-events"
                break
            entries = self._read(">", count, block=True)
            now = time.monotonic()
            if entries:
                self._process(entries)
                last_entry = now
            elif o.idle_exit_s is not None and now - last_entry >= o.idle_exit_s:
                self.totals.stopped_by = "idle"
            if now >= next_claim:
                self._claim_dead()
                next_claim = now + o.claim_every_s
            if now >= next_trim:
                trim_acknowledged(self.client, o.stream)
                next_trim = now + o.trim_every_s
            if self.on_progress is not None and now >= next_report:
                done = self.totals.applied + self.totals.dead
                self._report((done - reported[1]) / max(now - reported[0], 1e-9))
                next_report, reported = now + o.report_every_s, (now, done)
        if o.trim:
            trim_acknowledged(self.client, o.stream)
        return self.totals

    def _room(self) -> int:
        if self.o.max_events is None:
            return self.o.batch_size
        return min(self.o.batch_size, self.o.max_events - self.totals.applied - self.totals.dead)

    def _read(self, from_id: str, count: int, block: bool = False) -> list[Entry]:
        """Entries after ``from_id`` ('>' = never delivered; an id = this consumer's pending after it)."""
        o = self.o
        try:
            reply = self.client.xreadgroup(o.group, o.consumer, {o.stream: from_id}, count=count,
                                           block=o.block_ms if block else None)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("stream %s or its group %s was deleted; created again", o.stream, o.group)
            ensure_group(self.client, o.stream, o.group)
            return []
        return list(reply[0][1]) if reply else []

    def _recover_own(self) -> None:
        """Apply this consumer's own pending entries (delivered to it before, never acknowledged)."""
        after = "0"
        while not self.stop.is_set() and self._room() > 0:
            entries = self._read(after, self._room())
            if not entries:
                return
            self._process(entries)
            self.totals.recovered += len(entries)
            after = entries[-1][0]

    def _claim_dead(self) -> None:
        """Claim and apply entries pending for longer than ``claim_idle_ms`` with any consumer (a dead one)."""
        o = self.o
        start: Any = "0-0"
        while not self.stop.is_set() and self._room() > 0:
            reply = self.client.xautoclaim(o.stream, o.group, o.consumer, min_idle_time=o.claim_idle_ms,
                                           start_id=start, count=self._room())
            start, entries = reply[0], [e for e in reply[1] if e[0] is not None]
            if entries:
                log.info("claimed %d entries idle for more than %d ms", len(entries), o.claim_idle_ms)
                self._process(entries)
                self.totals.recovered += len(entries)
            if _id_key(start)[:2] == (0, 0):
                return

    # -- one batch --------------------------------------------------------------------------------------------------
    def _process(self, entries: Sequence[Entry]) -> None:
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
            log.warning("entry %s of %s is malformed: %s (dead-lettered)", _text(entry_id), o.stream, reason)
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

    def _report(self, per_second: float) -> None:
        info = group_info(self.client, self.o.stream, self.o.group) or {}
        self.on_progress(Progress(self.totals, per_second, info.get("lag"), info.get("pending")))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
