"""Pipeline step of the model trainer's part: retrain when needed."""

from __future__ import annotations

from typing import Any

from mlplatform.settings import Settings
from mlplatform.steps import register_step


@register_step("train.if_needed")
def train_if_needed_step(settings: Settings) -> dict[str, Any]:
    """`train --if-needed`: training's retrain decision (which rule, how many new labels), then train and register
    the challenger if it says so; an answered monitoring request is marked done, an unanswered one stays pending."""
    from mlplatform.contracts.retrain_request import mark_retrain_request_done
    from training.pipeline import train_and_register
    from training.retrain import check_retrain

    decision = check_retrain(settings, None)
    summary = {"trained": False, "reason": decision.reason, "rule": decision.rule, "new_labels": decision.new_labels,
               "request_pending": decision.request_pending}
    if not decision.retrain:
        return summary
    outcome = train_and_register(settings, trigger=f"if-needed: {decision.reason}")
    mark_retrain_request_done(settings)
    return {**summary, "trained": True, "version": outcome.version.version}
