"""Fixtures for training tests: an empty, already-migrated MLflow database copied into each test's registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlplatform.models.registry import ModelRegistry
from mlplatform.settings import Settings
from tests.conftest import make_settings


@pytest.fixture(scope="session")
def empty_registry_db(tmp_path_factory) -> Path:
    """Creating MLflow's SQLite schema takes seconds: do it once per session, copy it per test."""
    root = tmp_path_factory.mktemp("mlflow-template")
    registry = ModelRegistry(make_settings(root))
    registry.client  # noqa: B018 - creates and migrates the database
    return registry.db_path


@pytest.fixture()
def fresh_models(empty_registry_db):
    """Call with a Settings: gives its models folder an empty registry database."""

    def _prepare(settings: Settings) -> Settings:
        settings.layout.models_path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_registry_db, settings.layout.models_path / "mlflow.db")
        return settings

    return _prepare


@pytest.fixture(scope="module")
def trained(applied_world, empty_registry_db, tmp_path_factory):
    """A private registry beside the small world, one training set built from it, and one model trained on it."""
    from training.datasets import build_training_set
    from training.pipeline import train_and_register

    root = tmp_path_factory.mktemp("trained")
    settings = make_settings(applied_world.data_path, models_dir=root / "models",
                             monitoring_reports_dir=root / "reports")  # its model pages stay its own
    settings.layout.models_path.mkdir(parents=True)
    shutil.copyfile(empty_registry_db, settings.layout.models_path / "mlflow.db")
    dataset = build_training_set(settings, out_dir=root / "dataset")
    outcome = train_and_register(settings, dataset=dataset.path)
    return settings, dataset, outcome
