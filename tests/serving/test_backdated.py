"""Back-dated requests: a transaction at t is scored only with rows known at t − 1 µs, never with newer ones.

Redis holds each entity's newest row. A request dated before that row must not use it: the feature is withheld
and listed in ``future`` (on-demand outputs built on it too). Oracle: the brute-force point-in-time values of
``tests/oracles.py`` at t − 1 µs, from the raw tables (no pipeline SQL, no Feast, no Redis). For every feature of
every answer: the served value equals the oracle's, or it is listed in ``future``, or it is listed in ``stale`` /
``missing`` and the oracle has no value either. Never a value from after the request.

The unit tests at the top run ``OnlineFeatureReader.assemble`` on hand-built Redis replies (no Redis needed).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from mlplatform.features.pipelines import raw_watermark
from serving.app import create_app
from serving.online_features import OnlineFeatureReader
from tests.oracles import customer_change_points, merchant_change_points, point_in_time, read_raw
from tests.serving.conftest import booster_scores, set_aliases

US = 1_000_000
CUSTOMER_FEATURES = ["txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h",
                     "amount_sum_7d", "amount_mean_7d", "distinct_merchants_24h"]
MERCHANT_FEATURES = ["fraud_rate_30d", "label_count_30d"]
FROM_ACTIVITY = ["amount_vs_mean_7d", "seconds_since_last_txn"]  # on-demand outputs read from customer_activity
REQUEST_ONLY = ["log_amount", "hour_of_day", "is_night"]  # on-demand outputs of the request alone


# --- assemble on hand-built replies -------------------------------------------------------------------------------
def _us(when: str) -> int:
    return pd.Timestamp(when).value // 1000


ROW_AT = _us("2026-10-10T12:00:00Z")  # the customer_activity row's event time
ACTIVITY = {"txn_count_1h": 1, "txn_count_24h": 3, "txn_count_7d": 9, "amount_sum_24h": 150.0,
            "amount_mean_24h": 50.0, "amount_sum_7d": 450.0, "amount_mean_7d": 50.0, "distinct_merchants_24h": 2,
            "last_txn_epoch": ROW_AT // US - 100}
RISK = {"fraud_count_30d": 1, "label_count_30d": 4, "fraud_rate_30d": 0.25}


def _encode(value) -> bytes:
    from feast.protos.feast.types.Value_pb2 import Value

    if isinstance(value, str):
        return Value(string_val=value).SerializeToString()
    if isinstance(value, int):
        return Value(int64_val=value).SerializeToString()
    return Value(double_val=float(value)).SerializeToString()


def _timestamp(us: int) -> bytes:
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=us // US, nanos=(us % US) * 1000).SerializeToString()


def _replies(reader: OnlineFeatureReader, rows: dict[str, tuple[int, dict] | None]) -> list[list[bytes | None]]:
    """One request's HMGET replies: per key group, each view's feature fields then its ``_ts`` field."""
    out = []
    for group in reader.groups:
        reply: list[bytes | None] = []
        for read in group.views:
            row = rows.get(read.view)
            reply.extend(None if row is None else _encode(row[1][f]) for f in read.features)
            reply.append(None if row is None else _timestamp(row[0]))
        assert len(reply) == len(group.fields)
        out.append(reply)
    return out


def _world(activity_at: int | None = ROW_AT, profile_at: int = _us("2026-01-01T00:00:00Z"),
           risk_at: int | None = ROW_AT - 20 * 86_400 * US) -> dict[str, tuple[int, dict] | None]:
    return {
        "customer_activity": None if activity_at is None else (activity_at, ACTIVITY),
        "customer_profile": (profile_at, {"home_country": "DE"}),
        "merchant_risk": None if risk_at is None else (risk_at, RISK),
        "merchant_profile": (profile_at, {"country": "FR", "category": "grocery"}),
    }


@pytest.fixture()
def reader(store) -> OnlineFeatureReader:
    return OnlineFeatureReader(store, store.get_feature_service("fraud_model_v1"))


def _assemble(reader: OnlineFeatureReader, t_us: int, rows, enforce_ttl: bool = True):
    request = {"customer_id": 1, "merchant_id": 2, "amount": 250.0, "transaction_ts": t_us // US}
    feats = reader.assemble([request], _replies(reader, rows), [t_us], enforce_ttl=enforce_ttl)
    values, missing, stale, future = feats.values[0], feats.missing[0], feats.stale[0], feats.future[0]
    # each flagged name has no value, and a name is flagged for one reason only
    assert all(values[n] is None for n in missing + stale + future)
    assert len(set(missing) | set(stale) | set(future)) == len(missing) + len(stale) + len(future)
    return values, missing, stale, future


def test_a_row_at_the_requests_as_of_time_is_used(reader):
    values, missing, stale, future = _assemble(reader, ROW_AT + 1, _world())  # as of t - 1 µs = the row's time
    assert (missing, stale, future) == ([], [], [])
    assert {n: values[n] for n in CUSTOMER_FEATURES} == {n: ACTIVITY[n] for n in CUSTOMER_FEATURES}
    assert values["amount_vs_mean_7d"] == 250.0 / 50.0
    assert values["seconds_since_last_txn"] == (ROW_AT + 1) // US - ACTIVITY["last_txn_epoch"]
    assert values["fraud_rate_30d"] == 0.25 and values["is_foreign"] == 1


@pytest.mark.parametrize("before_us", [0, 1, 3600 * US, 9 * 86_400 * US])
def test_a_row_newer_than_the_request_is_withheld_and_flagged_future(reader, before_us):
    t = ROW_AT - before_us  # at t = the row's time, t - 1 µs is before it
    values, missing, stale, future = _assemble(reader, t, _world())
    assert future == CUSTOMER_FEATURES + FROM_ACTIVITY  # the service's order: direct features, then on-demand
    assert (missing, stale) == ([], [])
    assert all(values[n] is not None for n in REQUEST_ONLY + MERCHANT_FEATURES + ["is_foreign"])
    assert values["log_amount"] == math.log1p(250.0) and values["hour_of_day"] == (t // US // 3600) % 24


def test_feast_semantics_without_checks_serve_the_newest_row(reader):
    values, _, _, future = _assemble(reader, ROW_AT - 3600 * US, _world(), enforce_ttl=False)
    assert future == [] and values["txn_count_7d"] == ACTIVITY["txn_count_7d"]


def test_stale_missing_and_future_stay_apart(reader):
    # a row past customer_activity's 30-day TTL is stale, not future; an absent merchant row is missing
    t = ROW_AT + 31 * 86_400 * US
    _, missing, stale, future = _assemble(reader, t, _world(risk_at=None))
    assert stale == CUSTOMER_FEATURES + FROM_ACTIVITY and future == [] and missing == MERCHANT_FEATURES
    # a merchant row newer than the request: its features are future, the customer's still exact
    values, missing, stale, future = _assemble(reader, ROW_AT + 1, _world(risk_at=ROW_AT + 2))
    assert future == MERCHANT_FEATURES and (missing, stale) == ([], [])
    assert values["txn_count_24h"] == ACTIVITY["txn_count_24h"]


def test_an_on_demand_output_with_a_future_source_is_future_even_beside_a_stale_one(reader):
    # customer_activity past its TTL (stale) and customer_profile newer than the request (future): is_foreign
    # reads the withheld profile, so it is unknown at t (future), never reported as surely empty (stale)
    t = ROW_AT + 31 * 86_400 * US
    values, missing, stale, future = _assemble(reader, t, _world(profile_at=t))
    assert stale == CUSTOMER_FEATURES
    assert future == ["amount_vs_mean_7d", "is_foreign", "seconds_since_last_txn"] and missing == []
    assert values["fraud_rate_30d"] == 0.25


# --- back-dated requests through the service, against the brute-force oracle --------------------------------------
def _requests(raw: dict[str, pd.DataFrame], until: pd.Timestamp, seed: int = 13) -> pd.DataFrame:
    """Requests (customer, merchant, amount, t in µs) at many times inside the data, around stored rows' times."""
    rng = np.random.default_rng(seed)
    tx, labels = raw["transactions"], raw["labels"]
    lab = labels[labels["label_timestamp"] < until]
    customers = rng.choice(tx["customer_id"].unique(), 40, replace=False)
    merchants = lab["merchant_id"].unique()
    start_us = tx["event_timestamp"].min().value // 1000
    until_us = until.value // 1000
    out: list[tuple[int, int, int, str]] = []  # customer, merchant, t_us, why
    for c in customers:
        points = customer_change_points(tx[tx["customer_id"] == c], until)  # this customer's stored row times
        newest = int(points[-1])
        earlier = rng.choice(points[:-1], 3) if len(points) > 1 else []
        for e, why in [(newest, "newest"), *((int(p), "earlier") for p in earlier)]:
            for d in (-1, 0, 1, US):  # just before, exactly at, just after, a second after
                out.append((int(c), int(rng.choice(merchants)), e + d, f"customer {why} {d:+d}"))
        for t in rng.integers(start_us, until_us, 6):
            out.append((int(c), int(rng.choice(merchants)), int(t), "inside"))
    for m in rng.choice(merchants, 20, replace=False):
        newest = int(merchant_change_points(lab[lab["merchant_id"] == m], until)[-1])
        for d in (-1, 0, 1, US):
            out.append((int(rng.choice(customers)), int(m), newest + d, f"merchant newest {d:+d}"))
    for t in rng.integers(until_us, until_us + 6 * 3600 * US, 60):  # after every row: all exact
        out.append((int(rng.choice(customers)), int(rng.choice(merchants)), int(t), "after"))
    frame = pd.DataFrame(out, columns=["customer_id", "merchant_id", "t_us", "why"])
    frame["amount"] = np.round(rng.lognormal(3.3, 0.9, len(frame)), 2)
    return frame


