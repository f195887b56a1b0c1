"""The feature log: what the service served, as monitoring reads it.

Files: ``<data_dir>/feature_logs/date=YYYY-MM-DD/part-<time>-<id>.parquet`` (the day the rows were logged),
each written whole (temp file + fsync + rename). Columns: ``BASE_COLUMNS`` in this order, then one float64
column per model input feature. One row per model that scored a request: ``served`` is true for the answer the
caller got, false for shadow scores. ``missing``, ``stale`` and ``future`` list the inputs that had no value and
why (``future``: the stored row was newer than the request, so it was withheld). ``activity_source`` says where
``customer_activity`` came from: ``"logs"`` (the customer's event log, exact at the request's time) or ``"rows"``
(Feast's materialized row). ``transaction_time_us`` is the time the features were taken as of (µs since the epoch;
``transaction_ts`` is that time in whole seconds). ``activity_age_s`` is the age in seconds of the newest data behind
the served ``customer_activity`` (the request's time minus the time its source is known complete up to: the event
logs' newest applied event, or the view's materialized watermark end; 0 for a back-dated request; null when
unknown). Files written before a column of ``ADDED_COLUMNS`` existed lack it: readers give it as null there
(``future``: unknown, such a service served future rows silently; ``activity_source``: read it as ``"rows"``, the
only source such a service had; ``transaction_time_us``: only the seconds are known; ``activity_age_s``: not
measured).

Rows that do not fit the schema never take other rows down (``encode_feature_log``): a value that does not fit its
column (an id beyond int64, a number that is not one, text where a list belongs) is written as null, and the
original row goes to the dead-letter folder (``<data_dir>/feature_logs/_dead_letter/YYYY-MM-DD.jsonl``, one JSON
line per row: ``dead_lettered_at``, ``action``, ``reasons``, ``row``) with ``action: "coerced"``; a row that
cannot be written even so is left out of the Parquet file and dead-lettered with ``action: "quarantined"``.

The files may live on another filesystem (``MLPLATFORM_FEATURE_LOGS_URI``: ``file://``, ``memory://``,
``s3://``): the readers take a ``mlplatform.filesystems.Location`` for the root and read through its filesystem;
there each file is one whole object (``write_log_table`` puts it complete).

Readers never crash on a file: ``read_logs`` skips (and names, with the reason) files it cannot read, that lack a
required column or whose columns have types that cannot be cast to the schema's.
"""

from __future__ import annotations

import math
import numbers
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from mlplatform.files import append_jsonl_many, atomic_path, read_jsonl
from mlplatform.filesystems import Location

BASE_COLUMNS = (
    "request_id", "logged_at", "transaction_id", "customer_id", "merchant_id", "amount", "transaction_ts",
    "request_fields", "model_name", "model_version", "role", "served", "fallback", "fallback_reason", "cached",
    "prediction", "missing", "stale", "future", "latency_ms", "activity_source", "transaction_time_us",
    "activity_age_s",
)
# newer than some files: null where absent
ADDED_COLUMNS = ("future", "activity_source", "transaction_time_us", "activity_age_s")
ACTIVITY_FROM_LOGS, ACTIVITY_FROM_ROWS = "logs", "rows"  # the values of ``activity_source``
REQUIRED_COLUMNS = ("request_id", "logged_at", "served")  # a file without one of these cannot be judged at all
ROW_KEY = ("request_id", "model_name", "model_version", "role")  # one row per model that scored a request
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


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
            ("missing", pa.list_(pa.string())), ("stale", pa.list_(pa.string())), ("future", pa.list_(pa.string())),
            ("latency_ms", pa.float64()), ("activity_source", pa.string()), ("transaction_time_us", pa.int64()),
            ("activity_age_s", pa.float64()),
        ]
        + [(name, pa.float64()) for name in features]
    )


# --- writing ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowProblem:
    """A row that did not fit the schema: ``coerced`` (written with the named values as null) or ``quarantined``
    (not written at all); ``row`` is the row as it was handed over."""

    row: Any
    reasons: tuple[str, ...]
    action: str


