"""Independent, brute-force re-derivations of the features from raw data, written without the pipelines' SQL.

They follow the documented meaning of each feature, one entity at a time, in plain Python and numpy.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd

HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)
CUSTOMER_WINDOWS = {"1h": HOUR, "24h": 24 * HOUR, "7d": 7 * DAY}
MERCHANT_WINDOW = 30 * DAY


def read_raw(data_dir) -> dict[str, pd.DataFrame]:
    """All raw tables of a world."""
    raw = data_dir / "raw"
    return {
        "transactions": pd.read_parquet(raw / "transactions").sort_values("event_timestamp"),
        "labels": pd.read_parquet(raw / "labels").sort_values("label_timestamp"),
        "customers": pd.read_parquet(raw / "customers.parquet"),
        "merchants": pd.read_parquet(raw / "merchants.parquet"),
    }


def customer_state(tx: pd.DataFrame, at: pd.Timestamp) -> dict:
    """The customer's window features over (at - w, at] from its own transactions ``tx``, by brute force."""
    out: dict = {}
    upto = tx[tx["event_timestamp"] <= at]
    for name, width in CUSTOMER_WINDOWS.items():
        inside = upto[upto["event_timestamp"] > at - width]
        out[f"txn_count_{name}"] = len(inside)
        if name != "1h":
            out[f"amount_sum_{name}"] = float(sum(inside["amount"]))
            out[f"amount_mean_{name}"] = float(np.mean(inside["amount"])) if len(inside) else None
        if name == "24h":
            out["distinct_merchants_24h"] = len(set(inside["merchant_id"]))
    out["last_txn_epoch"] = int(upto["event_timestamp"].max().timestamp()) if len(upto) else None
    return out


def customer_change_points(tx: pd.DataFrame, until: pd.Timestamp) -> np.ndarray:
    """Every time a customer's window features change: a transaction arrives or leaves a window."""
    ts = tx["event_timestamp"]
    return _as_us(pd.concat([ts, ts + HOUR, ts + 24 * HOUR, ts + 7 * DAY]), until)


def merchant_state(labels: pd.DataFrame, at: pd.Timestamp) -> dict:
    """A merchant's 30-day label counts at ``at``: labels whose label_timestamp is in (at - 30d, at]."""
    inside = labels[(labels["label_timestamp"] <= at) & (labels["label_timestamp"] > at - MERCHANT_WINDOW)]
    n, k = len(inside), int(inside["is_fraud"].sum())
    return {"fraud_count_30d": k, "label_count_30d": n, "fraud_rate_30d": k / n if n else None}


def merchant_change_points(labels: pd.DataFrame, until: pd.Timestamp) -> np.ndarray:
    """Every time a merchant's label counts change: a label arrives or leaves the 30-day window."""
    ts = labels["label_timestamp"]
    return _as_us(pd.concat([ts, ts + MERCHANT_WINDOW]), until)


def _as_us(points: pd.Series, until: pd.Timestamp) -> np.ndarray:
    """Sorted unique change points before ``until``, as integer microseconds since the epoch."""
    us = points.dt.as_unit("us").astype("int64").to_numpy()
    return np.unique(us[us < until.value // 1000])


def _latest_at_or_before(points: np.ndarray | None, t: pd.Timestamp) -> pd.Timestamp | None:
    if points is None:
        return None
    i = np.searchsorted(points, t.value // 1000, side="right") - 1
    return pd.Timestamp(int(points[i]), unit="us", tz="UTC") if i >= 0 else None


def point_in_time(
    raw: dict[str, pd.DataFrame],
    entity_rows: pd.DataFrame,
    until: pd.Timestamp,
    ttl_customer: timedelta,
    ttl_merchant: timedelta,
) -> pd.DataFrame:
    """The fraud feature service's values for each entity row, as Feast should return them.

    A view's value at time T is its state at the latest change point at or before T (the latest feature row),
    and missing when there is none or when that point is older than T - TTL.
    """
    tx_by_c = {c: g for c, g in raw["transactions"].groupby("customer_id")}
    lab = raw["labels"][raw["labels"]["label_timestamp"] < until]
    lab_by_m = {m: g for m, g in lab.groupby("merchant_id")}
    cp_c = {c: customer_change_points(g, until) for c, g in tx_by_c.items()}
    cp_m = {m: merchant_change_points(g, until) for m, g in lab_by_m.items()}
    home = dict(zip(raw["customers"]["customer_id"], raw["customers"]["home_country"], strict=True))
    country = dict(zip(raw["merchants"]["merchant_id"], raw["merchants"]["country"], strict=True))
    empty_c = dict.fromkeys(customer_state(raw["transactions"].iloc[:0], until))
    empty_m = {"fraud_count_30d": None, "label_count_30d": None, "fraud_rate_30d": None}
    records = []
    for row in entity_rows.itertuples(index=False):
        t = pd.Timestamp(row.event_timestamp)
        rec = {"row_id": row.row_id}
        last = _latest_at_or_before(cp_c.get(row.customer_id), t)
        fresh = last is not None and last >= t - ttl_customer
        rec.update(customer_state(tx_by_c[row.customer_id], last) if fresh else empty_c)
        last = _latest_at_or_before(cp_m.get(row.merchant_id), t)
        fresh = last is not None and last >= t - ttl_merchant
        rec.update(merchant_state(lab_by_m[row.merchant_id], last) if fresh else empty_m)
        # on-demand features, from the request and the values above
        ts = int(row.transaction_ts)
        hour = (ts // 3600) % 24
        mean7 = rec.get("amount_mean_7d")
        last_epoch = rec.get("last_txn_epoch")
        h, m = home.get(row.customer_id), country.get(row.merchant_id)
        rec.update(
            log_amount=math.log1p(row.amount),
            amount_vs_mean_7d=row.amount / mean7 if mean7 else None,
            hour_of_day=hour,
            is_night=int(hour < 6),
            is_foreign=None if h is None or m is None else int(h != m),
            seconds_since_last_txn=None if last_epoch is None else ts - last_epoch,
        )
        records.append(rec)
    return pd.DataFrame.from_records(records)


def assert_frames_match(actual: pd.DataFrame, expected: pd.DataFrame, columns: list[str], key: str = "row_id") -> None:
    """Column by column: nulls in the same places, numbers equal within 1e-6 relative."""
    a = actual.set_index(key).sort_index()
    e = expected.set_index(key).sort_index()
    assert list(a.index) == list(e.index)
    problems = []
    for col in columns:
        av = pd.to_numeric(a[col], errors="coerce").astype(float).to_numpy()
        ev = pd.to_numeric(e[col], errors="coerce").astype(float).to_numpy()
        null_mismatch = np.isnan(av) != np.isnan(ev)
        both = ~np.isnan(av) & ~np.isnan(ev)
        value_mismatch = np.zeros_like(both)
        value_mismatch[both] = ~np.isclose(av[both], ev[both], rtol=1e-6, atol=1e-9)
        bad = np.flatnonzero(null_mismatch | value_mismatch)
        if len(bad):
            i = bad[0]
            problems.append(f"{col}: {len(bad)} mismatches, e.g. {a.index[i]}: got {av[i]}, expected {ev[i]}")
    assert not problems, "\n".join(problems)
