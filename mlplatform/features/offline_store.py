"""A Feast offline store whose point-in-time joins are DuckDB ASOF JOINs over Parquet feature sources.

Feast's DuckDB (ibis) offline store joins every entity row with all of its entity's feature rows inside the TTL
and then keeps the latest (a range join); with hundreds of rows per entity that dominates training-set builds.
:class:`AsofDuckDBOfflineStore` answers the same question per feature view with one ASOF LEFT JOIN:

- entity keys equal, feature ``event_timestamp <= entity event_timestamp``, the latest such row;
- ties on ``event_timestamp`` are broken by the later ``created_timestamp`` (nulls lose), as Feast's dedup does:
  the ASOF inequality runs on (event time, created time) packed into one sortable HUGEINT, so the join itself
  picks the right row (a separate dedup pass cost more than the join, and DuckDB 2.0.1 mis-plans an ASOF JOIN
  over a ``row_number()``-filtered subquery);
- the matched row's values are null when it is older than ``entity ts - ttl`` (a ttl of 0/None = no limit);
- each view's join sorts a narrow copy of the entity rows (position, time, its own keys), not every entity column,
  and its result is put back in row order by position: the entity columns never pass through DuckDB;
- every entity-df column passes through, in the entity df's row order, with one output row per entity row;
- field mappings and ``full_feature_names`` are honoured, and on-demand feature views run on the result
  exactly as on Feast's own job (the job carries the same ODFVs and metadata).

Requests it cannot answer the same way (non-Parquet or remote sources, SQL entity dfs,
``filter_by_created_timestamp``, substrait ODFVs, ...) are handed to Feast's own DuckDB store, unchanged; the
reason is logged. Everything else (materialization, pulls, writes, monitoring) is Feast's DuckDB store.

Use it from ``feature_store.yaml``::

    offline_store:
      type: mlplatform.features.offline_store.AsofDuckDBOfflineStore
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb
import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
from feast.data_format import ParquetFormat
from feast.feature_view import FeatureView
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.duckdb import (
    DuckDBOfflineStore,
    DuckDBOfflineStoreConfig,
    _write_data_source,
)
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import (
    IbisRetrievalJob,
    _get_entity_df_event_timestamp_range,
    _to_utc,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from pydantic import StrictStr

from mlplatform.errors import DataNotFoundError, DefinitionError, InvalidInputError

logger = logging.getLogger(__name__)

STORE_TYPE = "mlplatform.features.offline_store.AsofDuckDBOfflineStore"
ROW = "__mlp_row"  # entity-row position: output order and the key that reassembles the per-view results
TS = "__mlp_ts"  # entity / feature event timestamp as TIMESTAMPTZ
KEY = "__mlp_key"  # (event time, created time) as one HUGEINT: see _sort_key


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Configuration of :class:`AsofDuckDBOfflineStore`: Feast's DuckDB offline store options, another type."""

    type: StrictStr = STORE_TYPE
    """Offline store type selector."""


@dataclass(frozen=True)
class ViewJoin:
    """One feature view's part of the retrieval: where its rows are and which columns come out."""

    name: str
    path: str
    columns: dict[str, str]  # column name after field mapping -> column name in the Parquet file
    join_keys: dict[str, str]  # feature-table column -> entity-df column
    timestamp_field: str
    created_timestamp_column: str | None
    features: list[tuple[str, str]]  # (feature column, output column)
    ttl: timedelta | None


def quote(name: str) -> str:
    """A DuckDB identifier literal for ``name``."""
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """A DuckDB string literal for ``value``."""
    return "'" + value.replace("'", "''") + "'"


def local_parquet_file(source: Any) -> str | None:
    """The local Parquet file a feature view reads, or None when the source is anything else."""
    if type(source) is not FileSource:  # subclasses (Iceberg, Lance, saved datasets, ...) are Feast's business
        return None
    parquet = isinstance(source.file_format, ParquetFormat)
    if not (parquet or (source.file_format is None and source.path.endswith(".parquet"))):
        return None
    path = source.path
    scheme = urlparse(path).scheme
    if scheme == "file":
        path = urlparse(path).path
    elif scheme and len(scheme) > 1:  # s3://, gs://, http://, ... (a one-letter scheme is a Windows drive)
        return None
    if any(c in path for c in "*?[{"):
        return None
    return path


