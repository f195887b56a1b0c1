"""The Feast project name, read from ``feature_store.yaml`` without opening a FeatureStore (cheap: no Feast import)."""

from __future__ import annotations

from pathlib import Path

from mlplatform.errors import DataNotFoundError, DefinitionError


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
