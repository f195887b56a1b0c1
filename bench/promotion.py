"""Promotion benchmarks: 2 × 50 concurrent promotions (winners per round, goal exactly 1), and promotions or
rollbacks SIGKILLed at a random point of their write window then recovered (rounds left consistent, goal all).

Setup: a throw-away model registry with three synthetic models: v1 weak (shuffled labels), v2 and v3 one good
booster registered twice (twins: whichever is promoted second gains nothing, so the gate refuses it).

- Concurrent: each round force-promotes v1, then two processes wait at a barrier and ask the gate to promote v2
  and v3 at the same moment. A round is right when exactly one says "promoted", the other "refused", MLflow's
  rows say golden = the winner and previous_golden = v1, and the audit log gained exactly those two records.
  Both processes' [start, end] intervals must overlap, or the round did not test anything (counted).
- Crash: each round promotes a random other version or rolls back, in its own process, killed with SIGKILL at a
  seeded random fault point (mlplatform.models.promotion.FAULT_POINTS) or after a random delay while every
  point sleeps 20 ms; then `recover_pending`. A round is consistent when MLflow's rows equal the old or the new
  state (golden ≠ previous_golden), the audit log gained one record if and only if the aliases changed, and a
  reader saw that same state before recovery. After the last round, a rollback must restore the right version.

Processes are forked by a forkserver that imported MLflow and XGBoost once: a round costs a fork, not an
interpreter start. Every run is bounded (a fixed number of rounds) and stops by itself.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

NAMES = ["a", "b", "c"]
PRELOAD = ["mlflow", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store",
           "mlflow.store.model_registry.sqlalchemy_store", "alembic.script", "alembic.runtime.migration",
           "xgboost", "sklearn.metrics", "pandas", "pyarrow.parquet", "mlplatform.models.promotion",
           "mlplatform.audit", "mlplatform.notifications", __name__]
CHANGES = ("promote", "force_promote", "rollback")
WAIT = 120.0


def _registry(tmp: Path):
    """Settings of a fresh registry holding v1 (weak), v2 and v3 (twins)."""
    import xgboost as xgb

    from mlplatform.models.registry import ModelRegistry
    from mlplatform.settings import Settings

    settings = Settings(_env_file=None, data_dir=tmp, webhooks=[])
    rng = np.random.default_rng(0)
    n = 1200
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + 0.6 * rng.normal(size=n) > 1.0).astype(int)
    frame = pd.DataFrame(x, columns=NAMES).assign(is_fraud=y, amount=rng.lognormal(3.0, 0.5, n),
                                                  split=np.where(np.arange(n) < n // 2, "train", "test"))
    path = tmp / "training_set.parquet"
    frame.to_parquet(path)
    half = n // 2

    def fit(labels: np.ndarray, rounds: int) -> xgb.Booster:
        return xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0},
                         xgb.DMatrix(x[:half], label=labels[:half], feature_names=NAMES), num_boost_round=rounds)

    good = fit(y, 8)
    registry = ModelRegistry(settings)
    for booster in (fit(np.random.default_rng(1).permutation(y), 3), good, good):
        registry.register(booster, feature_names=NAMES, feature_types=["Float64"] * 3, feature_service="bench",
                          metrics={}, params={}, lineage={"fingerprint": "bench"}, training_set_path=path)
    return settings


def _db(settings) -> tuple[int | None, int | None]:
    """(golden, previous_golden) straight from MLflow's SQLite rows."""
    con = sqlite3.connect(f"file:{settings.layout.models_path / 'mlflow.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = dict(con.execute("SELECT alias, version FROM registered_model_aliases WHERE name = ?",
                                (settings.model_name,)).fetchall())
    finally:
        con.close()
    return rows.get("golden"), rows.get("previous_golden")


def _records(settings) -> list[dict]:
    path = settings.layout.audit_log
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1] if line.strip()]


