"""The promotion gate: a model becomes golden only if it beats the current golden on the same evaluation data by
a margin and passes its behavioural tests. Promotions are serialized by a file lock, switch aliases without ever
leaving the registry without a golden, and are recorded (refusals too) in the platform's one audit log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.errors import ConflictError, DataNotFoundError
from mlplatform.models.behaviour import run_behaviour_suite
from mlplatform.models.locks import file_lock
from mlplatform.models.registry import CHALLENGER, GOLDEN, PREVIOUS_GOLDEN, ModelRegistry, ModelVersion
from mlplatform.models.scoring import predict
from mlplatform.settings import Settings

MIN_EVAL_ROWS = 100
# Audit actions of the promotion gate, in the one audit log (mlplatform.audit).
PROMOTE, FORCE_PROMOTE, PROMOTE_REFUSED, ROLLBACK = "promote", "force_promote", "promote_refused", "rollback"
PROMOTION_ACTIONS = (PROMOTE, FORCE_PROMOTE, PROMOTE_REFUSED, ROLLBACK)
LABEL = "is_fraud"
TIME = "event_timestamp"


@dataclass(frozen=True)
class PromotionResult:
    """What a promotion or rollback did and why."""

    action: str  # promoted | forced | refused | unchanged | rolled_back
    version: int | None
    golden_before: int | None
    golden_after: int | None
    passed: bool
    reasons: list[str] = field(default_factory=list)
    comparison: dict = field(default_factory=dict)
    behaviour: list[dict] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.golden_before != self.golden_after

    def as_dict(self) -> dict:
        return asdict(self)


def _lock_path(settings: Settings) -> Path:
    return settings.layout.models_path / "promotion.lock"


def read_audit(settings: Settings) -> list[dict]:
    """Promotion, refusal and rollback records of the one audit log, oldest first, as flat dicts."""
    from mlplatform.audit import list_records

    out = []
    for rec in list_records(settings):
        if rec.action in PROMOTION_ACTIONS:
            out.append({"time": rec.time, "actor": rec.actor, "action": rec.action, "reason": rec.reason,
                        **rec.details})
    return out


def _audit(settings: Settings, action: str, version: int | None, details: dict, reason: str,
           actor: str | None, channel: str) -> None:
    """Record a promotion, refusal or rollback in the audit log (which also notifies webhooks)."""
    from mlplatform.audit import record

    record(settings, action, f"model {settings.model_name} v{version}",
           details={"version": version, "channel": channel, **details}, reason=reason or None, actor=actor)


def evaluation_rows(registry: ModelRegistry, candidate: ModelVersion, golden: ModelVersion | None) -> pd.DataFrame:
    """The candidate's held-out test rows, minus any row the golden saw in training (same data for both)."""
    frame = pd.read_parquet(registry.training_set_path(candidate.version))
    test = frame[frame["split"] == "test"] if "split" in frame.columns else frame
    if golden is not None:
        seen_until = (golden.lineage.get("split", {}).get("validation", {}) or {}).get("end")
        if seen_until:
            test = test[pd.to_datetime(test[TIME], utc=True) > pd.Timestamp(seen_until)]
    return test.reset_index(drop=True)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def gate(settings: Settings, registry: ModelRegistry, candidate: ModelVersion,
         golden: ModelVersion | None) -> tuple[bool, list[str], dict, list[dict]]:
    """Run the gate: (passed, reasons, comparison, behavioural results). Corrupt boosters raise InvalidInputError."""
    booster = registry.load_booster(candidate.version)
    golden_booster = registry.load_booster(golden.version) if golden is not None else None
    rows = evaluation_rows(registry, candidate, golden)
    reasons: list[str] = []
    comparison: dict = {"margin": settings.promotion_margin, "rows": int(len(rows)),
                        "positives": int(rows[LABEL].sum()) if len(rows) else 0}
    passed = True
    behaviour = [b.as_dict() for b in run_behaviour_suite(booster, rows, candidate.feature_names)] if len(rows) else []
    failed = [b for b in behaviour if not b["passed"]]
    if not behaviour:
        passed = False
        reasons.append("no evaluation rows to run the behavioural tests on")
    for b in failed:
        passed = False
        reasons.append(f"behavioural test {b['name']} failed: {b['detail']}")
    y = rows[LABEL].to_numpy().astype(int) if len(rows) else np.array([], dtype=int)
    if len(rows) < MIN_EVAL_ROWS or not 0 < y.sum() < len(y):
        passed = False
        reasons.append(f"only {len(rows)} evaluation rows ({int(y.sum())} fraud) are unseen by both models: "
                       "too few to compare; train the candidate on newer data")
        return passed, reasons, comparison, behaviour
    comparison["candidate_roc_auc"] = _auc(y, predict(booster, rows, candidate.feature_names))
    if golden is None:
        reasons.append("no golden model yet: the candidate becomes the first")
        return passed, reasons, comparison, behaviour
    missing = [n for n in golden.feature_names if n not in rows.columns]
    if missing:
        passed = False
        reasons.append(f"the golden v{golden.version} needs features {missing} absent from the candidate's "
                       "evaluation data: the two cannot be compared on the same data")
        return passed, reasons, comparison, behaviour
    comparison["golden_version"] = golden.version
    comparison["golden_roc_auc"] = _auc(y, predict(golden_booster, rows, golden.feature_names))
    delta = comparison["candidate_roc_auc"] - comparison["golden_roc_auc"]
    comparison["delta"] = delta
    if delta < settings.promotion_margin:
        passed = False
        reasons.append(f"ROC AUC {comparison['candidate_roc_auc']:.4f} does not beat the golden v{golden.version}'s "
                       f"{comparison['golden_roc_auc']:.4f} by the margin {settings.promotion_margin} "
                       f"(delta {delta:+.4f}) on the same {len(rows):,} rows")
    else:
        reasons.append(f"ROC AUC {comparison['candidate_roc_auc']:.4f} beats the golden v{golden.version}'s "
                       f"{comparison['golden_roc_auc']:.4f} by {delta:+.4f} (margin {settings.promotion_margin})")
    return passed, reasons, comparison, behaviour


