"""Should we retrain? Yes when there is no golden; when monitoring asked for it (a retrain request newer than the
golden, mlplatform.contracts.retrain_request) *and* at least ``retrain_min_new_labels_on_request`` labels arrived
since the golden's training set; or when ``retrain_min_new_labels`` labels arrived since it.

New labels are what a retrain needs: the same labels give the same model, so a standing breach with nothing new to
learn from must not retrain on every run. "Since the golden's training set" means since the newest training-set
as-of of the golden *and of every version registered after it* (a challenger already trained on those labels, e.g.
one the gate refused, counts as tried), so a refused retrain is not repeated on the same labels either. A request
with too few new labels stays pending (the file is left in place) and is answered by the next retrain that
happens, for whichever reason; a newer breach replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from mlplatform.contracts.retrain_request import read_retrain_request
from mlplatform.models.registry import ModelRegistry, ModelVersion
from mlplatform.settings import Settings
from training.datasets import default_as_of, read_labels

# Which rule decided (RetrainDecision.rule).
NO_GOLDEN = "no golden"
MONITORING_REQUEST = "monitoring request"
NEW_LABELS = "new labels"


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain, and why (always a sentence a person can read)."""

    retrain: bool
    reason: str
    new_labels: int | None = None
    request: dict | None = None
    rule: str | None = None  # NO_GOLDEN, MONITORING_REQUEST or NEW_LABELS when retrain; None otherwise
    request_pending: bool = False  # a monitoring request is waiting for new labels


def count_new_labels(labels: pd.DataFrame, after: pd.Timestamp, until: pd.Timestamp) -> int:
    """Labels that arrived in (after, until]: what a training set as of ``until`` knows and one as of ``after`` did
    not."""
    arrived = labels["label_timestamp"]
    return int(((arrived > after) & (arrived <= until)).sum())


def pending_request(settings: Settings, golden_created_at: datetime) -> dict | None:
    """The retrain request filed after the golden was registered, or None (older requests were for older goldens)."""
    request = read_retrain_request(settings)
    if request is None or pd.Timestamp(request["requested_at"]) <= pd.Timestamp(golden_created_at):
        return None
    return request


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def trained_as_of(version: ModelVersion) -> pd.Timestamp:
    """The as-of time of a version's training set (its registration time if its lineage does not say)."""
    return _utc(version.lineage.get("as_of", version.created_at))


def label_baseline(golden: ModelVersion, versions: list[ModelVersion]) -> tuple[ModelVersion, pd.Timestamp]:
    """The version whose training set is the newest among the golden and the versions registered after it (only
    those whose lineage records an as-of), and that as-of: labels after it are labels no model was trained on."""
    best, best_as_of = golden, trained_as_of(golden)
    for v in versions:
        if v.version > golden.version and "as_of" in v.lineage and trained_as_of(v) > best_as_of:
            best, best_as_of = v, trained_as_of(v)
    return best, best_as_of


def check_retrain(settings: Settings, as_of: datetime | None = None) -> RetrainDecision:
    """Decide whether `train --if-needed` should retrain now, and name the rule that decided."""
    registry = ModelRegistry(settings)
    golden = registry.golden()
    if golden is None:
        return RetrainDecision(True, "no golden model yet", rule=NO_GOLDEN)
    request = pending_request(settings, golden.created_at)
    now = _utc(as_of) if as_of is not None else _utc(default_as_of(settings))
    base, base_as_of = label_baseline(golden, registry.list_versions())
    new = count_new_labels(read_labels(settings.layout.raw_dir), base_as_of, now)
    since = f"the golden v{golden.version}'s training set (as of {base_as_of:%Y-%m-%d %H:%M}Z)"
    if base.version != golden.version:
        since = (f"v{base.version}'s training set (as of {base_as_of:%Y-%m-%d %H:%M}Z; registered after the golden "
                 f"v{golden.version}, so already tried on those labels)")
    on_request, need = settings.retrain_min_new_labels_on_request, settings.retrain_min_new_labels
    why = ""
    if request is not None:
        why = request.get("reason") or "; ".join(request.get("breaches") or []) or "no reason given"
        if new >= on_request:
            return RetrainDecision(True, f"monitoring asked for it ({request['requested_at']}): {why}; {new:,} new "
                                   f"labels since {since} (a request needs {on_request:,})",
                                   new_labels=new, request=request, rule=MONITORING_REQUEST)
    if new >= need:
        return RetrainDecision(True, f"{new:,} labels arrived since {since} (threshold {need:,})", new_labels=new,
                               request=request, rule=NEW_LABELS)
    if request is not None:
        return RetrainDecision(
            False, f"monitoring asked ({request['requested_at']}; breaches: {why}) but only {new:,} new labels since "
            f"{since}; need {on_request:,} (retrain_min_new_labels_on_request): the same labels would train the same "
            "model. The request stays pending until enough labels arrive.",
            new_labels=new, request=request, request_pending=True)
    return RetrainDecision(False, f"only {new:,} new labels since {since} (threshold {need:,}) and no retrain "
                           "request from monitoring", new_labels=new)
