"""`mlplatform monitor check`: run skew, consistency and quality over one window, compare them with the thresholds
in settings, name every breach, and (with ``--retrain``) ask training to retrain; its promotion gate still decides.

Exit codes, for cron and schedulers: 0 no breach; 10 at least one breach (each named on stderr and in the
report); the platform's error codes otherwise (3: no served requests in the window or no golden model / training
set; 2: bad input; 5: Redis down; ...). A breach wins over a part that could not run; the report says both.

Retraining: ``--retrain`` writes ``<data_dir>/monitoring/retrain_request.json`` (the breaches, the window), records
``retrain_trigger`` in the audit log, then runs ``mlplatform train --if-needed`` (whose hook sees the request,
retrains and registers a challenger) and ``mlplatform models promote <new version>``: the promotion gate decides.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.errors import MLPlatformError
from mlplatform.models.locks import write_atomic
from mlplatform.settings import Settings
from monitoring.logs import EmptyLogWindow, resolve_window
from monitoring.reports import ReportFiles, render_table_page, write_report

BREACH_EXIT_CODE = 10
RETRAIN_REQUEST = Path("monitoring") / "retrain_request.json"
RETRAIN_COMMAND = ("train", "--if-needed")


@dataclass
class PartOutcome:
    """What one of the three checks found."""

    name: str
    status: str  # ok | breach | too few rows | too few labels | error
    headline: str
    breaches: list[str] = field(default_factory=list)
    report: str | None = None
    error: MLPlatformError | None = field(default=None, repr=False)


@dataclass
class CheckResult:
    """All three checks, the breaches, and what was done about them."""

    parts: list[PartOutcome]
    window: dict[str, str]
    retrain: dict[str, Any] | None = None
    seconds: float = 0.0
    files: ReportFiles | None = None

    @property
    def breaches(self) -> list[str]:
        return [b for p in self.parts for b in p.breaches]

    @property
    def errors(self) -> list[PartOutcome]:
        return [p for p in self.parts if p.error is not None]

    @property
    def exit_code(self) -> int:
        """0 no breach, BREACH_EXIT_CODE on any breach, else the first failing part's error code."""
        if self.breaches:
            return BREACH_EXIT_CODE
        return self.errors[0].error.exit_code if self.errors else 0

    def headline(self) -> str:
        if self.breaches:
            return f"{len(self.breaches)} breach(es): " + "; ".join(self.breaches)
        failed = ", ".join(f"{p.name} could not run" for p in self.errors)
        return failed or "no breach: skew, consistency and quality within thresholds"

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "breaches": self.breaches, "retrain": self.retrain, "seconds": self.seconds,
                "exit_code": self.exit_code, "headline": self.headline(),
                "parts": [{"name": p.name, "status": p.status, "headline": p.headline, "breaches": p.breaches,
                           "report": p.report} for p in self.parts]}


# --- thresholds (pure) ------------------------------------------------------------------------------------------
def skew_breaches(result, settings: Settings) -> list[str]:
    """A breach when more than ``monitoring_max_drifted_share`` of the model's features drifted."""
    if result.current_rows < settings.monitoring_min_rows:
        return []
    if result.drifted_share <= settings.monitoring_max_drifted_share:
        return []
    detail = ", ".join(f"{f.feature} ({'no values' if f.score is None else f'{f.score:.2f}'})"
                       for f in result.features if f.drifted)
    return [f"skew: {len(result.drifted)}/{len(result.features)} features of {result.model_name} "
            f"v{result.model_version} drifted (share {result.drifted_share:.2f} > "
            f"{settings.monitoring_max_drifted_share}): {detail}"]


def consistency_breaches(result, settings: Settings) -> list[str]:
    """One breach per feature whose served values differ from offline in more than the allowed share of requests."""
    if result.compared < settings.monitoring_min_rows:
        return []
    return [f"consistency: {f.feature} differs from its offline point-in-time value in {f.mismatches:,}/"
            f"{f.compared:,} requests ({f.rate:.1%} > {settings.monitoring_max_mismatch_rate:.1%})"
            for f in result.features if f.rate > settings.monitoring_max_mismatch_rate]


# --- running ----------------------------------------------------------------------------------------------------
def _run_part(name: str, fn, breaches_fn, status_fn) -> PartOutcome:
    try:
        result = fn()
    except EmptyLogWindow:
        raise  # nothing to check at all: the caller says so clearly
    except MLPlatformError as exc:
        return PartOutcome(name, "error", f"{type(exc).__name__}: {exc}", error=exc)
    breaches = breaches_fn(result)
    report = str(result.files.html_path or result.files.json_path) if result.files else None
    return PartOutcome(name, "breach" if breaches else status_fn(result), result.headline(), breaches, report)


