"""The model registry: versions, boosters, input signatures, lineage and aliases (golden, challenger, ...).

Backed by MLflow's model registry on a local SQLite file with no server (see docs/training.md for why). Layout
under ``settings.layout.models_path`` (default ``<data_dir>/models``)::

    mlflow.db                                   MLflow tracking + model registry (SQLite)
    artifacts/<run_id>/artifacts/model/         the booster in MLflow's xgboost flavour (model.ubj, MLmodel)
    artifacts/<run_id>/artifacts/model_card.json  signature, metrics, params, lineage, booster checksum
    artifacts/<run_id>/artifacts/training_stats.json  per-feature statistics of the training data (skew checks)
    artifacts/<run_id>/artifacts/training_set.parquet the training set the model was built from
    registry.lock / promotion.lock              inter-process locks

A version becomes visible only once every file of it is written: artifacts first, then the registry entry.
Serving, monitoring and batch scoring use this module only; they never import training code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from mlplatform.errors import DataNotFoundError, InvalidInputError, RegistryError
from mlplatform.files import json_default
from mlplatform.models.locks import file_lock
from mlplatform.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import xgboost

GOLDEN = "golden"
PREVIOUS_GOLDEN = "previous_golden"
CHALLENGER = "challenger"
SHADOW = "shadow"
EXPERIMENT = "training"
BOOSTER_FILE = "model/model.ubj"
CARD_FILE = "model_card.json"
STATS_FILE = "training_stats.json"
TRAINING_SET_FILE = "training_set.parquet"
PIP_REQUIREMENTS = ["xgboost-cpu==3.2.0"]


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version and everything needed to use it and to trust it."""

    name: str
    version: int
    feature_names: list[str]
    feature_types: list[str]
    feature_service: str
    metrics: dict[str, float]
    params: dict
    lineage: dict
    created_at: datetime
    aliases: list[str]
    run_id: str = ""
    booster_sha256: str = ""
    artifact_dir: Path = field(default=Path(), repr=False)

    @property
    def booster_path(self) -> Path:
        """The booster file (UBJSON) of this version."""
        return self.artifact_dir / BOOSTER_FILE

    @property
    def is_golden(self) -> bool:
        return GOLDEN in self.aliases


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise RegistryError(f"artifact location {uri!r} is not a local path; this registry keeps models on disk")
    return Path(unquote(parsed.path))


