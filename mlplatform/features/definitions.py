"""Load the Feast definitions in ``feature_repo/`` and apply them to the registry, all or nothing."""

from __future__ import annotations

import contextlib
import io
import shutil

from mlplatform.errors import DefinitionError
from mlplatform.features.repo import parse_definitions, repo_on_path
from mlplatform.settings import Settings


def apply_definitions(settings: Settings, validate: bool = True) -> list:
    """Validate (optionally), then ``feast apply``. On any failure the registry file is restored byte for byte."""
    from mlplatform.features.validate import validate_definitions

    if validate:
        problems = validate_definitions(settings)
        if problems:
            raise DefinitionError(
                "definitions do not match their data; nothing was applied:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
    settings.export_feast_env()
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    repo = settings.feature_repo.resolve()
    if settings.feast_registry_url:  # the SQL registry: one serialized transaction (mlplatform.features.sql_registry)
        return _apply_sql(settings, repo)
    registry = settings.layout.registry_path
    registry.parent.mkdir(parents=True, exist_ok=True)
    backup = registry.with_name(registry.name + ".bak")
    existed = registry.exists()
    if existed:
        shutil.copy2(registry, backup)
    try:
        with repo_on_path(repo):
            config = load_repo_config(repo, repo / "feature_store.yaml")
            with contextlib.redirect_stdout(io.StringIO()):  # Feast prints "Deploying infrastructure for ..."
                apply_total(config, repo, skip_source_validation=False)
    except BaseException as exc:
        if existed:
            backup.replace(registry)
        else:
            registry.unlink(missing_ok=True)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise DefinitionError(f"feast apply failed, registry left as it was: {type(exc).__name__}: {exc}") from exc
    backup.unlink(missing_ok=True)
    return _applied(settings, f"feast registry {registry}")


def _apply_sql(settings: Settings, repo) -> list:
    from feast.repo_config import load_repo_config

    from mlplatform.features.sql_registry import apply_total_atomic
    from mlplatform.redact import redact

    try:
        with repo_on_path(repo):
            config = load_repo_config(repo, settings.feature_store_yaml.resolve())
            with contextlib.redirect_stdout(io.StringIO()):  # Feast prints "Deploying infrastructure for ..."
                apply_total_atomic(config, repo)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise DefinitionError(
            f"feast apply failed, registry left as it was: {type(exc).__name__}: "
            f"{redact(str(exc), [settings.feast_registry_url or ''])}"
        ) from None
    return _applied(settings, "feast sql registry")


def _applied(settings: Settings, target: str) -> list:
    """Audit a successful apply; the names of the views applied."""
    contents = parse_definitions(settings)
    views = contents.feature_views + contents.stream_feature_views + contents.on_demand_feature_views
    names = [fv.name for fv in views]
    from mlplatform.audit import record

    record(settings, "apply", target=target,
           details={"feature_views": sorted(names), "services": sorted(s.name for s in contents.feature_services)})
    return names