def run_check(settings: Settings, since: datetime | None = None, until: datetime | None = None,
              retrain: bool = False, as_of: datetime | None = None) -> CheckResult:
    """Run the three checks over one window against the thresholds; write the check report; retrain if asked."""
    from monitoring.consistency import run_consistency
    from monitoring.quality import quality_breaches, quality_status, run_quality
    from monitoring.skew import run_skew

    t0 = time.perf_counter()
    window = resolve_window(settings, since, until)
    s, u = window.start, window.end

    def rows_status(attr):
        return lambda r: "ok" if getattr(r, attr) >= settings.monitoring_min_rows else "too few rows"

    parts = [
        _run_part("skew", lambda: run_skew(settings, s, u), lambda r: skew_breaches(r, settings),
                  rows_status("current_rows")),
        _run_part("consistency", lambda: run_consistency(settings, s, u), lambda r: consistency_breaches(r, settings),
                  rows_status("compared")),
        _run_part("quality", lambda: run_quality(settings, s, u, as_of=as_of), lambda r: quality_breaches(r, settings),
                  lambda r: quality_status(r, settings)),
    ]
    result = CheckResult(parts, window.to_dict())
    if result.breaches:
        _audit(settings, "monitor_breach", result)
    if retrain and result.breaches:
        result.retrain = request_retrain(settings, result)
    result.seconds = time.perf_counter() - t0
    status = "breach" if result.breaches else ("error" if result.errors else "ok")
    rows = [{"check": p.name, "status": p.status, "summary": p.headline, "report": p.report} for p in parts]
    page = render_table_page("Monitoring check", result.headline(),
                             [("Checks", rows), ("Breaches", [{"breach": b} for b in result.breaches])])
    result.files = write_report(settings, "check", {**result.to_dict(), "status": status}, page)
    return result


def request_retrain(settings: Settings, result: CheckResult, launch: bool = True) -> dict[str, Any]:
    """Write the retrain request and audit it; then run training's path: ``train --if-needed``, and for a new
    version ``models promote`` (the promotion gate decides whether it becomes golden)."""
    from mlplatform.models.registry import ModelRegistry

    path = settings.data_path / RETRAIN_REQUEST
    body = {"requested_at": datetime.now(UTC).isoformat(), "requested_by": "mlplatform monitor check",
            "breaches": result.breaches, "window": result.window}
    write_atomic(path, json.dumps(body, indent=2).encode("utf-8"))
    _audit(settings, "retrain_trigger", result)
    out: dict[str, Any] = {"request": str(path), "command": ["mlplatform", *RETRAIN_COMMAND]}
    if not launch:
        return out
    registry = ModelRegistry(settings)
    before = {v.version for v in registry.list_versions()}
    env = _child_env(settings)
    train = subprocess.run([sys.executable, "-m", "mlplatform.cli", *RETRAIN_COMMAND], check=False, env=env)
    out["train_exit_code"] = train.returncode
    new = sorted({v.version for v in registry.list_versions()} - before)
    if train.returncode == 0 and new:
        reason = "monitoring breach: " + "; ".join(result.breaches)[:400]
        promote = subprocess.run([sys.executable, "-m", "mlplatform.cli", "models", "promote", str(new[-1]),
                                  "--reason", reason], check=False, env=env)
        out.update(new_version=new[-1], promote_exit_code=promote.returncode,
                   promoted=promote.returncode == 0)
    return out


def _child_env(settings: Settings) -> dict[str, str]:
    """This process's environment with every setting of ``settings`` exported, so the child sees the same platform."""
    import os

    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[f"MLPLATFORM_{name.upper()}"] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    env.update(settings.feast_env())
    return env


def _audit(settings: Settings, action: str, result: CheckResult) -> None:
    """Record the breach or trigger in the audit log (which notifies webhooks); never fails the check."""
    try:
        from mlplatform.audit import record

        record(settings, action, f"model {settings.model_name}", details={"breaches": len(result.breaches),
               "first": result.breaches[0] if result.breaches else ""}, reason="; ".join(result.breaches)[:500])
    except Exception as exc:  # the audit module is optional here; the report still names every breach
        print(f"warning: could not write the audit log: {exc}", file=sys.stderr)
