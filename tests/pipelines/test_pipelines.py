"""Pipelines: no overlapping runs, transient failures retried with backoff, resume from the failed step, run records,
a webhook on failure; and the real `daily` chain against Redis (unreachable first, then back)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from mlplatform.audit import list_records
from mlplatform.errors import ConflictError
from mlplatform.notifications import wait_for
from mlplatform.settings import PROJECT_ROOT
from orchestration.config import load_pipelines
from orchestration.runner import list_runs, run_pipeline
from tests.conftest import make_settings, process_environ
from tests.pipelines.receivers import Receiver

S = "tests.pipelines.pipeline_steps"
CONFIG = textwrap.dedent(f"""
    defaults: {{retries: 3, backoff_seconds: 0.05}}
    pipelines:
      flaky:
        steps:
          - {{name: first, call: "{S}:ok", args: {{name: first}}}}
          - {{name: redis, call: "{S}:flaky", args: {{failures: 2}}}}
          - {{name: last, call: "{S}:ok", args: {{name: last}}}}
      resumable:
        steps:
          - {{name: first, call: "{S}:ok", args: {{name: first}}}}
          - {{name: broken, call: "{S}:broken_until_fixed"}}
          - {{name: last, call: "{S}:ok", args: {{name: last}}}}
      exhausted:
        retries: 1
        steps:
          - {{name: redis, call: "{S}:flaky", args: {{failures: 99}}}}
      slow:
        steps:
          - {{name: slow, call: "{S}:slow", args: {{seconds: 4}}}}
      missing_part:
        steps:
          - {{name: gone, call: "no_such_part.module:fn", optional: true}}
          - {{name: first, call: "{S}:ok"}}
