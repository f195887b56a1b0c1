"""Monitoring survives any logged row: rows it cannot judge (a transaction time out of range, an infinite value, a
missing value a check needs, no ``served`` flag, a request logged twice) are dropped and counted by reason, files it
cannot read (corrupt, a required column missing, a column of the wrong type) are skipped and named, `monitor check`
over such logs ends normally, and every report, the check's headline and its console output say how many rows of
each kind were left out.

Oracles: the bad rows and files are planted by the test, so how many of each there are is known by construction
(and which part sees which of them follows from the columns each part documents it needs); the good rows are read
back with plain pyarrow."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import monitoring.steps  # noqa: F401 - registers monitor.check, the daily pipeline's step
from mlplatform.contracts.feature_log import log_schema, read_logs, write_feature_log
from mlplatform.errors import ExitCode
from mlplatform.steps import run_step
from monitoring.logs import (
    CONSISTENCY_NEEDS,
    DUPLICATE,
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
                             _row(3, served=False, transaction_ts=10**17),  # a shadow row: not served, not counted
                             _row(0), _row(4, served=None), _row(6, customer_id=None)])  # r0 twice; answer or shadow?
    (root / f"date={datetime.now(UTC):%Y-%m-%d}" / "part-000000000009-bad.parquet").write_bytes(b"garbage")
    served = served_rows(settings, _window())
    assert list(served.frame["request_id"]) == ["r0", "r6"]
    assert served.unjudged.reasons == {"transaction_ts out of range": 1, "infinite feature value": 1,
                                       "served missing": 1, DUPLICATE: 1}
    assert [f.path.name for f in served.unjudged.files] == ["part-000000000009-bad.parquet"]
    summary = served.unjudged.to_dict()
    assert (summary["logged"], summary["rows"]) == (6, 4)  # r0 r1 r2 r0 r4 r6 (r3 is a shadow)
    assert summary["unreadable_files"][0]["path"] == f"date={datetime.now(UTC):%Y-%m-%d}/part-000000000009-bad.parquet"
    assert "4 of 6 logged row(s) could not be judged" in served.unjudged.describe()
    assert "served missing: 1" in served.unjudged.describe()
    assert "1 log file(s) could not be read" in served.unjudged.describe()
    assert unjudged_of(read_served(settings, _window())).reasons == served.unjudged.reasons
    # a missing id is only a reason where the check needs it
    needs = served_rows(settings, _window(), require=CONSISTENCY_NEEDS)
    assert list(needs.frame["request_id"]) == ["r0"] and needs.unjudged.reasons["customer_id missing"] == 1

    only_bad = make_settings(tmp_path / "only-bad")
    write_feature_log(only_bad.layout.feature_logs_dir, [_row(5, transaction_ts=-(10**17))])
    with pytest.raises(EmptyLogWindow, match="1 of 1 logged row\\(s\\) could not be judged") as caught:
        read_served(only_bad, _window())
    assert caught.value.unjudged.reasons == {"transaction_ts out of range": 1}


def _latest(settings, kind: str) -> dict:
    return json.loads(sorted(settings.layout.reports_dir.glob(f"{kind}-*.json"))[-1].read_text())


def test_monitor_check_over_logs_with_bad_rows_and_files_ends_normally(drift_world, tmp_path, cli):
    """The drift world's served rows, plus planted rows monitoring cannot judge (out-of-range times, infinite
    features, no customer id, no prediction, no ``served`` flag, a request logged twice), a NaN row (a missing value:
    judged) and three files it cannot read: every part runs, the check exits as it would without them, and every
    report, the headline and the console name the planted counts per reason."""
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
    bad += [{**good[7], "request_id": "no-customer", "customer_id": None},
            {**good[8], "request_id": "no-prediction", "prediction": None},
            {**good[9], "request_id": "no-served-flag", "served": None},
            dict(good[10])]  # the same request logged twice
    root = settings.layout.feature_logs_dir
    path = write_feature_log(root, good + bad + [nan])
    (path.parent / "part-zzzz-corrupt.parquet").write_bytes(b"PAR1 not really")
    schema = pa.schema([f for f in log_schema([]) if f.name != "served"])
    orphan = [{k: v for k, v in _row(i).items() if k not in ("features", "served")} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(orphan, schema=schema), path.parent / "part-zzzz-noserved.parquet")
    text = dw.names[1]  # a model input stored as text: a file only the parts reading that input cannot read
    typed = pa.schema([*log_schema([f for f in dw.names if f != text]), (text, pa.string())])
    texts = [{k: v for k, v in g.items() if k != "features"} | g["features"] | {text: "abc", "request_id": f"t{i}"}
             for i, g in enumerate(good[11:13])]
    pq.write_table(pa.Table.from_pylist(texts, schema=typed), path.parent / "part-zzzz-text.parquet")

    result = cli(settings, ["monitor", "check"])
    assert "Traceback" not in result.output
    assert result.exit_code == ExitCode.OK, result.output  # as over the good rows alone (test_verdicts)

    # what was planted, per part: skew reads no transaction time, customer or prediction; quality reads no model
    # inputs (so it reads the text file); consistency needs the customer; quality the prediction
    logged = n + 11  # good + 6 bad copies + NaN + no customer + no prediction + no served flag + the repeat
    files = {f"{path.parent.name}/part-zzzz-{name}.parquet" for name in ("corrupt", "noserved", "text")}
    planted = {"transaction_ts out of range": 4, "infinite feature value": 2, "customer_id missing": 1,
               "prediction missing": 1, "served missing": 1, DUPLICATE: 1}
    expected = {
        "check": (logged, planted, files, 3 + 2),
        "skew": (logged, {k: planted[k] for k in ("infinite feature value", "served missing", DUPLICATE)}, files,
                 5),
        "consistency": (logged, {k: v for k, v in planted.items() if k != "prediction missing"}, files, 5),
        "quality": (logged + 2, {k: planted[k] for k in ("transaction_ts out of range", "prediction missing",
                                                          "served missing", DUPLICATE)},
                    files - {next(f for f in files if f.endswith("text.parquet"))}, 3),
    }
    check = _latest(settings, "check")
    reports = {"check": check, **{kind: _latest(settings, kind) for kind in ("skew", "consistency", "quality")}}
    for kind, (rows, reasons, unreadable, file_rows) in expected.items():
        got = reports[kind]["unjudged"]
        assert (got["logged"], got["reasons"], got["rows"]) == (rows, reasons, sum(reasons.values())), kind
        assert {f["path"] for f in got["unreadable_files"]} == unreadable, kind
        assert str(root) not in json.dumps(got), kind  # no absolute path in a report the service shows
        assert got["unreadable_file_rows"] == file_rows, kind
        assert f"{sum(reasons.values()):,} of {rows:,} logged row" in reports[kind]["headline"], kind
    assert {p["name"]: p["unjudged"]["reasons"] for p in check["parts"]} == {
        k: v[1] for k, v in expected.items() if k != "check"}

    # the headline and the console name every reason with its planted count
    console = " ".join(result.output.split())
    line = f"{sum(planted.values())} of {logged:,} logged row(s) could not be judged"
    assert line in check["headline"] and line in console
    for why, count in planted.items():
        assert f"{why}: {count}" in check["headline"] and f"{why}: {count}" in console
    assert "3 log file(s) could not be read, 5 row(s)" in console
    assert all(f in console for f in files) and str(root) not in console
    # the pages a person opens say so too
    page = (settings.layout.reports_dir / check["html"]).read_text()
    assert all(f"<td>{html.escape(why)}</td><td>{count}</td>" in page for why, count in planted.items())
    skew_page = (settings.layout.reports_dir / reports["skew"]["html"]).read_text()
    assert html.escape(reports["skew"]["unjudged"]["summary"]) in skew_page
    # and the daily pipeline's step
    step = run_step("monitor.check", settings, request_retrain=False)
    assert step["unjudged"] == {"logged": logged, "rows": sum(planted.values()), "reasons": dict(sorted(
        planted.items())), "unreadable_files": 3}

    window = LogWindow(datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(minutes=5))
    checked = served_rows(settings, window, require=CONSISTENCY_NEEDS)
    assert len(checked.frame) == n + 2 and "nan-0" in set(checked.frame["request_id"])  # NaN: a missing value
    assert {"no-prediction", good[10]["request_id"]} <= set(checked.frame["request_id"])  # the repeat: kept once


def test_a_part_without_a_judgeable_row_is_not_judged_and_nothing_judgeable_exits_3(drift_world, tmp_path, cli):
    """Every served row without a prediction: quality has no row it can judge (named, with the count), skew still
    judges; and when no row at all can be judged, the check stops with exit 3 saying how many were logged."""
    dw = drift_world
    n = len(dw.same)
    settings = monitor_settings(tmp_path / "no-predictions", dw.settings, monitoring_min_rows=n)
    ts = pd.to_datetime(dw.same["event_timestamp"], utc=True) + pd.Timedelta(microseconds=1)
    rows = [{**r, "prediction": None} for r in log_rows(dw.same, dw.names, dw.version, np.zeros(n), ts)]
    write_feature_log(settings.layout.feature_logs_dir, rows)

    result = cli(settings, ["monitor", "check"])
    assert result.exit_code == ExitCode.OK, result.output  # skew judged, none breached
    parts = {p["name"]: p for p in _latest(settings, "check")["parts"]}
    assert parts["skew"]["judged"] and parts["skew"]["unjudged"]["rows"] == 0
    assert parts["quality"]["status"] == "no judgeable rows" and not parts["quality"]["judged"]
    assert parts["quality"]["unjudged"]["reasons"] == {"prediction missing": n}
    assert f"{n:,} of {n:,} logged row(s) could not be judged (prediction missing: {n:,})" \
        in parts["quality"]["why_not"]
    assert "quality not judged" in " ".join(result.output.split())

    # rows no part can judge: each part stops at what it reads (skew: the infinite inputs; the others: the times)
    nothing = monitor_settings(tmp_path / "nothing", dw.settings)
    broken = [{**r, "transaction_ts": OUT_OF_RANGE[0], "features": {k: float("inf") for k in r["features"]}}
              for r in rows[:5]]
    write_feature_log(nothing.layout.feature_logs_dir, broken + [{**r, "served": None} for r in rows[5:7]])
    out = cli(nothing, ["monitor", "check"])
    assert out.exit_code == ExitCode.NOT_FOUND, out.output
    text = " ".join(out.output.split())
    assert "none of the 7 served requests logged in" in text
    assert "7 of 7 logged row(s) could not be judged (infinite feature value: 5, served missing: 2)" in text
    assert not list(nothing.layout.reports_dir.glob("check-*.json"))  # nothing to report on, as before
