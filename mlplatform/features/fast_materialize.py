"""A fast materialization engine that writes exactly what Feast's Redis online store writes.

Per feature view: DuckDB selects the latest row per entity in ``[start, end]`` straight from the view's Parquet
source; numpy encodes the Redis keys (entity key serialization v3 + project), the ``_ts:<view>`` protobuf
Timestamp and every feature's ValueProto bytes; pipelined HSETs write them in batches, never over a newer
``_ts`` already in Redis (Feast's dedup rule); the interval is recorded in the Feast registry as Feast does.
Views this engine cannot reproduce byte for byte get a reason from :func:`unsupported_reason` and are left to
Feast's own engine.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain, compress, repeat
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlplatform.contracts.redis_layout import feature_field, timestamp_field, timestamp_nanos
from mlplatform.errors import DataNotFoundError, InvalidInputError
from mlplatform.features.redis_routing import (
    Rerouted,
    cluster_errors,
    is_cluster,
    node_groups,
    pool_address,
    raise_error_replies,
    refresh_slots,
    round_trips,
)

# feast.types.Value_pb2.ValueType numbers (used inside serialized entity keys)
VT_STRING, VT_INT32, VT_INT64, VT_DOUBLE, VT_FLOAT, VT_BOOL = 2, 3, 4, 5, 6, 7
# ValueProto field tags: (field number << 3) | wire type
TAG_STRING, TAG_INT32, TAG_INT64, TAG_DOUBLE, TAG_FLOAT, TAG_BOOL = 0x12, 0x18, 0x20, 0x29, 0x35, 0x38
# google.protobuf.Timestamp tags: seconds (1, varint), nanos (2, varint)
TAG_TS_SECONDS, TAG_TS_NANOS = 0x08, 0x10

INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}
TIMESTAMP_NS_TYPES = {"TIMESTAMP_NS", "TIMESTAMPTZ_NS", "TIMESTAMP_NS WITH TIME ZONE"}
TIMESTAMP_TYPES = {"TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_MS", "TIMESTAMP_S"} | TIMESTAMP_NS_TYPES
# Feature value type -> DuckDB column types whose values Feast converts exactly as we encode them
FEATURE_COLUMN_TYPES = {
    VT_INT64: INT_TYPES,
    VT_INT32: {"TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT"},
    VT_DOUBLE: {"DOUBLE"},
    VT_FLOAT: {"FLOAT"},
    VT_STRING: {"VARCHAR"},
    VT_BOOL: {"BOOLEAN"},
}
JOIN_KEY_COLUMN_TYPES = {VT_INT64: INT_TYPES, VT_INT32: FEATURE_COLUMN_TYPES[VT_INT32], VT_STRING: {"VARCHAR"}}
DEFAULT_BATCH = 10_000


@dataclass(frozen=True)
class FastViewResult:
    """One view's fast run: entity rows selected, keys written, keys skipped because Redis held a newer row."""

    rows: int
    written: int
    skipped_newer: int


# ---------------------------------------------------------------------------------------------------------
# Encoding: every function returns one bytes object per row, byte-identical to Feast's serialization.


