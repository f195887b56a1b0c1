"""MLPLATFORM_PROFILE: one switch choosing the stores, read back through Feast's own configuration loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from feast.repo_config import load_repo_config

from mlplatform.settings import PROJECT_ROOT, Settings

PG = "postgresql+psycopg://mlp:s3cret-pw@db.internal:5432/mlplatform"


def _feast_config(settings: Settings, monkeypatch):
    """Feast's RepoConfig for ``settings``, loaded by Feast from the yaml file the settings choose (the environment
    says ``settings`` only while Feast reads it: later ``Settings()`` would read it back)."""
    with monkeypatch.context() as env:
        for name, value in settings.feast_env().items():
            env.setenv(name, value)
        return load_repo_config(settings.feature_repo, settings.feature_store_yaml)


def _settings(**kwargs) -> Settings:
    return Settings(_env_file=None, data_dir="/tmp/mlplatform-profile-test", **kwargs)


def test_the_local_profile_is_duckdb_one_redis_and_the_registry_file(monkeypatch):
    config = _feast_config(_settings(), monkeypatch)
    assert config.offline_store.type == "mlplatform.features.offline_store.AsofDuckDBOfflineStore"
    assert config.batch_engine_config == "local"
    assert config.online_store.redis_type == "redis"
    assert config.registry.registry_type == "file"


def test_the_cluster_profile_is_spark_redis_cluster_and_sql_registries(monkeypatch):
    settings = _settings(profile="cluster", feast_registry_url=PG, models_backend_url=PG,
                         redis_addr="10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379")
    config = _feast_config(settings, monkeypatch)
    assert config.offline_store.type == "spark"
    assert config.batch_engine.type == "spark.engine"
    assert config.online_store.redis_type == "redis_cluster"
    assert config.online_store.connection_string.startswith("10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379,")
    assert config.registry.registry_type == "sql" and config.registry.path == PG
    assert settings.uses_redis_cluster and settings.offline_engine == "spark"


def test_one_part_of_a_profile_can_be_overridden(monkeypatch):
    settings = _settings(profile="cluster", feast_registry_url=PG, models_backend_url=PG, offline_store="duckdb",
                         redis_cluster=False)
    config = _feast_config(settings, monkeypatch)
    assert config.offline_store.type.endswith("AsofDuckDBOfflineStore")
    assert config.online_store.redis_type == "redis"
    assert config.registry.registry_type == "sql"
    local_with_spark = _feast_config(_settings(offline_store="spark", redis_cluster=True), monkeypatch)
    assert local_with_spark.offline_store.type == "spark" and local_with_spark.registry.registry_type == "file"
    assert local_with_spark.online_store.redis_type == "redis_cluster"


def _mlplatform(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLPLATFORM_")}
    return subprocess.run([sys.executable, "-m", "cli", *args], env={**clean, **env}, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("as_json", [False, True])
def test_the_cluster_profile_without_its_registries_is_a_clear_error(tmp_path, as_json):
    env = {"MLPLATFORM_PROFILE": "cluster", "MLPLATFORM_DATA_DIR": str(tmp_path),
           "MLPLATFORM_MODELS_BACKEND_URL": PG}
    out = _mlplatform(["models", "list", *(["--json"] if as_json else [])], env)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "MLPLATFORM_PROFILE=cluster needs MLPLATFORM_FEAST_REGISTRY_URL" in out.stderr
    assert "MLPLATFORM_MODELS_BACKEND_URL" not in out.stderr.split("needs", 1)[1]  # that one is set
    assert "s3cret-pw" not in out.stderr + out.stdout
    if as_json:
        error = json.loads(out.stdout)["error"]
        assert error["exit_code"] == 2 and "MLPLATFORM_FEAST_REGISTRY_URL" in error["message"]


def test_any_invalid_setting_names_the_variable_not_its_value(tmp_path):
    env = {"MLPLATFORM_DATA_DIR": str(tmp_path), "MLPLATFORM_PROFILE": "kubernetes",
           "MLPLATFORM_REDIS_TIMEOUT_SECONDS": "-1", "MLPLATFORM_FEAST_REGISTRY_URL": PG}
    out = _mlplatform(["materialize"], env)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "MLPLATFORM_PROFILE: Input should be 'local' or 'cluster'" in out.stderr
    assert "MLPLATFORM_REDIS_TIMEOUT_SECONDS: Input should be greater than 0" in out.stderr
    assert "s3cret-pw" not in out.stderr + out.stdout


def test_a_cluster_address_lists_its_seed_nodes_and_masks_its_password():
    from mlplatform.settings import RedisAddress

    addr = RedisAddress.parse("10.0.0.1:7000, 10.0.0.2:7001,10.0.0.3,password=p@ss,ssl=true")
    assert addr.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 6379))
    assert (addr.host, addr.port, addr.password) == ("10.0.0.1", 7000, "p@ss")
    assert str(addr) == "10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:6379,password=***" and "p@ss" not in repr(addr)
    single = RedisAddress.parse("redis.internal:6380,db=3")
    assert single.nodes == (("redis.internal", 6380),) and single.db == 3
    with pytest.raises(ValueError, match="'h:port' has no port number"):
        RedisAddress.parse("h:port")


def test_a_cluster_client_refuses_a_database_number():
    from mlplatform.stores import async_redis_client, redis_client

    settings = _settings(redis_addr="127.0.0.1:7000,db=2", redis_cluster=True)
    with pytest.raises(ValueError, match="a Redis Cluster has only database 0"):
        redis_client(settings)
    with pytest.raises(ValueError, match="a Redis Cluster has only database 0"):
        async_redis_client(settings, timeout=1.0)
