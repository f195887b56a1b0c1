"""Feast's Spark offline store and Spark compute engine (MLPLATFORM_OFFLINE_STORE=spark), pyspark in local[2] mode.

One Spark session for the module, over a private copy of the small world with the SparkSource definitions applied:
the point-in-time join equals the brute-force oracle, `mlplatform dataset build` gives the training set the DuckDB
store gives, and `mlplatform materialize` (Feast's Spark engine) leaves Redis holding the latest offline row of every
entity. Without Java or pyspark these tests skip, and under CI=true they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.features.definitions import apply_definitions
from mlplatform.features.pipelines import raw_watermark
from mlplatform.stores import open_feature_store
from tests.conftest import make_settings
from tests.features.test_point_in_time import FEATURES, _entity_rows
from tests.oracles import assert_frames_match, point_in_time, read_raw

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

AS_OF = pd.Timestamp("2026-10-08T12:00:00Z")


def _require_spark() -> None:
    """Java and pyspark, or a skip (a failure under CI=true)."""
    missing = []
    if importlib.util.find_spec("pyspark") is None:
        missing.append("pyspark (`make setup`)")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        missing.append("Java 17 (`make setup` installs Debian's openjdk-17-jre-headless)")
    if missing:
        why = "the Spark offline store needs " + " and ".join(missing)
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true and {why}: refusing to skip", pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="module")
def spark_world(world_dir, tmp_path_factory):
    """A private copy of the small world, its definitions applied with SparkSources, one Spark session running."""
    _require_spark()
    from mlplatform.spark_session import spark_session, stop_spark

    saved = dict(os.environ)  # make_settings exports MLPLATFORM_OFFLINE_STORE=spark: not past this module
    root = tmp_path_factory.mktemp("spark") / "world"
    shutil.copytree(world_dir, root, ignore=shutil.ignore_patterns(
        "registry.db*", "audit", "models", "feature_logs", "reports", "pipelines", "monitoring", "datasets"))
    settings = make_settings(root, offline_store="spark")
    session = spark_session(settings)
    assert session.sparkContext.master == "local[2]"
    assert session.conf.get("spark.sql.session.timeZone") == "UTC"
    apply_definitions(settings)  # `mlplatform apply`: Feast reads each SparkSource's schema through Spark
    yield settings
    stop_spark()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def spark_store(spark_world):
    return open_feature_store(spark_world)


def test_the_store_is_feasts_spark_offline_store(spark_store):
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStore
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    assert isinstance(spark_store._get_provider().offline_store, SparkOfflineStore)
    assert spark_store.config.batch_engine.type == "spark.engine"
    views = spark_store.list_feature_views() + spark_store.list_stream_feature_views()
    assert {v.name for v in views} >= {"customer_activity", "merchant_risk", "customer_realtime"}
    assert all(isinstance(v.batch_source, SparkSource) and v.batch_source.file_format == "parquet" for v in views)


def test_historical_features_on_spark_match_bruteforce_oracle(spark_world, spark_store):
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkRetrievalJob

    raw = read_raw(spark_world.data_path)
    until = raw_watermark(spark_world.data_path)
    ttl_c = spark_store.get_feature_view("customer_activity").ttl
    ttl_m = spark_store.get_feature_view("merchant_risk").ttl
    rows = _entity_rows(raw, until, pd.Timedelta(ttl_c))  # random times, exact ties, unknown entities, TTL edges
    assert len(rows) >= 2500

    job = spark_store.get_historical_features(entity_df=rows.copy(), features=spark_store.get_feature_service(
        "fraud_model_v1"))
    assert isinstance(job, SparkRetrievalJob)
    actual = job.to_df()
    expected = point_in_time(raw, rows, until, ttl_c, ttl_m)

    assert len(actual) == len(rows) and actual["row_id"].is_unique
    assert_frames_match(actual, expected, FEATURES)
    # microseconds survive the trip through Spark: each row comes back at its own instant
    back = pd.to_datetime(actual.set_index("row_id").sort_index()["event_timestamp"], utc=True).dt.as_unit("us")
    assert (back.to_numpy() == rows.set_index("row_id").sort_index()["event_timestamp"].to_numpy()).all()
    assert expected["txn_count_7d"].isna().sum() > 300 and expected["txn_count_7d"].notna().sum() > 1500


def test_dataset_build_on_spark_equals_the_duckdb_training_set(spark_world, applied_world, cli, tmp_path):
    from training.datasets import build_training_set, content_fingerprint, load_training_set

    result = cli(spark_world, ["dataset", "build", "--as-of", AS_OF.isoformat()])
    assert result.exit_code == 0, result.output
    built = sorted((spark_world.layout.datasets_dir).glob("asof-*"))
    assert len(built) == 1
    on_spark = load_training_set(built[0])
    on_duckdb = build_training_set(applied_world, as_of=AS_OF.to_pydatetime(), store=open_feature_store(applied_world),
                                   out_dir=tmp_path / "duckdb")

    assert on_spark.feature_names == on_duckdb.feature_names
    assert len(on_spark.frame) == len(on_duckdb.frame) > 1000
    # the same values and types (Spark hands back the entity rows' other times naive: the build reads them as UTC)
    pd.testing.assert_frame_equal(on_spark.frame, on_duckdb.frame, rtol=1e-9)
    assert str(on_spark.frame["label_timestamp"].dtype) == "datetime64[us, UTC]"
    assert on_spark.lineage["fingerprint"] == on_duckdb.lineage["fingerprint"]
    # the fingerprint is the content's: recomputed from the frame read back
    assert content_fingerprint(on_spark.frame, "fraud_model_v1", on_spark.feature_names) == on_spark.lineage[
        "fingerprint"]


def test_materialize_through_the_spark_engine_holds_the_latest_offline_rows(spark_world, redis_dbs, cli):
    from mlplatform.audit import list_records
    from mlplatform.features.online import read_online

    client = redis_dbs.flush(1)  # the run's second database: nothing else of this module writes there
    settings = make_settings(spark_world.data_path, offline_store="spark", redis_addr=redis_dbs.addr(1))
    end = raw_watermark(settings.data_path)
    result = cli(settings, ["materialize"])  # incremental: a first run loads each view from its first row
    assert result.exit_code == 0, result.output
    assert client.dbsize() > 150
    engines = {view: run["engine"] for view, run in list_records(settings, action="materialize")[-1].details["views"]
               .items()}
    assert set(engines) >= {"customer_activity", "merchant_risk", "customer_profile", "customer_realtime"}
    assert set(engines.values()) == {"feast"}  # Feast's engines (Spark's; the stream view: local over Spark)

    # the oracle: the latest offline row of each entity (pandas over the Parquet tables), as of the run's end
    def latest(table: str, key: str) -> pd.DataFrame:
        frame = pd.read_parquet(settings.layout.features_dir / f"{table}.parquet")
        frame = frame[frame["event_timestamp"] <= end]
        return frame.sort_values(["event_timestamp", "created_timestamp"]).groupby(key).tail(1).set_index(key)

    activity, risk = latest("customer_activity", "customer_id"), latest("merchant_risk", "merchant_id")
    merchants = risk.index.to_numpy()
    rows = [{"customer_id": int(c), "merchant_id": int(merchants[i % len(merchants)]), "amount": 10.0,
             "transaction_ts": 1_800_000_000} for i, c in enumerate(activity.index)]
    online = read_online(settings, rows)
    assert len(online) == len(activity) > 100
    columns = ["txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h", "amount_sum_7d",
               "amount_mean_7d", "distinct_merchants_24h"]
    expected = activity[columns].reset_index(drop=True).assign(
        fraud_rate_30d=[risk.loc[r["merchant_id"], "fraud_rate_30d"] for r in rows], row_id=range(len(rows)))
    assert_frames_match(online.assign(row_id=range(len(rows))), expected, [*columns, "fraud_rate_30d"])


def test_feast_env_carries_the_spark_session_settings(tmp_path, monkeypatch):
    """What `mlplatform env` exports for the plain feast CLI starts Spark as mlplatform does (no JVM needed here)."""
    import shlex
    import subprocess
    import sys

    from mlplatform.settings import Settings

    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    env = Settings(_env_file=None, data_dir=tmp_path, offline_store="spark", spark_master="local[3]").feast_env()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLPLATFORM_", "PYSPARK_"))}
    settings_env = {"MLPLATFORM_DATA_DIR": str(tmp_path), "MLPLATFORM_OFFLINE_STORE": "spark",
                    "MLPLATFORM_SPARK_MASTER": "local[3]"}
    shell = subprocess.run(  # the real `mlplatform env`, eval'd by bash as the README says
        ["bash", "-c", f'eval "$({shlex.quote(sys.executable)} -m cli env)" && printf "%s" "$PYSPARK_SUBMIT_ARGS"'],
        env={**clean, **settings_env}, capture_output=True, text=True, check=True, timeout=120)
    args = shlex.split(shell.stdout)  # how pyspark reads it
    assert args[:2] == ["--master", "local[3]"] and args[-1] == "pyspark-shell"
    confs = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--conf")
    assert confs["spark.sql.session.timeZone"] == "UTC" and confs["spark.sql.shuffle.partitions"] == "12"
    java_options = confs["spark.driver.extraJavaOptions"].split()  # one value holding a space, whole
    assert "-Duser.timezone=UTC" in java_options
    log_config = next(o for o in java_options if o.startswith("-Dlog4j2.configurationFile=file:"))
    assert Path(log_config.split("file:", 1)[1]).is_file()
    assert confs["spark.driver.memory"] == "4g"
    assert env["PYSPARK_PYTHON"] == sys.executable  # a local master's workers: this interpreter, which has Feast
    assert env["MLPLATFORM_FEAST_BATCH_ENGINE"] == "{type: spark.engine}"

    remote = Settings(_env_file=None, data_dir=tmp_path, offline_store="spark", spark_master="spark://h:7077")
    assert "PYSPARK_PYTHON" not in remote.feast_env()  # a cluster's executors: the operator's Python
    assert "spark.sql.shuffle.partitions" not in remote.feast_env()["PYSPARK_SUBMIT_ARGS"]
    assert not any(k.startswith("PYSPARK_") for k in Settings(_env_file=None, data_dir=tmp_path).feast_env())


def test_rows_to_materialize_are_counted_by_spark_where_duckdb_cannot_read(spark_world, spark_store):
    """A SparkSource on a URL (a cluster's HDFS or S3) is counted through Spark: the same count as DuckDB's over
    the local file, and as pandas'."""
    import copy
    from datetime import UTC, datetime

    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    from mlplatform.features.materialize import _rows_in_interval

    view = spark_store.get_feature_view("customer_activity")
    remote = copy.copy(view)
    local = view.batch_source
    remote.batch_source = SparkSource(name=local.name, path=f"file://{local.path}", file_format="parquet",
                                      timestamp_field=local.timestamp_field,
                                      created_timestamp_column=local.created_timestamp_column)
    start, end = datetime(2026, 10, 3, 6, tzinfo=UTC), datetime(2026, 10, 3, 7, 30, tzinfo=UTC)
    frame = pd.read_parquet(local.path)
    expected = frame[(frame["event_timestamp"] >= start) & (frame["event_timestamp"] <= end)]["customer_id"].nunique()
    assert 0 < expected < frame["customer_id"].nunique()
    assert _rows_in_interval(spark_world, remote, start, end) == expected  # Spark
    assert _rows_in_interval(spark_world, view, start, end) == expected  # DuckDB over the local file
