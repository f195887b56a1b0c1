"""Safe deployment defaults: compose refuses to start without secrets, Redis is not published, and the image holds
every package the project installs."""

from __future__ import annotations

import re
import tomllib

import yaml

from mlplatform.settings import PROJECT_ROOT

INFRA = PROJECT_ROOT / "infra"


def _compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def test_compose_requires_an_api_key_and_a_redis_password():
    services = _compose()["services"]
    env = services["serving"]["environment"]
    # ${VAR:?message} makes `docker compose` refuse to start when VAR is unset or empty: no default key
    assert re.fullmatch(r"\$\{MLPLATFORM_SERVING_API_KEY:\?[^}]+\}", env["MLPLATFORM_SERVING_API_KEY"])
    assert "change-me" not in (INFRA / "compose.yaml").read_text()
    assert re.search(r"password=\$\{MLPLATFORM_REDIS_PASSWORD:\?[^}]+\}", env["MLPLATFORM_REDIS_ADDR"])
    command = services["redis"]["command"]
    assert "--requirepass" in command and command[command.index("--requirepass") + 1].startswith(
        "${MLPLATFORM_REDIS_PASSWORD:?")


def test_redis_is_not_published_on_the_host():
    redis = _compose()["services"]["redis"]
    assert "ports" not in redis


def test_the_image_copies_every_package_the_project_installs():
    include = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [p.rstrip("*") for p in include["include"]]
    copied = set(re.findall(r"^COPY (\S+) \./", (INFRA / "Dockerfile").read_text(), flags=re.M))
    missing = [p for p in packages if p not in copied]
    assert not missing, f"infra/Dockerfile does not COPY {missing}"
    assert "pipelines.yaml" in (INFRA / "Dockerfile").read_text()
