"""Typed errors: each carries an exit code for the CLI and an HTTP status for the service."""

from __future__ import annotations


class MLPlatformError(Exception):
    """Base of every error a user may see. The message says what was wrong and what to do."""

    exit_code: int = 1
    http_status: int = 500


class InvalidInputError(MLPlatformError):
    """The user gave something we cannot use (bad option, bad file, bad body)."""

    exit_code = 2
    http_status = 422


class DataNotFoundError(MLPlatformError):
    """Data the step needs does not exist yet (run an earlier step first)."""

    exit_code = 3
    http_status = 404


class DefinitionError(MLPlatformError):
    """Feature definitions disagree with their data; nothing was applied."""

    exit_code = 4
    http_status = 422


class OnlineStoreUnavailable(MLPlatformError):
    """Redis did not answer."""

    exit_code = 5
    http_status = 503


class ConflictError(MLPlatformError):
    """The operation collides with existing state (immutable data, concurrent change)."""

    exit_code = 6
    http_status = 409
