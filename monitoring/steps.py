"""Pipeline step of the watcher's part: the monitoring check, which files a retrain request on a breach."""

from __future__ import annotations

from typing import Any

from mlplatform.errors import DataNotFoundError
from mlplatform.settings import Settings
from mlplatform.steps import register_step


@register_step("monitor.check")
def monitor_check_step(settings: Settings, request_retrain: bool = True) -> dict[str, Any]:
    """`monitor check` over its default window; on a breach, file a retrain request for the next step.

    Breaches do not fail the pipeline: they are audited (which notifies) and the retrain step acts on them.
    """
    from monitoring.check import file_retrain_request, run_check

    try:
        result = run_check(settings)
    except DataNotFoundError as exc:  # no served requests in the window: nothing to check yet
        return {"status": "nothing to check", "detail": str(exc)[:200]}
    summary: dict[str, Any] = {
        "status": "breach" if result.breaches else "ok",
        "breaches": len(result.breaches),
        "headline": result.headline()[:300],
    }
    if result.breaches and request_retrain:
        summary["retrain_request"] = str(file_retrain_request(settings, result))
    return summary
