"""Routing, shadows, cache, fallback, hot swap and feature logs, against a live service with real models.

Every score is checked against the booster's own prediction on offline features (``get_historical_features``).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pandas as pd

from mlplatform.contracts.feature_log import read_feature_logs
from serving.app import create_app
from tests.serving.conftest import booster_scores, make_txns, offline_features, set_aliases, txn_body


def _expected(settings, store, trained, txns: pd.DataFrame, versions) -> dict[int, np.ndarray]:
    from mlplatform.models.registry import ModelRegistry

    feats = offline_features(store, settings.feature_service, txns)
    registry = ModelRegistry(settings)
    return {v: booster_scores(registry.load_booster(v), feats, trained.feature_names) for v in versions}


def _wait_for_golden(client: httpx.Client, version: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = client.get("/v1/models").json()["models"]
        if any(m["role"] == "golden" and m["version"] == version for m in models):
            return
        time.sleep(0.05)
    raise AssertionError(f"golden v{version} never swapped in: {models}")


def test_ab_split_is_sticky_weighted_and_shadow_is_never_returned(serving_settings, trained_models, online_world,
                                                                   live_server, store):
    v1, v2, v3 = trained_models.versions
    weight = 0.3
    settings = serving_settings(serving_challenger_weight=weight)
    set_aliases(settings, golden=v1, challenger=v2, shadow=v3)
    n_customers = 2000  # most unknown to the world: routing does not depend on features
    when = int(trained_models.scoring_time.timestamp())
    customers = np.arange(1, n_customers + 1)
    served: dict[int, int] = {}
    request_ids: set[str] = set()
    txns = make_txns(online_world, 40, seed=7, when=trained_models.scoring_time)
    expected = _expected(settings, store, trained_models, txns, (v1, v2))
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        for rnd in range(2):
            order = np.random.default_rng(rnd).permutation(customers)
            for chunk in np.array_split(order, 8):
                body = {"transactions": [{"customer_id": int(c), "merchant_id": 1, "amount": 10.0,
                                          "transaction_ts": when} for c in chunk]}
                r = client.post("/v1/predict/batch", json=body)
                assert r.status_code == 200, r.text
                for c, p in zip(chunk, r.json()["predictions"], strict=True):
                    v = p["model"]["version"]
                    assert v != v3 and p["model"]["role"] in ("golden", "challenger")
                    assert served.setdefault(int(c), v) == v, f"customer {c} switched models"
                    request_ids.add(p["request_id"])
        share = sum(v == v2 for v in served.values()) / n_customers
        tolerance = 4 * np.sqrt(weight * (1 - weight) / n_customers)
        assert abs(share - weight) < tolerance, share
        # known customers: the routed model's score equals that model's prediction on offline features
        for i, row in enumerate(txns.itertuples()):
            p = client.post("/v1/predict", json=txn_body(row)).json()
            request_ids.add(p["request_id"])
            assert p["model"]["version"] in (v1, v2)
            assert abs(p["score"] - expected[p["model"]["version"]][i]) < 1e-6
        srv.stop()  # graceful: shadows finish, the feature log is flushed
    logs = read_feature_logs(settings.layout.feature_logs_dir)
    served_rows = logs[logs["served"]]
    shadow_rows = logs[logs["role"] == "shadow"]
    assert set(served_rows["request_id"]) == request_ids and len(served_rows) == len(request_ids)
    assert set(shadow_rows["request_id"]) == request_ids and set(shadow_rows["model_version"]) == {v3}
    assert not shadow_rows["served"].any()
    # the shadow's logged prediction is v3's own prediction on the logged inputs
    from mlplatform.models.registry import ModelRegistry

    b3 = ModelRegistry(settings).load_booster(v3)
    np.testing.assert_allclose(shadow_rows["prediction"], booster_scores(b3, shadow_rows, trained_models.feature_names),
                               rtol=1e-6, atol=1e-7)
    # logged inputs of served known transactions equal the offline features
    known = served_rows.dropna(subset=["transaction_id"]).set_index("transaction_id")
    feats = offline_features(store, settings.feature_service, txns).set_index("row_id")
    for name in trained_models.feature_names:
        got = known.loc[txns["transaction_id"].astype(str), name].to_numpy(dtype=float)
        exp = pd.to_numeric(feats.loc[txns["transaction_id"], name]).to_numpy(dtype=float)
        np.testing.assert_allclose(got, exp, rtol=1e-9, equal_nan=True, err_msg=name)


def test_cache_hit_then_invalidated_by_model_swap(serving_settings, trained_models, online_world, live_server, store):
    v1, v2, _ = trained_models.versions
    settings = serving_settings()
    set_aliases(settings, golden=v1)
    txns = make_txns(online_world, 3, seed=11, when=trained_models.scoring_time)
    expected = _expected(settings, store, trained_models, txns, (v1, v2))
    body = txn_body(next(txns.itertuples()))
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        first = client.post("/v1/predict", json=body).json()
        second = client.post("/v1/predict", json=body).json()
        assert (first["cached"], second["cached"]) == (False, True)
        assert first["score"] == second["score"] and abs(first["score"] - expected[v1][0]) < 1e-6
        assert "mlplatform_cache_hits_total 1.0" in client.get("/metrics").text
        set_aliases(settings, golden=v2, previous=v1)  # promoted through the registry
        _wait_for_golden(client, v2)
        third = client.post("/v1/predict", json=body).json()
        assert third["cached"] is False and third["model"]["version"] == v2
        assert abs(third["score"] - expected[v2][0]) < 1e-6


def test_fallback_to_previous_golden_on_failing_model_and_latency_budget(serving_settings, trained_models,
                                                                         online_world, live_server, store):
    from mlplatform.models.registry import ModelRegistry

    v1, v2, v3 = trained_models.versions
    settings = serving_settings()
    registry = ModelRegistry(settings)
    # a real model whose file gets damaged after registration: the golden cannot load
    broken = registry.register(registry.load_booster(v3), feature_names=trained_models.feature_names,
                               feature_types=trained_models.feature_types, feature_service=settings.feature_service,
                               metrics={}, params={}, lineage={"fingerprint": "broken"})
    broken.booster_path.write_bytes(b"not a booster")
    txns = make_txns(online_world, 4, seed=5, when=trained_models.scoring_time)
    expected = _expected(settings, store, trained_models, txns, (v1, v2))
    set_aliases(settings, golden=broken.version, previous=v1)
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        for i, row in enumerate(txns.itertuples()):
            p = client.post("/v1/predict", json=txn_body(row)).json()
            assert p["fallback"] is True and p["model"] == {"name": settings.model_name, "version": v1,
                                                             "role": "previous_golden"}
            assert f"v{broken.version}" in p["fallback_reason"]
            assert abs(p["score"] - expected[v1][i]) < 1e-6
        assert 'mlplatform_fallbacks_total{reason="golden_unavailable"} 4.0' in client.get("/metrics").text
    # a golden that cannot answer within the latency budget: the previous golden answers
    settings = serving_settings(serving_latency_budget_ms=1e-6)
    set_aliases(settings, golden=v2, previous=v1)
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        p = client.post("/v1/predict", json=txn_body(next(txns.itertuples()))).json()
        assert p["fallback"] is True and p["model"]["version"] == v1 and "latency budget" in p["fallback_reason"]
        assert abs(p["score"] - expected[v1][0]) < 1e-6
        assert 'mlplatform_fallbacks_total{reason="latency_budget"} 1.0' in client.get("/metrics").text


def test_hot_swap_under_concurrent_requests_fails_nothing(serving_settings, trained_models, online_world,
                                                          live_server, store):
    v1, v2, _ = trained_models.versions
    settings = serving_settings(serving_model_refresh_seconds=0.2, serving_cache_size=0)
    set_aliases(settings, golden=v1)
    txns = make_txns(online_world, 50, seed=13, when=trained_models.scoring_time)
    expected = _expected(settings, store, trained_models, txns, (v1, v2))
    bodies = [txn_body(r) for r in txns.itertuples()]

    async def hammer(url: str) -> list[tuple[int, dict, int]]:
        results: list[tuple[int, dict, int]] = []
        stop = asyncio.Event()

        async def worker(k: int, client: httpx.AsyncClient) -> None:
            i = k
            while not stop.is_set():
                r = await client.post("/v1/predict", json=bodies[i % len(bodies)])
                results.append((r.status_code, r.json(), i % len(bodies)))
                i += 7

        async def swapper() -> None:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(set_aliases, settings, v2, v1)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if any(s == 200 and b["model"]["version"] == v2 for s, b, _ in results[-20:]):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            stop.set()

        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await asyncio.gather(swapper(), *(worker(k, client) for k in range(8)))
        return results

    with live_server(create_app(settings)) as srv:
        results = asyncio.run(hammer(srv.url))
    assert len(results) > 100
    assert [s for s, _, _ in results if s != 200] == []
    versions = [b["model"]["version"] for _, b, _ in results]
    assert versions[0] == v1 and versions[-1] == v2 and set(versions) == {v1, v2}
    for _, b, i in results:
        assert abs(b["score"] - expected[b["model"]["version"]][i]) < 1e-6
        assert b["fallback"] is False
