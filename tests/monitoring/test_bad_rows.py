"""Monitoring survives any logged row: rows it cannot judge (a transaction time out of range, an infinite value, a
missing value a check needs) are dropped and counted by reason, files it cannot read (corrupt, a required column
missing, a column of the wrong type) are skipped and named, and `monitor check` over such logs ends normally.

Oracles: the bad rows and files are planted by the test, so how many of each there are is known by construction;
the good rows are read back with plain pyarrow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlplatform.contracts.feature_log import log_schema, read_logs, write_feature_log
from mlplatform.errors import ExitCode
from monitoring.logs import (
    CONSISTENCY_NEEDS,
    QUALITY_NEEDS,
    EmptyLogWindow,
    LogWindow,
    read_served,
    screen_rows,
    served_rows,
    unjudged_of,
)
from tests.conftest import make_settings
from tests.monitoring.conftest import log_rows, monitor_settings, score

OUT_OF_RANGE = (10**17, -(10**17))  # whole int64 seconds, but no pandas time: what crashed `monitor check`


def _row(i: int, **changes) -> dict:
    row = {"request_id": f"r{i}", "logged_at": datetime.now(UTC), "transaction_id": f"t{i}", "customer_id": i,
           "merchant_id": 7, "amount": 10.0, "transaction_ts": 1_790_000_000, "request_fields": None,
           "model_name": "fraud", "model_version": 1, "role": "golden", "served": True, "fallback": False,
           "fallback_reason": None, "cached": False, "prediction": 0.5, "missing": [], "stale": [], "future": [],
           "latency_ms": 1.0, "features": {"x": 1.0}}
    row.update(changes)
    return row


def _window() -> LogWindow:
    now = datetime.now(UTC)
    return LogWindow(now - timedelta(hours=1), now + timedelta(minutes=5))


def test_screen_rows_drops_and_counts_what_cannot_be_judged():
    frame = pd.DataFrame({
        "request_id": ["a", None, "c", "d", "e", "f", "g", "h"],
        "transaction_ts": [1_790_000_000, 1_790_000_000, 10**17, -(10**17), np.nan, 1_790_000_000,
                           1_790_000_000, 1_790_000_000],
        "prediction": [0.1, 0.2, 0.3, 0.4, 0.5, np.inf, np.nan, 0.8],
        "amount": [1.0] * 8,
        "x": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -np.inf],
        "y": [np.nan] * 8,  # a null model input is a missing value: judged as one, never dropped
    })
    kept, reasons = screen_rows(frame)
    assert list(kept["request_id"]) == ["a", "e", "g"]  # e: no time (null); g: no prediction - neither required
    assert reasons == {"request_id missing": 1, "transaction_ts out of range": 2, "prediction infinite": 1,
                       "infinite feature value": 1}
    kept, reasons = screen_rows(frame, require=QUALITY_NEEDS)
    assert list(kept["request_id"]) == ["a"]
    assert reasons["transaction_ts missing"] == 1 and reasons["prediction missing"] == 1


def test_unreadable_files_are_skipped_and_named(tmp_path):
    root = tmp_path / "feature_logs"
    good = write_feature_log(root, [_row(i) for i in range(3)])
    day = good.parent
    corrupt = day / "part-000000000001-corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not a parquet file")
    half = day / "part-000000000002-half.parquet"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # cut short, as by a full disk
    no_served = day / "part-000000000003-noserved.parquet"
    schema = pa.schema([f for f in log_schema(["x"]) if f.name != "served"])
    plain = [{k: v for k, v in _row(i).items() if k not in ("features", "served")} | {"x": 1.0} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(plain, schema=schema), no_served)
    text_feature = day / "part-000000000004-text.parquet"
    typed = pa.schema([*(f for f in log_schema([]) if f.name != "x"), ("x", pa.string())])
    pq.write_table(pa.Table.from_pylist([{**_row(9), "x": "abc"}], schema=typed), text_feature)

    read = read_logs(sorted(day.glob("part-*.parquet")))
    assert sorted(read.frame["request_id"]) == ["r0", "r1", "r2"]
    why = {f.path.name: (f.reason, f.rows) for f in read.unreadable}
    assert set(why) == {corrupt.name, half.name, no_served.name, text_feature.name}
    assert why[corrupt.name][0].startswith("unreadable:") and why[corrupt.name][1] is None
    assert why[no_served.name] == ("lacks the column(s) served", 4)
    assert why[text_feature.name][0].startswith("column x is string, not double") and why[text_feature.name][1] == 1


def test_read_served_counts_bad_rows_and_files_and_says_so_when_none_is_left(tmp_path):
    settings = make_settings(tmp_path)
    root = settings.layout.feature_logs_dir
    write_feature_log(root, [_row(0), _row(1, transaction_ts=10**17), _row(2, features={"x": float("inf")}),
                             _row(3, served=False, transaction_ts=10**17)])  # a shadow row: not served, not counted
    (root / f"date={datetime.now(UTC):%Y-%m-%d}" / "part-000000000009-bad.parquet").write_bytes(b"garbage")
    served = served_rows(settings, _window())
    assert list(served.frame["request_id"]) == ["r0"]
    assert served.unjudged.reasons == {"transaction_ts out of range": 1, "infinite feature value": 1}
    assert [f.path.name for f in served.unjudged.files] == ["part-000000000009-bad.parquet"]
    assert served.unjudged.to_dict()["rows"] == 2
    assert "2 logged row(s) could not be judged" in served.unjudged.describe()
    assert "1 log file(s) could not be read" in served.unjudged.describe()
    assert unjudged_of(read_served(settings, _window())).reasons == served.unjudged.reasons
    # a missing id is only a reason where the check needs it
    assert list(served_rows(settings, _window(), require=CONSISTENCY_NEEDS).frame["request_id"]) == ["r0"]

    only_bad = make_settings(tmp_path / "only-bad")
    write_feature_log(only_bad.layout.feature_logs_dir, [_row(5, transaction_ts=-(10**17))])
    with pytest.raises(EmptyLogWindow, match="1 logged row\\(s\\) could not be judged"):
        read_served(only_bad, _window())


def test_monitor_check_over_logs_with_bad_rows_and_files_ends_normally(drift_world, tmp_path, cli):
    """The drift world's served rows, plus rows with out-of-range times, infinite and NaN features, a corrupt file
    and a file without ``served``: every part runs, the check exits as it would without them."""
    dw = drift_world
    n = len(dw.same)
    settings = monitor_settings(tmp_path / "logs", dw.settings, monitoring_min_rows=n)
    (settings.data_path / "raw").symlink_to(dw.settings.layout.raw_dir)  # labels live with the raw data: quality
    ts = pd.to_datetime(dw.same["event_timestamp"], utc=True) + pd.Timedelta(microseconds=1)
    good = log_rows(dw.same, dw.names, dw.version, score(dw.booster, dw.same, dw.names), ts)
    bad = []
    for i, r in enumerate(good[:6]):  # copies of labelled rows: quality would join them
        copy = {**r, "request_id": f"bad-{i}", "features": dict(r["features"])}
        if i < 4:
            copy["transaction_ts"] = OUT_OF_RANGE[i % 2]
        else:
            copy["features"][dw.names[0]] = float("inf")
        bad.append(copy)
    nan = {**good[6], "request_id": "nan-0", "features": {k: float("nan") for k in good[6]["features"]}}
    root = settings.layout.feature_logs_dir
    path = write_feature_log(root, good + bad + [nan])
    (path.parent / "part-zzzz-corrupt.parquet").write_bytes(b"PAR1 not really")
    schema = pa.schema([f for f in log_schema([]) if f.name != "served"])
    orphan = [{k: v for k, v in _row(i).items() if k not in ("features", "served")} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(orphan, schema=schema), path.parent / "part-zzzz-noserved.parquet")

    result = cli(settings, ["monitor", "check"])
    assert "Traceback" not in result.output
    assert result.exit_code == ExitCode.OK, result.output  # as over the good rows alone (test_verdicts)

    window = LogWindow(datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(minutes=5))
    checked = served_rows(settings, window, require=CONSISTENCY_NEEDS)
    assert checked.unjudged.reasons == {"transaction_ts out of range": 4, "infinite feature value": 2}
    assert sorted(f.path.name for f in checked.unjudged.files) == ["part-zzzz-corrupt.parquet",
                                                                    "part-zzzz-noserved.parquet"]
    assert checked.unjudged.file_rows == 3
    assert len(checked.frame) == n + 1 and "nan-0" in set(checked.frame["request_id"])  # NaN: a missing value
