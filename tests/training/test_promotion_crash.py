"""Promotion as one crash-safe state change, tried with real processes: promotions and rollbacks SIGKILLed at
every point of their write window and at seeded random moments, then recovered; two processes promoting at once;
`mlplatform models rollback` and the pipeline's gate step right after a crash.

Oracles, none of them the registry code: MLflow's alias rows read straight from its SQLite file with ``sqlite3``,
the audit log's raw JSON lines, and the test's own model of what a promotion or rollback must leave behind
(promote c over golden g: golden c, previous_golden g; rollback: the previous golden back, and before it the golden
that one replaced, from the test's own history of promotions).

Workers are forked by a ``forkserver`` that has imported MLflow, XGBoost and pandas once, so a round costs a
fork, not a 5-second interpreter start. The kill points are named by ``mlplatform.models.promotion.FAULT_POINTS``:
a worker stops at its round's point and the test SIGKILLs it there.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlplatform.errors import MLPlatformError
from mlplatform.models import promotion
from mlplatform.models.promotion import promote_model, recover_pending, rollback
from mlplatform.models.registry import CHALLENGER, GOLDEN, PREVIOUS_GOLDEN, ModelRegistry
from mlplatform.settings import Settings

NAMES = ["a", "b", "c"]
PRELOAD = ["mlflow", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store",
           "mlflow.store.model_registry.sqlalchemy_store", "alembic.script", "alembic.runtime.migration",
           "xgboost", "sklearn.metrics", "pandas", "pyarrow.parquet", "pytest", "mlplatform.models.promotion",
           "mlplatform.audit", "mlplatform.notifications", __name__]
CHANGES = ("promote", "force_promote", "rollback")  # the audit actions that move aliases
SEED = 12
WAIT = 60.0  # seconds any single wait may take before the test fails (a loaded 2-core machine is slow)


# --- a small registry: synthetic models, no Redis --------------------------------------------------------------
def _data(seed: int = 0, n: int = 1200) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + 0.6 * rng.normal(size=n) > 1.0).astype(int)
    return pd.DataFrame(x, columns=NAMES).assign(is_fraud=y, amount=rng.lognormal(3.0, 0.5, n),  # for the suite
                                                 split=np.where(np.arange(n) < n // 2, "train", "test"))


def _fit(frame: pd.DataFrame, labels: np.ndarray, rounds: int) -> xgb.Booster:
    train = frame[frame["split"] == "train"]
    return xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0},
                     xgb.DMatrix(train[NAMES].to_numpy(), label=labels[: len(train)], feature_names=NAMES),
                     num_boost_round=rounds)


@pytest.fixture()
def small_registry(tmp_path, fresh_models) -> Settings:
    """v1 weak (shuffled labels), v2 and v3 one good model registered twice (twins), v4 another good one."""
    from tests.conftest import make_settings

    settings = fresh_models(make_settings(tmp_path))
    frame = _data()
    path = tmp_path / "training_set.parquet"
    frame.to_parquet(path)
    y = frame["is_fraud"].to_numpy()
    good = _fit(frame, y, 8)
    boosters = [_fit(frame, np.random.default_rng(1).permutation(y), 3), good, good, _fit(frame, y, 4)]
    registry = ModelRegistry(settings)
    for i, booster in enumerate(boosters, start=1):
        mv = registry.register(booster, feature_names=NAMES, feature_types=["Float64"] * 3, feature_service="svc",
                               metrics={}, params={}, lineage={"fingerprint": f"fp{i}"}, training_set_path=path)
        assert mv.version == i
    return settings


# --- independent views of the state ----------------------------------------------------------------------------
def _db(settings: Settings) -> dict[str, int]:
    """alias -> version straight from MLflow's SQLite rows."""
    con = sqlite3.connect(f"file:{settings.layout.models_path / 'mlflow.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("SELECT alias, version FROM registered_model_aliases WHERE name = ?",
                           (settings.model_name,)).fetchall()
    finally:
        con.close()
    return {alias: int(version) for alias, version in rows}


def _records(settings: Settings) -> list[dict]:
    """Every complete line of the audit log, parsed here (a torn last line is not a record)."""
    path = settings.layout.audit_log
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1] if line.strip()]


def _changes(settings: Settings) -> list[dict]:
    return [r for r in _records(settings) if r["action"] in CHANGES]


def _state(aliases: dict[str, int]) -> tuple[int | None, int | None]:
    return aliases.get(GOLDEN), aliases.get(PREVIOUS_GOLDEN)


def _read(settings: Settings) -> tuple[int | None, int | None]:
    """What a reader (serving, `models list`) sees through the registry right now."""
    registry = ModelRegistry(settings)
    golden, previous = registry.golden(), registry.previous_golden()
    return (golden.version if golden else None), (previous.version if previous else None)


