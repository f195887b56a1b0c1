"""Typed errors and the CLI's exit codes: each error carries an exit code for the CLI and an HTTP status for the
service. ``ExitCode`` is the one table of exit codes (unique values; the README lists it)."""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class ExitCode(IntEnum):
    """Every exit code a ``mlplatform`` command can end with (meanings in ``EXIT_CODE_MEANINGS``)."""

    OK = 0
    FAILURE = 1
    INVALID_INPUT = 2
    NOT_FOUND = 3
    DEFINITION = 4
    ONLINE_STORE_UNAVAILABLE = 5
    CONFLICT = 6
    MODEL_REGISTRY = 7
    AUDIT_LOG = 8
    STEP_UNAVAILABLE = 9
    BREACH = 10
    UNAUTHORIZED = 11
    MODEL_UNAVAILABLE = 12


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done; for `monitor check`: at least one check judged, none breached",
    ExitCode.FAILURE: "a pipeline step failed, the promotion gate refused, or an unexpected error (a bug)",
    ExitCode.INVALID_INPUT: "bad option, file or request",
    ExitCode.NOT_FOUND: "data the command needs does not exist yet; for `monitor check`: nothing to check (no served "
    "requests, or no check had enough rows/labels to judge)",
    ExitCode.DEFINITION: "feature definitions disagree with their data; nothing was applied",
    ExitCode.ONLINE_STORE_UNAVAILABLE: "Redis did not answer",
    ExitCode.CONFLICT: "collides with existing state (immutable raw data, a lock another process holds)",
    ExitCode.MODEL_REGISTRY: "the model registry could not be read or written",
    ExitCode.AUDIT_LOG: "the audit log could not be written or read",
    ExitCode.STEP_UNAVAILABLE: "a pipeline names a step no part registered",
    ExitCode.BREACH: "`monitor check`: at least one monitoring threshold was breached (each named)",
    ExitCode.UNAUTHORIZED: "an admin call without the right API key",
    ExitCode.MODEL_UNAVAILABLE: "no warm model can answer",
}


class MLPlatformError(Exception):
    """Base of every error a user may see. The message says what was wrong and what to do."""

    exit_code: ExitCode = ExitCode.FAILURE
    http_status: int = 500


class InvalidInputError(MLPlatformError):
    """The user gave something we cannot use (bad option, bad file, bad body)."""

    exit_code = ExitCode.INVALID_INPUT
    http_status = 422


class DataNotFoundError(MLPlatformError):
    """Data the step needs does not exist yet (run an earlier step first)."""

    exit_code = ExitCode.NOT_FOUND
    http_status = 404


class DefinitionError(MLPlatformError):
    """Feature definitions disagree with their data; nothing was applied."""

    exit_code = ExitCode.DEFINITION
    http_status = 422


class OnlineStoreUnavailable(MLPlatformError):
    """Redis did not answer."""

    exit_code = ExitCode.ONLINE_STORE_UNAVAILABLE
    http_status = 503


class ConflictError(MLPlatformError):
    """The operation collides with existing state (immutable data, concurrent change)."""

    exit_code = ExitCode.CONFLICT
    http_status = 409


class RegistryError(MLPlatformError):
    """The MLflow model registry could not be read or written."""

    exit_code = ExitCode.MODEL_REGISTRY
    http_status = 503


class AuditLogError(MLPlatformError):
    """The audit log could not be written or read."""

    exit_code = ExitCode.AUDIT_LOG
    http_status = 500


class StepUnavailable(MLPlatformError):
    """A pipeline names a step no part has registered."""

    exit_code = ExitCode.STEP_UNAVAILABLE


class Unauthorized(MLPlatformError):
    """An admin endpoint was called without the right API key."""

    exit_code = ExitCode.UNAUTHORIZED
    http_status = 401


class ModelUnavailable(MLPlatformError):
    """No warm model can answer (none promoted yet, or every candidate failed to load)."""

    exit_code = ExitCode.MODEL_UNAVAILABLE
    http_status = 503


class PayloadTooLarge(MLPlatformError):
    """The request body is larger than ``serving_max_body_bytes``."""

    exit_code = ExitCode.INVALID_INPUT
    http_status = 413
