"""Batch scores are right: equal to the registered booster on an independently built (brute-force) feature frame and
on Feast's own retrieval (its stock DuckDB offline store), the same whatever the chunking, and equal to the online
service's scores for the same transactions replayed at the same times."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scoring.batch import read_scores_metadata, score_window
from tests.oracles import point_in_time, read_raw
from tests.scoring.conftest import SERVICE_VIEWS

US = pd.Timedelta(microseconds=1)
REPLAYED = 60  # transactions replayed through the live service


@pytest.fixture(scope="module")
def scored(scoring_world):
    """One batch-scoring run over the window, in small chunks (several of them)."""
    w = scoring_world
    result = score_window(w.settings, w.start, w.end, chunk_rows=60)
    return result, pd.read_parquet(result.path)


def window_transactions(w) -> pd.DataFrame:
    tx = read_raw(w.settings.data_path)["transactions"]
    return tx[(tx["event_timestamp"] >= w.start) & (tx["event_timestamp"] < w.end)].copy()


def test_output_carries_model_service_and_run(scoring_world, scored):
    w = scoring_world
    result, scores = scored
    tx = window_transactions(w)
    assert result.rows == len(tx) > 100 and result.chunks > 1
    assert scores["transaction_id"].dtype == "int64" == tx["transaction_id"].dtype  # as raw data has them
    assert sorted(scores["transaction_id"]) == sorted(tx["transaction_id"])
    assert set(scores["model_version"]) == {w.version} and set(scores["feature_service"]) == {"fraud_model_v1"}
    assert set(scores["run_id"]) == {result.run_id} and set(scores["model_name"]) == {"fraud"}
    meta = read_scores_metadata(result.path)
    assert meta["run_id"] == result.run_id and meta["model_version"] == w.version
    assert meta["feature_service"] == "fraud_model_v1" and meta["rows"] == len(tx)
    assert not list(result.path.parent.glob(".*.tmp")), "no temporary file left behind"
    assert pq.ParquetFile(result.path).num_row_groups == result.chunks


def test_scores_equal_booster_on_brute_force_features(scoring_world, scored):
    """Oracle: tests/oracles.point_in_time re-derives every feature from raw data, one row at a time."""
    from mlplatform.features.pipelines import raw_watermark
    from mlplatform.models.registry import ModelRegistry

    w = scoring_world
    _, scores = scored
    tx = window_transactions(w)
    ts = tx["event_timestamp"].dt.tz_convert("UTC")
    entity = pd.DataFrame(
        {
            "row_id": tx["transaction_id"].to_numpy(),
            "customer_id": tx["customer_id"].to_numpy(),
            "merchant_id": tx["merchant_id"].to_numpy(),
            "amount": tx["amount"].to_numpy(dtype=float),
            "transaction_ts": (ts.dt.as_unit("us").astype("int64") // 10**6).to_numpy(),
            "event_timestamp": (ts - US).to_numpy(),
        }
    )
    raw = read_raw(w.settings.data_path)
    frame = point_in_time(
        raw, entity, raw_watermark(w.settings.data_path), pd.Timedelta(days=30), pd.Timedelta(days=60)
    )
    booster = ModelRegistry(w.settings).load_booster(w.version)
    X = frame[w.feature_names].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    expected = pd.Series(booster.inplace_predict(X), index=frame["row_id"].astype("int64"))
    got = scores.set_index("transaction_id")["score"]
    diff = np.abs(got.loc[expected.index].to_numpy() - expected.to_numpy())
    assert diff.max() < 1e-6, f"{(diff >= 1e-6).sum()} of {len(diff)} scores differ from the oracle"


def test_scores_equal_online_service_replayed_at_the_same_times(scoring_world, scored, redis_db, redis_addr):
    """Replay: walk forward through the window; before each transaction at time t, materialize incrementally up to
    t - 1 µs (so Redis holds exactly each entity's latest feature row at or before t - 1 µs, what the point-in-time
    join picks offline), then ask the live service (create_app + TestClient) to score it with its own time."""
    from fastapi.testclient import TestClient

    from mlplatform.features.materialize import materialize
    from serving.app import create_app

    w = scoring_world
    _, scores = scored
    tx = window_transactions(w).sort_values("event_timestamp")
    sample = tx.iloc[np.unique(np.linspace(0, len(tx) - 1, REPLAYED).astype(int))]
    assert len(sample) == REPLAYED
    first = sample["event_timestamp"].iloc[0]
    settings = w.settings.model_copy(update={"redis_addr": redis_addr})  # the world's, online in this run's Redis
    materialize(settings, end=(first - US).to_pydatetime(), full=True, views=SERVICE_VIEWS)
    online = {}
    serving = settings.model_copy(
        update={"serving_latency_budget_ms": 0.0, "serving_cache_size": 0, "data_dir": w.settings.data_path / "serving"}
    )
    with TestClient(create_app(serving)) as client:
        for row in sample.itertuples(index=False):
            t = pd.Timestamp(row.event_timestamp).tz_convert("UTC")
            materialize(settings, end=(t - US).to_pydatetime(), views=SERVICE_VIEWS)
            answer = client.post(
                "/v1/predict",
                json={
                    "customer_id": int(row.customer_id),
                    "merchant_id": int(row.merchant_id),
                    "amount": float(row.amount),
                    "transaction_ts": int(t.timestamp()),
                    "transaction_id": str(row.transaction_id),
                },
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model"]["version"] == w.version and not body["fallback"], body
            online[int(row.transaction_id)] = body["score"]
    batch = scores.set_index("transaction_id")["score"]
    diffs = {tid: abs(batch[tid] - s) for tid, s in online.items()}
    assert max(diffs.values()) < 1e-6, {k: v for k, v in diffs.items() if v >= 1e-6}
    assert len(set(np.round(list(online.values()), 6))) > 3, "the replayed transactions are not all alike"


def test_scores_equal_booster_on_feasts_own_retrieval(scoring_world, scored, tmp_path):
    """Oracle: Feast's stock DuckDB offline store (not ours) over the same registry, on-demand view included."""
    from mlplatform.features.service import transaction_entity_rows
    from mlplatform.models.registry import ModelRegistry
    from tests.features.test_incremental import feast_stock_store

    w = scoring_world
    _, scores = scored
    stock = feast_stock_store(w.settings, tmp_path)
    entity = transaction_entity_rows(window_transactions(w))
    frame = stock.get_historical_features(entity_df=entity, features=stock.get_feature_service("fraud_model_v1"))
    frame = frame.to_df()
    booster = ModelRegistry(w.settings).load_booster(w.version)
    X = frame[w.feature_names].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    expected = pd.Series(booster.inplace_predict(X), index=frame["transaction_id"].astype("int64"))
    got = scores.set_index("transaction_id")["score"].loc[expected.index]
    assert len(expected) == len(scores) and np.abs(got.to_numpy() - expected.to_numpy()).max() < 1e-12


