"""The hot path's shortcuts keep their promises: a warmed, fast model scores single rows on the event loop (same
scores as the booster itself), one that overruns the budget there falls back and is sent to the threads from then
on, a model not warmed here never runs on the loop; request ids keep uuid4().hex's shape and never repeat, in a
forked child too; the direct ``POST /v1/predict`` answers exactly what the FastAPI route answers."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time

import numpy as np
import pytest

from serving.ids import new_id
from serving.scoring import BudgetedScorer
from tests.serving.fakes import NAMES, loaded_model, train_booster


class Burning:
    """A booster that records the thread it ran on and, once ``slow`` is set, burns ``cpu_s`` of CPU first."""

    def __init__(self, booster, cpu_s: float) -> None:
        self.booster = booster
        self.cpu_s = cpu_s
        self.slow = False
        self.threads: list[str] = []

    def inplace_predict(self, X, **kwargs):
        self.threads.append(threading.current_thread().name)
        if self.slow:
            until = time.thread_time() + self.cpu_s
            while time.thread_time() < until:
                pass
        return self.booster.inplace_predict(X, **kwargs)

    def __getattr__(self, name: str):  # predict (contributions), set_param, ...: the real booster's
        return getattr(self.booster, name)


@pytest.fixture(scope="module")
def booster():
    return train_booster(11)


def _row(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, len(NAMES)))


def test_a_warmed_fast_model_scores_rows_on_the_loop(booster):
    burning = Burning(booster, 0.0)
    model = loaded_model(burning, 3)
    model.warm(4)
    assert model.row_seconds is not None and model.row_seconds < 0.002
    scorer = BudgetedScorer(latency_budget_ms=25.0)
    try:
        burning.threads.clear()
        X = _row(1)
        scores = asyncio.run(scorer.score(model, X, budget=True))
        assert burning.threads == [threading.current_thread().name]  # the loop's own thread: no hop
        np.testing.assert_allclose(scores, booster.inplace_predict(X), rtol=1e-7)
        batch = np.vstack([_row(2), _row(3)])
        burning.threads.clear()
        np.testing.assert_allclose(asyncio.run(scorer.score(model, batch, budget=True)),
                                   booster.inplace_predict(batch), rtol=1e-7)
        assert burning.threads and burning.threads[0].startswith("score")  # a batch goes to the threads
    finally:
        scorer.close()


def test_a_model_that_overruns_the_budget_on_the_loop_is_sent_to_the_threads(booster):
    burning = Burning(booster, 0.03)  # 30 ms of CPU per call once slow, over a 10 ms budget
    model = loaded_model(burning, 4)
    model.warm(4)
    scorer = BudgetedScorer(latency_budget_ms=10.0)
    try:
        burning.slow = True
        burning.threads.clear()
        with pytest.raises(TimeoutError, match="over the 10 ms budget"):
            asyncio.run(scorer.score(model, _row(), budget=True))
        assert burning.threads == [threading.current_thread().name]
        burning.threads.clear()
        with pytest.raises(TimeoutError, match="over the 10 ms budget"):
            asyncio.run(scorer.score(model, _row(), budget=True))
        assert len(burning.threads) == 1 and burning.threads[0].startswith("score")  # off the loop from then on
    finally:
        scorer.close()


def test_a_model_not_warmed_here_never_runs_on_the_loop(booster):
    burning = Burning(booster, 0.0)
    model = loaded_model(burning, 5)  # as a test or a caller builds it: no warm-up measure
    assert model.row_seconds is None
    scorer = BudgetedScorer(latency_budget_ms=25.0)
    try:
        asyncio.run(scorer.score(model, _row(), budget=True))
        assert len(burning.threads) == 1 and burning.threads[0].startswith("score")
    finally:
        scorer.close()


def test_request_ids_have_the_shape_of_uuid4_hex_and_never_repeat():
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids[:100] + ids[-100:])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's ids: its own prefix, so never one of the parent's
        os.close(read)
        os.write(write, ",".join(new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    os.waitpid(pid, 0)
    assert len(child) == 100 and not set(child) & set(ids)
    assert {c[:20] for c in child} != {i[:20] for i in ids}


def test_the_direct_path_answers_what_the_route_answers(serving_settings, trained_models, online_world, live_server):
    """A plain request takes the direct path; the same one with ``?explain=false`` (a query string) goes through
    FastAPI's route: the two answers agree field by field but the request id and latency; bad bodies get FastAPI's
    own 422 either way."""
    import httpx

    from serving.app import create_app
    from tests.serving.conftest import make_txns, set_aliases, txn_body

    settings = serving_settings(serving_cache_size=0)
    set_aliases(settings, golden=trained_models.versions[0])
    txns = make_txns(online_world, 12, seed=23, when=trained_models.scoring_time, unknown=2)
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        for r in txns.itertuples():
            body = txn_body(r)
            direct = client.post("/v1/predict", json=body)
            routed = client.post("/v1/predict", params={"explain": "false"}, json=body)
            assert direct.status_code == routed.status_code == 200, (direct.text, routed.text)
            assert direct.headers["content-type"] == routed.headers["content-type"] == "application/json"
            a, b = direct.json(), routed.json()
            assert list(a) == list(b)  # the same fields, in the same order
            for key in ("request_id", "latency_ms"):
                a.pop(key), b.pop(key)
            assert a == b
        for bad in ({"customer_id": 1, "merchant_id": 2}, {"customer_id": "x", "merchant_id": 2, "amount": 1.0}):
            direct = client.post("/v1/predict", json=bad)
            routed = client.post("/v1/predict", params={"explain": "false"}, json=bad)
            assert direct.status_code == routed.status_code == 422
            assert direct.json() == routed.json()
        garbled = client.post("/v1/predict", content=b'{"customer_id": 1,',
                              headers={"content-type": "application/json"})
        assert garbled.status_code == 422 and garbled.json()["fields"][0]["field"] == "body"
