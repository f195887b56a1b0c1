"""The service's side of the transaction event stream (mlplatform.contracts.activity_log): appending events all or
none (POST /v1/events), recording scored transactions off the request path, and reading the consumer group's lag
and pending entries for /metrics.

Recording never slows or fails a request: ``record`` puts events in a bounded in-memory queue (full: they are
dropped and counted), and a background task appends them in pipelined batches every few milliseconds. A failed
append is counted and logged (redacted), never raised; on shutdown the queue is drained, bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from mlplatform.contracts.activity_log import CONSUMER_GROUP, STREAM_MAX_LEN, TransactionEvent
from mlplatform.redact import redact
from serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

RECORD_QUEUE = 10_000  # events waiting to be appended; past it new ones are dropped (counted)
RECORD_BATCH = 500  # events per pipelined append
RECORD_FLUSH_S = 0.005  # how long the first event of a batch waits for others
GAUGE_REFRESH_S = 1.0  # how often the group's lag and pending are read for /metrics
_LOG_EVERY_S = 10.0  # at most one failure log line per this many seconds


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def append_events(client: Any, stream: str, events: Sequence[TransactionEvent]) -> list[str]:
    """XADD every event to ``stream`` in one MULTI/EXEC: all are appended or none. Returns their entry ids. On a
    Redis Cluster too: the stream is one key, so the transaction runs on the one master owning its slot."""
    async with client.pipeline(transaction=True) as pipe:
        for e in events:
            pipe.xadd(stream, e.to_fields(), maxlen=STREAM_MAX_LEN, approximate=True)
        ids = await pipe.execute()
    return [_text(i) for i in ids]


class EventRecorder:
    """Appends scored transactions to the events stream from a background task (``start`` in the event loop)."""

    def __init__(self, client: Any, stream: str, metrics: ServingMetrics, max_queue: int = RECORD_QUEUE,
                 batch: int = RECORD_BATCH, flush_s: float = RECORD_FLUSH_S) -> None:
        self.client = client
        self.stream = stream
        self.metrics = metrics
        self.max_queue = max_queue
        self.batch = batch
        self.flush_s = flush_s
        self._queue: deque[TransactionEvent] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._logged_at = float("-inf")

    @property
    def backlog(self) -> int:
        """Events waiting to be appended."""
        return len(self._queue)

    def record(self, events: Sequence[TransactionEvent]) -> None:
        """Queue events for appending (never blocks: those that do not fit are dropped and counted)."""
        room = max(0, self.max_queue - len(self._queue)) if not self._closing else 0
        self._queue.extend(events[:room])
        if len(events) > room:
            self.metrics.events_record_dropped.labels("queue_full" if not self._closing else "shutdown").inc(
                len(events) - room)
        if room and events:
            self._wake.set()

    def start(self) -> None:
        """Start the background task (in the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-recorder")

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                if not self._closing:
                    await asyncio.sleep(self.flush_s)  # let a few milliseconds of events join this batch
                continue
            await self._flush_once()

    async def _flush_once(self) -> None:
        events = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for e in events:
                    pipe.xadd(self.stream, e.to_fields(), maxlen=STREAM_MAX_LEN, approximate=True)
                await pipe.execute()
        except asyncio.CancelledError:
            self.metrics.events_record_dropped.labels("shutdown").inc(len(events))
            raise
        except Exception as exc:  # never into a request: counted and logged
            self.metrics.events_record_dropped.labels("redis_error").inc(len(events))
            now = time.monotonic()
            if now - self._logged_at >= _LOG_EVERY_S:
                self._logged_at = now
                log.warning("could not append %d scored transactions to the events stream (%s: %s); dropped, "
                            "counted in mlplatform_events_record_dropped_total", len(events), type(exc).__name__,
                            redact(str(exc)))
            return
        self.metrics.events_recorded.inc(len(events))

    async def close(self, timeout: float) -> None:
        """Append what is queued (for at most ``timeout`` seconds), then stop; what is left is counted as dropped."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._queue:
            self.metrics.events_record_dropped.labels("shutdown").inc(len(self._queue))
            self._queue.clear()


class StreamGauges:
    """The consumer group's lag and pending entries, read every ``every_s`` in the background (never during a
    scrape: a slow Redis must not hold /metrics); None (the gauge unset) while they cannot be read."""

    def __init__(self, client: Any, stream: str, group: str = CONSUMER_GROUP, every_s: float = GAUGE_REFRESH_S) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.every_s = every_s
        self.lag: int | None = None
        self.pending: int | None = None
        self._task: asyncio.Task | None = None

    def values(self) -> tuple[int | None, int | None]:
        """(lag, pending) as last read."""
        return self.lag, self.pending

    async def refresh(self) -> None:
        """Read XINFO GROUPS once (bounded by the client's timeout); unset both on any failure."""
        lag = pending = None
        try:
            for g in await self.client.xinfo_groups(self.stream):
                if _text(g.get("name")) == self.group:
                    lag = None if g.get("lag") is None else int(g["lag"])
                    pending = int(g["pending"])
        except Exception:  # Redis down, no such stream: the gauges stay unset until it answers
            pass
        self.lag, self.pending = lag, pending

    def start(self) -> None:
        """Start the background refresh (in the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stream-gauges")

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.every_s)

    async def close(self) -> None:
        """Stop the background refresh."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
