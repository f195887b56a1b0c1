"""The registry of pipeline steps: each part registers its own steps by name, in a ``steps`` module of its own.

A step is ``fn(settings, **args) -> dict | None`` (a summary for the run record). The orchestration layer loads
the parts' step modules and runs steps by name; a part that needs another part's work (``monitor check
--retrain`` needs ``train.if_needed`` and ``promotion.gate``) asks this registry, never the other part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlplatform.errors import StepUnavailable
from mlplatform.settings import Settings

Step = Callable[..., dict[str, Any] | None]
_REGISTRY: dict[str, Step] = {}


def register_step(name: str) -> Callable[[Step], Step]:
    """Decorator: make ``fn`` the step called ``name`` (a later registration under the same name replaces it)."""

    def decorate(fn: Step) -> Step:
        _REGISTRY[name] = fn
        return fn

    return decorate


def step_names() -> list[str]:
    """The names of every registered step."""
    return sorted(_REGISTRY)


def get_step(name: str) -> Step:
    """The step registered as ``name``; StepUnavailable if no part registered it."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(step_names()) or "none"
        raise StepUnavailable(f"no part registered the step {name!r} (registered: {known})") from None


def run_step(name: str, settings: Settings, **args: Any) -> dict[str, Any]:
    """Run the step ``name`` and return its summary."""
    return get_step(name)(settings, **args) or {}