def _oracle(raw, frame: pd.DataFrame, until: pd.Timestamp, store, t_us: pd.Series) -> pd.DataFrame:
    """Brute-force point-in-time features at t − 1 µs for each request (indexed like ``frame``)."""
    rows = pd.DataFrame({
        "row_id": frame.index, "customer_id": frame["customer_id"], "merchant_id": frame["merchant_id"],
        "amount": frame["amount"], "transaction_ts": frame["t_us"] // US,
        "event_timestamp": pd.to_datetime(t_us - 1, unit="us", utc=True),
    })
    ttl_c = store.get_feature_view("customer_activity").ttl
    ttl_m = store.get_feature_view("merchant_risk").ttl
    return point_in_time(raw, rows, until, ttl_c, ttl_m).set_index("row_id")


def _iso(t_us: int) -> str:
    return pd.Timestamp(t_us, unit="us", tz="UTC").isoformat()


def _future_counts(metrics_text: str) -> dict[str, float]:
    found = re.findall(r'^mlplatform_future_features_total\{feature="([^"]+)"\} (\S+)$', metrics_text, re.M)
    return {name: float(v) for name, v in found}


@pytest.mark.parametrize("stream_features", [False, True], ids=["stored rows", "event logs"])
def test_backdated_requests_are_point_in_time_or_flagged_future(serving_settings, trained_models, online_world,
                                                                store, stream_features):
    """With the stored rows, customer_activity is withheld before its newest row; from the customers' event logs
    (which cover the whole small world) it is exact at every time, never withheld."""
    from fastapi.testclient import TestClient

    from mlplatform.contracts.feature_log import read_feature_logs
    from mlplatform.models.registry import ModelRegistry

    settings = serving_settings(serving_stream_features=stream_features)
    golden = trained_models.versions[0]
    set_aliases(settings, golden=golden)
    names = trained_models.feature_names
    raw = read_raw(online_world.data_path)
    until = raw_watermark(online_world.data_path)  # features are built up to here; Redis holds each newest row
    frame = _requests(raw, until)
    oracle = _oracle(raw, frame, until, store, frame["t_us"])
    if stream_features:  # the logs know the windows at any t, also after the feature tables' end (exits after it)
        later = _oracle(raw, frame, until + pd.Timedelta(days=60), store, frame["t_us"])
        for name in [*CUSTOMER_FEATURES, *FROM_ACTIVITY]:
            oracle[name] = later[name]
    # what Redis holds (the value the old service served to every request): the oracle after every row
    newest = _oracle(raw, frame, until, store, pd.Series(until.value // 1000 + 10 * 86_400 * US, index=frame.index))

    answers: list[dict] = []
    with TestClient(create_app(settings)) as client:
        bodies = [{"customer_id": int(r.customer_id), "merchant_id": int(r.merchant_id), "amount": float(r.amount),
                   "timestamp": _iso(int(r.t_us))} for r in frame.itertuples()]
        for body in bodies[:25]:  # the single endpoint too
            response = client.post("/v1/predict", json=body)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        for i in range(25, len(bodies), 200):
            response = client.post("/v1/predict/batch", json={"transactions": bodies[i:i + 200]})
            assert response.status_code == 200, response.text
            answers.extend(response.json()["predictions"])
        metrics = _future_counts(client.get("/metrics").text)
    assert len(answers) == len(frame)
    logs = read_feature_logs(settings.layout.feature_logs_dir)
    logged = logs[logs["served"]].set_index("request_id")

    problems: list[str] = []
    exact = flagged = would_have_leaked = 0
    for k, (a, req) in enumerate(zip(answers, frame.itertuples(), strict=True)):
        row = logged.loc[a["request_id"]]
        assert list(row["future"]) == a["future"] and list(row["stale"]) == a["stale"]
        for name in names:
            served, expected = row[name], oracle.at[k, name]
            where = f"{req.why} customer {req.customer_id} merchant {req.merchant_id} t {_iso(req.t_us)} {name}"
            if name in a["future"]:
                flagged += 1
                if not pd.isna(served):
                    problems.append(f"{where}: listed in future but served {served}")
                old = newest.at[k, name]
                would_have_leaked += not (pd.isna(old) and pd.isna(expected)) and (
                    pd.isna(old) or pd.isna(expected) or not np.isclose(float(old), float(expected)))
            elif name in a["stale"] or name in a["missing"]:
                if not (pd.isna(served) and pd.isna(expected)):
                    problems.append(f"{where}: flagged stale/missing, served {served}, point-in-time {expected}")
            elif pd.isna(served) or pd.isna(expected) or not np.isclose(float(served), float(expected),
                                                                          rtol=1e-6, atol=1e-9):  # means: 6 dp
                problems.append(f"{where}: served {served}, point-in-time {expected}")
            else:
                exact += 1
    assert not problems, f"{len(problems)} problems, e.g.\n" + "\n".join(problems[:10])

    # the boundary is the microsecond: exactly at the newest row's time it is withheld, 1 µs later it is served
    def future_of(why: str, name: str) -> set[bool]:
        return {name in answers[k]["future"] for k in np.flatnonzero(frame["why"] == why)}

    assert future_of("customer newest -1", "txn_count_7d") == {not stream_features}
    assert future_of("customer newest +0", "txn_count_7d") == {not stream_features}
    assert future_of("customer newest +1", "txn_count_7d") == {False}
    assert future_of("merchant newest +0", "label_count_30d") == {True}
    assert future_of("merchant newest +1", "label_count_30d") == {False}
    assert future_of("after", "amount_vs_mean_7d") == {False}
    if stream_features:  # the event logs give customer_activity exactly at every time: never withheld
        assert not [n for a in answers for n in a["future"] + a["stale"] if n in CUSTOMER_FEATURES]
        assert exact > 8000 and flagged > 500, (exact, flagged)
    else:  # not vacuous: many exact values, many withheld ones, and most withheld ones differ from what Redis
        # holds (the value the service used to serve silently)
        assert exact > 5000 and flagged > 3000 and would_have_leaked > flagged // 2, (exact, flagged, would_have_leaked)

    # /metrics counts each withheld feature once per answer
    listed = pd.Series([n for a in answers for n in a["future"]]).value_counts().to_dict()
    assert metrics == {n: float(c) for n, c in listed.items()}
    # the score is the model's on the point-in-time values with the withheld ones missing
    booster = ModelRegistry(settings).load_booster(golden)
    vectors = oracle[names].copy()
    for k, a in enumerate(answers):
        vectors.loc[k, a["future"]] = np.nan
    expected_scores = booster_scores(booster, vectors, names)
    np.testing.assert_allclose([a["score"] for a in answers], expected_scores, rtol=1e-6, atol=1e-7)

    # monitoring's consistency check over these logs: what was served matches offline, what was withheld is counted
    from monitoring.consistency import run_consistency

    result = run_consistency(settings, write=False)
    assert result.requests == len(answers) and result.compared + result.skipped_backdated + (
        result.skipped_after_offline_end) == len(answers)
    assert result.future_requests == sum(bool(a["future"]) for a in answers) > 0
    assert [(f.feature, f.mismatches) for f in result.features if f.mismatches] == []
    assert list(logged["activity_source"].unique()) == ["logs" if stream_features else "rows"]
    assert (logged.loc[[a["request_id"] for a in answers], "transaction_time_us"].to_numpy()
            == frame["t_us"].to_numpy()).all()  # the exact time, not only its second
    if not stream_features:  # stored rows after the data's end are the last offline rows: compared there too
        assert result.skipped_after_offline_end == 0
        return
    # From the event logs: after the feature tables' end (the raw data's end, ``until``) the offline store has no
    # value yet (window exits after the end are missing): skipped. Inside, customer_activity needs no back-dating
    # check (the logs are exact at t); a request is back-dated only by a stored row (merchant_risk, the profiles)
    # of its entities newer than t - 1 µs. Oracle: the request times this test chose and the raw tables.
    until_us = until.value // 1000
    after_end = (frame["t_us"] - 1 >= until_us).to_numpy()
    assert after_end.sum() == (frame["why"] == "after").sum() == 60  # every request after the data, none inside
    newest_merchant = {int(m): int(merchant_change_points(g, until).max(initial=-1))
                       for m, g in raw["labels"][raw["labels"]["label_timestamp"] < until].groupby("merchant_id")}
    signed_up = raw["customers"].set_index("customer_id")["event_timestamp"].astype("int64") // 1000
    onboarded = raw["merchants"].set_index("merchant_id")["event_timestamp"].astype("int64") // 1000
    newer = np.array([newest_merchant.get(int(r.merchant_id), -1) > r.t_us - 1
                      or signed_up.get(int(r.customer_id), -1) > r.t_us - 1
                      or onboarded.get(int(r.merchant_id), -1) > r.t_us - 1 for r in frame.itertuples()])
    assert result.skipped_after_offline_end == int(after_end.sum())
    assert result.skipped == {f"after the offline data's end ({until.isoformat()})": int(after_end.sum())}
    assert result.offline_end == until.to_pydatetime()
    assert result.skipped_backdated == int((newer & ~after_end).sum())
    assert result.compared == int((~newer & ~after_end).sum()) > 50  # the windows inside, exits included
    assert result.replayed == 0  # no raw transaction ids here: nothing is a replay


# --- the feature log's `future` column, as monitoring reads it ----------------------------------------------------
def _log_row(request_id: str, future: list[str], x: float | None) -> dict:
    return {"request_id": request_id, "logged_at": pd.Timestamp.now(tz="UTC").to_pydatetime(), "transaction_id": None,
            "customer_id": 1, "merchant_id": 2, "amount": 10.0, "transaction_ts": 1_790_000_000,
            "request_fields": None, "model_name": "fraud", "model_version": 1, "role": "golden", "served": True,
            "fallback": False, "fallback_reason": None, "cached": False, "prediction": 0.5, "missing": [],
            "stale": [], "future": future, "latency_ms": 1.0, "features": {"x": x}}


def test_feature_logs_without_the_future_column_still_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlplatform.contracts.feature_log import log_schema, read_log_files, write_feature_log

    new = write_feature_log(tmp_path, [_log_row("new", ["x"], None)])
    old_schema = pa.schema([f for f in log_schema(["x"]) if f.name != "future"])  # what older services wrote
    old_row = {k: v for k, v in _log_row("old", [], 1.0).items() if k not in ("future", "features")}
    old = tmp_path / "date=2026-10-10" / "part-old.parquet"
    old.parent.mkdir()
    pq.write_table(pa.Table.from_pylist([{**old_row, "x": 1.0}], schema=old_schema), old)
    for columns in (None, ["future", "x"]):
        frame = read_log_files([old, new], columns).set_index("request_id")
        assert frame.loc["old", "future"] is None  # unknown: that service never checked
        assert list(frame.loc["new", "future"]) == ["x"] and pd.isna(frame.loc["new", "x"])


def test_consistency_does_not_compare_what_the_service_withheld_as_future():
    from monitoring.consistency import compare_features

    served = pd.DataFrame({"request_id": ["a", "b", "c"], "x": [1.0, np.nan, np.nan],
                           "future": [[], ["x"], []]})
    offline = pd.DataFrame({"request_id": ["c", "b", "a"], "x": [2.0, 5.0, 1.0]})
    (x,) = compare_features(served, offline, ["x"], rtol=1e-6)
    assert (x.compared, x.mismatches, x.future) == (2, 1, 1)  # b withheld; c a real gap
    assert [e["request_id"] for e in x.examples] == ["c"]
    # a log without the column (an older service): every row is compared
    (x,) = compare_features(served.drop(columns="future"), offline, ["x"], rtol=1e-6)
    assert (x.compared, x.mismatches, x.future) == (3, 2, 0)
