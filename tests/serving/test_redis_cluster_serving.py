"""The service and the stream on a 3-master Redis Cluster (``redis_type: redis_cluster``) of this run's own.

Oracles: the same world materialized into a single Redis (a leased database) and served by the same model - the
cluster's answers must equal its scores exactly; the registered booster's own prediction on the offline store's
features (``get_historical_features``, DuckDB over Parquet: shares nothing with Redis); for the stream, the
brute-force windows over the raw transactions plus the posted events (``tests.oracles.customer_state``) and
``POST /v1/predict``'s answers for the transactions ``stream score`` publishes.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from serving.app import create_app
from tests.conftest import make_settings, process_environ
from tests.oracles import customer_state, read_raw
from tests.serving.conftest import booster_scores, make_txns, offline_features, set_aliases, txn_body

MLPLATFORM = Path(sys.executable).parent / "mlplatform"
ADMIN = {"X-API-Key": "test-key"}
ACTIVITY = ["txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h", "amount_sum_7d",
            "amount_mean_7d", "distinct_merchants_24h"]
TEXT = ("request_id", "transaction_id", "fallback_reason", "degraded", "decision")  # the scores stream's text fields
NOT_COMPARED = {"request_id", "cached", "latency_ms", "contributions", "contributions_error"}


@pytest.fixture(scope="module")
def cluster_world(applied_world, redis_cluster, online_world):
    """The small world's features materialized into the Redis Cluster (the event logs backfilled), once per module;
    ``online_world`` (the same world in a single Redis) is materialized first, to the same end."""
    from mlplatform.features.materialize import materialize

    redis_cluster.flush().close()
    settings = make_settings(applied_world.data_path, redis_addr=redis_cluster.addr, redis_cluster=True)
    materialize(settings, end=datetime(2030, 1, 1, tzinfo=UTC), full=True)
    return settings


def _service_settings(tmp_path, name: str, online_world, trained_models, **overrides):
    """A service's settings over the shared registries, a private data folder."""
    kwargs = {"models_dir": trained_models.models_dir, "serving_api_key": ADMIN["X-API-Key"],
              "serving_model_refresh_seconds": 0.5, "feature_log_flush_seconds": 0.2,
              "serving_latency_budget_ms": 0.0, "serving_record_events": False, "redis_addr": online_world.redis_addr}
    kwargs.update(overrides)
    return make_settings(tmp_path / name, registry=online_world.layout.registry_path, **kwargs)


def test_cluster_answers_the_single_redis_scores_exactly(tmp_path, cluster_world, online_world, trained_models,
                                                         redis_cluster, live_server, store):
    from mlplatform.models.registry import ModelRegistry

    single = _service_settings(tmp_path, "single", online_world, trained_models)
    cluster = _service_settings(tmp_path, "cluster", online_world, trained_models, redis_addr=redis_cluster.addr,
                                redis_cluster=True)
    golden = trained_models.versions[0]
    set_aliases(single, golden=golden)
    txns = make_txns(online_world, 45, seed=31, when=trained_models.scoring_time, unknown=5)
    bodies = [txn_body(r) for r in txns.itertuples()]
    answers = {}
    for name, settings in (("single", single), ("cluster", cluster)):
        with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            got = [http.post("/v1/predict", json=b) for b in bodies]
            batch = http.post("/v1/predict/batch", json={"transactions": bodies[:20]})
        assert all(r.status_code == 200 for r in got), [r.text for r in got if r.status_code != 200][:2]
        assert batch.status_code == 200, batch.text
        answers[name] = [r.json() for r in got]
        assert [p["score"] for p in batch.json()["predictions"]] == [a["score"] for a in answers[name][:20]]
    one, many = answers["single"], answers["cluster"]
    assert [a["score"] for a in many] == [a["score"] for a in one]  # exactly: the same bytes were read
    for a, b in zip(one, many, strict=True):
        assert (a["missing"], a["stale"], a["decision"]) == (b["missing"], b["stale"], b["decision"])
        assert b["model"]["version"] == golden and b["model"]["role"] == "golden"
    # the independent oracle: the booster on the offline store's features at t - 1 µs
    booster = ModelRegistry(single).load_booster(golden)
    expected = booster_scores(booster, offline_features(store, single.feature_service, txns),
                              trained_models.feature_names)
    np.testing.assert_allclose([a["score"] for a in many], expected, rtol=1e-6, atol=1e-7)
    # not vacuous: known customers with their features, unknown ones flagged, scores that differ
    assert sum(not a["missing"] for a in many) >= 30
    assert all("txn_count_24h" in a["missing"] for a in many[-5:])
    assert len({round(a["score"], 9) for a in many}) > 20
    # the rows live on every master: the reads crossed nodes
    client = redis_cluster.client()
    try:
        assert all(client.get_redis_connection(node).dbsize() > 0 for node in client.get_primaries())
    finally:
        client.close()


