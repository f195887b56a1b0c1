"""The audit log: an append-only JSONL record of every change of state — who, what, when, why.

Layout: ``<data_dir>/audit/audit.jsonl``, one JSON object per line::

    {"time": "...Z", "actor": "alice", "action": "apply", "target": "...", "details": {...}, "reason": "..."}

Appends go through ``mlplatform.files.append_jsonl`` (one write under an exclusive ``flock``, then ``fsync``):
concurrent writers never interleave, and a torn last line left by a crash is skipped by readers, so a reader never
returns a partial record and never loses a complete one.

Code that changes state calls ``record(settings, action, target, details)``. A caller running on behalf of
something else (a pipeline run) wraps its work in ``acting_for(reason=..., actor=...)`` so nested records say why.
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import getpass
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.errors import AuditLogError
from mlplatform.files import append_jsonl, read_jsonl
from mlplatform.settings import Settings

log = logging.getLogger(__name__)

# Actions the platform records. Plain names, so `mlplatform audit --action promote` reads naturally.
ACTIONS = (
    "apply",
    "materialize",
    "train",
    "promote",
    "force_promote",
    "promote_refused",
    "rollback",
    "retrain_trigger",
    "pipeline_run",
    "batch_score",
    "monitor_breach",
)
# Actions that also fire the configured webhooks (see mlplatform.notifications).
NOTIFY_ACTIONS = frozenset({"promote", "force_promote", "rollback", "monitor_breach"})

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "mlplatform_audit_context", default=None
)


@dataclass(frozen=True)
class AuditRecord:
    """One change of state."""

    time: str
    actor: str
    action: str
    target: str
    details: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    @property
    def timestamp(self) -> datetime:
        return datetime.fromisoformat(self.time.replace("Z", "+00:00"))


def audit_path(settings: Settings) -> Path:
    """Where the audit log of ``settings`` lives."""
    return settings.layout.audit_log


def current_actor(settings: Settings) -> str:
    """Who is acting: ``settings.actor`` if set, else the login user, else ``unknown``."""
    if settings.actor:
        return settings.actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers) and no $USER
        return "unknown"


@contextlib.contextmanager
def acting_for(reason: str | None = None, actor: str | None = None) -> Iterator[None]:
    """Records made inside the block default to this reason (and actor), e.g. ``pipeline daily run 3f2a``."""
    current = dict(_context.get() or {})
    if reason is not None:
        current["reason"] = reason
    if actor is not None:
        current["actor"] = actor
    token = _context.set(current)
    try:
        yield
    finally:
        _context.reset(token)


def record(
    settings: Settings,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
    reason: str | None = None,
    actor: str | None = None,
) -> AuditRecord:
    """Append one change of state to the audit log (and fire webhooks for promotions, rollbacks and breaches)."""
    ctx = _context.get() or {}
    rec = AuditRecord(
        time=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        actor=actor or ctx.get("actor") or current_actor(settings),
        action=action,
        target=str(target),
        details=details or {},
        reason=reason if reason is not None else ctx.get("reason"),
    )
    try:
        append_jsonl(audit_path(settings), asdict(rec))
    except OSError as exc:
        raise AuditLogError(f"cannot append to the audit log {audit_path(settings)}: {exc}") from exc
    if action in NOTIFY_ACTIONS:
        from mlplatform.notifications import notify_audit

        notify_audit(settings, rec)
    return rec


def list_records(
    settings: Settings,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[AuditRecord]:
    """Records oldest first, filtered (``action``/``actor`` take shell patterns); ``limit`` keeps the latest."""
    rows, torn = read_jsonl(audit_path(settings))
    if torn:
        log.warning("audit log %s: skipped %d torn fragment(s) left by a crashed writer", audit_path(settings), torn)
    out: list[AuditRecord] = []
    for row in rows:
        try:
            rec = AuditRecord(**{k: row.get(k) for k in ("time", "actor", "action", "target", "details", "reason")})
            if action and not fnmatch.fnmatchcase(rec.action, action):
                continue
            if actor and not fnmatch.fnmatchcase(rec.actor, actor):
                continue
            if since and rec.timestamp < since:
                continue
        except (TypeError, ValueError, AttributeError):
            continue
        out.append(rec)
    if limit is not None:
        out = out[-limit:] if limit > 0 else []
    return out
