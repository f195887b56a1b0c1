"""Read a FeatureService's online features straight from Redis, the way Feast stores them, with TTLs enforced.

Feast's ``get_online_features`` costs ~2 ms per call in-process. The service instead builds a read plan once from
the FeatureService object: the Redis key of each entity, the field of each feature and the ``_ts:<view>`` field
(Feast's layout, ``mlplatform.contracts.redis_layout``), merged so that one HMGET per entity fetches every view
keyed on it. On-demand features are computed by the registry's own transformation (the view's UDF: the row
form of ``mlplatform.features.on_demand``). Unlike Feast, the reader applies the offline store's point-in-time rule
at the request's time t (rows at or before t − ``SCORING_OFFSET``, within the view's TTL): a row older than its
view's TTL is treated as missing and reported as ``stale``; a row whose event time is after t − ``SCORING_OFFSET``
(Redis holds the newest row; a back-dated request is older than it) is never used either: it is treated as missing
and reported as ``future``. On-demand outputs that came out empty because a source row was stale or future are
reported so too. ``tests/serving/test_online_features.py`` proves the values equal Feast's ``get_online_features``;
``tests/serving/test_backdated.py`` that back-dated requests get the brute-force point-in-time value or a ``future``
flag, never a value from after the request. With ``stream_features``, ``customer_activity`` comes instead from the
customers' event logs, aggregated at the request's own time (``mlplatform.features.activity``) wherever the logs
cover it: exact at any time, window exits included, never ``future``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlplatform.contracts.activity_log import COVERAGE_KEY, RETENTION_US, coverage_fields
from mlplatform.contracts.redis_layout import (
    MATERIALIZED_KEY,
    SCORING_OFFSET_US,
    Watermark,
    decode_value,
    entity_key,
    feature_field,
    materialized_field,
    timestamp_field,
    timestamp_micros,
)
from mlplatform.errors import DefinitionError, InvalidInputError
from mlplatform.features.activity import ACTIVITY_VIEW, decode_reads, queue_reads


@dataclass
class _ViewRead:
    """One feature view: which features to read and how old a row may be."""

    view: str  # the feature view's registry name
    redis_name: str  # its name in Redis field hashes (versioned when Feast versioning is on)
    features: list[str]
    ttl_us: int  # 0: never stale
    start: int = 0  # offset of this view's fields in its key group's HMGET


@dataclass
class _KeyGroup:
    """Views keyed on the same entity columns: Feast stores them in one Redis hash per entity."""

    join_keys: tuple[str, ...]
    key_types: tuple[str, ...]
    views: list[_ViewRead] = field(default_factory=list)
    fields: list[bytes | str] = field(default_factory=list)


@dataclass
class _OnDemand:
    """An on-demand view of the service: its Feast object, its outputs and the views it reads."""

    odfv: Any
    outputs: list[str]
    source_views: list[str]
    request_fields: list[str]

    def __post_init__(self) -> None:
        self.transform = _dict_transform(self.odfv)


@dataclass
class OnlineFeatures:
    """Features for a batch of rows: per row, model-input values plus the names that were missing, stale or future.

    The three lists of a row are disjoint and each name in them has no value: ``stale`` (the row is older than its
    view's TTL at the request's time), ``future`` (the stored row is newer than the request: withheld), ``missing``
    (no row at all, or a null value). ``from_logs``: per row, whether ``customer_activity`` came from the
    customer's event log (exact at the request's time) rather than Feast's stored row (empty: from stored rows).
    ``activity_age_s``: per row, the age in seconds of the newest data behind its ``customer_activity``: the
    request's time minus the time up to which that source is known complete (the event logs' newest applied event,
    or the view's materialized watermark end), 0 for a request at or before it; None where unknown (no mark in
    Redis, the service reads no customer_activity, or a reader given no marks). Empty: not measured.
    """

    values: list[dict[str, Any]]
    missing: list[list[str]]
    stale: list[list[str]]
    future: list[list[str]]
    from_logs: list[bool] = field(default_factory=list)
    activity_age_s: list[float | None] = field(default_factory=list)


class OnlineFeatureReader:
    """Fetches one FeatureService's features for entity rows from Redis in one round trip."""

    def __init__(self, store, service, stream_features: bool = False) -> None:
        """Build the read plan from the FeatureService object (fetched once) and the store's registry.

        ``stream_features``: read ``customer_activity`` from the customers' event logs where they cover the
        request (``mlplatform.features.activity``), else from Feast's rows like every other view."""
        from feast.infra.online_stores.helpers import compute_versioned_name

        config = store.config
        self.service_name: str = service.name
        self.project_bytes = config.project.encode("utf-8")
        self.key_version = config.entity_key_serialization_version
        versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))
        self.output_names: list[str] = []  # the service's features, in its order
        self.direct: dict[str, str] = {}  # feature name -> view it is read from
        self.on_demand: list[_OnDemand] = []
        wanted: dict[str, list[str]] = {}  # view name -> features to read
        views: dict[str, Any] = {}
        for projection in service.feature_view_projections:
            names = [f.name for f in projection.features]
            self.output_names.extend(names)
            odfv = _maybe_odfv(store, projection.name)
            if odfv is not None:
                sources = list(odfv.source_feature_view_projections.values())
                for src in sources:
                    views.setdefault(src.name, _lookup_view(store, src.name))
                    for f in src.features:
                        wanted.setdefault(src.name, [])
                        if f.name not in wanted[src.name]:
                            wanted[src.name].append(f.name)
                request_fields = [f.name for rs in odfv.source_request_sources.values() for f in rs.schema]
                self.on_demand.append(_OnDemand(odfv, names, [s.name for s in sources], request_fields))
                continue
            views.setdefault(projection.name, _lookup_view(store, projection.name))
            for name in names:
                self.direct[name] = projection.name
                wanted.setdefault(projection.name, [])
                if name not in wanted[projection.name]:
                    wanted[projection.name].append(name)
        self.request_fields: list[str] = sorted({f for od in self.on_demand for f in od.request_fields})
        self.view_features: dict[str, list[str]] = wanted
        groups: dict[tuple[str, ...], _KeyGroup] = {}
        self._view_group: dict[str, _KeyGroup] = {}
        self.view_ttl_seconds: dict[str, float] = {}
        for view_name, features in wanted.items():
            view = views[view_name]
            columns = sorted(view.entity_columns, key=lambda c: c.name)
            join_keys = tuple(c.name for c in columns)
            key_types = tuple(str(c.dtype) for c in columns)
            group = groups.setdefault(join_keys, _KeyGroup(join_keys, key_types))
            redis_name = compute_versioned_name(view, versioning)
            ttl_us = int(view.ttl.total_seconds() * 1_000_000) if view.ttl else 0
            self.view_ttl_seconds[view_name] = ttl_us / 1e6
            read = _ViewRead(view_name, redis_name, list(features), ttl_us, start=len(group.fields))
            group.fields.extend(feature_field(redis_name, f) for f in features)
            group.fields.append(timestamp_field(redis_name))
            group.views.append(read)
            self._view_group[view_name] = group
        self.groups: list[_KeyGroup] = list(groups.values())
        # the event logs stand in for the activity view's stored row where they cover the request's time
        self.activity_view: str | None = (
            ACTIVITY_VIEW if stream_features and ACTIVITY_VIEW in wanted
            and self._view_group[ACTIVITY_VIEW].join_keys == ("customer_id",) else None)
        self.project: str = config.project
        complete_from, _, complete_to = coverage_fields(config.project)
        self._coverage_fields = [complete_from, complete_to]
        # the activity view's materialized watermark: how fresh its stored rows are (the features' age)
        self._watermark_field: str | None = (materialized_field(config.project, ACTIVITY_VIEW)
                                             if ACTIVITY_VIEW in wanted else None)
        self.entity_keys: list[str] = sorted({k for g in self.groups for k in g.join_keys})

    # -- keys ---------------------------------------------------------------------------------------------------
    def redis_key(self, group: _KeyGroup, row: dict[str, Any]) -> bytes:
        """Feast's Redis key for the row's entity in ``group``: serialized entity key + project."""
        values = [row[key] for key in group.join_keys]
        return entity_key(group.join_keys, group.key_types, values, self.project_bytes, self.key_version)

    def commands(self, rows: Sequence[dict[str, Any]]) -> list[tuple[bytes, list[bytes | str]]]:
        """The HMGETs that fetch every row: one per (row, entity)."""
        out = []
        for row in rows:
            for group in self.groups:
                out.append((self.redis_key(group, row), group.fields))
        return out

    # -- fetch ----------------------------------------------------------------------------------------------------
    async def fetch(self, redis, rows: Sequence[dict[str, Any]], request_time_us: Sequence[int]) -> OnlineFeatures:
        """Features of the service for ``rows`` (entity keys + request fields) as of each row's request time."""
        commands = self.commands(rows)
        async with redis.pipeline(transaction=False) as pipe:
            for key, fields in commands:
                pipe.hmget(key, fields)
            self._queue_activity(pipe, rows, request_time_us)
            replies = await pipe.execute()
        return self._finish(rows, replies, len(commands), request_time_us)

    def fetch_sync(self, redis, rows: Sequence[dict[str, Any]], request_time_us: Sequence[int]) -> OnlineFeatures:
        """``fetch`` for a synchronous redis-py client (benchmarks, scripts)."""
        commands = self.commands(rows)
        with redis.pipeline(transaction=False) as pipe:
            for key, fields in commands:
                pipe.hmget(key, fields)
            self._queue_activity(pipe, rows, request_time_us)
            replies = pipe.execute()
        return self._finish(rows, replies, len(commands), request_time_us)

    def _finish(self, rows: Sequence[dict[str, Any]], replies: Sequence[Any], n_commands: int,
                request_time_us: Sequence[int]) -> OnlineFeatures:
        """Assemble the pipeline's replies: the HMGETs of ``commands``, then the marks and event-log reads."""
        extra = list(replies[n_commands:])
        materialized_to = None
        if self._watermark_field is not None:
            mark = Watermark.decode(extra.pop(0))
            materialized_to = None if mark is None else (mark.end - _EPOCH) // timedelta(microseconds=1)
        logs_to = None
        if self.activity_view is not None:
            logs_to = _int_or_none(extra[0][1])
        return self.assemble(rows, replies[:n_commands], request_time_us,
                             activity=self._activity(extra, request_time_us), complete_to=(materialized_to, logs_to))

    def _queue_activity(self, pipe, rows: Sequence[dict[str, Any]], request_time_us: Sequence[int]) -> None:
        """Queue the activity view's materialized watermark, then the event-log reads: the logs' coverage (from,
        to), then each row's window and latest event."""
        if self._watermark_field is not None:
            pipe.hget(MATERIALIZED_KEY, self._watermark_field)
        if self.activity_view is None:
            return
        pipe.hmget(COVERAGE_KEY, self._coverage_fields)
        for row, t_us in zip(rows, request_time_us, strict=True):
            queue_reads(pipe, self.project, row["customer_id"], t_us)

    def _activity(self, replies: Sequence[Any], request_time_us: Sequence[int]) -> list[tuple[Any, bool] | None]:
        """Per row, (features, stale) from its event log, or None where the logs do not cover its time."""
        if self.activity_view is None:
            return []
        complete_from = _int_or_none(replies[0][0])
        out: list[tuple[Any, bool] | None] = []
        for i, t_us in enumerate(request_time_us):
            covered = complete_from is not None and t_us - RETENTION_US >= complete_from
            out.append(decode_reads(replies[1 + 2 * i], replies[2 + 2 * i], t_us) if covered else None)
        return out

    def assemble(
        self,
        rows: Sequence[dict[str, Any]],
        replies: Sequence[Sequence[bytes | None]],
        request_time_us: Sequence[int],
        enforce_ttl: bool = True,
        activity: Sequence[tuple[Any, bool] | None] = (),
        complete_to: tuple[int | None, int | None] = (None, None),
    ) -> OnlineFeatures:
        """Decode Redis replies into feature values as of each row's request time; run on-demand views.

        A view's row counts only if its event time is at or before t − 1 µs and within the view's TTL of it: an
        older row is ``stale``, a newer one ``future`` (both treated as missing). ``enforce_ttl=False`` reads as
        Feast's ``get_online_features`` does: the stored row whatever its time (neither check). ``activity``: per
        row, the activity view's (features, stale) from the event logs, or None to use its stored row.
        ``complete_to``: (materialized watermark end, event logs' newest applied event), µs or None: the times the
        per-row ``activity_age_s`` is measured from.
        """
        n_groups = len(self.groups)
        per_row_views: list[dict[str, dict[str, Any]]] = []
        per_row_stale: list[set[str]] = []
        per_row_future: list[set[str]] = []
        from_logs: list[bool] = []
        ages: list[float | None] = []
        for i in range(len(rows)):
            # the offline store serves, for a request at t, rows at or before t - 1 µs and within the TTL of it
            as_of = request_time_us[i] - SCORING_OFFSET_US
            views_out: dict[str, dict[str, Any]] = {}
            stale_views: set[str] = set()
            future_views: set[str] = set()
            for g, group in enumerate(self.groups):
                reply = replies[i * n_groups + g]
                for read in group.views:
                    view_key = read.view
                    ts_raw = reply[read.start + len(read.features)]
                    if ts_raw is None:
                        views_out[view_key] = dict.fromkeys(read.features)
                        continue
                    row_us = timestamp_micros(ts_raw)
                    if enforce_ttl and row_us > as_of:  # newer than the request: its value at t is not in Redis
                        views_out[view_key] = dict.fromkeys(read.features)
                        future_views.add(view_key)
                        continue
                    if enforce_ttl and read.ttl_us and as_of - row_us > read.ttl_us:
                        views_out[view_key] = dict.fromkeys(read.features)
                        stale_views.add(view_key)
                        continue
                    values = {}
                    for j, fname in enumerate(read.features):
                        raw = reply[read.start + j]
                        if raw is None:
                            values[fname] = None
                            continue
                        values[fname] = decode_value(raw)
                    views_out[view_key] = values
            logged = activity[i] if activity else None
            from_logs.append(logged is not None)
            ages.append(_age_s(request_time_us[i], complete_to[1] if logged is not None else complete_to[0]))
            if logged is not None:  # the event log knows this view's value at t exactly: never future
                values, is_stale = logged
                read_names = self.view_features[self.activity_view]
                views_out[self.activity_view] = ({n: values[n] for n in read_names} if values is not None
                                                 else dict.fromkeys(read_names))
                future_views.discard(self.activity_view)
                stale_views.discard(self.activity_view)
                if is_stale:
                    stale_views.add(self.activity_view)
            per_row_views.append(views_out)
            per_row_stale.append(stale_views)
            per_row_future.append(future_views)

        results: list[dict[str, Any]] = []
        for views_out in per_row_views:
            results.append({name: views_out[view][name] for name, view in self.direct.items()})
        stale_names: list[set[str]] = [set() for _ in rows]
        future_names: list[set[str]] = [set() for _ in rows]
        for od in self.on_demand:
            inputs: dict[str, list[Any]] = {}
            for src in od.odfv.source_feature_view_projections.values():
                for f in src.features:
                    inputs[f.name] = [v[src.name][f.name] for v in per_row_views]
            for name in od.request_fields:
                try:
                    inputs[name] = [row[name] for row in rows]
                except KeyError as exc:
                    raise InvalidInputError(
                        f"request field {name!r} is required by on-demand view {od.odfv.name!r}"
                    ) from exc
            out = od.transform(inputs)
            for i, res in enumerate(results):
                hit_stale = per_row_stale[i].intersection(od.source_views)
                hit_future = per_row_future[i].intersection(od.source_views)
                for name in od.outputs:
                    value = out[name][i]
                    res[name] = value
                    # which source an output reads is unknown: one withheld source makes its empty value unknown
                    # (future); only stale sources make it surely empty at t (stale)
                    if value is None and hit_future:
                        future_names[i].add(name)
                    elif value is None and hit_stale:
                        stale_names[i].add(name)
        missing: list[list[str]] = []
        stale: list[list[str]] = []
        future: list[list[str]] = []
        for i, res in enumerate(results):
            for name, view in self.direct.items():
                if view in per_row_stale[i]:
                    stale_names[i].add(name)
                elif view in per_row_future[i]:
                    future_names[i].add(name)
            stale.append([n for n in self.output_names if n in stale_names[i]])
            future.append([n for n in self.output_names if n in future_names[i]])
            missing.append([n for n in self.output_names
                            if res.get(n) is None and n not in stale_names[i] and n not in future_names[i]])
        return OnlineFeatures(values=results, missing=missing, stale=stale, future=future, from_logs=from_logs,
                              activity_age_s=ages)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _int_or_none(raw: Any) -> int | None:
    """A Redis reply holding an integer, or None when absent."""
    return None if raw is None else int(raw)


