"""Online/offline consistency: recompute each served request's features point-in-time from the offline store, at
the time the service took them, and count per feature how often the served value differs.

This is the check that catches a transformation computed one way in training and another in serving (a unit
change, a different formula in an on-demand view, a stale or half-materialized online store).

**At which time each feature is recomputed.** A transaction at t reads features as of t - 1 µs, with the same
contract as training (``mlplatform.features.service.transaction_entity_rows``); t is the exact time the service
used (the log's ``transaction_time_us``; older logs: ``transaction_ts``, whole seconds).

* A row served at its own time is recomputed at the SERVED time. Features of views served from Feast's
  materialized rows (merchant_risk, the profiles, and customer_activity when the log's ``activity_source`` is
  ``"rows"`` or absent) agree only when the online store was fresh then: every row up to that time materialized
  and no newer one already in it. After the offline tables' end the materialized row IS the last offline row, so
  such rows are compared there too (they are what the offline store will still say). Features derived from
  customer_activity served from the customer's event log (``activity_source`` ``"logs"``) are exact at any time.
* A **replay** is recomputed at its ORIGINAL time, every feature: its ``transaction_id`` is a raw transaction
  (``<raw_dir>/transactions``) whose event time differs from the served time by whole days. ``monitor replay
  --live`` moves the period, the customers' event logs and the stored views' rows forward by whole days, each
  stored row written when its (shifted) time comes, so a faithful replay serves exactly the offline values at the
  original t - 1 µs (on-demand outputs too: hour of day and time since the last transaction do not change under a
  whole-day shift). A replay scored against the online store's end state serves other values, and the report
  says so. An event-log row moved by anything but whole days cannot be placed: skipped, ``"shift is not whole
  days"``.

**What is not compared, by reason** (never dropped silently: ``skipped_backdated``, ``skipped`` and the
headline):

* *After the offline data's end.* The offline tables end at the build's watermark (``_build_state.json`` beside
  them; else just after their newest row). Where a row's event-log features, or a replay, would be recomputed at
  or after it, the offline store has no value for that time yet (window exits after the end are missing):
  skipped and counted as ``"after the offline data's end (<end>)"`` (``skipped_after_offline_end``), judged once
  the tables are rebuilt past it.
* *Back-dated.* A feature row of a view served from stored rows, for the request's entities, newer than the time
  the view is recomputed at and not newer than when the request was logged: the hash may have held it when the
  request was served (a service older than the log's ``future`` column served it silently). The request is
  skipped (``skipped_backdated``). Views served from the event log are exact at any time and replays are placed at
  their original time with their world: neither needs the check.
* *Withheld.* The service withholds stored rows newer than a request and logs them in ``future``; such a cell is
  not compared and is counted per feature as ``future`` (``future_requests``: requests that listed any).
* Logged rows it cannot recompute at all (no customer or merchant id, no transaction time: ``CONSISTENCY_NEEDS``;
  see ``monitoring.logs``) are left out and counted by reason (``unjudged``).

**Freshness.** The report also gives the age of the newest data behind the served customer_activity features
(the log's ``activity_age_s``: request time minus the time its source, event log or materialized rows, is known
complete up to) at p50 and p99 over the window's served rows that have one (``feature_age``; headline). Older
logs have no ages: then none is reported. Only customer_activity is measured; the other views are slow-moving.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.contracts.feature_log import ACTIVITY_FROM_LOGS
from mlplatform.features.activity import ACTIVITY_VIEW
from mlplatform.features.service import ENTITY_KEYS, transaction_entity_rows
from mlplatform.settings import Settings
from monitoring.logs import CONSISTENCY_NEEDS, LogWindow, UnjudgedRows, resolve_window, served_rows
from monitoring.reports import ReportFiles, render_table_page, write_report

MAX_EXAMPLES = 5
US = 1_000_000
DAY_US = 86_400 * US
NOT_WHOLE_DAYS = "shift is not whole days"
BACKDATED = "back-dated (a stored row newer than the request's time existed when it was served)"


def after_end_reason(end: datetime) -> str:
    """The skip reason of rows whose event-log features would be recomputed at or after the offline data's end."""
    return f"after the offline data's end ({end.isoformat()})"


