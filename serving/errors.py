"""Errors only the service raises; they join the platform's hierarchy so one handler maps them all."""

from __future__ import annotations

from mlplatform.errors import MLPlatformError


class Unauthorized(MLPlatformError):
    """An admin endpoint was called without the right API key."""

    exit_code = 7
    http_status = 401


class ModelUnavailable(MLPlatformError):
    """No warm model can answer (none promoted yet, or every candidate failed to load)."""

    exit_code = 8
    http_status = 503


class PayloadTooLarge(MLPlatformError):
    """The request body is larger than ``serving_max_body_bytes``."""

    exit_code = 2
    http_status = 413
