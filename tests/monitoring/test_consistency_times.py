"""When the consistency check recomputes a served row, and which rows it cannot judge yet (no Redis, no service).

Oracles: the times and sources written into each hand-made row, the repo's feature definitions, the feature
tables' own Parquet files; never the check's output.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monitoring.consistency import (
    NOT_WHOLE_DAYS,
    ConsistencyResult,
    after_end_reason,
    from_event_logs,
    offline_end,
    recompute_times,
    served_times_us,
    view_as_of,
    view_sources,
)
from monitoring.logs import LogWindow

US = 1_000_000
DAY_US = 86_400 * US
END = datetime(2026, 10, 16, tzinfo=UTC)
END_US = int(END.timestamp()) * US
RAW = {"101": END_US - 5 * DAY_US, "102": END_US - 2 * DAY_US + 7 * US, "103": END_US - 1 * DAY_US}


def _raw_dir(tmp_path):
    folder = tmp_path / "raw" / "transactions"
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"transaction_id": [int(i) for i in RAW], "customer_id": [1, 2, 3],
                          "merchant_id": [7, 7, 7], "amount": [1.0, 2.0, 3.0],
                          "event_timestamp": pd.to_datetime(list(RAW.values()), unit="us", utc=True)})
    frame.to_parquet(folder / "base.parquet")
    return tmp_path / "raw"


def _served(rows: list[tuple[str | None, int, str | None]]) -> pd.DataFrame:
    """Logged rows from (transaction_id, served time in µs, activity_source)."""
    return pd.DataFrame({"transaction_id": [r[0] for r in rows], "transaction_ts": [r[1] // US for r in rows],
                         "transaction_time_us": [r[1] for r in rows], "activity_source": [r[2] for r in rows]})


def test_replays_are_placed_at_their_original_time_and_rows_after_the_end_skipped(tmp_path):
    raw = _raw_dir(tmp_path)
    three_days = 3 * DAY_US
    rows = [
        ("101", RAW["101"] + three_days, "logs"),  # a replay, whole days: every feature at the original time
        ("102", RAW["102"] + three_days + 5 * US, "logs"),  # event-log features moved by no whole days: not placed
        ("103", RAW["103"] + three_days, "rows"),  # a replay from stored rows: the original time too
        ("999", END_US + DAY_US, "logs"),  # not a raw transaction, from the logs after the end: not judged yet
        ("101", RAW["101"], "logs"),  # at its own raw time: no replay
        (None, END_US, "logs"),  # t - 1 µs is the tables' last instant: judged
        ("abc", END_US + 1, "logs"),  # t - 1 µs is the end itself: not in the tables
        ("104", END_US + DAY_US, None),  # an older log (no source): stored rows, at the served time
        ("102", RAW["102"] + three_days + 5 * US, "rows"),  # stored rows, no whole days: no replay, served time
    ]
    timing = recompute_times(_served(rows), raw, END)
    served = [r[1] for r in rows]
    assert timing.served_us.tolist() == served
    assert timing.from_logs.tolist() == [True, True, False, True, True, True, True, False, False]
    assert timing.replayed.tolist() == [True, False, True, False, False, False, False, False, False]
    assert timing.at_us.tolist() == [RAW["101"], served[1], RAW["103"], *served[3:]]
    after = after_end_reason(END)
    assert timing.skip == [None, NOT_WHOLE_DAYS, None, after, None, None, after, None, None]


def test_replays_after_the_end_of_the_tables_wait_for_them(tmp_path):
    raw = _raw_dir(tmp_path)
    early = datetime(2026, 10, 12, tzinfo=UTC)  # tables built only up to before 103's original time
    timing = recompute_times(_served([("103", RAW["103"] + 2 * DAY_US, "logs"),
                                      ("101", RAW["101"] + 2 * DAY_US, "logs")]), raw, early)
    assert timing.skip == [after_end_reason(early), None]


def test_without_raw_transactions_nothing_is_a_replay(tmp_path):
    timing = recompute_times(_served([("101", RAW["101"] + DAY_US, "logs")]), tmp_path / "nowhere", END)
    assert timing.replayed.tolist() == [False] and timing.at_us.tolist() == [RAW["101"] + DAY_US]


def test_exact_times_are_used_only_where_they_lie_in_the_logged_second():
    frame = pd.DataFrame({"transaction_ts": [100, 100, 100],
                          "transaction_time_us": pd.array([100 * US + 5, 101 * US, None], dtype="Int64")})
    assert served_times_us(frame).tolist() == [100 * US + 5, 100 * US, 100 * US]
    assert served_times_us(frame.drop(columns="transaction_time_us")).tolist() == [100 * US] * 3


def test_logs_written_before_the_new_columns_read_as_stored_rows_in_whole_seconds(tmp_path):
    from mlplatform.contracts.feature_log import log_schema, read_logs, write_feature_log

    row = {"request_id": "old", "logged_at": datetime.now(UTC), "transaction_id": "1", "customer_id": 1,
           "merchant_id": 2, "amount": 3.0, "transaction_ts": 1_790_000_000, "served": True, "missing": [],
           "stale": [], "latency_ms": 1.0, "x": 1.0}
    new_columns = ("future", "activity_source", "transaction_time_us")
    old_schema = pa.schema([f for f in log_schema(["x"]) if f.name not in new_columns])
    old = tmp_path / "date=2026-10-10" / "part-old.parquet"
    old.parent.mkdir()
    pq.write_table(pa.Table.from_pylist([row], schema=old_schema), old)
    new = write_feature_log(tmp_path, [{**{k: v for k, v in row.items() if k != "x"}, "request_id": "new",
                                        "activity_source": "logs", "transaction_time_us": 1_790_000_000 * US + 9,
                                        "features": {"x": 1.0}}])
    frame = read_logs([old, new]).frame.set_index("request_id")
    assert frame.loc["old", "activity_source"] is None and pd.isna(frame.loc["old", "transaction_time_us"])
    frame = frame.loc[["old", "new"]]
    assert from_event_logs(frame).tolist() == [False, True]
    assert served_times_us(frame).tolist() == [1_790_000_000 * US, 1_790_000_000 * US + 9]


def test_replays_and_event_log_activity_need_no_back_dating_check():
    rows = pd.DataFrame({"event_timestamp": pd.to_datetime([1, 2, 3], unit="s", utc=True)})
    from_logs, replayed = np.array([True, False, False]), np.array([False, True, False])
    as_of = view_as_of(["customer_activity", "merchant_risk"], rows, from_logs, replayed)
    assert as_of["customer_activity"].isna().tolist() == [True, True, False]
    assert as_of["merchant_risk"].isna().tolist() == [False, True, False]
    assert as_of["merchant_risk"].iloc[2] == rows["event_timestamp"].iloc[2]


def test_the_offline_end_is_the_build_watermark_else_just_after_the_newest_row(store, applied_world, tmp_path):
    from mlplatform.features.pipelines import raw_watermark

    sources = view_sources(store, "fraud_model_v1")
    assert offline_end(sources) == raw_watermark(applied_world.data_path).to_pydatetime()
    # the same tables without their build state: each table's newest row + 1 µs, the earliest of them
    copies = []
    for name, keys, path, ts_col in sources:
        target = tmp_path / f"{name}.parquet"
        shutil.copy(path, target)
        copies.append((name, keys, str(target), ts_col))
    newest = min(pd.read_parquet(p, columns=[c])[c].max() for _, _, p, c in copies)
    assert offline_end(copies) == (newest + pd.Timedelta(microseconds=1)).to_pydatetime()
    assert offline_end([]) is None


@pytest.mark.parametrize("reasons", [{}, {NOT_WHOLE_DAYS: 2}])
def test_every_skip_reason_shows_in_the_headline_json_and_page_rows(reasons):
    from mlplatform.settings import Settings
    from monitoring.check import consistency_why_not

    after = after_end_reason(END)
    window = LogWindow(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    result = ConsistencyResult(window, "fraud_model_v1", 20 + sum(reasons.values()), 10, 4, [],
                               skipped_after_offline_end=6, offline_end=END, skipped={after: 6, **reasons},
                               replayed=3)
    headline = result.headline()
    assert "10 of" in headline and "4 back-dated skipped" in headline and "3 replayed" in headline
    assert f"6 after the offline data's end ({END.isoformat()}) skipped" in headline
    assert ("2 skipped: shift is not whole days" in headline) == bool(reasons)
    body = result.to_dict()
    assert (body["skipped_after_offline_end"], body["offline_end"], body["replayed"]) == (6, END.isoformat(), 3)
    assert body["skipped"] == {after: 6, **reasons}
    table = {r["reason"]: r["requests"] for r in result.skip_table()}
    assert table[after] == 6 and sum(table.values()) == result.requests - result.compared
    why = consistency_why_not(result, Settings(_env_file=None, monitoring_min_rows=100))
    assert f"6 after the offline data's end ({END.isoformat()}) skipped" in why
