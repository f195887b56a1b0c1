"""The audit log: an append-only JSONL record of every change of state — who, what, when, why.

Layout: ``<data_dir>/audit/audit.jsonl``, one JSON object per line::

    {"time": "...Z", "actor": "alice", "action": "apply", "target": "...", "details": {...}, "reason": "..."}

An append is one ``write`` of one complete line under an exclusive ``flock``, then ``fsync``: concurrent writers
(threads or processes) never interleave, and a crash leaves at worst a torn last line without its newline. The
next writer terminates such a fragment with a newline first, and readers skip it, so a reader never returns a
partial record and never loses a complete one.

Code that changes state calls ``record(settings, action, target, details)``. A caller running on behalf of
something else (a pipeline run) wraps its work in ``acting_for(reason=..., actor=...)`` so nested records say why.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import fnmatch
import getpass
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.errors import MLPlatformError
from mlplatform.settings import Settings

log = logging.getLogger(__name__)

AUDIT_FILE = Path("audit") / "audit.jsonl"
# Actions the platform records. Plain names, so `mlplatform audit --action promote` reads naturally.
ACTIONS = (
    "apply",
    "materialize",
    "train",
    "promote",
    "force_promote",
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


class AuditLogError(MLPlatformError):
    """The audit log could not be written or read."""

    exit_code = 8
    http_status = 500


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
    return settings.data_path / AUDIT_FILE


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


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    """Append ``obj`` as one line to ``path``: one write under an exclusive flock, then fsync (see module doc)."""
    line = json.dumps(obj, default=_json_default, separators=(",", ":"), ensure_ascii=False)
    data = line.encode("utf-8") + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size and not _ends_with_newline(path, size):
                data = b"\n" + data  # a writer crashed mid-line: close its fragment so ours stays whole
            view = memoryview(data)
            while view:  # a regular-file write is complete in practice; loop in case it is not
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _ends_with_newline(path: Path, size: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Every complete record of ``path`` in order, and how many torn fragments were skipped."""
    if not path.exists():
        return [], 0
    records: list[dict[str, Any]] = []
    torn = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):  # the last line is being written (or a writer died): not a record yet
                if raw.strip():
                    torn += 1
                continue
            text = raw.strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except (ValueError, UnicodeDecodeError):
                torn += 1
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                torn += 1
    return records, torn


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
