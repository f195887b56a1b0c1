"""The customers' event logs in Redis give customer_activity at any time t equal to the offline store at t − 1 µs.

The logs are backfilled from the small world's raw transactions into a real Redis; the read is the service's
(``queue_reads`` + ``decode_reads`` over one pipeline). The oracle is ``tests/oracles.point_in_time``: brute force
from the raw transactions, with the view's 30-day TTL. Times are chosen on the edges where an off-by-one would
show: at an event (it must not count itself), 1 µs after it, exactly when it leaves each window and 1 µs later,
at the TTL's edge, plus random times; ties (several events of a customer at one time) are in the world.
"""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from mlplatform.contracts.activity_log import COVERAGE_KEY, RETENTION, TransactionEvent, apply_events, log_key
from mlplatform.features.activity import FEATURES, decode_reads, queue_reads
from mlplatform.features.event_logs import backfill_event_logs
from tests.conftest import redis_dump
from tests.oracles import point_in_time, read_raw

PROJECT = "fraud"
US = pd.Timedelta(microseconds=1)


def _read(client, customer_id: int, t_us: int) -> tuple[dict | None, bool]:
    with client.pipeline(transaction=False) as pipe:
        queue_reads(pipe, PROJECT, customer_id, t_us)
        window, latest = pipe.execute()
    return decode_reads(window, latest, t_us)


def _edge_times(events: pd.Series, rng: random.Random, end: pd.Timestamp) -> list[pd.Timestamp]:
    picked = [events.iloc[i] for i in rng.sample(range(len(events)), min(4, len(events)))]
    out = []
    for e in picked:
        for d in (pd.Timedelta(0), pd.Timedelta(hours=1), pd.Timedelta(hours=24), pd.Timedelta(days=7),
                  pd.Timedelta(days=37)):
            out += [e + d, e + d + US]
    last = events.max() + pd.Timedelta(days=37)  # the TTL's edge: stale from 2 µs after it
    out += [last, last + US, last + 2 * US]
    out += [end - pd.Timedelta(days=rng.uniform(0, 15)) for _ in range(4)]
    return out


@pytest.fixture()
def backfilled(world, redis_db):
    raw = read_raw(world)
    tx = raw["transactions"]
    end = tx["event_timestamp"].max() + pd.Timedelta(seconds=1)
    result = backfill_event_logs(redis_db, PROJECT, world / "raw", end.to_pydatetime(), timedelta(days=7))
    return raw, end, result