@dataclass(frozen=True)
class FeatureMismatch:
    """How often one feature's served value differed from its offline recomputation."""

    feature: str
    compared: int
    mismatches: int
    rate: float
    examples: list[dict[str, Any]]
    future: int = 0  # requests that listed it in ``future``: withheld by the service, so not compared


@dataclass(frozen=True)
class FeatureAge:
    """Percentiles of the served customer_activity features' age (``activity_age_s``), seconds, over ``rows``."""

    rows: int
    p50: float
    p99: float

    def describe(self) -> str:
        """The figures in a few words."""
        return f"customer_activity age p50 {self.p50:.3f}s, p99 {self.p99:.3f}s ({self.rows:,} rows)"


def feature_age(served: pd.DataFrame) -> FeatureAge | None:
    """p50/p99 (numpy's linear percentiles) of the served rows' ``activity_age_s``; None when no row has one."""
    if "activity_age_s" not in served.columns:
        return None
    ages = pd.to_numeric(served["activity_age_s"], errors="coerce").dropna().to_numpy(dtype="float64")
    if not len(ages):
        return None
    p50, p99 = np.percentile(ages, [50, 99])
    return FeatureAge(len(ages), float(p50), float(p99))


@dataclass
class ConsistencyResult:
    """The consistency report's figures: ``compared + skipped_backdated + sum(skipped.values()) == requests``."""

    window: LogWindow
    feature_service: str
    requests: int
    compared: int
    skipped_backdated: int
    features: list[FeatureMismatch]
    seconds: float = 0.0
    files: ReportFiles | None = field(default=None, repr=False)
    future_requests: int = 0  # served requests that listed any feature in ``future`` (back-dated ones included)
    unjudged: UnjudgedRows = field(default_factory=UnjudgedRows)  # logged rows left out, by reason
    skipped_after_offline_end: int = 0  # event-log features at or after the offline tables' end: not judged yet
    offline_end: datetime | None = None  # the offline feature tables' end (their build's watermark)
    skipped: dict[str, int] = field(default_factory=dict)  # requests not compared other than back-dated, by reason
    replayed: int = 0  # compared requests whose event-log features were recomputed at their original time
    feature_age: FeatureAge | None = None  # the served customer_activity features' age (None: not in the logs)

    def worst(self) -> list[FeatureMismatch]:
        """Features with any mismatch, worst first."""
        return sorted((f for f in self.features if f.mismatches), key=lambda f: -f.rate)

    def skips(self) -> str:
        """The requests not compared, by reason, in a few words."""
        end = self.offline_end.isoformat() if self.offline_end else "unknown"
        parts = [f"{self.skipped_backdated:,} back-dated skipped",
                 f"{self.skipped_after_offline_end:,} after the offline data's end ({end}) skipped"]
        parts += [f"{n:,} skipped: {why}" for why, n in sorted(self.skipped.items())
                  if not why.startswith("after the offline data's end")]
        return ", ".join(parts)

    def headline(self) -> str:
        bad = ", ".join(f"{f.feature} {f.rate:.1%}" for f in self.worst()) or "none"
        withheld = f"; {self.future_requests:,} with features withheld as future" if self.future_requests else ""
        replayed = f"; {self.replayed:,} replayed, judged at their original time" if self.replayed else ""
        left_out = f"; {self.unjudged.short()}" if self.unjudged else ""
        age = f"; {self.feature_age.describe()}" if self.feature_age else ""
        return (f"{self.compared:,} of {self.requests:,} served requests recomputed offline "
                f"({self.skips()}{replayed}{withheld}); features with mismatches: {bad}{age}{left_out}")

    def skip_table(self) -> list[dict[str, Any]]:
        """Rows for a report page: the requests not compared, one row per reason."""
        out = [{"reason": BACKDATED, "requests": self.skipped_backdated}]
        return out + [{"reason": why, "requests": n} for why, n in sorted(self.skipped.items())]

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window.to_dict(), "feature_service": self.feature_service, "requests": self.requests,
                "compared": self.compared, "skipped_backdated": self.skipped_backdated,
                "skipped_after_offline_end": self.skipped_after_offline_end,
                "offline_end": self.offline_end.isoformat() if self.offline_end else None,
                "skipped": dict(sorted(self.skipped.items())), "replayed": self.replayed,
                "future_requests": self.future_requests,
                "feature_age": asdict(self.feature_age) if self.feature_age else None,
                "features": [asdict(f) for f in self.features], "seconds": self.seconds,
                "headline": self.headline(), "unjudged": self.unjudged.to_dict()}


