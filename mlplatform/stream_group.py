"""Consumer-group mechanics of the transaction event stream, shared by every group that reads it: ``stream run``
(group ``mlplatform-activity``, applies events to the customers' event logs) and ``stream score`` (group
``mlplatform-scorer``, scores them).

``GroupConsumer`` is the loop: first this consumer's own pending entries (delivered to it before, never
acknowledged: it was killed), then entries idle for ``claim_idle_ms`` with any consumer of the group (a dead one),
at start and every ``claim_every_s``, then new entries (``XREADGROUP >``, at most ``batch_size`` at a time) until
stopped, ``max_events`` handled or idle for ``idle_exit_s``. Each batch goes to ``process``, which must acknowledge
it (``XACK``) only once its work is durable: delivery is at least once. Every ``trim_every_s`` the entries every
group of the stream has acknowledged are trimmed off it.

Entries are parsed with ``parse_entry`` (the contract's ``TransactionEvent`` plus the bounds the aggregation needs);
a malformed one is never retried: ``dead_letter_fields`` is what a group copies to its dead-letter stream.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass
from typing import Any

import redis

from mlplatform.contracts.activity_log import TransactionEvent

log = logging.getLogger(__name__)
Entry = tuple[Any, Any]  # (entry id, fields) as redis-py returns them

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TS_US = 2**53  # event-log scores are doubles: exact up to here (the year 2255)
DEAD_SUFFIX = ":dead"
DEAD_MAXLEN = 100_000  # dead letters kept (approximately): the newest ones


# --- entries ----------------------------------------------------------------------------------------------------
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
    return {"source_id": text(entry_id), "reason": reason, "consumer": consumer,
            "fields": json.dumps({text(k): text(v) for k, v in (fields or {}).items()})}


def text(value: Any) -> str:
    """A Redis reply value (bytes or not) as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- the group --------------------------------------------------------------------------------------------------
