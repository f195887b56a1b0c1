"""What every command of the CLI shares: the consoles, the error-to-message decorator, ``--json`` and time options.

Each part exports a typer ``app`` of its commands, each wrapped by ``friendly``; ``cli.build_app`` assembles them.

``--json`` (docs/cli-json.md): a command that takes it names its parameter ``as_json`` (``JsonOpt``). While it runs,
``friendly`` points ``sys.stdout`` at stderr, so progress and anything a library prints cannot reach stdout; the
command prints its one document with ``emit_json``. A typed error prints its message on stderr as always, and on
stdout the document ``{"error": {"type", "message", "exit_code"}}``; the exit code is the error's either way.

The consoles write to a terminal at its width; written anywhere else (a pipe, a file, ``| cat``, a test runner)
they use ``PIPED_WIDTH``, so tables keep every cell whole (no ``versi…``) and long lines are not hard-wrapped.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from mlplatform.errors import ExitCode, InvalidInputError, MLPlatformError
from mlplatform.timeutil import parse_interval, parse_time

if TYPE_CHECKING:  # pragma: no cover
    from mlplatform.settings import Settings

__all__ = [
    "KNOWN_WARNINGS",
    "PIPED_WIDTH",
    "JsonOpt",
    "console",
    "emit_json",
    "err_console",
    "error_document",
    "escape",
    "friendly",
    "get_settings",
    "is_known_warning",
    "parse_interval",
    "parse_time",
    "part_app",
    "quiet_known_warnings",
]

PIPED_WIDTH = 10_000  # columns when the output is not a terminal: wide enough that no table cell is cut
F = TypeVar("F", bound=Callable)

JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document on stdout instead of tables (keys: docs/cli-json.md); the exit code "
    "is the same.")]
# Where emit_json writes while a --json command runs (its sys.stdout then points at stderr); None: sys.stdout.
_json_stdout: contextvars.ContextVar[TextIO | None] = contextvars.ContextVar("mlplatform_json_stdout", default=None)


class CliConsole(Console):
    """A rich Console that is as wide as its terminal, and ``PIPED_WIDTH`` wide when it writes to no terminal.

    Decided at each print (not at import), so a command piped into ``cat`` or run by a test runner gets whole
    table cells; rich alone would fall back to 80 columns there."""

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size; ``PIPED_WIDTH`` columns when not writing to a terminal (unless a width was set)."""
        size = super().size
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(PIPED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        width, height = new_size
        self._width, self._height = width, height

    def on_broken_pipe(self) -> None:
        """The reader closed the pipe (``| head``): a normal end. Stop writing and exit 0 (rich's default exits 1)."""
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        raise SystemExit(0)


# Warnings Feast and its dependencies print on every load that tell a user nothing they can act on:
# (message regex, category). Feast's stream and on-demand views are "experimental features in alpha development"
# (RuntimeWarning on every registry load); libraries warn about their own deprecated calls (ibis, SQLAlchemy
# inside MLflow, Feast itself): DeprecationWarning and its subclasses.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r".*experimental", RuntimeWarning),
    (r"", DeprecationWarning),
)


def is_known_warning(message: Warning | str, category: type[Warning]) -> bool:
    """Whether a warning is one of KNOWN_WARNINGS (matched like ``warnings.filterwarnings``: from the start)."""
    text = str(message)
    return any(issubclass(category, cat) and re.match(pattern, text, re.S) for pattern, cat in KNOWN_WARNINGS)


