"""`mlplatform monitor check`: run skew, consistency and quality over one window, compare them with the thresholds
in settings, name every breach, and (with ``--retrain``) ask training to retrain; its promotion gate still decides.

Exit codes (``mlplatform.errors.ExitCode``), for cron and schedulers: 0 no breach; 10 (BREACH) at least one breach
(each named on stderr and in the report); the platform's error codes otherwise (3: no served requests in the window
or no golden model / training set; 2: bad input; 5: Redis down; ...). A breach wins over a part that could not run;
the report says both.

Retraining: ``--retrain`` files a retrain request (mlplatform.contracts.retrain_request: the breaches, the window),
records ``retrain_trigger`` in the audit log, then runs the registered pipeline steps ``train.if_needed`` (which
sees the request, retrains and registers a challenger) and ``promotion.gate`` (which decides) — the same steps the
daily pipeline runs, found through the step registry (mlplatform.steps), not by importing training.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlplatform.contracts.retrain_request import write_retrain_request
from mlplatform.errors import ExitCode, MLPlatformError
from mlplatform.settings import Settings
from mlplatform.steps import run_step
from monitoring.logs import EmptyLogWindow, resolve_window
from monitoring.reports import ReportFiles, render_table_page, write_report


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
        """0 no breach, ExitCode.BREACH on any breach, else the first failing part's error code."""
        if self.breaches:
            return ExitCode.BREACH
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


def file_retrain_request(settings: Settings, result: CheckResult) -> Path:
    """Write the retrain request for training to answer, and audit it; returns the request's path."""
    path = write_retrain_request(settings, result.breaches, result.window)
    _audit(settings, "retrain_trigger", result)
    return path


def request_retrain(settings: Settings, result: CheckResult, launch: bool = True) -> dict[str, Any]:
    """File the retrain request; with ``launch``, run the registered steps ``train.if_needed`` then
    ``promotion.gate`` (the gate decides whether the new version becomes golden)."""
    out: dict[str, Any] = {"request": str(file_retrain_request(settings, result))}
    if not launch:
        return out
    trained = run_step("train.if_needed", settings)
    out["train"] = trained
    if trained.get("trained"):
        reason = "monitoring breach: " + "; ".join(result.breaches)[:400]
        gate = run_step("promotion.gate", settings, reason=reason, channel="monitoring")
        out.update(new_version=trained["version"], gate=gate, promoted=gate.get("action") in ("promoted", "forced"))
    return out


def _audit(settings: Settings, action: str, result: CheckResult) -> None:
    """Record the breach or trigger in the audit log (which notifies webhooks); never fails the check."""
    try:
        from mlplatform.audit import record

        record(settings, action, f"model {settings.model_name}", details={"breaches": len(result.breaches),
               "first": result.breaches[0] if result.breaches else ""}, reason="; ".join(result.breaches)[:500])
    except Exception as exc:  # the audit module is optional here; the report still names every breach
        print(f"warning: could not write the audit log: {exc}", file=sys.stderr)
