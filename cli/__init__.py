"""The ``mlplatform`` command line: the root that assembles every part's typer app, and does nothing at import.

Each part exports ``app`` with its commands (wrapped by ``mlplatform.console.friendly``); ``build_app`` merges them
into one ``mlplatform`` command. Every part's pipeline steps are registered when a command runs (not for
``--help``), so ``monitor check --retrain`` and ``pipeline run`` find them.

Start-up is kept cheap: no CLI module imports pandas, Feast, MLflow, XGBoost or Evidently at module level (each
command imports what it needs when it runs), so ``mlplatform --help`` and ``--version`` cost little more than
Python itself (``bench/cli.py`` measures it).
"""

from __future__ import annotations

import os
import sys

import typer

from mlplatform.console import KNOWN_WARNINGS, is_known_warning, quiet_known_warnings

__all__ = ["KNOWN_WARNINGS", "build_app", "is_known_warning", "main", "quiet_known_warnings"]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"mlplatform {version('mlplatform')}")
        except PackageNotFoundError:  # pragma: no cover - a checkout that was never installed
            typer.echo("mlplatform (not installed: run `make setup`)")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """The whole ``mlplatform`` command: the core's commands, then each part's, then orchestration's."""
    from mlplatform.commands import features, records
    from monitoring import cli as monitoring_cli
    from orchestration import cli as orchestration_cli
    from scoring import cli as scoring_cli
    from serving import cli as serving_cli
    from serving import score_command
    from streaming import cli as streaming_cli
    from training import cli as training_cli

    root = typer.Typer(
        help="mlplatform: from raw events to monitored online predictions.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )

    @root.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", is_eager=True, callback=_version, help="Print the installed version and exit."
        ),
    ) -> None:
        """mlplatform: from raw events to monitored online predictions."""
        from orchestration.steps import load_builtin_steps

        load_builtin_steps()  # a command is about to run (not --help): every part's steps, by name

    # `stream score` is the serving part's (the service's models and Predictor, without HTTP) in the streaming part's
    # `stream` group: added here, so that neither part imports the other
    streaming_cli.stream_app.command("score")(score_command.score)
    for part in (features, training_cli, serving_cli, streaming_cli, scoring_cli, records, monitoring_cli,
                 orchestration_cli):
        root.add_typer(part.app)
    return root


def _stdout_to_devnull() -> None:
    """Point file descriptor 1 at /dev/null, so flushing what is still buffered at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a descriptor
        pass
    finally:
        os.close(devnull)


def _stdout_identity() -> tuple[int, int] | None:
    """(device, inode) of what file descriptor 1 points at, or None."""
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _pipe_was_closed(stdout_before: tuple[int, int] | None) -> bool:
    """Whether a failing exit came from a closed stdout: typer (click) wraps the streams in PacifyFlushWrapper and
    exits 1; rich (typer's help console) points descriptor 1 at /dev/null and exits 1."""
    return type(sys.stdout).__name__ == "PacifyFlushWrapper" or _stdout_identity() != stdout_before


def _configure_logs() -> None:
    """With ``MLPLATFORM_LOG_FORMAT=json``, the log records of every command (warnings of our code and libraries) as
    JSON lines on stderr; the text default leaves logging as it is. Settings that do not load are the command's to
    report, with its usual message."""
    from mlplatform.settings import get_settings

    try:
        settings = get_settings()
    except Exception:  # noqa: BLE001 - reported by the command itself
        return
    if settings.log_format == "json":
        import logging

        from mlplatform.logs import configure_logging
        from mlplatform.redact import settings_secrets

        configure_logging("json", logging.WARNING, tuple(settings_secrets(settings)))


def main() -> None:  # pragma: no cover - console-script entry point (tests run it in a subprocess)
    """Run the ``mlplatform`` command; a reader that closes the pipe early (``| head``) is a normal exit (0)."""
    quiet_known_warnings()
    _configure_logs()
    stdout_before = _stdout_identity()
    try:
        try:
            build_app()()
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
        sys.exit(0)
    except SystemExit as exc:
        if exc.code == 1 and _pipe_was_closed(stdout_before):  # the code typer and rich give a closed pipe
            _stdout_to_devnull()
            sys.exit(0)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
