"""Materialize feature views from the offline store (DuckDB over Parquet) into Redis, with progress and rates.

The online store is reconciled, not trusted. Each view's watermark (``redis_layout.Watermark``) is kept in Redis
beside its data, written once the view's rows have all landed. An incremental run compares it with the registry's
intervals before it continues a view: when Redis lost the view (no watermark: a FLUSHALL, a restart without
persistence, a killed ``--full`` on a wiped Redis), holds it only up to an older time than the registry says (a
restored snapshot), or lacks it on sampled entity keys (``PROBE_KEYS``, the cheap probe), the view is reloaded from
the beginning of its data, and the run says so. Writes never replace a newer row (Feast's rule), so a repaired
Redis equals a clean full run byte for byte.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from mlplatform.contracts.redis_layout import (
    MATERIALIZED_KEY,
    Watermark,
    materialized_field,
    project_watermarks,
    timestamp_field,
)
from mlplatform.errors import DataNotFoundError
from mlplatform.features.activity import ACTIVITY_VIEW
from mlplatform.features.event_logs import backfill_event_logs
from mlplatform.features.fast_materialize import (
    count_entities,
    materialize_view,
    sample_entity_keys,
    unsupported_reason,
)
from mlplatform.features.redis_routing import cluster_errors
from mlplatform.redact import redact_redis_address
from mlplatform.settings import Settings
from mlplatform.stores import open_feature_store, redis_client, redis_errors, require_redis

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROBE_KEYS = 256  # entity keys per view checked for the view's row in Redis on each incremental run


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
    repair: str = ""  # why Redis was not trusted and the view reloaded from the beginning ("" if it was trusted)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _rows_in_interval(settings: Settings, view, start: datetime, end: datetime) -> int:
    """Entity keys Feast writes for [start, end]: one (the latest) per entity with a row in the interval.

    Counted with DuckDB over a local Parquet source; with Spark (``spark_rows_in_interval``) over a SparkSource
    elsewhere (a cluster's tables on HDFS or S3)."""
    path = getattr(view.batch_source, "path", None)
    keys = [c.name for c in view.entity_columns]
    if not path or not keys:
        return 0
    if settings.offline_engine == "spark" and "://" in str(path):
        return spark_rows_in_interval(settings, view, start, end)
    sql = (
        f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(keys)} FROM read_parquet(?) "
        f"WHERE {view.batch_source.timestamp_field} >= ? AND {view.batch_source.timestamp_field} <= ?)"
    )
    with duckdb.connect() as con:
        return int(con.execute(sql, [path, start, end]).fetchone()[0])


