"""Shared fixtures: a tiny generated fraud world, settings pointing at it, and a real Redis."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from mlplatform.data.generator import WorldSpec, generate
from mlplatform.features.pipelines import build_features
from mlplatform.settings import Settings

# Tests use their own Redis database so they never clobber anything else on the server.
TEST_REDIS_ADDR = os.environ.get("MLPLATFORM_TEST_REDIS_ADDR", "127.0.0.1:6379,db=9")
SMALL_WORLD = WorldSpec(customers=150, days=10, seed=11, start=datetime(2026, 10, 1, tzinfo=UTC), drift_days=5)


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for a test world; also exported so Feast's ${VAR} placeholders resolve to it."""
    settings = Settings(data_dir=data_dir, redis_addr=TEST_REDIS_ADDR, registry=data_dir / "registry.db", **overrides)
    settings.export_feast_env()
    return settings


def hold_back_last_period(data_dir: Path):
    """Make a world look as if its last generated period had not arrived yet; returns (period start, bring_back).

    ``bring_back()`` restores the held-back raw files and the manifest, as when new raw data arrives."""
    import json

    manifest_path = data_dir / "raw" / "manifest.json"
    manifest_full = manifest_path.read_text()
    manifest = json.loads(manifest_full)
    last = manifest["periods"][-1]
    part = last["name"] + ".parquet"
    held = {d: (data_dir / "raw" / d / part).read_bytes() for d in ("transactions", "labels")}
    for d in held:
        (data_dir / "raw" / d / part).unlink()
    manifest["periods"] = manifest["periods"][:-1]
    manifest_path.write_text(json.dumps(manifest))

    def bring_back() -> None:
        for d, payload in held.items():
            (data_dir / "raw" / d / part).write_bytes(payload)
        manifest_path.write_text(manifest_full)

    return last["start"], bring_back


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    """Raw data (base + drifted period) and feature tables for a small world, built once per session."""
    root = tmp_path_factory.mktemp("world")
    generate(SMALL_WORLD, root, drift=True)
    build_features(root)
    return root


@pytest.fixture()
def world(world_dir, tmp_path) -> Path:
    """A private copy of the small world that a test may change."""
    dst = tmp_path / "world"
    # raw data and feature tables only: not the state other fixtures left (registry, audit log, models, logs)
    shutil.copytree(world_dir, dst, ignore=shutil.ignore_patterns(
        "registry.db*", "audit", "models", "feature_logs", "reports", "pipelines", "monitoring", ".embedded-redis"))
    return dst


@pytest.fixture(scope="session")
def redis_addr() -> str:
    """A real Redis server. Skips locally if none answers; in CI (CI=true) that is a failure, never a skip."""
    settings = Settings(redis_addr=TEST_REDIS_ADDR)
    host, port = settings.redis_host_port
    db = int(dict(p.split("=") for p in TEST_REDIS_ADDR.split(",")[1:]).get("db", 0))
    try:
        redis.Redis(host=host, port=port, db=db, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        message = f"Redis does not answer at {TEST_REDIS_ADDR} ({exc}); start one: redis-server --daemonize yes"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return TEST_REDIS_ADDR


@pytest.fixture()
def redis_db(redis_addr) -> redis.Redis:
    """A client on the test database, emptied before the test."""
    settings = Settings(redis_addr=redis_addr)
    host, port = settings.redis_host_port
    db = int(dict(p.split("=") for p in redis_addr.split(",")[1:]).get("db", 0))
    client = redis.Redis(host=host, port=port, db=db)
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def applied_world(world_dir, tmp_path_factory):
    """The small world with its definitions applied to a registry of its own (offline store only)."""
    from mlplatform.features.definitions import apply_definitions

    settings = make_settings(world_dir)
    apply_definitions(settings)
    return settings


@pytest.fixture()
def store(applied_world):
    """A FeatureStore over the applied small world."""
    from mlplatform.stores import open_feature_store

    applied_world.export_feast_env()
    return open_feature_store(applied_world)
