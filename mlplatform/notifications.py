"""Webhook notifications: tell people when something needs them (a breach, a promotion or rollback, a failed run).

Each configured URL (``settings.webhooks``) gets a JSON POST that common chat tools accept as is: Slack and
Mattermost incoming webhooks read ``text`` (and ``attachments`` with ``fields``), Teams and others read ``text``;
the structured ``event`` and ``fields`` keys carry the same facts for machines.

Sending never blocks or fails the caller: ``notify`` hands the POSTs to a small background thread pool and returns
at once. Each POST has a short timeout and is retried a bounded number of times (connection errors, timeouts,
5xx and 429); every outcome is logged and appended to ``<data_dir>/notifications/deliveries.jsonl``. At process
exit the pool finishes what is queued, which is bounded by (retries + 1) x timeout per webhook.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlplatform.redact import redact as redact_text
from mlplatform.redact import redact_url
from mlplatform.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from mlplatform.audit import AuditRecord

log = logging.getLogger(__name__)
BACKOFF_SECONDS = 0.25

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


@dataclass(frozen=True)
class Delivery:
    """What happened to one notification at one webhook."""

    url: str  # redacted: webhook URLs carry secrets
    event: str
    ok: bool
    attempts: int
    status: int | None
    error: str | None
    seconds: float


def redact(url: str) -> str:
    """``scheme://host/…`` plus the path's last 4 characters: enough to tell webhooks apart, not to use one
    (``user:pass@`` and the query are dropped; ``mlplatform.redact.redact_url``)."""
    return redact_url(url)


def payload(event: str, text: str, fields: dict[str, Any] | None = None, severity: str = "info") -> dict[str, Any]:
    """The JSON body: ``text`` for chat tools, ``attachments`` for Slack/Mattermost, ``event``/``fields`` for code."""
    fields = {k: v for k, v in (fields or {}).items() if v is not None}
    color = {"info": "#2eb886", "warning": "#daa038", "error": "#a30200"}.get(severity, "#439fe0")
    return {
        "text": text,
        "username": "mlplatform",
        "event": event,
        "severity": severity,
        "fields": fields,
        "attachments": [
            {
                "fallback": text,
                "color": color,
                "fields": [{"title": k, "value": str(v), "short": len(str(v)) < 40} for k, v in fields.items()],
            }
        ],
    }


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # Worker threads are joined at interpreter exit, so queued notifications still go out (bounded time).
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook")
        return _pool


def post_with_retries(settings: Settings, url: str, body: dict[str, Any]) -> Delivery:
    """POST ``body`` to ``url``: timeout ``webhook_timeout_seconds``, up to ``webhook_retries`` retries with backoff."""
    import httpx

    t0 = time.perf_counter()
    attempts = 0
    status: int | None = None
    error: str | None = None
    for attempt in range(settings.webhook_retries + 1):
        attempts = attempt + 1
        try:
            response = httpx.post(url, json=body, timeout=settings.webhook_timeout_seconds)
            status = response.status_code
            if status < 300:
                return Delivery(
                    redact(url), body.get("event", ""), True, attempts, status, None, time.perf_counter() - t0
                )
            error = f"HTTP {status}"
            if status < 500 and status != 429:
                break  # the receiver refuses this body: retrying will not help
        except httpx.HTTPError as exc:  # httpx may quote the URL: its credentials and token path are masked
            status, error = None, redact_text(f"{type(exc).__name__}: {exc}", [url])[:300]
        if attempt < settings.webhook_retries:
            time.sleep(BACKOFF_SECONDS * 2**attempt)
    return Delivery(redact(url), body.get("event", ""), False, attempts, status, error, time.perf_counter() - t0)


def _deliver(settings: Settings, url: str, body: dict[str, Any]) -> Delivery:
    from dataclasses import asdict

    from mlplatform.files import append_jsonl

    try:
        delivery = post_with_retries(settings, url, body)
    except Exception as exc:  # never let a notification escape its thread
        error = redact_text(f"{type(exc).__name__}: {exc}", [url])[:300]
        delivery = Delivery(redact(url), body.get("event", ""), False, 0, None, error, 0.0)
    if delivery.ok:
        log.info("webhook %s: %s delivered (attempt %d)", delivery.url, delivery.event, delivery.attempts)
    else:
        log.warning(
            "webhook %s: %s NOT delivered after %d attempt(s): %s",
            delivery.url,
            delivery.event,
            delivery.attempts,
            delivery.error,
        )
    try:
        append_jsonl(settings.layout.deliveries_log, {"time": datetime.now(UTC), **asdict(delivery)})
    except OSError as exc:
        log.warning("cannot record the webhook delivery: %s", exc)
    return delivery


def notify(
    settings: Settings, event: str, text: str, fields: dict[str, Any] | None = None, severity: str = "info"
) -> list[Future]:
    """Send one notification to every configured webhook in the background; returns at once (futures of Delivery)."""
    if not settings.webhooks:
        return []
    body = payload(event, text, fields, severity)
    pool = _executor()
    return [pool.submit(_deliver, settings, url, body) for url in settings.webhooks]


def wait_for(futures: list[Future], timeout: float | None = None) -> list[Delivery]:
    """Wait (at most ``timeout`` seconds) for deliveries; those still running are left to finish in the background."""
    from concurrent.futures import wait

    done, _ = wait(futures, timeout=timeout)
    return [f.result() for f in futures if f in done]


_AUDIT_TEXT = {
    "promote": ("Model promoted", "info"),
    "force_promote": ("Model FORCE-promoted (gate bypassed)", "warning"),
    "rollback": ("Model rolled back", "warning"),
    "monitor_breach": ("Monitoring breach", "error"),
}


def notify_audit(settings: Settings, rec: AuditRecord) -> list[Future]:
    """Notify the webhooks of an audited change that needs people (promotion, rollback, monitoring breach)."""
    title, severity = _AUDIT_TEXT.get(rec.action, (rec.action, "info"))
    text = f"{title}: {rec.target}" + (f" — {rec.reason}" if rec.reason else "") + f" (by {rec.actor})"
    fields = {"action": rec.action, "target": rec.target, "actor": rec.actor, "reason": rec.reason, "time": rec.time}
    fields.update({k: v for k, v in rec.details.items() if isinstance(v, str | int | float | bool)})
    return notify(settings, rec.action, text, fields, severity)