def unsupported_reason(
    feature_views: list[FeatureView],
    entity_df: pd.DataFrame | str,
    odfvs: list[OnDemandFeatureView],
    filter_by_created_timestamp: bool,
) -> str | None:
    """Why this request is left to Feast's own DuckDB store, or None when the ASOF path answers it."""
    if not isinstance(entity_df, pd.DataFrame):
        return "the entity df is a SQL query"
    if entity_df.empty:
        return "the entity df is empty"
    if filter_by_created_timestamp:
        return "filter_by_created_timestamp=True (ASOF cannot also filter on created_timestamp)"
    if any(odfv.mode == "substrait" for odfv in odfvs):
        return "a substrait on-demand feature view runs inside Feast's ibis expression"
    if any(str(c).startswith("__mlp_") or c == "entity_row_id" for c in entity_df.columns):
        return "the entity df has a column name this store or Feast reserves"
    for view in feature_views:
        if view.batch_source is None:
            return f"feature view {view.name!r} has no batch source"
        path = local_parquet_file(view.batch_source)
        if path is None:
            kind = type(view.batch_source).__name__
            return f"feature view {view.name!r} reads {kind} {view.batch_source.path!r}, not a local Parquet file"
        if Path(path).is_dir():
            return f"feature view {view.name!r} reads a Parquet directory ({path})"
    return None


