"""`mlplatform stream run` against a real Redis: every event lands in its customer's log exactly once, whatever the
delivery (duplicates, any order, a consumer's own unacknowledged entries, a dead consumer's), malformed entries go
to the dead-letter stream, and a consumer stops cleanly at a bound. Oracles: the events the test put on the stream
(``expected_logs``) and what Redis itself reports (ZRANGE, XINFO GROUPS, XPENDING, XLEN)."""

from __future__ import annotations

import random

from tests.streaming.conftest import (
    GROUP,
    STREAM,
    expected_logs,
    group_info,
    make_events,
    stored_logs,
    xadd_all,
)


def _run(cli, settings, *args: str):
    res = cli(settings, ["stream", "run", "--quiet", *args])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    return res


def test_duplicates_and_any_order_give_the_same_logs(cli, stream_settings, redis_db):
    settings = stream_settings(stream_batch_size=37)
    events = make_events(600, customers=25, seed=1)
    xadd_all(redis_db, events + events[::3])  # a third of them twice
    _run(cli, settings, "--consumer", "c1", "--idle-exit", "0.5")
    once = stored_logs(redis_db)
    assert once == expected_logs(events)
    assert sum(redis_db.zcard(k) for k in once) == len({e.transaction_id for e in events})
    info = group_info(redis_db)
    assert info["pending"] == 0 and info["lag"] == 0 and info["entries-read"] == 800

    redis_db.flushdb()
    shuffled = events[:]
    random.Random(5).shuffle(shuffled)
    xadd_all(redis_db, shuffled + shuffled[:100])
    _run(cli, settings, "--consumer", "c2", "--idle-exit", "0.5")
    assert stored_logs(redis_db) == once, "out-of-order (and redelivered) events gave other logs"


def test_a_consumer_reapplies_its_own_unacknowledged_entries_and_leaves_others_young_ones(cli, stream_settings,
                                                                                       redis_db):
    settings = stream_settings()
    events = make_events(300, customers=10, seed=2)
    xadd_all(redis_db, events)
    redis_db.xgroup_create(STREAM, GROUP, id="0")
    read = redis_db.xreadgroup(GROUP, "a", {STREAM: ">"}, count=120)  # "a" read 120, then died before applying
    assert len(read[0][1]) == 120

    _run(cli, settings, "--consumer", "b", "--idle-exit", "0.5")  # "a"'s entries are younger than --claim-idle
    assert redis_db.xpending(STREAM, GROUP)["pending"] == 120
    assert stored_logs(redis_db) == expected_logs(events[120:])

    _run(cli, settings, "--consumer", "a", "--idle-exit", "0.5")  # "a" restarts: re-reads its own pending
    assert redis_db.xpending(STREAM, GROUP)["pending"] == 0
    assert stored_logs(redis_db) == expected_logs(events)


def test_a_dead_consumers_entries_are_claimed_after_claim_idle(cli, stream_settings, redis_db):
    settings = stream_settings()
    events = make_events(200, customers=8, seed=3)
    xadd_all(redis_db, events)
    redis_db.xgroup_create(STREAM, GROUP, id="0")
    redis_db.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=200)
    _run(cli, settings, "--consumer", "alive", "--idle-exit", "0.5", "--claim-idle", "0")
    assert redis_db.xpending(STREAM, GROUP)["pending"] == 0
    assert stored_logs(redis_db) == expected_logs(events)


def test_malformed_entries_are_dead_lettered_with_their_reason_and_never_block(cli, stream_settings, redis_db):
    settings = stream_settings(stream_batch_size=10)
    events = make_events(40, customers=5, seed=4)
    xadd_all(redis_db, events[:20])
    good = events[0].fields()
    bad = [
        {k: v for k, v in good.items() if k != "ts_us"},
        {**good, "amount": "lots"},
        {**good, "amount": "nan"},
        {**good, "customer_id": str(2**64)},
    ]
    bad_ids = [redis_db.xadd(STREAM, f) for f in bad]
    xadd_all(redis_db, events[20:])
    res = _run(cli, settings, "--consumer", "c", "--idle-exit", "0.5")
    assert "dead-lettered 4" in res.output
    assert stored_logs(redis_db) == expected_logs(events)
    assert redis_db.xpending(STREAM, GROUP)["pending"] == 0
    dead = redis_db.xrange(f"{STREAM}:dead")
    assert [d[1][b"source_id"] for d in dead] == bad_ids
    reasons = [d[1][b"reason"].decode() for d in dead]
    assert "ts_us" in reasons[0] and "missing" in reasons[0]
    assert "not of its type" in reasons[1] and "not finite" in reasons[2] and "int64" in reasons[3], reasons


def test_max_events_bounds_a_run_and_the_rest_stays_for_the_next(cli, stream_settings, redis_db):
    settings = stream_settings(stream_batch_size=40)
    events = make_events(250, customers=6, seed=6)
    xadd_all(redis_db, events)
    res = _run(cli, settings, "--consumer", "c", "--max-events", "100")
    assert "stopped: max-events" in res.output
    info = group_info(redis_db)
    assert info["entries-read"] == 100 and info["pending"] == 0 and info["lag"] == 150
    assert stored_logs(redis_db) == expected_logs(events[:100])  # stream order: the first 100
    _run(cli, settings, "--consumer", "c", "--idle-exit", "0.5")
    assert stored_logs(redis_db) == expected_logs(events)


def test_acknowledged_entries_are_trimmed_off_the_stream(cli, stream_settings, redis_db):
    settings = stream_settings(stream_batch_size=100)
    xadd_all(redis_db, make_events(3000, customers=20, seed=7))
    _run(cli, settings, "--consumer", "c", "--idle-exit", "0.5")
    assert redis_db.xlen(STREAM) < 3000  # whole nodes of acknowledged entries went (XTRIM MINID ~)
    info = group_info(redis_db)
    assert info["entries-read"] == 3000 and info["lag"] == 0
    redis_db.delete(STREAM)
    xadd_all(redis_db, make_events(3000, customers=20, seed=8))
    _run(cli, settings, "--consumer", "c", "--idle-exit", "0.5", "--no-trim")
    assert redis_db.xlen(STREAM) == 3000


def test_run_with_redis_down_is_a_clear_error(cli, tmp_path):
    from tests.conftest import make_settings

    res = cli(make_settings(tmp_path, redis_timeout_seconds=0.5), ["stream", "run", "--idle-exit", "0.1"])
    assert res.exit_code == 5, res.output
    assert "Redis" in res.output and "Traceback" not in res.output
