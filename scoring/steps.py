"""Pipeline step of batch scoring: score a recent window with the golden model."""

from __future__ import annotations

from typing import Any

from mlplatform.settings import Settings
from mlplatform.steps import register_step


@register_step("score.window")
def score_window_step(settings: Settings, days: int = 1, end: str | None = None) -> dict[str, Any]:
    """Batch-score the ``days`` before ``end`` (default: the end of the raw data) with the golden model."""
    import pandas as pd

    from mlplatform.features.pipelines import raw_watermark
    from mlplatform.timeutil import utc
    from scoring.batch import score_window

    stop = utc(end) if end else raw_watermark(settings.data_path)
    result = score_window(settings, (stop - pd.Timedelta(days=int(days))).to_pydatetime(), stop.to_pydatetime())
    return {"rows": result.rows, "model_version": result.model_version, "path": str(result.path)}