def ensure_group(client: Any, stream: str, group: str) -> bool:
    """Create the consumer group (and the stream) if absent, reading from the stream's start; True if created."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
        return True
    except redis.ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise


def group_info(client: Any, stream: str, group: str) -> dict[str, Any] | None:
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
        edges.append(id_key(edge))
    if edges:
        ms, seq, edge = min(edges, key=lambda k: k[:2])
        if (ms, seq) != (0, 0):
            client.xtrim(stream, minid=edge, approximate=True)


def id_key(entry_id: Any) -> tuple[int, int, Any]:
    """(milliseconds, sequence, the id itself) of a stream entry id: ordered as the stream orders them."""
    text_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text_id.partition("-")
    return int(ms), int(seq or 0), entry_id


@dataclass(frozen=True)
class GroupOptions:
    """What the loop needs of a consumer's options: the stream and this member's name (positional), then how it
    reads, claims, trims and stops (keyword-only). Each group's options extend it with their own group name
    (``group``, keyword-only) and fields."""

    stream: str
    consumer: str
    _: KW_ONLY
    group: str = ""
    batch_size: int = 500
    block_ms: int = 5
    claim_idle_ms: int = 30_000
    claim_every_s: float = 30.0
    max_events: int | None = None
    idle_exit_s: float | None = None
    trim: bool = True
    trim_every_s: float = 10.0
    report_every_s: float = 5.0


class GroupConsumer:
    """One consumer of a group: recover, then read new entries until stopped, a bound is reached or idle.

    Subclasses implement ``process`` (handle a batch and acknowledge it) and may override ``tick`` (periodic work
    between reads) and ``report`` (a progress figure every ``report_every_s``, when ``reporting``)."""

    reporting = False

    def __init__(self, client: Any, options: GroupOptions, stop: threading.Event | None = None) -> None:
        self.client = client
        self.o = options
        self.stop = stop or threading.Event()
        self.handled = 0  # entries processed and acknowledged
        self.recovered = 0  # of those, re-read from this consumer's pending or claimed from dead consumers
        self.stopped_by = ""

    # -- what a group does with a batch ---------------------------------------------------------------------------
    def process(self, entries: Sequence[Entry]) -> None:
        """Handle a batch and acknowledge every entry of it (XACK) once its work is durable."""
        raise NotImplementedError

    def tick(self, now: float) -> None:
        """Periodic work between reads (``now``: ``time.monotonic()``); nothing by default."""

    def report(self, per_second: float) -> None:
        """A progress figure: entries per second since the last one."""

    # -- the loop ---------------------------------------------------------------------------------------------------
    def loop(self) -> str:
        """Consume until stopped (``stop`` set), ``max_events`` entries were handled, or idle ``idle_exit_s``;
        returns why it stopped (signal, max-events, idle)."""
        o = self.o
        ensure_group(self.client, o.stream, o.group)
        self._recover_own()
        self._claim_dead()
        now = time.monotonic()
        last_entry = next_claim = now
        next_claim += o.claim_every_s
        next_trim = now if o.trim else float("inf")
        next_report, reported = now + o.report_every_s, (now, 0)
        while not self.stopped_by:
            if self.stop.is_set():
                self.stopped_by = "signal"
                break
            count = self._room()
            if count <= 0:
                self.stopped_by = "max-events"
                break
            entries = self._read(">", count, block=True)
            now = time.monotonic()
            if entries:
                self._handle(entries)
                last_entry = now
            elif o.idle_exit_s is not None and now - last_entry >= o.idle_exit_s:
                self.stopped_by = "idle"
            if now >= next_claim:
                self._claim_dead()
                next_claim = now + o.claim_every_s
            if now >= next_trim:
                trim_acknowledged(self.client, o.stream)
                next_trim = now + o.trim_every_s
            self.tick(now)
            if self.reporting and now >= next_report:
                self.report((self.handled - reported[1]) / max(now - reported[0], 1e-9))
                next_report, reported = now + o.report_every_s, (now, self.handled)
        if o.trim:
            trim_acknowledged(self.client, o.stream)
        return self.stopped_by

    def _handle(self, entries: Sequence[Entry]) -> None:
        self.process(entries)
        self.handled += len(entries)

    def _room(self) -> int:
        if self.o.max_events is None:
            return self.o.batch_size
        return min(self.o.batch_size, self.o.max_events - self.handled)

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
        """Handle this consumer's own pending entries (delivered to it before, never acknowledged)."""
        after = "0"
        while not self.stop.is_set() and self._room() > 0:
            entries = self._read(after, self._room())
            if not entries:
                return
            self._handle(entries)
            self.recovered += len(entries)
            after = entries[-1][0]

    def _claim_dead(self) -> None:
        """Claim and handle entries pending for longer than ``claim_idle_ms`` with any consumer (a dead one)."""
        o = self.o
        start: Any = "0-0"
        while not self.stop.is_set() and self._room() > 0:
            reply = self.client.xautoclaim(o.stream, o.group, o.consumer, min_idle_time=o.claim_idle_ms,
                                           start_id=start, count=self._room())
            start, entries = reply[0], [e for e in reply[1] if e[0] is not None]
            if entries:
                log.info("claimed %d entries idle for more than %d ms", len(entries), o.claim_idle_ms)
                self._handle(entries)
                self.recovered += len(entries)
            if id_key(start)[:2] == (0, 0):
                return


def every(seconds: float, fn: Callable[[], None]) -> Callable[[float], None]:
    """A ``tick`` helper: calls ``fn`` when ``seconds`` have passed since its last call (first: after ``seconds``)."""
    due = [time.monotonic() + seconds]

    def maybe(now: float) -> None:
        if now >= due[0]:
            due[0] = now + seconds
            fn()

    return maybe


# --- running a group consumer from a command -----------------------------------------------------------------------
def group_client(settings: Any, block_ms: int = 0) -> Any:
    """A bounded client (``redis_timeout_seconds``) for a group consumer; a blocking read may wait ``block_ms``
    longer for entries. On a Redis Cluster (``settings.uses_redis_cluster``) a ``RedisCluster`` client: a stream is
    one key, so its reads, acknowledgements and group commands go to the one master owning its slot."""
    from mlplatform.settings import RedisAddress
    from mlplatform.stores import bounded_redis, bounded_redis_cluster

    addr = RedisAddress.parse(settings.redis_addr)
    timeout = settings.redis_timeout_seconds
    if settings.uses_redis_cluster:
        return bounded_redis_cluster(addr, timeout, socket_timeout=timeout + block_ms / 1000.0,
                                     socket_connect_timeout=timeout)
    return bounded_redis(addr.host, addr.port, timeout, socket_timeout=timeout + block_ms / 1000.0,
                         socket_connect_timeout=timeout, password=addr.password, db=addr.db)


def default_consumer_name() -> str:
    """``<host>-<pid>``: a consumer name no other running process has."""
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event the first SIGTERM or SIGINT sets (the consumer finishes the batch in hand, then stops); a second one
    stops at once (KeyboardInterrupt). The previous handlers come back on exit; off the main thread none are
    installed (the embedding caller stops the consumer through the event)."""
    import signal

    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:
            pass
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
