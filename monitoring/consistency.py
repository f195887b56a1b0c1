"""Online/offline consistency: recompute each served request's features point-in-time from the offline store, at
the request's own time, and count per feature how often the served value differs.

This is the check that catches a transformation computed one way in training and another in serving (a unit
change, a different formula in an on-demand view, a stale or half-materialized online store).

What it can and cannot compare: the online store holds the *latest* materialized row of each entity, while the
offline store answers "as of the request's time". The two agree only when the online store was fresh at that
time: every feature row up to the request's time materialized, and no newer row already in it. Live traffic
(requests stamped with the time they are served) meets this. A request stamped earlier than feature rows that
existed when it was served (a replay of history, a back-dated transaction) is counted as ``skipped_backdated``
and not compared: a service older than the feature log's ``future`` column served it newer values. The service
now withholds such values and logs the features in ``future``; a feature a compared request lists there had no
served value by design, so that cell is not compared either and is counted per feature as ``future`` (and
``future_requests`` counts the window's requests that listed any). Requests are matched to offline rows with the
same contract as training: a transaction at t reads features as of t - 1 µs
(``mlplatform.features.service.transaction_entity_rows``). Logged rows it cannot recompute (no customer or
merchant id, no transaction time: ``CONSISTENCY_NEEDS``; see ``monitoring.logs``) are left out and counted by
reason (``unjudged``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.features.service import ENTITY_KEYS, transaction_entity_rows
from mlplatform.settings import Settings
from monitoring.logs import CONSISTENCY_NEEDS, LogWindow, UnjudgedRows, resolve_window, served_rows
from monitoring.reports import ReportFiles, render_table_page, write_report

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class FeatureMismatch:
    """How often one feature's served value differed from its offline recomputation."""

    feature: str
    compared: int
    mismatches: int
    rate: float
    examples: list[dict[str, Any]]
    future: int = 0  # requests that listed it in ``future``: withheld by the service, so not compared


@dataclass
class ConsistencyResult:
    """The consistency report's figures."""

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

    def worst(self) -> list[FeatureMismatch]:
        """Features with any mismatch, worst first."""
        return sorted((f for f in self.features if f.mismatches), key=lambda f: -f.rate)

    def headline(self) -> str:
        bad = ", ".join(f"{f.feature} {f.rate:.1%}" for f in self.worst()) or "none"
        withheld = f"; {self.future_requests:,} with features withheld as future" if self.future_requests else ""
        left_out = f"; {self.unjudged.short()}" if self.unjudged else ""
        return (f"{self.compared:,} of {self.requests:,} served requests recomputed offline "
                f"({self.skipped_backdated:,} back-dated skipped{withheld}); features with mismatches: {bad}{left_out}")

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window.to_dict(), "feature_service": self.feature_service, "requests": self.requests,
                "compared": self.compared, "skipped_backdated": self.skipped_backdated,
                "future_requests": self.future_requests,
                "features": [asdict(f) for f in self.features], "seconds": self.seconds,
                "headline": self.headline(), "unjudged": self.unjudged.to_dict()}


def served_entity_rows(served: pd.DataFrame) -> pd.DataFrame:
    """Entity rows (keys, request fields, t - 1 µs) for logged requests, keyed by ``request_id``."""
    tx = pd.DataFrame({
        "transaction_id": served["request_id"].to_numpy(),
        "customer_id": served["customer_id"].astype("int64").to_numpy(),
        "merchant_id": served["merchant_id"].astype("int64").to_numpy(),
        "amount": served["amount"].astype("float64").to_numpy(),
        "event_timestamp": pd.to_datetime(served["transaction_ts"].astype("int64"), unit="s", utc=True).to_numpy(),
    })
    rows = transaction_entity_rows(tx).rename(columns={"transaction_id": "request_id"})
    if "request_fields" in served.columns:  # further request fields an on-demand view may read
        extra = [json.loads(v) if isinstance(v, str) and v else {} for v in served["request_fields"]]
        for name in sorted({k for e in extra for k in e} - set(rows.columns)):
            rows[name] = [e.get(name) for e in extra]
    return rows


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