@dataclass
class EncodedLog:
    """Rows as one Arrow table (None when no row is left) and the rows that needed coercion or quarantine."""

    table: Any
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows in the table."""
        return 0 if self.table is None else self.table.num_rows


def encode_feature_log(rows: list[Any]) -> EncodedLog:
    """The rows (``BASE_COLUMNS`` keys + a ``features`` dict) as an Arrow table in the log schema.

    The whole batch is encoded at once; only if that fails is each row checked against its columns' types, values
    that do not fit become null (``coerced``), and a row that still cannot be encoded is left out (``quarantined``).
    """
    import pyarrow as pa

    good = [r for r in rows if isinstance(r, Mapping) and isinstance(r.get("features", {}), Mapping)]
    problems = [RowProblem(r, ("not a feature-log row (a mapping with a 'features' mapping)",), "quarantined")
                for r in rows if not (isinstance(r, Mapping) and isinstance(r.get("features", {}), Mapping))]
    if not good:
        return EncodedLog(None, problems)
    features = sorted({str(k) for r in good for k in r.get("features", {})})
    schema = log_schema(features)
    try:
        return EncodedLog(_table(good, features, schema), problems)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        pass
    fixed: list[dict[str, Any]] = []
    for row in good:
        clean, reasons = coerce_row(row, schema)
        if reasons:
            problems.append(RowProblem(row, tuple(reasons), "coerced"))
        fixed.append(clean)
    try:
        return EncodedLog(_table(fixed, features, schema), problems)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        pass
    kept: list[dict[str, Any]] = []  # a failure coerce_row did not foresee: find the rows, leave them out
    coerced = {id(p.row): p for p in problems if p.action == "coerced"}
    for original, clean in zip(good, fixed, strict=True):
        try:
            _table([clean], features, schema)
            kept.append(clean)
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            earlier = coerced.pop(id(original), None)
            if earlier is not None:
                problems.remove(earlier)
            problems.append(RowProblem(original, (f"cannot be encoded: {type(exc).__name__}: {exc}",), "quarantined"))
    return EncodedLog(_table(kept, features, schema) if kept else None, problems)


def _table(rows: list[Mapping[str, Any]], features: list[str], schema):
    import pyarrow as pa

    columns: dict[str, list] = {c: [r.get(c) for r in rows] for c in BASE_COLUMNS}
    for name in features:
        columns[name] = [_as_float(r.get("features", {}).get(name)) for r in rows]
    return pa.table(columns, schema=schema)


def coerce_row(row: Mapping[str, Any], schema) -> tuple[dict[str, Any], list[str]]:
    """``row`` with every value that does not fit its column of ``schema`` set to null, and one reason per value."""
    clean = dict(row)
    reasons: list[str] = []
    for name in BASE_COLUMNS:
        value, why = _fit(row.get(name), schema.field(name).type)
        if why:
            reasons.append(f"{name}: {why}")
        clean[name] = value
    features = {}
    for name, raw in row.get("features", {}).items():
        value, why = _fit(raw, schema.field(str(name)).type)
        if why:
            reasons.append(f"features.{name}: {why}")
        features[str(name)] = value
    clean["features"] = features
    return clean, reasons


def _fit(value: Any, kind) -> tuple[Any, str | None]:
    """``value`` as it fits an Arrow column of type ``kind``, or (None, why not)."""
    import numpy as np
    import pyarrow as pa

    if value is None:
        return None, None
    shown = _short(value)
    if pa.types.is_boolean(kind):
        if isinstance(value, bool | np.bool_):
            return bool(value), None
        return None, f"{shown} is not true/false"
    if pa.types.is_integer(kind):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None, f"{shown} is not an integer"
        if isinstance(value, numbers.Integral):
            number = int(value)
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
            number = int(value)
        else:
            return None, f"{shown} is not an integer"
        if not INT64_MIN <= number <= INT64_MAX:
            return None, f"{shown} is out of the int64 range"
        return number, None
    if pa.types.is_floating(kind):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None, f"{shown} is not a number"
        try:
            return float(value), None
        except (OverflowError, ValueError):
            return None, f"{shown} is out of the float64 range"
    if pa.types.is_timestamp(kind):
        if isinstance(value, datetime):
            return value, None
        return None, f"{shown} is not a time"
    if pa.types.is_string(kind):
        if isinstance(value, str):
            return value, None
        return None, f"{shown} is not text"
    if pa.types.is_list(kind):
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value), None
        return None, f"{shown} is not a list of names"
    return value, None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def part_name(when: datetime, tag: str | None = None) -> str:
    """The name of a log file of rows logged on ``when``'s day, relative to the root: ``date=<day>/part-....parquet``.

    ``tag`` (default: random) ends the file name, so a writer can find the files it wrote from one batch."""
    return f"date={when:%Y-%m-%d}/part-{when:%H%M%S%f}-{tag or uuid.uuid4().hex[:8]}.parquet"


def write_log_table(root: Path | Location, table, when: datetime | None = None, tag: str | None = None) -> Path | str:
    """Write one encoded table as a Parquet file under ``root/date=<when's day>/`` whole (locally: atomically, with
    fsync; on another filesystem: one put of the complete file); returns its path (a URI off the local disk).

    ``tag`` (default: random) ends the file name, so a writer can find the files it wrote from one batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = part_name(when or datetime.now(UTC), tag)
    local = _local_root(root)
    if local is not None:
        path = local / name
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return root.write_bytes(name, sink.getvalue().to_pybytes())


