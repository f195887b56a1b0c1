"""The stored views' rows of a replayed period, written to the online store on the replay's clock.

A live replay moves a period forward by whole days. The customers' event logs move with it (``replay._rewind``);
so must the rows of every view the service reads from Feast's materialized rows (merchant_risk, the profiles, and
customer_activity when it is not served from the event logs): otherwise a replayed transaction would be scored
with the online store's end state, values from after its time.

:class:`StoredRows` first sets each such view to the world as it stood at the period's start (every entity's
latest row before it, moved forward; entities whose first row comes later lose the view's fields), then writes
the period's rows, moved forward, as the replay's clock reaches them:

* exactly (the default): before a transaction at t is scored, every row older than t is in Redis and no newer
  one, so the service serves what the offline store gives at t - 1 µs;
* or like a batch materialization every ``every`` (e.g. one hour): at each boundary b, the rows older than b. A
  transaction then sees rows up to an interval old, as a service behind an hourly ``materialize`` does.

Rows are written as Feast's online store writes them (``mlplatform.features.fast_materialize``), each view's in
time order, so its latest row wins, and each view's materialized watermark follows the clock (moved forward), so
the service's freshness figure (``activity_age_s``) reads as it would behind a real schedule. A feature that holds
a point in time (tagged ``time: unix_seconds`` in feature_repo, e.g. ``last_txn_epoch``) is moved forward too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlplatform.features.activity import ACTIVITY_VIEW
from mlplatform.settings import Settings

US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stored_views(settings: Settings, store: Any) -> list[Any]:
    """The batch feature views the service reads from stored rows: every view the feature service reads (on-demand
    views' sources too), except customer_activity when it is served from the customers' event logs."""
    from monitoring.consistency import view_sources

    skip = {ACTIVITY_VIEW} if settings.serving_stream_features else set()
    return [store.get_feature_view(name) for name, *_ in view_sources(store, settings.feature_service)
            if name not in skip]


TIME_TAG = "time"  # a feature holding a point in time (Field tag ``time``: ``unix_seconds``) moves with the world
TIME_UNITS_US = {"unix_seconds": US}


def _shifted(table: pa.Table, shift_us: int, view: Any) -> pa.Table:
    """``table`` with ``__ts_us`` and the view's time-valued features (tag ``time``) moved forward by ``shift_us``."""
    i = table.schema.get_field_index("__ts_us")
    table = table.set_column(i, "__ts_us", pc.add(table.column(i), shift_us))
    for f in view.features:
        unit = (f.tags or {}).get(TIME_TAG)
        if unit is None:
            continue
        if unit not in TIME_UNITS_US:
            raise ValueError(f"feature {view.name}.{f.name}: time unit {unit!r} is not one of {sorted(TIME_UNITS_US)}")
        j = table.schema.get_field_index(f.name)
        table = table.set_column(j, f.name, pc.add(table.column(j), shift_us // TIME_UNITS_US[unit]))
    return table


@dataclass
class _ViewRows:
    view: Any
    rows: pa.Table  # the period's rows in write order, times already shifted
    original_us: np.ndarray  # their original event times (µs), ascending
    entities: set[tuple] = field(default_factory=set)  # entities Redis holds a row of
    cursor: int = 0  # rows written so far

    def keys(self, table: pa.Table) -> list[tuple]:
        names = [c.name for c in self.view.entity_columns]
        return list(zip(*(table.column(k).to_pylist() for k in names), strict=True))


class StoredRows:
    """Writes the stored views' rows of ``[start, end)`` to Redis, moved forward by ``shift``, on the replay's
    clock (see the module doc). ``every`` None: exactly; else at boundaries of that width (original time)."""

    def __init__(self, settings: Settings, store: Any, client: Any, start: datetime, end: datetime,
                 shift: timedelta, every: timedelta | None = None) -> None:
        from mlplatform.features.fast_materialize import latest_rows, view_source_path

        self.store, self.client = store, client
        self.shift_us = int(shift.total_seconds() * US)
        self.every_us = int(every.total_seconds() * US) if every else 0
        self.start, self.end = start, end
        self.views: list[_ViewRows] = []
        for view in stored_views(settings, store):
            path = view_source_path(store, view)
            rows = latest_rows(view, path, start, end - timedelta(microseconds=1), every=True)
            original = rows.column("__ts_us").to_numpy()
            self.views.append(_ViewRows(view, _shifted(rows, self.shift_us, view), original))
        self.written = 0
        self.marked_us = -(2**62)  # the cutoff the watermarks were last recorded at

    def rewind(self) -> int:
        """Set every stored view to the world at ``start``, moved forward; returns the rows written."""
        from mlplatform.features.fast_materialize import drop_view_rows, latest_rows, view_source_path, write_table

        written = 0
        start_us = (self.start - EPOCH) // timedelta(microseconds=1)
        for vr in self.views:
            path = view_source_path(self.store, vr.view)
            before = latest_rows(vr.view, path, EPOCH, self.start - timedelta(microseconds=1))
            written += write_table(self.store, vr.view, _shifted(before, self.shift_us, vr.view), self.client,
                                   dedup=False)[0]
            vr.entities = set(vr.keys(before))
            later = latest_rows(vr.view, path, self.start, datetime(9999, 1, 1, tzinfo=UTC))
            fresh = [i for i, key in enumerate(vr.keys(later)) if key not in vr.entities]
            drop_view_rows(self.store, vr.view, later.take(pa.array(fresh, type=pa.int64())), self.client)
        self._mark(start_us)
        return written

    def cutoff(self, t_us: int) -> int:
        """Rows older than this (original µs) are in Redis when a transaction at ``t_us`` is scored."""
        return t_us - t_us % self.every_us if self.every_us else t_us

    def pending(self, t_us: int) -> bool:
        """Whether rows must be written before a transaction at ``t_us`` (original µs) is scored."""
        cut = self.cutoff(t_us)
        return any(vr.cursor < len(vr.original_us) and vr.original_us[vr.cursor] < cut for vr in self.views)

    def advance(self, t_us: int) -> int:
        """Write every row a transaction at ``t_us`` (original µs) must see; returns how many."""
        from mlplatform.features.fast_materialize import write_table

        cut = self.cutoff(t_us)
        if cut <= self.marked_us:
            return 0
        n = 0
        for vr in self.views:
            stop = int(np.searchsorted(vr.original_us, cut, side="left"))
            if stop > vr.cursor:
                batch = vr.rows.slice(vr.cursor, stop - vr.cursor)
                n += write_table(self.store, vr.view, batch, self.client, dedup=False)[0]
                vr.entities.update(vr.keys(batch))
                vr.cursor = stop
        self._mark(cut)
        self.written += n
        return n

    def _mark(self, cut_us: int) -> None:
        """Record in Redis, as ``materialize`` does, that each view holds every row before ``cut_us`` (original
        µs), moved forward: the service measures the age of stored customer_activity rows from it."""
        from mlplatform.contracts.redis_layout import MATERIALIZED_KEY, Watermark, materialized_field

        end = EPOCH + timedelta(microseconds=cut_us + self.shift_us - 1)
        marks = {materialized_field(self.store.project, vr.view.name): Watermark(end, len(vr.entities)).encode()
                 for vr in self.views}
        if marks:
            self.client.hset(MATERIALIZED_KEY, mapping=marks)
        self.marked_us = cut_us
