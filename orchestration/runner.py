"""Run a pipeline: one at a time (a lock), transient failures retried with backoff, a failed run resumed from the
step that failed, and every run recorded (steps, attempts, durations, outcome) under ``<data_dir>/pipelines/``.

Layout::

    pipelines/run.lock               flock held by the running pipeline (run.lock.json says which run)
    pipelines/runs/<run_id>.json     one record per run, rewritten atomically after every step
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform import audit
from mlplatform.errors import ConflictError, MLPlatformError, OnlineStoreUnavailable, StepUnavailable
from mlplatform.files import write_atomic
from mlplatform.settings import Settings
from orchestration.config import PipelineSpec, StepSpec, get_pipeline
from orchestration.steps import resolve_step

DONE = ("succeeded", "skipped", "reused")


@dataclass
class RunResult:
    """A finished run's record, and the webhook deliveries it started (already in flight)."""

    record: dict[str, Any]
    notifications: list[Future] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.record["status"] == "succeeded"


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: Redis unreachable, a file held by another process, a dropped connection."""
    import redis

    if getattr(exc, "transient", False):
        return True
    if isinstance(
        exc,
        OnlineStoreUnavailable
        | redis.ConnectionError
        | redis.TimeoutError
        | BlockingIOError
        | ConnectionError
        | TimeoutError,
    ):
        return True
    # mlplatform.models.locks.file_lock raises ConflictError("another process holds ...") when a lock times out
    return isinstance(exc, ConflictError) and "another process holds" in str(exc)


def pipelines_path(settings: Settings) -> Path:
    return settings.layout.pipelines_dir


def _runs_dir(settings: Settings) -> Path:
    return pipelines_path(settings) / "runs"


def _write_record(settings: Settings, record: dict[str, Any]) -> None:
    write_atomic(_runs_dir(settings) / f"{record['run_id']}.json", json.dumps(record, indent=2, default=str))


def list_runs(settings: Settings, name: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Run records, newest first (optionally of one pipeline)."""
    runs = []
    for path in _runs_dir(settings).glob("*.json"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if name is None or rec.get("pipeline") == name:
            runs.append(rec)
    runs.sort(key=lambda r: (r.get("started_at", ""), r.get("run_id", "")), reverse=True)
    return runs[:limit] if limit else runs


@contextlib.contextmanager
def pipeline_lock(settings: Settings, holder: dict[str, Any]) -> Iterator[None]:
    """Exclusive, non-blocking: ConflictError naming the running pipeline if another run holds it."""
    root = pipelines_path(settings)
    root.mkdir(parents=True, exist_ok=True)
    lock_path, info_path = root / "run.lock", root / "run.lock.json"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                other = json.loads(info_path.read_text())
                who = (
                    f"pipeline {other.get('pipeline')} run {other.get('run_id')} (pid {other.get('pid')}, "
                    f"since {other.get('started_at')})"
                )
            except (OSError, ValueError):
                who = "another pipeline run"
            raise ConflictError(
                f"{who} is still running; runs never overlap: wait for it, or check `mlplatform pipeline status`"
            ) from None
        try:
            info_path.write_text(json.dumps({**holder, "pid": os.getpid()}, default=str))
            yield
        finally:
            info_path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _resume_point(spec: PipelineSpec, previous: dict[str, Any] | None) -> int:
    """Index of the first step to run: after the steps a failed (or interrupted) previous run completed."""
    if not previous or previous.get("status") not in ("failed", "interrupted", "running"):
        return 0
    if previous.get("fingerprint") != spec.fingerprint:
        return 0  # the pipeline changed since: start over
    done = 0
    for step in previous.get("steps", []):
        if step.get("status") not in DONE:
            break
        done += 1
    return done if done < len(spec.steps) else 0


def _run_step(
    settings: Settings,
    spec: PipelineSpec,
    step: StepSpec,
    rec: dict[str, Any],
    sleep: Callable[[float], None],
    on_event: Callable[[str, dict], None],
) -> None:
    """Run one step with retries; fills ``rec`` (status, attempts, seconds, summary or error)."""
    t0 = time.perf_counter()
    rec.update(status="running", started_at=datetime.now(UTC).isoformat(), attempts=0)
    for attempt in range(spec.retries + 1):
        rec["attempts"] = attempt + 1
        try:
            fn = resolve_step(step.call)
            summary = fn(settings, **step.args) or {}
            rec.update(status="succeeded", summary=json.loads(json.dumps(summary, default=str)))
            break
        except StepUnavailable as exc:
            rec.update(status="skipped" if step.optional else "failed", error=str(exc), error_type=type(exc).__name__)
            break
        except KeyboardInterrupt:
            rec.update(status="interrupted", error="interrupted (Ctrl-C or SIGINT)")
            raise
        except Exception as exc:  # every failure is recorded; only transient ones are retried
            transient = is_transient(exc)
            rec.setdefault("errors", []).append(f"attempt {attempt + 1}: {type(exc).__name__}: {exc}"[:1000])
            rec.update(
                error=f"{type(exc).__name__}: {exc}"[:2000],
                error_type=type(exc).__name__,
                transient=transient,
                exit_code=getattr(exc, "exit_code", 1),
            )
            if not isinstance(exc, MLPlatformError):
                rec["traceback"] = traceback.format_exc(limit=20)
            if transient and attempt < spec.retries:
                delay = min(spec.backoff_seconds * 2**attempt, spec.max_backoff_seconds)
                on_event("retry", {"step": step.name, "attempt": attempt + 1, "delay": delay, "error": rec["error"]})
                sleep(delay)
                continue
            rec["status"] = "failed"
            break
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    rec["finished_at"] = datetime.now(UTC).isoformat()


def run_pipeline(
    settings: Settings,
    name: str,
    from_start: bool = False,
    on_event: Callable[[str, dict], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunResult:
    """Run the pipeline ``name`` of ``settings.pipelines_config``; resumes a failed last run unless ``from_start``."""
    spec = get_pipeline(settings.pipelines_config, name)
    emit = on_event or (lambda _kind, _info: None)
    started = datetime.now(UTC)
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    holder = {"pipeline": name, "run_id": run_id, "started_at": started.isoformat()}
    with pipeline_lock(settings, holder):
        previous = next(iter(list_runs(settings, name, limit=1)), None)
        if previous and previous.get("status") == "running":  # its process died: the lock was free
            previous["status"] = "interrupted"
            _write_record(settings, previous)
        first = 0 if from_start else _resume_point(spec, previous)
        actor = audit.current_actor(settings)
        record: dict[str, Any] = {
            "run_id": run_id,
            "pipeline": name,
            "status": "running",
            "actor": actor,
            "started_at": started.isoformat(),
            "fingerprint": spec.fingerprint,
            "config": str(settings.pipelines_config),
            "resumed_from": previous["run_id"] if first else None,
            "steps": [{"name": s.name, "call": s.call, "status": "pending"} for s in spec.steps],
        }
        for i in range(first):
            record["steps"][i].update(status="reused", from_run=previous["run_id"])
        _write_record(settings, record)
        emit("start", {"run_id": run_id, "resumed_from": record["resumed_from"], "first": first})
        t0 = time.perf_counter()
        try:
            with audit.acting_for(reason=f"pipeline {name} run {run_id}", channel="pipeline"):
                for i in range(first, len(spec.steps)):
                    step, rec = spec.steps[i], record["steps"][i]
                    emit("step", {"index": i, "total": len(spec.steps), "name": step.name})
                    try:
                        _run_step(settings, spec, step, rec, sleep, emit)
                    finally:
                        _write_record(settings, record)
                    emit("step_done", {"index": i, **rec})
                    if rec["status"] == "failed":
                        break
        except KeyboardInterrupt:
            record.update(
                status="interrupted",
                finished_at=datetime.now(UTC).isoformat(),
                seconds=round(time.perf_counter() - t0, 3),
            )
            _write_record(settings, record)
            raise
        failed = [s for s in record["steps"] if s["status"] == "failed"]
        record.update(
            status="failed" if failed else "succeeded",
            finished_at=datetime.now(UTC).isoformat(),
            seconds=round(time.perf_counter() - t0, 3),
            failed_step=failed[0]["name"] if failed else None,
        )
        _write_record(settings, record)
    return RunResult(record, _after_run(settings, record))


def _after_run(settings: Settings, record: dict[str, Any]) -> list[Future]:
    """Audit the run; notify webhooks of a failure (in the background, never failing the run)."""
    from mlplatform.notifications import notify

    steps = {s["name"]: s["status"] for s in record["steps"]}
    failed = record.get("failed_step")
    reason = None
    if failed:
        error = next(s.get("error") for s in record["steps"] if s["name"] == failed)
        reason = f"step {failed} failed: {error}"[:500]
    audit.record(
        settings,
        "pipeline_run",
        target=f"pipeline {record['pipeline']}",
        reason=reason,
        details={
            "run_id": record["run_id"],
            "status": record["status"],
            "seconds": record["seconds"],
            "steps": steps,
            "resumed_from": record["resumed_from"],
        },
    )
    if record["status"] != "failed":
        return []
    text = (
        f"Pipeline {record['pipeline']} FAILED at step {failed} (run {record['run_id']}): "
        f"{reason.split(': ', 1)[-1] if reason else ''} — fix it, then `mlplatform pipeline run "
        f"{record['pipeline']}` resumes from that step."
    )
    return notify(
        settings,
        "pipeline_failed",
        text,
        {
            "pipeline": record["pipeline"],
            "run_id": record["run_id"],
            "failed_step": failed,
            "error": reason,
            "actor": record["actor"],
            "started_at": record["started_at"],
        },
        severity="error",
    )