def _worker(settings, op: str, version: int | None, force: bool, stop_at: str | None, pause: float,
            started, reached, barrier, results) -> None:
    """One promotion or rollback in this process; waits at ``stop_at`` (a fault point) to be killed."""
    from mlplatform.errors import MLPlatformError
    from mlplatform.models import promotion
    from mlplatform.models.registry import ModelRegistry

    def hook(point: str) -> None:
        if pause:
            time.sleep(pause)
        if point == stop_at:
            reached.set()
            time.sleep(600)

    promotion.FAULT_HOOK = hook
    ModelRegistry(settings).db_aliases()  # open MLflow's database before the race starts
    if barrier is not None:
        barrier.wait(timeout=WAIT)
    started.set()
    t0 = time.time()
    try:
        if op == "promote":
            action = promotion.promote_model(settings, version, force=force, actor=f"bench-{os.getpid()}").action
        else:
            action = promotion.rollback(settings, actor=f"bench-{os.getpid()}").action
    except MLPlatformError as exc:
        action = f"error: {exc}"
    results.put((version, action, t0, time.time()))


def _start(ctx, settings, op, version=None, *, force=True, stop_at=None, pause=0.0, barrier=None):
    started, reached, results = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_worker, args=(settings, op, version, force, stop_at, pause, started, reached,
                                             barrier, results), daemon=True)
    proc.start()
    return proc, started, reached, results


def _outcome(proc, results) -> tuple:
    """The worker's (version, action, start, end), or a failure if it died without answering."""
    import queue

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.2)
        except queue.Empty:
            if not proc.is_alive() and results.empty():
                return (None, f"died with exit code {proc.exitcode}", 0.0, 0.0)
    return (None, "no answer", 0.0, 0.0)


def _kill(proc) -> None:
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(WAIT)


def _concurrent(ctx, settings, rounds: int) -> dict:
    """``rounds`` rounds of two processes promoting twins at once."""
    from mlplatform.models.promotion import promote_model

    winners, right, overlapped, seconds = [], 0, 0, []
    for i in range(rounds):
        promote_model(settings, 1, force=True, reason=f"bench baseline {i}")
        before = len(_records(settings))
        barrier = ctx.Barrier(2)
        workers = [_start(ctx, settings, "promote", v, force=False, barrier=barrier) for v in (2, 3)]
        outcomes = []
        try:
            for proc, _started, _reached, results in workers:
                outcomes.append(_outcome(proc, results))
                proc.join(WAIT)
        finally:
            for proc, *_ in workers:
                _kill(proc)
        won = [o for o in outcomes if o[1] == "promoted"]
        winners.append(len(won))
        overlapped += max(o[2] for o in outcomes) < min(o[3] for o in outcomes)
        seconds.extend(o[3] - o[2] for o in outcomes)
        new = sorted(r["action"] for r in _records(settings)[before:])
        right += (len(won) == 1 and sorted(o[1] for o in outcomes) == ["promoted", "refused"]
                  and _db(settings) == (won[0][0], 1) and new == ["promote", "promote_refused"])
    return {"winners": winners, "right": right, "overlapped": overlapped, "seconds": seconds}


