"""The model registry: versions, boosters, input signatures, lineage and aliases (golden, challenger, ...).

Backed by MLflow's model registry on a local SQLite file with no server (see docs/training.md for why), or, with
``models_backend_url`` set, on that database (PostgreSQL; docs/cluster.md): artifacts, locks and the promotion journal
stay on the filesystem either way. Layout under ``settings.layout.models_path`` (default ``<data_dir>/models``)::

    mlflow.db                                   MLflow tracking + model registry (SQLite; not with a backend URL)
    artifacts/<run_id>/artifacts/model/         the booster in MLflow's xgboost flavour (model.ubj, MLmodel)
    artifacts/<run_id>/artifacts/model_card.json  signature, metrics, params, lineage, booster checksum, decisions
    artifacts/<run_id>/artifacts/evaluation/    test-split summary.json/.md, plots, predictions.parquet (training)
    artifacts/<run_id>/artifacts/training_stats.json  per-feature statistics of the training data (skew checks)
    artifacts/<run_id>/artifacts/training_set.parquet the training set the model was built from
    registry.lock / promotion.lock              inter-process locks
    promotion.intent.json                       the last alias change of a promotion or rollback, written ahead
                                                (pending until applied and audited; see mlplatform.models.promotion)

A version becomes visible only once every file of it is written: artifacts first, then the registry entry.
Serving, monitoring and batch scoring use this module only; they never import training code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from mlplatform.errors import DataNotFoundError, InvalidInputError, RegistryError
from mlplatform.files import TMP_SUFFIX, json_default, write_json_atomic
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
INTENT_FILE = "promotion.intent.json"
PENDING, DONE = "pending", "done"


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
    # Decision thresholds chosen on the evaluation set (mlplatform.models.decisions); None for cards without them.
    decisions: dict | None = None

    @property
    def booster_path(self) -> Path:
        """The booster file (UBJSON) of this version."""
        return self.artifact_dir / BOOSTER_FILE

    @property
    def is_golden(self) -> bool:
        return GOLDEN in self.aliases


@dataclass(frozen=True)
class AliasChange:
    """One promotion's or rollback's alias change and the audit record that completes it, journaled before it applies.

    ``set`` maps alias -> version; ``unset`` lists aliases to delete; ``unset_if`` deletes an alias only while it
    still points at the given version (the challenger just promoted, which training may have moved meanwhile).
    ``record`` holds the audit record's action, target, details, reason and actor.
    """

    id: str
    action: str
    set: dict[str, int]
    unset: list[str]
    unset_if: dict[str, int]
    record: dict
    written_at: str
    state: str = PENDING

    @classmethod
    def new(cls, action: str, record: dict, set: dict[str, int], unset: list[str] | None = None,  # noqa: A002
            unset_if: dict[str, int] | None = None) -> AliasChange:
        """A fresh pending change with its own id."""
        return cls(id=uuid.uuid4().hex, action=action, set={a: int(v) for a, v in set.items()},
                   unset=list(unset or []), unset_if={a: int(v) for a, v in (unset_if or {}).items()},
                   record=record, written_at=datetime.now(UTC).isoformat())

    @property
    def pending(self) -> bool:
        return self.state == PENDING

    def applied_to(self, aliases: dict[str, int]) -> dict[str, int]:
        """``aliases`` (alias -> version) as they are once this change is applied (pure)."""
        out = dict(aliases)
        out.update(self.set)
        for alias in self.unset:
            out.pop(alias, None)
        for alias, version in self.unset_if.items():
            if out.get(alias) == version:
                out.pop(alias)
        return out


def _change_from_json(data: dict) -> AliasChange:
    return AliasChange(id=str(data["id"]), action=str(data["action"]),
                       set={str(a): int(v) for a, v in data["set"].items()}, unset=[str(a) for a in data["unset"]],
                       unset_if={str(a): int(v) for a, v in data["unset_if"].items()}, record=dict(data["record"]),
                       written_at=str(data["written_at"]), state=str(data["state"]))


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
        self.backend_url = settings.models_backend_url  # None: the SQLite file db_path
        self.lock_path = self.root / "registry.lock"
        self.intent_path = self.root / INTENT_FILE

    # --- MLflow plumbing --------------------------------------------------------------------------------------
    @property
    def backend_uri(self) -> str:
        """MLflow's backend store: ``models_backend_url`` or the SQLite file ``db_path``."""
        return self.backend_url or f"sqlite:///{self.db_path}"

    def _has_db(self) -> bool:
        """False only while the SQLite file does not exist yet (a database at a URL is asked instead)."""
        return self.backend_url is not None or self.db_path.exists()

    @cached_property
    def client(self):
        """An MlflowClient on this registry's backend store (no global MLflow state is touched)."""
        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from mlflow import MlflowClient

        self.root.mkdir(parents=True, exist_ok=True)
        uri = self.backend_uri
        with file_lock(self.lock_path):  # the first open creates and migrates the database
            try:
                client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            except Exception as exc:
                if self.backend_url is None:
                    raise
                raise RegistryError(self._unreachable(exc)) from None
        return client

    def _unreachable(self, exc: BaseException) -> str:
        from mlplatform.redact import redact, redact_url

        return (f"the model registry's database ({redact_url(self.backend_url or '')}) cannot be used "
                f"({type(exc).__name__}: {redact(str(exc), [self.backend_url or ''])}); check that it answers and "
                "that MLPLATFORM_MODELS_BACKEND_URL points at it")

    @cached_property
    def _engine(self):
        """A SQLAlchemy engine on ``backend_url`` for the read-only fast path (PostgreSQL: no MLflow import)."""
        from sqlalchemy import create_engine

        options = {"connect_args": {"connect_timeout": 5}} if self.backend_url.startswith("postgres") else {}
        return create_engine(self.backend_url, pool_pre_ping=True, **options)

    def _read_db(self, sql: str, params: dict) -> list[tuple] | None:
        """Rows of a read-only query on MLflow's database, without loading MLflow (importing it and opening a
        client takes seconds, more than a listing needs): the SQLite file directly, a database at a URL through
        SQLAlchemy. None if the database does not have the schema expected (yet); RegistryError if a database at a
        URL does not answer."""
        if self.backend_url is not None:
            return self._read_url(sql, params)
        try:
            con = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        except sqlite3.Error:
            return None
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.Error:
            return None
        finally:
            con.close()

    def _read_url(self, sql: str, params: dict) -> list[tuple] | None:
        from sqlalchemy import exc as sa_exc
        from sqlalchemy import text

        try:
            with self._engine.connect() as conn:
                return [tuple(row) for row in conn.execute(text(sql), params)]
        except sa_exc.ProgrammingError:  # no MLflow tables yet: the first write creates them
            return None
        except sa_exc.SQLAlchemyError as exc:
            raise RegistryError(self._unreachable(exc)) from None

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
        """alias -> version as committed: MLflow's aliases with a journaled, not yet applied change laid over them.

        The journal is read before and after the database, so a change applied meanwhile is never seen half-way."""
        for _ in range(5):
            first = self.read_intent()
            aliases = self.db_aliases()
            last = self.read_intent()
            first_id, last_id = (first.id if first else None), (last.id if last else None)
            if last is not None and last.pending:
                if first is not None and first.pending and first_id != last_id:
                    aliases = first.applied_to(aliases)  # it finished while we read, and the next one began
                return last.applied_to(aliases)
            if first_id == last_id:
                return first.applied_to(aliases) if first is not None and first.pending else aliases
            # a change finished while we read (the database may have been half-way): read again
        return aliases

    def db_aliases(self) -> dict[str, int]:
        """alias -> version exactly as MLflow's database holds them ({} if nothing is registered yet)."""
        if not self._has_db():
            return {}
        rows = self._read_db("SELECT alias, version FROM registered_model_aliases WHERE name = :name",
                             {"name": self.name})
        if rows is not None:
            return {str(alias): int(v) for alias, v in rows}
        from mlflow.exceptions import MlflowException

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
        decisions: dict | None = None,
    ) -> ModelVersion:
        """Store the booster and its card as a new version; the version exists only once all files are written.

        ``decisions``: the decision thresholds (``mlplatform.models.decisions.decision_thresholds``), kept in the
        card as ``decisions`` (absent from cards written without them)."""
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
                    if decisions is not None:
                        card["decisions"] = decisions
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
        if alias not in self.db_aliases():
            return
        with file_lock(self.lock_path):
            self.client.delete_registered_model_alias(self.name, alias)

    # --- alias changes of the promotion gate: written ahead, then applied (see mlplatform.models.promotion) ------
    def read_intent(self) -> AliasChange | None:
        """The last journaled alias change (pending or done), or None; RegistryError if the journal is unreadable."""
        try:
            text = self.intent_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"cannot read the promotion journal {self.intent_path}: {exc}") from exc
        try:
            return _change_from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RegistryError(
                f"the promotion journal {self.intent_path} is corrupt ({exc}); compare `mlplatform models list` "
                "with `mlplatform audit --action '*'`, fix the aliases, then delete the file"
            ) from exc

    def pending_change(self) -> AliasChange | None:
        """A journaled alias change not yet applied and audited (its process died), or None."""
        change = self.read_intent()
        return change if change is not None and change.pending else None

    def write_intent(self, change: AliasChange) -> None:
        """Journal ``change`` durably (atomic replace, file and folder fsynced): from here on it will complete."""
        try:
            write_json_atomic(self.intent_path, asdict(change))
            fd = os.open(self.intent_path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise RegistryError(f"cannot write the promotion journal {self.intent_path}: {exc}") from exc

    def remove_stale_intent_files(self) -> None:
        """Delete temporary journal files a process killed mid-write left (call only under the promotion lock)."""
        for tmp in self.root.glob(f".{INTENT_FILE}.*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)

    def apply_change(self, change: AliasChange, after_each: Callable[[str], None] | None = None) -> None:
        """Move MLflow's aliases to ``change``'s target; idempotent (an alias already right is not written).

        ``after_each(alias)`` runs after each alias of ``change.set`` and each deletion (a crash test's kill point)."""
        current = self.db_aliases()
        target = change.applied_to(current)
        for alias, version in change.set.items():
            if current.get(alias) != version:
                self.set_alias(alias, version)
            if after_each is not None:
                after_each(alias)
        for alias in sorted(set(current) - set(target)):
            with file_lock(self.lock_path):
                self.client.delete_registered_model_alias(self.name, alias)
            if after_each is not None:
                after_each(alias)

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
            decisions=card.get("decisions"),
        )

    def get(self, version: int) -> ModelVersion:
        """The version ``version``; DataNotFoundError if the registry has no such version."""
        from mlflow.exceptions import MlflowException

        if not self._has_db():
            raise DataNotFoundError(f"no model registry at {self.root}: train a model first (`mlplatform train`)")
        try:
            mv = self.client.get_model_version(self.name, str(int(version)))
        except MlflowException as exc:
            known = ", ".join(str(v.version) for v in self.list_versions()) or "none"
            raise DataNotFoundError(f"model {self.name} has no version {version} (registered: {known})") from exc
        return self._from_mlflow(mv, self._aliases())

    def list_versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        if not self._has_db():
            return []
        rows = self._read_db(
            "SELECT version, source, run_id FROM model_versions WHERE name = :name AND current_stage != :deleted",
            {"name": self.name, "deleted": "Deleted_Internal"},  # MLflow's own filter for deleted versions
        )
        if rows is None:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        else:
            found = [SimpleNamespace(version=str(v), source=source, run_id=run_id) for v, source, run_id in rows]
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
