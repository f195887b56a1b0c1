"""Queue-based scoring (`mlplatform stream score`) against the real service, real Redis and real boosters.

Oracles: ``POST /v1/predict`` answers of a live service for the same transactions at the same times (scores,
models, flags, decisions and reasons must be equal); the events the test put on the stream (every transaction
published exactly once, nothing else); Redis's own XPENDING / XINFO; the feature log's Parquet files.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from serving.app import create_app
from tests.conftest import process_environ
from tests.serving.conftest import make_txns, set_aliases, txn_body

MLPLATFORM = Path(sys.executable).parent / "mlplatform"
GROUP = "mlplatform-scorer"  # the scorer's consumer group (docs/streaming.md)
TEXT = ("request_id", "transaction_id", "fallback_reason", "degraded", "decision")  # the documented plain fields
NOT_COMPARED = {"request_id", "cached", "latency_ms", "contributions", "contributions_error"}
pytestmark = pytest.mark.slow


def _fields(txn_id: str, customer: int, merchant: int, amount: float, ts_s: int) -> dict:
    """A stream entry as the events contract documents it (XADD fields)."""
    return {"transaction_id": txn_id, "customer_id": str(customer), "merchant_id": str(merchant),
            "amount": repr(float(amount)), "ts_us": str(ts_s * 1_000_000)}


def _row_fields(row) -> dict:
    return _fields(str(row.transaction_id), int(row.customer_id), int(row.merchant_id), float(row.amount),
                   int(pd.Timestamp(row.event_timestamp).timestamp()))


def _xadd(client, stream: str, entries: list[dict], chunk: int = 1000) -> None:
    for i in range(0, len(entries), chunk):
        pipe = client.pipeline(transaction=False)
        for f in entries[i:i + chunk]:
            pipe.xadd(stream, f)
        pipe.execute()


def _published(client, scores: str) -> list[dict]:
    """Every entry of the scores stream, decoded by the documented rule (text fields as is, the rest JSON)."""
    out = []
    for _, fields in client.xrange(scores):
        f = {k.decode(): v.decode() for k, v in fields.items()}
        out.append({k: (v if k in TEXT else json.loads(v)) for k, v in f.items()})
    return out


def _scorer(settings, name: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(MLPLATFORM), "stream", "score", "--consumer", name, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=process_environ(settings))


def _scored(output: str) -> int:
    return int(re.search(r"scored ([\d,]+) events", output).group(1).replace(",", ""))


def _redis(settings):
    import redis

    from mlplatform.settings import RedisAddress

    addr = RedisAddress.parse(settings.redis_addr)
    return redis.Redis(addr.host, addr.port, db=addr.db, password=addr.password)


def _streams(name: str) -> dict:
    return {"events_stream": f"test:{name}:events", "scores_stream": f"test:{name}:scores"}


def test_scores_equal_predict_for_the_same_transactions_at_the_same_times(serving_settings, trained_models,
                                                                          online_world, live_server):
    from mlplatform.contracts.activity_log import TransactionEvent, apply_events
    from mlplatform.features.repo import feast_project

    settings = serving_settings(serving_record_events=False, **_streams("equal"))
    set_aliases(settings, golden=trained_models.versions[0])
    client = _redis(settings)
    when = trained_models.scoring_time
    first = make_txns(online_world, 60, seed=21, when=when, unknown=3).drop_duplicates("customer_id")
    # a second transaction of some of the same customers, an hour or two later: their windows hold the first one
    second = make_txns(online_world, 25, seed=22, when=when + pd.Timedelta(hours=2))
    second["customer_id"] = first["customer_id"].to_numpy()[:len(second)]
    project = feast_project(settings.feature_repo)

    def apply(frame) -> None:  # as `stream run` would, so that later windows hold these transactions
        pipe = client.pipeline(transaction=False)
        apply_events(pipe, project, [TransactionEvent(str(r.transaction_id), int(r.customer_id), int(r.merchant_id),
                                                      float(r.amount),
                                                      int(pd.Timestamp(r.event_timestamp).timestamp()) * 10**6)
                                     for r in frame.itertuples()])
        pipe.execute()

    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        answers = [http.post("/v1/predict", json=txn_body(r)) for r in first.itertuples()]
        apply(first)
        answers += [http.post("/v1/predict", json=txn_body(r)) for r in second.itertuples()]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:2]
    served = {a.json()["transaction_id"]: a.json() for a in answers}
    apply(second)  # the scorer runs after every event was applied: each must still be scored without itself

    _xadd(client, settings.events_stream, [_row_fields(r) for r in pd.concat([first, second]).itertuples()])
    done = subprocess.run([str(MLPLATFORM), "stream", "score", "--consumer", "solo", "--idle-exit", "1", "--quiet"],
                          capture_output=True, text=True, env=process_environ(settings), timeout=300)
    assert done.returncode == 0, done.stderr
    got = {p["transaction_id"]: p for p in _published(client, settings.scores_stream)}
    assert len(got) == len(served) == client.xlen(settings.scores_stream)
    assert set(got) == set(served)
    for txn_id, answer in served.items():
        expected = {k: v for k, v in answer.items() if k not in NOT_COMPARED and v is not None}
        published = {k: v for k, v in got[txn_id].items() if k in answer and k not in NOT_COMPARED}
        assert published == expected, txn_id
    # the comparison is not vacuous: known customers with features, scores that differ
    assert sum(not a["missing"] for a in served.values()) >= 30
    assert len({round(a["score"], 9) for a in served.values()}) > 20
    assert client.xpending(settings.events_stream, GROUP)["pending"] == 0
    # queue-scored predictions are in the feature log, like served ones (monitoring sees them)
    from mlplatform.contracts.feature_log import read_feature_logs

    logged = read_feature_logs(settings.layout.feature_logs_dir)
    assert logged["transaction_id"].value_counts().reindex(list(served)).eq(2).all()  # served once, queued once


def test_redelivered_and_repeated_events_publish_nothing_twice(serving_settings, trained_models, online_world):
    from serving.queue_scorer import ScorerOptions, run_scorer

    settings = serving_settings(serving_record_events=False, **_streams("redeliver"))
    set_aliases(settings, golden=trained_models.versions[0])
    client = _redis(settings)
    txns = make_txns(online_world, 80, seed=23, when=trained_models.scoring_time)
    entries = [_row_fields(r) for r in txns.itertuples()]
    _xadd(client, settings.events_stream, entries)
    options = ScorerOptions(settings.events_stream, "once", settings.scores_stream, batch_size=16, idle_exit_s=0.3,
                            claim_idle_ms=0)
    totals = run_scorer(settings, client, options)
    assert (totals.scored, totals.duplicates, totals.dead) == (80, 0, 0)
    before = client.xrange(settings.scores_stream)
    assert len(before) == 80

    # every entry delivered again (as after a crash between publishing and acknowledging) ...
    client.xgroup_setid(settings.events_stream, GROUP, "0")
    # ... some read by a consumer that dies without acknowledging (claimed: --claim-idle 0) ...
    client.xreadgroup(GROUP, "ghost", {settings.events_stream: ">"}, count=30)
    # ... and the same transactions sent again as new entries
    _xadd(client, settings.events_stream, entries[:40])
    totals = run_scorer(settings, client, options)
    assert totals.scored == 0 and totals.duplicates == 120 and totals.dead == 0
    assert client.xrange(settings.scores_stream) == before  # not one entry more, none changed
    assert client.xpending(settings.events_stream, GROUP)["pending"] == 0


def test_a_malformed_event_is_dead_lettered_not_fatal(serving_settings, trained_models, online_world):
    from serving.queue_scorer import ScorerOptions, run_scorer

    settings = serving_settings(serving_record_events=False, **_streams("malformed"))
    set_aliases(settings, golden=trained_models.versions[0])
    client = _redis(settings)
    txns = make_txns(online_world, 10, seed=24, when=trained_models.scoring_time)
    good = [_row_fields(r) for r in txns.itertuples()]
    no_amount = {k: v for k, v in good[0].items() if k != "amount"} | {"transaction_id": "bad-1"}
    not_a_number = {**good[1], "transaction_id": "bad-2", "customer_id": "abc"}
    _xadd(client, settings.events_stream, [*good[:5], no_amount, not_a_number, *good[5:]])
    totals = run_scorer(settings, client, ScorerOptions(settings.events_stream, "careful", settings.scores_stream,
                                                        batch_size=4, idle_exit_s=0.3))
    assert (totals.scored, totals.dead) == (10, 2)
    assert {p["transaction_id"] for p in _published(client, settings.scores_stream)} == {
        g["transaction_id"] for g in good}
    dead = [{k.decode(): v.decode() for k, v in f.items()}
            for _, f in client.xrange(settings.scores_stream + ":dead")]
    assert len(dead) == 2
    assert "'amount' is missing" in dead[0]["reason"] and json.loads(dead[0]["fields"])["transaction_id"] == "bad-1"
    assert "not of its type" in dead[1]["reason"] and json.loads(dead[1]["fields"])["customer_id"] == "abc"
    assert client.xpending(settings.events_stream, GROUP)["pending"] == 0


def test_two_scorers_share_the_work(serving_settings, trained_models, online_world):
    settings = serving_settings(serving_record_events=False, stream_batch_size=25, **_streams("two"))
    set_aliases(settings, golden=trained_models.versions[0])
    client = _redis(settings)
    client.xgroup_create(settings.events_stream, GROUP, id="0", mkstream=True)
    procs = [_scorer(settings, name, "--quiet", "--idle-exit", "3") for name in ("left", "right")]
    deadline = time.monotonic() + 120
    while len(client.xinfo_consumers(settings.events_stream, GROUP)) < 2:  # both are waiting for entries
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.poll() for p in procs]
        time.sleep(0.05)
    txns = make_txns(online_world, 3000, seed=25, when=trained_models.scoring_time)
    entries = [_row_fields(r) for r in txns.itertuples()]
    for i in range(0, len(entries), 100):
        _xadd(client, settings.events_stream, entries[i:i + 100])
        time.sleep(0.01)
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    scored = [_scored(out) for out, _ in outputs]
    assert all(n > 0 for n in scored) and sum(scored) == 3000, scored
    ids = [p["transaction_id"] for p in _published(client, settings.scores_stream)]
    assert len(ids) == 3000 and set(ids) == {e["transaction_id"] for e in entries}
    assert client.xpending(settings.events_stream, GROUP)["pending"] == 0


def test_a_scorer_killed_mid_batch_loses_nothing_and_publishes_nothing_twice(serving_settings, trained_models,
                                                                              online_world):
    settings = serving_settings(serving_record_events=False, stream_batch_size=20, **_streams("killed"))
    set_aliases(settings, golden=trained_models.versions[0])
    client = _redis(settings)
    txns = make_txns(online_world, 20_000, seed=26, when=trained_models.scoring_time)
    entries = [_row_fields(r) for r in txns.itertuples()]
    _xadd(client, settings.events_stream, entries)
    pending = 0
    for _ in range(4):  # until a kill lands between a batch's read and its acknowledgement
        proc = _scorer(settings, "doomed", "--quiet", "--no-trim")
        deadline = time.monotonic() + 120
        target = (client.xlen(settings.scores_stream) or 0) + 1_000
        while client.xlen(settings.scores_stream) < target:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        pending = client.xpending(settings.events_stream, GROUP)["pending"]
        assert client.xlen(settings.scores_stream) < 20_000, "killed too late to tell"
        if pending:
            break
    assert pending > 0, "no kill landed inside a batch"
    done = subprocess.run([str(MLPLATFORM), "stream", "score", "--consumer", "doomed", "--quiet", "--idle-exit", "1"],
                          capture_output=True, text=True, env=process_environ(settings), timeout=600)
    assert done.returncode == 0, done.stderr
    ids = [p["transaction_id"] for p in _published(client, settings.scores_stream)]
    assert len(ids) == 20_000 and set(ids) == {e["transaction_id"] for e in entries}
    assert client.xpending(settings.events_stream, GROUP)["pending"] == 0


def test_no_model_is_a_clear_error_and_leaves_the_events_for_later(serving_settings, trained_models, online_world):
    settings = serving_settings(serving_record_events=False, **_streams("nomodel"))
    set_aliases(settings, golden=None)
    client = _redis(settings)
    txns = make_txns(online_world, 5, seed=27, when=trained_models.scoring_time)
    _xadd(client, settings.events_stream, [_row_fields(r) for r in txns.itertuples()])
    try:
        done = subprocess.run([str(MLPLATFORM), "stream", "score", "--consumer", "early", "--idle-exit", "1"],
                              capture_output=True, text=True, env=process_environ(settings), timeout=300)
    finally:
        set_aliases(settings, golden=trained_models.versions[0])
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "golden" in done.stderr + done.stdout
    assert client.xlen(settings.scores_stream) == 0
    assert client.xlen(settings.events_stream) == 5  # nothing read, nothing acknowledged: scored once a model is set
