"""The ``mlplatform`` command line: the root that assembles every part's typer app, and does nothing at import.

Each part exports ``app`` with its commands (wrapped by ``mlplatform.console.friendly``); ``build_app`` merges them
into one ``mlplatform`` command and registers every part's pipeline steps, so ``monitor check --retrain`` and
``pipeline run`` find them.
"""

from __future__ import annotations

import warnings

import typer

# Warnings Feast and its dependencies print on every load that tell a user nothing they can act on.
KNOWN_WARNINGS = (
    (".*experimental.*", RuntimeWarning),
    ("", DeprecationWarning),
)


def build_app() -> typer.Typer:
    """The whole ``mlplatform`` command: the core's commands, then each part's, then orchestration's."""
    from mlplatform.commands import features, records
    from monitoring import cli as monitoring_cli
    from orchestration import cli as orchestration_cli
    from orchestration.steps import load_builtin_steps
    from scoring import cli as scoring_cli
    from serving import cli as serving_cli
    from training import cli as training_cli

    load_builtin_steps()
    root = typer.Typer(
        help="mlplatform: from raw events to monitored online predictions.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    for part in (features, training_cli, serving_cli, scoring_cli, records, monitoring_cli, orchestration_cli):
        root.add_typer(part.app)
    return root


def main() -> None:  # pragma: no cover - console-script entry point
    """Run the ``mlplatform`` command."""
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    build_app()()


if __name__ == "__main__":  # pragma: no cover
    main()
