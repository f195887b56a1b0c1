"""`monitor check` after a live replay tells skew from drift: the whole journey a user runs, on a world of its own.

The world (its own seed and size, not the fixtures' worlds) is generated, built, applied, materialized; a model is
trained through the feature service and promoted with the real commands; the service and a stream consumer run;
`monitor replay --live`'s function plays a period through them.

* The undrifted base period: `monitor check` exits 0 (no skew breach, consistency clean, live quality judged), and
  the live ROC AUC is within 0.03 of the model's offline ROC AUC on the same transactions and labels. The offline
  side is independent of the service: the brute-force oracle's features (``tests/oracles.point_in_time``) at each
  transaction's original time t − 1 µs, the registered booster loaded from its file, scikit-learn's AUC.
* The drifted period: skew breaches, naming the generator's drifted features (``world.DRIFTED_FEATURES``: how
  ``mlplatform/data/world.py`` shifts amounts and foreign merchants) and none of the undrifted ones
  (``world.UNDRIFTED_FEATURES``), while consistency stays clean (the replay is faithful).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlplatform.data import world
from mlplatform.data.generator import WorldSpec, read_manifest
from mlplatform.errors import ExitCode
from tests.conftest import make_settings, process_environ

pytestmark = pytest.mark.slow
MLPLATFORM = str(Path(sys.executable).with_name("mlplatform"))
WORLD = WorldSpec(customers=450, days=21, seed=57, start=datetime(2026, 9, 20, tzinfo=UTC), drift_days=7)
SCORED = 2500  # transactions scored per replay (every event of the period goes through the stream)


def _run(settings, *args: str, ok=(0,), timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([MLPLATFORM, *args], env=process_environ(settings), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode in ok, f"mlplatform {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def journey(redis_dbs, tmp_path_factory):
    """The user's journey up to a promoted golden, on a fresh world in its own Redis database."""
    root = tmp_path_factory.mktemp("live-check")
    config = root / "training.yaml"
    config.write_text(yaml.safe_dump({"num_boost_round": 120, "early_stopping_rounds": 20}))
    redis_dbs.flush(0)
    settings = make_settings(root / "data", redis_addr=redis_dbs.addr(0), training_config=config,
                             serving_api_key="live-check-key", serving_stream_features=True,
                             feature_log_flush_seconds=0.2, serving_latency_budget_ms=0.0)
    _run(settings, "data", "generate", "--customers", str(WORLD.customers), "--days", str(WORLD.days), "--seed",
         str(WORLD.seed), "--start", WORLD.start.isoformat(), "--drift-days", str(WORLD.drift_days), "--drift")
    _run(settings, "features", "build")
    _run(settings, "apply")
    _run(settings, "materialize")
    _run(settings, "dataset", "build", "--as-of", WORLD.base_end.isoformat())
    _run(settings, "train")
    _run(settings, "models", "promote", "1")
    return settings


