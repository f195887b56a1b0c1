"""Pipeline steps of the feature author's part: build, validate, apply, materialize."""

from __future__ import annotations

from typing import Any

from mlplatform.errors import DefinitionError
from mlplatform.settings import Settings
from mlplatform.steps import register_step


@register_step("features.build")
def build_features_step(settings: Settings, since: str | None = "last") -> dict[str, Any]:
    """`features build --since last` (a full build the first time)."""
    from mlplatform.features.pipelines import build_features, read_build_state

    if since == "last" and "until" not in read_build_state(settings.layout.features_dir):
        since = None
    result = build_features(settings.data_path, since=since)
    return {"since": result.since, "until": result.until, "rows_appended": sum(result.appended.values())}


@register_step("features.validate")
def validate_step(settings: Settings) -> dict[str, Any]:
    """`features validate`: a definition problem fails the pipeline (not retried)."""
    from mlplatform.features.validate import validate_definitions

    problems = validate_definitions(settings)
    if problems:
        raise DefinitionError("definitions do not match their data:\n" + "\n".join(f"  - {p}" for p in problems))
    return {"problems": 0}


@register_step("features.apply")
def apply_step(settings: Settings) -> dict[str, Any]:
    """`apply` (already validated by the step before)."""
    from mlplatform.features.definitions import apply_definitions

    names = apply_definitions(settings, validate=False)
    return {"feature_views": len(names)}


@register_step("features.materialize")
def materialize_step(settings: Settings, full: bool = False) -> dict[str, Any]:
    """`materialize`, incremental: each view continues from its last end."""
    from mlplatform.features.materialize import materialize

    results = materialize(settings, full=full)
    return {"views": len(results), "rows": sum(r.rows for r in results)}