class Model:
    """The test's own account of the golden chain: what each promotion and rollback must leave behind."""

    def __init__(self, golden: int | None, previous: int | None):
        self.golden, self.previous = golden, previous
        self.promotions: list[tuple[int | None, int]] = []  # (golden before, golden after)

    def after_promote(self, version: int) -> tuple[int | None, int | None]:
        return version, self.golden

    def after_rollback(self) -> tuple[int | None, int | None]:
        target = self.previous
        earlier = next((before for before, after in reversed(self.promotions) if after == target), None)
        return target, (earlier if earlier not in (None, target, self.golden) else None)

    def commit(self, op: str, state: tuple[int | None, int | None]) -> None:
        if op == "promote":
            self.promotions.append((self.golden, state[0]))
        self.golden, self.previous = state


# --- workers: one promotion or rollback per process ------------------------------------------------------------
def _worker(settings: Settings, op: str, version: int | None, force: bool, stop_at: tuple[str, int] | None,
            pause: float, started, reached, barrier, results) -> None:
    """Run ``op`` in this process; stop at ``stop_at`` = (fault point, nth time) and wait there to be killed."""
    seen: dict[str, int] = {}

    def hook(point: str) -> None:
        seen[point] = seen.get(point, 0) + 1
        if pause:
            time.sleep(pause)
        if stop_at is not None and (point, seen[point]) == stop_at:
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
            result = promote_model(settings, version, force=force, actor=f"worker-{os.getpid()}")
        else:
            result = rollback(settings, actor=f"worker-{os.getpid()}")
        outcome = result.action
    except MLPlatformError as exc:
        outcome = f"error: {exc}"
    results.put((version, outcome, t0, time.time()))


