"""Check, before ``feast apply``, that every feature view's declared schema matches its source data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.settings import Settings


@dataclass(frozen=True)
class Problem:
    """One mismatch between a definition and its data."""

    file: str
    view: str
    column: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.file}: view {self.view!r}, column {self.column!r}: expected {self.expected}, found {self.found}"


def _arrow_matches(feast_type_name: str, arrow_type: pa.DataType) -> bool:
    """Whether a Parquet column type can hold a Feast primitive type without loss."""
    checks = {
        "Int64": pa.types.is_int64,
        "Int32": lambda t: pa.types.is_int32(t) or pa.types.is_int16(t) or pa.types.is_int8(t),
        "Float64": lambda t: pa.types.is_float64(t) or pa.types.is_float32(t),
        "Float32": pa.types.is_float32,
        "String": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
        "Bool": pa.types.is_boolean,
        "UnixTimestamp": pa.types.is_timestamp,
        "Bytes": lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t),
    }
    check = checks.get(feast_type_name)
    return check(arrow_type) if check else True


def _value_type_name(value_type) -> str:
    name = getattr(value_type, "name", str(value_type))
    return {"INT64": "Int64", "INT32": "Int32", "STRING": "String", "DOUBLE": "Float64", "FLOAT": "Float32"}.get(
        name, name
    )


def _source_path(source) -> Path | None:
    path = getattr(source, "path", None)
    return Path(path) if path else None


def validate_definitions(settings: Settings) -> list[Problem]:
    """Every problem found between the repo's definitions and their Parquet sources (empty list: all good)."""
    from mlplatform.features.repo import parse_definitions

    contents = parse_definitions(settings)
    entities = {e.name: e for e in contents.entities}
    problems: list[Problem] = []
    views = list(contents.feature_views) + list(contents.stream_feature_views)
    for view in views:
        source = view.batch_source
        path = _source_path(source)
        fname = str(path) if path else f"<{type(source).__name__}>"
        if path is None:
            continue
        if not path.exists():
            problems.append(
                Problem(fname, view.name, "*", "a Parquet file", "no such file (run `mlplatform features build`)")
            )
            continue
        try:
            meta = pq.read_metadata(path)
            schema = meta.schema.to_arrow_schema()
        except Exception as exc:  # not Parquet, truncated, ...
            problems.append(Problem(fname, view.name, "*", "a readable Parquet file", f"{type(exc).__name__}: {exc}"))
            continue
        if meta.num_rows == 0:
            problems.append(Problem(fname, view.name, "*", "at least one row", "an empty table"))
        columns = {f.name: f.type for f in schema}
        for ts_col in filter(None, [source.timestamp_field, source.created_timestamp_column]):
            if ts_col not in columns:
                problems.append(Problem(fname, view.name, ts_col, "a timestamp column", "missing"))
            elif not pa.types.is_timestamp(columns[ts_col]):
                problems.append(Problem(fname, view.name, ts_col, "timestamp", str(columns[ts_col])))
        for entity_name in view.entities:
            entity = entities.get(entity_name)
            if entity is None:
                problems.append(Problem(fname, view.name, entity_name, "a defined entity", "unknown entity"))
                continue
            key = entity.join_key
            expected = _value_type_name(entity.value_type)
            if key not in columns:
                problems.append(Problem(fname, view.name, key, f"entity join key ({expected})", "missing"))
            elif not _arrow_matches(expected, columns[key]):
                problems.append(Problem(fname, view.name, key, expected, str(columns[key])))
        for field in view.schema:
            if field.name in {e.join_key for e in entities.values()}:
                continue
            expected = str(field.dtype)
            if field.name not in columns:
                problems.append(Problem(fname, view.name, field.name, expected, "missing"))
            elif not _arrow_matches(expected, columns[field.name]):
                problems.append(Problem(fname, view.name, field.name, expected, str(columns[field.name])))
    return problems
