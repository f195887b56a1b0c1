"""The audit log: atomic appends from concurrent processes, crash-safe, filterable from the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from mlplatform.audit import audit_path, list_records, record
from mlplatform.files import read_jsonl
from tests.conftest import make_settings

WRITER = """
import sys
from pathlib import Path
from mlplatform.audit import record
from mlplatform.settings import Settings
settings = Settings(data_dir=Path(sys.argv[1]), actor=f"writer-{sys.argv[2]}")
pad = "x" * int(sys.argv[4])  # bigger than PIPE_BUF: atomicity cannot come from small writes
for i in range(int(sys.argv[3])):
    record(settings, "materialize", f"target-{sys.argv[2]}", details={"i": i, "pad": pad})
"""


def _writer(data_dir, name, n, pad):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir), str(name), str(n), str(pad)], cwd=os.getcwd())


def test_concurrent_writers_in_processes_never_interleave(tmp_path):
    procs = [_writer(tmp_path, w, 150, 20_000) for w in range(4)]
    assert all(p.wait(60) == 0 for p in procs)
    rows, torn = read_jsonl(audit_path(make_settings(tmp_path)))
    assert torn == 0
    assert len(rows) == 600
    for w in range(4):
        mine = [r["details"]["i"] for r in rows if r["actor"] == f"writer-{w}"]
        assert mine == list(range(150)), "each writer's records are whole and in its order"
    assert all(len(r["details"]["pad"]) == 20_000 for r in rows)


def test_killed_writer_leaves_only_whole_records(tmp_path):
    settings = make_settings(tmp_path)
    proc = _writer(tmp_path, "victim", 1_000_000, 50_000)
    path = audit_path(settings)
    deadline = time.monotonic() + 30
    while (not path.exists() or path.stat().st_size < 2_000_000) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    rows, _ = read_jsonl(path)
    assert len(rows) >= 10
    assert [r["details"]["i"] for r in rows] == list(range(len(rows)))  # nothing valid ignored, no gap
    # A crash mid-line (simulated: a torn fragment without newline) is skipped, and the next append is whole.
    with open(path, "ab") as fh:
        fh.write(b'{"time": "2026-11-01T00:00:00Z", "actor": "crash", "act')
    assert len(read_jsonl(path)[0]) == len(rows)
    record(settings, "apply", "after the crash")
    after, torn = read_jsonl(path)
    assert len(after) == len(rows) + 1 and torn == 1
    assert after[-1]["target"] == "after the crash"


def test_filters_and_cli(tmp_path, cli):
    settings = make_settings(tmp_path, actor="alice")
    record(settings, "apply", "registry", details={"feature_views": ["a"]})
    record(settings, "promote", "model fraud v2", reason="beats v1", actor="bob")
    record(settings, "rollback", "model fraud v1", reason="bad latency")
    assert [r.action for r in list_records(settings, action="=promote")] == ["promote"]
    assert [r.action for r in list_records(settings, action="promote")] == ["promote", "rollback"]  # the family
    assert [r.actor for r in list_records(settings, actor="alice")] == ["alice", "alice"]
    assert [r.action for r in list_records(settings, limit=2)] == ["promote", "rollback"]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert list_records(settings, since=future) == []
    rec = list_records(settings, action="rollback")[0]
    assert rec.reason == "bad latency" and rec.target == "model fraud v1" and rec.time.endswith("Z")

    out = cli(settings, ["audit", "--action", "=promote", "--jsonl"])
    assert out.exit_code == 0, out.output
    (line,) = out.output.strip().splitlines()
    assert json.loads(line)["actor"] == "bob"
    bad = cli(settings, ["audit", "--since", "not-a-time"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


# --- families, channels, old records ------------------------------------------------------------------------------
PROMOTION_FAMILY = ["promote", "force_promote", "promote_refused", "rollback"]


def test_action_families_patterns_and_exact_names(tmp_path, cli):
    settings = make_settings(tmp_path, actor="ops")
    for action in ["apply", "promote", "materialize", "force_promote", "promote_refused", "rollback", "train"]:
        record(settings, action, f"target {action}")
    assert [r.action for r in list_records(settings, action="promote")] == PROMOTION_FAMILY
    assert [r.action for r in list_records(settings, action="=promote")] == ["promote"]
    assert [r.action for r in list_records(settings, action="*promote*")] == [
        "promote", "force_promote", "promote_refused"]
    assert [r.action for r in list_records(settings, action="rollback")] == ["rollback"]
    out = cli(settings, ["audit", "--action", "promote", "--jsonl"])
    assert out.exit_code == 0, out.output
    assert [json.loads(line)["action"] for line in out.output.splitlines()] == PROMOTION_FAMILY
    helptext = " ".join(cli(settings, ["audit", "--help"]).output.split())
    assert "promote, force_promote, promote_refused and rollback" in helptext and "--channel" in helptext


def test_channel_is_its_own_field_apart_from_the_actor(tmp_path, cli):
    from mlplatform.audit import acting_for

    settings = make_settings(tmp_path, actor="alice")
    record(settings, "apply", "registry")  # a plain command
    with acting_for(reason="pipeline daily run 1a2b", channel="pipeline"):
        record(settings, "materialize", "redis")
        record(settings, "promote", "model fraud v3", details={"channel": "monitoring"})  # the caller said how
    record(settings, "rollback", "model fraud v2", channel="api", actor="svc-deploy")
    got = [(r.action, r.actor, r.channel, r.reason) for r in list_records(settings)]
    assert got == [("apply", "alice", "cli", None),
                   ("materialize", "alice", "pipeline", "pipeline daily run 1a2b"),
                   ("promote", "alice", "monitoring", "pipeline daily run 1a2b"),
                   ("rollback", "svc-deploy", "api", None)]
    rows, _ = read_jsonl(audit_path(settings))
    assert [r["channel"] for r in rows] == ["cli", "pipeline", "monitoring", "api"]  # on disk, not derived

    assert [r.action for r in list_records(settings, channel="pipeline")] == ["materialize"]
    assert [r.action for r in list_records(settings, actor="alice", channel="cli")] == ["apply"]
    out = cli(settings, ["audit", "--channel", "api", "--jsonl"])
    assert out.exit_code == 0 and [json.loads(x)["action"] for x in out.output.splitlines()] == ["rollback"]
    table = cli(settings, ["audit"])
    assert table.exit_code == 0 and "channel" in table.output and "monitoring" in table.output


def test_records_written_before_channels_still_read(tmp_path, cli):
    settings = make_settings(tmp_path)
    path = audit_path(settings)
    path.parent.mkdir(parents=True)
    old = [
        {"time": "2026-10-30T10:00:00.000000Z", "actor": "cli", "action": "promote", "target": "model fraud v2",
         "details": {"version": 2, "channel": "cli"}, "reason": None},
        {"time": "2026-10-30T11:00:00.000000Z", "actor": "bob", "action": "apply", "target": "registry",
         "details": {}, "reason": None},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    recs = list_records(settings)
    assert [(r.action, r.channel) for r in recs] == [("promote", "cli"), ("apply", None)]
    assert [r.action for r in list_records(settings, channel="cli")] == ["promote"]
    out = cli(settings, ["audit", "--jsonl"])
    assert out.exit_code == 0 and [json.loads(x)["channel"] for x in out.output.splitlines()] == ["cli", None]


# --- real promotions, refusals and rollbacks: who, through which channel -------------------------------------------
def _register_tiny(settings, registry, rows: int, seed: int) -> int:
    """A tiny XGBoost model over two synthetic features with a held-out set of ``rows`` rows (the gate's data)."""
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(size=rows), "x2": rng.normal(size=rows)})
    frame["is_fraud"] = (frame["x1"] + rng.normal(scale=0.7, size=rows) > 1.0).astype(np.int8)
    frame["event_timestamp"] = pd.date_range("2026-10-01", periods=rows, freq="h", tz="UTC")
    frame["amount"] = 10.0  # the behavioural suite reads it; the model does not
    frame["split"] = "test"
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "seed": seed, "nthread": 1},
                        xgb.DMatrix(frame[["x1", "x2"]].to_numpy(), label=frame["is_fraud"]), num_boost_round=10)
    path = settings.data_path / f"train-{seed}.parquet"
    frame.to_parquet(path)
    mv = registry.register(booster, feature_names=["x1", "x2"], feature_types=["float", "float"],
                           feature_service="tiny", metrics={}, params={}, lineage={"fingerprint": f"fp{seed}"},
                           training_set_path=path)
    return mv.version