def quiet_known_warnings() -> None:
    """Never print KNOWN_WARNINGS in this process (idempotent).

    ``warnings.filterwarnings`` alone is not enough: Feast calls ``warnings.simplefilter("once", RuntimeWarning)``
    (and ``DeprecationWarning``) when imported, which puts its filter in front of ours. So the filters are set (for
    code that imports before Feast) and ``warnings.showwarning`` drops known warnings whatever filter let them by.
    """
    for pattern, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    show = warnings.showwarning
    if getattr(show, "_mlplatform_quiet", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not is_known_warning(message, category):
            show(message, category, filename, lineno, file, line)

    showwarning._mlplatform_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


console = CliConsole()
err_console = CliConsole(stderr=True)


def get_settings() -> Settings:
    """The process's Settings (``mlplatform.settings.get_settings``), imported on first use: pydantic is not loaded
    for ``--help``."""
    from mlplatform.settings import get_settings as settings_of_process

    return settings_of_process()


def friendly(fn: F) -> F:
    """Turn our typed errors into a one-line message and the error's exit code (never a traceback).

    With ``--json`` (a parameter named ``as_json``), stdout is kept for the command's one document (see the module's
    docstring) and an error also prints ``error_document`` there. A closed stdout (``mlplatform ... | head``) is not
    an error: it goes up to ``cli.main``, which exits 0."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json"))
        try:
            with _json_mode() if as_json else contextlib.nullcontext():
                return fn(*args, **kwargs)
        except MLPlatformError as exc:
            _fail(f"[bold red]error:[/] {escape(_safe(str(exc)))}", exc, exc.exit_code, as_json)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            if (invalid := settings_error(exc)) is not None:
                _fail(f"[bold red]error:[/] {escape(_safe(str(invalid)))}", invalid, invalid.exit_code, as_json)
            if _is_redis_error(exc):  # a Redis failure that no typed wrapper caught: still exit 5, not "a bug"
                _fail(f"[bold red]error:[/] the online store did not answer: "
                      f"{escape(_safe(f'{type(exc).__name__}: {exc}'))}", exc, ExitCode.ONLINE_STORE_UNAVAILABLE,
                      as_json)
            if _is_spark_error(exc) and not _debug():  # a failed Spark job: its reason, not a bug of ours
                _fail(f"[bold red]error:[/] Spark failed ({type(exc).__name__}): {escape(_safe(_spark_reason(exc)))}"
                      "\n(memory: MLPLATFORM_SPARK_DRIVER_MEMORY, or spark-defaults.conf; MLPLATFORM_DEBUG=1 shows the "
                      "whole error)", exc, ExitCode.FAILURE, as_json)
            if _debug():
                raise
            _fail(f"[bold red]unexpected error:[/] {escape(_safe(f'{type(exc).__name__}: {exc}'))}\n"
                  "(a bug: set MLPLATFORM_DEBUG=1 for the traceback and report it)", exc, ExitCode.FAILURE, as_json)

    return wrapper  # type: ignore[return-value]


def settings_error(exc: BaseException) -> InvalidInputError | None:
    """The settings' validation error ``exc`` as an ``InvalidInputError`` naming each variable and what is wrong
    with it (never its value: it may be a password), else None."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        names = ".".join(str(part) for part in error["loc"])
        problems.append(f"MLPLATFORM_{names.upper()}: {message}" if names else message)
    return InvalidInputError("invalid settings: " + "; ".join(problems))


def _debug() -> bool:
    """``MLPLATFORM_DEBUG`` as the settings read it (False when the settings do not load)."""
    try:
        return get_settings().debug
    except Exception:  # noqa: BLE001 - the error being reported is the command's
        return False


def _fail(message: str, exc: BaseException, code: int, as_json: bool) -> NoReturn:
    """Print ``message`` on stderr (and, with --json, the error document on stdout); exit with ``code``."""
    err_console.print(message, highlight=False, soft_wrap=True)
    if as_json:
        emit_json(error_document(exc, code))
    raise typer.Exit(code) from None


def error_document(exc: BaseException, exit_code: int) -> dict[str, Any]:
    """What ``--json`` prints on stdout when a command fails: the error's class name, its message (secrets
    masked, as on stderr) and the exit code the command ends with."""
    return {"error": {"type": type(exc).__name__, "message": _safe(str(exc)), "exit_code": int(exit_code)}}


@contextlib.contextmanager
def _json_mode() -> Iterator[None]:
    """While a --json command runs: ``sys.stdout`` points at stderr (progress, a library's prints), and
    ``emit_json`` writes to the real stdout."""
    token = _json_stdout.set(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_stdout.reset(token)


def emit_json(doc: Mapping[str, Any]) -> None:
    """Print ``doc`` as the command's one JSON document (one line) on stdout, made ready by
    ``mlplatform.json_output.json_ready``: times as ISO-8601 UTC, paths in the data folder relative to it, every
    secret of the settings masked."""
    from mlplatform.json_output import dumps, json_ready
    from mlplatform.redact import settings_secrets

    try:
        settings = get_settings()
        data_dir, secrets = settings.data_path, settings_secrets(settings)
    except Exception:  # settings that do not even load (the error being reported): the generic rules still apply
        data_dir, secrets = None, []
    out = _json_stdout.get() or sys.stdout
    out.write(dumps(json_ready(doc, data_dir, secrets)) + "\n")
    out.flush()


def _safe(text: str) -> str:
    """``text`` with every secret of the settings (passwords, keys, webhook URLs) masked."""
    from mlplatform.redact import redact, settings_secrets

    try:
        secrets = settings_secrets(get_settings())
    except Exception:  # settings that do not even load: still mask what the generic rules catch
        secrets = []
    return redact(text, secrets)


def _is_redis_error(exc: BaseException) -> bool:
    """A redis-py error (imported only if redis already is), a cluster client's with no reachable node included."""
    redis = sys.modules.get("redis")
    return redis is not None and isinstance(exc, redis.RedisError | redis.exceptions.RedisClusterException)


def _is_spark_error(exc: BaseException) -> bool:
    """An error PySpark or its JVM bridge raised (a failed Spark job, Spark that could not start)."""
    return any(cls.__module__.split(".")[0] in ("pyspark", "py4j") for cls in type(exc).__mro__)


def _spark_reason(exc: BaseException) -> str:
    """The line of a Spark error that says why (a JVM error's text is its whole Java stack)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("at ")]
    for line in lines:
        if "Error:" in line or "Exception:" in line:
            return line[:400]
    return (lines[0] if lines else type(exc).__name__)[:400]


def part_app(help_text: str | None = None) -> typer.Typer:
    """A typer app for one part's commands (or one command group), configured like every other."""
    return typer.Typer(help=help_text, no_args_is_help=True, pretty_exceptions_enable=False)
