"""Freshness in the monitoring reports: p50/p99 of the served customer_activity features' age (``activity_age_s``).

Oracle: the ages planted in the feature log, their percentiles computed with numpy over the served rows that have
one (shadow rows, null ages and files older than the column are not served ages).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.contracts.feature_log import log_schema, read_logs, write_feature_log
from monitoring.consistency import ConsistencyResult, feature_age
from monitoring.logs import LogWindow
from tests.monitoring.conftest import log_rows, monitor_settings, score


def _row(i: int, served: bool = True, age: float | None = None) -> dict:
    return {"request_id": f"r{i}", "logged_at": datetime.now(UTC), "transaction_id": f"t{i}", "customer_id": i,
            "merchant_id": 7, "amount": 10.0, "transaction_ts": 1_790_000_000, "request_fields": None,
            "model_name": "fraud", "model_version": 1, "role": "golden" if served else "shadow", "served": served,
            "fallback": False, "fallback_reason": None, "cached": False, "prediction": 0.5, "missing": [],
            "stale": [], "future": [], "latency_ms": 1.0, "activity_age_s": age, "features": {"x": 1.0}}


def test_percentiles_of_the_logged_ages_old_files_read_as_null(tmp_path):
    rng = np.random.default_rng(7)
    ages = np.concatenate([rng.exponential(0.05, 180), rng.exponential(3600.0, 20)])  # a stream, then stored rows
    rows = [_row(i, age=float(a)) for i, a in enumerate(ages)]
    rows += [_row(1000 + i) for i in range(5)]  # unknown ages
    rows += [_row(2000 + i, served=False, age=1e6) for i in range(5)]  # shadows: never served
    path = write_feature_log(tmp_path, rows)
    old_schema = pa.schema([f for f in log_schema(["x"]) if f.name != "activity_age_s"])  # before the column
    old = [{k: v for k, v in _row(3000 + i).items() if k not in ("activity_age_s", "features")} | {"x": 1.0}
           for i in range(4)]
    pq.write_table(pa.Table.from_pylist(old, schema=old_schema), path.parent / "part-000000-old.parquet")

    read = read_logs(sorted(tmp_path.glob("date=*/part-*.parquet")))
    assert read.unreadable == [] and len(read.frame) == len(rows) + len(old)
    served = read.frame[read.frame["served"]]
    assert served["activity_age_s"].isna().sum() == 5 + 4
    got = feature_age(served)
    p50, p99 = np.percentile(ages, [50, 99])
    assert got is not None and got.rows == len(ages)
    assert got.p50 == p50 and got.p99 == p99
    assert feature_age(served[served["activity_age_s"].isna()]) is None
    assert feature_age(served.drop(columns=["activity_age_s"])) is None

    now = datetime.now(UTC)
    result = ConsistencyResult(LogWindow(now - timedelta(hours=1), now), "fraud_model_v1", len(served), 0, 0, [],
                               feature_age=got)
    assert f"customer_activity age p50 {p50:.3f}s, p99 {p99:.3f}s ({len(ages)} rows)" in result.headline()
    assert result.to_dict()["feature_age"] == {"rows": len(ages), "p50": p50, "p99": p99}


def test_monitor_consistency_and_check_show_the_percentiles(drift_world, tmp_path, cli):
    import pandas as pd

    dw = drift_world
    sample = dw.same.iloc[:300]
    settings = monitor_settings(tmp_path / "logs", dw.settings, monitoring_min_rows=len(sample))
    ts = pd.to_datetime(sample["event_timestamp"], utc=True) + pd.Timedelta(microseconds=1)
    rows = log_rows(sample, dw.names, dw.version, score(dw.booster, sample, dw.names), ts)
    ages = np.random.default_rng(3).gamma(0.5, 120.0, len(rows))
    for row, age in zip(rows, ages, strict=True):
        row["activity_age_s"] = float(age)
    rows[0]["activity_age_s"] = None  # unknown: not counted
    write_feature_log(settings.layout.feature_logs_dir, rows)
    planted = ages[1:]
    p50, p99 = np.percentile(planted, [50, 99])
    shown = f"customer_activity age p50 {p50:.3f}s, p99 {p99:.3f}s ({len(planted)} rows)"

    out = cli(settings, ["monitor", "consistency"])
    assert out.exit_code == 0, out.output
    assert f"freshness: {shown}" in " ".join(out.output.split())
    report = json.loads(sorted(settings.layout.reports_dir.glob("consistency-*.json"))[-1].read_text())
    assert report["feature_age"] == {"rows": len(planted), "p50": p50, "p99": p99}

    out = cli(settings, ["monitor", "check"])
    assert shown.replace(" ", "") in "".join(out.output.split()).replace("│", "")  # the table wraps the summary
    check = json.loads(sorted(settings.layout.reports_dir.glob("check-*.json"))[-1].read_text())
    (part,) = [p for p in check["parts"] if p["name"] == "consistency"]
    assert shown in part["headline"]
