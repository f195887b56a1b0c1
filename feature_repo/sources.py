"""Where features come from: Parquet tables written by `mlplatform features build`, and a push source."""

import os
from pathlib import Path

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat

from mlplatform.layout import DataLayout

# The same variable feature_store.yaml's placeholders read: `mlplatform` exports it from its settings; for the plain
# feast CLI, `eval "$(mlplatform env)"` first.
if "MLPLATFORM_DATA_DIR" not in os.environ:
    raise RuntimeError('MLPLATFORM_DATA_DIR is not set: run `eval "$(mlplatform env)"` before the feast CLI')
_features = DataLayout(Path(os.environ["MLPLATFORM_DATA_DIR"])).features_dir


def _table(name: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=str(_features / f"{name}.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        description=f"features/{name}.parquet, computed with DuckDB by `mlplatform features build`.",
        owner="fraud-features@mlplatform.dev",
    )


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