def test_promotions_record_who_and_which_channel(tmp_path, cli):
    """`MLPLATFORM_ACTOR=alice mlplatform models promote` is found by `audit --actor alice`; refusals, forced
    promotions and rollbacks are in the promote family; pipeline and monitoring gates say so in `channel`."""
    import mlplatform.models.steps  # noqa: F401 - registers promotion.gate
    from mlplatform.audit import acting_for
    from mlplatform.models.registry import ModelRegistry
    from mlplatform.steps import run_step

    settings = make_settings(tmp_path, actor="alice", models_dir=tmp_path / "models")
    registry = ModelRegistry(settings)
    good = _register_tiny(settings, registry, 400, 1)
    small = _register_tiny(settings, registry, 40, 2)  # too few held-out rows: the gate must refuse it

    assert cli(settings, ["models", "promote", str(good)]).exit_code == 0
    refused = cli(settings, ["models", "promote", str(small)])
    assert refused.exit_code == 1 and "refused" in refused.output
    assert cli(settings, ["models", "promote", str(small), "--force", "--reason", "drill"]).exit_code == 0
    assert cli(settings, ["models", "rollback", "--reason", "undo drill"]).exit_code == 0
    bob = make_settings(tmp_path, actor="bob", models_dir=tmp_path / "models")
    registry.set_alias("challenger", small)
    with acting_for(reason="pipeline daily run 77"):
        assert run_step("promotion.gate", bob)["action"] == "refused"
    assert run_step("promotion.gate", bob, reason="monitoring breach: drift", channel="monitoring")["action"] == (
        "refused")

    recs = list_records(settings, action="promote")
    assert [(r.action, r.actor, r.channel) for r in recs] == [
        ("promote", "alice", "cli"), ("promote_refused", "alice", "cli"), ("force_promote", "alice", "cli"),
        ("rollback", "alice", "cli"), ("promote_refused", "bob", "pipeline"), ("promote_refused", "bob", "monitoring"),
    ]
    assert recs[2].reason == "drill" and recs[5].reason == "monitoring breach: drift"
    assert registry.golden().version == good  # the refusals changed nothing

    out = cli(settings, ["audit", "--actor", "alice", "--jsonl"])
    assert out.exit_code == 0
    assert [json.loads(x)["action"] for x in out.output.splitlines()] == [
        "promote", "promote_refused", "force_promote", "rollback"]
    refusals = cli(settings, ["audit", "--action", "promote_refused", "--channel", "monitoring", "--jsonl"])
    (line,) = refusals.output.splitlines()
    assert json.loads(line)["actor"] == "bob" and json.loads(line)["target"] == f"model fraud v{small}"
