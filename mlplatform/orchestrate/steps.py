"""The built-in steps a pipeline can call: each a thin call to one part's public function, returning a summary.

A step is ``fn(settings, **args) -> dict``. A pipeline may also call any importable ``package.module:function``
with the same signature. Steps of parts not installed yet raise ``StepUnavailable``; the runner skips such a step
when the pipeline marks it ``optional`` and fails otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mlplatform.errors import DataNotFoundError, DefinitionError, InvalidInputError, MLPlatformError
from mlplatform.settings import Settings

Step = Callable[..., dict[str, Any] | None]


class StepUnavailable(MLPlatformError):
    """The part a step calls is not installed (or lacks the function)."""

    exit_code = 9


def _import(target: str) -> Callable:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise StepUnavailable(f"{module_name} is not available ({exc})") from exc
        raise
    fn = getattr(module, attr, None)
    if fn is None:
        raise StepUnavailable(f"{module_name} has no function {attr!r}")
    return fn


# --- features -----------------------------------------------------------------------------------------------------
def build_features_step(settings: Settings, since: str | None = "last") -> dict[str, Any]:
    """`features build --since last` (a full build the first time)."""
    from mlplatform.features.pipelines import build_features, read_build_state

    if since == "last" and "until" not in read_build_state(settings.features_dir):
        since = None
    result = build_features(settings.data_path, since=since)
    return {"since": result.since, "until": result.until, "rows_appended": sum(result.appended.values())}


def validate_step(settings: Settings) -> dict[str, Any]:
    """`features validate`: a definition problem fails the pipeline (not retried)."""
    from mlplatform.features.validate import validate_definitions

    problems = validate_definitions(settings)
    if problems:
        raise DefinitionError("definitions do not match their data:\n" + "\n".join(f"  - {p}" for p in problems))
    return {"problems": 0}


def apply_step(settings: Settings) -> dict[str, Any]:
    """`apply` (already validated by the step before)."""
    from mlplatform.features.definitions import apply_definitions

    names = apply_definitions(settings, validate=False)
    return {"feature_views": len(names)}


def materialize_step(settings: Settings, full: bool = False) -> dict[str, Any]:
    """`materialize`, incremental: each view continues from its last end up to now."""
    from mlplatform.features.materialize import materialize

    results = materialize(settings, full=full)
    return {"views": len(results), "rows": sum(r.rows for r in results)}


# --- monitoring and training (other parts) ------------------------------------------------------------------------
def monitor_check_step(settings: Settings, request_retrain: bool = True) -> dict[str, Any]:
    """`monitor check` over its default window; on a breach, file a retrain request for the next step.

    Breaches do not fail the pipeline: they are audited (which notifies) and the retrain step acts on them.
    """
    run_check = _import("monitoring.check:run_check")
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
        request = _import("monitoring.check:request_retrain")
        summary["retrain_request"] = request(settings, result, launch=False).get("request")
    return summary


def train_if_needed_step(settings: Settings) -> dict[str, Any]:
    """`train --if-needed`: training's retrain decision, then train and register the challenger if it says so."""
    check_retrain = _import("training.retrain:check_retrain")
    decision = check_retrain(settings, None)
    if not decision.retrain:
        return {"trained": False, "reason": decision.reason}
    train_and_register = _import("training.pipeline:train_and_register")
    outcome = train_and_register(settings, trigger=f"if-needed: {decision.reason}")
    _import("training.retrain:mark_request_done")(settings)
    return {"trained": True, "reason": decision.reason, "version": outcome.version.version}


def promotion_gate_step(settings: Settings) -> dict[str, Any]:
    """The promotion gate: the challenger becomes golden only if it passes (mlplatform.models.promotion)."""
    from mlplatform.models.registry import CHALLENGER, ModelRegistry

    promote_model = _import("mlplatform.models.promotion:promote_model")
    challenger = ModelRegistry(settings).with_alias(CHALLENGER)
    if not challenger:
        return {"action": "nothing to promote (no challenger)"}
    version = challenger[0].version
    golden = ModelRegistry(settings).golden()
    if golden is not None and golden.version == version:
        return {"action": "unchanged", "version": version}
    result = promote_model(settings, version, reason="pipeline promotion gate", actor="pipeline")
    return {"action": result.action, "version": version, "golden_after": result.golden_after,
            "reasons": "; ".join(result.reasons)[:300]}


# --- utility steps ------------------------------------------------------------------------------------------------
def sleep_step(settings: Settings, seconds: float = 1.0) -> dict[str, Any]:
    """Wait (for demos of the lock)."""
    import time

    time.sleep(float(seconds))
    return {"slept": seconds}


def score_yesterday_step(settings: Settings, days: int = 1, end: str | None = None) -> dict[str, Any]:
    """Batch-score the ``days`` before ``end`` (default: the end of the raw data) with the golden model."""
    import pandas as pd

    from mlplatform.features.pipelines import raw_watermark
    from mlplatform.scoring.batch import score_window

    stop = pd.Timestamp(end) if end else raw_watermark(settings.data_path)
    stop = stop.tz_localize("UTC") if stop.tzinfo is None else stop.tz_convert("UTC")
    result = score_window(settings, (stop - pd.Timedelta(days=int(days))).to_pydatetime(), stop.to_pydatetime())
    return {"rows": result.rows, "model_version": result.model_version, "path": str(result.path)}


BUILTIN: dict[str, Step] = {
    "features.build": build_features_step,
    "features.validate": validate_step,
    "features.apply": apply_step,
    "features.materialize": materialize_step,
    "monitor.check": monitor_check_step,
    "train.if_needed": train_if_needed_step,
    "promotion.gate": promotion_gate_step,
    "score.window": score_yesterday_step,
    "sleep": sleep_step,
}


def resolve_step(call: str) -> Step:
    """A built-in step by name, or ``package.module:function``."""
    if call in BUILTIN:
        return BUILTIN[call]
    if ":" not in call:
        raise InvalidInputError(f"unknown step {call!r}: use a built-in ({', '.join(BUILTIN)}) or module:function")
    return _import(call)


def now() -> datetime:
    return datetime.now(UTC)
