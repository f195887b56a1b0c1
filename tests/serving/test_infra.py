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
