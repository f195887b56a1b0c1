"""The live replay: a period played in event-time order through POST /v1/events and a real stream consumer, each
sampled transaction scored by the real service at its own shifted time.

The promise it proves: every served customer_activity value equals the offline store's at the transaction's
ORIGINAL time t − 1 µs. The oracle is ``tests/oracles.point_in_time`` (brute force from the raw transactions), not
the service, the pipeline SQL or Redis. The period is moved forward by whole days (the small world lies weeks in
the past), so the customers' history moves with it: the first transactions' windows must be the original ones too.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.contracts.activity_log import COVERAGE_KEY, coverage_fields
from mlplatform.contracts.feature_log import read_feature_logs
from mlplatform.data.generator import read_manifest
from mlplatform.features.activity import FEATURES
from mlplatform.features.repo import feast_project
from mlplatform.stores import redis_client
from monitoring.replay import live_replay
from serving.app import create_app
from tests.conftest import process_environ
from tests.oracles import point_in_time, read_raw
from tests.serving.conftest import LiveServer, set_aliases

MLPLATFORM = str(Path(sys.executable).with_name("mlplatform"))
SERVED = [f for f in FEATURES if f != "last_txn_epoch"]  # the feature service's customer_activity features


@pytest.mark.slow
@pytest.mark.parametrize("days", [None, 3])  # to end now (weeks), or 3 days forward: windows overlap the original
def test_every_live_replayed_row_equals_the_offline_store_at_its_original_time(serving_settings, online_world,
                                                                              trained_models, days):
    settings = serving_settings(serving_stream_features=True, serving_api_key="replay-key")
    set_aliases(settings, golden=trained_models.versions[0])
    world = online_world.model_copy(update={"serving_api_key": "replay-key"})
    base = read_manifest(world.data_path)["periods"][0]  # the undrifted period
    if days is not None:  # as when the raw data began long before the logs' backfill: complete only from day 2
        client = redis_client(world)
        client.hset(COVERAGE_KEY, coverage_fields(feast_project(world.feature_repo))[0],
                    (pd.Timestamp(base["start"]) + pd.Timedelta(days=2)).value // 1000)
    consumer = subprocess.Popen([MLPLATFORM, "stream", "run", "--consumer", "replay-test", "--quiet"],
                                env=process_environ(world), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with LiveServer(create_app(settings)) as server:
            now = None if days is None else datetime.fromisoformat(base["end"]) + timedelta(days=days, hours=1)
            result = live_replay(world, url=server.url, period=base["name"], limit=600, speed=1e9, now=now)
            server.stop()  # flushes the feature log
    finally:
        consumer.terminate()
        out = consumer.communicate(timeout=30)[0]
    assert consumer.returncode == 0, out
    assert result.failed == 0 and result.scored == 600 and result.shift_days == (days or result.shift_days) > 0, result

    logs = read_feature_logs(settings.layout.feature_logs_dir)
    served = logs[logs["served"]].reset_index(drop=True)
    assert len(served) == 600
    assert (served["activity_source"] == "logs").all()  # the moved logs cover every replayed transaction
    raw = read_raw(world.data_path)
    original = raw["transactions"].assign(transaction_id=lambda d: d["transaction_id"].astype(str)).set_index(
        "transaction_id").loc[served["transaction_id"].astype(str)]
    shift = pd.Timedelta(days=result.shift_days)
    served_at = pd.to_datetime(served["transaction_ts"].astype("int64"), unit="s", utc=True)
    assert (served_at.dt.floor("s") == (original["event_timestamp"] + shift).dt.floor("s").to_numpy()).all()

    rows = pd.DataFrame({
        "row_id": range(len(served)), "customer_id": original["customer_id"].to_numpy(),
        "merchant_id": original["merchant_id"].to_numpy(), "amount": original["amount"].to_numpy(),
        "transaction_ts": (original["event_timestamp"].astype("int64") // 10**9).to_numpy(),
        "event_timestamp": (original["event_timestamp"] - pd.Timedelta(microseconds=1)).to_numpy(),
    })
    until = raw["transactions"]["event_timestamp"].max() + pd.Timedelta(seconds=1)
    want = point_in_time(raw, rows, until, timedelta(days=30), timedelta(days=60)).set_index("row_id")
    mismatches = []
    for k in range(len(served)):
        for name in SERVED:
            got, exp = served.at[k, name], want.at[k, name]
            if pd.isna(got) != pd.isna(exp) or (not pd.isna(got) and abs(float(got) - float(exp)) > 1e-6 * max(
                    1.0, abs(float(exp)))):
                mismatches.append((served.at[k, "transaction_id"], name, got, exp))
    assert not mismatches, f"{len(mismatches)} of {len(served) * len(SERVED)} values differ: {mismatches[:5]}"
    assert (served["txn_count_1h"] > 0).sum() > 20  # not vacuous: bursts inside the hour were seen
    assert not any(n in SERVED for f in served["future"] for n in f)  # exact at any time: nothing withheld
