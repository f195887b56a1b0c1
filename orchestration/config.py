"""Read ``pipelines.yaml``: each pipeline is an ordered list of steps, each step a built-in or ``module:function``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlplatform.errors import DataNotFoundError, InvalidInputError


@dataclass(frozen=True)
class StepSpec:
    """One step: what it calls, with which arguments; ``optional`` steps are skipped when their part is absent."""

    name: str
    call: str
    args: dict[str, Any] = field(default_factory=dict)
    optional: bool = False


@dataclass(frozen=True)
class PipelineSpec:
    """A named pipeline and its retry policy for transient failures."""

    name: str
    description: str
    steps: list[StepSpec]
    retries: int = 3
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 60.0

    @property
    def fingerprint(self) -> str:
        """Hash of the step list: a failed run resumes only into the same steps."""
        body = [(s.name, s.call, s.args) for s in self.steps]
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_pipelines(path: Path) -> dict[str, PipelineSpec]:
    """Every pipeline defined in ``path``; InvalidInputError naming the problem if the file is malformed."""
    if not path.is_file():
        raise DataNotFoundError(f"no pipelines file at {path} (set MLPLATFORM_PIPELINES_CONFIG)")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("pipelines"), dict):
        raise InvalidInputError(f"{path} must have a top-level `pipelines:` mapping of name -> pipeline")
    defaults = doc.get("defaults") or {}
    out: dict[str, PipelineSpec] = {}
    for name, body in doc["pipelines"].items():
        if not isinstance(body, dict) or not isinstance(body.get("steps"), list) or not body["steps"]:
            raise InvalidInputError(f"{path}: pipeline {name!r} needs a non-empty `steps:` list")
        steps = []
        for i, raw in enumerate(body["steps"]):
            if not isinstance(raw, dict) or "call" not in raw:
                raise InvalidInputError(
                    f"{path}: step {i + 1} of {name!r} needs `call:` (a built-in or module:function)"
                )
            steps.append(
                StepSpec(
                    name=str(raw.get("name", raw["call"])),
                    call=str(raw["call"]),
                    args=dict(raw.get("args") or {}),
                    optional=bool(raw.get("optional", False)),
                )
            )
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"{path}: step names of {name!r} must be unique: {names}")
        policy = {
            **defaults,
            **{k: body[k] for k in ("retries", "backoff_seconds", "max_backoff_seconds") if k in body},
        }
        try:
            out[name] = PipelineSpec(
                name=name,
                description=str(body.get("description", "")),
                steps=steps,
                retries=int(policy.get("retries", 3)),
                backoff_seconds=float(policy.get("backoff_seconds", 2.0)),
                max_backoff_seconds=float(policy.get("max_backoff_seconds", 60.0)),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{path}: retry policy of {name!r}: {exc}") from exc
    return out


def get_pipeline(path: Path, name: str) -> PipelineSpec:
    """The pipeline ``name`` from ``path``."""
    pipelines = load_pipelines(path)
    if name not in pipelines:
        raise InvalidInputError(f"no pipeline {name!r} in {path}; defined: {', '.join(sorted(pipelines)) or 'none'}")
    return pipelines[name]