def _age_s(t_us: int, complete_to_us: int | None) -> float | None:
    """Seconds between a request's time and the time its source is known complete up to (0 when back-dated)."""
    return None if complete_to_us is None else max(0, t_us - complete_to_us) / 1e6


def _dict_transform(odfv: Any) -> Any:
    """The on-demand view's transformation of a dict of columns keyed by short input names. For a pandas-mode view
    that is the registry's UDF itself (``mlplatform.features.on_demand.transaction_context`` reads its inputs by
    short name): Feast's ``transform_dict`` only wraps it in adding ``<view>__<feature>`` copies of each input and
    deleting them again (~17 µs a request). Any other view: ``transform_dict``."""
    from feast.transformation.pandas_transformation import PandasTransformation

    transformation = getattr(odfv, "feature_transformation", None)
    udf = getattr(transformation, "udf", None)
    if type(transformation) is PandasTransformation and callable(udf) and odfv.mode == "pandas":
        return udf
    return odfv.transform_dict


def _maybe_odfv(store, name: str):
    """The on-demand feature view called ``name``, or None if it is a plain/stream view."""
    try:
        return store.get_on_demand_feature_view(name)
    except Exception:  # FeatureViewNotFoundException and friends
        return None


def _lookup_view(store, name: str):
    """A batch or stream feature view by name, with a clear error when the registry lacks it."""
    try:
        return store.get_feature_view(name)
    except Exception:
        try:
            return store.get_stream_feature_view(name)
        except Exception as exc:
            raise DefinitionError(
                f"feature view {name!r} used by the feature service is not in the registry: run `mlplatform apply`"
            ) from exc
