"""Feature logging: every served (and shadow) prediction, with its inputs, written to Parquet in batches by a
background thread in the feature-log format (mlplatform.contracts.feature_log), so that nothing served is lost.

* **Bounded queue.** ``write`` never blocks a request: rows wait in memory (``backlog``) until written; past
  ``max_queue_rows`` new rows are dropped and counted (``WriterEvents.dropped``), never silently.
* **Write-ahead file** (``wal_dir``). ``write`` appends the rows to the writer's segment file as JSON lines (one
  ``write`` call, into the kernel's page cache) before it returns, so before the caller is answered; the thread
  fsyncs the segment within ``WAL_SYNC_SECONDS`` (20 ms, one fsync for all rows since the last) and, once
  everything the segment holds is in Parquet, starts a new segment and deletes the old one. At start, segments no
  live writer holds (each writer holds its own with ``flock``) are replayed into Parquet, skipping rows already
  written from them (files are tagged with the segment's id), then deleted. So a SIGKILL of the service loses no
  answered row; a crash of the whole machine loses at most the rows of the last ~20 ms plus one fsync.
* **Bad rows** never take a batch down: rows that do not fit the schema are coerced or quarantined and
  dead-lettered with the reason (``dead_letter_dir``).
* **Failed writes** (a full or read-only disk) are retried with exponential backoff (0.1 s doubling to 5 s)
  while the rows stay queued; new rows keep arriving into the write-ahead file meanwhile.
* **Shutdown** (``close``) writes everything; rows it still cannot write stay in the write-ahead file.
* **Start** removes temp files that dead writers left (``.*.tmp`` of ``mlplatform.files.atomic_path``).
* **Another filesystem** (``target``: ``MLPLATFORM_FEATURE_LOGS_URI``, e.g. ``s3://bucket/prefix``). ``root`` stays
  the local spool: every part is written there first (fsync, rename) exactly as without a target, so the write-ahead
  file rotates only once its rows are on the local disk. A shipper thread (``PartShipper``) then puts each complete
  part to the target under the same name and deletes the local copy only after the put succeeded; a failed put is
  retried with backoff (the part waits on disk, not in memory: an object-store outage never fills the queue); a
  crash between put and delete re-puts the same name (same content: no duplicate). Parts left at shutdown are
  shipped at the next start. So "never loses a row" holds as before; monitoring sees a row once its part is shipped
  (within about ``flush_seconds`` of being written while the target answers). Dead letters and the write-ahead file
  (appended to, under a lock) stay local.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlplatform.contracts.feature_log import (
    ROW_KEY,
    RowProblem,
    all_log_files,
    append_dead_letters,
    encode_feature_log,
    read_logs,
    write_log_table,
)
from mlplatform.files import TMP_SUFFIX, json_default, read_jsonl
from mlplatform.filesystems import Location

log = logging.getLogger(__name__)

_STOP = object()
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.1, 5.0
WAL_SYNC_SECONDS = 0.02  # the writer's thread fsyncs the write-ahead segment at most this often (group commit)
STALE_TEMP_SECONDS = 3600.0  # a temp file this old is left over whatever its process id says
STALE_OPEN_SECONDS = 60.0  # a write-ahead segment still being created after this long was abandoned
WARN_EVERY_SECONDS = 10.0
SEGMENT_GLOB = "seg-*.jsonl"
PART_GLOB = "date=*/part-*.parquet"


def _nothing(*_args: Any) -> None:
    return None


@dataclass
class WriterEvents:
    """What the writer reports (to metrics): rows written (and the file), dropped on overload, dead-lettered
    (``coerced`` or ``quarantined``), replayed from a write-ahead file at start, and failed write attempts by
    target (``parquet``, ``wal``, ``dead_letter``)."""

    written: Callable[[int, Path], None] = _nothing
    dropped: Callable[[int], None] = _nothing
    dead_lettered: Callable[[int, str], None] = _nothing
    replayed: Callable[[int], None] = _nothing
    write_failed: Callable[[str], None] = _nothing  # also ``ship``: a put to the target failed (retried)
    shipped: Callable[[int], None] = _nothing  # parts put to the target (with a target only)


class FeatureLogWriter:
    """Queue rows from the request path; a thread writes them as Parquet under ``root/date=YYYY-MM-DD/`` (and, with
    a ``target`` on another filesystem or folder, another ships them there)."""

    def __init__(self, root: Path, batch_rows: int = 2000, flush_seconds: float = 2.0, on_written=None, *,
                 max_queue_rows: int = 50_000, dead_letter_dir: Path | None = None, wal_dir: Path | None = None,
                 events: WriterEvents | None = None, target: Location | None = None) -> None:
        self.root = Path(root)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_queue_rows = max_queue_rows
        self.dead_letter_dir = Path(dead_letter_dir) if dead_letter_dir else self.root / "_dead_letter"
        self.wal_dir = Path(wal_dir) if wal_dir else None
        self.events = events or WriterEvents()
        if on_written is not None:
            self.events.written = on_written
        spool = self.root.expanduser().resolve()
        self.target = target if target is not None and target.local != spool else None
        self.shipper = PartShipper(self.root, self.target, flush_seconds, self.events) if self.target else None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stop_by = float("inf")
        self._stopping = False  # the thread took the stop marker
        self._synced_at = 0.0  # when the write-ahead segment was last fsynced (monotonic)
        self._wal: WriteAheadSegment | None = None
        self._warned_at: dict[str, float] = {}
        # rows taken from the queue: not yet encoded, then encoded tables and dead letters not yet written
        self._buffer: list[dict[str, Any]] = []
        self._tables: list[Any] = []
        self._letters: list[RowProblem] = []
        self._chunk = 0
        self.rows_written = 0
        self.files_written = 0
        self.rows_dropped = 0
        self.rows_dead_lettered = 0
        self.rows_replayed = 0
        self.temp_files_removed = 0
        self.errors = 0

    @property
    def backlog(self) -> int:
        """Rows accepted but not yet on disk (in Parquet or the dead-letter file)."""
        return self._pending

    # -- the request path ---------------------------------------------------------------------------------------
    def write(self, rows: list[dict[str, Any]]) -> bool:
        """Hand rows to the writer (never blocks); False when they were dropped because the queue is full."""
        if not rows:
            return True
        n = len(rows)
        data = self._wal_bytes(rows) if self._wal is not None else None
        wal_error: Exception | None = None
        with self._lock:
            refused = self._closed or self._pending + n > self.max_queue_rows
            if not refused:
                if data is not None and self._wal is not None:
                    try:
                        self._wal.write(data)
                    except OSError as exc:  # the rows still go to Parquet; only a kill now would lose them
                        wal_error = exc
                self._pending += n
                self._queue.put(rows)
            else:
                self.rows_dropped += n
        if wal_error is not None:
            self._wal_failed(n, wal_error)
        if refused:
            self.events.dropped(n)
            why = "the writer is closed" if self._closed else f"{self.max_queue_rows:,} rows already wait"
            self._warn("dropped", "feature log: dropped %d row(s): %s (counted in "
                       "mlplatform_feature_log_rows_dropped_total)", n, why)
        return not refused

    def _wal_bytes(self, rows: list[dict[str, Any]]) -> bytes | None:
        try:
            return encode_wal_rows(rows)
        except Exception as exc:  # noqa: BLE001 - a row JSON cannot hold: it still goes to Parquet
            self._wal_failed(len(rows), exc)
            return None

    def _wal_failed(self, n: int, exc: Exception) -> None:
        self.errors += 1
        self.events.write_failed("wal")
        self._warn("wal", "feature log: could not append %d row(s) to the write-ahead file (%s: %s); they are "
                   "kept in memory only", n, type(exc).__name__, exc)

    # -- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Remove dead writers' temp files, replay write-ahead files no live writer holds, start the thread."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.temp_files_removed = clean_temp_files(self.root)
        if self.wal_dir is not None:
            self.rows_replayed = self.replay()
            self._wal = WriteAheadSegment.create(self.wal_dir)
        self._thread = threading.Thread(target=self._run, name="feature-log-writer", daemon=True)
        self._thread.start()
        if self.shipper is not None:
            self.shipper.start()  # parts left by an earlier run first

    def close(self, timeout: float = 30.0) -> None:
        """Write everything still queued (retrying failed writes for up to ``timeout``), then stop the thread."""
        if self._thread is None:
            return
        started = time.monotonic()
        with self._lock:
            self._closed = True
            self._stop_by = time.monotonic() + max(0.0, timeout - 1.0)
            self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None
        if self.shipper is not None:  # what is written locally, shipped in the time left (the rest at next start)
            self.shipper.close(max(1.0, timeout - (time.monotonic() - started)))

    # -- the thread ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                self._loop()
                return
            except Exception:  # noqa: BLE001 - a bug must not stop the writer: the rows stay queued; log, go on
                self.errors += 1
                log.exception("feature log: the writer thread failed; restarting it")
                time.sleep(0.5)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.flush_seconds
        retry_at: float | None = None
        backoff = RETRY_FIRST_SECONDS
        while True:
            now = time.monotonic()
            waiting = self._buffer or self._tables or self._letters
            wake = retry_at if (waiting and retry_at is not None) else deadline
            if self._stopping:
                wake = min(retry_at or now, self._stop_by)
            if self._wal is not None and self._wal.dirty:
                wake = min(wake, self._synced_at + WAL_SYNC_SECONDS)
            taken, stopped = self._take(max(0.0, wake - now))
            self._stopping = self._stopping or stopped
            self._sync_wal()
            if taken:
                self._buffer.extend(taken)
            now = time.monotonic()
            due = self._stopping or len(self._buffer) >= self.batch_rows or now >= deadline
            if due and (retry_at is None or now >= retry_at or (self._stopping and retry_at >= self._stop_by)):
                if self._flush():
                    retry_at, backoff = None, RETRY_FIRST_SECONDS
                    deadline = time.monotonic() + self.flush_seconds
                else:
                    retry_at = time.monotonic() + backoff
                    backoff = min(2 * backoff, RETRY_MAX_SECONDS)
            if self._stopping:
                left = len(self._buffer) + sum(t.num_rows for t in self._tables) + len(self._letters)
                if not left:
                    if self._wal is not None:
                        self._wal.close(delete=True)
                    return
                if time.monotonic() >= self._stop_by:
                    self._give_up(left)
                    return

    def _take(self, timeout: float) -> tuple[list[dict[str, Any]], bool]:
        """The rows queued now (waiting up to ``timeout`` for the first), and whether the stop marker came."""
        rows: list[dict[str, Any]] = []
        stopped = False
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return rows, stopped
        while True:
            if item is _STOP:
                stopped = True
            else:
                rows.extend(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return rows, stopped

    def _sync_wal(self) -> None:
        """fsync the write-ahead segment if it was written to and the last fsync is ``WAL_SYNC_SECONDS`` old."""
        wal = self._wal
        now = time.monotonic()
        if wal is None or not wal.dirty or now - self._synced_at < WAL_SYNC_SECONDS:
            return
        self._synced_at = now
        try:
            wal.sync()
        except OSError as exc:
            self._wal_failed(0, exc)

    def _rotate_wal(self) -> None:
        """Everything taken from the queue is in Parquet: begin a new segment and delete the old one. Rows queued
        meanwhile (appended to the old segment only) are appended to the new one, under the lock, and taken."""
        old = self._wal
        if old is None or not old.appended:
            return
        try:
            fresh = WriteAheadSegment.create(old.path.parent)
        except OSError as exc:  # keep the old segment; a replay skips what is already written
            self._wal_failed(0, exc)
            return
        failed: Exception | None = None
        with self._lock:
            carried, stopped = self._take(0.0)
            if carried:
                try:
                    fresh.write(encode_wal_rows(carried))
                except Exception as exc:  # noqa: BLE001 - they stay in memory, as a failed append in write()
                    failed = exc
            self._wal = fresh
            if stopped:
                self._queue.put(_STOP)
        if failed is not None:
            self._wal_failed(len(carried), failed)
        self._buffer.extend(carried)
        old.close(delete=True)

    def _flush(self) -> bool:
        """Encode the buffer, write every table and dead letter; True when nothing is left (then the write-ahead
        segment starts over). A failure leaves what was not written for the next attempt."""
        if self._buffer:
            rows, self._buffer = self._buffer, []
            for i in range(0, len(rows), self.batch_rows):
                encoded = encode_feature_log(rows[i:i + self.batch_rows])
                if encoded.table is not None:
                    self._tables.append(encoded.table)
                self._letters.extend(encoded.problems)
        target = "dead_letter"
        try:
            self._write_letters()
            target = "parquet"
            while self._tables:
                table = self._tables[0]
                self._chunk += 1
                tag = f"{self._wal.id}-{self._chunk}" if self._wal is not None else None
                path = write_log_table(self.root, table, tag=tag)
                self._tables.pop(0)
                self._done(table.num_rows)
                self.rows_written += table.num_rows
                self.files_written += 1
                self.events.written(table.num_rows, path)
                if self.shipper is not None:
                    self.shipper.wake()
        except Exception:  # noqa: BLE001 - retried with backoff; the rows stay queued and counted in the backlog
            self.errors += 1
            self.events.write_failed(target)
            left = sum(t.num_rows for t in self._tables) + len(self._letters)
            self._warn("parquet", "feature log: could not write %d row(s); retrying with backoff", left,
                       exc_info=True)
            return False
        self._rotate_wal()
        return True

    def _write_letters(self) -> None:
        if not self._letters:
            return
        append_dead_letters(self.dead_letter_dir, self._letters)
        for action in ("coerced", "quarantined"):
            n = sum(1 for p in self._letters if p.action == action)
            if n:
                self.events.dead_lettered(n, action)
        quarantined = sum(1 for p in self._letters if p.action == "quarantined")
        self.rows_dead_lettered += len(self._letters)
        log.warning("feature log: %d row(s) did not fit the schema (%d coerced, %d quarantined); see %s",
                    len(self._letters), len(self._letters) - quarantined, quarantined, self.dead_letter_dir)
        self._letters = []
        self._done(quarantined)  # coerced rows are counted when their table is written

    def _done(self, n: int) -> None:
        with self._lock:
            self._pending -= n

    def _give_up(self, left: int) -> None:
        if self._wal is not None:
            log.error("feature log: %d row(s) could not be written before shutdown; they stay in the write-ahead "
                      "file %s and are replayed at the next start", left, self._wal.path)
            self._wal.close(delete=False)
            return
        self.rows_dropped += left
        self.events.dropped(left)
        log.error("feature log: %d row(s) could not be written before shutdown and are lost (no write-ahead "
                  "file)", left)

    def _warn(self, key: str, message: str, *args: Any, exc_info: bool = False) -> None:
        """Log a warning, at most once per ``WARN_EVERY_SECONDS`` for each kind (the counters count them all)."""
        now = time.monotonic()
        if now - self._warned_at.get(key, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self._warned_at[key] = now
            log.warning(message, *args, exc_info=exc_info)

    # -- replay -------------------------------------------------------------------------------------------------
    def replay(self) -> int:
        """Write the rows of write-ahead segments no live writer holds into Parquet (those not yet written from
        them), then delete them; returns how many rows were written. A segment that fails stays for next time."""
        if self.wal_dir is None or not self.wal_dir.exists():
            return 0
        total = 0
        for segment in WriteAheadSegment.orphans(self.wal_dir):
            try:
                total += self._replay_one(segment)
                segment.close(delete=True)
            except Exception:  # noqa: BLE001 - the service starts anyway; the segment is replayed next start
                segment.close(delete=False)
                self.events.write_failed("parquet")
                log.exception("feature log: could not replay the write-ahead file %s; it is kept", segment.path)
        return total

    def _replay_one(self, segment: WriteAheadSegment) -> int:
        records, torn = read_jsonl(segment.path)
        rows = [decode_wal_row(r) for r in records]
        done = self._written_keys(segment.id)
        todo = [r for r in rows if _key(r) not in done]
        by_day: dict[str, list[dict[str, Any]]] = {}
        for row in todo:
            when = row.get("logged_at")
            day = when.astimezone(UTC).date().isoformat() if isinstance(when, datetime) else ""
            by_day.setdefault(day, []).append(row)
        written = 0
        for k, (day, day_rows) in enumerate(sorted(by_day.items())):
            when = datetime.fromisoformat(day).replace(tzinfo=UTC) if day else datetime.now(UTC)
            for i in range(0, len(day_rows), self.batch_rows):
                encoded = encode_feature_log(day_rows[i:i + self.batch_rows])
                if encoded.problems:
                    append_dead_letters(self.dead_letter_dir, encoded.problems)
                if encoded.table is not None:
                    write_log_table(self.root, encoded.table, when=when, tag=f"{segment.id}-r{k}-{i}")
                    written += encoded.table.num_rows
        if todo:
            self.events.replayed(written)
            log.warning("feature log: replayed %d row(s) from the write-ahead file %s (%d already written%s)",
                        written, segment.path.name, len(rows) - len(todo),
                        f", {torn} torn line(s) skipped" if torn else "")
        return written

    def _written_keys(self, segment_id: str) -> set[tuple]:
        """Row keys already in Parquet from segment ``segment_id``: in the local spool, then (already shipped:
        put before deleted, so a part is in one or the other) on the target."""
        pattern = f"part-*-{segment_id}-*.parquet"
        frames = []
        files = sorted(self.root.glob(f"date=*/{pattern}"))
        if files:
            frames.append(read_logs(files, list(ROW_KEY)).frame)
        if self.target is not None:  # only the days the segment lived (its name starts with its creation time)
            shipped = all_log_files(self.target, pattern, days=(_segment_day(segment_id), "9999-12-31"))
            if shipped:
                frames.append(read_logs(shipped, list(ROW_KEY), self.target.fs).frame)
        return {tuple(None if _isnull(v) else v for v in key) for frame in frames for key in
                frame[list(ROW_KEY)].itertuples(index=False, name=None)}


class PartShipper:
    """A thread that puts each complete Parquet part under ``spool`` to ``target`` (same relative name), then deletes
    the local copy; a failed put is retried with backoff (0.1 s doubling to 5 s) and the part waits on disk."""

    def __init__(self, spool: Path, target: Location, every_seconds: float = 2.0,
                 events: WriterEvents | None = None) -> None:
        self.spool = Path(spool)
        self.target = target
        self.every_seconds = every_seconds
        self.events = events or WriterEvents()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_at = -WARN_EVERY_SECONDS
        self.parts_shipped = 0
        self.errors = 0

    def pending(self) -> list[Path]:
        """Complete parts in the spool not shipped yet (temp files are hidden names: never matched)."""
        return sorted(self.spool.glob(PART_GLOB))

    def ship(self) -> bool:
        """Put every pending part to the target, deleting each local copy after its put; True when none is left.
        Stops at the first failure (counted, logged at most every ``WARN_EVERY_SECONDS``)."""
        for path in self.pending():
            name = path.relative_to(self.spool).as_posix()
            try:
                self.target.put_file(path, name)
            except FileNotFoundError:  # another writer sharing the spool shipped and deleted it meanwhile
                if path.exists():
                    return self._failed(name, FileNotFoundError(f"{self.target.show(name)}: no such folder"))
                continue
            except Exception as exc:  # noqa: BLE001 - the part stays on disk; retried with backoff
                return self._failed(name, exc)
            path.unlink(missing_ok=True)
            self.parts_shipped += 1
            self.events.shipped(1)
        return True

    def _failed(self, name: str, exc: Exception) -> bool:
        from mlplatform.redact import redact

        self.errors += 1
        self.events.write_failed("ship")
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("feature log: could not ship %s to %s (%s: %s); it stays in %s and is retried with backoff "
                        "(%d part(s) waiting)", name, self.target.uri, type(exc).__name__, redact(str(exc)),
                        self.spool, len(self.pending()))
        return False

    def wake(self) -> None:
        """A part was written: ship it now rather than at the next tick."""
        self._wake.set()

    def start(self) -> None:
        """Start the thread (it ships what an earlier run left first)."""
        self._thread = threading.Thread(target=self._run, name="feature-log-shipper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = RETRY_FIRST_SECONDS
        while not self._stop.is_set():
            try:
                done = self.ship()
            except Exception:  # noqa: BLE001 - a bug must not stop the shipper: parts wait on disk
                log.exception("feature log: the shipper failed; retrying")
                done = False
            wait = self.every_seconds if done else backoff
            backoff = RETRY_FIRST_SECONDS if done else min(2 * backoff, RETRY_MAX_SECONDS)
            self._wake.wait(wait)
            self._wake.clear()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread, then ship what is left, retrying for up to ``timeout`` (what still fails stays in the
        spool for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        deadline = time.monotonic() + timeout
        backoff = RETRY_FIRST_SECONDS
        while not self.ship() and time.monotonic() + backoff < deadline:
            time.sleep(backoff)
            backoff = min(2 * backoff, RETRY_MAX_SECONDS)
        left = len(self.pending())
        if left:
            log.error("feature log: %d part(s) could not be shipped to %s before shutdown; they stay in %s and are "
                      "shipped at the next start", left, self.target.uri, self.spool)


def _segment_day(segment_id: str) -> str:
    """The ISO day before the one a segment ``seg-<YYYYmmddTHHMMSSffffff>-...`` was created: parts from it are in
    day folders from then on (a row carried into it at midnight was logged the day before); the earliest day when
    the name does not say."""
    try:
        created = datetime.strptime(segment_id.removeprefix("seg-")[:8], "%Y%m%d")
    except ValueError:
        return "0000-01-01"
    return (created - timedelta(days=1)).date().isoformat()


def _isnull(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _key(row: Any) -> tuple:
    if not isinstance(row, dict):
        return ()
    return tuple(row.get(c) for c in ROW_KEY)


def encode_wal_rows(rows: list[dict[str, Any]]) -> bytes:
    """Rows as write-ahead JSON lines (times as ISO-8601, NaN as NaN)."""
    return b"".join(json.dumps(r, default=json_default, separators=(",", ":")).encode("utf-8") + b"\n"
                    for r in rows)


def decode_wal_row(record: dict[str, Any]) -> dict[str, Any]:
    """A row as the writer had it, from its write-ahead JSON line (``logged_at`` back to a time)."""
    when = record.get("logged_at")
    if isinstance(when, str):
        with contextlib.suppress(ValueError):
            record["logged_at"] = datetime.fromisoformat(when)
    return record


class WriteAheadSegment:
    """One writer's write-ahead file ``seg-<time>-<pid>-<id>.jsonl``, held with an exclusive ``flock`` for as long
    as the writer lives (the kernel drops it when the process dies, so a replay never takes a live writer's)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.appended = 0  # writes since it was created
        self.dirty = False

    @property
    def id(self) -> str:
        """The segment's name without ``.jsonl``: the tag of the Parquet files written from it."""
        return self.path.stem

    @classmethod
    def create(cls, folder: Path) -> WriteAheadSegment:
        """A new, locked, empty segment (locked before it gets the name replays look for)."""
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"seg-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        hidden = folder / f".{stem}.open"
        fd = os.open(hidden, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = folder / f"{stem}.jsonl"
        os.replace(hidden, path)
        return cls(path, fd)

    @classmethod
    def orphans(cls, folder: Path) -> list[WriteAheadSegment]:
        """Segments no live writer holds, locked now by this process (oldest first); stale ``.open`` files of
        writers that died while creating one are removed."""
        out = []
        for path in sorted(folder.glob(".seg-*.open")) + sorted(folder.glob(SEGMENT_GLOB)):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live writer's
                continue
            if path.suffix == ".open":  # a writer died between creating and naming it (or is doing so now)
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - path.stat().st_mtime > STALE_OPEN_SECONDS:
                        path.unlink()
                os.close(fd)
                continue
            out.append(cls(path, fd))
        return out

    def write(self, data: bytes) -> None:
        """Append ``data`` (whole JSON lines) in one ``write`` call (into the page cache: it survives a killed
        process; ``sync`` makes it survive a crashed machine)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.appended += 1
        self.dirty = True

    def sync(self) -> None:
        """fsync what was written since the last sync."""
        if self.dirty:
            self.dirty = False
            os.fsync(self.fd)

    def close(self, delete: bool) -> None:
        """Release the lock (deleting the file first, with ``delete``)."""
        if delete:
            self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def clean_temp_files(root: Path) -> int:
    """Remove ``.*.tmp`` files under ``root`` left by writers that died (their process is gone, or the file is
    older than ``STALE_TEMP_SECONDS``); returns how many."""
    removed = 0
    now = time.time()
    for path in Path(root).rglob(f".*{TMP_SUFFIX}"):
        try:
            old = now - path.stat().st_mtime > STALE_TEMP_SECONDS
        except FileNotFoundError:
            continue
        if old or not _alive(_temp_pid(path.name)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    if removed:
        log.warning("feature log: removed %d temp file(s) left by writers that died, under %s", removed, root)
    return removed


def _temp_pid(name: str) -> int | None:
    """The process id in an ``atomic_path`` temp name ``.<name>.<pid>-<id>.tmp``."""
    try:
        return int(name.removesuffix(TMP_SUFFIX).rsplit(".", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
