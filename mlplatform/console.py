"""What every command of the CLI shares: the consoles, the error-to-message decorator and time options.

Each part exports a typer ``app`` of its commands, each wrapped by ``friendly``; ``cli.build_app`` assembles them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mlplatform.errors import ExitCode, MLPlatformError
from mlplatform.settings import get_settings
from mlplatform.timeutil import parse_time

__all__ = ["console", "err_console", "friendly", "parse_time", "part_app"]

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


def friendly(fn: F) -> F:
    """Turn our typed errors into a one-line message and the error's exit code (never a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MLPlatformError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if get_settings().debug:
                raise
            err_console.print(
                f"[bold red]unexpected error:[/] {escape(f'{type(exc).__name__}: {exc}')}",
                highlight=False,
                soft_wrap=True,
            )
            err_console.print("(a bug: set MLPLATFORM_DEBUG=1 for the traceback and report it)")
            raise typer.Exit(ExitCode.FAILURE) from None

    return wrapper  # type: ignore[return-value]


def part_app(help_text: str | None = None) -> typer.Typer:
    """A typer app for one part's commands (or one command group), configured like every other."""
    return typer.Typer(help=help_text, no_args_is_help=True, pretty_exceptions_enable=False)