""")


@pytest.fixture()
def pipe_settings(tmp_path):
    config = tmp_path / "pipelines.yaml"
    config.write_text(CONFIG)
    return make_settings(tmp_path, pipelines_config=config)


def calls(settings, name):
    trace = settings.data_path / "trace.jsonl"
    return sum(f'"step": "{name}"' in line for line in trace.read_text().splitlines()) if trace.exists() else 0


def test_transient_failures_are_retried_with_backoff(pipe_settings):
    delays = []
    result = run_pipeline(pipe_settings, "flaky", sleep=lambda d: (delays.append(d), time.sleep(d)))
    assert result.ok
    steps = {s["name"]: s for s in result.record["steps"]}
    assert steps["redis"]["attempts"] == 3 and steps["redis"]["status"] == "succeeded"
    assert delays == [0.05, 0.1]  # exponential backoff
    assert all(s["seconds"] >= 0 for s in steps.values())
    (stored,) = list_runs(pipe_settings, "flaky")
    assert stored["status"] == "succeeded" and stored["steps"][1]["attempts"] == 3


def test_retries_are_bounded(pipe_settings):
    result = run_pipeline(pipe_settings, "exhausted", sleep=lambda d: None)
    assert not result.ok
    (step,) = result.record["steps"]
    assert step["attempts"] == 2 and step["transient"] and "OnlineStoreUnavailable" in step["error"]


def test_failed_run_resumes_from_the_failed_step_and_notifies(pipe_settings, tmp_path):
    with Receiver(200) as hook:
        settings = pipe_settings.model_copy(update={"webhooks": [hook.url], "webhook_timeout_seconds": 1.0})
        failed = run_pipeline(settings, "resumable")
        assert not failed.ok and failed.record["failed_step"] == "broken"
        assert [s["status"] for s in failed.record["steps"]] == ["succeeded", "failed", "pending"]
        assert failed.record["steps"][1]["attempts"] == 1, "a permanent failure is not retried"
        (delivery,) = wait_for(failed.notifications, timeout=10)
        assert delivery.ok
        body = hook.bodies[0]
        assert body["event"] == "pipeline_failed" and body["fields"]["failed_step"] == "broken"
        assert "resumable" in body["text"] and "broken" in body["text"]

        (tmp_path / "fixed").touch()
        resumed = run_pipeline(settings, "resumable")
    assert resumed.ok and resumed.record["resumed_from"] == failed.record["run_id"]
    assert [s["status"] for s in resumed.record["steps"]] == ["reused", "succeeded", "succeeded"]
    assert calls(settings, "first") == 1, "the step that succeeded before is not run again"
    assert calls(settings, "broken") == 2 and calls(settings, "last") == 1
    again = run_pipeline(settings, "resumable")  # after a success, a run starts from the top
    assert again.record["resumed_from"] is None and calls(settings, "first") == 2
    runs = [r.details["status"] for r in list_records(settings, action="pipeline_run")]
    assert runs == ["failed", "succeeded", "succeeded"]


def test_runs_never_overlap(pipe_settings):
    env = process_environ(pipe_settings)
    other = subprocess.Popen(
        [sys.executable, "-m", "cli", "pipeline", "run", "slow"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=PROJECT_ROOT,
    )
    try:
        started = pipe_settings.data_path / "slow-started"
        deadline = time.monotonic() + 60
        while not started.exists():
            assert other.poll() is None, other.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(ConflictError, match="pipeline slow run .* is still running"):
            run_pipeline(pipe_settings, "flaky")
    finally:
        assert other.wait(60) == 0
    assert calls(pipe_settings, "first") == 0, "the refused run did nothing"
    assert run_pipeline(pipe_settings, "flaky", sleep=lambda d: None).ok  # the lock is free again


def test_optional_missing_part_is_skipped(pipe_settings):
    result = run_pipeline(pipe_settings, "missing_part")
    assert result.ok
    assert result.record["steps"][0]["status"] == "skipped" and "no_such_part" in result.record["steps"][0]["error"]


def test_cli_status_and_bad_name(pipe_settings, cli):
    bad = cli(pipe_settings, ["pipeline", "run", "nope"])
    assert bad.exit_code == 2 and "no pipeline 'nope'" in bad.output and "Traceback" not in bad.output
    failed = cli(pipe_settings, ["pipeline", "run", "resumable"])
    assert failed.exit_code == 1 and "failed" in failed.output
    status = cli(pipe_settings, ["pipeline", "status"])
    assert status.exit_code == 0 and "resumable" in status.output and "broken" in status.output


def test_shipped_pipelines_file_defines_daily():
    daily = load_pipelines(PROJECT_ROOT / "pipelines.yaml")["daily"]
    assert [s.call for s in daily.steps] == [
        "features.build",
        "features.validate",
        "features.apply",
        "features.materialize",
        "monitor.check",
        "train.if_needed",
        "promotion.gate",
    ]


def test_daily_pipeline_against_redis_unreachable_then_back(world, redis_db, redis_addr, tmp_path):
    """The shipped `daily` chain for real: Redis down -> retried, run fails at materialize; Redis back -> resumes."""
    config = tmp_path / "daily.yaml"
    text = (PROJECT_ROOT / "pipelines.yaml").read_text().replace("backoff_seconds: 2 ", "backoff_seconds: 0.05 ")
    config.write_text(text.replace("retries: 3 ", "retries: 1 "))
    with socket_closed_port() as dead:
        down = make_settings(world, pipelines_config=config).model_copy(update={"redis_addr": dead})
        failed = run_pipeline(down, "daily")
    assert not failed.ok and failed.record["failed_step"] == "materialize"
    mat = failed.record["steps"][3]
    assert mat["attempts"] == 2 and mat["transient"]
    up = make_settings(world, pipelines_config=config, redis_addr=redis_addr)
    resumed = run_pipeline(up, "daily")
    statuses = {s["name"]: s["status"] for s in resumed.record["steps"]}
    assert statuses["build_features"] == statuses["apply"] == "reused"
    assert statuses["materialize"] == "succeeded", resumed.record["steps"][3]
    assert redis_db.dbsize() > 0, "features reached Redis"
    actions = [r.action for r in list_records(up)]
    assert actions.count("apply") == 1 and actions.count("materialize") == 1
    assert [r.reason for r in list_records(up, action="materialize")][0].startswith("pipeline daily run ")


class socket_closed_port:
    """An address where nothing listens."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"127.0.0.1:{s.getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        pass
