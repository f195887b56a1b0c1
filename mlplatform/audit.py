"""The audit log: an append-only JSONL record of every change of state — who, what, when, why.

Layout: ``<data_dir>/audit/audit.jsonl``, one JSON object per line::

    {"time": "...Z", "actor": "alice", "action": "apply", "target": "...", "details": {...}, "reason": "...",
     "channel": "cli"}

``actor`` is *who* (``MLPLATFORM_ACTOR``, else the login user); ``channel`` is *through what* the change came:
``cli``, ``api`` (the inference service's admin endpoints), ``pipeline`` (a pipelines.yaml run) or ``monitoring``
(``monitor check --retrain``). Records written before ``channel`` existed read back with the channel their details
named (promotions kept it there), else none.

Appends go through ``mlplatform.files.append_jsonl`` (one write under an exclusive ``flock``, then ``fsync``):
concurrent writers never interleave, and a torn last line left by a crash is skipped by readers, so a reader never
returns a partial record and never loses a complete one.

Code that changes state calls ``record(settings, action, target, details)``. A caller running on behalf of
something else (a pipeline run) wraps its work in ``acting_for(reason=..., actor=..., channel=...)`` so nested
records say why and how.

Families: ``list_records(action="promote")`` (``mlplatform audit --action promote``) finds every action of the
promotion family in ``ACTION_FAMILIES`` (promote, force_promote, promote_refused, rollback); any other value is a
shell pattern on the action name, and ``=promote`` means that action alone.
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
# `--action <family>` finds every action of the family: what people mean by "promotions" has several names.
ACTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "promote": ("promote", "force_promote", "promote_refused", "rollback"),
}
# How a change came in (`--channel`); a record made outside any of them says "cli".
CHANNELS = ("cli", "api", "pipeline", "monitoring")
DEFAULT_CHANNEL = "cli"

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
    channel: str | None = None  # cli | api | pipeline | monitoring (None: an old record that did not say)

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
def acting_for(reason: str | None = None, actor: str | None = None, channel: str | None = None) -> Iterator[None]:
    """Records made inside the block default to this reason (actor, channel), e.g. ``pipeline daily run 3f2a``."""
    current = dict(_context.get() or {})
    if reason is not None:
        current["reason"] = reason
    if actor is not None:
        current["actor"] = actor
    if channel is not None:
        current["channel"] = channel
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
    channel: str | None = None,
) -> AuditRecord:
    """Append one change of state to the audit log (and fire webhooks for promotions, rollbacks and breaches).

    ``channel`` defaults to a ``channel`` the caller put in ``details``, then ``acting_for``'s, then ``cli``."""
    ctx = _context.get() or {}
    details = details or {}
    rec = AuditRecord(
        time=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        actor=actor or ctx.get("actor") or current_actor(settings),
        action=action,
        target=str(target),
        details=details,
        reason=reason if reason is not None else ctx.get("reason"),
        channel=channel or _details_channel(details) or ctx.get("channel") or DEFAULT_CHANNEL,
    )
    try:
        append_jsonl(audit_path(settings), asdict(rec))
    except OSError as exc:
        raise AuditLogError(f"cannot append to the audit log {audit_path(settings)}: {exc}") from exc
    if action in NOTIFY_ACTIONS:
        from mlplatform.notifications import notify_audit

        notify_audit(settings, rec)
    return rec


def _details_channel(details: Any) -> str | None:
    """The channel a caller (or an old record) kept in ``details``, if any."""
    value = details.get("channel") if isinstance(details, dict) else None
    return value if isinstance(value, str) and value else None


def action_matcher(action: str | None):
    """A predicate on action names: a family name (``promote``) matches its family, ``=name`` that action only,
    anything else is a shell pattern (``*promote*``)."""
    if not action:
        return lambda name: True
    if action.startswith("="):
        exact = action[1:]
        return lambda name: name == exact
    if action in ACTION_FAMILIES:
        family = frozenset(ACTION_FAMILIES[action])
        return lambda name: name in family
    return lambda name: fnmatch.fnmatchcase(name, action)


def _from_row(row: dict) -> AuditRecord:
    """A record from one JSON line (older lines have no ``channel``: their details may say it)."""
    values = {k: row.get(k) for k in ("time", "actor", "action", "target", "details", "reason")}
    values["details"] = values["details"] or {}
    values["channel"] = row.get("channel") or _details_channel(values["details"])
    return AuditRecord(**values)


def list_records(
    settings: Settings,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    channel: str | None = None,
) -> list[AuditRecord]:
    """Records oldest first, filtered (``action``: a family or shell pattern, see ``action_matcher``; ``actor`` and
    ``channel``: shell patterns); ``limit`` keeps the latest."""
    rows, torn = read_jsonl(audit_path(settings))
    if torn:
        log.warning("audit log %s: skipped %d torn fragment(s) left by a crashed writer", audit_path(settings), torn)
    wanted_action = action_matcher(action)
    out: list[AuditRecord] = []
    for row in rows:
        try:
            rec = _from_row(row)
            if not wanted_action(rec.action):
                continue
            if actor and not fnmatch.fnmatchcase(rec.actor, actor):
                continue
            if channel and not fnmatch.fnmatchcase(rec.channel or "", channel):
                continue
            if since and rec.timestamp < since:
                continue
        except (TypeError, ValueError, AttributeError):
            continue
        out.append(rec)
    if limit is not None:
        out = out[-limit:] if limit > 0 else []
    return out
