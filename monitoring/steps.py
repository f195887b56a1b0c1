"""Pipeline step of the watcher's part: the monitoring check, which files a retrain request on a breach."""

from __future__ import annotations

from typing import Any

from mlplatform.errors import DataNotFoundError
from mlplatform.settings import Settings
from mlplatform.steps import register_step


@register_step("monitor.check")
def monitor_check_step(settings: Settings, request_retrain: bool = True) -> dict[str, Any]:
    """`monitor check` over its default window; on a breach, file a retrain request for the next step.

    Breaches do not fail the pipeline: they are audited (which notifies) and the retrain step acts on them. Nothing
    to check (no served request in the window, or no part had enough rows or labels to judge) is not a failure
    either: the step says so and which parts were not judged, and why.
    """
    from monitoring.check import NOTHING_TO_CHECK, file_retrain_request, run_check

    try:
        result = run_check(settings)
    except DataNotFoundError as exc:  # no served requests in the window: nothing to check yet
        return {"status": NOTHING_TO_CHECK, "detail": str(exc)[:200]}
    summary: dict[str, Any] = {
        "status": result.status,
        "breaches": len(result.breaches),
        "judged": [p.name for p in result.judged],
        "not_judged": {p.name: p.why_not[:200] for p in result.not_judged},
        "headline": result.headline()[:300],
        "unjudged": {"logged": result.unjudged.logged, "rows": result.unjudged.rows,
                     "reasons": result.unjudged.to_dict()["reasons"], "unreadable_files": len(result.unjudged.files)},
    }
    if result.breaches and request_retrain:
        summary["retrain_request"] = str(file_retrain_request(settings, result))
    return summary