class ModelRegistry:
    """Register, list, load and alias model versions in the local MLflow registry of ``settings``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.model_name
        self.root = settings.layout.models_path
        self.artifact_root = self.root / "artifacts"
        self.db_path = self.root / "mlflow.db"
        self.lock_path = self.root / "registry.lock"
        self.audit_path = self.root / "audit.jsonl"

    # --- MLflow plumbing --------------------------------------------------------------------------------------
    @cached_property
    def client(self):
        """An MlflowClient on this registry's SQLite file (no global MLflow state is touched)."""
        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from mlflow import MlflowClient

        self.root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{self.db_path}"
        with file_lock(self.lock_path):  # the first open creates and migrates the database
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return client

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        return self.client.create_experiment(EXPERIMENT, artifact_location=self.artifact_root.as_uri())

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self.client.create_registered_model(self.name, description="Card-fraud model (mlplatform).")

    def _aliases(self) -> dict[str, int]:
        """alias -> version for the registered model ({} if nothing is registered yet)."""
        from mlflow.exceptions import MlflowException

        if not self.db_path.exists():
            return {}
        try:
            aliases = self.client.get_registered_model(self.name).aliases
        except MlflowException:
            return {}
        return {alias: int(v) for alias, v in dict(aliases).items()}

    # --- writing ----------------------------------------------------------------------------------------------
    def register(
        self,
        booster: xgboost.Booster,
        *,
        feature_names: list[str],
        feature_types: list[str],
        feature_service: str,
        metrics: dict[str, float],
        params: dict,
        lineage: dict,
        training_stats_path: Path | None = None,
        training_set_path: Path | None = None,
        extra_files: dict[str, Path] | None = None,
    ) -> ModelVersion:
        """Store the booster and its card as a new version; the version exists only once all files are written."""
        if len(feature_names) != len(feature_types):
            raise InvalidInputError(
                f"{len(feature_names)} feature names but {len(feature_types)} feature types; they must pair up"
            )
        n_booster = booster.num_features()
        if n_booster != len(feature_names):
            raise InvalidInputError(
                f"the booster expects {n_booster} inputs but the signature lists {len(feature_names)} features"
            )
        for label, path in (("training stats", training_stats_path), ("training set", training_set_path)):
            if path is not None and not Path(path).is_file():
                raise InvalidInputError(f"{label} file {path} does not exist")
        import mlflow.xgboost

        with file_lock(self.lock_path):
            experiment_id = self._experiment_id()
            self._ensure_registered_model()
            run = self.client.create_run(experiment_id, run_name=f"{self.name}-{lineage.get('fingerprint', '')[:12]}")
            run_id = run.info.run_id
            try:
                with tempfile.TemporaryDirectory(prefix="mlplatform-model-") as tmp:
                    staging = Path(tmp)
                    mlflow.xgboost.save_model(booster, str(staging / "model"), pip_requirements=PIP_REQUIREMENTS,
                                              model_format="ubj")
                    sha = _sha256(staging / BOOSTER_FILE)
                    card = {
                        "name": self.name,
                        "feature_names": list(feature_names),
                        "feature_types": list(feature_types),
                        "feature_service": feature_service,
                        "metrics": {k: float(v) for k, v in metrics.items()},
                        "params": params,
                        "lineage": lineage,
                        "created_at": datetime.now(UTC).isoformat(),
                        "booster_file": BOOSTER_FILE,
                        "booster_sha256": sha,
                    }
                    (staging / CARD_FILE).write_text(json.dumps(card, indent=2, default=json_default))
                    if training_stats_path is not None:
                        shutil.copyfile(training_stats_path, staging / STATS_FILE)
                    if training_set_path is not None:
                        shutil.copyfile(training_set_path, staging / TRAINING_SET_FILE)
                    for name, path in (extra_files or {}).items():
                        (staging / name).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(path, staging / name)
                    self.client.log_artifacts(run_id, str(staging))
                for key, value in metrics.items():
                    self.client.log_metric(run_id, key, float(value))
                for key, value in _flat_params(params).items():
                    self.client.log_param(run_id, key, value)
                self.client.set_tag(run_id, "feature_service", feature_service)
                self.client.set_tag(run_id, "fingerprint", str(lineage.get("fingerprint", "")))
                self.client.set_terminated(run_id, "FINISHED")
            except BaseException:
                self.client.set_terminated(run_id, "FAILED")
                raise
            mv = self.client.create_model_version(
                self.name,
                source=f"{run.info.artifact_uri}/model",
                run_id=run_id,
                tags={"feature_service": feature_service, "booster_sha256": sha,
                      "fingerprint": str(lineage.get("fingerprint", ""))},
                description=f"features from {feature_service}",
            )
        return self.get(int(mv.version))

    def set_alias(self, alias: str, version: int) -> None:
        """Point ``alias`` at ``version`` (one version per alias; the previous holder loses it)."""
        self.get(version)  # DataNotFoundError for unknown versions
        with file_lock(self.lock_path):
            self.client.set_registered_model_alias(self.name, alias, str(version))

    def delete_alias(self, alias: str) -> None:
        """Remove ``alias`` if it is set."""
        if alias not in self._aliases():
            return
        with file_lock(self.lock_path):
            self.client.delete_registered_model_alias(self.name, alias)

    # --- reading ----------------------------------------------------------------------------------------------
    def _from_mlflow(self, mv, aliases: dict[str, int]) -> ModelVersion:
        version = int(mv.version)
        artifact_dir = _uri_to_path(mv.source).parent
        card_path = artifact_dir / CARD_FILE
        try:
            card = json.loads(card_path.read_text())
        except FileNotFoundError as exc:
            raise DataNotFoundError(f"model card {card_path} of {self.name} v{version} is missing") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"model card {card_path} of {self.name} v{version} is corrupt: {exc}") from exc
        return ModelVersion(
            name=self.name,
            version=version,
            feature_names=list(card["feature_names"]),
            feature_types=list(card["feature_types"]),
            feature_service=card["feature_service"],
            metrics={k: float(v) for k, v in card["metrics"].items()},
            params=card["params"],
            lineage=card["lineage"],
            created_at=datetime.fromisoformat(card["created_at"]),
            aliases=sorted(a for a, v in aliases.items() if v == version),
            run_id=mv.run_id or "",
            booster_sha256=card["booster_sha256"],
            artifact_dir=artifact_dir,
        )

    def get(self, version: int) -> ModelVersion:
        """The version ``version``; DataNotFoundError if the registry has no such version."""
        from mlflow.exceptions import MlflowException

        if not self.db_path.exists():
            raise DataNotFoundError(f"no model registry at {self.root}: train a model first (`mlplatform train`)")
        try:
            mv = self.client.get_model_version(self.name, str(int(version)))
        except MlflowException as exc:
            known = ", ".join(str(v.version) for v in self.list_versions()) or "none"
            raise DataNotFoundError(f"model {self.name} has no version {version} (registered: {known})") from exc
        return self._from_mlflow(mv, self._aliases())

    def list_versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        if not self.db_path.exists():
            return []
        found = self.client.search_model_versions(f"name = '{self.name}'")
        aliases = self._aliases()
        return sorted((self._from_mlflow(mv, aliases) for mv in found), key=lambda m: m.version)

    def with_alias(self, alias: str) -> list[ModelVersion]:
        """Versions holding ``alias`` (MLflow aliases are unique, so zero or one)."""
        version = self._aliases().get(alias)
        return [] if version is None else [self.get(version)]

    def golden(self) -> ModelVersion | None:
        """The version serving production traffic, or None before the first promotion."""
        found = self.with_alias(GOLDEN)
        return found[0] if found else None

    def previous_golden(self) -> ModelVersion | None:
        """The golden before the current one (what `models rollback` restores), or None."""
        found = self.with_alias(PREVIOUS_GOLDEN)
        return found[0] if found else None

    def load_booster(self, version: int) -> xgboost.Booster:
        """The version's XGBoost booster; InvalidInputError naming the file if it is missing, corrupt or truncated."""
        mv = self.get(version)
        path = mv.booster_path
        if not path.is_file():
            raise InvalidInputError(f"model file {path} of {self.name} v{version} is missing")
        actual = _sha256(path)
        if actual != mv.booster_sha256:
            raise InvalidInputError(
                f"model file {path} of {self.name} v{version} is corrupt or truncated: its SHA-256 {actual[:12]}… "
                f"differs from the {mv.booster_sha256[:12]}… recorded at registration; re-train or restore the file"
            )
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except xgb.core.XGBoostError as exc:
            raise InvalidInputError(f"model file {path} of {self.name} v{version} cannot be loaded: {exc}") from exc
        if booster.num_features() != len(mv.feature_names):
            raise InvalidInputError(
                f"model file {path} expects {booster.num_features()} inputs, its signature lists "
                f"{len(mv.feature_names)}"
            )
        return booster

    def training_set_path(self, version: int) -> Path:
        """The training set saved with ``version`` (Parquet; a ``split`` column says train/validation/test)."""
        path = self.get(version).artifact_dir / TRAINING_SET_FILE
        if not path.is_file():
            raise DataNotFoundError(f"{self.name} v{version} was registered without its training set ({path})")
        return path

    def training_stats(self, version: int) -> dict:
        """Per-feature statistics of the training data of ``version`` (for skew checks)."""
        path = self.get(version).artifact_dir / STATS_FILE
        if not path.is_file():
            raise DataNotFoundError(f"{self.name} v{version} was registered without training statistics ({path})")
        return json.loads(path.read_text())

    def artifact_path(self, version: int, name: str) -> Path:
        """A file saved beside the booster of ``version`` (e.g. ``evaluation/summary.json``)."""
        return self.get(version).artifact_dir / name


def _flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    """Parameters flattened to MLflow's string params (long values cut to MLflow's limit)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_params(value, prefix=f"{name}."))
        else:
            out[name] = json.dumps(value, default=json_default)[:6000]
    return out
