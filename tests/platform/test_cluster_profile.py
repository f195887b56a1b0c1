"""The whole cluster profile at once, through the user's commands: MLPLATFORM_PROFILE=cluster selects Feast's Spark
offline store and Spark engine (local[2]), a 3-master Redis Cluster, Feast's SQL registry and MLflow on PostgreSQL,
with the same feature_repo/ definitions. Checked against the local profile's oracles: the service's scores equal the
registered booster's on the features the DuckDB offline store (and, after the data's end, the brute-force oracle)
gives at t − 1 µs.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_settings
from tests.features.test_spark_offline import _require_spark

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _spread_over_masters(redis_cluster) -> list[int]:
    """How many keys each master of the cluster holds."""
    import redis

    return [redis.Redis(port=redis_cluster.base_port + i).dbsize() for i in range(3)]


def _feast_source_kinds(pg_url: str) -> set[str]:
    """The kinds of the data sources Feast's SQL registry holds (read with plain SQL and Feast's protos)."""
    import sqlalchemy as sa
    from feast.protos.feast.core import DataSource_pb2

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT data_source_proto FROM data_sources")).scalars().all()
    finally:
        engine.dispose()
    return {DataSource_pb2.DataSource.SourceType.Name(DataSource_pb2.DataSource.FromString(r).type) for r in rows}


def test_the_users_journey_on_the_cluster_profile(world, applied_world, pg_url, redis_cluster, cli, tmp_path):
    _require_spark()
    from fastapi.testclient import TestClient

    from mlplatform.models.registry import ModelRegistry
    from mlplatform.spark_session import stop_spark
    from mlplatform.stores import open_feature_store
    from serving.app import create_app
    from tests.serving.conftest import booster_scores, make_txns, offline_features, txn_body

    saved = dict(os.environ)  # make_settings exports the cluster profile's Feast environment: not past this test
    try:
        redis_cluster.flush()
        settings = make_settings(world, profile="cluster", feast_registry_url=pg_url, models_backend_url=pg_url,
                                 redis_addr=redis_cluster.addr, models_dir=tmp_path / "models",
                                 monitoring_reports_dir=tmp_path / "reports")
        assert settings.offline_engine == "spark" and settings.uses_redis_cluster
        for args in (["apply"], ["materialize"], ["dataset", "build"], ["train"], ["models", "promote", "1"]):
            result = cli(settings, args)
            assert result.exit_code == 0, (args, result.output)

        # where things went: Feast's registry in PostgreSQL with Spark sources, no registry file; rows on every
        # master of the cluster; the model in MLflow's tables, no SQLite file
        assert "BATCH_SPARK" in _feast_source_kinds(pg_url)
        assert not (world / "registry.db").exists()
        assert min(_spread_over_masters(redis_cluster)) > 50
        assert not (tmp_path / "models" / "mlflow.db").exists()
        (golden,) = [m for m in ModelRegistry(settings).list_versions() if "golden" in m.aliases]

        # the service on the cluster profile scores as the local profile's offline store says it should
        features = settings.layout.features_dir
        latest = max(pd.read_parquet(f, columns=["event_timestamp"])["event_timestamp"].max()
                     for f in features.glob("*.parquet"))
        when = (pd.Timestamp(latest).ceil("h") + pd.Timedelta(hours=1)).tz_convert("UTC")
        txns = make_txns(settings, 30, seed=5, when=when, unknown=2)
        with TestClient(create_app(settings)) as client:
            answers = [client.post("/v1/predict", json=txn_body(r)) for r in txns.itertuples()]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:2]
        answers = [a.json() for a in answers]
        assert {a["model"]["version"] for a in answers} == {golden.version}

        booster = ModelRegistry(settings).load_booster(golden.version)
        names = list(booster.feature_names)
        local_store = open_feature_store(applied_world)  # the local profile: DuckDB over the same tables
        expected = offline_features(local_store, applied_world.feature_service, txns)
        np.testing.assert_allclose([a["score"] for a in answers], booster_scores(booster, expected, names),
                                   rtol=1e-6, atol=1e-7)
    finally:
        stop_spark()
        os.environ.clear()
        os.environ.update(saved)


def test_the_cluster_profile_names_what_does_not_answer(world, cli, tmp_path):
    """A Redis Cluster that is not there: the commands that read it exit 5 naming its seed nodes, never with a
    traceback or the password."""
    settings = make_settings(world, profile="cluster", redis_addr="127.0.0.1:1,127.0.0.1:2,password=hunter2-pw",
                             feast_registry_url="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                             models_backend_url="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                             offline_store="duckdb", redis_timeout_seconds=1)
    saved = dict(os.environ)
    try:
        results = [cli(settings, args) for args in (["stream", "status"], ["features", "online", "--customer-id", "1"])]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    for result in results:
        assert result.exit_code == 5, result.output
        assert "127.0.0.1:1,127.0.0.1:2" in result.output and "hunter2-pw" not in result.output
        assert "Traceback" not in result.output and "Redis Cluster" in result.output
