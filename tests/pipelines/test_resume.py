"""The shipped `daily` pipeline fails at one step once, then the next run resumes there and succeeds.

First run: Redis is unreachable and the pipeline allows no retry, so `materialize` fails after exactly one attempt.
Second run, Redis back: it must resume from `materialize` (the steps before it reused from the failed run, not run
again), run `materialize` exactly once more, run every later step, and finish with status `succeeded`.

Oracles: the run records as written to disk, the audit log (one `apply` and one `materialize` record in all: the
failed attempt changed nothing, the reused steps did not run again), the feature build's state file left untouched
by the second run, and the Redis database holding keys afterwards.
"""

from __future__ import annotations

import yaml

from mlplatform.audit import list_records
from mlplatform.settings import PROJECT_ROOT
from orchestration.runner import list_runs, run_pipeline
from tests.conftest import make_settings
from tests.pipelines.test_pipelines import socket_closed_port

BEFORE = ["build_features", "validate", "apply"]
AFTER = ["monitor_check", "retrain_if_needed", "promotion_gate"]


def _daily_without_retries(tmp_path):
    """pipelines.yaml as shipped, but a failed step is not retried (and backoff is short)."""
    text = (PROJECT_ROOT / "pipelines.yaml").read_text()
    patched = text.replace("retries: 3 ", "retries: 0 ").replace("backoff_seconds: 2 ", "backoff_seconds: 0.05 ")
    assert patched.count("retries: 0 ") == 1 and "backoff_seconds: 0.05 " in patched, "pipelines.yaml changed"
    config = tmp_path / "daily.yaml"
    config.write_text(patched)
    return config


def test_daily_resumes_at_the_failed_step_and_succeeds(world, redis_addr, redis_db, tmp_path):
    config = _daily_without_retries(tmp_path)
    small = tmp_path / "small.yaml"  # a quick fit for the retrain step; the rest is the shipped configuration
    small.write_text(yaml.safe_dump({"num_boost_round": 60, "early_stopping_rounds": 15}))
    build_state = world / "features" / "_build_state.json"

    with socket_closed_port() as dead:
        down = make_settings(world, pipelines_config=config, training_config=small, redis_addr=dead)
        failed = run_pipeline(down, "daily")
    rec = failed.record
    assert rec["status"] == "failed" and rec["failed_step"] == "materialize", rec
    steps = {s["name"]: s for s in rec["steps"]}
    assert [steps[n]["status"] for n in BEFORE] == ["succeeded"] * 3
    assert steps["materialize"]["status"] == "failed" and steps["materialize"]["attempts"] == 1
    assert steps["materialize"]["error_type"] == "OnlineStoreUnavailable"
    assert [steps[n]["status"] for n in AFTER] == ["pending"] * 3
    assert redis_db.dbsize() == 0
    built = build_state.stat().st_mtime_ns

    up = make_settings(world, pipelines_config=config, training_config=small, redis_addr=redis_addr)
    resumed = run_pipeline(up, "daily")
    rec2 = resumed.record
    assert rec2["status"] == "succeeded" and resumed.ok, rec2
    assert rec2["failed_step"] is None
    assert rec2["resumed_from"] == rec["run_id"] and rec2["run_id"] != rec["run_id"]
    steps2 = {s["name"]: s for s in rec2["steps"]}
    for name in BEFORE:
        assert steps2[name]["status"] == "reused" and steps2[name]["from_run"] == rec["run_id"], steps2[name]
        assert "attempts" not in steps2[name], "a reused step does not run"
    assert steps2["materialize"]["status"] == "succeeded" and steps2["materialize"]["attempts"] == 1
    for name in AFTER:
        assert steps2[name]["status"] == "succeeded", steps2[name]
    assert steps2["retrain_if_needed"]["summary"]["trained"] is True, "no golden yet: the daily run trains one"

    # what the runs did, read back from their effects
    assert build_state.stat().st_mtime_ns == built, "the reused build did not run again"
    assert redis_db.dbsize() > 0, "the features reached Redis"
    actions = [r.action for r in list_records(up)]
    assert actions.count("apply") == 1 and actions.count("materialize") == 1, actions
    assert [r.details["status"] for r in list_records(up, action="pipeline_run")] == ["failed", "succeeded"]
    runs = list_runs(up, "daily")
    assert [(r["run_id"], r["status"]) for r in runs] == [(rec2["run_id"], "succeeded"), (rec["run_id"], "failed")]
