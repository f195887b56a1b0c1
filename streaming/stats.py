"""The consumers' counters in Redis, for ``stream status``: totals in one hash, and per-second counts of applied
events (keys that expire) from which the last minute's throughput is summed. Redeliveries count again."""

from __future__ import annotations

from typing import Any

STATS_KEY = "mlplatform:stream-stats"
RATE_PREFIX = "mlplatform:stream-rate"
RATE_TTL_S = 180
THROUGHPUT_WINDOW_S = 60


def rate_key(stream: str, epoch_s: int) -> str:
    """The counter of events of ``stream`` applied during one second."""
    return f"{RATE_PREFIX}:{stream}:{int(epoch_s)}"


def stats_field(stream: str, what: str, consumer: str | None = None) -> str:
    """A field of ``STATS_KEY``: ``<stream>|<what>`` or ``<stream>|<what>|<consumer>``."""
    return f"{stream}|{what}" + (f"|{consumer}" if consumer else "")


def queue_counts(pipe: Any, stream: str, consumer: str, applied: int, dead: int, epoch_s: int) -> None:
    """Queue the counter updates of one batch on a pipeline."""
    if applied:
        pipe.hincrby(STATS_KEY, stats_field(stream, "applied"), applied)
        pipe.hincrby(STATS_KEY, stats_field(stream, "applied", consumer), applied)
        key = rate_key(stream, epoch_s)
        pipe.incrby(key, applied)
        pipe.expire(key, RATE_TTL_S)
    if dead:
        pipe.hincrby(STATS_KEY, stats_field(stream, "dead"), dead)


def applied_recently(client: Any, stream: str, now_s: int, seconds: int = THROUGHPUT_WINDOW_S) -> int:
    """Events applied during the ``seconds`` whole seconds before ``now_s`` (and in it): one pipeline of GETs (the
    per-second keys hash to different slots of a Redis Cluster, where one MGET could not read them)."""
    pipe = client.pipeline(transaction=False)
    for s in range(now_s - seconds + 1, now_s + 1):
        pipe.get(rate_key(stream, s))
    return sum(int(v) for v in pipe.execute() if v is not None)