def backdated_requests(rows: pd.DataFrame, logged_at: pd.Series, sources: list[tuple[str, list[str], str, str]]
                       ) -> pd.Series:
    """True for requests whose entities had a feature row newer than the request's time when it was served."""
    import duckdb

    req = pd.DataFrame({
        "request_id": rows["request_id"].to_numpy(),
        "as_of": pd.to_datetime(rows["event_timestamp"], utc=True).to_numpy(),
        "logged_at": pd.to_datetime(logged_at, utc=True).to_numpy(),
        **{k: rows[k].to_numpy() for k in ENTITY_KEYS},
    })
    flagged: set[str] = set()
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("req", req)
        for _, keys, path, ts_col in sources:
            on = " AND ".join(f's."{k}" = r."{k}"' for k in keys)
            sql = (f'SELECT r.request_id FROM req r WHERE EXISTS (SELECT 1 FROM read_parquet(?) s WHERE {on} '
                   f'AND s."{ts_col}" > r.as_of AND s."{ts_col}" <= r.logged_at)')
            flagged.update(con.execute(sql, [path]).fetchdf()["request_id"].tolist())
    return rows["request_id"].isin(flagged)


def run_consistency(settings: Settings, since: datetime | None = None, until: datetime | None = None,
                    write: bool = True, store=None) -> ConsistencyResult:
    """Recompute the window's served requests offline, point-in-time, and report mismatches per feature."""
    from mlplatform.features.service import feature_signature
    from mlplatform.stores import open_feature_store

    t0 = time.perf_counter()
    window = resolve_window(settings, since, until)
    read = served_rows(settings, window, require=CONSISTENCY_NEEDS)
    served = read.frame
    store = store or open_feature_store(settings)
    service_name = settings.feature_service
    features = [n for n, _ in feature_signature(store, service_name) if n in served.columns]
    rows = served_entity_rows(served)
    backdated = backdated_requests(rows, served["logged_at"], view_sources(store, service_name))
    fresh = rows[~backdated.to_numpy()]
    mismatches: list[FeatureMismatch] = []
    if len(fresh):
        service = store.get_feature_service(service_name)
        offline = store.get_historical_features(entity_df=fresh, features=service).to_df()
        live = served[served["request_id"].isin(fresh["request_id"])]
        mismatches = compare_features(live, offline, features, settings.monitoring_consistency_rtol)
    else:
        mismatches = [FeatureMismatch(f, 0, 0, 0.0, []) for f in features]
    future_requests = sum(1 for v in served.get("future", []) if isinstance(v, list | tuple | np.ndarray) and len(v))
    result = ConsistencyResult(window, service_name, len(served), len(fresh), int(backdated.sum()), mismatches,
                               seconds=time.perf_counter() - t0, future_requests=future_requests,
                               unjudged=read.unjudged)
    if write:
        judged = result.compared >= settings.monitoring_min_rows
        breach = any(f.rate > settings.monitoring_max_mismatch_rate for f in mismatches)
        status = ("breach" if breach else "ok") if judged else "too few rows"
        table = [{"feature": f.feature, "compared": f.compared, "mismatches": f.mismatches, "rate": f.rate,
                  "future": f.future} for f in mismatches]
        examples = [{"feature": f.feature, **e} for f in result.worst() for e in f.examples]
        page = render_table_page("Online/offline consistency", result.headline(),
                                 [("Mismatch rate per feature", table), ("Examples", examples),
                                  ("Logged rows not judged", result.unjudged.table())])
        result.files = write_report(settings, "consistency", {**result.to_dict(), "status": status}, page,
                                    when=datetime.now(UTC))
    return result