def _local_root(root: Path | Location) -> Path | None:
    """The local folder of ``root`` (None when it is on another filesystem)."""
    return root.local if isinstance(root, Location) else Path(root)


def write_feature_log(root: Path | Location, rows: list[dict[str, Any]],
                      dead_letter: Path | None = None) -> Path | str | None:
    """Write rows (``BASE_COLUMNS`` keys + a ``features`` dict) as one Parquet file, atomically; returns its path
    (None when no row could be written). Rows that did not fit go to ``dead_letter`` (required if there are any)."""
    encoded = encode_feature_log(rows)
    if encoded.problems:
        if dead_letter is None:
            reasons = "; ".join(r for p in encoded.problems for r in p.reasons)
            raise ValueError(f"{len(encoded.problems)} feature-log row(s) do not fit the schema: {reasons}")
        append_dead_letters(dead_letter, encoded.problems)
    return write_log_table(root, encoded.table) if encoded.table is not None else None


def append_dead_letters(folder: Path, problems: list[RowProblem], when: datetime | None = None) -> Path:
    """Append each problem row, with its reasons, as one JSON line to ``folder/YYYY-MM-DD.jsonl``; returns it.

    All lines go in one append (one flock, one fsync), so a batch of many bad rows costs one disk sync."""
    when = when or datetime.now(UTC)
    path = Path(folder) / f"{when:%Y-%m-%d}.jsonl"
    records = [{"dead_lettered_at": when, "action": p.action, "reasons": list(p.reasons), "row": p.row}
               for p in problems]
    append_jsonl_many(path, records)
    return path


