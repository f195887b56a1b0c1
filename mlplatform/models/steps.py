"""Pipeline step of the model registry: the promotion gate."""

from __future__ import annotations

from typing import Any

from mlplatform.settings import Settings
from mlplatform.steps import register_step


@register_step("promotion.gate")
def promotion_gate_step(settings: Settings, reason: str = "pipeline promotion gate",
                        channel: str = "pipeline") -> dict[str, Any]:
    """The challenger becomes golden only if it passes the gate (mlplatform.models.promotion)."""
    from mlplatform.models.promotion import promote_model, recover_pending
    from mlplatform.models.registry import CHALLENGER, ModelRegistry

    recover_pending(settings)  # a promotion killed earlier completes first (its alias change and its record)
    registry = ModelRegistry(settings)
    challenger = registry.with_alias(CHALLENGER)
    if not challenger:
        return {"action": "nothing to promote (no challenger)"}
    version = challenger[0].version
    golden = registry.golden()
    if golden is not None and golden.version == version:
        return {"action": "unchanged", "version": version}
    result = promote_model(settings, version, reason=reason, channel=channel)
    return {"action": result.action, "version": version, "golden_after": result.golden_after,
            "reasons": "; ".join(result.reasons)[:300]}