def view_joins(
    con: duckdb.DuckDBPyConnection, feature_views: list[FeatureView], feature_refs: list[str], full_feature_names: bool
) -> list[ViewJoin]:
    """Each feature view's source, keys, timestamps and output columns, resolved as Feast's ibis store does."""
    joins = []
    for view in feature_views:
        source = view.batch_source
        path = local_parquet_file(source)
        assert path is not None  # checked by unsupported_reason
        if not Path(path).is_file():
            raise DataNotFoundError(
                f"Feature view {view.name!r} reads {path}, which does not exist. Build the feature tables first "
                "(`mlplatform features build`) or fix the source path."
            )
        described = con.sql(f"DESCRIBE SELECT * FROM read_parquet({sql_string(path)})").fetchall()
        file_columns = [row[0] for row in described]
        columns = {c: c for c in file_columns}
        for old, new in source.field_mapping.items():  # Feast renames a mapped column only if the file has it
            if old in columns:
                del columns[old]
                columns[new] = old
        prefix = view.projection.name_to_use()
        names = [ref.split(":")[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
        alias = view.projection.name_alias or view.name
        outputs = [f"{alias}__{n}" if full_feature_names else n for n in names]
        join_keys = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
        created = source.created_timestamp_column or None
        needed = [*join_keys, source.timestamp_field, *([created] if created else []), *names]
        missing = [c for c in needed if c not in columns]
        if missing:
            raise DefinitionError(
                f"Feature view {view.name!r}: column(s) {missing} are not in {path} (columns: {list(columns)}). "
                "Rebuild the feature table or fix the view's schema / field mapping."
            )
        ttl = view.ttl if view.ttl else None  # Feast: a ttl of 0 means no limit
        joins.append(
            ViewJoin(
                view.name,
                path,
                columns,
                dict(join_keys),
                source.timestamp_field,
                created,
                list(zip(names, outputs, strict=True)),
                ttl,
            )
        )
    return joins


def interval_sql(delta: timedelta) -> str:
    """A DuckDB interval literal of exactly ``delta``."""
    return f"to_microseconds({delta // timedelta(microseconds=1)})"


# Ties on event time go to the latest created_timestamp (unknown = oldest), as Feast's dedup orders them. One ASOF
# inequality does both: it compares (event time, created time) packed into one HUGEINT, event time in the high
# 64 bits, created time shifted to be non-negative in the low 64; an entity row's key has all low bits set.
_HIGH = "18446744073709551616::HUGEINT"  # 2**64
_SHIFT = "9223372036854775808::HUGEINT"  # 2**63


def _sort_key(ts: str, created: str | None) -> str:
    """The HUGEINT ordering (event time, created time) of a row; ``created=None`` is an entity row's (any)."""
    if created is None:
        low = "18446744073709551615::HUGEINT"  # 2**64 - 1
    else:
        low = f"coalesce(epoch_us({created})::HUGEINT + {_SHIFT}, 0)"
    return f"(epoch_us({ts})::HUGEINT * {_HIGH} + {low})"


def source_sql(join: ViewJoin, lo: datetime, hi: datetime, after: datetime | None = None) -> str:
    """One view's candidate rows from its Parquet file: keys ``k<i>``, event time, sort key, features ``f<i>``.

    Rows later than ``hi`` (the latest entity time) can never match, nor rows older than ``lo - ttl`` (``lo``: the
    earliest entity time); ``after`` keeps only rows later than it (incremental chunks read each row once)."""
    col = lambda name: quote(join.columns[name])  # noqa: E731 - a column of the file, by its mapped name
    src_ts = f"CAST({col(join.timestamp_field)} AS TIMESTAMPTZ)"
    where = [f"{src_ts} <= TIMESTAMPTZ {sql_string(hi.isoformat())}"]
    if join.ttl is not None:
        where.append(f"{src_ts} >= TIMESTAMPTZ {sql_string(lo.isoformat())} - {interval_sql(join.ttl)}")
    if after is not None:
        where.append(f"{src_ts} > TIMESTAMPTZ {sql_string(after.isoformat())}")
    select = [f"{col(k)} AS k{i}" for i, k in enumerate(join.join_keys)] + [f"{src_ts} AS {TS}"]
    if join.created_timestamp_column:
        select.append(f"{_sort_key(src_ts, f'CAST({col(join.created_timestamp_column)} AS TIMESTAMPTZ)')} AS {KEY}")
    select += [f"{col(n)} AS f{i}" for i, n in enumerate(view_features(join))]
    return f"SELECT {', '.join(select)} FROM read_parquet({sql_string(join.path)}) WHERE {' AND '.join(where)}"


def view_features(join: ViewJoin) -> list[str]:
    """The distinct feature columns a view reads, in request order."""
    return list(dict.fromkeys(n for n, _ in join.features))


def entity_keys_sql(entity: str, keys: tuple[str, ...]) -> str:
    """The narrow side of a view's join: row position, time, sort key and the join key columns ``keys``."""
    return f"SELECT {ROW}, {TS}, {_sort_key(TS, None)} AS {KEY}{''.join(', ' + quote(k) for k in keys)} FROM {entity}"


def key_tables(con: duckdb.DuckDBPyConnection, entity: str, joins: list[ViewJoin]) -> list[str]:
    """Per view, a temporary table holding :func:`entity_keys_sql` for its join keys (views keyed alike share one):
    each ASOF join sorts only what it needs, not every entity column."""
    names: dict[tuple[str, ...], str] = {}
    for join in joins:
        keys = tuple(join.join_keys.values())
        if keys not in names:
            names[keys] = f"__mlp_keys_{len(names)}"
            con.execute(f"CREATE OR REPLACE TEMP TABLE {names[keys]} AS {entity_keys_sql(entity, keys)}")
    return [names[tuple(join.join_keys.values())] for join in joins]


def view_sql(join: ViewJoin, source: str, entity: str, one_per_key: bool = False) -> str:
    """One view's output columns for each row of ``entity`` (:func:`key_tables`), with its ``__mlp_row``,
    unordered; ``source`` yields the view's rows as :func:`source_sql` does. The latest row at or before the entity
    time is picked by one ASOF LEFT JOIN (each entity row exactly once), its values nulled when older than the TTL.

    ``one_per_key``: ``source`` holds at most one row per key (:func:`one_row_per_key`), so that row is the answer
    when it is at or before the entity time: a hash LEFT JOIN gives the same rows without sorting the entity side."""
    on = [f"e.{quote(c)} = s.k{n}" for n, c in enumerate(join.join_keys.values())]
    if one_per_key:  # (event, created) <= (entity time, any) is event time <= entity time
        on.append(f"s.{TS} <= e.{TS}")
    else:
        on.append(f"e.{KEY} >= s.{KEY}" if join.created_timestamp_column else f"e.{TS} >= s.{TS}")
    fresh = "TRUE" if join.ttl is None else f"s.{TS} + {interval_sql(join.ttl)} >= e.{TS}"
    features = view_features(join)
    outputs = [f"CASE WHEN {fresh} THEN s.f{features.index(n)} END AS {quote(out)}" for n, out in join.features]
    kind = "LEFT JOIN" if one_per_key else "ASOF LEFT JOIN"
    return (f"SELECT e.{ROW}{''.join(', ' + o for o in outputs)} FROM {entity} e "
            f"{kind} ({source}) s ON {' AND '.join(on)}")


def one_row_per_key(con: duckdb.DuckDBPyConnection, join: ViewJoin, source: str, rows_at_most: int,
                    entity_rows: int) -> bool:
    """Whether ``source`` holds at most one row per key (none with a null key), checked only when it is small
    (``rows_at_most``, a bound on its rows, <= ``entity_rows``): then the check costs less than an ASOF join saves.
    Static facts (profiles) are such views: one row per entity, joined to every entity row."""
    if rows_at_most > entity_rows:
        return False
    keys = [f"k{i}" for i in range(len(join.join_keys))]
    present = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    distinct = f"SELECT DISTINCT {', '.join(keys)} FROM ({source}) WHERE {present}"
    [(rows, unique)] = con.sql(f"SELECT (SELECT count(*) FROM ({source})), (SELECT count(*) FROM ({distinct}))"
                               ).fetchall()
    return rows == unique


def parquet_rows(con: duckdb.DuckDBPyConnection, path: str) -> int:
    """Rows in a Parquet file (from its footer)."""
    return int(con.sql(f"SELECT count(*) FROM read_parquet({sql_string(path)})").fetchall()[0][0])


def in_row_order(part: pa.Table, rows: int) -> pa.Table:
    """A view's result (first column ``__mlp_row``, a permutation of 0..rows-1) without that column, in row order."""
    if part.num_rows != rows:  # an ASOF LEFT JOIN keeps each left row exactly once
        raise RuntimeError(f"ASOF retrieval returned {part.num_rows} rows for {rows} entity rows")
    position = np.empty(rows, dtype=np.int64)
    position[part.column(0).to_numpy()] = np.arange(rows, dtype=np.int64)
    return part.drop_columns([part.column_names[0]]).take(position)


def with_row_and_ts(table: pa.Table, event_timestamp_col: str) -> pa.Table:
    """``table`` plus its row position and its event time as TIMESTAMPTZ (naive = UTC, as in Feast's session)."""
    ts = table[event_timestamp_col]
    if not pa.types.is_timestamp(ts.type):
        raise InvalidInputError(f"entity_df column {event_timestamp_col!r} must hold timestamps, got {ts.type}.")
    ts = ts.cast(pa.timestamp("us", tz="UTC"))
    return table.append_column(ROW, pa.array(np.arange(len(table), dtype=np.int64))).append_column(TS, ts)


def entity_arrow(entity_df: pd.DataFrame, event_timestamp_col: str) -> pa.Table:
    """The entity df as Feast's ibis store hands it to DuckDB (ibis' types), plus row position and TIMESTAMPTZ."""
    memtable = ibis.memtable(entity_df)
    return with_row_and_ts(memtable.op().data.to_pyarrow(memtable.schema()), event_timestamp_col)


def run_point_in_time(entity_df: pd.DataFrame, event_timestamp_col: str, joins: list[ViewJoin]) -> pa.Table:
    """Execute the ASOF retrieval in a fresh DuckDB connection; one output row per entity row, in order.

    Each view joins a narrow copy of the entity rows (position, time, keys) and its result is put back in row
    order; the entity columns never pass through DuckDB, so they keep exactly the types Feast gives them."""
    entity = entity_arrow(entity_df, event_timestamp_col)
    result = entity.drop_columns([ROW, TS])
    con = duckdb.connect()
    try:
        con.sql("SET TimeZone = 'UTC'")
        con.register("entity", entity)
        [(lo, hi)] = con.sql(f"SELECT min({TS}), max({TS}) FROM entity").fetchall()
        if lo is None:  # every entity timestamp is null: nothing can match, keep the shape
            lo = hi = datetime(1970, 1, 1)
        for join, keys in zip(joins, key_tables(con, "entity", joins), strict=True):
            source = source_sql(join, lo, hi)
            single = one_row_per_key(con, join, source, parquet_rows(con, join.path), entity.num_rows)
            part = in_row_order(con.sql(view_sql(join, source, keys, single)).to_arrow_table(), entity.num_rows)
            for name, column in zip(part.column_names, part.columns, strict=True):
                result = result.append_column(name, column)
    finally:
        con.close()
    return result


class AsofRetrievalJob(RetrievalJob):
    """A lazy ASOF point-in-time retrieval; Feast applies on-demand feature views on top, as for its own jobs."""

    def __init__(
        self,
        query: Callable[[], pa.Table],
        on_demand_feature_views: list[OnDemandFeatureView],
        full_feature_names: bool,
        metadata: RetrievalMetadata,
        config: RepoConfig,
        joins: list[ViewJoin] | None = None,
    ) -> None:
        """Wrap ``query`` (run on each execution) with what Feast needs to finish the job; ``joins``: the views
        ``query`` reads, as resolved (batch scoring joins them chunk by chunk: ``mlplatform.features.incremental``)."""
        super().__init__()
        self._query = query
        self._on_demand_feature_views = on_demand_feature_views
        self._full_feature_names = full_feature_names
        self._metadata = metadata
        self._config = config
        self.joins: list[ViewJoin] = list(joins or [])

    def on_table(self, table: pa.Table) -> AsofRetrievalJob:
        """The same job over an already joined ``table`` (entity columns + this job's view columns): its
        ``to_arrow()`` / ``to_df()`` apply the on-demand feature views to it exactly as this job's would."""
        return AsofRetrievalJob(lambda: table, self._on_demand_feature_views, self._full_feature_names,
                                self._metadata, self._config, self.joins)

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        """The joined features, before on-demand transformations."""
        return self._query()

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        """The joined features as pandas, before on-demand transformations."""
        return self._query().to_pandas()

    @property
    def full_feature_names(self) -> bool:
        """Whether feature columns are named ``view__feature``."""
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        """The on-demand views Feast computes on the joined table."""
        return self._on_demand_feature_views

    @property
    def metadata(self) -> RetrievalMetadata:
        """Feature refs, entity columns and the entity timestamp range."""
        return self._metadata

    def _ibis_job(self) -> IbisRetrievalJob:
        """The same result as one of Feast's ibis jobs, for persisting and exporting."""
        store = self._config.offline_store
        return IbisRetrievalJob(
            ibis.memtable(self._query()),
            [],
            self._full_feature_names,
            self._metadata,
            _write_data_source,
            store.staging_location,
            store.staging_location_endpoint_override,
            str(self._config.repo_path),
        )

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool = False, timeout: int | None = None) -> None:
        """Write the joined features (without on-demand features, as Feast's ibis job does) to ``storage``."""
        self._ibis_job().persist(storage, allow_overwrite=allow_overwrite, timeout=timeout)

    def supports_remote_storage_export(self) -> bool:
        """True when a staging location is configured."""
        return self._config.offline_store.staging_location is not None

    def to_remote_storage(self) -> list[str]:
        """Export to the staging location as Feast's ibis job does."""
        return self._ibis_job().to_remote_storage()


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB offline store with ASOF-JOIN point-in-time retrieval for local Parquet sources."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        """Point-in-time features for each entity row (ASOF JOIN path, or Feast's own when unsupported)."""
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)

        def feasts_own(reason: str, entity_df=entity_df) -> RetrievalJob:
            logger.info("historical retrieval through Feast's DuckDB store: %s", reason)
            return DuckDBOfflineStore.get_historical_features(
                config=config,
                feature_views=feature_views,
                feature_refs=feature_refs,
                entity_df=entity_df,
                registry=registry,
                project=project,
                full_feature_names=full_feature_names,
                filter_by_created_timestamp=filter_by_created_timestamp,
            )

        reason = unsupported_reason(feature_views, entity_df, odfvs, filter_by_created_timestamp)
        if reason is not None:
            return feasts_own(reason)
        assert isinstance(entity_df, pd.DataFrame)
        event_timestamp_col = offline_utils.infer_event_timestamp_from_entity_df(dict(entity_df.dtypes.items()))
        entity_df = _to_utc(entity_df.copy(deep=False), event_timestamp_col)  # strings -> UTC, as Feast does
        timestamp_range = _get_entity_df_event_timestamp_range(entity_df, event_timestamp_col)
        with duckdb.connect() as con:
            joins = view_joins(con, feature_views, feature_refs, full_feature_names)
        for join in joins:
            absent = [c for c in join.join_keys.values() if c not in entity_df.columns]
            if absent:
                raise InvalidInputError(
                    f"entity_df lacks join key column(s) {absent} needed by feature view {join.name!r}."
                )
        clash = {out for j in joins for _, out in j.features} & set(entity_df.columns)
        if clash:
            return feasts_own(f"entity df has feature columns {sorted(clash)}", entity_df)
        return AsofRetrievalJob(
            query=lambda: run_point_in_time(entity_df, event_timestamp_col, joins),
            on_demand_feature_views=odfvs,
            full_feature_names=full_feature_names,
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=list(set(entity_df.columns) - {event_timestamp_col}),
                min_event_timestamp=timestamp_range[0],
                max_event_timestamp=timestamp_range[1],
            ),
            config=config,
            joins=joins,
        )