def promote_model(settings: Settings, version: int, *, force: bool = False, reason: str = "",
                  actor: str | None = None, channel: str = "cli") -> PromotionResult:
    """Make ``version`` golden if it passes the gate (or ``force``); serialized, atomic and audited.

    ``actor`` is who asked (default: ``MLPLATFORM_ACTOR`` or the login user); ``channel`` how (cli, api, pipeline).
    """
    registry = ModelRegistry(settings)
    with file_lock(_lock_path(settings), timeout=300, what="the promotion lock"):
        candidate = registry.get(version)
        golden = registry.golden()
        before = golden.version if golden else None
        if golden is not None and golden.version == candidate.version:
            return PromotionResult("unchanged", version, before, before, True, [f"v{version} is already golden"])
        passed, reasons, comparison, behaviour = gate(settings, registry, candidate, golden)
        if not passed and not force:
            _audit(settings, PROMOTE_REFUSED, version, {"golden_before": before, "golden_after": before,
                   "forced": False, "gate": reasons, "comparison": comparison}, reason, actor, channel)
            return PromotionResult("refused", version, before, before, False, reasons, comparison, behaviour)
        # Alias moves are single-row updates: golden always points at a whole, registered version.
        if golden is not None:
            registry.set_alias(PREVIOUS_GOLDEN, golden.version)
        registry.set_alias(GOLDEN, version)
        if CHALLENGER in candidate.aliases:
            registry.delete_alias(CHALLENGER)
        action = "promoted" if passed else "forced"
        _audit(settings, PROMOTE if passed else FORCE_PROMOTE, version,
               {"golden_before": before, "golden_after": version, "forced": force and not passed, "gate": reasons,
                "comparison": comparison}, reason, actor, channel)
        return PromotionResult(action, version, before, version, passed, reasons, comparison, behaviour)


def rollback(settings: Settings, *, actor: str | None = None, reason: str = "",
             channel: str = "cli") -> PromotionResult:
    """Restore the previous golden; the one before it (from the audit log) becomes the new previous golden."""
    registry = ModelRegistry(settings)
    with file_lock(_lock_path(settings), timeout=300, what="the promotion lock"):
        previous = registry.previous_golden()
        golden = registry.golden()
        if previous is None:
            raise DataNotFoundError("there is no previous golden model to roll back to")
        if golden is not None and golden.version == previous.version:
            raise ConflictError(f"v{previous.version} is already golden; nothing to roll back")
        registry.load_booster(previous.version)  # refuse to restore a damaged model
        before = golden.version if golden else None
        registry.set_alias(GOLDEN, previous.version)
        earlier = None
        for record in reversed(read_audit(settings)):
            if record.get("action") in (PROMOTE, FORCE_PROMOTE) and record.get("golden_after") == previous.version:
                earlier = record.get("golden_before")
                break
        if earlier is not None and earlier != previous.version and earlier != before:
            registry.set_alias(PREVIOUS_GOLDEN, int(earlier))
        else:
            registry.delete_alias(PREVIOUS_GOLDEN)
        _audit(settings, ROLLBACK, previous.version, {"golden_before": before, "golden_after": previous.version,
               "forced": False, "previous_golden_after": earlier}, reason, actor, channel)
        return PromotionResult("rolled_back", previous.version, before, previous.version, True,
                               [f"golden v{before} -> v{previous.version}"])