def _varint(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of int64 values (negatives as 10-byte two's complement): byte matrix and lengths."""
    u = values.astype(np.int64, copy=False).view(np.uint64)
    groups = np.empty((len(u), 10), np.uint8)
    lens = np.ones(len(u), np.int64)
    for i in range(10):
        shifted = u >> np.uint64(7 * i)
        groups[:, i] = (shifted & np.uint64(0x7F)).astype(np.uint8)
        if i:
            lens[shifted != 0] = i + 1
    groups |= ((np.arange(10) < (lens[:, None] - 1)) * 0x80).astype(np.uint8)
    return groups, lens


def _join_pieces(
    pieces: Sequence[tuple[np.ndarray, np.ndarray]], resp_prefix: bytes | None = None
) -> list[bytes]:
    """Concatenate per-row byte pieces (the first ``length`` bytes of each matrix row) into one bytes per row.

    With ``resp_prefix`` each row comes out as a RESP bulk string after that prefix
    (``prefix $<len>\\r\\n<row>\\r\\n``),
    ready to go into a packed Redis command.
    """
    n = len(pieces[0][0])
    if resp_prefix is not None:
        total = np.sum([lens for _, lens in pieces], axis=0)
        if total.max(initial=0) >= 1000:
            raise ValueError("RESP framing supports values under 1000 bytes")
        digits = np.stack([(total // 100) % 10, (total // 10) % 10, total % 10], axis=1).astype(np.uint8) + ord("0")
        ndig = 1 + (total >= 10) + (total >= 100)
        shift = 3 - ndig  # left-align the significant digits
        aligned = np.take_along_axis(digits, (np.arange(3)[None, :] + shift[:, None]).clip(0, 2), axis=1)
        head = np.frombuffer(resp_prefix + b"$", np.uint8)[None, :].repeat(n, axis=0)
        crlf = np.frombuffer(b"\r\n", np.uint8)[None, :].repeat(n, axis=0)
        full = np.full(n, 2, np.int64)
        pieces = [(head, np.full(n, head.shape[1], np.int64)), (aligned, ndig), (crlf, full), *pieces, (crlf, full)]
    matrix = np.concatenate([m for m, _ in pieces], axis=1)
    mask = np.concatenate([np.arange(m.shape[1]) < lens[:, None] for m, lens in pieces], axis=1)
    buf = matrix[mask].tobytes()
    ends = np.cumsum(np.sum([lens for _, lens in pieces], axis=0))
    starts = np.concatenate([[0], ends[:-1]])
    return [buf[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def resp_arg(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _tag(tag: int, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A one-byte protobuf tag piece, present where ``present`` is true."""
    return np.full((len(present), 1), tag, np.uint8), present.astype(np.int64)


def _fixed(values: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Little-endian fixed-width piece of a numeric array."""
    raw = np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"))).view(np.uint8).reshape(len(values), -1)
    return raw, present.astype(np.int64) * raw.shape[1]


def _valid(col: pa.ChunkedArray) -> np.ndarray:
    """Boolean mask of non-null values."""
    return col.is_valid().to_numpy(zero_copy_only=False)


def encode_int(col: pa.ChunkedArray, tag: int = TAG_INT64, resp_prefix: bytes | None = None) -> list[bytes]:
    """ValueProto int64_val (or int32_val with ``tag=TAG_INT32``) bytes; null -> b'' (an empty ValueProto)."""
    present = _valid(col)
    values = pc.fill_null(col, 0).to_numpy().astype(np.int64)
    groups, lens = _varint(values)
    return _join_pieces([_tag(tag, present), (groups, lens * present)], resp_prefix)


def encode_double(col: pa.ChunkedArray, resp_prefix: bytes | None = None) -> list[bytes]:
    """ValueProto double_val bytes; null and NaN -> b'' (Feast treats NaN as missing)."""
    values = pc.fill_null(col, 0.0).to_numpy().astype(np.float64)
    present = _valid(col) & ~np.isnan(values)
    return _join_pieces([_tag(TAG_DOUBLE, present), _fixed(values, present)], resp_prefix)


def encode_float(col: pa.ChunkedArray, resp_prefix: bytes | None = None) -> list[bytes]:
    """ValueProto float_val bytes; null and NaN -> b''."""
    values = pc.fill_null(col, 0.0).to_numpy().astype(np.float32)
    present = _valid(col) & ~np.isnan(values)
    return _join_pieces([_tag(TAG_FLOAT, present), _fixed(values, present)], resp_prefix)


def encode_bool(col: pa.ChunkedArray, resp_prefix: bytes | None = None) -> list[bytes]:
    """ValueProto bool_val bytes; null -> b''."""
    out = {None: b"", True: b"\x38\x01", False: b"\x38\x00"}
    if resp_prefix is not None:
        out = {k: resp_prefix + resp_arg(v) for k, v in out.items()}
    return [out[v] for v in col.to_pylist()]


def _varint_bytes(n: int) -> bytes:
    """One non-negative protobuf varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_string(col: pa.ChunkedArray, resp_prefix: bytes | None = None) -> list[bytes]:
    """ValueProto string_val bytes (an empty string is kept, it is not missing); null -> b''."""
    cache: dict[str | None, bytes] = {None: b"" if resp_prefix is None else resp_prefix + resp_arg(b"")}
    out = []
    for v in col.to_pylist():
        b = cache.get(v)
        if b is None:
            raw = v.encode("utf-8")
            b = b"\x12" + _varint_bytes(len(raw)) + raw
            b = cache[v] = b if resp_prefix is None else resp_prefix + resp_arg(b)
        out.append(b)
    return out


ENCODERS: dict[int, Callable[..., list[bytes]]] = {
    VT_INT64: encode_int,
    VT_INT32: lambda col, resp_prefix=None: encode_int(col, TAG_INT32, resp_prefix),
    VT_DOUBLE: encode_double,
    VT_FLOAT: encode_float,
    VT_STRING: encode_string,
    VT_BOOL: encode_bool,
}


def split_timestamps(micros: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Epoch microseconds -> (seconds, nanos) as protobuf's Timestamp.FromDatetime stores them."""
    micros = micros.astype(np.int64)
    return micros // 1_000_000, (micros % 1_000_000) * 1000


def encode_timestamps(micros: np.ndarray, resp_prefix: bytes | None = None) -> list[bytes]:
    """Serialized google.protobuf.Timestamp of each epoch-microsecond value (zero fields omitted)."""
    seconds, nanos = split_timestamps(micros)
    sec_groups, sec_lens = _varint(seconds)
    ns_groups, ns_lens = _varint(nanos)
    has_s, has_n = seconds != 0, nanos != 0
    return _join_pieces([
        _tag(TAG_TS_SECONDS, has_s), (sec_groups, sec_lens * has_s),
        _tag(TAG_TS_NANOS, has_n), (ns_groups, ns_lens * has_n),
    ], resp_prefix)


def encode_entity_keys(
    columns: dict[str, pa.ChunkedArray], types: dict[str, int], project: str, resp: bool = False
) -> list[bytes]:
    """Redis keys: entity key serialization v3 (join keys sorted by name) followed by the project name.

    With ``resp`` each key comes out as a RESP bulk string.
    """
    names = sorted(columns)
    n = len(columns[names[0]])
    head = struct.pack("<I", len(names))
    for name in names:
        raw = name.encode("utf-8")
        head += struct.pack("<II", VT_STRING, len(raw)) + raw
    suffix = project.encode("utf-8")
    if any(types[name] == VT_STRING for name in names):
        values = [columns[name].to_pylist() for name in names]
        keys = []
        for row in zip(*values, strict=True):
            parts = [head]
            for name, v in zip(names, row, strict=True):
                if types[name] == VT_STRING:
                    raw = v.encode("utf-8")
                    parts.append(struct.pack("<II", VT_STRING, len(raw)) + raw)
                elif types[name] == VT_INT32:
                    parts.append(struct.pack("<IIi", VT_INT32, 4, v))
                else:
                    parts.append(struct.pack("<IIq", VT_INT64, 8, v))
            parts.append(suffix)
            key = b"".join(parts)
            keys.append(resp_arg(key) if resp else key)
        return keys
    blocks = [np.frombuffer(head, np.uint8)[None, :].repeat(n, axis=0)]
    for name in names:
        width, dtype = (4, "<i4") if types[name] == VT_INT32 else (8, "<i8")
        header = np.frombuffer(struct.pack("<II", types[name], width), np.uint8)
        blocks.append(header[None, :].repeat(n, axis=0))
        blocks.append(columns[name].to_numpy().astype(dtype).view(np.uint8).reshape(n, width))
    blocks.append(np.frombuffer(suffix, np.uint8)[None, :].repeat(n, axis=0))
    if resp:
        width = sum(b.shape[1] for b in blocks)
        blocks.insert(0, np.frombuffer(b"$%d\r\n" % width, np.uint8)[None, :].repeat(n, axis=0))
        blocks.append(np.frombuffer(b"\r\n", np.uint8)[None, :].repeat(n, axis=0))
    matrix = np.ascontiguousarray(np.concatenate(blocks, axis=1))
    buf, width = matrix.tobytes(), matrix.shape[1]
    return [buf[i : i + width] for i in range(0, n * width, width)]


# ---------------------------------------------------------------------------------------------------------
# Which views this engine takes, and the row selection.


def _value_type(dtype: Any) -> int:
    """Feast type -> ValueType number (0 if unknown)."""
    try:
        return int(dtype.to_value_type().value)
    except (AttributeError, ValueError):
        return 0


def _source_path(store: Any, source: Any) -> Path:
    """Absolute path of a FileSource (relative paths resolve against the repo, as Feast does)."""
    path = Path(source.path)
    return path if path.is_absolute() else Path(store.config.repo_path or ".") / path


def unsupported_reason(store: Any, view: Any) -> str | None:
    """Why the fast engine cannot materialize ``view`` byte-identically to Feast (None if it can)."""
    from feast import FeatureView, FileSource, StreamFeatureView
    from feast.data_format import ParquetFormat
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

    if isinstance(view, StreamFeatureView) or not isinstance(view, FeatureView):
        return "stream feature views are left to Feast"
    if getattr(view, "feature_transformation", None) or getattr(view, "aggregations", None):
        return "views with transformations or aggregations are left to Feast"
    if getattr(view, "filter", None) or getattr(view, "offline", False):
        return "views with a filter or offline writes are left to Feast"
    online = store.config.online_store
    if not isinstance(online, RedisOnlineStoreConfig) or online.redis_type not in (RedisType.redis,
                                                                                    RedisType.redis_cluster):
        return "only a single Redis or a Redis Cluster online store is supported (not Sentinel)"
    if store.config.entity_key_serialization_version != 3:
        return "only entity_key_serialization_version 3 is supported"
    if store.config.registry.enable_online_feature_view_versioning:
        return "online feature view versioning is left to Feast"
    source = view.batch_source
    parquet = isinstance(source.file_format, ParquetFormat) or (
        source.file_format is None and str(source.path).endswith(".parquet")
    )
    if type(source) is not FileSource or not parquet:  # noqa: E721 - subclasses (Lance, Iceberg) read differently
        return "only Parquet FileSources are supported"
    if "://" in source.path or _source_path(store, source).is_dir():
        return "only local Parquet files are supported"
    if source.field_mapping:
        return "sources with a field_mapping are left to Feast"
    if any(getattr(s, "precompute_online", False) and view.name in {p.name for p in s.feature_view_projections}
           for s in store.list_feature_services()):
        return "a feature service precomputes this view online"
    for f in view.features:
        if _value_type(f.dtype) not in ENCODERS:
            return f"feature {f.name} has type {f.dtype}, which the fast engine does not encode"
    for c in view.entity_columns:
        if _value_type(c.dtype) not in JOIN_KEY_COLUMN_TYPES:
            return f"join key {c.name} has type {c.dtype}, which the fast engine does not encode"
    return None


def _column_types(con: duckdb.DuckDBPyConnection, path: Path, view: Any) -> dict[str, str]:
    """DuckDB types of the Parquet columns; InvalidInputError unless they have the types the view declares."""
    rel = con.sql("SELECT * FROM read_parquet($path)", params={"path": str(path)})
    found = dict(zip(rel.columns, (str(t) for t in rel.types), strict=True))
    source = view.batch_source
    wanted = [(source.timestamp_field, TIMESTAMP_TYPES, "a timestamp")]
    if source.created_timestamp_column:
        wanted.append((source.created_timestamp_column, TIMESTAMP_TYPES, "a timestamp"))
    wanted += [(c.name, JOIN_KEY_COLUMN_TYPES[_value_type(c.dtype)], str(c.dtype)) for c in view.entity_columns]
    wanted += [(f.name, FEATURE_COLUMN_TYPES[_value_type(f.dtype)], str(f.dtype)) for f in view.features]
    for column, types, declared in wanted:
        if column not in found:
            raise InvalidInputError(f"{path.name}: column {column!r} of feature view {view.name!r} is missing; "
                                    "rebuild the features or fix the definition, then `mlplatform apply`.")
        if found[column] not in types:
            raise InvalidInputError(f"{path.name}: column {column!r} is {found[column]} but feature view "
                                    f"{view.name!r} declares {declared}; fix the pipeline or the definition "
                                    "(or set MLPLATFORM_MATERIALIZE_ENGINE=feast).")
    return found


@lru_cache(maxsize=1)
def _duckdb() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per process (opening one costs ~30 ms); callers take a cursor of their own."""
    return duckdb.connect()


def latest_rows(view: Any, path: Path, start: datetime, end: datetime, every: bool = False) -> pa.Table:
    """The latest row per entity with start <= event time <= end (ties: latest created time), Feast's rule; with
    ``every``, all rows of the interval in the order writing them one by one leaves that latest row in Redis
    (event time, then created time, ascending).

    Like Feast, the interval is tested on the event time cast to microseconds (DuckDB rounds nanoseconds) while
    ``__ts_us``, the time written to Redis, drops sub-microsecond digits (as pandas' ``to_pydatetime`` does).
    """
    source = view.batch_source
    keys = [c.name for c in view.entity_columns]
    q = '"{}"'.format
    ts = q(source.timestamp_field)
    order = f"{ts} DESC NULLS LAST"
    if source.created_timestamp_column:
        order += f", {q(source.created_timestamp_column)} DESC NULLS LAST"
    pick = (f"ORDER BY {order.replace(' DESC NULLS LAST', ' ASC NULLS FIRST')}" if every else
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(q(k) for k in keys)} ORDER BY {order}) = 1")
    naive = {"start": start.astimezone(UTC).replace(tzinfo=None), "end": end.astimezone(UTC).replace(tzinfo=None)}
    with _duckdb().cursor() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        ts_type = _column_types(con, path, view)[source.timestamp_field]
        micros = (f"((epoch_ns({ts}) - ((epoch_ns({ts}) % 1000) + 1000) % 1000) // 1000)"
                  if ts_type in TIMESTAMP_NS_TYPES else f"epoch_us({ts})")
        sql = f"""
            SELECT {", ".join(q(k) for k in keys)}, {micros} AS __ts_us, {", ".join(q(f.name) for f in view.features)}
            FROM read_parquet($path)
            WHERE CAST({ts} AS TIMESTAMP) >= $start AND CAST({ts} AS TIMESTAMP) <= $end
            {pick}
        """
        table = con.sql(sql, params={"path": str(path), **naive}).to_arrow_table()
    for k in keys:
        if table.column(k).null_count:
            raise InvalidInputError(f"{path.name}: join key {k!r} is null in {table.column(k).null_count} row(s) "
                                    f"in [{start.isoformat()}, {end.isoformat()}]; Feast cannot key them.")
    return table


def sample_entity_keys(store: Any, view: Any, end: datetime, size: int) -> list[bytes] | None:
    """The Redis keys of up to ``size`` entities picked at random among those with a row of ``view`` at or before
    ``end`` in its Parquet source: where Redis must hold the view's fields. None when this cannot be told (no local
    Parquet source, join keys this engine does not encode, another key serialization)."""
    source = view.batch_source
    types = {c.name: _value_type(c.dtype) for c in view.entity_columns}
    path_text = getattr(source, "path", None)
    if (not types or not path_text or "://" in str(path_text) or store.config.entity_key_serialization_version != 3
            or any(t not in JOIN_KEY_COLUMN_TYPES for t in types.values())):
        return None
    path = _source_path(store, source)
    q = '"{}"'.format
    keys = ", ".join(q(k) for k in types)
    not_null = " AND ".join(f"{q(k)} IS NOT NULL" for k in types)
    sql = (f"SELECT * FROM (SELECT DISTINCT {keys} FROM read_parquet($path) WHERE "
           f"CAST({q(source.timestamp_field)} AS TIMESTAMP) <= $end AND {not_null}) "
           f"USING SAMPLE reservoir({int(size)} ROWS)")
    try:
        with _duckdb().cursor() as con:
            con.execute("SET TimeZone = 'UTC'")
            table = con.sql(sql, params={"path": str(path), "end": end.astimezone(UTC).replace(tzinfo=None)}
                            ).to_arrow_table()
    except duckdb.Error:
        return None
    if not table.num_rows:
        return []
    return encode_entity_keys({k: table.column(k) for k in types}, types, store.project)


def count_entities(store: Any, view: Any, end: datetime) -> int:
    """How many entities have a row of ``view`` at or before ``end`` in its Parquet source (0 if unreadable): the
    Redis keys that hold the view once it is materialized up to ``end``."""
    source = view.batch_source
    keys = [c.name for c in view.entity_columns]
    if not keys or not getattr(source, "path", None) or "://" in str(source.path):
        return 0
    q = '"{}"'.format
    sql = (f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(q(k) for k in keys)} FROM read_parquet($path) "
           f"WHERE CAST({q(source.timestamp_field)} AS TIMESTAMP) <= $end)")
    try:
        with _duckdb().cursor() as con:
            con.execute("SET TimeZone = 'UTC'")
            params = {"path": str(_source_path(store, source)), "end": end.astimezone(UTC).replace(tzinfo=None)}
            return int(con.execute(sql, params).fetchone()[0])
    except duckdb.Error:
        return 0


# ---------------------------------------------------------------------------------------------------------
# Writing


def _round_trip(client: Any, packed: bytes, replies: int) -> list[Any]:
    """Send pre-packed pipelined commands on one pooled connection of a single Redis and read their ``replies``
    answers. A Redis error reply raises (redis-py's ResponseError); the connection is never reused half-read."""
    answers = round_trips([(client.connection_pool, packed, replies)])[0]
    raise_error_replies(answers, pool_address(client.connection_pool))
    return answers


def _take(items: list[Any], idx: range | list[int]) -> list[Any]:
    """``items`` at ``idx`` (the whole list when ``idx`` covers it: a single Redis's one group)."""
    return items if isinstance(idx, range) and len(idx) == len(items) else [items[j] for j in idx]


def _raw_key(arg: bytes) -> bytes:
    """The key inside a RESP bulk string ``$<len>\r\n<key>\r\n``."""
    return arg[arg.index(b"\r\n") + 2 : -2]


REROUTES = 3  # times a batch is sent again after a cluster master said MOVED/ASK (a resharding under way)


def write_rows(
    client: Any,
    key_args: list[bytes],
    ts_args: list[bytes],
    ts_nanos: list[int],
    value_args: list[list[bytes]],
    ts_field: bytes,
    *,
    dedup: bool = True,
    ttl_seconds: int | None = None,
    batch: int = DEFAULT_BATCH,
) -> tuple[int, int]:
    """HSET each key's ``_ts`` and feature fields in pipelined batches; returns (written, skipped as older).

    Arguments come RESP-framed: ``key_args`` as bulk strings, ``ts_args`` and each of ``value_args`` as a field
    name and its value. With ``dedup`` a key whose stored ``_ts`` is at or after the row's time is left alone
    (Feast's rule); ``ttl_seconds`` adds an EXPIRE after each HSET, as Feast does with ``key_ttl_seconds``.

    On a Redis Cluster (``redis.cluster.RedisCluster``) each batch is split by the master holding each key's hash
    slot: one pre-packed pipeline per master, all sent before any reply is read. A batch a master redirects
    (MOVED/ASK: the slots moved) is routed again with a fresh slot map and sent again: HSET is idempotent.
    """
    written = skipped = 0
    hset = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (1 + len(value_args)))
    ts_field_arg = resp_arg(ts_field)
    expire = b"*3\r\n$6\r\nEXPIRE\r\n" if ttl_seconds else b""
    ttl_arg = resp_arg(str(ttl_seconds).encode()) if ttl_seconds else b""
    cluster = is_cluster(client)
    for i in range(0, len(key_args), batch):
        keys = key_args[i : i + batch]
        rows = list(zip(repeat(hset, len(keys)), keys, ts_args[i : i + batch],
                        *(col[i : i + batch] for col in value_args), strict=True))
        if ttl_seconds:
            rows = [row + (expire, key, ttl_arg) for row, key in zip(rows, keys, strict=True)]
        raw_keys = [_raw_key(k) for k in keys] if cluster else keys
        for attempt in range(REROUTES + 1):
            try:
                todo = _write_batch(client, raw_keys, keys, rows, ts_nanos[i : i + batch], ts_field_arg,
                                    dedup, 2 if ttl_seconds else 1)
                break
            except Rerouted:  # the slots moved: a fresh slot map, after a pause growing from 50 ms
                if attempt == REROUTES:
                    from mlplatform.stores import RedisUnavailable

                    raise RedisUnavailable(
                        f"the online store (a Redis Cluster) kept redirecting the materializer's writes after "
                        f"{REROUTES} fresh slot maps (a resharding or failover under way); run it again once done"
                    ) from None
                time.sleep(0.05 * 2**attempt)
                refresh_slots(client)
        written += todo
        skipped += len(keys) - todo
    return written, skipped


def _write_batch(client: Any, raw_keys: list[bytes], keys: list[bytes], rows: list[tuple[bytes, ...]],
                 ts_nanos: list[int], ts_field_arg: bytes, dedup: bool, replies_per_row: int) -> int:
    """One batch of ``write_rows``, one pre-packed pipeline per master; returns the rows written."""
    hget = b"*3\r\n$4\r\nHGET\r\n"
    groups = node_groups(client, raw_keys)
    keep = [True] * len(keys)
    if dedup:
        packets = [(pool, b"".join(chain.from_iterable(zip(repeat(hget), _take(keys, idx), repeat(ts_field_arg)))),
                    len(idx)) for pool, idx in groups]
        answers = round_trips(packets)
        for (pool, idx), prevs in zip(groups, answers, strict=True):
            raise_error_replies(prevs, pool_address(pool))
            for j, prev in zip(idx, prevs, strict=True):
                if prev is not None and timestamp_nanos(prev) >= ts_nanos[j]:
                    keep[j] = False
    packets = []
    for pool, idx in groups:
        todo = sum(compress(repeat(1), _take(keep, idx)))
        if todo:
            packed = b"".join(chain.from_iterable(compress(_take(rows, idx), _take(keep, idx))))
            packets.append((pool, packed, todo * replies_per_row))
    for (pool, _, _), answers in zip(packets, round_trips(packets), strict=True):
        raise_error_replies(answers, pool_address(pool))
    return sum(keep)


def view_source_path(store: Any, view: Any) -> Path:
    """The Parquet file (or glob) behind a batch feature view."""
    return _source_path(store, view.batch_source)


def write_table(store: Any, view: Any, table: pa.Table, client: Any, *, dedup: bool = True,
                batch: int = DEFAULT_BATCH) -> tuple[int, int]:
    """Write a table of ``view``'s rows (join keys, ``__ts_us``, the view's features; as :func:`latest_rows` gives
    them) to Redis exactly as Feast's online store would, in the table's order; returns (written, skipped as
    older: only with ``dedup``)."""
    if not table.num_rows:
        return 0, 0
    types = {c.name: _value_type(c.dtype) for c in view.entity_columns}
    key_args = encode_entity_keys({k: table.column(k) for k in types}, types, store.project, resp=True)
    micros = table.column("__ts_us").to_numpy()
    seconds, nanos = split_timestamps(micros)
    ts_field = timestamp_field(view.name).encode()
    ts_args = encode_timestamps(micros, resp_prefix=resp_arg(ts_field))
    value_args = [
        ENCODERS[_value_type(f.dtype)](table.column(f.name), resp_prefix=resp_arg(feature_field(view.name, f.name)))
        for f in view.features
    ]
    return write_rows(client, key_args, ts_args, (seconds * 1_000_000_000 + nanos).tolist(), value_args, ts_field,
                      dedup=dedup, ttl_seconds=store.config.online_store.key_ttl_seconds, batch=batch)


def drop_view_rows(store: Any, view: Any, keys: pa.Table, client: Any) -> int:
    """Remove ``view``'s fields (its ``_ts`` and features) from the Redis hashes of the entities in ``keys`` (join
    key columns), as if the view had never been materialized for them; returns the fields removed."""
    if not keys.num_rows:
        return 0
    types = {c.name: _value_type(c.dtype) for c in view.entity_columns}
    names = [timestamp_field(view.name)] + [feature_field(view.name, f.name) for f in view.features]
    with cluster_errors(client), client.pipeline(transaction=False) as pipe:  # a cluster's: one per master
        for key in encode_entity_keys({k: keys.column(k) for k in types}, types, store.project):
            pipe.hdel(key, *names)
        return sum(pipe.execute())


def online_client(store: Any) -> Any:
    """A bounded redis-py client on the feature store's online Redis (see :func:`_client`)."""
    return _client(store.config.online_store)


def _client(online: Any) -> Any:
    """A bounded redis-py client for Feast's Redis connection string (same parsing as Feast's Redis store): its
    timeouts come from the string (feature_store.yaml sets them; else the ``redis_timeout_seconds`` default), no
    retries, and a paused or lost Redis raises ``RedisUnavailable`` (exit code 5) instead of hanging. With
    ``redis_type: redis_cluster`` a ``RedisCluster`` over the string's seed nodes (``bounded_redis_cluster``)."""
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisType

    from mlplatform.settings import RedisAddress, Settings
    from mlplatform.stores import bounded_redis, bounded_redis_cluster

    nodes, kwargs = RedisOnlineStore._parse_connection_string(online.connection_string)
    timeout = Settings.model_fields["redis_timeout_seconds"].default
    if online.redis_type == RedisType.redis_cluster:
        options = {k: v for k, v in kwargs.items() if k not in ("password", "db", "retry")}
        return bounded_redis_cluster(RedisAddress.parse(online.connection_string), timeout, **options)
    return bounded_redis(nodes[0]["host"], int(nodes[0].get("port", 6379)), timeout, **kwargs)


def materialize_view(
    store: Any, view: Any, start: datetime, end: datetime, batch: int = DEFAULT_BATCH,
    on_written: Callable[[], None] | None = None,
) -> FastViewResult:
    """Write the latest row per entity in [start, end] of ``view`` to Redis and record the interval in the registry.

    ``on_written`` runs once every row has landed, before the registry records the interval (``materialize`` writes
    the view's watermark there, so Redis's watermark is never behind the registry unless Redis lost data)."""
    reason = unsupported_reason(store, view)
    if reason:
        raise InvalidInputError(f"feature view {view.name!r}: {reason}; use the feast engine for it.")
    if start > end:
        raise InvalidInputError(f"start {start.isoformat()} is after end {end.isoformat()}.")
    path = _source_path(store, view.batch_source)
    if not path.exists() and not any(ch in str(path) for ch in "*?["):
        raise DataNotFoundError(f"{path} (source of {view.name!r}) does not exist: run `mlplatform features build`.")
    table = latest_rows(view, path, start, end)
    online = store.config.online_store
    client = _client(online)
    try:
        written, skipped = write_table(store, view, table, client, dedup=not online.skip_dedup, batch=batch)
    finally:
        client.close()
    if on_written is not None:
        on_written()
    store.registry.apply_materialization(view, store.project, start, end, commit=True)
    return FastViewResult(rows=table.num_rows, written=written, skipped_newer=skipped)
