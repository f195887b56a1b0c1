"""Feature logging: every served (and shadow) prediction, with its inputs, written to Parquet in batches by a
background thread in the feature-log format (mlplatform.contracts.feature_log), and flushed on shutdown so nothing
served is lost."""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from mlplatform.contracts.feature_log import write_feature_log

log = logging.getLogger(__name__)

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