def spark_rows_in_interval(settings: Settings, view, start: datetime, end: datetime) -> int:
    """``_rows_in_interval`` through Spark: distinct entity keys of the view's SparkSource in [start, end]."""
    from mlplatform.spark_session import spark_session

    source = view.batch_source
    keys = ", ".join(f"`{c.name}`" for c in view.entity_columns)
    frame = spark_session(settings).read.format(source.file_format or "parquet").load(source.path)
    ts = f"`{source.timestamp_field}`"
    naive = [t.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ") for t in (start, end)]
    return int(frame.where(f"{ts} >= TIMESTAMP '{naive[0]}' AND {ts} <= TIMESTAMP '{naive[1]}'")
               .selectExpr(keys).distinct().count())


def feast_engine_reason(settings: Settings) -> str | None:
    """Why every view goes through Feast's engine whatever ``materialize_engine`` says (None: the choice stands).

    With the Spark offline store, views materialize through Feast's Spark compute engine: the fast engine reads
    local Parquet files with DuckDB on one machine, while the Spark store's tables are wherever Spark reads them (a
    cluster's shared storage) and its executors write Redis in parallel (bench/spark.py measures both)."""
    if settings.offline_engine == "spark":
        return "the Spark offline store materializes through Feast's Spark compute engine"
    return None


def first_event_time(view) -> datetime | None:
    """The earliest event time in the view's offline source: where a first (or ``--full``) run really starts.

    None when the view has no file source, no rows or an unreadable one (the run then starts at the epoch and
    reports what it finds)."""
    path = getattr(view.batch_source, "path", None)
    if not path:
        return None
    sql = f"SELECT epoch_us(min({view.batch_source.timestamp_field})) FROM read_parquet(?)"
    try:
        with duckdb.connect() as con:
            value = con.execute(sql, [path]).fetchone()[0]
    except duckdb.Error:
        return None
    return None if value is None else EPOCH + timedelta(microseconds=int(value))


@contextlib.contextmanager
def _engine_for(settings: Settings, store: Any, view: Any):
    """Feast's configured engine for ``view`` (yields ""), except a stream feature view with the Spark offline
    store: Feast 0.67's Spark compute engine ships every view to its executors as a FeatureView proto
    (``feast.infra.common.serde.SerializedArtifacts``), which a StreamFeatureView's is not, so Feast's local engine
    materializes it, reading its rows through the Spark offline store (yields why)."""
    from feast import StreamFeatureView

    if settings.offline_engine != "spark" or not isinstance(view, StreamFeatureView):
        yield ""
        return
    from feast.infra.compute_engines.local.compute import LocalComputeEngine

    provider = store._get_provider()
    configured = provider._batch_engine
    provider._batch_engine = LocalComputeEngine(repo_config=store.config, offline_store=provider.offline_store,
                                                online_store=provider.online_store)
    try:
        yield ("a stream feature view: Feast's local engine over the Spark offline store (Feast 0.67's Spark engine "
               "cannot serialize stream views)")
    finally:
        provider._batch_engine = configured


def default_end(settings: Settings) -> datetime:
    """Where an incremental run stops by default: the features' build watermark (what the feature tables are
    complete up to), else now. Stopping at "now" would mark the interval done before late-arriving raw data (a
    period generated or built afterwards with earlier timestamps) is built, and the next run would skip it."""
    from mlplatform.features.pipelines import read_build_state

    until = read_build_state(settings.layout.features_dir).get("until")
    return datetime.fromisoformat(until) if until else datetime.now(UTC)


def redis_problem(store: Any, view: Any, mark: Watermark | None, present: bool, registry_end: datetime,
                  client: Any, probe: bool = True) -> str | None:
    """Why Redis cannot be trusted to hold ``view`` up to the registry's end (None if it can): no watermark, an
    unreadable one, one older than the registry's end, or (``probe``) sampled entity keys without the view's row."""
    if not present:
        return "no watermark"
    if mark is None:
        return "unreadable watermark"
    if mark.end < registry_end:
        return f"its watermark {_when(mark.end)} is older than the registry's end {_when(registry_end)}"
    if not probe:
        return None
    lost, sampled = probe_view(store, view, registry_end, client)
    return f"{lost} of {sampled} sampled keys lack its row" if lost else None


def probe_view(store: Any, view: Any, end: datetime, client: Any, size: int = PROBE_KEYS) -> tuple[int, int]:
    """(keys without the view's row, keys sampled) among up to ``size`` entities with a row at or before ``end``
    offline; (0, 0) when keys expire by design (``key_ttl_seconds``) or the keys cannot be derived."""
    if getattr(store.config.online_store, "key_ttl_seconds", None):
        return 0, 0
    if getattr(store.config.registry, "enable_online_feature_view_versioning", False):
        return 0, 0
    keys = sample_entity_keys(store, view, end, size)
    if not keys:
        return 0, 0
    field = timestamp_field(view.name)
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hexists(key, field)
        found = pipe.execute()
    return len(keys) - sum(bool(f) for f in found), len(keys)


def _when(t: datetime) -> str:
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def _print_note(message: str) -> None:
    from mlplatform.console import console, escape

    console.print(f"[yellow]{escape(message)}[/]", highlight=False, soft_wrap=True)


def materialize(
    settings: Settings,
    end: datetime | None = None,
    full: bool = False,
    views: list[str] | None = None,
    on_view: Callable[[str, int, int], None] | None = None,
    on_note: Callable[[str], None] | None = _print_note,
) -> list[ViewMaterialization]:
    """Load feature rows up to ``end`` into Redis.

    ``end`` defaults to the features' build watermark (see ``default_end``).
    Incremental by default: each view continues from its last materialized end, once Redis's watermark confirms
    that Redis holds it (``redis_problem``); a view Redis lost, and a view never materialized, start from the
    beginning of its data, its first event time (Feast alone would start at now - TTL and miss older entities).
    ``full`` reloads everything from the beginning. ``settings.materialize_engine`` picks the engine: ``fast``
    (DuckDB + pipelined HSET, Feast's exact Redis layout) or ``feast``; the fast engine leaves to Feast any view
    it cannot encode byte for byte (stream views among them). Either way the view's watermark is written once
    its rows landed. ``on_note`` hears why a view is reloaded ("Redis lost <view> (...): reloading from ...").
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
    client = redis_client(settings)  # a Redis Cluster's lost master: RedisUnavailable too (``cluster_errors``)
    with contextlib.closing(client), cluster_errors(client):
        raw_marks = client.hgetall(MATERIALIZED_KEY)
        marks = project_watermarks(store.project, raw_marks)
        results = [_materialize_one(settings, store, client, view, marks, end, full, on_note, i, len(chosen), on_view)
                   for i, view in enumerate(chosen)]
        backfill = None
        if ACTIVITY_VIEW in {v.name for v in chosen}:  # its online twin: the customers' event logs
            backfill = backfill_event_logs(client, store.project, settings.layout.raw_dir, end,
                                           timedelta(days=settings.stream_backdated_days), full)
            if on_note and backfill.events:
                on_note(backfill.describe())
    from mlplatform.audit import record

    record(settings, "materialize", target=f"redis {redact_redis_address(settings.redis_addr)}", details={
        "mode": "full" if full else "incremental", "end": end, "rows": sum(r.rows for r in results),
        "views": {r.view: {"start": r.start, "end": r.end, "rows": r.rows, "engine": r.engine,
                           **({"repair": r.repair} if r.repair else {})} for r in results},
        **({"event_logs": {"events": backfill.events, "customers": backfill.customers, "start": backfill.start,
                           "complete_from": backfill.complete_from}} if backfill else {})})
    return results


def _materialize_one(settings: Settings, store: Any, client: Any, view: Any, marks: dict[str, Watermark | None],
                     end: datetime, full: bool, on_note: Callable[[str], None] | None, i: int, n: int,
                     on_view: Callable[[str, int, int], None] | None) -> ViewMaterialization:
    """One view: reconcile Redis with the registry, load what is missing, then record the watermark."""
    if on_view:
        on_view(view.name, i, n)
    registry_end = view.most_recent_end_time.astimezone(UTC) if view.most_recent_end_time else None
    mark = marks.get(view.name)
    problem = None if registry_end is None else redis_problem(
        store, view, mark, view.name in marks, registry_end, client, probe=not full)
    trusted = mark if registry_end is not None and problem is None else None
    repair = ""
    if full or registry_end is None:
        start = first_event_time(view) or EPOCH  # nothing is older: the same rows as from the epoch
    elif problem:
        start = first_event_time(view) or EPOCH
        repair = f"Redis lost {view.name} ({problem}): reloading from {_when(start)}"
        if on_note:
            on_note(repair)
    else:
        start = registry_end
    holds = max(end, trusted.end) if trusted else end  # what Redis holds of the view once this run is done

    def record_watermark() -> None:
        if trusted is None or trusted.end < holds:
            mark = Watermark(holds, count_entities(store, view, holds))
            client.hset(MATERIALIZED_KEY, materialized_field(store.project, view.name), mark.encode())

    if start >= end:
        record_watermark()  # nothing to load: Redis holds every row up to ``end`` already
        return ViewMaterialization(view.name, start, end, 0, 0.0, repair=repair)
    reason = feast_engine_reason(settings) or (
        unsupported_reason(store, view) if settings.materialize_engine == "fast" else "engine: feast")
    if reason is None:
        t0 = time.perf_counter()
        fast = materialize_view(store, view, start, end, on_written=record_watermark)
        note = f"{fast.skipped_newer:,} keys already held newer rows" if fast.skipped_newer else ""
        return ViewMaterialization(view.name, start, end, fast.rows, time.perf_counter() - t0, "fast", note, repair)
    rows = _rows_in_interval(settings, view, start, end)
    t0 = time.perf_counter()
    # Feast prints its own banner (our caller reports the run); its Redis client's failures become exit code 5
    with redis_errors(settings.redis_addr, "did not take the materialized rows", settings.redis_timeout_seconds), \
            contextlib.redirect_stdout(io.StringIO()), _engine_for(settings, store, view) as engine:
        store.materialize(start_date=start, end_date=end, feature_views=[view.name])
    if engine:
        reason = f"{reason}; {engine}"
    seconds = time.perf_counter() - t0
    record_watermark()  # Feast's engine records the interval itself: the watermark follows it
    return ViewMaterialization(view.name, start, end, rows, seconds, "feast", reason, repair)