def _published(client, scores: str) -> dict[str, dict]:
    """The scores stream's entries by transaction id, decoded by the documented rule."""
    out = {}
    for _, fields in client.xrange(scores):
        f = {k.decode(): v.decode() for k, v in fields.items()}
        entry = {k: (v if k in TEXT else json.loads(v)) for k, v in f.items()}
        out[entry["transaction_id"]] = entry
    return out


def test_stream_on_the_cluster_events_consumer_predict_and_queue_scores(tmp_path, cluster_world, online_world,
                                                                        trained_models, redis_cluster, live_server):
    from mlplatform.stream_group import group_client
    from serving.queue_scorer import ScorerOptions, run_scorer

    settings = _service_settings(tmp_path, "stream", online_world, trained_models, redis_addr=redis_cluster.addr,
                                 redis_cluster=True, events_stream="test:cluster:events",
                                 scores_stream="test:cluster:scores")
    set_aliases(settings, golden=trained_models.versions[0])
    history = read_raw(online_world.data_path)["transactions"]
    customers = [int(c) for c in history["customer_id"].value_counts().index[:6]] + [980_001]
    start = trained_models.scoring_time
    rng = random.Random(5)
    events = [{"transaction_id": f"cl-{i}", "customer_id": rng.choice(customers),
               "merchant_id": rng.randrange(10_000, 10_010), "amount": round(rng.uniform(1.0, 400.0), 2),
               "transaction_ts": int((start + pd.Timedelta(seconds=rng.randrange(60, 3 * 3600))).timestamp())}
              for i in range(40)]
    at = start + pd.Timedelta(hours=4)  # after every event: the 1 h window holds some, the 24 h one all
    asks = pd.DataFrame({"transaction_id": [f"ask-{c}" for c in customers], "customer_id": customers,
                         "merchant_id": 10_003, "amount": 42.5, "event_timestamp": at})
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        before = [http.post("/v1/features", json=txn_body(r)).json()["features"] for r in asks.itertuples()]
        posted = http.post("/v1/events", json={"events": events}, headers=ADMIN)  # one MULTI on the stream's slot
        assert posted.status_code == 200, posted.text
        assert posted.json()["accepted"] == len(events)
        done = subprocess.run([str(MLPLATFORM), "stream", "run", "--consumer", "cluster-1", "--quiet",
                               "--idle-exit", "0.5"], capture_output=True, text=True, env=process_environ(settings),
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        after = [http.post("/v1/features", json=txn_body(r)) for r in asks.itertuples()]
        served = {r.transaction_id: http.post("/v1/predict", json=txn_body(r)) for r in asks.itertuples()}
        pushed = http.post("/v1/push", headers=ADMIN, json={"rows": [  # Feast's own writer, on the cluster
            {"customer_id": 4242, "last_amount": 77.25, "last_merchant_id": 10003, "event_timestamp": 1_791_000_000},
            {"customer_id": 4243, "last_amount": 5.5, "last_merchant_id": 10004, "event_timestamp": 1_791_000_000}]})
    assert pushed.status_code == 200, pushed.text
    status = subprocess.run([str(MLPLATFORM), "stream", "status", "--json"], capture_output=True, text=True,
                            env=process_environ(settings), timeout=60)
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    n = len(events)
    assert (st["applied_total"], st["applied_last_minute"], st["pending"], st["lag"]) == (n, n, 0, 0)
    assert all(r.status_code == 200 for r in after), [r.text for r in after if r.status_code != 200][:2]
    streamed = pd.DataFrame(events).rename(columns={"transaction_ts": "event_timestamp"})
    streamed["event_timestamp"] = pd.to_datetime(streamed["event_timestamp"], unit="s", utc=True)
    for customer, old, new in zip(customers, before, after, strict=True):
        tx = pd.concat([history[history["customer_id"] == customer], streamed[streamed["customer_id"] == customer]],
                       ignore_index=True)[["customer_id", "merchant_id", "amount", "event_timestamp"]]
        tx["event_timestamp"] = tx["event_timestamp"].astype("datetime64[us, UTC]")
        want = customer_state(tx, at - pd.Timedelta(microseconds=1))
        got = new.json()
        assert got["customer_activity"]["source"] == "event_log", got
        for name in ACTIVITY:
            g, w = got["features"][name], want[name]
            if w is None:
                assert g is None, (customer, name, g)
            elif name.startswith("amount_"):
                assert g is not None and abs(g - w) <= 5.1e-7, (customer, name, g, w)
            else:
                assert g == w, (customer, name, g, w)
        mine = int((streamed["customer_id"] == customer).sum())
        assert got["features"]["txn_count_24h"] == (old["txn_count_24h"] or 0) + mine  # the new events counted
    assert sum(int((streamed["customer_id"] == c).sum()) > 0 for c in customers) >= 5
    from mlplatform.stores import open_feature_store

    got = open_feature_store(settings).get_online_features(  # Feast's own reader of the cluster
        features=["customer_realtime:last_amount", "customer_realtime:last_merchant_id"],
        entity_rows=[{"customer_id": 4242}, {"customer_id": 4243}]).to_dict()
    assert got["last_amount"] == [77.25, 5.5] and got["last_merchant_id"] == [10003, 10004]
    # `stream score` on the cluster publishes what /v1/predict answered for the same transactions
    client = group_client(settings, block_ms=5)
    try:
        pipe = client.pipeline(transaction=False)
        for r in asks.itertuples():
            pipe.xadd("test:cluster:to-score", {
                "transaction_id": r.transaction_id, "customer_id": str(r.customer_id),
                "merchant_id": str(r.merchant_id), "amount": repr(float(r.amount)),
                "ts_us": str(int(pd.Timestamp(r.event_timestamp).timestamp()) * 1_000_000)})
        pipe.execute()
        options = ScorerOptions("test:cluster:to-score", "scorer-1", settings.scores_stream, idle_exit_s=0.5)
        totals = run_scorer(settings, client, options)
        assert (totals.scored, totals.duplicates, totals.dead) == (len(asks), 0, 0)
        again = run_scorer(settings, client, options)  # nothing new: nothing published twice
        assert again.scored == 0
        published = _published(client, settings.scores_stream)
        assert client.xpending("test:cluster:to-score", "mlplatform-scorer")["pending"] == 0
    finally:
        client.close()
    assert set(published) == set(served)
    for txn_id, response in served.items():
        assert response.status_code == 200, response.text
        answer = response.json()
        expected = {k: v for k, v in answer.items() if k not in NOT_COMPARED and v is not None}
        assert {k: v for k, v in published[txn_id].items() if k in expected} == expected, txn_id


def _master_of(client, key: str):
    """The cluster node holding ``key``, and its redis-server's process id."""
    node = client.get_node_from_key(key)
    return node, int(client.get_redis_connection(node).info("server")["process_id"])


def test_a_master_down_is_a_503_then_answers_again(tmp_path, cluster_world, online_world, trained_models,
                                                   redis_cluster, live_server):
    import os
    import signal
    import time

    from mlplatform.contracts.redis_layout import MATERIALIZED_KEY

    settings = _service_settings(tmp_path, "down", online_world, trained_models, redis_addr=redis_cluster.addr,
                                 redis_cluster=True, serving_redis_timeout_seconds=0.3)
    set_aliases(settings, golden=trained_models.versions[0])
    body = txn_body(next(make_txns(online_world, 1, seed=41, when=trained_models.scoring_time).itertuples()))
    client = redis_cluster.client()
    _, pid = _master_of(client, MATERIALIZED_KEY)  # every request reads the watermark there
    client.close()
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        ok = http.post("/v1/predict", json=body)
        assert ok.status_code == 200, ok.text
        os.kill(pid, signal.SIGSTOP)  # paused (well under the cluster's 5 s node timeout: no failover)
        try:
            t0 = time.monotonic()
            down = http.post("/v1/predict", json=body)
            waited = time.monotonic() - t0
            ready = http.get("/readyz")
        finally:
            os.kill(pid, signal.SIGCONT)
        assert down.status_code == 503 and waited < 2.0, (down.status_code, waited)
        assert down.json()["error"] == "OnlineStoreUnavailable" and "Redis" in down.json()["detail"]
        assert "Traceback" not in down.text and down.headers["retry-after"] == "1"
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("unreachable")
        again = http.post("/v1/predict", json=body)
        assert again.status_code == 200, again.text
        assert again.json()["score"] == ok.json()["score"]
        assert http.get("/readyz").status_code == 200


def test_no_reachable_node_is_a_503_without_the_password(tmp_path, online_world, trained_models, live_server):
    from tests.serving.conftest import free_port

    secret = "s3cret-cluster-pw"
    addr = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()},password={secret}"
    settings = _service_settings(tmp_path, "none", online_world, trained_models, redis_addr=addr, redis_cluster=True,
                                 serving_redis_timeout_seconds=0.3)
    set_aliases(settings, golden=trained_models.versions[0])
    body = txn_body(next(make_txns(online_world, 1, seed=42, when=trained_models.scoring_time).itertuples()))
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        down = http.post("/v1/predict", json=body)
        ready = http.get("/readyz")
        events = http.post("/v1/events", headers=ADMIN, json={"events": [{
            "transaction_id": "x1", "customer_id": 1, "merchant_id": 2, "amount": 3.0,
            "transaction_ts": body["transaction_ts"]}]})
    assert down.status_code == 503 and down.json()["error"] == "OnlineStoreUnavailable", down.text
    assert events.status_code == 503 and events.json()["error"] == "OnlineStoreUnavailable", events.text
    assert ready.status_code == 503
    for answer in (down, ready, events):
        assert secret not in answer.text and "Traceback" not in answer.text
