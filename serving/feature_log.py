"""Feature logging: every served (and shadow) prediction, with its inputs, written to Parquet in batches by a
background thread, atomically (temp file + rename), and flushed on shutdown so nothing served is lost."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Columns every file has, in this order; model input features follow as float64 columns.
BASE_COLUMNS = (
    "request_id", "logged_at", "transaction_id", "customer_id", "merchant_id", "amount", "transaction_ts",
    "request_fields", "model_name", "model_version", "role", "served", "fallback", "fallback_reason", "cached",
    "prediction", "missing", "stale", "latency_ms",
)
_STOP = object()


class FeatureLogWriter:
    """Queue rows from the request path; a thread writes them as Parquet under ``root/date=YYYY-MM-DD/``."""

    def __init__(self, root: Path, batch_rows: int = 2000, flush_seconds: float = 2.0, on_written=None) -> None:
        self.root = Path(root)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.on_written = on_written
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.rows_written = 0
        self.files_written = 0
        self.errors = 0

    @property
    def backlog(self) -> int:
        """Rows accepted but not yet on disk."""
        return self._pending

    def start(self) -> None:
        """Start the background writer."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="feature-log-writer", daemon=True)
        self._thread.start()

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Hand rows to the writer (never blocks the request path)."""
        if not rows:
            return
        with self._lock:
            self._pending += len(rows)
        self._queue.put(rows)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything still queued, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        buffer: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.flush_seconds
        while True:
            timeout = max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._flush(buffer)
                return
            if item is not None:
                buffer.extend(item)
            if len(buffer) >= self.batch_rows or time.monotonic() >= deadline:
                while len(buffer) >= self.batch_rows:
                    self._flush(buffer[: self.batch_rows])
                    buffer = buffer[self.batch_rows:]
                if buffer and time.monotonic() >= deadline:
                    self._flush(buffer)
                    buffer = []
                deadline = time.monotonic() + self.flush_seconds

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            path = write_feature_log(self.root, rows)
        except Exception:  # keep serving; the rows stay counted in the backlog and the error is logged
            self.errors += 1
            log.exception("feature log: could not write %d rows", len(rows))
            return
        with self._lock:
            self._pending -= len(rows)
        self.rows_written += len(rows)
        self.files_written += 1
        if self.on_written:
            self.on_written(len(rows), path)


def write_feature_log(root: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as one Parquet file, atomically; returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = sorted({k for r in rows for k in r.get("features", {})})
    columns: dict[str, list] = {c: [r.get(c) for r in rows] for c in BASE_COLUMNS}
    for name in features:
        columns[name] = [_as_float(r.get("features", {}).get(name)) for r in rows]
    schema = pa.schema(
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
    table = pa.table(columns, schema=schema)
    now = datetime.now(UTC)
    folder = root / f"date={now:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, folder / name)
    return folder / name


def read_feature_logs(root: Path):
    """Every feature-log row under ``root`` as one DataFrame (for monitoring and tests)."""
    import pandas as pd
    import pyarrow.parquet as pq

    files = sorted(Path(root).glob("date=*/part-*.parquet"))
    if not files:
        return pd.DataFrame(columns=list(BASE_COLUMNS))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)