# --- the served rows: times, sources, entity rows -----------------------------------------------------------------
def served_times_us(served: pd.DataFrame) -> np.ndarray:
    """Each row's transaction time in µs as the service used it: ``transaction_time_us`` where the log has it (and
    it lies in the logged second), else ``transaction_ts`` in whole seconds."""
    seconds = pd.to_numeric(served["transaction_ts"], errors="coerce").astype("int64").to_numpy()
    out = seconds * US
    if "transaction_time_us" in served.columns:
        exact = pd.to_numeric(served["transaction_time_us"], errors="coerce").astype("Int64")
        known = exact.notna().to_numpy()
        values = exact.to_numpy(dtype="int64", na_value=0)
        use = known & (values // US == seconds)
        out = np.where(use, values, out)
    return out


def from_event_logs(served: pd.DataFrame) -> np.ndarray:
    """True for rows whose customer_activity the service read from the event logs (a log without the column, or a
    null: from stored rows, the only source older services had)."""
    if "activity_source" not in served.columns:
        return np.zeros(len(served), dtype=bool)
    return (served["activity_source"] == ACTIVITY_FROM_LOGS).fillna(False).astype(bool).to_numpy()


def entity_rows_at(served: pd.DataFrame, times_us: np.ndarray) -> pd.DataFrame:
    """Entity rows (keys, request fields, t - 1 µs) for logged requests taken at ``times_us``, keyed by
    ``request_id``; ``transaction_ts`` is that time in whole seconds (what the on-demand view reads)."""
    tx = pd.DataFrame({
        "transaction_id": served["request_id"].to_numpy(),
        "customer_id": served["customer_id"].astype("int64").to_numpy(),
        "merchant_id": served["merchant_id"].astype("int64").to_numpy(),
        "amount": served["amount"].astype("float64").to_numpy(),
        "event_timestamp": pd.to_datetime(np.asarray(times_us, dtype="int64"), unit="us", utc=True),
    })
    rows = transaction_entity_rows(tx).rename(columns={"transaction_id": "request_id"})
    if "request_fields" in served.columns:  # further request fields an on-demand view may read
        extra = [json.loads(v) if isinstance(v, str) and v else {} for v in served["request_fields"]]
        for name in sorted({k for e in extra for k in e} - set(rows.columns)):
            rows[name] = [e.get(name) for e in extra]
    return rows


def served_entity_rows(served: pd.DataFrame) -> pd.DataFrame:
    """Entity rows (keys, request fields, t - 1 µs) for logged requests at their served time, keyed by
    ``request_id``."""
    return entity_rows_at(served, served_times_us(served))


def raw_event_times(raw_dir: Path, transaction_ids: pd.Series) -> pd.Series:
    """Per logged row (same index), the event time in µs of the raw transaction with its ``transaction_id``; NA
    where the id is not a raw transaction's (or there are no raw transactions under ``raw_dir``)."""
    import duckdb

    out = pd.Series(pd.NA, index=transaction_ids.index, dtype="Int64")
    folder = Path(raw_dir) / "transactions"
    if not any(folder.glob("*.parquet")):
        return out
    ids: list[tuple[int, int]] = []
    for k, value in enumerate(transaction_ids.tolist()):
        if isinstance(value, str) and value.lstrip("-").isdigit():
            number = int(value)
            if str(number) == value and -(2**63) <= number < 2**63:
                ids.append((k, number))
    if not ids:
        return out
    wanted = pd.DataFrame(ids, columns=["k", "transaction_id"]).astype("int64")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("wanted", wanted)
        found = con.execute(
            "SELECT w.k, r.ts_us FROM wanted w JOIN (SELECT CAST(transaction_id AS BIGINT) AS transaction_id, "
            "min(epoch_us(event_timestamp::TIMESTAMPTZ)) AS ts_us FROM read_parquet(?) GROUP BY 1) r "
            "USING (transaction_id)", [str(folder / "*.parquet")]).fetchdf()
    out.iloc[found["k"].to_numpy(dtype="int64")] = found["ts_us"].to_numpy(dtype="int64")
    return out


# --- the feature service's stored views ------------------------------------------------------------------------
def view_sources(store, service_name: str) -> list[tuple[str, list[str], str, str]]:
    """(view, join keys, Parquet path, timestamp column) of every stored view the service reads, ODFV sources too."""
    service = store.get_feature_service(service_name)
    names: list[str] = []
    for projection in service.feature_view_projections:
        try:
            odfv = store.get_on_demand_feature_view(projection.name)
        except Exception:  # a plain feature view
            names.append(projection.name)
            continue
        names.extend(p.name for p in odfv.source_feature_view_projections.values())
    out = []
    for name in dict.fromkeys(names):
        view = store.get_feature_view(name)
        path = getattr(view.batch_source, "path", None)
        if path:
            out.append((name, [c.name for c in view.entity_columns], path, view.batch_source.timestamp_field))
    return out


def offline_end(sources: list[tuple[str, list[str], str, str]]) -> datetime | None:
    """Where the offline feature tables end: the earliest build watermark (``_build_state.json``) of their folders;
    for a folder without one, just after its newest row (None: no table)."""
    import duckdb

    from mlplatform.features.pipelines import read_build_state
    from mlplatform.timeutil import utc

    ends: list[pd.Timestamp] = []
    for _, _, path, ts_col in sources:
        until = read_build_state(Path(path).parent).get("until")
        if until is not None:
            ends.append(utc(until))
            continue
        if Path(path).exists():
            with duckdb.connect() as con:
                con.execute("SET TimeZone = 'UTC'")
                (newest,) = con.execute(f'SELECT max("{ts_col}")::TIMESTAMPTZ FROM read_parquet(?)',
                                        [path]).fetchone()
            if newest is not None:
                ends.append(pd.Timestamp(newest).tz_convert("UTC") + pd.Timedelta(microseconds=1))
    return min(ends).to_pydatetime() if ends else None


# --- comparing ----------------------------------------------------------------------------------------------------
def compare_features(served: pd.DataFrame, offline: pd.DataFrame, features: list[str], rtol: float,
                     key: str = "request_id", max_examples: int = MAX_EXAMPLES) -> list[FeatureMismatch]:
    """Per feature: rows where exactly one side is null, or both are numbers differing beyond ``rtol``.

    A row whose ``future`` list (if the log has one) names the feature is not compared: counted as ``future``."""
    s = served.set_index(key)
    o = offline.set_index(key).reindex(s.index)
    withheld = [set(v) if isinstance(v, list | tuple | np.ndarray) else set()
                for v in (s["future"] if "future" in s.columns else [None] * len(s))]
    out = []
    for name in features:
        a = pd.to_numeric(s[name], errors="coerce").astype("float64").to_numpy()
        b = pd.to_numeric(o[name], errors="coerce").astype("float64").to_numpy()
        future = np.fromiter((name in w for w in withheld), dtype=bool, count=len(withheld))
        a_nan, b_nan = np.isnan(a), np.isnan(b)
        both = ~a_nan & ~b_nan
        differs = a_nan != b_nan
        differs[both] = ~np.isclose(a[both], b[both], rtol=rtol, atol=1e-9)
        differs &= ~future
        bad = np.flatnonzero(differs)
        examples = []
        for i in bad[:max_examples]:
            row = s.iloc[i]
            examples.append({
                key: str(s.index[i]), "customer_id": _int(row.get("customer_id")),
                "merchant_id": _int(row.get("merchant_id")), "transaction_ts": _int(row.get("transaction_ts")),
                "served": None if a_nan[i] else float(a[i]), "offline": None if b_nan[i] else float(b[i]),
            })
        n = len(a) - int(future.sum())
        out.append(FeatureMismatch(name, n, int(len(bad)), len(bad) / n if n else 0.0, examples, int(future.sum())))
    return out


def _int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def backdated_requests(rows: pd.DataFrame, logged_at: pd.Series, sources: list[tuple[str, list[str], str, str]],
                       as_of: dict[str, pd.Series] | None = None) -> pd.Series:
    """True for requests whose entities had a feature row newer than the request's time when it was served.

    Per view, "the request's time" is ``rows["event_timestamp"]`` (t - 1 µs), or ``as_of[view]`` (same index as
    ``rows``) where given: the time that view's values are recomputed at, NaT where the view needs no check (it
    was not served from stored rows)."""
    import duckdb

    flagged: set[str] = set()
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        for view, keys, path, ts_col in sources:
            when = as_of.get(view) if as_of else None
            req = pd.DataFrame({
                "request_id": rows["request_id"].to_numpy(),
                "as_of": _utc_us(rows["event_timestamp"] if when is None else when),
                "logged_at": _utc_us(logged_at),
                **{k: rows[k].to_numpy() for k in ENTITY_KEYS},
            })
            con.register("req", req)
            on = " AND ".join(f's."{k}" = r."{k}"' for k in keys)
            sql = (f'SELECT r.request_id FROM req r WHERE r.as_of IS NOT NULL AND EXISTS (SELECT 1 FROM '
                   f'read_parquet(?) s WHERE {on} AND s."{ts_col}" > r.as_of AND s."{ts_col}" <= r.logged_at)')
            flagged.update(con.execute(sql, [path]).fetchdf()["request_id"].tolist())
            con.unregister("req")
    return rows["request_id"].isin(flagged)


def _utc_us(values: pd.Series):
    """Times as a tz-aware microsecond array (DuckDB reads it as TIMESTAMPTZ, NaT as NULL), index dropped."""
    return pd.to_datetime(values, utc=True).dt.as_unit("us").array


@dataclass
class _Timing:
    """Per served row: the served time and the time its features are recomputed at (µs), and why a row is not
    compared."""

    served_us: np.ndarray
    at_us: np.ndarray
    from_logs: np.ndarray
    replayed: np.ndarray
    skip: list[str | None]


def recompute_times(served: pd.DataFrame, raw_dir: Path, end: datetime | None) -> _Timing:
    """When each served row's features are recomputed (see the module doc), and which rows cannot be judged (an
    event-log row moved by no whole number of days; event-log features or a replay at or after the offline data's
    ``end``)."""
    served_us = served_times_us(served)
    logs = from_event_logs(served)
    ids = served["transaction_id"] if "transaction_id" in served.columns else pd.Series([None] * len(served))
    original = raw_event_times(raw_dir, ids.reset_index(drop=True))
    known = original.notna().to_numpy()
    original_us = original.to_numpy(dtype="int64", na_value=0)
    moved = known & (original_us != served_us)
    whole = (served_us - original_us) % DAY_US == 0
    replay = moved & whole
    at_us = np.where(replay, original_us, served_us)
    end_us = None if end is None else int(pd.Timestamp(end).value // 1000)
    skip: list[str | None] = [None] * len(served)
    for i in np.flatnonzero(logs & moved & ~whole):
        skip[i] = NOT_WHOLE_DAYS
    if end is not None:
        for i in np.flatnonzero((logs | replay) & (at_us - 1 >= end_us)):
            skip[i] = skip[i] or after_end_reason(end)
    return _Timing(served_us, at_us, logs, replay, skip)


def view_as_of(views: list[str], rows: pd.DataFrame, from_logs: np.ndarray, replayed: np.ndarray
               ) -> dict[str, pd.Series]:
    """Per stored view, per row: the time a stored row newer than which would make the request back-dated (its
    recompute time t - 1 µs); NaT where no stored row of it could have been served out of time: a replay (its
    world was moved forward with it) and customer_activity from the event logs (exact at any time)."""
    out: dict[str, pd.Series] = {}
    for view in views:
        exact = replayed | (from_logs if view == ACTIVITY_VIEW else np.zeros(len(rows), dtype=bool))
        out[view] = rows["event_timestamp"].where(~exact)
    return out


def offline_values(store, service_name: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The service's features from the offline store for the entity ``rows`` (each at its recompute time)."""
    service = store.get_feature_service(service_name)
    offline = store.get_historical_features(entity_df=rows, features=service).to_df()
    return offline.set_index("request_id").reindex(rows["request_id"]).reset_index()


def run_consistency(settings: Settings, since: datetime | None = None, until: datetime | None = None,
                    write: bool = True, store=None) -> ConsistencyResult:
    """Recompute the window's served requests offline, point-in-time, and report mismatches per feature."""
    from mlplatform.features.service import feature_signature
    from mlplatform.stores import open_feature_store

    t0 = time.perf_counter()
    window = resolve_window(settings, since, until)
    read = served_rows(settings, window, require=CONSISTENCY_NEEDS)
    served = read.frame.reset_index(drop=True)
    store = store or open_feature_store(settings)
    service_name = settings.feature_service
    features = [n for n, _ in feature_signature(store, service_name) if n in served.columns]
    sources = view_sources(store, service_name)
    end = offline_end(sources)
    timing = recompute_times(served, settings.layout.raw_dir, end)
    skipped = Counter(why for why in timing.skip if why is not None)
    candidate = np.array([why is None for why in timing.skip], dtype=bool)

    rows = entity_rows_at(served, timing.at_us)
    backdated = np.zeros(len(served), dtype=bool)
    if candidate.any():
        pick = np.flatnonzero(candidate)
        as_of = view_as_of([view for view, *_ in sources], rows, timing.from_logs, timing.replayed)
        flags = backdated_requests(rows.iloc[pick], served["logged_at"].iloc[pick], sources,
                                   {v: w.iloc[pick] for v, w in as_of.items()})
        backdated[pick] = flags.to_numpy()
    judged = candidate & ~backdated
    mismatches: list[FeatureMismatch]
    if judged.any():
        offline = offline_values(store, service_name, rows[judged])
        mismatches = compare_features(served[judged], offline, features, settings.monitoring_consistency_rtol)
    else:
        mismatches = [FeatureMismatch(f, 0, 0, 0.0, []) for f in features]
    future_requests = sum(1 for v in served.get("future", []) if isinstance(v, list | tuple | np.ndarray) and len(v))
    after = after_end_reason(end) if end is not None else None
    result = ConsistencyResult(window, service_name, len(served), int(judged.sum()), int(backdated.sum()),
                               mismatches, seconds=time.perf_counter() - t0, future_requests=future_requests,
                               unjudged=read.unjudged, skipped_after_offline_end=skipped.get(after, 0),
                               offline_end=end, skipped=dict(skipped),
                               replayed=int((judged & timing.replayed).sum()), feature_age=feature_age(served))
    if write:
        enough = result.compared >= settings.monitoring_min_rows
        breach = any(f.rate > settings.monitoring_max_mismatch_rate for f in mismatches)
        status = ("breach" if breach else "ok") if enough else "too few rows"
        table = [{"feature": f.feature, "compared": f.compared, "mismatches": f.mismatches, "rate": f.rate,
                  "future": f.future} for f in mismatches]
        examples = [{"feature": f.feature, **e} for f in result.worst() for e in f.examples]
        page = render_table_page("Online/offline consistency", result.headline(),
                                 [("Mismatch rate per feature", table), ("Examples", examples),
                                  ("Served requests not compared", result.skip_table()),
                                  ("Age of the served customer_activity features (seconds)",
                                   [asdict(result.feature_age)] if result.feature_age else []),
                                  ("Logged rows not judged", result.unjudged.table())])
        result.files = write_report(settings, "consistency", {**result.to_dict(), "status": status}, page,
                                    when=datetime.now(UTC))
    return result