def _crash(ctx, settings, rounds: int, seed: int = 5) -> dict:
    """``rounds`` promotions or rollbacks SIGKILLed at a seeded random point, each followed by recovery."""
    from mlplatform.models.promotion import FAULT_POINTS, recover_pending, rollback
    from mlplatform.models.registry import ModelRegistry

    rng = random.Random(seed)
    consistent, between, forward, history = 0, 0, 0, []
    golden, previous = _db(settings)
    for _ in range(rounds):
        op = "rollback" if previous is not None and rng.random() < 0.35 else "promote"
        version = rng.choice([v for v in (1, 2, 3) if v != golden]) if op == "promote" else None
        if op == "promote":
            after = (version, golden)
        else:
            earlier = next((b for b, a in reversed(history) if a == previous), None)
            after = (previous, earlier if earlier not in (None, previous, golden) else None)
        stop_at = rng.choice([*FAULT_POINTS, None, None])
        records_before = [r for r in _records(settings) if r["action"] in CHANGES]
        proc, started, reached, _results = _start(ctx, settings, op, version, stop_at=stop_at,
                                                  pause=0.0 if stop_at else 0.02)
        try:
            if stop_at is not None:
                reached.wait(WAIT)
            else:
                started.wait(WAIT)
                time.sleep(rng.uniform(0.0, 0.5))
        finally:
            _kill(proc)
        if stop_at == "alias_written" and op == "promote" and _db(settings) == (golden, golden):
            between += 1
        reader = ModelRegistry(settings)
        seen = tuple(m.version if m else None for m in (reader.golden(), reader.previous_golden()))
        forward += recover_pending(settings) is not None
        state = _db(settings)
        new = [r for r in _records(settings) if r["action"] in CHANGES][len(records_before):]
        ok = state == seen and state[0] != state[1] and state in ((golden, previous), after)
        ok &= len(new) == (state != (golden, previous))
        if ok and new:
            d = new[0]["details"]
            ok &= (d["golden_before"], d["golden_after"], d["previous_golden_after"]) == (golden, *after)
        consistent += ok
        if state == after and op == "promote":
            history.append((golden, version))
        golden, previous = state
    if previous is None:  # the last round left nothing to roll back to: promote once more, then roll back
        from mlplatform.models.promotion import promote_model

        promote_model(settings, next(v for v in (1, 2, 3) if v != golden), force=True, reason="bench")
        previous = golden
    rollback(settings, reason="bench: after the crash rounds")
    restored = _db(settings)[0] == previous
    return {"consistent": consistent, "between": between, "forward": forward, "restored": restored}


def run(quick: bool) -> list[dict]:
    """Benchmark rows: winners per round of 2 concurrent promotions; consistency after killed promotions."""
    concurrent_rounds, crash_rounds = (10, 8) if quick else (50, 20)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-promotion-") as tmp:
        settings = _registry(Path(tmp))
        t0 = time.perf_counter()
        conc = _concurrent(ctx, settings, concurrent_rounds)
        conc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        crash = _crash(ctx, settings, crash_rounds)
        crash_s = time.perf_counter() - t0
    winners = conc["winners"]
    exactly_one = sum(w == 1 for w in winners)
    label = f"2 × {concurrent_rounds} concurrent promotions"
    return [
        {"benchmark": f"promotion: {label}", "metric": "winners per round (goal: exactly 1)",
         "value": statistics.mean(winners), "unit": "winners",
         "note": f"exactly 1 in {exactly_one}/{len(winners)} rounds (min {min(winners)}, max {max(winners)}); "
                 f"both processes overlapped in {conc['overlapped']}/{len(winners)}; {conc_s:.0f}s"},
        {"benchmark": f"promotion: {label}", "metric": "rounds fully right", "value": conc["right"],
         "unit": f"of {len(winners)}",
         "note": "promoted + refused, golden = winner, previous = baseline, exactly those 2 audit records"},
        {"benchmark": f"promotion: {label}", "metric": "one contended promotion, p50",
         "value": statistics.median(conc["seconds"]), "unit": "s",
         "note": f"from the barrier to the answer (gate + lock wait + write ahead + aliases + record); "
                 f"max {max(conc['seconds']):.2f}s"},
        {"benchmark": f"promotion: {crash_rounds} promotions/rollbacks SIGKILLed",
         "metric": "rounds consistent after recovery (goal: all)", "value": crash["consistent"],
         "unit": f"of {crash_rounds}",
         "note": f"old or new state, one record per alias change, readers saw it before recovery; "
                 f"{crash['between']} killed between the two alias writes, {crash['forward']} rolled forward; "
                 f"rollback afterwards right: {'yes' if crash['restored'] else 'NO'}; {crash_s:.0f}s"},
    ]
