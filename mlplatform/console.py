"""What every command of the CLI shares: the consoles, the error-to-message decorator and time options.

Each part exports a typer ``app`` of its commands, each wrapped by ``friendly``; ``cli.build_app`` assembles them.

The consoles write to a terminal at its width; written anywhere else (a pipe, a file, ``| cat``, a test runner)
they use ``PIPED_WIDTH``, so tables keep every cell whole (no ``versi…``) and long lines are not hard-wrapped.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from mlplatform.errors import ExitCode, MLPlatformError
from mlplatform.timeutil import parse_interval, parse_time

if TYPE_CHECKING:  # pragma: no cover
    from mlplatform.settings import Settings

__all__ = [
    "KNOWN_WARNINGS",
    "PIPED_WIDTH",
    "console",
    "err_console",
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

    A closed stdout (``mlplatform ... | head``) is not an error: it goes up to ``cli.main``, which exits 0."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MLPlatformError as exc:
            err_console.print(f"[bold red]error:[/] {escape(_safe(str(exc)))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            if _is_redis_error(exc):  # a Redis failure that no typed wrapper caught: still exit 5, not "a bug"
                err_console.print(f"[bold red]error:[/] the online store did not answer: "
                                  f"{escape(_safe(f'{type(exc).__name__}: {exc}'))}", highlight=False, soft_wrap=True)
                raise typer.Exit(ExitCode.ONLINE_STORE_UNAVAILABLE) from None
            if get_settings().debug:
                raise
            err_console.print(
                f"[bold red]unexpected error:[/] {escape(_safe(f'{type(exc).__name__}: {exc}'))}",
                highlight=False,
                soft_wrap=True,
            )
            err_console.print("(a bug: set MLPLATFORM_DEBUG=1 for the traceback and report it)")
            raise typer.Exit(ExitCode.FAILURE) from None

    return wrapper  # type: ignore[return-value]


def _safe(text: str) -> str:
    """``text`` with every secret of the settings (passwords, keys, webhook URLs) masked."""
    from mlplatform.redact import redact, settings_secrets

    try:
        secrets = settings_secrets(get_settings())
    except Exception:  # settings that do not even load: still mask what the generic rules catch
        secrets = []
    return redact(text, secrets)


def _is_redis_error(exc: BaseException) -> bool:
    """A redis-py error (imported only if redis already is)."""
    redis = sys.modules.get("redis")
    return redis is not None and isinstance(exc, redis.RedisError)


def part_app(help_text: str | None = None) -> typer.Typer:
    """A typer app for one part's commands (or one command group), configured like every other."""
    return typer.Typer(help=help_text, no_args_is_help=True, pretty_exceptions_enable=False)
