"""Logs for people or for log shippers: one setting, ``MLPLATFORM_LOG_FORMAT`` (``text`` or ``json``).

With ``json`` every log record of the service (its own, uvicorn's) and of the CLI is one JSON object on one line
of stderr: ``ts`` (ISO-8601 UTC), ``level``, ``logger``, ``message``, the record's structured fields (a request's
``request_id``, ``model``, ``version``, ``latency_ms``, ``outcome``, ...: whatever was passed as ``extra={"fields":
{...}}``), and for an exception its type and (redacted) text; no secret reaches a line (``mlplatform.redact``).
What the CLI prints for people (tables, progress) is output, not logs: it is unchanged (``--json`` gives it as JSON).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from mlplatform.redact import redact

FIELDS = "fields"  # the ``extra`` key carrying a record's structured fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record; secrets redacted from the message and the exception."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage(), self.secrets),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            out["exc_type"] = exc_type.__name__
            out["exc"] = redact("".join(traceback.format_exception(exc_type, exc, tb)), self.secrets)
        return json.dumps(out, default=str, separators=(",", ":"))


def formatter(log_format: str, secrets: tuple[str, ...] = ()) -> logging.Formatter:
    """The formatter of ``log_format``: ``json``, else a plain one-line text format."""
    if log_format == "json":
        return JsonFormatter(secrets)
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def configure_logging(log_format: str, level: int | str = logging.INFO, secrets: tuple[str, ...] = ()) -> None:
    """Send every record (root logger) to stderr in ``log_format``; replaces handlers installed before."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(log_format == "json")  # Python warnings become records (logger py.warnings) too


def uvicorn_log_config(log_format: str, level: str = "info", secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """uvicorn's ``log_config``: its loggers (and the app's, through the root) to stderr in ``log_format``."""
    fmt = {"()": f"{__name__}._json_formatter", "secrets": list(secrets)} if log_format == "json" else {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": fmt},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {name: {"handlers": [], "propagate": True, "level": level.upper()}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def _json_formatter(secrets: list[str] | None = None) -> JsonFormatter:
    """The factory logging.config calls for the ``json`` formatter."""
    return JsonFormatter(tuple(secrets or ()))