def _replay(settings, period: str):
    """Serve (in this process), consume the stream (a real `mlplatform stream run`), replay ``period`` live."""
    from monitoring.replay import live_replay
    from serving.app import create_app
    from tests.serving.conftest import LiveServer

    consumer = subprocess.Popen([MLPLATFORM, "stream", "run", "--consumer", f"check-{period}", "--quiet"],
                                env=process_environ(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    try:
        with LiveServer(create_app(settings)) as server:
            result = live_replay(settings, url=server.url, period=period, limit=SCORED, speed=1e9)
            server.stop()  # flushes the feature log
    finally:
        consumer.terminate()
        out = consumer.communicate(timeout=60)[0]
    assert consumer.returncode == 0, out
    assert result.failed == 0 and result.scored == SCORED and result.shift_days > 0, result
    assert result.stored_rows > 0, result  # merchant_risk's rows moved with the period
    return result


def _check(settings, since: datetime) -> tuple[int, dict[str, dict]]:
    """`mlplatform monitor check --since`: its exit code and each part's JSON report (by kind)."""
    done = _run(settings, "monitor", "check", "--since", since.isoformat(), ok=(0, ExitCode.BREACH))
    reports = {}
    for path in sorted((settings.layout.reports_dir).glob("*.json")):
        body = json.loads(path.read_text())
        if body.get("kind") and pd.Timestamp(body["created_at"]) >= pd.Timestamp(since):
            reports[body["kind"]] = body | {"_out": done.stdout}
    return done.returncode, reports


def _served_since(settings, since: datetime) -> pd.DataFrame:
    from mlplatform.contracts.feature_log import read_feature_logs

    logs = read_feature_logs(settings.layout.feature_logs_dir)
    logs = logs[logs["served"] & (pd.to_datetime(logs["logged_at"], utc=True) >= pd.Timestamp(since))]
    return logs.reset_index(drop=True)


def _offline_predictions(settings, served: pd.DataFrame, shift_days: int) -> np.ndarray:
    """The golden's scores on the brute-force oracle's features at each transaction's ORIGINAL time t − 1 µs."""
    import xgboost as xgb

    from mlplatform.models.registry import ModelRegistry
    from mlplatform.stores import open_feature_store
    from tests.oracles import point_in_time, read_raw

    raw = read_raw(settings.data_path)
    original = raw["transactions"].assign(transaction_id=lambda d: d["transaction_id"].astype(str)).set_index(
        "transaction_id").loc[served["transaction_id"].astype(str)]
    rows = pd.DataFrame({
        "row_id": range(len(served)), "customer_id": original["customer_id"].to_numpy(),
        "merchant_id": original["merchant_id"].to_numpy(), "amount": original["amount"].to_numpy(),
        "transaction_ts": (original["event_timestamp"].astype("int64") // 10**6).to_numpy(),
        "event_timestamp": (original["event_timestamp"] - pd.Timedelta(microseconds=1)).to_numpy(),
    })
    assert (pd.to_numeric(served["transaction_ts"]).to_numpy()
            == rows["transaction_ts"].to_numpy() + shift_days * 86_400).all()  # scored at their own shifted time
    store = open_feature_store(settings)
    until = raw["transactions"]["event_timestamp"].max() + pd.Timedelta(seconds=1)
    oracle = point_in_time(raw, rows, until, store.get_feature_view("customer_activity").ttl,
                           store.get_feature_view("merchant_risk").ttl).set_index("row_id").sort_index()
    golden = ModelRegistry(settings).get(1)
    booster = xgb.Booster(model_file=str(golden.booster_path))
    X = oracle[golden.feature_names].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    return np.asarray(booster.inplace_predict(X), dtype="float64")


def test_an_undrifted_live_replay_passes_the_check_with_the_offline_auc(journey):
    from sklearn.metrics import roc_auc_score

    from monitoring.quality import join_labels, read_labels

    settings = journey
    base = read_manifest(settings.data_path)["periods"][0]["name"]
    mark = datetime.now(UTC)
    result = _replay(settings, base)
    code, reports = _check(settings, mark)
    out = reports["check"]["_out"]
    assert code == 0, out
    assert {p["name"]: p["status"] for p in reports["check"]["parts"]} == {
        "skew": "ok", "consistency": "ok", "quality": "ok"}, out
    consistency = reports["consistency"]
    assert consistency["compared"] == SCORED and consistency["replayed"] == SCORED, out
    assert all(f["mismatches"] == 0 for f in consistency["features"]), out
    assert consistency["feature_age"]["p99"] < 1.0, out  # each scored once everything before it was applied

    # live quality against the same transactions scored offline: the oracle's features, the registered booster
    served = _served_since(settings, mark)
    assert len(served) == SCORED
    offline = _offline_predictions(settings, served, result.shift_days)
    assert np.allclose(served["prediction"].to_numpy(dtype="float64"), offline, rtol=1e-5, atol=1e-6)
    as_of = pd.Timestamp(reports["quality"]["as_of"]).to_pydatetime()
    joined = join_labels(served.assign(offline=offline), read_labels(settings.data_path, as_of), as_of)
    (version,) = reports["quality"]["by_version"]
    assert version["rows"] == len(joined) >= settings.monitoring_min_labeled_rows
    live_auc = roc_auc_score(joined["is_fraud"], joined["prediction"])
    offline_auc = roc_auc_score(joined["is_fraud"], joined["offline"])
    assert abs(version["roc_auc"] - live_auc) < 1e-9
    assert abs(live_auc - offline_auc) <= 0.03, (live_auc, offline_auc)
    # labels arrive on the replay's clock: the last days' transactions are mostly unlabeled yet
    assert len(joined) < 0.95 * SCORED


def test_a_drifted_live_replay_names_the_drifted_features_only(journey):
    settings = journey
    drifted = read_manifest(settings.data_path)["periods"][1]
    assert drifted["drifted"]
    mark = datetime.now(UTC)
    _replay(settings, drifted["name"])
    code, reports = _check(settings, mark)
    out = reports["check"]["_out"]
    assert code == ExitCode.BREACH, out
    parts = {p["name"]: p for p in reports["check"]["parts"]}
    assert parts["skew"]["status"] == "breach" and parts["consistency"]["status"] == "ok", out
    named = set(reports["skew"]["drifted"])
    assert not named & set(world.UNDRIFTED_FEATURES), named
    assert len(named & set(world.DRIFTED_FEATURES)) >= 4, named


def test_streaming_off_with_hourly_materialization_names_the_stale_velocity_features(journey):
    """The service reads customer_activity from stored rows and the replay writes them like an hourly
    `materialize` (no stream): the check finds the velocity features stale against the offline store at t − 1 µs,
    and the freshness figure says how old they were (up to the hour)."""
    from datetime import timedelta

    from monitoring.replay import live_replay
    from serving.app import create_app
    from tests.serving.conftest import LiveServer

    settings = journey.model_copy(update={"serving_stream_features": False})
    base = read_manifest(settings.data_path)["periods"][0]["name"]
    mark = datetime.now(UTC)
    with LiveServer(create_app(settings)) as server:
        result = live_replay(settings, url=server.url, period=base, limit=SCORED, speed=1e9,
                             materialize_every=timedelta(hours=1))
        server.stop()
    assert result.failed == 0 and result.scored == SCORED and result.waited == 0, result
    code, reports = _check(settings, mark)
    out = reports["check"]["_out"]
    assert code == ExitCode.BREACH, out
    consistency = reports["consistency"]
    rates = {f["feature"]: f["mismatches"] / f["compared"] for f in consistency["features"]}
    named = {f for f, rate in rates.items() if rate > settings.monitoring_max_mismatch_rate}
    assert {"txn_count_1h", "txn_count_24h", "amount_sum_24h", "seconds_since_last_txn"} <= named, rates
    assert not named & {"log_amount", "hour_of_day", "is_night", "is_foreign"}, rates  # from the request: exact
    assert rates["txn_count_1h"] > 0.05, rates
    # stale when a transaction came in the last hour, not always: the stored last_txn_epoch moved with the world
    assert rates["seconds_since_last_txn"] < 0.5, rates
    age = consistency["feature_age"]
    assert 600 < age["p50"] < 3000 and age["p99"] <= 3600, age  # an hourly schedule: up to an hour old
    assert all(b.startswith("consistency") for b in reports["check"]["breaches"] if "txn_count" in b), out
