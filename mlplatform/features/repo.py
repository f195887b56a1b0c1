"""The feature repo as Feast reads it: its definition modules imported afresh, parsed into RepoContents."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from mlplatform.errors import DataNotFoundError, DefinitionError
from mlplatform.settings import Settings


@contextlib.contextmanager
def repo_on_path(repo: Path) -> Iterator[None]:
    """Import the repo's modules fresh (Feast imports them by bare name) and restore cwd afterwards."""
    repo = repo.resolve()
    cwd = os.getcwd()
    # Feast imports definition files as top-level modules named after the files: forget any earlier import
    # (of this repo or another one) so definitions are read afresh with the current settings.
    for path in repo.glob("*.py"):
        sys.modules.pop(path.stem, None)
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        os.chdir(cwd)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(repo))


def parse_definitions(settings: Settings):
    """The repo's definitions as Feast ``RepoContents`` (nothing is applied)."""
    settings.export_feast_env()
    from feast.repo_operations import parse_repo

    repo = settings.feature_repo.resolve()
    with repo_on_path(repo):
        os.chdir(repo)
        try:
            return parse_repo(repo)
        except Exception as exc:  # a definition file that does not import
            raise DefinitionError(f"feature_repo does not load: {type(exc).__name__}: {exc}") from exc


def feast_project(feature_repo: Path) -> str:
    """The ``project:`` of ``<feature_repo>/feature_store.yaml`` (the namespace of every Redis key the logs use)."""
    import yaml

    path = Path(feature_repo) / "feature_store.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DataNotFoundError(f"cannot read the Feast project name from {path} ({type(exc).__name__}); "
                                "check MLPLATFORM_FEATURE_REPO") from None
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path} is not valid YAML ({type(exc).__name__})") from None
    project = data.get("project") if isinstance(data, dict) else None
    if not isinstance(project, str) or not project.strip():
        raise DefinitionError(f"{path} names no `project:`")
    return project.strip()
