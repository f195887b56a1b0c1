"""Run `mlplatform ...` in-process with the environment of a given Settings (the CLI reads only the environment)."""

from __future__ import annotations

import json

from mlplatform.settings import Settings


def invoke_cli(monkeypatch, settings: Settings, args: list[str]):
    """``mlplatform <args>`` through typer's CliRunner, with every setting of ``settings`` exported."""
    from typer.testing import CliRunner

    from mlplatform.cli import app
    from mlplatform.settings import get_settings

    for name, value in settings.model_dump().items():
        if value is not None:
            monkeypatch.setenv(f"MLPLATFORM_{name.upper()}",
                               json.dumps(value) if isinstance(value, list | dict) else str(value))
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
