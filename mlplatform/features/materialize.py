"""Materialize feature views from the offline store (DuckDB over Parquet) into Redis, with progress and rates."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from mlplatform.errors import DataNotFoundError
from mlplatform.features.fast_materialize import materialize_view, unsupported_reason
from mlplatform.settings import Settings
from mlplatform.stores import open_feature_store, require_redis

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ViewMaterialization:
    """One feature view's run: the interval and how many entity rows were written to Redis, how fast."""

    view: str
    start: datetime
    end: datetime
    rows: int
    seconds: float
    engine: str = "feast"  # "fast" or "feast" (the fast engine leaves views it cannot encode to Feast)
    note: str = ""  # why a view fell back to Feast, or how many keys Redis already held newer

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _rows_in_interval(view, start: datetime, end: datetime) -> int:
    """Entity keys Feast writes for [start, end]: one (the latest) per entity with a row in the interval."""
    path = getattr(view.batch_source, "path", None)
    keys = [c.name for c in view.entity_columns]
    if not path or not keys:
        return 0
    sql = (
        f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(keys)} FROM read_parquet(?) "
        f"WHERE {view.batch_source.timestamp_field} >= ? AND {view.batch_source.timestamp_field} <= ?)"
    )
    with duckdb.connect() as con:
        return int(con.execute(sql, [path, start, end]).fetchone()[0])


def default_end(settings: Settings) -> datetime:
    """Where an incremental run stops by default: the features' build watermark (what the feature tables are
    complete up to), else now. Stopping at "now" would mark the interval done before late-arriving raw data (a
    period generated or built afterwards with earlier timestamps) is built, and the next run would skip it."""
    from mlplatform.features.pipelines import read_build_state

    until = read_build_state(settings.layout.features_dir).get("until")
    return datetime.fromisoformat(until) if until else datetime.now(UTC)


def materialize(
    settings: Settings,
    end: datetime | None = None,
    full: bool = False,
    views: list[str] | None = None,
    on_view: Callable[[str, int, int], None] | None = None,
) -> list[ViewMaterialization]:
    """Load feature rows up to ``end`` into Redis.

    ``end`` defaults to the features' build watermark (see ``default_end``).
    Incremental by default: each view continues from its last materialized end; a view never materialized
    starts from the beginning of its data (Feast alone would start at now - TTL and miss older entities).
    ``full`` reloads everything from the beginning. ``settings.materialize_engine`` picks the engine: ``fast``
    (DuckDB + pipelined HSET, Feast's exact Redis layout) or ``feast``; the fast engine leaves to Feast any view
    it cannot encode byte for byte (stream views among them).
    """
    require_redis(settings)
    store = open_feature_store(settings)
    end = (end or default_end(settings)).astimezone(UTC)
    all_views = store.list_feature_views() + store.list_stream_feature_views()
    chosen = [v for v in all_views if v.online and (views is None or v.name in views)]
    if views:
        unknown = sorted(set(views) - {v.name for v in chosen})
        if unknown:
            raise DataNotFoundError(f"unknown feature view(s): {', '.join(unknown)}")
    if not chosen:
        raise DataNotFoundError("no feature views in the registry: run `mlplatform apply` first.")
    results = []
    for i, view in enumerate(chosen):
        if on_view:
            on_view(view.name, i, len(chosen))
        start = EPOCH if full or view.most_recent_end_time is None else view.most_recent_end_time.astimezone(UTC)
        if start >= end:
            results.append(ViewMaterialization(view.name, start, end, 0, 0.0))
            continue
        reason = unsupported_reason(store, view) if settings.materialize_engine == "fast" else "engine: feast"
        if reason is None:
            t0 = time.perf_counter()
            fast = materialize_view(store, view, start, end)
            note = f"{fast.skipped_newer:,} keys already held newer rows" if fast.skipped_newer else ""
            seconds = time.perf_counter() - t0
            results.append(ViewMaterialization(view.name, start, end, fast.rows, seconds, "fast", note))
            continue
        rows = _rows_in_interval(view, start, end)
        t0 = time.perf_counter()
        store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        results.append(ViewMaterialization(view.name, start, end, rows, time.perf_counter() - t0, "feast", reason))
    from mlplatform.audit import record

    record(settings, "materialize", target=f"redis {settings.redis_addr.split(',')[0]}", details={
        "mode": "full" if full else "incremental", "end": end, "rows": sum(r.rows for r in results),
        "views": {r.view: {"start": r.start, "end": r.end, "rows": r.rows, "engine": r.engine} for r in results}})
    return results
