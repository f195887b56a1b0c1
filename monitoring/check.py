"""`mlplatform monitor check`: run skew, consistency and quality over one window, compare them with the thresholds
in settings, name every breach, and (with ``--retrain``) ask training to retrain; its promotion gate still decides.

Each part either *judged* (status ``ok`` or ``breach``) or did not: too few served rows (skew, consistency: fewer
than ``monitoring_min_rows``), too few labels (quality: no version with ``monitoring_min_labeled_rows`` labeled rows
and both classes), or it could not run (an error). The table and the JSON report say per part whether it judged
and, if not, why (``judged``, ``why_not``). A part whose rows are all unjudgeable (``EmptyLogWindow``) is not
judged either ("no judgeable rows"), unless no part had a row at all: then the check stops with that message.

Logged rows that could not be judged (``monitoring.logs.UnjudgedRows``) are never dropped silently: the headline,
the console and the JSON report (``unjudged``) say how many of the window's logged rows some part could not judge,
by reason, and each part's own count (``parts[].unjudged``, also in its own report).

Exit codes (``mlplatform.errors.ExitCode``), for cron and schedulers, first match wins:
10 (BREACH) at least one breach (each named on stderr and in the report); a part that could not run: its error's
code (2 bad input, 3 no golden model / training set, 5 Redis down, ...); 3 (NOT_FOUND) nothing to check: no served
request in the window, or no part had enough data to judge; 0 at least one part judged and none breached.

Retraining: ``--retrain`` files a retrain request (mlplatform.contracts.retrain_request: the breaches, the window),
records ``retrain_trigger`` in the audit log, then runs the registered pipeline steps ``train.if_needed`` (which
sees the request and retrains only if enough labels arrived since the golden's training set, else says how many and
leaves the request pending) and, when it trained, ``promotion.gate`` (which decides) — the same steps the daily
pipeline runs, found through the step registry (mlplatform.steps), not by importing training.
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
from monitoring.logs import CHECK_NEEDS, EmptyLogWindow, UnjudgedRows, resolve_window, screen_window
from monitoring.reports import ReportFiles, render_table_page, with_banner, write_report

JUDGED_STATUSES = ("ok", "breach")
NOTHING_TO_CHECK = "nothing to check"
NO_JUDGEABLE_ROWS = "no judgeable rows"


@dataclass
class PartOutcome:
    """What one of the three checks found."""

    name: str
    status: str  # ok | breach | too few rows | too few labels | no judgeable rows | error
    headline: str
    breaches: list[str] = field(default_factory=list)
    report: str | None = None
    error: MLPlatformError | None = field(default=None, repr=False)
    why_not: str = ""  # when not judged: why (too few rows or labels, with the figures; or the error)
    unjudged: UnjudgedRows = field(default_factory=UnjudgedRows)  # logged rows this part left out, by reason
    empty: EmptyLogWindow | None = field(default=None, repr=False)  # when it had no judgeable row at all

    @property
    def judged(self) -> bool:
        """Whether this part had enough data to reach a verdict (ok or breach)."""
        return self.status in JUDGED_STATUSES


@dataclass
class CheckResult:
    """All three checks, the breaches, and what was done about them."""

    parts: list[PartOutcome]
    window: dict[str, str]
    retrain: dict[str, Any] | None = None
    seconds: float = 0.0
    files: ReportFiles | None = None
    unjudged: UnjudgedRows = field(default_factory=UnjudgedRows)  # logged rows some part could not judge

    @property
    def breaches(self) -> list[str]:
        return [b for p in self.parts for b in p.breaches]

    @property
    def errors(self) -> list[PartOutcome]:
        return [p for p in self.parts if p.error is not None]

    @property
    def judged(self) -> list[PartOutcome]:
        """The parts that reached a verdict."""
        return [p for p in self.parts if p.judged]

    @property
    def not_judged(self) -> list[PartOutcome]:
        """The parts that did not (too few rows or labels, or could not run)."""
        return [p for p in self.parts if not p.judged]

    @property
    def status(self) -> str:
        """``breach``, ``error``, ``nothing to check`` or ``ok`` (the order in which they win)."""
        if self.breaches:
            return "breach"
        if self.errors:
            return "error"
        return "ok" if self.judged else NOTHING_TO_CHECK

    @property
    def exit_code(self) -> int:
        """ExitCode.BREACH on any breach; else the first failing part's error code; else NOT_FOUND when no part
        judged anything; else OK (at least one part judged, none breached)."""
        if self.breaches:
            return ExitCode.BREACH
        if self.errors:
            return self.errors[0].error.exit_code
        return ExitCode.OK if self.judged else ExitCode.NOT_FOUND

    def headline(self) -> str:
        left_out = f"; {self.unjudged.describe()}" if self.unjudged else ""
        return self._verdict() + left_out

    def _verdict(self) -> str:
        if self.breaches:
            return f"{len(self.breaches)} breach(es): " + "; ".join(self.breaches)
        if self.errors:
            return ", ".join(f"{p.name} could not run" for p in self.errors)
        not_judged = ", ".join(f"{p.name} ({p.status})" for p in self.not_judged)
        if not self.judged:
            return f"{NOTHING_TO_CHECK}: no part had enough data to judge: {not_judged}"
        within = ", ".join(p.name for p in self.judged)
        return f"no breach: {within} within thresholds" + (f"; not judged: {not_judged}" if not_judged else "")

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "status": self.status, "breaches": self.breaches, "retrain": self.retrain,
                "seconds": self.seconds, "exit_code": int(self.exit_code), "headline": self.headline(),
                "judged": [p.name for p in self.judged], "unjudged": self.unjudged.to_dict(),
                "parts": [{"name": p.name, "status": p.status, "judged": p.judged, "why_not": p.why_not or None,
                           "headline": p.headline, "breaches": p.breaches, "report": p.report,
                           "unjudged": p.unjudged.to_dict()} for p in self.parts]}


# --- thresholds (pure) ------------------------------------------------------------------------------------------
def rows_why_not(rows: int, settings: Settings, what: str = "served rows") -> str:
    """Why a part with too few rows was not judged ("" when it had enough)."""
    if rows >= settings.monitoring_min_rows:
        return ""
    return f"only {rows:,} {what} in the window, fewer than monitoring_min_rows {settings.monitoring_min_rows:,}"


def skew_why_not(result, settings: Settings) -> str:
    """Why skew was not judged: too few served rows."""
    return rows_why_not(result.current_rows, settings)


def consistency_why_not(result, settings: Settings) -> str:
    """Why consistency was not judged: too few requests could be compared (back-dated ones cannot, nor those
    after the offline data's end)."""
    return rows_why_not(result.compared, settings, f"of {result.requests:,} requests comparable "
                        f"({result.skips()})")


def quality_why_not(result, settings: Settings) -> str:
    """Why quality was not judged: too few labeled rows (with how many labels arrived and when they arrive)."""
    return result.explanation()


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
def _run_part(name: str, fn, breaches_fn, status_fn, why_not_fn) -> PartOutcome:
    try:
        result = fn()
    except EmptyLogWindow as exc:  # run_check stops with it if no part had a row; else this part is not judged
        why = exc.unjudged.describe() or "no served request in the window"
        return PartOutcome(name, NO_JUDGEABLE_ROWS, f"not judged: {why}", why_not=f"no served row it can judge: "
                           f"{why}", unjudged=exc.unjudged, empty=exc)
    except MLPlatformError as exc:
        return PartOutcome(name, "error", f"{type(exc).__name__}: {exc}", error=exc, why_not=f"could not run: {exc}")
    breaches = breaches_fn(result)
    report = str(result.files.html_path or result.files.json_path) if result.files else None
    outcome = PartOutcome(name, "breach" if breaches else status_fn(result), result.headline(), breaches, report,
                          unjudged=result.unjudged)
    if not outcome.judged:
        outcome.why_not = why_not_fn(result) or outcome.status
    return outcome


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
                  rows_status("current_rows"), lambda r: skew_why_not(r, settings)),
        _run_part("consistency", lambda: run_consistency(settings, s, u), lambda r: consistency_breaches(r, settings),
                  rows_status("compared"), lambda r: consistency_why_not(r, settings)),
        _run_part("quality", lambda: run_quality(settings, s, u, as_of=as_of), lambda r: quality_breaches(r, settings),
                  lambda r: quality_status(r, settings), lambda r: quality_why_not(r, settings)),
    ]
    empty = [p.empty for p in parts if p.empty is not None]
    if empty and all(p.empty is not None or p.error is not None for p in parts):
        raise empty[0]  # nothing to check at all: no part had a served row it could judge
    unjudged = screen_window(settings, window, require=CHECK_NEEDS).unjudged
    result = CheckResult(parts, window.to_dict(), unjudged=unjudged)
    if result.breaches:
        _audit(settings, "monitor_breach", result)
    if retrain and result.breaches:
        result.retrain = request_retrain(settings, result)
    result.seconds = time.perf_counter() - t0
    rows = [{"check": p.name, "status": p.status, "judged": "yes" if p.judged else "no", "why not": p.why_not,
             "logged rows not judged": p.unjudged.rows, "summary": p.headline, "report": p.report} for p in parts]
    page = render_table_page("Monitoring check", result.headline(),
                             [("Checks", rows), ("Breaches", [{"breach": b} for b in result.breaches]),
                              ("Logged rows not judged by every check", result.unjudged.table())])
    if result.status == NOTHING_TO_CHECK:
        page = with_banner(page, "Nothing judged: no check had enough data to reach a verdict (see 'why not').")
    result.files = write_report(settings, "check", result.to_dict(), page)
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
