"""A replay judged by monitoring's consistency check at the right times.

Raw transactions of the small world are served again, moved forward by whole days (Δ) to after the data's end, with
their raw ``transaction_id``; the customers' event logs are moved by the same Δ first (every raw transaction
re-applied at t + Δ: ZADD of the same member moves it). The service reads customer_activity from the logs, so at
t + Δ it serves the offline value at the ORIGINAL time t - 1 µs. merchant_risk is left as materialized (this
hand-made replay moves the logs only, not the stored rows as ``monitor replay --live`` does): the service serves
the end state, the offline value at the SERVED time. The check judges a replay at its original time, every feature,
so it must report merchant_risk exactly where the end state differs from the original time.

The oracle is ``tests/oracles.point_in_time`` (brute force from the raw tables), at the original and at the served
times: it shows what each feature equals, and that judging at the other time would have found differences. The
negative control drops one event from one customer's moved log: the check must then report exactly the rows whose
7-day window held that event, all of that customer.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pandas as pd

from mlplatform.contracts.activity_log import TransactionEvent, apply_events, log_key
from mlplatform.features.pipelines import raw_watermark
from monitoring.consistency import run_consistency
from serving.app import create_app
from tests.oracles import point_in_time, read_raw
from tests.serving.conftest import set_aliases

DAY = pd.Timedelta(days=1)
ACTIVITY_FEATURES = ["txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h",
                     "amount_sum_7d", "amount_mean_7d", "distinct_merchants_24h"]
FROM_ACTIVITY = ["amount_vs_mean_7d", "seconds_since_last_txn"]  # on-demand outputs reading customer_activity
MERCHANT_FEATURES = ["fraud_rate_30d", "label_count_30d"]
SAMPLE = 300


def _us(times: pd.Series) -> pd.Series:
    """Times as integer microseconds since the epoch (whatever the column's unit)."""
    return pd.to_datetime(times, utc=True).dt.as_unit("us").astype("int64")


def _events(tx: pd.DataFrame, shift: pd.Timedelta) -> list[TransactionEvent]:
    us = _us(tx["event_timestamp"] + shift)
    return [TransactionEvent(str(i), int(c), int(m), float(a), int(t)) for i, c, m, a, t in
            zip(tx["transaction_id"], tx["customer_id"], tx["merchant_id"], tx["amount"], us, strict=True)]


def _serve(settings, sample: pd.DataFrame, shift: pd.Timedelta) -> list[dict]:
    from fastapi.testclient import TestClient

    bodies = [{"customer_id": int(r.customer_id), "merchant_id": int(r.merchant_id), "amount": float(r.amount),
               "transaction_ts": int((r.event_timestamp + shift).timestamp()), "transaction_id": str(r.transaction_id)}
              for r in sample.itertuples()]
    out: list[dict] = []
    with TestClient(create_app(settings)) as client:  # the lifespan flushes the feature log at exit
        for i in range(0, len(bodies), 100):
            response = client.post("/v1/predict/batch", json={"transactions": bodies[i:i + 100]})
            assert response.status_code == 200, response.text
            out.extend(response.json()["predictions"])
    return out


def _oracle(raw, sample: pd.DataFrame, at: pd.Series, until: pd.Timestamp, store) -> pd.DataFrame:
    """Brute-force values of the service's features for each sampled transaction as of ``at`` (indexed 0..n-1)."""
    rows = pd.DataFrame({
        "row_id": range(len(sample)), "customer_id": sample["customer_id"].to_numpy(),
        "merchant_id": sample["merchant_id"].to_numpy(), "amount": sample["amount"].to_numpy(),
        "transaction_ts": (_us(sample["event_timestamp"]) // 10**6).to_numpy(),
        "event_timestamp": pd.to_datetime(at.to_numpy(), utc=True),
    })
    ttl_c, ttl_m = store.get_feature_view("customer_activity").ttl, store.get_feature_view("merchant_risk").ttl
    return point_in_time(raw, rows, until, ttl_c, ttl_m).set_index("row_id")


def _differs(a, b) -> bool:
    if pd.isna(a) or pd.isna(b):
        return pd.isna(a) != pd.isna(b)
    return not math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)


def test_a_replay_from_the_event_logs_is_judged_at_its_original_time(serving_settings, online_world, trained_models,
                                                                     store):
    from mlplatform.contracts.feature_log import read_feature_logs
    from mlplatform.stores import open_feature_store, redis_client

    settings = serving_settings(serving_stream_features=True)
    set_aliases(settings, golden=trained_models.versions[0])
    (settings.data_path / "raw").symlink_to(online_world.layout.raw_dir)  # the raw ids tell a replay
    raw = read_raw(online_world.data_path)
    tx = raw["transactions"]
    until = raw_watermark(online_world.data_path)  # the feature tables end here
    sample = tx.sample(SAMPLE, random_state=17).sort_values("event_timestamp").reset_index(drop=True)
    shift = math.ceil((until - sample["event_timestamp"].min()) / DAY) * DAY + DAY  # every one after the end
    assert sample["event_timestamp"].min() + shift > until and tx["event_timestamp"].max() + shift < datetime.now(UTC)

    # move every customer's event log forward by the same whole days
    project = open_feature_store(online_world).config.project
    client = redis_client(online_world)
    events = _events(tx, shift)
    with client.pipeline(transaction=False) as pipe:
        assert apply_events(pipe, project, events) == len(tx)
        pipe.execute()
    customer = int(sample["customer_id"].iloc[0])  # its log is its history moved, nothing left at the old times
    moved = _us(tx.loc[tx["customer_id"] == customer, "event_timestamp"] + shift)
    assert sorted(int(v) for _, v in client.zrange(log_key(project, customer), 0, -1, withscores=True)) == sorted(moved)

    answers = _serve(settings, sample, shift)
    assert len(answers) == SAMPLE and not [a for a in answers if a["future"]]

    # the oracle: what was served equals the brute force at the original time for the event-log features and at
    # the served time for merchant_risk (the end state); judged the other way round, both differ for many rows
    logs = read_feature_logs(settings.layout.feature_logs_dir)
    served = logs[logs["served"]].set_index("request_id").loc[[a["request_id"] for a in answers]].reset_index()
    assert (served["activity_source"] == "logs").all()
    assert (served["transaction_id"] == sample["transaction_id"].astype(str)).all()
    original_at = sample["event_timestamp"] - pd.Timedelta(microseconds=1)
    at_original = _oracle(raw, sample, original_at, until, store)
    at_served = _oracle(raw, sample, original_at + shift, until, store)
    wrong_time = {"activity": 0}
    end_state_differs = dict.fromkeys(MERCHANT_FEATURES, 0)
    for k in range(SAMPLE):
        for name in ACTIVITY_FEATURES + FROM_ACTIVITY:
            assert not _differs(served.at[k, name], at_original.at[k, name]), (k, name)
            wrong_time["activity"] += _differs(served.at[k, name], at_served.at[k, name])
        for name in MERCHANT_FEATURES:
            assert not _differs(served.at[k, name], at_served.at[k, name]), (k, name)
            end_state_differs[name] += _differs(served.at[k, name], at_original.at[k, name])
    assert wrong_time["activity"] > SAMPLE and end_state_differs["fraud_rate_30d"] > SAMPLE // 10, wrong_time

    result = run_consistency(settings)
    # every row is a replay, judged at its original time: the event-log features agree, merchant_risk's end state
    # differs exactly where the brute force says it does
    assert (result.requests, result.compared, result.replayed) == (SAMPLE, SAMPLE, SAMPLE)
    assert (result.skipped_backdated, result.skipped_after_offline_end, result.skipped) == (0, 0, {})
    assert result.offline_end == until.to_pydatetime()
    by_name = {f.feature: f for f in result.features}
    for name in ACTIVITY_FEATURES + FROM_ACTIVITY:
        assert (by_name[name].compared, by_name[name].mismatches) == (SAMPLE, 0), (name, by_name[name].examples[:2])
    for name in MERCHANT_FEATURES:
        assert (by_name[name].compared, by_name[name].mismatches) == (SAMPLE, end_state_differs[name]), name
    body = json.loads(result.files.json_path.read_text())
    assert (body["status"], body["replayed"], body["skipped_after_offline_end"]) == ("breach", SAMPLE, 0)

    # negative control: one event missing from one customer's moved log; those rows must be reported
    ts_us = _us(sample["event_timestamp"])
    dropped, victim = None, None
    for c, g in sample.groupby("customer_id"):
        own = tx[tx["customer_id"] == c]
        t = int(ts_us[g.index[-1]])
        before = own[(_us(own["event_timestamp"]) < t).to_numpy()]
        if len(before) and t - int(_us(before["event_timestamp"]).iloc[-1]) < 86_400 * 10**6:
            dropped, victim = before.iloc[-1], int(c)
            break
    assert dropped is not None
    e_us = int(_us(pd.Series([dropped["event_timestamp"]])).iloc[0])
    (member,) = [e.member() for e in _events(dropped.to_frame().T, shift)]
    assert client.zrem(log_key(project, victim), member) == 1
    mark = datetime.now(UTC)
    _serve(settings, sample, shift)
    bad = run_consistency(settings, since=mark, write=False)
    assert (bad.requests, bad.compared) == (SAMPLE, SAMPLE)
    # oracle: the victim's sampled transactions whose 7-day window (t - 7 d <= e <= t - 1 µs) held the event
    seven_days = 7 * 86_400 * 10**6
    hit = [k for k in range(SAMPLE) if int(sample.at[k, "customer_id"]) == victim
           and ts_us[k] - seven_days <= e_us <= ts_us[k] - 1]
    by_name = {f.feature: f for f in bad.features}
    assert by_name["txn_count_7d"].mismatches == len(hit) >= 1
    activity = [f for f in bad.features if f.feature not in MERCHANT_FEATURES]
    assert {e["customer_id"] for f in activity for e in f.examples} == {victim}
    assert all(by_name[n].mismatches == end_state_differs[n] for n in MERCHANT_FEATURES)  # as before
    assert all(f.mismatches <= len(hit) for f in activity)

