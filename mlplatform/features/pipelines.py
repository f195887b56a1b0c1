"""DuckDB SQL pipelines that turn raw events into feature tables (Parquet) Feast reads.

Window features are *exact at any time*: besides a row at each transaction (the state just after it), a row is
emitted whenever a transaction leaves a window (t + 1h, t + 24h, t + 7d), so the latest row at or before any
time T describes the windows (T - w, T]. A transaction scored at time t is therefore looked up at
``t - 1 microsecond``: its features never include the transaction itself.

Merchant risk counts only labels that had *arrived* (``label_timestamp``) in the 30 days up to the row's time,
so it never sees a label before the label existed.

Every table carries ``event_timestamp`` and ``created_timestamp`` (the data watermark of the build that
computed the row: deterministic, so rebuilding gives identical files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.data.generator import read_manifest
from mlplatform.errors import DataNotFoundError, InvalidInputError
from mlplatform.files import atomic_path
from mlplatform.timeutil import utc

# The longest window a feature looks back over; incremental builds re-read this much raw data before --since.
CUSTOMER_LOOKBACK = timedelta(days=7)
MERCHANT_LOOKBACK = timedelta(days=30)
ONE_US = "1 microsecond"

CUSTOMER_ACTIVITY_SQL = """
WITH tx AS (
    SELECT customer_id, merchant_id, amount, event_timestamp AS ts
    FROM read_parquet($tx_glob)
    WHERE event_timestamp >= $read_from AND event_timestamp < $until
),
exits AS (
    SELECT customer_id, ts + INTERVAL 1 HOUR AS ts FROM tx
    UNION SELECT customer_id, ts + INTERVAL 24 HOUR FROM tx
    UNION SELECT customer_id, ts + INTERVAL 7 DAY FROM tx
),
rows AS (
    SELECT customer_id, merchant_id, amount, ts FROM tx
    UNION ALL
    SELECT customer_id, NULL, NULL, ts FROM exits
),
win AS (
    SELECT
        customer_id,
        ts,
        count(amount) OVER w1h AS txn_count_1h,
        count(amount) OVER w24h AS txn_count_24h,
        count(amount) OVER w7d AS txn_count_7d,
        coalesce(sum(amount) OVER w24h, 0.0) AS amount_sum_24h,
        avg(amount) OVER w24h AS amount_mean_24h,
        coalesce(sum(amount) OVER w7d, 0.0) AS amount_sum_7d,
        avg(amount) OVER w7d AS amount_mean_7d,
        count(DISTINCT merchant_id) OVER w24h AS distinct_merchants_24h,
        max(CASE WHEN amount IS NOT NULL THEN ts END) OVER wall AS last_txn_ts
    FROM rows
    WINDOW
        w1h AS (PARTITION BY customer_id ORDER BY ts
                RANGE BETWEEN INTERVAL 1 HOUR - INTERVAL 1 MICROSECOND PRECEDING AND CURRENT ROW),
        w24h AS (PARTITION BY customer_id ORDER BY ts
                 RANGE BETWEEN INTERVAL 24 HOUR - INTERVAL 1 MICROSECOND PRECEDING AND CURRENT ROW),
        w7d AS (PARTITION BY customer_id ORDER BY ts
                RANGE BETWEEN INTERVAL 7 DAY - INTERVAL 1 MICROSECOND PRECEDING AND CURRENT ROW),
        wall AS (PARTITION BY customer_id ORDER BY ts RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT
    customer_id,
    txn_count_1h, txn_count_24h, txn_count_7d,
    round(amount_sum_24h, 6) AS amount_sum_24h, round(amount_mean_24h, 6) AS amount_mean_24h,
    round(amount_sum_7d, 6) AS amount_sum_7d, round(amount_mean_7d, 6) AS amount_mean_7d,
    distinct_merchants_24h,
    CAST(epoch(last_txn_ts) AS BIGINT) AS last_txn_epoch,
    ts AS event_timestamp,
    $until AS created_timestamp
FROM win
WHERE ts >= $since AND ts < $until
QUALIFY row_number() OVER (PARTITION BY customer_id, ts ORDER BY txn_count_7d) = 1
ORDER BY event_timestamp, customer_id
"""

MERCHANT_RISK_SQL = """
WITH lab AS (
    SELECT merchant_id, is_fraud, label_timestamp AS ts
    FROM read_parquet($labels_glob)
    WHERE label_timestamp >= $read_from AND label_timestamp < $until
),
rows AS (
    SELECT merchant_id, is_fraud, ts FROM lab
    UNION ALL
    SELECT merchant_id, NULL, ts + INTERVAL 30 DAY FROM lab
),
win AS (
    SELECT
        merchant_id,
        ts,
        coalesce(sum(is_fraud) OVER w30d, 0) AS fraud_count_30d,
        count(is_fraud) OVER w30d AS label_count_30d
    FROM rows
    WINDOW w30d AS (PARTITION BY merchant_id ORDER BY ts
                    RANGE BETWEEN INTERVAL 30 DAY - INTERVAL 1 MICROSECOND PRECEDING AND CURRENT ROW)
)
SELECT
    merchant_id,
    CAST(fraud_count_30d AS BIGINT) AS fraud_count_30d,
    CAST(label_count_30d AS BIGINT) AS label_count_30d,
    CASE WHEN label_count_30d > 0 THEN fraud_count_30d / label_count_30d END AS fraud_rate_30d,
    ts AS event_timestamp,
    $until AS created_timestamp
FROM win
WHERE ts >= $since AND ts < $until
QUALIFY row_number() OVER (PARTITION BY merchant_id, ts ORDER BY label_count_30d) = 1
ORDER BY event_timestamp, merchant_id
"""

CUSTOMER_REALTIME_SQL = """
SELECT
    customer_id,
    amount AS last_amount,
    merchant_id AS last_merchant_id,
    event_timestamp,
    $until AS created_timestamp
FROM read_parquet($tx_glob)
WHERE event_timestamp >= $since AND event_timestamp < $until AND event_timestamp >= $read_from
ORDER BY event_timestamp, customer_id
"""

CUSTOMER_PROFILE_SQL = """
SELECT customer_id, home_country, event_timestamp, $until AS created_timestamp
FROM read_parquet($path) ORDER BY customer_id
"""

MERCHANT_PROFILE_SQL = """
SELECT merchant_id, category, country, event_timestamp, $until AS created_timestamp
FROM read_parquet($path) ORDER BY merchant_id
"""

# Feature table name -> (sql, lookback before --since, which raw input it reads)
WINDOWED_TABLES = {
    "customer_activity": (CUSTOMER_ACTIVITY_SQL, CUSTOMER_LOOKBACK),
    "merchant_risk": (MERCHANT_RISK_SQL, MERCHANT_LOOKBACK),
    "customer_realtime": (CUSTOMER_REALTIME_SQL, timedelta(0)),
}
PROFILE_TABLES = {
    "customer_profile": (CUSTOMER_PROFILE_SQL, "customers.parquet"),
    "merchant_profile": (MERCHANT_PROFILE_SQL, "merchants.parquet"),
}
FEATURE_TABLES = tuple(WINDOWED_TABLES) + tuple(PROFILE_TABLES)
STATE_FILE = "_build_state.json"


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote: rows appended per table, total rows per table, and the new watermark."""

    appended: dict[str, int]
    total: dict[str, int]
    since: datetime | None
    until: datetime
    nothing_new: bool = False  # an incremental build with no raw data past ``since``: no file was touched


def raw_watermark(data_dir: Path) -> pd.Timestamp:
    """End (exclusive) of the raw data: the end of the last generated period."""
    manifest = read_manifest(data_dir)
    return utc(max(p["end"] for p in manifest["periods"]))


def read_build_state(features_dir: Path) -> dict:
    """The state of the last build (its watermark), or an empty dict."""
    path = features_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def compute_table(
    con: duckdb.DuckDBPyConnection, name: str, data_dir: Path, since: pd.Timestamp | None, until: pd.Timestamp
) -> pa.Table:
    """Run one pipeline; returns rows with ``since <= event_timestamp < until`` (all rows if ``since`` is None)."""
    raw = data_dir / "raw"
    if name in PROFILE_TABLES:
        sql, fname = PROFILE_TABLES[name]
        return con.sql(sql, params={"path": str(raw / fname), "until": until}).to_arrow_table()
    sql, lookback = WINDOWED_TABLES[name]
    lower = since if since is not None else pd.Timestamp("1970-01-01", tz="UTC")
    params = {
        "read_from": lower - lookback,
        "since": lower,
        "until": until,
    }
    if name in ("customer_activity", "customer_realtime"):
        params["tx_glob"] = str(raw / "transactions" / "*.parquet")
    else:
        params["labels_glob"] = str(raw / "labels" / "*.parquet")
    return con.sql(sql, params=params).to_arrow_table()


def _normalise(table: pa.Table) -> pa.Table:
    """Timestamps as microseconds in UTC, the form Feast reads and writes."""
    fields = []
    for field in table.schema:
        if pa.types.is_timestamp(field.type):
            fields.append(pa.field(field.name, pa.timestamp("us", tz="UTC")))
        else:
            fields.append(field)
    return table.cast(pa.schema(fields))


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write Parquet (zstd) so readers never see half a file."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _nothing_new(features_dir: Path, watermark: pd.Timestamp) -> BuildResult:
    """The result of an incremental build from the end of the raw data: nothing appended, every file untouched."""
    total = {name: pq.ParquetFile(features_dir / f"{name}.parquet").metadata.num_rows for name in FEATURE_TABLES}
    return BuildResult({name: 0 for name in FEATURE_TABLES}, total, watermark.to_pydatetime(),
                       watermark.to_pydatetime(), nothing_new=True)


def build_features(data_dir: Path, since: datetime | str | None = None) -> BuildResult:
    """Compute every feature table from raw data; with ``since``, recompute only rows at or after it and append.

    ``since="last"`` continues from the previous build's watermark. Rows already stored at or after ``since``
    are replaced, never duplicated, so running the same build twice changes nothing. When ``since`` is the end of
    the raw data (nothing new arrived), no file is written at all (``BuildResult.nothing_new``).
    """
    features_dir = data_dir / "features"
    until = raw_watermark(data_dir)
    state = read_build_state(features_dir)
    if since == "last":
        if "until" not in state:
            raise DataNotFoundError("--since last: no previous build found; run `mlplatform features build` first.")
        since_ts: pd.Timestamp | None = utc(state["until"])
    elif since is None:
        since_ts = None
    else:
        try:
            since_ts = utc(since)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"--since: cannot read {since!r} as a timestamp ({exc})") from exc
    if since_ts is not None and since_ts > until:
        raise InvalidInputError(
            f"--since {since_ts.isoformat()} is after the end of the raw data ({until.isoformat()})."
        )
    if since_ts is not None and any(not (features_dir / f"{t}.parquet").exists() for t in WINDOWED_TABLES):
        raise DataNotFoundError("--since needs an earlier full build; run `mlplatform features build` first.")
    if since_ts is not None and since_ts == until and all((features_dir / f"{t}.parquet").exists()
                                                         for t in FEATURE_TABLES):
        return _nothing_new(features_dir, since_ts)

    appended: dict[str, int] = {}
    total: dict[str, int] = {}
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    try:
        for name in FEATURE_TABLES:
            path = features_dir / f"{name}.parquet"
            if name in PROFILE_TABLES or since_ts is None:
                table = _normalise(compute_table(con, name, data_dir, None, until))
                appended[name] = table.num_rows
                if since_ts is not None and path.exists():  # recomputed whole: only rows beyond the old ones are new
                    appended[name] = max(0, table.num_rows - pq.ParquetFile(path).metadata.num_rows)
            else:
                new = _normalise(compute_table(con, name, data_dir, since_ts, until))
                old = pq.read_table(path)
                keep = old.filter(
                    pa.compute.less(old["event_timestamp"], pa.scalar(since_ts, pa.timestamp("us", tz="UTC")))
                )
                table = pa.concat_tables([keep, new.cast(keep.schema)])
                appended[name] = new.num_rows
            write_parquet_atomic(table, path)
            total[name] = table.num_rows
    finally:
        con.close()
    (features_dir / STATE_FILE).write_text(json.dumps({"until": until.isoformat()}))
    return BuildResult(
        appended, total, since_ts.to_pydatetime() if since_ts is not None else None, until.to_pydatetime()
    )
