"""The fallback chain when a model fails: a golden that raises, a golden that hangs past its budget, no previous
golden to fall back to (503), and a failing challenger (the golden answers, in its own role).

Unit tests drive FallbackChain and Predictor with real XGBoost boosters wrapped to fail; the oracle for every score
is the unwrapped booster's own ``inplace_predict`` on the same rows. The last test does it through the live service
(real Redis features, registered models), where the oracle is the booster on ``get_historical_features``.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from mlplatform.errors import ModelUnavailable
from serving.accounting import Accounting
from serving.dispatcher import CHALLENGER, GOLDEN, PREVIOUS_GOLDEN, Dispatcher
from serving.feature_log import FeatureLogWriter
from serving.metrics import ServingMetrics
from serving.model_pool import LoadedModel, PoolState
from serving.scoring import HANG_GRACE_S, BudgetedScorer, FallbackChain
from tests.serving.fakes import (
    NAMES,
    Hanging,
    Raising,
    StaticFeatures,
    loaded_model,
    make_predictor,
    make_requests,
    train_booster,
)


@pytest.fixture(scope="module")
def boosters():
    """Three different real boosters: golden, previous golden, challenger."""
    return {"golden": train_booster(1), "previous": train_booster(2), "challenger": train_booster(3)}


@pytest.fixture()
def X():
    rng = np.random.default_rng(42)
    X = rng.normal(size=(5, len(NAMES)))
    X[1, 2] = np.nan
    return X


@pytest.fixture()
def accounting(tmp_path):
    return Accounting(ServingMetrics(), FeatureLogWriter(tmp_path / "logs"))


def _fallbacks(accounting: Accounting, reason: str) -> float:
    value = accounting.metrics.registry.get_sample_value("mlplatform_fallbacks_total", {"reason": reason})
    return value or 0.0


def _answer(chain: FallbackChain, route, X: np.ndarray):
    async def matrix(_model):
        return X

    return asyncio.run(chain.answer(route, matrix, len(X)))


def _expected(booster, X: np.ndarray) -> np.ndarray:
    return np.asarray(booster.inplace_predict(X), dtype=np.float64)


# --- unit: FallbackChain over the dispatcher's real routes -----------------------------------------------------
def test_golden_that_raises_hands_over_to_the_previous_golden(boosters, X, accounting):
    golden, previous = Raising(boosters["golden"]), boosters["previous"]
    state = PoolState(golden=loaded_model(golden, 7), previous_golden=loaded_model(previous, 6))
    route = Dispatcher(0.0, "salt").route(state, 1)
    chain = FallbackChain(BudgetedScorer(latency_budget_ms=1000.0), accounting)
    try:
        answer = _answer(chain, route, X)
    finally:
        chain.close()
    assert golden.calls == 1
    assert answer.candidate.role == PREVIOUS_GOLDEN and answer.candidate.model.version == 6
    np.testing.assert_allclose(answer.scores, _expected(previous, X), rtol=1e-7)
    assert not np.allclose(answer.scores, _expected(boosters["golden"], X)), "the two models must differ"
    assert answer.reason == "fraud v7 failed: RuntimeError: boom: the booster is broken"
    assert _fallbacks(accounting, "model_error") == len(X)
    assert _fallbacks(accounting, "latency_budget") == 0


def test_golden_that_hangs_is_abandoned_at_budget_plus_grace(boosters, X, accounting):
    budget_ms = 50.0
    golden, previous = Hanging(boosters["golden"]), boosters["previous"]
    state = PoolState(golden=loaded_model(golden, 7), previous_golden=loaded_model(previous, 6))
    route = Dispatcher(0.0, "salt").route(state, 1)
    chain = FallbackChain(BudgetedScorer(latency_budget_ms=budget_ms), accounting)
    try:
        t0 = time.perf_counter()
        answer = _answer(chain, route, X)
        took = time.perf_counter() - t0
        assert golden.started.is_set() and not golden.release.is_set(), "the golden was still hanging"
    finally:
        golden.release.set()  # let the abandoned thread finish, so the pool can close
        chain.close()
    cutoff = budget_ms / 1000 + HANG_GRACE_S
    assert cutoff - 0.02 <= took < cutoff + 2.0, f"answered after {took:.3f} s; the cut-off is {cutoff:.3f} s"
    assert answer.candidate.role == PREVIOUS_GOLDEN and answer.candidate.model.version == 6
    np.testing.assert_allclose(answer.scores, _expected(previous, X), rtol=1e-7)
    assert answer.reason == "fraud v7 failed: over the 50 ms latency budget"
    assert _fallbacks(accounting, "latency_budget") == len(X)
    assert _fallbacks(accounting, "model_error") == 0


def test_without_a_previous_golden_a_failing_golden_is_model_unavailable(boosters, X, accounting):
    golden = Raising(boosters["golden"])
    route = Dispatcher(0.0, "salt").route(PoolState(golden=loaded_model(golden, 7)), 1)
    assert [c.role for c in route.chain] == [GOLDEN], "nothing to fall back to"
    chain = FallbackChain(BudgetedScorer(latency_budget_ms=1000.0), accounting)
    try:
        with pytest.raises(ModelUnavailable) as caught:
            _answer(chain, route, X)
    finally:
        chain.close()
    assert str(caught.value) == ("every model on the route failed; last: fraud v7 failed: RuntimeError: boom: the "
                                 "booster is broken")
    assert caught.value.http_status == 503
    # and no golden at all: the dispatcher refuses before any model or feature is touched
    with pytest.raises(ModelUnavailable, match="no model can answer: no golden model in the registry"):
        Dispatcher(0.0, "salt").route(PoolState(golden_error="no golden model in the registry"), 1)


# --- unit: a failing challenger, through the Predictor ---------------------------------------------------------
def test_failing_challenger_is_answered_by_the_golden_in_its_own_role(boosters, tmp_path):
    from mlplatform.contracts.feature_log import read_feature_logs

    challenger = Raising(boosters["challenger"])
    state = PoolState(golden=loaded_model(boosters["golden"], 7), previous_golden=loaded_model(boosters["previous"], 6),
                      challengers=[loaded_model(challenger, 8)])
    reqs, values = make_requests(4)
    predictor = make_predictor(state, StaticFeatures(values), tmp_path, challenger_weight=1.0)  # every customer: A/B
    try:
        preds = asyncio.run(predictor.predict(reqs))
        again = asyncio.run(predictor.predict(reqs))
    finally:
        predictor.close()
        predictor.accounting.feature_log.close()
    X = np.array([[values[r.request_id][n] for n in NAMES] for r in reqs])
    expected = _expected(boosters["golden"], X)
    for p, exp in zip(preds, expected, strict=True):
        assert (p.model.version, p.role, p.fallback) == (7, GOLDEN, True)
        assert p.fallback_reason == "fraud v8 failed: RuntimeError: boom: the booster is broken"
        assert abs(p.score - exp) < 1e-7
    # a fallback answer is not cached under the challenger: the challenger is asked again next time
    assert [p.cached for p in again] == [False] * len(reqs) and challenger.calls == 2
    assert {(p.model.version, p.role) for p in again} == {(7, GOLDEN)}
    metrics = predictor.accounting.metrics.registry
    assert metrics.get_sample_value("mlplatform_fallbacks_total", {"reason": "model_error"}) == 2 * len(reqs)
    assert metrics.get_sample_value("mlplatform_predictions_total",
                                    {"model": "fraud", "version": "7", "role": GOLDEN}) == 2 * len(reqs)
    assert metrics.get_sample_value("mlplatform_predictions_total",
                                    {"model": "fraud", "version": "8", "role": CHALLENGER}) is None
    logged = read_feature_logs(tmp_path / "feature_logs")  # the role is recorded in the feature log too
    assert len(logged) == 2 * len(reqs)
    assert set(zip(logged["model_version"], logged["role"], logged["fallback"], strict=True)) == {(7, GOLDEN, True)}
    assert logged["fallback_reason"].str.contains("fraud v8 failed").all()


# --- the live service: 503 bodies, and a hung golden answered by the previous one -------------------------------
def test_live_service_fallback_and_503s(serving_settings, trained_models, online_world, live_server, store):
    import httpx

    from mlplatform.models.registry import ModelRegistry
    from serving.app import create_app
    from tests.serving.conftest import booster_scores, make_txns, offline_features, set_aliases, txn_body

    v1, v2, _ = trained_models.versions
    settings = serving_settings(serving_latency_budget_ms=50.0, serving_model_refresh_seconds=3600.0,
                                serving_cache_size=0)
    set_aliases(settings, golden=None)  # the registry holds versions, but none is golden
    registry = ModelRegistry(settings)
    txns = make_txns(online_world, 3, seed=17, when=trained_models.scoring_time)
    bodies = [txn_body(r) for r in txns.itertuples()]
    feats = offline_features(store, settings.feature_service, txns)
    expected_v1 = booster_scores(registry.load_booster(v1), feats, trained_models.feature_names)

    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        r = client.post("/v1/predict", json=bodies[0])
        assert r.status_code == 503 and r.headers.get("retry-after") == "1"
        assert r.json()["error"] == "ModelUnavailable"
        assert "no model can answer: no golden model in the registry" in r.json()["detail"]

        ctx = srv.app.state.ctx
        # a golden that raises, with no previous golden: 503, and the body says why
        ctx.pool.state = PoolState(golden=LoadedModel(registry.get(v2), Raising(None)))
        r = client.post("/v1/predict", json=bodies[0])
        assert r.status_code == 503 and r.headers.get("retry-after") == "1"
        body = r.json()
        assert (body["error"], body["detail"]) == (
            "ModelUnavailable", f"every model on the route failed; last: {settings.model_name} v{v2} failed: "
                                "RuntimeError: boom: the booster is broken")
        # a golden that hangs, with a previous golden: answered by it, naming the budget (last: the abandoned
        # threads keep the scoring pool busy until released)
        hung = Hanging(registry.load_booster(v2))
        try:
            ctx.pool.state = PoolState(golden=LoadedModel(registry.get(v2), hung),
                                       previous_golden=LoadedModel(registry.get(v1), registry.load_booster(v1)))
            for body, exp in zip(bodies, expected_v1, strict=True):
                p = client.post("/v1/predict", json=body).json()
                assert p["model"] == {"name": settings.model_name, "version": v1, "role": "previous_golden"}
                assert p["fallback"] is True
                assert p["fallback_reason"] == f"{settings.model_name} v{v2} failed: over the 50 ms latency budget"
                assert abs(p["score"] - exp) < 1e-6
            metrics = client.get("/metrics").text
            assert f'mlplatform_fallbacks_total{{reason="latency_budget"}} {float(len(bodies))}' in metrics
        finally:
            hung.release.set()
