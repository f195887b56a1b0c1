"""Where features come from: Parquet tables written by `mlplatform features build`, and a push source.

The same tables back both offline stores: FileSources for DuckDB (MLPLATFORM_OFFLINE_STORE=duckdb), SparkSources
for Feast's Spark offline store and compute engine (spark; the cluster profile's default). Names, columns and
descriptions are the same, so the feature views and services do not change; `mlplatform apply` after switching.
"""

import os
from pathlib import Path

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat

from mlplatform.layout import DataLayout

# The same variables feature_store.yaml's placeholders read: `mlplatform` exports them from its settings; for the
# plain feast CLI, `eval "$(mlplatform env)"` first.
if "MLPLATFORM_DATA_DIR" not in os.environ:
    raise RuntimeError('MLPLATFORM_DATA_DIR is not set: run `eval "$(mlplatform env)"` before the feast CLI')
_features = DataLayout(Path(os.environ["MLPLATFORM_DATA_DIR"])).features_dir
# feature_store.yaml's offline store type: "spark" (MLPLATFORM_OFFLINE_STORE=spark or the cluster profile), else DuckDB
_engine = "spark" if os.environ.get("MLPLATFORM_FEAST_OFFLINE_STORE_TYPE") == "spark" else "duckdb"


def _table(name: str):
    common = dict(
        name=f"{name}_source",
        path=str(_features / f"{name}.parquet"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        description=f"features/{name}.parquet, computed with DuckDB by `mlplatform features build`.",
        owner="fraud-features@mlplatform.dev",
    )
    if _engine == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(file_format="parquet", **common)
    return FileSource(file_format=ParquetFormat(), **common)


customer_activity_source = _table("customer_activity")
customer_profile_source = _table("customer_profile")
merchant_risk_source = _table("merchant_risk")
merchant_profile_source = _table("merchant_profile")
customer_realtime_batch_source = _table("customer_realtime")

customer_realtime_push = PushSource(
    name="customer_realtime_push",
    batch_source=customer_realtime_batch_source,
    description="Fresh per-customer signals pushed by the payment stream (POST /v1/push or store.push).",
)
