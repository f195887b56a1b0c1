"""``customer_activity`` at any time, from a customer's own events: the online twin of the offline SQL.

``mlplatform.features.pipelines.CUSTOMER_ACTIVITY_SQL`` computes the offline rows: one at each transaction and one
at each window exit, so the latest row at or before a time T describes the windows (T − w, T]. A transaction at t
is looked up at T = t − 1 µs, which puts an event at e inside window w exactly when ``t − w ≤ e ≤ t − 1 µs``.
``aggregate`` computes the same values from the events themselves, so a customer's event log (fed by the stream)
gives at t what the offline store gives at t − 1 µs, window exits included, with no batch job in between.

The offline row is older than the view's TTL (30 days) exactly when the latest event is more than 7 days + 30 days
before T (its last window-exit row is at event + 7 days): then every feature is missing (``stale``), as offline.
Sums and means are rounded to 6 decimals like the SQL; ``last_txn_epoch`` is the latest event's whole second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mlplatform.contracts.activity_log import RETENTION_US, decode_member, log_key

HOUR_US = 3_600_000_000
WINDOWS_US = {"1h": HOUR_US, "24h": 24 * HOUR_US, "7d": 7 * 24 * HOUR_US}
ACTIVITY_VIEW = "customer_activity"  # the feature view these functions compute
FEATURES = ("txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h", "amount_sum_7d",
            "amount_mean_7d", "distinct_merchants_24h", "last_txn_epoch")


def is_stale(last_us: int, t_us: int) -> bool:
    """Whether the offline row at t − 1 µs of a customer whose latest event is at ``last_us`` is past the TTL."""
    return (t_us - 1) - last_us > RETENTION_US


def aggregate(window_events: Sequence[tuple[int, int, float]], last_us: int, t_us: int) -> dict[str, Any]:
    """The features at request time ``t_us`` (µs) from the events of the 7 days before it.

    ``window_events``: (event µs, merchant id, amount) of the events with ``t − 7 d ≤ e ≤ t − 1 µs``, any order;
    ``last_us``: the latest event at or before t − 1 µs (any age; the caller checks ``is_stale`` first)."""
    in_24h = [(m, a) for e, m, a in window_events if e >= t_us - WINDOWS_US["24h"]]
    n_7d = len(window_events)
    n_24h = len(in_24h)
    sum_7d = math.fsum(a for _, _, a in window_events)
    sum_24h = math.fsum(a for _, a in in_24h)
    return {
        "txn_count_1h": sum(1 for e, _, _ in window_events if e >= t_us - WINDOWS_US["1h"]),
        "txn_count_24h": n_24h,
        "txn_count_7d": n_7d,
        "amount_sum_24h": round(sum_24h, 6),
        "amount_mean_24h": round(sum_24h / n_24h, 6) if n_24h else None,
        "amount_sum_7d": round(sum_7d, 6),
        "amount_mean_7d": round(sum_7d / n_7d, 6) if n_7d else None,
        "distinct_merchants_24h": len({m for m, _ in in_24h}),
        "last_txn_epoch": last_us // 1_000_000,
    }


def queue_reads(pipe: Any, project: str, customer_id: int, t_us: int) -> None:
    """Queue the reads ``decode_reads`` needs for a customer at ``t_us``: the 7-day window and the latest event."""
    key = log_key(project, customer_id)
    pipe.zrangebyscore(key, t_us - WINDOWS_US["7d"], t_us - 1, withscores=True)
    pipe.zrevrangebyscore(key, t_us - 1, "-inf", start=0, num=1, withscores=True)


def decode_reads(window: Sequence[tuple[bytes, float]], latest: Sequence[tuple[bytes, float]],
                 t_us: int) -> tuple[dict[str, Any] | None, bool]:
    """(features, stale) from the replies of ``queue_reads``: (None, False) when the customer has no event before
    t (no row offline either), (None, True) when its latest is past the TTL, else (``aggregate``, False)."""
    if not latest:
        return None, False
    last_us = int(latest[0][1])
    if is_stale(last_us, t_us):
        return None, True
    events = []
    for member, score in window:
        _, merchant, amount = decode_member(member)
        events.append((int(score), merchant, amount))
    return aggregate(events, last_us, t_us), False
