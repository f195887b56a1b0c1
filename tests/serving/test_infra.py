"""The container files agree with the settings and the service they describe (Docker cannot run here)."""

from __future__ import annotations

import re

import yaml

from mlplatform.settings import PROJECT_ROOT, Settings


def test_compose_and_dockerfile_match_settings():
    compose = yaml.safe_load((PROJECT_ROOT / "infra" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "serving"} <= set(services)
    serving = services["serving"]
    assert serving["build"]["dockerfile"] == "infra/Dockerfile" and serving["image"].startswith("mlplatform-serving")
    assert "redis" in serving["depends_on"]
    env = serving["environment"]
    fields = set(Settings.model_fields)
    for name in env:
        assert name.startswith("MLPLATFORM_") and name.removeprefix("MLPLATFORM_").lower() in fields, name
    port = int(env["MLPLATFORM_SERVING_PORT"])
    assert f"{port}:{port}" in serving["ports"]
    host = env["MLPLATFORM_REDIS_ADDR"].split(":")[0]
    assert host in services and Settings(redis_addr=env["MLPLATFORM_REDIS_ADDR"]).redis_host_port == (host, 6379)
    dockerfile = (PROJECT_ROOT / "infra" / "Dockerfile").read_text()
    assert f"EXPOSE {port}" in dockerfile and '"mlplatform", "serve"' in dockerfile
    for name in re.findall(r"(MLPLATFORM_[A-Z_]+)=", dockerfile):
        assert name.removeprefix("MLPLATFORM_").lower() in fields, name
    docs = (PROJECT_ROOT / "docs" / "serving.md").read_text()
    assert "docker compose -f infra/compose.yaml up" in docs and "MLPLATFORM_SERVING_API_KEY" in docs


def test_the_mlflow_ui_runs_the_registrys_own_mlflow_version_read_only():
    """MLflow's UI (compose profile ``mlflow``) must be the version the registry's database was written with (else
    its server would migrate the schema under mlplatform), read the registry's own files, and write nothing."""
    compose = yaml.safe_load((PROJECT_ROOT / "infra" / "compose.yaml").read_text())
    ui = compose["services"]["mlflow"]
    assert ui["profiles"] == ["mlflow"] and ui["ports"] == ["127.0.0.1:5000:5000"]
    assert all(v.startswith("../data:") and v.endswith(":ro") for v in ui["volumes"])
    dockerfile = (PROJECT_ROOT / "infra" / ui["build"]["context"].removeprefix("./") / "Dockerfile").read_text()
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    (skinny,) = re.findall(r"^mlflow-skinny==(\S+)$", lock, flags=re.M)
    assert f"ARG MLFLOW_VERSION={skinny}" in dockerfile and '"mlflow==${MLFLOW_VERSION}"' in dockerfile
    assert "/models/mlflow.db" in dockerfile and "/models/artifacts" in dockerfile  # the registry's layout
    from mlplatform.models.registry import ModelRegistry

    registry = ModelRegistry(Settings(_env_file=None, data_dir=PROJECT_ROOT / "data"))
    assert registry.db_path.name == "mlflow.db" and registry.artifact_root.name == "artifacts"
    assert registry.db_path.parent.name == registry.artifact_root.parent.name == "models"