@pytest.fixture(scope="module")
def procs():
    """A multiprocessing context whose forkserver preloaded the heavy imports."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


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


# --- the tests -------------------------------------------------------------------------------------------------
def _plan(rng: random.Random) -> list[tuple[str, tuple[str, int] | None]]:
    """Every kill point of a promotion and of a rollback once, then seeded random moments; shuffled by seed."""
    points = [("decided", 1), ("intent_written", 1), ("alias_written", 1), ("alias_written", 2),
              ("aliases_applied", 1), ("recorded", 1)]
    rounds = [("promote", p) for p in points] + [("rollback", p) for p in points[1:4]]
    rounds += [(rng.choice(["promote", "rollback"]), None) for _ in range(4)]
    rng.shuffle(rounds)
    return rounds


def test_killed_promotions_and_rollbacks_leave_the_old_or_new_state_with_one_record_each(small_registry, procs):
    settings = small_registry
    rng = random.Random(SEED)
    promote_model(settings, 1, force=True, reason="start")
    promote_model(settings, 2, force=True, reason="start")
    model = Model(*_state(_db(settings)))
    assert (model.golden, model.previous) == (2, 1)
    model.promotions = [(None, 1), (1, 2)]
    start_records = len(_changes(settings))
    killed_between_writes = 0
    for i, (op, stop_at) in enumerate(_plan(rng)):
        if op == "rollback" and model.previous is None:
            op = "promote"
        version = rng.choice([v for v in (1, 2, 3, 4) if v != model.golden]) if op == "promote" else None
        if op == "promote":
            ModelRegistry(settings).set_alias(CHALLENGER, version)
        before = (model.golden, model.previous)
        after = model.after_promote(version) if op == "promote" else model.after_rollback()
        records_before = _changes(settings)
        proc, started, reached, results = _start(procs, settings, op, version, stop_at=stop_at,
                                                 pause=0.0 if stop_at else 0.02)
        try:
            if stop_at is not None:
                assert reached.wait(WAIT), f"round {i}: the worker never reached {stop_at}"
            else:
                assert started.wait(WAIT)
                time.sleep(rng.uniform(0.0, 0.6))
            _kill(proc)
        finally:
            _kill(proc)
        where = f"round {i}: {op} {version or ''} killed at {stop_at or 'a random moment'}"

        # a reader sees the old or the new state, never a half-applied one, before anyone recovers
        seen = _read(settings)
        if stop_at is not None:
            assert seen == (before if stop_at[0] == "decided" else after), where
        else:
            assert seen in (before, after), where
        if stop_at == ("alias_written", 1) and op == "promote":
            # the kill really landed between the two alias writes: MLflow's rows are half-way
            assert _state(_db(settings)) == (before[0], before[0]), where
            killed_between_writes += 1

        recover_pending(settings)
        db = _db(settings)
        assert _state(db) == seen, where  # recovery completes exactly what readers were shown
        assert db.get(GOLDEN) != db.get(PREVIOUS_GOLDEN), where
        new = _changes(settings)[len(records_before):]
        if seen == after:
            assert len(new) == 1, f"{where}: {len(new)} records for one alias change"
            rec = new[0]
            assert rec["action"] in (("promote", "force_promote") if op == "promote" else ("rollback",)), where
            d = rec["details"]
            assert (d["golden_before"], d["golden_after"], d["previous_golden_after"]) == (before[0], *after), where
            if op == "promote":
                assert CHALLENGER not in db, where  # the promoted challenger lost its alias
            model.commit(op, after)
        else:
            assert new == [], f"{where}: a record without an alias change"
            ModelRegistry(settings).delete_alias(CHALLENGER)
        assert ModelRegistry(settings).pending_change() is None

    assert killed_between_writes >= 1
    # every alias change has exactly one record: replaying the records gives MLflow's rows, ids never repeat
    changes = _changes(settings)
    ids = [r["details"]["intent"] for r in changes[start_records:]]
    assert len(ids) == len(set(ids))
    replay = (None, None)
    for rec in changes:
        assert rec["details"]["golden_before"] == replay[0]
        replay = (rec["details"]["golden_after"], rec["details"]["previous_golden_after"])
    assert replay == _state(_db(settings)) == (model.golden, model.previous)
    # and rollback, after all that, restores the right version
    if model.previous is None:
        version = next(v for v in (1, 2, 3, 4) if v != model.golden)
        promote_model(settings, version, force=True, reason="something to roll back")
        model.commit("promote", model.after_promote(version))
    expected = model.after_rollback()
    back = rollback(settings, reason="after the crash rounds")
    assert back.golden_after == expected[0] and _state(_db(settings)) == expected
    assert not list(settings.layout.models_path.glob(".promotion.intent.json.*"))


def test_two_processes_promoting_at_once_exactly_one_wins(small_registry, procs):
    settings = small_registry
    rounds, overlapped = 4, 0
    for round_ in range(rounds):
        promote_model(settings, 1, force=True, reason=f"baseline of round {round_}")
        barrier = procs.Barrier(2)
        workers = [_start(procs, settings, "promote", v, force=False, barrier=barrier) for v in (2, 3)]
        records_before = len(_records(settings))
        outcomes = []
        try:
            for proc, _started, _reached, results in workers:
                outcomes.append(_outcome(proc, results))
                proc.join(WAIT)
        finally:
            for proc, *_ in workers:
                _kill(proc)
        actions = sorted(o[1] for o in outcomes)
        assert actions == ["promoted", "refused"], f"round {round_}: {outcomes}"
        # both really ran at once when each started before the other finished
        overlapped += max(o[2] for o in outcomes) < min(o[3] for o in outcomes)
        winner = next(o[0] for o in outcomes if o[1] == "promoted")
        assert _state(_db(settings)) == (winner, 1)
        new = [r["action"] for r in _records(settings)[records_before:]]
        assert sorted(new) == ["promote", "promote_refused"], new
    assert overlapped >= rounds - 1  # (one late wake-up from the barrier on a loaded machine is not a failure)


def test_models_rollback_and_the_gate_step_work_right_after_a_crash(small_registry, procs, cli):
    settings = small_registry
    promote_model(settings, 1, force=True)
    promote_model(settings, 2, force=True)
    # the case: killed between the two alias writes of promoting v3 over v2
    proc, _started, reached, _results = _start(procs, settings, "promote", 3, stop_at=("alias_written", 1))
    try:
        assert reached.wait(WAIT)
    finally:
        _kill(proc)
    assert _state(_db(settings)) == (2, 2)  # MLflow's rows half-way ...
    assert _read(settings) == (3, 2)  # ... but readers see the committed promotion
    result = cli(settings, ["models", "rollback", "--reason", "bad release"])
    assert result.exit_code == 0, result.output
    assert "already golden" not in result.output
    assert _state(_db(settings)) == (2, 1)  # v3 rolled back to v2; v1 (what v2 replaced) is previous again
    changes = _changes(settings)
    assert [(r["details"]["golden_after"], r["details"].get("recovered")) for r in changes] == [
        (1, None), (2, None), (3, True), (2, None)]  # the killed promotion recorded once, by the recovery
    assert changes[-1]["action"] == "rollback" and changes[-1]["reason"] == "bad release"

    # the pipeline's gate step completes a killed promotion first, then decides
    import mlplatform.models.steps  # noqa: F401  registers promotion.gate
    from mlplatform.steps import run_step

    proc, _started, reached, _results = _start(procs, settings, "promote", 4, stop_at=("aliases_applied", 1))
    try:
        assert reached.wait(WAIT)
    finally:
        _kill(proc)
    assert _state(_db(settings)) == (4, 2) and len(_changes(settings)) == 4  # applied, not yet recorded
    out = run_step("promotion.gate", settings)
    assert out["action"].startswith("nothing to promote")
    last = _changes(settings)[-1]
    assert (last["action"], last["details"]["golden_after"], last["details"]["recovered"]) == ("force_promote", 4,
                                                                                              True)
    assert len(_changes(settings)) == 5 and ModelRegistry(settings).pending_change() is None


def test_a_corrupt_journal_is_a_clear_registry_error(small_registry):
    settings = small_registry
    promote_model(settings, 1, force=True)
    path = Path(settings.layout.models_path) / "promotion.intent.json"
    path.write_text("{not json")
    with pytest.raises(MLPlatformError, match="promotion journal .* is corrupt"):
        ModelRegistry(settings).golden()
