"""Unauthenticated answers (/readyz, /v1/models, a prediction's fallback reason) say what failed without a file path:
the exception's type name and a short path-free reason; the whole text (secrets redacted) goes to the log.

Planted failures whose own text names a file under the service's data dir: a registered model whose file was damaged
after registration (the golden cannot load), and a promotion journal that is not JSON (the registry cannot be read).
Oracles: the paths themselves (the test made them), and the log records the service wrote.
"""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.model_pool import REASON_CHARS, public_reason
from tests.serving.conftest import set_aliases


def _no_path(text: str, *paths) -> None:
    for path in paths:
        assert str(path) not in text, f"{path} leaked into an answer: {text}"


def test_readyz_and_models_name_the_failure_without_its_path(serving_settings, trained_models, tmp_path, caplog):
    from mlplatform.models.registry import ModelRegistry

    shared = ModelRegistry(serving_settings())
    settings = serving_settings(models_dir=tmp_path / "serving-data" / "models")  # a private registry, in the data dir
    registry = ModelRegistry(settings)
    broken = registry.register(shared.load_booster(trained_models.versions[0]),
                               feature_names=trained_models.feature_names, feature_types=trained_models.feature_types,
                               feature_service=settings.feature_service, metrics={}, params={},
                               lineage={"fingerprint": "damaged-after-registration"})
    broken.booster_path.write_bytes(b"not a booster")
    assert str(settings.data_path) in str(broken.booster_path)
    set_aliases(settings, golden=broken.version)
    leaks = (settings.data_path, tmp_path, broken.booster_path.parent)

    caplog.set_level(logging.WARNING)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        model = ready.json()["checks"]["model"]
        assert model.startswith(f"no warm model: {settings.model_name} v{broken.version}: InvalidInputError: "), model
        assert "corrupt or truncated" in model  # the reason survives, only the path is gone
        _no_path(ready.text, *leaks)

        models = client.get("/v1/models")
        assert models.status_code == 200, models.text
        error = models.json()["errors"][str(broken.version)]
        assert error.startswith("InvalidInputError: model file ") and "corrupt or truncated" in error, error
        assert len(error) <= len("InvalidInputError: ") + REASON_CHARS
        assert models.json()["golden_error"].endswith(error)
        _no_path(models.text, *leaks)
        # the log has the whole text, path included
        assert any(str(broken.booster_path) in r.getMessage() and r.levelno >= logging.ERROR
                   for r in caplog.records), [r.getMessage() for r in caplog.records]

        # the registry cannot be read: the promotion journal is not JSON
        registry.intent_path.write_text("{not json")
        caplog.clear()
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        status = ready.json()["checks"]["registry"]
        assert status.startswith("unreadable: RegistryError: the promotion journal ") and "corrupt" in status, status
        _no_path(ready.text, *leaks, registry.intent_path)
        assert any(str(registry.intent_path) in r.getMessage() for r in caplog.records), \
            [r.getMessage() for r in caplog.records]
        registry.intent_path.unlink()


@pytest.mark.parametrize(("exc", "expected"), [
    (FileNotFoundError(2, "No such file or directory", "/srv/data/models/1/model.ubj"),
     "FileNotFoundError: No such file or directory"),
    (PermissionError(13, "Permission denied"), "PermissionError: Permission denied"),
    (OSError("bare"), "OSError"),
    (ValueError("model file /srv/data/models/1/model.ubj of fraud v1 is missing"),
     "ValueError: model file <path> of fraud v1 is missing"),
    (ValueError(r"cannot open 'C:\data\models\x.ubj' (sqlite:////srv/data/mlflow.db)"),
     "ValueError: cannot open '<path>' (<path>)"),
    (RuntimeError("[12:00:00] /workspace/src/learner.cc:745: Check failed\nStack trace:\n  [bt] (0) /usr/lib/x.so"),
     "RuntimeError: [12:00:00] <path>: Check failed"),
    (RuntimeError("boom: the booster is broken"), "RuntimeError: boom: the booster is broken"),
    (KeyError(), "KeyError"),
    (ValueError("password=hunter22 rejected"), "ValueError: password=*** rejected"),
])
def test_public_reason_keeps_the_type_and_reason_and_drops_paths(exc, expected):
    assert public_reason(exc) == expected


def test_public_reason_is_short():
    reason = public_reason(ValueError("x" * 1000))
    assert reason == "ValueError: " + "x" * (REASON_CHARS - 1) + "…"
