"""Replay a period of raw transactions through the running service (the demo's "a drifted period goes live").

Timestamps are moved forward by whole days so that the period ends at (or just before) now: hour of day and the
spacing of transactions are kept. Transaction ids are kept, so late labels join the logged predictions (on the
replay's clock: ``monitoring.quality.join_labels``) and the consistency check knows each row's original time.

``live_replay`` (``monitor replay --live``) moves the world with the period: the customers' event logs and the
stored views' rows (``monitoring.stored_rows``), every transaction through the events path and each sampled one
scored at its own time. ``replay`` (``--end-state``) is a load replay against the online store as it stands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.errors import DataNotFoundError, InvalidInputError, MLPlatformError
from mlplatform.settings import Settings

DAY_SECONDS = 86_400


@dataclass(frozen=True)
class ReplayResult:
    """What was sent."""

    period: str
    sent: int
    failed: int
    shift_days: int
    seconds: float


def shift_days(period_end: datetime, now: datetime) -> int:
    """Whole days that move a period ending at ``period_end`` to end at or before ``now`` (never backwards)."""
    return max(0, int((now - period_end).total_seconds() // DAY_SECONDS))


def period_transactions(settings: Settings, period: str | None) -> tuple[str, datetime, pd.DataFrame]:
    """(name, end, transactions) of a generated period; default the latest (the drifted one after --drift)."""
    name, _, end, tx = period_span(settings, period)
    return name, end, tx


def period_span(settings: Settings, period: str | None) -> tuple[str, datetime, datetime, pd.DataFrame]:
    """(name, start, end, transactions) of a generated period; default the latest."""
    from mlplatform.data.generator import read_manifest

    manifest = read_manifest(settings.data_path)
    periods = manifest["periods"]
    chosen = periods[-1] if period is None else next((p for p in periods if p["name"] == period), None)
    if chosen is None:
        names = ", ".join(p["name"] for p in periods)
        raise InvalidInputError(f"no period {period!r} in {settings.data_path} (generated: {names})")
    path = settings.layout.raw_dir / "transactions" / f"{chosen['name']}.parquet"
    if not path.is_file():
        raise DataNotFoundError(f"{path} is missing: run `mlplatform data generate` again")
    return (chosen["name"], datetime.fromisoformat(chosen["start"]), datetime.fromisoformat(chosen["end"]),
            pd.read_parquet(path))


def replay_bodies(tx: pd.DataFrame, days: int) -> list[dict]:
    """Request bodies for POST /v1/predict/batch, timestamps moved forward by ``days``."""
    ts = pd.to_datetime(tx["event_timestamp"], utc=True) + pd.Timedelta(days=days)
    return [
        {"customer_id": int(c), "merchant_id": int(m), "amount": float(a), "transaction_ts": int(t.timestamp()),
         "transaction_id": str(i)}
        for c, m, a, t, i in zip(tx["customer_id"], tx["merchant_id"], tx["amount"], ts, tx["transaction_id"],
                                 strict=True)
    ]


def replay(settings: Settings, url: str | None = None, period: str | None = None, limit: int = 5000,
           now: datetime | None = None, seed: int = 0, on_progress=None) -> ReplayResult:
    """Send (a uniform sample of at most ``limit``) transactions of a period to the service, in batches."""
    import httpx

    t0 = time.perf_counter()
    name, end, tx = period_transactions(settings, period)
    if limit and len(tx) > limit:
        tx = tx.iloc[np.sort(np.random.default_rng(seed).choice(len(tx), limit, replace=False))]
    days = shift_days(end, now or datetime.now(UTC))
    bodies = replay_bodies(tx, days)
    base = url or f"http://{settings.serving_host}:{settings.serving_port}"
    size = settings.serving_max_batch
    sent = failed = 0
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(0, len(bodies), size):
                chunk = bodies[i:i + size]
                response = client.post("/v1/predict/batch", json={"transactions": chunk})
                if response.status_code == 200:
                    sent += len(chunk)
                else:
                    failed += len(chunk)
                if on_progress:
                    on_progress(sent + failed, len(bodies))
    except httpx.HTTPError as exc:
        raise MLPlatformError(
            f"the service at {base} did not answer ({exc}); start it with `mlplatform serve`"
        ) from exc
    return ReplayResult(name, sent, failed, days, time.perf_counter() - t0)


# --- the live replay: event-time order, a compressed clock, the events path ----------------------------------------
@dataclass(frozen=True)
class LiveReplayResult:
    """What a live replay played: events through the stream, predictions scored at their own (shifted) time."""

    period: str
    events: int  # the period's transactions played (sent to POST /v1/events when the stream features are on)
    scored: int  # of them, scored by POST /v1/predict/batch (the sample)
    failed: int  # predictions answered with an error
    history: int  # earlier transactions moved forward with the period (each customer's last 37 days)
    shift_days: int
    speed: float
    seconds: float
    waited: float  # seconds spent waiting for the stream's consumers to apply what was sent
    stored_rows: int = 0  # rows of the views served from stored rows, written on the replay's clock


def _events(tx: pd.DataFrame, shift: pd.Timedelta) -> list[Any]:
    from mlplatform.contracts.activity_log import TransactionEvent

    us = (pd.to_datetime(tx["event_timestamp"], utc=True) + shift).astype("int64") // 1000
    return [TransactionEvent(str(i), int(c), int(m), float(a), int(t)) for i, c, m, a, t in
            zip(tx["transaction_id"], tx["customer_id"], tx["merchant_id"], tx["amount"], us, strict=True)]


def _iso(t_us: int) -> str:
    return pd.Timestamp(t_us, unit="us", tz="UTC").isoformat()


def wait_applied(client: Any, stream: str, timeout: float) -> float:
    """Block until the stream's consumer group has applied every entry sent so far: its last delivered id is the
    stream's last id and nothing is pending (Redis's ``lag`` is unknown after the stream was trimmed)."""
    from mlplatform.contracts.activity_log import CONSUMER_GROUP

    def text(value: Any) -> Any:
        return value.decode() if isinstance(value, bytes) else value

    t0 = time.monotonic()
    while True:
        try:
            last = text(client.xinfo_stream(stream)["last-generated-id"])
            groups = {text(g["name"]): g for g in client.xinfo_groups(stream)}
        except Exception:  # noqa: BLE001 - no stream yet: nothing applied
            last, groups = None, {}
        group = groups.get(CONSUMER_GROUP)
        if group is not None and text(group["last-delivered-id"]) == last and group["pending"] == 0:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            state = ("no consumer group" if group is None else
                     f"delivered up to {text(group['last-delivered-id'])} of {last}, pending {group['pending']}")
            raise MLPlatformError(f"the events stream {stream!r} was not applied within {timeout:.0f} s ({state}): "
                                  "start `mlplatform stream run` beside the service")
        time.sleep(0.002)


def _history(settings: Settings, start: pd.Timestamp) -> tuple[pd.DataFrame, list[int]]:
    """The raw transactions of the 37 days before ``start`` (what the windows of the period's first events see),
    and the customers with transactions from 37 days before ``start`` on (whose logs the replay rewrites)."""
    import duckdb

    from mlplatform.contracts.activity_log import RETENTION

    glob = str(settings.layout.raw_dir / "transactions" / "*.parquet")
    since = (start - RETENTION).to_pydatetime()
    with duckdb.connect() as con:
        before = con.execute(
            "SELECT transaction_id, customer_id, merchant_id, amount, event_timestamp FROM read_parquet($g) "
            "WHERE event_timestamp >= $a AND event_timestamp < $b ORDER BY event_timestamp",
            {"g": glob, "a": since, "b": start.to_pydatetime()}).fetchdf()
        later = con.execute("SELECT DISTINCT customer_id FROM read_parquet($g) WHERE event_timestamp >= $a",
                            {"g": glob, "a": since}).fetchall()
    return before, [int(c) for (c,) in later]


def _rewind(client: Any, settings: Settings, start: pd.Timestamp, shift: pd.Timedelta) -> int:
    """Set the customers' event logs to the world as it stood at ``start``, moved forward by ``shift``: their events
    from 37 days before ``start`` on (at their original times, or from an earlier replay) are removed, those of the
    37 days before ``start`` written again moved forward, and the logs' coverage says they are complete from there
    (moved), so the service reads every replayed transaction's windows from them. The replay then adds the period's
    events at their shifted times. Events older than that stay where they are: no window of the moved period
    reaches back to them (a window is at most 7 days long and the shift at least a day), and a customer without
    newer ones keeps its latest event, so its age past the TTL reads as it did."""
    from mlplatform.contracts.activity_log import COVERAGE_KEY, RETENTION, apply_events, coverage_fields, log_key
    from mlplatform.features.repo import feast_project

    before, later = _history(settings, start)
    project = feast_project(settings.feature_repo)
    since_us = (start - RETENTION).value // 1000
    with client.pipeline(transaction=False) as pipe:
        for c in later:
            pipe.zremrangebyscore(log_key(project, c), since_us, "+inf")
        pipe.execute()
    past = _events(before, shift)
    moved = 0
    for i in range(0, len(past), 20_000):
        with client.pipeline(transaction=False) as pipe:
            moved += apply_events(pipe, project, past[i:i + 20_000])
            pipe.execute()
    from_field = coverage_fields(project)[0]
    complete_from = client.hget(COVERAGE_KEY, from_field)
    if complete_from is not None and int(complete_from) > 0:  # 0: complete from the beginning of the data
        client.hset(COVERAGE_KEY, from_field, since_us + shift.value // 1000)
    return moved


def live_replay(settings: Settings, url: str | None = None, period: str | None = None, limit: int = 5000,
                speed: float = 3600.0, now: datetime | None = None, seed: int = 0, on_progress=None,
                apply_timeout: float = 60.0, materialize_every: timedelta | None = None) -> LiveReplayResult:
    """Play a period in event-time order on a clock ``speed`` times faster than real time, moved forward by whole
    days to end at or before now.

    Every transaction of the period goes to ``POST /v1/events`` when its (shifted) time comes; a uniform sample of
    ``limit`` of them is then scored by ``POST /v1/predict/batch`` at that same time, once the stream's consumers
    have applied everything sent before (so each scored transaction sees exactly its predecessors, as the offline
    store does at t − 1 µs). The world moves with the period: the event logs are first set to the world as it stood
    at the period's start, moved forward (``_rewind``, written straight to Redis), and so are the rows of the views
    served from Feast's stored rows (``monitoring.stored_rows``), which are then written as the clock reaches them:
    exactly, or like a batch materialization every ``materialize_every``. So the first transactions' windows are
    the original ones too, and no later event or row shows up early. Needs the service, `mlplatform stream run`,
    and the admin key (``serving_api_key``) for the events endpoint. With ``serving_stream_features`` off the
    service reads customer_activity from stored rows only: no event is sent (run no consumer) and those rows are
    replayed like the other views'."""
    import httpx

    from mlplatform.features.fast_materialize import online_client
    from mlplatform.stores import open_feature_store, redis_client, redis_errors
    from monitoring.stored_rows import StoredRows

    if speed <= 0:
        raise InvalidInputError(f"--speed must be above 0 (got {speed:g})")
    if materialize_every is not None and materialize_every <= timedelta(0):
        raise InvalidInputError(f"--materialize-every must be above 0 (got {materialize_every})")
    streaming = settings.serving_stream_features
    if streaming and not settings.serving_api_key:
        raise InvalidInputError("the live replay sends events to POST /v1/events, which needs the admin key: set "
                                "MLPLATFORM_SERVING_API_KEY (the service's key)")
    t0 = time.perf_counter()
    name, start, end, tx = period_span(settings, period)
    tx = tx.sort_values(["event_timestamp", "transaction_id"]).reset_index(drop=True)
    days = shift_days(end, now or datetime.now(UTC))
    shift = pd.Timedelta(days=days)
    shift_us = shift.value // 1000
    scored_ids = set(tx["transaction_id"]) if not limit or len(tx) <= limit else set(
        tx["transaction_id"].iloc[np.random.default_rng(seed).choice(len(tx), limit, replace=False)])
    events = _events(tx, shift)
    client = redis_client(settings)
    store = open_feature_store(settings)
    history = 0
    with redis_errors(settings.redis_addr, "did not answer", settings.redis_timeout_seconds):
        if days and streaming:
            history = _rewind(client, settings, pd.Timestamp(tx["event_timestamp"].min()), shift)
        stored = StoredRows(settings, store, online_client(store), start, end, shift.to_pytimedelta(),
                            materialize_every)
        stored.rewind()
    base = url or f"http://{settings.serving_host}:{settings.serving_port}"
    headers = {"X-API-Key": settings.serving_api_key or ""}
    sim0, wall0 = events[0].ts_us if events else 0, time.monotonic()
    scored = failed = sent = 0
    waited = 0.0
    try:
        with httpx.Client(base_url=base, timeout=30) as http:

            def score(group: list[Any]) -> None:
                nonlocal scored, failed
                if not group:
                    return
                response = http.post("/v1/predict/batch", json={"transactions": [
                    {"customer_id": e.customer_id, "merchant_id": e.merchant_id, "amount": e.amount,
                     "timestamp": _iso(e.ts_us), "transaction_id": e.transaction_id} for e in group]})
                if response.status_code == 200:
                    scored += len(group)
                else:
                    failed += len(group)

            i = 0
            while i < len(events):
                due_us = sim0 + int((time.monotonic() - wall0) * speed * 1_000_000)
                if events[i].ts_us > due_us:  # nothing due yet: sleep until the next event's time
                    time.sleep(min(1.0, (events[i].ts_us - due_us) / speed / 1_000_000))
                    continue
                j = i
                while j < len(events) and j - i < 1000 and events[j].ts_us <= due_us:
                    j += 1
                chunk = events[i:j]
                if streaming:
                    answer = http.post("/v1/events", headers=headers, json={"events": [
                        {"transaction_id": e.transaction_id, "customer_id": e.customer_id,
                         "merchant_id": e.merchant_id, "amount": e.amount, "timestamp": _iso(e.ts_us)}
                        for e in chunk]})
                    if answer.status_code != 200:
                        raise MLPlatformError(f"POST /v1/events answered {answer.status_code}: {answer.text[:300]}")
                    with redis_errors(settings.redis_addr, "did not answer", settings.redis_timeout_seconds):
                        waited += wait_applied(client, settings.events_stream, apply_timeout)
                sent += len(chunk)
                group: list[Any] = []  # scored together: no stored row is due between them
                for e in chunk:
                    if int(e.transaction_id) not in scored_ids:
                        continue
                    original_us = e.ts_us - shift_us
                    if stored.pending(original_us) or len(group) >= settings.serving_max_batch:
                        score(group)
                        group = []
                        with redis_errors(settings.redis_addr, "did not answer", settings.redis_timeout_seconds):
                            stored.advance(original_us)
                    group.append(e)
                score(group)
                i = j
                if on_progress:
                    on_progress(sent, len(events))
        with redis_errors(settings.redis_addr, "did not answer", settings.redis_timeout_seconds):
            stored.advance(int(pd.Timestamp(end).value // 1000))  # the world at the period's end
    except httpx.HTTPError as exc:
        raise MLPlatformError(
            f"the service at {base} did not answer ({type(exc).__name__}); start it with `mlplatform serve`"
        ) from exc
    finally:
        client.close()
    return LiveReplayResult(name, sent, scored, failed, history, days, speed, time.perf_counter() - t0, waited,
                            stored.written)
