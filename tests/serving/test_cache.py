"""The prediction cache: keyed by the exact feature vector (and model version), expiring after its TTL, disabled by
size 0, bounded (LRU) - on its own and inside the Predictor, where the oracle is the booster's own prediction and
the number of times the booster was actually asked."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from serving.cache import PredictionCache, vector_key
from serving.model_pool import PoolState
from tests.serving.fakes import (
    NAMES,
    Counting,
    StaticFeatures,
    loaded_model,
    make_predictor,
    make_requests,
    train_booster,
)

TTL = 1.0  # seconds: short, so expiry is seen by sleeping a little past it (long enough for a loaded machine)


# --- the cache on its own ---------------------------------------------------------------------------------------
def test_key_is_the_exact_feature_vector_and_the_model_version():
    cache = PredictionCache(max_entries=100, ttl_seconds=60.0)
    x = np.array([1.0, 250.0, np.nan, 3.0])
    cache.put(vector_key("fraud", 3, x), 0.25)
    assert cache.get(vector_key("fraud", 3, x.copy())) == 0.25, "the same vector (another array) hits"
    changed = [
        np.array([1.0, np.nextafter(250.0, 300.0), np.nan, 3.0]),  # one feature, one ulp away
        np.array([1.0, 250.0, 0.0, 3.0]),  # a missing feature (NaN) is not zero
        np.array([1.0, 250.0, np.nan, 3.0, 0.0]),  # one more input
        np.array([3.0, 250.0, np.nan, 1.0]),  # same values, other order
    ]
    for other in changed:
        assert cache.get(vector_key("fraud", 3, other)) is None, other
    assert cache.get(vector_key("fraud", 4, x)) is None, "another model version misses"
    assert cache.get(vector_key("other", 3, x)) is None, "another model misses"


def test_entries_expire_after_the_ttl():
    cache = PredictionCache(max_entries=100, ttl_seconds=TTL)
    key = vector_key("fraud", 1, np.array([1.0, 2.0]))
    cache.put(key, 0.5)
    assert cache.get(key) == 0.5
    time.sleep(TTL + 0.2)
    assert cache.get(key) is None and len(cache) == 0, "an expired entry is dropped"
    cache.put(key, 0.75)  # a fresh put starts a new TTL
    assert cache.get(key) == 0.75


def test_size_zero_disables_the_cache():
    cache = PredictionCache(max_entries=0, ttl_seconds=60.0)
    key = vector_key("fraud", 1, np.array([1.0, 2.0]))
    cache.put(key, 0.5)
    assert cache.get(key) is None and len(cache) == 0
    scores, hits = cache.get_many([key, key])
    assert not hits.any() and np.isnan(scores).all()


def test_bounded_least_recently_used_first():
    cache = PredictionCache(max_entries=2, ttl_seconds=60.0)
    a, b, c = (vector_key("fraud", 1, np.array([float(i)])) for i in range(3))
    cache.put(a, 0.1)
    cache.put(b, 0.2)
    assert cache.get(a) == 0.1  # a is now the most recently used
    cache.put(c, 0.3)
    assert (cache.get(a), cache.get(b), cache.get(c)) == (0.1, None, 0.3) and len(cache) == 2


def test_clear_drops_puts_computed_before_it():
    cache = PredictionCache(max_entries=10, ttl_seconds=60.0)
    key = vector_key("fraud", 1, np.array([1.0]))
    generation = cache.generation
    cache.clear()  # a model swap while a prediction was being computed
    cache.put(key, 0.5, generation)
    assert cache.get(key) is None, "a score computed by the swapped-out pool state is not cached"


# --- inside the Predictor ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def booster():
    return train_booster(1)


def _run(predictor, reqs):
    return asyncio.run(predictor.predict(reqs))


def _score(booster, values: dict) -> float:
    return float(booster.inplace_predict(np.array([[values[n] for n in NAMES]]))[0])


def test_predictor_hits_on_the_same_features_and_misses_on_a_changed_one(booster, tmp_path):
    counting = Counting(booster)
    reqs, values = make_requests(3, seed=1)
    before = {rid: _score(booster, v) for rid, v in values.items()}
    predictor = make_predictor(PoolState(golden=loaded_model(counting, 5)), StaticFeatures(values), tmp_path)
    try:
        first = _run(predictor, reqs)
        second = _run(predictor, reqs)
        # the same customers again, one of them with one feature changed (new online data arrived)
        changed = reqs[1].request_id
        values[changed] = {**values[changed], "f0": -3.0 if values[changed]["f0"] > 0 else 3.0}
        third = _run(predictor, reqs)
    finally:
        predictor.close()
        predictor.accounting.feature_log.close()
    assert [p.cached for p in first] == [False, False, False]
    assert [p.cached for p in second] == [True, True, True]
    assert [p.cached for p in third] == [True, False, True]
    assert counting.calls == 2, "the booster ran for the first batch and for the changed row only"
    for p in first + second + [third[0], third[2]]:
        assert p.score == pytest.approx(before[p.request_id], abs=1e-7)
    assert third[1].score == pytest.approx(_score(booster, values[changed]), abs=1e-7)
    assert third[1].score != pytest.approx(before[changed], abs=1e-9), "the changed feature changes the score"
    metrics = predictor.accounting.metrics.registry
    assert metrics.get_sample_value("mlplatform_cache_hits_total") == 5
    assert metrics.get_sample_value("mlplatform_cache_misses_total") == 4


def test_predictor_cache_expires_and_size_zero_never_caches(booster, tmp_path):
    reqs, values = make_requests(2, seed=2)
    counting = Counting(booster)
    predictor = make_predictor(PoolState(golden=loaded_model(counting, 5)), StaticFeatures(values), tmp_path / "ttl",
                           cache_ttl=TTL)
    try:
        _run(predictor, reqs)
        hit = _run(predictor, reqs)
        time.sleep(TTL + 0.2)
        expired = _run(predictor, reqs)
    finally:
        predictor.close()
        predictor.accounting.feature_log.close()
    assert [p.cached for p in hit] == [True, True] and [p.cached for p in expired] == [False, False]
    assert counting.calls == 2

    counting = Counting(booster)
    predictor = make_predictor(PoolState(golden=loaded_model(counting, 5)), StaticFeatures(values), tmp_path / "off",
                           cache_size=0)
    try:
        runs = [_run(predictor, reqs) for _ in range(3)]
    finally:
        predictor.close()
        predictor.accounting.feature_log.close()
    assert all(not p.cached for run in runs for p in run)
    assert counting.calls == 3, "with size 0 the booster answers every time"
    for run in runs:
        for p in run:
            assert p.score == pytest.approx(_score(booster, values[p.request_id]), abs=1e-7)