def read_dead_letters(folder: Path) -> list[dict[str, Any]]:
    """Every dead-lettered row under ``folder``, oldest file first."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        out.extend(read_jsonl(path)[0])
    return out


# --- reading ----------------------------------------------------------------------------------------------------
def log_files(root: Path | Location, start: datetime, end: datetime) -> list[PurePath]:
    """Feature-log files whose day folder can hold rows logged in [start, end) (a day of slack each side): local
    paths, or for a root on another filesystem, paths in it (read them with ``read_logs(..., root.fs)``)."""
    lo = (start - timedelta(days=1)).date().isoformat()
    hi = (end + timedelta(days=1)).date().isoformat()
    return all_log_files(root, days=(lo, hi))


def all_log_files(root: Path | Location, pattern: str = "part-*.parquet",
                  days: tuple[str, str] | None = None) -> list[PurePath]:
    """Feature-log files under ``root`` matching ``pattern`` in the day folders (of ``days``, inclusive ISO dates;
    default all), by day then name (see ``log_files``). Only the day folders asked for are listed (an object store
    holding years of logs is not listed whole)."""
    local = _local_root(root)
    if local is not None:
        folders = [f.name for f in sorted(local.glob("date=*"))]
    else:
        folders = [name.rsplit("/", 1)[-1] for name in root.glob("date=*")]
    if days is not None:
        folders = [f for f in folders if days[0] <= f.removeprefix("date=") <= days[1]]
    out: list[PurePath] = []
    for folder in sorted(folders):
        if local is not None:
            out.extend(sorted((local / folder).glob(pattern)))
        else:
            out.extend(PurePosixPath(root.path(name)) for name in root.glob(f"{folder}/{pattern}"))
    return out


@dataclass
class UnreadableFile:
    """A log file the readers skipped, why, and how many rows it holds (None when even that is unknown)."""

    path: PurePath
    reason: str
    rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "reason": self.reason, "rows": self.rows}


@dataclass
class LogRead:
    """What ``read_logs`` found: the rows of the readable files, and the files it had to skip."""

    frame: Any  # pandas.DataFrame
    unreadable: list[UnreadableFile] = field(default_factory=list)


def read_logs(files: list[PurePath], columns: list[str] | None = None, filesystem: Any = None) -> LogRead:
    """The rows of ``files`` as one DataFrame (with ``columns``: only those, plus the ids monitoring needs), and
    the files skipped because they could not be read, lack a required column, or hold a column of the wrong type.
    ``filesystem``: the (fsspec) filesystem the files are on (a ``Location``'s ``fs``); default the local one.

    Files written before a column of ``ADDED_COLUMNS`` existed get it as nulls."""
    import pandas as pd

    frames = []
    unreadable: list[UnreadableFile] = []
    for path in files:
        table, problem = _read_one(path if filesystem is not None else Path(path), columns, filesystem)
        if problem is not None:
            unreadable.append(problem)
        elif table is not None:
            frames.append(table.to_pandas())
    frames = [f for f in frames if len(f)] or frames[:1]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(BASE_COLUMNS))
    return LogRead(frame, unreadable)


def _read_one(path: PurePath, columns: list[str] | None, filesystem: Any = None):
    """(table, None) for a readable log file in the schema's types, else (None, UnreadableFile)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path if filesystem is None else path.as_posix(), filesystem=filesystem)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped and named, never fatal
        return None, UnreadableFile(path, f"unreadable: {type(exc).__name__}: {_short(str(exc), 160)}",
                                    _row_count(path, filesystem))
    lacking = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if lacking:
        return None, UnreadableFile(path, f"lacks the column(s) {', '.join(lacking)}", table.num_rows)
    base = log_schema([])
    for name in ADDED_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, base.field(name).type))
    if columns is not None:
        wanted = dict.fromkeys(["logged_at", "served", "request_id", *columns])
        table = table.select([c for c in wanted if c in table.column_names])
    for i, name in enumerate(table.column_names):
        expected = base.field(name).type if name in BASE_COLUMNS else pa.float64()
        if table.schema.field(i).type == expected:
            continue
        try:  # a finer time unit is truncated to microseconds; any other cast must be exact
            cast = table.column(i).cast(expected, safe=not pa.types.is_timestamp(expected))
            table = table.set_column(i, name, cast)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            return None, UnreadableFile(
                path, f"column {name} is {table.schema.field(i).type}, not {expected} ({type(exc).__name__})",
                table.num_rows)
    return table, None


def _row_count(path: PurePath, filesystem: Any = None) -> int | None:
    import pyarrow.parquet as pq

    try:
        if filesystem is None:
            return pq.ParquetFile(path).metadata.num_rows
        with filesystem.open(path.as_posix(), "rb") as fh:
            return pq.ParquetFile(fh).metadata.num_rows
    except Exception:  # noqa: BLE001 - even the footer is unreadable
        return None


def read_log_files(files: list[PurePath], columns: list[str] | None = None, filesystem: Any = None):
    """The rows of ``files`` as one DataFrame; with ``columns``, only those (plus the ids monitoring needs).
    Unreadable files are skipped (``read_logs`` names them)."""
    return read_logs(files, columns, filesystem).frame


def read_feature_logs(root: Path | Location):
    """Every feature-log row under ``root`` (a local folder, or a Location on any filesystem) as one DataFrame."""
    return read_log_files(all_log_files(root), filesystem=filesystem_of(root))


def filesystem_of(root: Path | Location) -> Any:
    """The filesystem to read ``root``'s files through: None (the local one, by path) or the Location's."""
    return None if _local_root(root) is not None else root.fs


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)