def test_logs_equal_the_offline_store_at_t_minus_1us(backfilled, redis_db):
    raw, end, result = backfilled
    tx = raw["transactions"]
    assert result.events == len(tx) and result.customers == tx["customer_id"].nunique()
    assert result.complete_from is None  # the world is shorter than 44 days: complete from its beginning

    # ties: a second transaction at the very time of another, for a few customers (in Redis and in the oracle)
    twins = tx.drop_duplicates("customer_id").head(5).assign(amount=lambda d: d["amount"] + 1.25, merchant_id=99_999)
    twins["transaction_id"] = -twins["transaction_id"]
    with redis_db.pipeline(transaction=False) as pipe:
        apply_events(pipe, PROJECT, [TransactionEvent(str(r.transaction_id), int(r.customer_id), int(r.merchant_id),
                                                      float(r.amount), r.event_timestamp.value // 1000)
                                     for r in twins.itertuples()])
        pipe.execute()
    tx = raw["transactions"] = pd.concat([tx, twins]).sort_values("event_timestamp")

    rng = random.Random(5)
    rows = []
    for c, g in tx.groupby("customer_id"):
        times = _edge_times(g["event_timestamp"], rng, end)
        if c in set(twins["customer_id"]):  # at, just after, and an hour after the tie
            e = twins.loc[twins["customer_id"] == c, "event_timestamp"].iloc[0]
            times += [e, e + US, e + pd.Timedelta(hours=1), e + pd.Timedelta(hours=1) + US]
        for t in times:
            rows.append({"row_id": len(rows), "customer_id": c, "merchant_id": int(g["merchant_id"].iloc[0]),
                         "amount": 1.0, "transaction_ts": int(t.timestamp()), "t": t, "event_timestamp": t - US})
    frame = pd.DataFrame(rows)
    until = end + pd.Timedelta(days=60)
    want = point_in_time(raw, frame, until, timedelta(days=30), timedelta(days=60)).set_index("row_id")
    mismatches, stale = [], 0
    for row in frame.itertuples():
        t_us = row.t.value // 1000
        got, is_stale = _read(redis_db, row.customer_id, t_us)
        expected = {f: want.at[row.row_id, f] for f in FEATURES}
        expected = {f: None if pd.isna(v) else v for f, v in expected.items()}
        stale += is_stale
        got = got or dict.fromkeys(FEATURES)
        for f in FEATURES:
            a, b = got[f], expected[f]
            if (a is None) != (b is None) or (a is not None and abs(float(a) - float(b)) > 1e-6 * max(1, abs(b))):
                mismatches.append((row.customer_id, str(row.t), f, a, b))
    assert not mismatches, f"{len(mismatches)} of {len(frame) * len(FEATURES)} values differ, e.g. {mismatches[:5]}"
    assert len(frame) > 2_000 and stale >= tx["customer_id"].nunique()  # the TTL's edge was reached too


def test_backfill_is_idempotent_incremental_and_repairs_a_wiped_redis(backfilled, redis_db, world):
    raw, end, first = backfilled
    dump = redis_dump(redis_db)
    again = backfill_event_logs(redis_db, PROJECT, world / "raw", end.to_pydatetime(), timedelta(days=7))
    assert again.events == 0 and redis_dump(redis_db) == dump  # nothing new since the last run: nothing loaded
    full = backfill_event_logs(redis_db, PROJECT, world / "raw", end.to_pydatetime(), timedelta(days=7), full=True)
    assert full.events == first.events and redis_dump(redis_db) == dump  # reloading changes nothing (idempotent)
    redis_db.flushdb()
    backfill_event_logs(redis_db, PROJECT, world / "raw", end.to_pydatetime(), timedelta(days=7))
    assert redis_dump(redis_db) == dump  # a wiped Redis is loaded again, to the same state


def test_stream_and_backfill_in_either_order_give_the_same_logs(backfilled, redis_db, world):
    raw, end, _ = backfilled
    tx = raw["transactions"]
    c = int(tx["customer_id"].iloc[0])
    late = [TransactionEvent(f"live-{i}", c, 7, 10.0 + i, (end + pd.Timedelta(minutes=i)).value // 1000)
            for i in range(3)]
    with redis_db.pipeline(transaction=False) as pipe:
        apply_events(pipe, PROJECT, late)
        pipe.execute()
    after_stream = redis_dump(redis_db)
    backfill_event_logs(redis_db, PROJECT, world / "raw", end.to_pydatetime(), timedelta(days=7), full=True)
    assert redis_dump(redis_db) == after_stream  # the backfill never removes what the stream added
    with redis_db.pipeline(transaction=False) as pipe:
        apply_events(pipe, PROJECT, list(reversed(late)) + late)  # redelivered, out of order
        pipe.execute()
    assert redis_dump(redis_db) == after_stream
    assert int(redis_db.hget(COVERAGE_KEY, f"{PROJECT}:to")) == late[-1].ts_us


def test_a_later_backfill_trims_what_no_read_needs(redis_db, tmp_path):
    """60 days of synthetic transactions: the logs keep 44 days before the newest one (37 + 7 back-dated)."""
    rng = np.random.default_rng(3)
    n = 6_000
    start = pd.Timestamp("2026-01-01", tz="UTC")
    tx = pd.DataFrame({"transaction_id": np.arange(n), "customer_id": rng.integers(1, 40, n),
                       "merchant_id": rng.integers(1, 9, n), "amount": rng.uniform(1, 100, n).round(2),
                       "event_timestamp": (start + pd.to_timedelta(rng.uniform(0, 60 * 86_400, n), unit="s"))
                       .floor("us")})
    raw = tmp_path / "raw"
    (raw / "transactions").mkdir(parents=True)

    def write(upto: pd.Timestamp) -> pd.Timestamp:  # the raw data as it stands at ``upto``
        tx[tx["event_timestamp"] < upto].to_parquet(raw / "transactions" / "part-0.parquet")
        return tx.loc[tx["event_timestamp"] < upto, "event_timestamp"].max() + US

    for upto in (start + pd.Timedelta(days=30), start + pd.Timedelta(days=45), start + pd.Timedelta(days=61)):
        end = write(upto)  # a daily pipeline, three runs: the first holds all, the later ones trim
        result = backfill_event_logs(redis_db, PROJECT, raw, upto.to_pydatetime(), timedelta(days=7))
        floor = end - RETENTION - pd.Timedelta(days=7)
        first = tx["event_timestamp"].min()
        assert result.complete_from == (None if first >= floor else floor.to_pydatetime())
        kept = tx[(tx["event_timestamp"] >= (floor if first < floor else first)) & (tx["event_timestamp"] < end)]
        for c in tx["customer_id"].unique():
            scores = [s for _, s in redis_db.zrange(log_key(PROJECT, int(c)), 0, -1, withscores=True)]
            assert sorted(scores) == sorted(kept.loc[kept["customer_id"] == c, "event_timestamp"].astype("int64")
                                             // 1000), (str(upto), c)
    assert result.complete_from is not None and len(kept) < len(tx)  # the last run did trim

