"""``stream status``: the stream, its consumer group and its consumers, as Redis reports them right now."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlplatform.contracts.activity_log import CONSUMER_GROUP, COVERAGE_KEY, coverage_fields
from mlplatform.stream_group import group_info
from streaming.entries import dead_letter_stream
from streaming.stats import STATS_KEY, THROUGHPUT_WINDOW_S, applied_recently, stats_field


@dataclass(frozen=True)
class ConsumerState:
    """One consumer of the group (XINFO CONSUMERS) and what it applied so far (the consumers' counters)."""

    name: str
    pending: int
    idle_ms: int
    applied: int


@dataclass(frozen=True)
class StreamStatus:
    """The stream's length, the group's progress (XINFO GROUPS, XPENDING), dead letters and recent throughput."""

    stream: str
    group: str
    length: int
    group_exists: bool
    entries_read: int | None
    lag: int | None  # entries not yet delivered to the group (None: Redis cannot tell, e.g. after XDEL)
    last_delivered_id: str | None
    pending: int  # delivered, not yet acknowledged
    oldest_pending_id: str | None
    dead_letters: int
    applied_total: int
    applied_last_minute: int
    newest_applied: datetime | None  # the newest event time the stream (or the backfill) applied
    complete_from: datetime | None  # the logs hold every event since (set by the backfill)
    backfilled_to: datetime | None  # the backfill loaded the raw transactions up to
    consumers: list[ConsumerState] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the time as ISO-8601)."""
        out = asdict(self)
        for name in ("newest_applied", "complete_from", "backfilled_to"):
            value = getattr(self, name)
            out[name] = value.isoformat() if value else None
        return out


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def _time(us: Any) -> datetime | None:
    return None if us is None else datetime.fromtimestamp(int(us) / 1e6, UTC)


def read_status(client: Any, stream: str, project: str, now_s: int, group: str = CONSUMER_GROUP) -> StreamStatus:
    """What Redis says about ``stream`` and ``group`` now (a stream or group that does not exist reads as empty)."""
    length = int(client.xlen(stream))
    info = group_info(client, stream, group)
    pending = client.xpending(stream, group) if info is not None else {"pending": 0, "min": None}
    counters = client.hgetall(STATS_KEY)
    applied_by = {}
    prefix = stats_field(stream, "applied") + "|"
    for key, value in counters.items():
        k = _text(key)
        if k.startswith(prefix):
            applied_by[k[len(prefix):]] = int(value)
    consumers = []
    if info is not None:
        for c in client.xinfo_consumers(stream, group):
            name = _text(c["name"])
            consumers.append(ConsumerState(name, int(c["pending"]), int(c["idle"]), applied_by.get(name, 0)))
    marks = client.hmget(COVERAGE_KEY, list(coverage_fields(project)))  # (complete from, backfilled to, newest)
    return StreamStatus(
        stream=stream, group=group, length=length, group_exists=info is not None,
        entries_read=None if info is None or info.get("entries-read") is None else int(info["entries-read"]),
        lag=None if info is None or info.get("lag") is None else int(info["lag"]),
        last_delivered_id=None if info is None else _text(info.get("last-delivered-id")),
        pending=int(pending["pending"]), oldest_pending_id=_text(pending["min"]),
        dead_letters=int(client.xlen(dead_letter_stream(stream))),
        applied_total=int(counters.get(stats_field(stream, "applied").encode(), 0)),
        applied_last_minute=applied_recently(client, stream, now_s, THROUGHPUT_WINDOW_S),
        newest_applied=_time(marks[2]), complete_from=_time(marks[0]), backfilled_to=_time(marks[1]),
        consumers=consumers,
    )
