"""Which steps a pipeline can call: the steps every part registers (mlplatform.steps), loaded here, and any
importable ``package.module:function(settings, **args)`` a pipeline file names (a team's own steps)."""

from __future__ import annotations

import importlib
import time
from typing import Any

from mlplatform.errors import StepUnavailable
from mlplatform.settings import Settings
from mlplatform.steps import Step, get_step, register_step, step_names


def load_builtin_steps() -> list[str]:
    """Import every part's steps module, so its steps are registered; returns the registered names."""
    import mlplatform.features.steps  # noqa: F401  features.build, .validate, .apply, .materialize
    import mlplatform.models.steps  # noqa: F401  promotion.gate
    import monitoring.steps  # noqa: F401  monitor.check
    import scoring.steps  # noqa: F401  score.window
    import training.steps  # noqa: F401  train.if_needed

    return step_names()


@register_step("sleep")
def sleep_step(settings: Settings, seconds: float = 1.0) -> dict[str, Any]:
    """Wait (for demos of the lock)."""
    time.sleep(float(seconds))
    return {"slept": seconds}


def resolve_step(call: str) -> Step:
    """A registered step by name, or ``package.module:function`` from a pipeline file."""
    if ":" not in call:
        load_builtin_steps()
        return get_step(call)  # StepUnavailable names the registered steps (an optional step is then skipped)
    module_name, _, attr = call.partition(":")
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
