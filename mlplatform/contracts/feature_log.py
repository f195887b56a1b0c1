"""The feature log: what the service served, as monitoring reads it.

Files: ``<data_dir>/feature_logs/date=YYYY-MM-DD/part-<time>-<id>.parquet`` (the day the rows were logged),
each written whole (temp file + fsync + rename). Columns: ``BASE_COLUMNS`` in this order, then one float64
column per model input feature. One row per model that scored a request: ``served`` is true for the answer the
caller got, false for shadow scores.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlplatform.files import atomic_path

BASE_COLUMNS = (
    "request_id", "logged_at", "transaction_id", "customer_id", "merchant_id", "amount", "transaction_ts",
    "request_fields", "model_name", "model_version", "role", "served", "fallback", "fallback_reason", "cached",
    "prediction", "missing", "stale", "latency_ms",
)


def log_schema(features: list[str]):
    """The Arrow schema of a feature-log file whose model inputs are ``features``."""
    import pyarrow as pa

    return pa.schema(
        [
            ("request_id", pa.string()), ("logged_at", pa.timestamp("us", tz="UTC")), ("transaction_id", pa.string()),
            ("customer_id", pa.int64()), ("merchant_id", pa.int64()), ("amount", pa.float64()),
            ("transaction_ts", pa.int64()), ("request_fields", pa.string()), ("model_name", pa.string()),
            ("model_version", pa.int64()), ("role", pa.string()), ("served", pa.bool_()), ("fallback", pa.bool_()),
            ("fallback_reason", pa.string()), ("cached", pa.bool_()), ("prediction", pa.float64()),
            ("missing", pa.list_(pa.string())), ("stale", pa.list_(pa.string())), ("latency_ms", pa.float64()),
        ]
        + [(name, pa.float64()) for name in features]
    )


def write_feature_log(root: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows (``BASE_COLUMNS`` keys + a ``features`` dict) as one Parquet file, atomically; returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = sorted({k for r in rows for k in r.get("features", {})})
    columns: dict[str, list] = {c: [r.get(c) for r in rows] for c in BASE_COLUMNS}
    for name in features:
        columns[name] = [_as_float(r.get("features", {}).get(name)) for r in rows]
    table = pa.table(columns, schema=log_schema(features))
    now = datetime.now(UTC)
    path = Path(root) / f"date={now:%Y-%m-%d}" / f"part-{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def log_files(root: Path, start: datetime, end: datetime) -> list[Path]:
    """Feature-log files whose day folder can hold rows logged in [start, end) (a day of slack each side)."""
    lo = (start - timedelta(days=1)).date().isoformat()
    hi = (end + timedelta(days=1)).date().isoformat()
    out = []
    for folder in sorted(Path(root).glob("date=*")):
        day = folder.name.removeprefix("date=")
        if lo <= day <= hi:
            out.extend(sorted(folder.glob("part-*.parquet")))
    return out


def read_log_files(files: list[Path], columns: list[str] | None = None):
    """The rows of ``files`` as one DataFrame; with ``columns``, only those (plus the ids monitoring needs)."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = []
    for path in files:
        table = pq.read_table(path)
        if columns is not None:
            wanted = dict.fromkeys(["logged_at", "served", "request_id", *columns])
            table = table.select([c for c in wanted if c in table.column_names])
        frames.append(table.to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(BASE_COLUMNS))


def read_feature_logs(root: Path):
    """Every feature-log row under ``root`` as one DataFrame."""
    return read_log_files(sorted(Path(root).glob("date=*/part-*.parquet")))


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)
