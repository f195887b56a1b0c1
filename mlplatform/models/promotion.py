"""The promotion gate: a model becomes golden only if it beats the current golden on the same evaluation data by
a margin and passes its behavioural tests. Promotions and rollbacks are serialized by a file lock
(``<models>/promotion.lock``) and recorded, refusals too, in the platform's one audit log (mlplatform.audit).

One crash-safe state change: write ahead, then apply
----------------------------------------------------
A promotion or rollback moves up to three aliases in MLflow's registry (``previous_golden``, ``golden``, the
promoted ``challenger``), one write each, and appends one record to the audit log, a JSON-lines file: two stores,
so no single transaction covers both. Each change therefore goes through a journal,
``<models>/promotion.intent.json``, under the promotion lock:

1. decide: run the gate (or find the rollback target) and build the whole change, the target aliases and the
   audit record that will describe it (``AliasChange``);
2. write it ahead: the journal is replaced atomically (temporary file, fsync, rename, fsync of the folder) with
   ``state: pending``. This is the commit point: from here on the change will complete;
3. apply: move each alias to its target (idempotent: an alias already right is not written again);
4. record: append the audit record, which carries the journal entry's id in ``details.intent``;
5. mark the journal entry ``done``.

A process killed before step 2 changed nothing and recorded nothing. One killed after it left a pending entry,
which the next promotion, rollback or pipeline gate step rolls forward under the lock before doing anything else
(``recover_pending``): steps 3-5 again, appending the record only if no record carries that id yet. So after any
crash the aliases are either the old ones or the new ones (never ``golden == previous_golden``), every alias
change has exactly one record, and ``models rollback`` restores the right version. Readers never wait for the
lock: ``ModelRegistry`` lays a pending entry over MLflow's aliases, so serving, scoring and ``models list`` see the
committed state even before recovery, and never a half-applied one.

Why not one SQLite transaction over the alias rows and the record: the record belongs in the platform's one audit
log, not in a second log inside ``mlflow.db``, and a transaction across MLflow's tables would mean writing its
private schema behind its client. The journal needs neither, and is one small file beside the database.

``FAULT_HOOK`` is a test seam: when set, it is called with the name of each point in ``FAULT_POINTS`` as a change
passes it, so a crash test can kill the process exactly there (tests/training/test_promotion_crash.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.errors import ConflictError, DataNotFoundError, RegistryError
from mlplatform.models.behaviour import run_behaviour_suite
from mlplatform.models.locks import file_lock
from mlplatform.models.page import refresh_model_pages
from mlplatform.models.registry import (
    CHALLENGER,
    DONE,
    GOLDEN,
    PREVIOUS_GOLDEN,
    AliasChange,
    ModelRegistry,
    ModelVersion,
)
from mlplatform.models.scoring import predict
from mlplatform.settings import Settings

MIN_EVAL_ROWS = 100
# Audit actions of the promotion gate, in the one audit log (mlplatform.audit).
PROMOTE, FORCE_PROMOTE, PROMOTE_REFUSED, ROLLBACK = "promote", "force_promote", "promote_refused", "rollback"
PROMOTION_ACTIONS = (PROMOTE, FORCE_PROMOTE, PROMOTE_REFUSED, ROLLBACK)
# Where a change can be interrupted, in order: decided (nothing written yet), intent_written (journal pending),
# alias_written (after each alias of the change: the first is between two alias writes), aliases_applied,
# recorded (audit record appended, journal not yet marked done).
FAULT_POINTS = ("decided", "intent_written", "alias_written", "aliases_applied", "recorded")
FAULT_HOOK: Callable[[str], None] | None = None
LOCK_TIMEOUT_SECONDS = 300.0
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


def _fault(point: str) -> None:
    """Let a crash test stop the process here (no-op unless ``FAULT_HOOK`` is set)."""
    if FAULT_HOOK is not None:
        FAULT_HOOK(point)


def _record_body(settings: Settings, version: int | None, details: dict, reason: str, actor: str | None,
                 channel: str) -> dict:
    """The audit record of a promotion, refusal or rollback, as ``mlplatform.audit.record`` takes it.

    ``actor`` and ``reason`` stay None when not given, so the record takes them from ``audit.acting_for``."""
    return {"target": f"model {settings.model_name} v{version}",
            "details": {"version": version, "channel": channel, **details},
            "reason": reason or None, "actor": actor}


def _audit(settings: Settings, action: str, body: dict) -> None:
    """Append one record to the audit log (which also notifies webhooks)."""
    from mlplatform.audit import record

    record(settings, action, body["target"], details=body["details"], reason=body["reason"], actor=body["actor"])


def _recorded(settings: Settings, intent_id: str) -> bool:
    """Whether the audit log already holds the record of journal entry ``intent_id``."""
    from mlplatform.audit import list_records

    return any(rec.details.get("intent") == intent_id for rec in list_records(settings))


def _complete(settings: Settings, registry: ModelRegistry, change: AliasChange, *, recovered: bool) -> None:
    """Steps 3-5 of a journaled change: apply the aliases, append the record (once), mark the entry done."""
    from mlflow.exceptions import MlflowException

    try:
        registry.apply_change(change, after_each=lambda _alias: _fault("alias_written"))
    except DataNotFoundError as exc:
        raise RegistryError(
            f"the alias change journaled in {registry.intent_path} ({change.action}: {change.set}) cannot be "
            f"completed: {exc}. Restore that version, or fix the aliases by hand and delete the journal"
        ) from exc
    except MlflowException as exc:
        raise RegistryError(
            f"the model registry refused an alias write ({exc.message}); the change ({change.action}: "
            f"{change.set}) is journaled and completes on the next promote or rollback"
        ) from exc
    _fault("aliases_applied")
    if not (recovered and _recorded(settings, change.id)):
        details = {**change.record["details"], "intent": change.id}
        if recovered:
            details.update(recovered=True, intended_at=change.written_at)
        _audit(settings, change.action, {**change.record, "details": details})
    _fault("recorded")
    registry.write_intent(replace(change, state=DONE))


def _commit(settings: Settings, registry: ModelRegistry, change: AliasChange) -> None:
    """Write ``change`` ahead to the journal (the commit point), then complete it."""
    registry.write_intent(change)
    _fault("intent_written")
    _complete(settings, registry, change, recovered=False)
    details = change.record.get("details") or {}
    refresh_model_pages(settings, {*change.set.values(), details.get("golden_before")})


def _recover(settings: Settings, registry: ModelRegistry) -> AliasChange | None:
    """Roll a pending journal entry forward (the caller holds the promotion lock)."""
    registry.remove_stale_intent_files()
    change = registry.pending_change()
    if change is not None:
        _complete(settings, registry, change, recovered=True)
    return change


def recover_pending(settings: Settings) -> AliasChange | None:
    """Finish the alias change a killed promotion or rollback left journaled (None if there was none)."""
    registry = ModelRegistry(settings)
    with file_lock(_lock_path(settings), timeout=LOCK_TIMEOUT_SECONDS, what="the promotion lock"):
        return _recover(settings, registry)


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
    """Make ``version`` golden if it passes the gate (or ``force``): serialized, crash-safe and audited.

    ``actor`` is who asked (default: ``MLPLATFORM_ACTOR`` or the login user); ``channel`` how (cli, api, pipeline).
    """
    registry = ModelRegistry(settings)
    with file_lock(_lock_path(settings), timeout=LOCK_TIMEOUT_SECONDS, what="the promotion lock"):
        _recover(settings, registry)
        candidate = registry.get(version)
        golden = registry.golden()
        before = golden.version if golden else None
        previous = registry.previous_golden()
        previous_before = previous.version if previous else None
        if golden is not None and golden.version == candidate.version:
            return PromotionResult("unchanged", version, before, before, True, [f"v{version} is already golden"])
        passed, reasons, comparison, behaviour = gate(settings, registry, candidate, golden)
        if not passed and not force:
            _audit(settings, PROMOTE_REFUSED, _record_body(settings, version, {
                "golden_before": before, "golden_after": before, "previous_golden_before": previous_before,
                "previous_golden_after": previous_before, "forced": False, "gate": reasons,
                "comparison": comparison}, reason, actor, channel))
            return PromotionResult("refused", version, before, before, False, reasons, comparison, behaviour)
        _fault("decided")
        # golden is never unset, so it always points at a whole, registered version
        if golden is not None:
            targets, drop = {PREVIOUS_GOLDEN: golden.version, GOLDEN: version}, {CHALLENGER: version}
            previous_after = golden.version
        else:  # the first golden: previous_golden stays, unless it is this very version
            targets, drop = {GOLDEN: version}, {CHALLENGER: version, PREVIOUS_GOLDEN: version}
            previous_after = previous_before if previous_before != version else None
        action = PROMOTE if passed else FORCE_PROMOTE
        body = _record_body(settings, version, {
            "golden_before": before, "golden_after": version, "previous_golden_before": previous_before,
            "previous_golden_after": previous_after, "forced": force and not passed, "gate": reasons,
            "comparison": comparison}, reason, actor, channel)
        _commit(settings, registry, AliasChange.new(action, body, set=targets, unset_if=drop))
        return PromotionResult("promoted" if passed else "forced", version, before, version, passed, reasons,
                               comparison, behaviour)


def _golden_before(settings: Settings, version: int) -> int | None:
    """The golden that ``version`` replaced the last time it was promoted (from the audit log), or None."""
    for record in reversed(read_audit(settings)):
        if record.get("action") in (PROMOTE, FORCE_PROMOTE) and record.get("golden_after") == version:
            earlier = record.get("golden_before")
            return int(earlier) if earlier is not None else None
    return None


def rollback(settings: Settings, *, actor: str | None = None, reason: str = "",
             channel: str = "cli") -> PromotionResult:
    """Restore the previous golden; the one before it (from the audit log) becomes the new previous golden."""
    registry = ModelRegistry(settings)
    with file_lock(_lock_path(settings), timeout=LOCK_TIMEOUT_SECONDS, what="the promotion lock"):
        _recover(settings, registry)
        previous = registry.previous_golden()
        golden = registry.golden()
        before = golden.version if golden else None
        previous_before = previous.version if previous else None
        if golden is not None and previous is not None and golden.version == previous.version:
            # only a registry damaged before promotions were journaled: the audit log knows the real previous one
            earlier = _golden_before(settings, golden.version)
            if earlier is None or earlier == golden.version:
                raise ConflictError(
                    f"golden and previous_golden both point at v{golden.version} and the audit log names no "
                    f"earlier golden; promote the version you want (`mlplatform models promote VERSION --force`)")
            previous = registry.get(earlier)
        if previous is None:
            raise DataNotFoundError("there is no previous golden model to roll back to")
        registry.load_booster(previous.version)  # refuse to restore a damaged model
        earlier = _golden_before(settings, previous.version)
        if earlier is not None and earlier != previous.version and earlier != before:
            targets, unset = {GOLDEN: previous.version, PREVIOUS_GOLDEN: earlier}, []
        else:
            earlier, targets, unset = None, {GOLDEN: previous.version}, [PREVIOUS_GOLDEN]
        _fault("decided")
        body = _record_body(settings, previous.version, {
            "golden_before": before, "golden_after": previous.version, "previous_golden_before": previous_before,
            "previous_golden_after": earlier, "forced": False}, reason, actor, channel)
        _commit(settings, registry, AliasChange.new(ROLLBACK, body, set=targets, unset=unset))
        return PromotionResult("rolled_back", previous.version, before, previous.version, True,
                               [f"golden v{before} -> v{previous.version}"])