def test_chunking_does_not_change_a_score(scoring_world, scored, tmp_path):
    """One chunk for the whole window, and chunks of 7 transactions: the same scores as chunks of 60."""
    w = scoring_world
    _, scores = scored
    base = scores.set_index("transaction_id")["score"]
    for rows in (10**6, 7):
        result = score_window(w.settings, w.start, w.end, chunk_rows=rows, output=tmp_path / f"s{rows}.parquet")
        other = pd.read_parquet(result.path).set_index("transaction_id")["score"]
        assert (result.chunks == 1) == (rows == 10**6)
        assert other.loc[base.index].to_numpy().tolist() == base.to_numpy().tolist()


def test_bad_input_is_a_message_and_nothing_is_written(scoring_world, cli):
    w = scoring_world
    out_dir = w.settings.data_path / "bad-scores"
    unknown = cli(
        w.settings,
        [
            "score",
            "--start",
            "2026-10-07",
            "--end",
            "2026-10-08",
            "--model",
            "99",
            "--output",
            str(out_dir / "x.parquet"),
        ],
    )
    assert unknown.exit_code == 3 and "no version 99" in unknown.output and "Traceback" not in unknown.output
    reversed_ = cli(w.settings, ["score", "--start", "2026-10-08", "--end", "2026-10-07"])
    assert reversed_.exit_code == 2 and "must be before" in reversed_.output
    garbage = cli(w.settings, ["score", "--start", "yesterday-ish", "--end", "2026-10-07"])
    assert garbage.exit_code == 2 and "ISO-8601" in garbage.output
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_a_run_failing_midway_leaves_no_file(scoring_world, tmp_path):
    w = scoring_world
    target = tmp_path / "out" / "scores.parquet"

    def explode(done, total):
        if done > 0:
            raise KeyboardInterrupt  # as if the operator pressed Ctrl-C after the first chunk

    with pytest.raises(KeyboardInterrupt):
        score_window(w.settings, w.start, w.end, output=target, chunk_rows=50, on_progress=explode)
    assert not target.exists() and not list(target.parent.iterdir())


def test_window_past_the_feature_build_is_refused(scoring_world, tmp_path):
    from mlplatform.errors import DataNotFoundError

    w = scoring_world
    import json

    state = w.settings.layout.features_dir / "_build_state.json"
    saved = state.read_text()
    state.write_text(json.dumps({"until": w.start.isoformat()}))
    try:
        with pytest.raises(DataNotFoundError, match="features are built up to"):
            score_window(w.settings, w.start, w.end, output=tmp_path / "s.parquet")
    finally:
        state.write_text(saved)
